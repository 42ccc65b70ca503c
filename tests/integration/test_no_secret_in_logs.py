"""No secret (master key, API keys, pepper) reaches a log line, through a whole key lifecycle at DEBUG."""

from __future__ import annotations

import asyncio
import logging
import secrets

import pytest
from starlette.testclient import TestClient

from isthmus import settings, wiring
from isthmus.adapters import dynamodb
from isthmus.services.tenancy import credentials

pytestmark = pytest.mark.integration


def test_key_lifecycle_logs_no_secret(ddb_tables: str, monkeypatch: pytest.MonkeyPatch,
                                      caplog: pytest.LogCaptureFixture, capsys: pytest.CaptureFixture[str]) -> None:
    from functions.keys.app import app as keys_app

    master = "sk-master-" + secrets.token_urlsafe(16)
    monkeypatch.setenv("ISTHMUS_MASTER_KEY", master)
    monkeypatch.delenv("ISTHMUS_KEY_PEPPER", raising=False)
    # a pepper generated inside the captured window, so its one write is under watch too
    dynamodb.client().delete_item(TableName=settings.table_name("settings"),
                                  Key={"name": {"S": credentials.PEPPER_SETTING}})
    wiring._credentials.clear()
    caplog.set_level(logging.DEBUG)
    auth = {"Authorization": f"Bearer {master}"}
    wrong = "sk-master-" + secrets.token_urlsafe(16)
    with TestClient(keys_app) as client:
        # given a full key lifecycle, with a wrong master key tried on the way
        assert client.get("/v1/keys", headers={"Authorization": f"Bearer {wrong}"}).status_code == 401
        created = client.post("/v1/keys", headers=auth, json={"key_name": "ci", "user_id": None, "metadata": None})
        assert created.status_code == 200
        key_id, key = created.json()["id"], created.json()["key"]
        assert client.get(f"/api/v1/keys/{key_id}", headers=auth).status_code == 200
        assert client.patch(f"/v1/keys/{key_id}", headers=auth, json={"key_name": "ci-2"}).status_code == 200
        rotated = client.post(f"/v1/keys/{key_id}/rotate", headers=auth)
        assert rotated.status_code == 200
        new_key = rotated.json()["key"]

        async def use() -> None:
            gate = wiring.new_gate()
            principal = await gate.authenticate({"Otari-Key": f"Bearer {new_key}"})
            a = await gate.admit(principal, model="m", endpoint="/v1/chat/completions", input_tokens_estimate=3,
                                 max_output_tokens=3)
            await gate.settle(a, prompt_tokens=3, completion_tokens=3, cached_tokens=0, status="success",
                              status_code=200, latency_ms=1, backend="t", request_id="r")
            with pytest.raises(Exception, match="Invalid API key"):
                await gate.authenticate({"Authorization": f"Bearer {key}"})  # the old secret is dead

        asyncio.run(use())
        assert client.get("/v1/keys", headers=auth).status_code == 200
        assert client.delete(f"/v1/keys/{key_id}", headers=auth).status_code == 204
    pepper = wiring.credentials().pepper_sync()
    # then no captured line, structured record or printed output holds any of the secrets
    text = "\n".join([capsys.readouterr().out, capsys.readouterr().err, caplog.text,
                      *(repr(r.__dict__) for r in caplog.records)])
    assert "api key created" in text  # the logs were captured at all
    for secret in (master, wrong, key, new_key, pepper):
        assert secret not in text
