"""``/v1/rerank`` (Cohere/Jina body) and ``/v1/audio/transcriptions`` (multipart) passed through to a provider
that offers them (the fake OpenAI-protocol server on loopback), usage rows on DynamoDB Local; a 404 that names
the reason for an alias published without the capability, or no alias at all."""

from __future__ import annotations

import os
from collections.abc import Iterator
from typing import Any

import openai
import pytest
from starlette.testclient import TestClient

from tests.integration.cloud.test_providers_admin import SECRET, apps, key_file, pid, put, usage_row  # noqa: F401
from tests.support.fake_providers import FakeProviders

pytestmark = pytest.mark.integration


@pytest.fixture()
def aliases(apps: dict[str, TestClient], fake: FakeProviders) -> Iterator[dict[str, str]]:  # noqa: F811
    provider_id = pid()
    names = {"rank": f"{provider_id}:rank", "whisper": f"{provider_id}:whisper", "chat": f"{provider_id}:chat"}
    body: dict[str, Any] = {"protocol": "openai", "api_base": fake.openai_base, "api_key": SECRET, "published": [
        {"alias": names["rank"], "upstream_model": f"rank-up-{provider_id}", "capabilities": ["rerank"]},
        {"alias": names["whisper"], "upstream_model": f"whisper-up-{provider_id}", "capabilities": ["transcription"]},
        {"alias": names["chat"], "upstream_model": f"chat-up-{provider_id}", "capabilities": ["chat"]}]}
    assert put(apps, provider_id, body).status_code == 200
    yield {**names, "id": provider_id}


def test_rerank_is_forwarded_to_an_alias_that_offers_it(apps: dict[str, TestClient],  # noqa: F811
                                                       fake: FakeProviders, aliases: dict[str, str]) -> None:
    inference = apps["inference"]
    query = {"query": "capital of France", "documents": ["Berlin is in Germany", "Paris is the capital of France"],
             "top_n": 2, "return_documents": False}
    # when a Jina/Cohere-style rerank names the alias, under /v1 and /api/v1
    ranked = inference.post("/v1/rerank", json={"model": aliases["rank"], **query})
    again = inference.post("/api/v1/rerank", json={"model": aliases["rank"], **query})
    # then the provider gets the body as sent, with its own model name, and its answer comes back as is
    assert ranked.status_code == 200 and again.status_code == 200, ranked.text
    assert [r["index"] for r in ranked.json()["results"]] == [1, 0]
    assert fake.last(f"rank-up-{aliases['id']}")["body"] == {"model": f"rank-up-{aliases['id']}", **query}
    # and the call is billed with the upstream's token count
    row = usage_row(aliases["rank"])
    assert row["endpoint"] == "/v1/rerank" and int(row["prompt_tokens"]) == 7
    # when an alias without the capability, or no alias, is named, then a 404 says why
    refused = inference.post("/v1/rerank", json={"model": aliases["chat"], **query})
    assert refused.status_code == 404
    assert "does not offer /v1/rerank" in refused.json()["error"]["message"]
    assert "'rerank'" in refused.json()["error"]["message"]
    unknown = inference.post("/v1/rerank", json={"model": "nope:rank", **query})
    assert unknown.status_code == 404 and "not a published alias" in unknown.json()["error"]["message"]


def test_transcription_multipart_is_forwarded_byte_for_byte(apps: dict[str, TestClient],  # noqa: F811
                                                           fake: FakeProviders, aliases: dict[str, str]) -> None:
    inference = apps["inference"]
    audio = b"RIFF" + os.urandom(48_000)  # binary, CRLFs and dashes included by chance
    # when a multipart transcription names the alias, with a file and other fields
    heard = inference.post("/v1/audio/transcriptions", data={"model": aliases["whisper"], "language": "en"},
                           files={"file": ("talk.wav", audio, "audio/wav")})
    # then the provider gets the same file and fields, its own model name in place of the alias
    assert heard.status_code == 200, heard.text
    assert heard.json()["text"] == f"heard {len(audio)} bytes"
    sent = fake.last(f"whisper-up-{aliases['id']}")["body"]
    assert sent["language"] == "en" and sent["file"] == {"filename": "talk.wav", "bytes": audio}
    # and the call is billed with the upstream's input tokens
    row = usage_row(aliases["whisper"])
    assert row["endpoint"] == "/v1/audio/transcriptions" and int(row["prompt_tokens"]) == 11
    # when the alias does not offer transcriptions, or the model field is missing
    refused = inference.post("/api/v1/audio/transcriptions", data={"model": aliases["chat"]},
                             files={"file": ("talk.wav", audio, "audio/wav")})
    missing = inference.post("/v1/audio/transcriptions", files={"file": ("talk.wav", audio, "audio/wav")})
    # then a 404 naming the missing capability, and a 400 naming the field
    assert refused.status_code == 404 and "'transcription'" in refused.json()["error"]["message"]
    assert missing.status_code == 400 and missing.json()["error"]["param"] == "model"


def test_the_openai_sdk_transcribes_through_the_gateway(apps: dict[str, TestClient],  # noqa: F811
                                                       fake: FakeProviders, aliases: dict[str, str]) -> None:
    # given the official SDK, its HTTP client being the gateway's app (the SDK writes its own multipart)
    client = openai.OpenAI(base_url="http://testserver/v1", api_key="dummy", http_client=apps["inference"],
                           max_retries=0)
    audio = os.urandom(20_000)
    # when it asks for a transcription with a prompt and a temperature
    heard = client.audio.transcriptions.create(model=aliases["whisper"], file=("note.mp3", audio, "audio/mpeg"),
                                               prompt="names: Ada", temperature=0.2)
    # then the answer parses, and the provider got the file and every field, under its own model name
    assert heard.text == f"heard {len(audio)} bytes"
    sent = fake.last(f"whisper-up-{aliases['id']}")["body"]
    assert sent["file"] == {"filename": "note.mp3", "bytes": audio}
    assert sent["prompt"] == "names: Ada" and float(sent["temperature"]) == 0.2


def test_a_body_that_is_not_multipart_is_a_400(apps: dict[str, TestClient]) -> None:  # noqa: F811
    resp = apps["inference"].post("/v1/audio/transcriptions", json={"model": "x"})
    assert resp.status_code == 400 and "multipart/form-data" in resp.json()["error"]["message"]

