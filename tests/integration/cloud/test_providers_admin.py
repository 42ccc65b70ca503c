"""/admin/providers on DynamoDB Local (in-process apps): templates, validation, sealed keys (the raw item and
every log line free of the plaintext), cloud aliases in /v1/models and on the inference path, disabling,
the provider test call and the raw OpenAI passthrough."""

from __future__ import annotations

import json
import logging
import os
import stat
import time
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from starlette.testclient import TestClient

from isthmus import settings
from isthmus.adapters import dynamodb
from tests.support.fake_providers import FakeProviders

pytestmark = pytest.mark.integration
SECRET = "sk-live-" + "9f3a" * 8  # what must never be stored, returned or logged in clear


@pytest.fixture(scope="module")
def key_file(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("keys") / "sub" / "provider.key"


@pytest.fixture()
def apps(ddb_tables: str, key_file: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, TestClient]]:
    import functions.admin.routes as admin_app
    import functions.inference.routes as inference_app
    from functions.models.app import app as models
    from isthmus import wiring

    monkeypatch.setenv("ISTHMUS_LOCAL_KEY_FILE", str(key_file))
    monkeypatch.setenv("ISTHMUS_CLOUD_CATALOG_SECONDS", "0")
    monkeypatch.delenv("ISTHMUS_KMS_KEY_ID", raising=False)
    monkeypatch.delenv("ISTHMUS_MASTER_KEY", raising=False)
    for name in ("ODYSSAI_X_ADMIN_TOKEN", "ISTHMUS_ADMIN_TOKEN"):
        monkeypatch.delenv(name, raising=False)
    wiring.reset()
    # As context managers: one event loop per client for the whole test, so a usage row settled off the
    # answer's path (a detached task) is not cancelled with a per-request loop.
    with TestClient(admin_app.app) as admin, TestClient(models) as listing, \
            TestClient(inference_app.app) as inference:
        yield {"admin": admin, "models": listing, "inference": inference}
    wiring.reset()


def usage_row(model: str) -> dict[str, Any]:
    """The usage row of ``model`` (settled off the answer's path: waited for, up to a few seconds)."""
    from boto3.dynamodb.types import TypeDeserializer

    deadline = time.monotonic() + 10
    while True:
        items = dynamodb.client().scan(TableName=settings.table_name("usage"), ConsistentRead=True,
                                       FilterExpression="#m = :m", ExpressionAttributeNames={"#m": "model"},
                                       ExpressionAttributeValues={":m": {"S": model}})["Items"]
        if items or time.monotonic() > deadline:
            break
        time.sleep(0.05)
    assert items, f"no usage row for {model}"
    return {k: TypeDeserializer().deserialize(v) for k, v in items[0].items()}


def pid() -> str:
    return f"p{uuid.uuid4().hex[:8]}"


def put(apps: dict[str, TestClient], provider_id: str, body: dict[str, Any]) -> Any:
    return apps["admin"].put(f"/admin/providers/{provider_id}", json=body)


def openai_provider(fake: FakeProviders, alias: str, upstream: str, **kw: Any) -> dict[str, Any]:
    return {"protocol": "openai", "api_base": fake.openai_base, "api_key": SECRET,
            "published": [{"alias": alias, "upstream_model": upstream, "capabilities": ["chat"]}], **kw}


