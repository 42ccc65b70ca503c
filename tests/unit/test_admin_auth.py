"""/admin/* is open without a token; with one, it needs Bearer (401 + WWW-Authenticate otherwise).
/v1/* is unaffected by the admin token."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from tests.support.ddb_tables import moto_tables


@pytest.fixture(name="moto_tables")
def moto_tables_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    with moto_tables(monkeypatch):
        yield


def admin() -> TestClient:
    from functions.admin.app import app

    return TestClient(app)


@pytest.mark.parametrize("var", ["ODYSSAI_X_ADMIN_TOKEN", "ISTHMUS_ADMIN_TOKEN"])
def test_token_required_when_set(var: str, moto_tables: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ODYSSAI_X_ADMIN_TOKEN", raising=False)
    monkeypatch.delenv("ISTHMUS_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv(var, "s3cret")
    client = admin()
    # without a token, with a wrong one, with another scheme: 401 + WWW-Authenticate: Bearer
    for headers in ({}, {"Authorization": "Bearer nope"}, {"Authorization": "Basic s3cret"}):
        r = client.get("/admin/clusters", headers=headers)
        assert r.status_code == 401 and r.headers["www-authenticate"] == "Bearer"
        assert "detail" in r.json()
    # unknown admin routes are not discoverable without the token either
    assert client.get("/admin/nope").status_code == 401
    # with the token: through
    ok = client.get("/admin/clusters", headers={"Authorization": "Bearer s3cret"})
    assert ok.status_code == 200 and ok.json() == {"clusters": []}


def test_open_when_unset(moto_tables: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ODYSSAI_X_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("ISTHMUS_ADMIN_TOKEN", "")
    assert admin().get("/admin/settings").status_code == 200


def test_v1_models_ignores_the_admin_token(moto_tables: None, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.models.app import app

    monkeypatch.setenv("ODYSSAI_X_ADMIN_TOKEN", "s3cret")
    r = TestClient(app).get("/v1/models")
    assert r.status_code == 200 and r.json() == {"object": "list", "data": []}


def test_enrollment_uses_its_own_token(moto_tables: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODYSSAI_X_ADMIN_TOKEN", "admin-secret")
    monkeypatch.setenv("ISTHMUS_ENROLL_TOKEN", "enroll-secret")
    body = {"node_id": "n1", "base_url": "http://127.0.0.1:1", "cluster_id": "lab"}
    client = admin()
    assert client.post("/admin/nodes/enroll", json=body).status_code == 401
    r = client.post("/admin/nodes/enroll", json=body, headers={"Authorization": "Bearer enroll-secret"})
    assert r.status_code == 200 and r.json()["cluster_id"] == "lab"
    hb = client.post("/admin/nodes/n1/heartbeat", json={"active": 1},
                     headers={"Authorization": "Bearer enroll-secret"})
    assert hb.status_code == 200
    gone = client.post("/admin/nodes/zz/heartbeat", json={}, headers={"Authorization": "Bearer enroll-secret"})
    assert gone.status_code == 404


def test_settings_put_merges_and_nulls_are_safe(moto_tables: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ODYSSAI_X_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("ISTHMUS_ADMIN_TOKEN", "")
    client = admin()
    r = client.put("/admin/settings", json={"kv_q8_default": True, "system_prefix_text": "Be brief.",
                                            "enable_thinking_default": True})
    assert r.status_code == 200 and r.json()["applied_to_pools"] == []
    r = client.put("/admin/settings", json={"kv_q8_default": None, "enable_thinking_default": None,
                                            "pool_ttl_seconds_default": 600})
    got = client.get("/admin/settings").json()
    assert (got["kv_q8_default"], got["system_prefix_text"], got["enable_thinking_default"],
            got["pool_ttl_seconds_default"]) == (True, "Be brief.", None, 600)
    assert client.put("/admin/settings", json={"pool_ttl_seconds_default": -1}).status_code == 422


def test_cluster_bodies_treat_nulls_as_absent(moto_tables: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ODYSSAI_X_ADMIN_TOKEN", raising=False)
    monkeypatch.setenv("ISTHMUS_ADMIN_TOKEN", "")
    client = admin()
    r = client.put("/admin/clusters/argo", json={"kind": None, "models": None, "fallback": None, "description": None})
    assert r.status_code == 200 and (r.json()["kind"], r.json()["models"]) == ("mlx", [])
    assert client.put("/admin/clusters/settings", json={}).status_code == 400  # reserved name
    assert client.put("/admin/clusters/t", json={"kind": "telemak"}).status_code == 400  # needs a url
    # no node of argo is up: the cluster's state is in the way (409), not the server
    assert client.post("/admin/argo/load", json={"model": "m", "mode": None, "nodes": None}).status_code == 409


def test_reap_endpoint_answers_what_it_unloaded(moto_tables: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ODYSSAI_X_ADMIN_TOKEN", "s3cret")
    client = admin()
    assert client.post("/admin/pools/reap").status_code == 401
    r = client.post("/admin/pools/reap", headers={"Authorization": "Bearer s3cret"})
    assert r.status_code == 200 and r.json() == {"reaped": [], "healed": []}
