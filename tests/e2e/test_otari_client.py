"""The `otari` client from PyPI (0.3.x speaks /v1, 0.4.x /api/v1) against the local edge in keyed mode."""

from __future__ import annotations

import asyncio
import json
import os
import secrets
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import httpx
import pytest

from isthmus import wiring
from local_runtime.process import stop
from tests.conftest import ROOT, start_edge

pytestmark = pytest.mark.e2e

OTARI_VERSIONS = ("0.3.0", "0.4.1")
DRIVER = Path(__file__).with_name("otari_driver.py")


@pytest.fixture(scope="session")
def otari_dirs() -> dict[str, Path]:
    """Each otari version in a throwaway folder under .isthmus/ (no deps: httpx, pydantic, urllib3 and
    python-dateutil are already in the project's venv)."""
    dirs = {}
    for v in OTARI_VERSIONS:
        target = ROOT / ".isthmus" / f"otari-{v}"
        if not (target / "otari" / "control_plane.py").exists():
            subprocess.run([sys.executable, "-m", "pip", "install", "-q", "--no-deps", "--upgrade", "--target",
                            str(target), f"otari=={v}"], check=True, stdout=subprocess.DEVNULL)
        dirs[v] = target
    return dirs


@pytest.fixture(scope="module", params=["asgi", "lambda"])
def keyed_edge(request: pytest.FixtureRequest, ddb_tables: str) -> Iterator[tuple[str, str]]:
    """The edge in keyed mode, serving the apps directly (asgi) or as API Gateway events (lambda)."""
    master = "sk-master-" + secrets.token_urlsafe(16)
    proc, base = start_edge(request.param, env={"ISTHMUS_MASTER_KEY": master})
    try:
        yield base, master
    finally:
        stop(proc)


def seed_usage(user_id: str) -> None:
    """Two requests through the gate for ``user_id``: one settled, one refused."""
    from isthmus.errors import ApiError
    from isthmus.services.tenancy.credentials import Credentials
    from isthmus.services.tenancy.gate import TenancyGate
    from isthmus.services.tenancy.keys import CreateKey, KeyService

    stores = wiring.stores()
    secret = KeyService(stores, Credentials(stores)).create(CreateKey(user_id=user_id, allowed_models=["ok:*"]))["key"]
    gate = TenancyGate(stores, Credentials(stores))

    async def run() -> None:
        p = await gate.authenticate({"x-api-key": secret})
        a = await gate.admit(p, model="ok:m", endpoint="/v1/messages", input_tokens_estimate=5, max_output_tokens=5)
        await gate.settle(a, prompt_tokens=5, completion_tokens=3, cached_tokens=0, status="success",
                          status_code=200, latency_ms=7, backend="test", request_id="seed-1")
        try:
            await gate.admit(p, model="no:m", endpoint="/v1/messages", input_tokens_estimate=5, max_output_tokens=5)
        except ApiError as exc:
            await gate.refuse(p, model="no:m", endpoint="/v1/messages", status_code=exc.status,
                              request_id="seed-2", reason=exc.message)

    asyncio.run(run())


@pytest.mark.parametrize("otari_version", OTARI_VERSIONS)
def test_otari_client_drives_the_control_surface(otari_version: str, otari_dirs: dict[str, Path],
                                                 keyed_edge: tuple[str, str]) -> None:
    base, master = keyed_edge
    # given usage rows for a user, and the otari client of this version
    seed_user = f"seed-{otari_version}-{base.rsplit(':', 1)[1]}"
    seed_usage(seed_user)
    env = {**os.environ, "ISTHMUS_TEST_MASTER": master,
           "PYTHONPATH": os.pathsep.join([str(otari_dirs[otari_version]), os.environ.get("PYTHONPATH", "")])}
    # when it creates, reads, updates and deletes keys, users, budgets and pricing, and reads usage
    out = subprocess.run([sys.executable, str(DRIVER), base, seed_user], env=env, capture_output=True, text=True,
                         timeout=180, cwd=ROOT)
    # then every response parses in the client's own models and says what was asked
    assert out.returncode == 0, out.stderr[-4000:]
    found = json.loads(out.stdout.strip().splitlines()[-1])
    assert found["otari"] == otari_version
    assert found["key_prefix_ok"] and found["keys"] == "ok" and found["pricing"] == "ok"
    assert found["budget_user_count"] == 1
    assert found["usage_rows"] == 2 and found["usage_statuses"] == ["refused", "success"]
    assert found["user_usage_rows"] == 2 and found["future_rows"] == 0