def test_template_fills_the_provider_and_the_key_is_sealed(apps: dict[str, TestClient]) -> None:
    # given the openrouter template and a key
    provider_id = pid()
    # when the provider is put
    resp = put(apps, provider_id, {"template": "openrouter", "api_key": SECRET, "headers": {"Api-Key": SECRET},
                                   "published": [
        {"alias": f"haiku-{provider_id}", "upstream_model": "anthropic/claude-haiku", "fallbacks": None}]})
    # then protocol, api_base and the OpenRouter headers are filled; the key is reported, never shown
    assert resp.status_code == 200, resp.text
    view = resp.json()
    assert view["protocol"] == "openai" and view["api_base"] == "https://openrouter.ai/api/v1"
    assert {"HTTP-Referer", "X-Title"} <= set(view["headers"])
    assert [p["alias"] for p in view["published"]] == [f"or:haiku-{provider_id}"]
    assert view["api_key_set"] is True and view["api_key_source"] == "config"
    assert "api_key" not in view and SECRET not in resp.text
    assert view["secret_headers_set"] is True and "Api-Key" not in view["headers"]
    for answer in (apps["admin"].get(f"/admin/providers/{provider_id}"), apps["admin"].get("/admin/providers")):
        assert answer.status_code == 200 and SECRET not in answer.text
    assert any(p["provider_id"] == provider_id for p in apps["admin"].get("/admin/providers").json())
    # and the raw DynamoDB item holds an envelope, not the key
    item = dynamodb.client().get_item(TableName=settings.table_name("providers"),
                                      Key={"provider_id": {"S": provider_id}})["Item"]
    assert SECRET not in str(item) and "ciphertext" in str(item) and "wrapped_key" in str(item)
    # and the local key file was created owner-only
    key_file = Path(os.environ["ISTHMUS_LOCAL_KEY_FILE"])
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600


def test_env_key_source_and_validation(apps: dict[str, TestClient], monkeypatch: pytest.MonkeyPatch) -> None:
    # given a key taken from the environment
    monkeypatch.setenv("FAKE_PROVIDER_KEY", SECRET)
    provider_id = pid()
    view = put(apps, provider_id, {"template": "anthropic", "api_key_env": "FAKE_PROVIDER_KEY"}).json()
    # then its source is env and the protocol comes from the template
    assert view["api_key_source"] == "env" and view["api_key_set"] is True and view["protocol"] == "anthropic"
    # when the protocol is unknown or api_base is missing
    bad_protocol = put(apps, pid(), {"protocol": "grpc", "api_base": "http://x"})
    no_base = put(apps, pid(), {"protocol": "openai"})
    # then 400 naming the field, in the control-surface shape
    assert bad_protocol.status_code == 400 and "protocol" in bad_protocol.json()["detail"]
    assert no_base.status_code == 400 and "api_base" in no_base.json()["detail"]
    # and an alias another provider already publishes is a 409; explicit nulls count as absent
    taken = put(apps, pid(), {"template": "openai", "api_key": SECRET, "published": [
        {"alias": "dup:alias", "upstream_model": "m", "fallbacks": None}]})
    clash = put(apps, pid(), {"template": "openai", "api_key": SECRET, "published": [
        {"alias": "dup:alias", "upstream_model": "m"}]})
    assert taken.status_code in (200, 409) and clash.status_code == 409 and "dup:alias" in clash.json()["detail"]
    # and delete answers 204 once, then 404
    assert apps["admin"].delete(f"/admin/providers/{provider_id}").status_code == 204
    assert apps["admin"].delete(f"/admin/providers/{provider_id}").status_code == 404
    assert apps["admin"].get(f"/admin/providers/{provider_id}").status_code == 404


