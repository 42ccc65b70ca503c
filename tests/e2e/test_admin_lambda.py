"""The admin API through the Lambda path (API Gateway events -> Mangum) of the edge: enroll, heartbeat,
cluster status, node and cluster removal, token gating."""

from __future__ import annotations

from collections.abc import Iterator

import httpx
import pytest

from local_runtime.process import stop
from tests.conftest import start_edge

pytestmark = pytest.mark.e2e
TOKEN = "lambda-admin-token"


@pytest.fixture(scope="module")
def edge(ddb_tables: str) -> Iterator[str]:
    proc, base = start_edge("lambda", {"ISTHMUS_ADMIN_TOKEN": TOKEN, "ODYSSAI_X_ADMIN_TOKEN": ""})
    try:
        yield base
    finally:
        stop(proc)


def test_enroll_heartbeat_status_and_removal_over_lambda(edge: str) -> None:
    auth = {"Authorization": f"Bearer {TOKEN}"}
    enroll = {"node_id": "lam-1", "base_url": "http://127.0.0.1:9", "cluster_id": "lam", "chip": "M3",
              "ram_bytes": 2**34, "models": [{"name": "m", "size_bytes": 10}]}
    r = httpx.post(f"{edge}/admin/nodes/enroll", json=enroll)  # enrollment has its own (unset) token
    assert r.status_code == 200, r.text
    assert httpx.post(f"{edge}/admin/nodes/lam-1/heartbeat", json={"busy": True, "active": 1}).status_code == 200
    assert httpx.get(f"{edge}/admin/clusters/lam/status").status_code == 401
    status = httpx.get(f"{edge}/admin/clusters/lam/status", headers=auth).json()
    node = status["nodes"][0]
    assert (node["node_id"], node["up"], node["load"]["active"], node["chip"]) == ("lam-1", True, 1, "M3")
    # a node with nothing loaded: a load of pipeline over it alone is a plain load, the agent is unreachable: the
    # cluster's state is in the way (a 409 to retry, not a 5xx), blocking or as a job, and the cluster is not held
    for wait in (True, False, True):
        r = httpx.post(f"{edge}/admin/lam/load", json={"model": "m", "mode": "pipeline", "force": True, "wait": wait},
                       headers=auth)
        assert r.status_code == 409 and r.headers["retry-after"] == "2", r.text
        assert "could be reached" in r.json()["detail"] and "unreachable" in r.json()["detail"]
    assert httpx.delete(f"{edge}/admin/nodes/lam-1", headers=auth).status_code == 204
    assert httpx.delete(f"{edge}/admin/clusters/lam", headers=auth).status_code == 204
    assert httpx.get(f"{edge}/v1/models").status_code == 200  # /v1 is not gated by the admin token