def test_edge_management_without_master_key_is_401(keyed_edge: tuple[str, str]) -> None:
    base, master = keyed_edge
    for prefix in ("/v1", "/api/v1"):
        assert httpx.get(f"{base}{prefix}/keys").status_code == 401
        assert httpx.get(f"{base}{prefix}/keys", headers={"Authorization": "Basic x"}).json() == \
            {"detail": "Invalid header format"}
        ok = httpx.get(f"{base}{prefix}/usage/summary", headers={"Authorization": f"Bearer {master}"})
        assert ok.status_code == 200 and {"totals", "by_day", "by_model"} <= set(ok.json())
    # list bounds: limit 1..1000, else 422
    r = httpx.get(f"{base}/v1/users?limit=1001", headers={"Authorization": f"Bearer {master}"})
    assert r.status_code == 422 and "limit" in r.json()["detail"]
    # pricing reads take any key (here the master key); an unknown key is 401 in keyed mode
    assert httpx.get(f"{base}/v1/pricing", headers={"x-api-key": master}).status_code == 200
    assert httpx.get(f"{base}/v1/pricing", headers={"x-api-key": "gw-nope"}).status_code == 401


def test_models_listing_is_keyed_in_keyed_mode(keyed_edge: tuple[str, str]) -> None:
    base, master = keyed_edge
    admin = {"Authorization": f"Bearer {master}"}
    # given a valid key, a deactivated one, an expired one and a secret rotated out
    valid = httpx.post(f"{base}/v1/keys", json={}, headers=admin).json()["key"]
    inactive = httpx.post(f"{base}/v1/keys", json={}, headers=admin).json()
    assert httpx.patch(f"{base}/v1/keys/{inactive['id']}", json={"is_active": False},
                       headers=admin).status_code == 200
    expired = httpx.post(f"{base}/v1/keys", json={}, headers=admin).json()
    # (the API refuses an expiry in the past, so the key is aged in the store, as time would)
    wiring.stores().keys.update(expired["id"], {"expires_at": "2020-01-01T00:00:00+00:00"})
    rotated = httpx.post(f"{base}/v1/keys", json={}, headers=admin).json()
    assert httpx.get(f"{base}/v1/models", headers={"x-api-key": rotated["key"]}).status_code == 200
    assert httpx.post(f"{base}/v1/keys/{rotated['id']}/rotate", headers=admin).status_code == 200
    refused = {"no key": {}, "unknown key": {"Authorization": "Bearer gw-nobody-has-this"},
               "inactive key": {"Authorization": f"Bearer {inactive['key']}"},
               "expired key": {"x-api-key": expired["key"]},
               "rotated-out secret": {"Otari-Key": f"Bearer {rotated['key']}"}}
    for prefix in ("/v1", "/api/v1"):
        for path in (f"{prefix}/models", f"{prefix}/models/default"):
            for case, headers in refused.items():
                # when the listing (or one model) is asked for with it, then 401 in the OpenAI error shape
                r = httpx.get(f"{base}{path}", headers=headers)
                assert r.status_code == 401, (path, case, r.text)
                assert r.json()["error"]["type"] == "authentication_error", (path, case)
                assert set(r.json()["error"]) == {"message", "type", "param", "code"}
        # and a valid key or the master key lists
        for headers in ({"Authorization": f"Bearer {valid}"}, admin):
            r = httpx.get(f"{base}{prefix}/models", headers=headers)
            assert r.status_code == 200 and r.json()["object"] == "list"


@pytest.mark.parametrize("otari_version", OTARI_VERSIONS)
def test_otari_list_models_with_a_rotated_out_secret_is_an_authentication_error(
        otari_version: str, otari_dirs: dict[str, Path], keyed_edge: tuple[str, str]) -> None:
    base, master = keyed_edge
    admin = {"Authorization": f"Bearer {master}"}
    # given a key whose secret was rotated
    created = httpx.post(f"{base}/v1/keys", json={}, headers=admin).json()
    new = httpx.post(f"{base}/v1/keys/{created['id']}/rotate", headers=admin).json()["key"]
    script = ("import sys\nfrom otari import OtariClient\nfrom otari.errors import AuthenticationError\n"
              "base, old, new = sys.argv[1:4]\n"
              "print(len(OtariClient(api_base=base, api_key=new).list_models()))\n"
              "try:\n    OtariClient(api_base=base, api_key=old).list_models()\n"
              "except AuthenticationError as exc:\n    print('AuthenticationError', exc.status_code)\n")
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(otari_dirs[otari_version]),
                                                         os.environ.get("PYTHONPATH", "")])}
    # when the otari client lists models with the new secret, then with the old one
    out = subprocess.run([sys.executable, "-c", script, base, created["key"], new], env=env, capture_output=True,
                         text=True, timeout=60, cwd=ROOT)
    # then the new one lists and the old one raises the client's AuthenticationError (401)
    assert out.returncode == 0, out.stderr[-3000:]
    lines = out.stdout.split()
    assert lines[0].isdigit() and lines[1:] == ["AuthenticationError", "401"], out.stdout