def test_cloud_alias_listed_routed_then_disabled(apps: dict[str, TestClient], fake: FakeProviders) -> None:
    # given an enabled OpenAI-protocol provider publishing one alias
    provider_id = pid()
    alias = f"{provider_id}:chat"
    body = openai_provider(fake, alias, "routed-1", headers={"Api-Key": SECRET, "X-Extra": "1"})
    assert put(apps, provider_id, body).status_code == 200
    # then /v1/models lists it as a cloud model owned by the provider
    listed = {m["id"]: m for m in apps["models"].get("/v1/models").json()["data"]}
    assert listed[alias]["owned_by"] == provider_id and listed[alias]["x_odyssai"]["kind"] == "cloud"
    # when a chat completion names the alias
    resp = apps["inference"].post("/v1/chat/completions", json={
        "model": alias, "messages": [{"role": "user", "content": "hi there"}], "session_id": "s-9"})
    # then the provider answered with the upstream model and the sealed key, Isthmus fields stripped
    assert resp.status_code == 200, resp.text
    assert resp.json()["choices"][0]["message"]["content"] == "echo: hi there"
    assert resp.json()["model"] == alias
    seen = fake.last("routed-1")
    assert seen["headers"]["authorization"] == f"Bearer {SECRET}" and "session_id" not in seen["body"]
    assert seen["headers"]["api-key"] == SECRET and seen["headers"]["x-extra"] == "1"
    # and the usage row bills the alias with the upstream's token counts, naming the provider
    row = usage_row(alias)
    assert row["provider"] == f"cloud:{provider_id}" and row["status"] == "success"
    assert int(row["completion_tokens"]) == resp.json()["usage"]["completion_tokens"] == 3
    assert int(row["prompt_tokens"]) == resp.json()["usage"]["prompt_tokens"] > 0
    # when the provider is disabled
    assert put(apps, provider_id, {**openai_provider(fake, alias, "routed-1"), "enabled": False}).status_code == 200
    # then the alias vanishes from /v1/models and calls to it are 404
    assert alias not in {m["id"] for m in apps["models"].get("/v1/models").json()["data"]}
    gone = apps["inference"].post("/v1/chat/completions", json={"model": alias, "messages": [
        {"role": "user", "content": "hi"}]})
    assert gone.status_code == 404


def test_provider_test_call(apps: dict[str, TestClient], fake: FakeProviders) -> None:
    # given a working provider and one whose key the upstream refuses
    good, bad = pid(), pid()
    put(apps, good, {"protocol": "anthropic", "api_base": fake.anthropic_base, "api_key": SECRET,
                     "published": [{"alias": f"{good}:m", "upstream_model": "probe-ok"}]})
    put(apps, bad, {"protocol": "openai", "api_base": fake.openai_base, "api_key": "wrong-key",
                    "published": [{"alias": f"{bad}:m", "upstream_model": "probe-bad"}]})
    # when each is tested
    ok = apps["admin"].post(f"/admin/providers/{good}/test").json()
    refused = apps["admin"].post(f"/admin/providers/{bad}/test").json()
    # then a tiny real call was made to each: one token asked for
    assert ok["ok"] is True and fake.last("probe-ok")["body"]["max_tokens"] == 1
    assert refused["ok"] is False and refused["status"] == 502


def test_raw_openai_passthrough(apps: dict[str, TestClient], fake: FakeProviders) -> None:
    # given an OpenAI-protocol provider publishing an embeddings alias
    provider_id = pid()
    alias = f"{provider_id}:embed"
    put(apps, provider_id, openai_provider(fake, alias, "embed-up-1"))
    # when embeddings and speech are asked under /v1 and /api/v1
    emb = apps["inference"].post("/v1/embeddings", json={"model": alias, "input": "hello"})
    speech = apps["inference"].post("/api/v1/audio/speech", json={"model": alias, "input": "hi", "voice": "x"})
    unknown = apps["inference"].post("/v1/embeddings", json={"model": "nope:embed", "input": "hello"})
    # then they are forwarded as-is with the model rewritten, answers passed back
    assert emb.status_code == 200 and emb.json()["data"][0]["embedding"] == [0.1, 0.2, 0.3]
    assert fake.last("embed-up-1")["body"] == {"model": "embed-up-1", "input": "hi", "voice": "x"}
    assert speech.content == b"ID3fake-mp3" and speech.headers["content-type"] == "audio/mpeg"
    assert unknown.status_code == 404 and "error" in unknown.json()
    # and the call is billed with the upstream's prompt tokens
    row = usage_row(alias)
    assert row["endpoint"] in ("/v1/embeddings", "/v1/audio/speech") and row["provider"] == f"cloud:{provider_id}"


