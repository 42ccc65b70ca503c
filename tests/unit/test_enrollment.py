"""The agent-side enrollment client against an in-process control plane (the admin app on moto)."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import pytest
from starlette.testclient import TestClient

from isthmus_contracts.agent import AgentStatus
from local_runtime.enrollment import Enrollment
from tests.support.ddb_tables import moto_tables


@pytest.fixture()
def control(monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    monkeypatch.setenv("ISTHMUS_ENROLL_TOKEN", "tok")
    monkeypatch.setenv("ISTHMUS_ADMIN_TOKEN", "")
    with moto_tables(monkeypatch):
        from functions.admin.app import app

        with TestClient(app, base_url="http://control") as client:
            yield client


def enrollment(client: TestClient, token: str | None, status: dict[str, Any]) -> Enrollment:
    e = Enrollment("http://control", token, "n1", "http://10.0.0.5:8100", lambda: AgentStatus(**status),
                   cluster_id="lab", inventory_fn=lambda: [{"name": "m", "size_bytes": 3}], chip="M2")
    e._http = client  # type: ignore[assignment]  # the TestClient is an httpx-style client over the ASGI app
    return e


def test_register_heartbeat_and_reenroll(control: TestClient) -> None:
    status: dict[str, Any] = {"node_id": "n1", "model": None, "loaded": False, "busy": False,
                              "ram_total_bytes": 2**34}
    e = enrollment(control, "tok", status)
    # given a registered node
    assert e.register()["cluster_id"] == "lab"
    # when it heartbeats with a load (the first beat after a load finished is an enrollment: see below);
    # then the control plane records it
    status.update(model="m", loaded=True, busy=True, active=2)
    assert e.heartbeat() and e.beats == 0
    assert e.heartbeat() and e.beats == 1
    node = control.get("/admin/clusters/lab/status").json()["nodes"][0]
    assert (node["load"]["loaded_model"], node["load"]["active"], node["chip"]) == ("m", 2, "M2")
    # when the control plane forgets it; then the next beat enrolls again
    assert control.delete("/admin/nodes/n1").status_code == 204
    assert e.heartbeat() and e.enrolled
    assert control.get("/admin/clusters/lab/status").json()["nodes"][0]["node_id"] == "n1"


def test_a_wrong_token_is_refused(control: TestClient) -> None:
    e = enrollment(control, "wrong", {"node_id": "n1", "model": None, "loaded": False, "busy": False})
    with pytest.raises(Exception) as err:  # the TestClient raises its own httpx flavour's error
        e.register()
    assert err.value.response.status_code == 401 and not e.enrolled  # type: ignore[attr-defined]


def test_from_env_and_inventory_rows(monkeypatch: pytest.MonkeyPatch) -> None:
    from local_runtime.enrollment import _on_disk

    monkeypatch.delenv("ISTHMUS_CONTROL_URL", raising=False)
    assert Enrollment.from_env("n", "http://x", dict) is None
    monkeypatch.setenv("ISTHMUS_CONTROL_URL", "http://control:8000/")
    monkeypatch.setenv("ISTHMUS_AGENT_BASE_URL", "http://10.0.0.9:8100")
    monkeypatch.setenv("ISTHMUS_CLUSTER_ID", "argo")
    e = Enrollment.from_env("n", "http://0.0.0.0:8100", dict)
    assert e is not None
    assert (e.control_url, e.base_url, e.cluster_id) == ("http://control:8000", "http://10.0.0.9:8100", "argo")
    e.stop()
    row = _on_disk(("smollm2-135m", "/data/models/smollm2-135m", 540_000_000))
    assert (row.name, row.size_bytes) == ("smollm2-135m", 540_000_000)


def test_a_loading_agent_heartbeats_loading_then_enrolls_into_its_pool_once_loaded(control: TestClient) -> None:
    # given an agent that enrolls while it loads its model
    status: dict[str, Any] = {"node_id": "n1", "model": None, "loaded": False, "busy": False, "loading": "m"}
    e = enrollment(control, "tok", status)
    e.register()
    assert e.heartbeat() and e.beats == 1
    # then the control plane sees it loading, and no pool was formed yet
    lab = control.get("/admin/clusters/lab/status").json()
    assert lab["nodes"][0]["load"]["loading_model"] == "m" and lab["nodes"][0]["load"]["loaded_model"] is None
    assert not control.get("/admin/clusters/lab").json()["pools"]
    # when the load finishes; then its next beat enrolls again, which puts it in the pool of its model
    status.update(model="m", loaded=True, loading=None)
    assert e.heartbeat()
    pools = control.get("/admin/clusters/lab").json()["pools"]
    assert [p["nodes"] for p in pools.values()] == [["n1"]]
    node = control.get("/admin/clusters/lab/status").json()["nodes"][0]
    assert node["load"]["loaded_model"] == "m" and node["load"]["loading_model"] is None