def test_the_key_never_reaches_a_log_line(apps: dict[str, TestClient], fake: FakeProviders,
                                          caplog: pytest.LogCaptureFixture,
                                          capsys: pytest.CaptureFixture[str]) -> None:
    # given every logger at DEBUG
    caplog.set_level(logging.DEBUG)
    provider_id = pid()
    alias = f"{provider_id}:chat"
    # when the provider is created, read, tested and used, including retries and a refused call
    put(apps, provider_id, {**openai_provider(fake, alias, "logs-e500x1"), "max_retries": 1})
    apps["admin"].get(f"/admin/providers/{provider_id}")
    apps["admin"].post(f"/admin/providers/{provider_id}/test")
    apps["inference"].post("/v1/chat/completions", json={"model": alias, "messages": [
        {"role": "user", "content": "hi"}], "stream": True})
    put(apps, provider_id, {**openai_provider(fake, alias, "logs-e401x9"), "max_retries": 1})
    refused = apps["inference"].post("/v1/chat/completions", json={"model": alias, "messages": [
        {"role": "user", "content": "hi"}]})
    # then the calls went through (a refused key is the gateway's problem: 502)
    assert refused.status_code == 502 and SECRET not in refused.text
    # and no log record, stdout or stderr line holds the key
    out = capsys.readouterr()
    assert caplog.records
    assert SECRET not in caplog.text and SECRET not in out.out and SECRET not in out.err
    assert all(SECRET not in str(r.__dict__) for r in caplog.records)


def test_anthropic_alias_through_chat_stream_and_responses(apps: dict[str, TestClient], fake: FakeProviders) -> None:
    # given an Anthropic-protocol provider
    provider_id = pid()
    alias = f"{provider_id}:claude"
    put(apps, provider_id, {"protocol": "anthropic", "api_base": fake.anthropic_base, "api_key": SECRET,
                            "published": [{"alias": alias, "upstream_model": "resp-claude"}]})
    # when an OpenAI chat stream and a Responses call name it
    stream = apps["inference"].post("/v1/chat/completions", json={
        "model": alias, "stream": True, "messages": [{"role": "user", "content": "a b"}]})
    resp = apps["inference"].post("/v1/responses", json={"model": alias, "input": "c d"})
    # then both are rendered in the caller's dialect from the Anthropic answer
    assert stream.status_code == 200 and stream.text.rstrip().endswith("data: [DONE]")
    deltas = [json.loads(line[6:]) for line in stream.text.splitlines()
              if line.startswith("data: {")]
    assert "".join(d["choices"][0]["delta"].get("content") or "" for d in deltas if d["choices"]) == "echo: a b"
    assert resp.status_code == 200 and resp.json()["output"][-1]["content"][0]["text"] == "echo: c d"


def test_a_called_alias_needs_no_providers_table_read_on_its_next_calls(
        apps: dict[str, TestClient], fake: FakeProviders, monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus import wiring

    # given an alias called once (the catalog loaded, its key opened)
    provider_id = pid()
    alias = f"{provider_id}:chat"
    assert put(apps, provider_id, openai_provider(fake, alias, "cached-1")).status_code == 200
    chat = {"model": alias, "messages": [{"role": "user", "content": "hi"}]}
    assert apps["inference"].post("/v1/chat/completions", json=chat).status_code == 200
    # when the providers table can no longer be read (nor a key opened) from the request path
    def unreachable(*args: Any, **kwargs: Any) -> Any:
        raise RuntimeError("the request path must not read the providers table")

    monkeypatch.setattr(wiring.cloud_catalog(), "chain", unreachable)
    # then the next calls are still served, from the cached chain
    for _ in range(3):
        resp = apps["inference"].post("/v1/chat/completions", json=chat)
        assert resp.status_code == 200, resp.text
    assert fake.count("cached-1") == 4
