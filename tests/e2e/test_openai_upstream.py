"""A telemak cluster whose upstream speaks OpenAI's /v1/* (issue 18, part 3): a real ``mlx_lm.server`` serving
SmolLM2 on loopback behind a key-checking proxy, put behind the edge with ``PUT /admin/clusters/<id>`` like an
operator would. The official SDKs call it through the edge: chat completions, an Anthropic messages stream
(translated), Responses, tools forwarded; its models are discovered and listed; its errors come back in the
caller's dialect."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.conftest import SharedEdges
from tests.support.fake_providers import FakeProviders
from tests.support.openai_upstream import KeyProxy, MlxLmServer

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
KEY = "sk-upstream-" + uuid.uuid4().hex
CLUSTER = "mlxup" + uuid.uuid4().hex[:4]
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}


@pytest.fixture(scope="module")
def upstream(smollm2_model: Path, agent_logs: Path) -> Iterator[tuple[MlxLmServer, KeyProxy]]:
    server = MlxLmServer(smollm2_model, agent_logs)
    proxy = KeyProxy(server.base, KEY).start()
    yield server, proxy
    proxy.stop()
    server.stop()


@pytest.fixture(scope="module")
def edge(shared_edges: SharedEdges, upstream: tuple[MlxLmServer, KeyProxy]) -> str:
    base = shared_edges.get("asgi", {"ISTHMUS_ROUTING_CACHE_SECONDS": "0"})  # shared: a cluster of its own name
    # given an operator who puts the upstream behind a cluster with its api key (no protocol named)
    r = httpx.put(f"{base}/admin/clusters/{CLUSTER}", json={"kind": "telemak", "url": upstream[1].base,
                                                            "api_key": KEY}, timeout=30)
    assert r.status_code == 200, r.text
    return base


def test_the_upstream_is_recognised_and_its_models_listed(edge: str, smollm2_model: Path,
                                                          upstream: tuple[MlxLmServer, KeyProxy]) -> None:
    # when the admin API and /v1/models are read
    cluster = httpx.get(f"{edge}/admin/clusters/{CLUSTER}").json()
    ids = {m["id"] for m in httpx.get(f"{edge}/v1/models").json()["data"]}
    # then the protocol was detected, the model discovered with the key, and both ids are servable
    served = str(smollm2_model.resolve())
    assert cluster["protocol"] == "openai" and cluster["models"] == [served] and cluster["has_api_key"] is True
    assert KEY not in httpx.get(f"{edge}/admin/clusters").text
    assert {CLUSTER, f"{CLUSTER}:{served}"} <= ids
    assert any(r["path"] == "/v1/models" and r["authorization"] == f"Bearer {KEY}" for r in upstream[1].requests)


def test_chat_completion_and_tools_go_through_with_the_key(edge: str,
                                                           upstream: tuple[MlxLmServer, KeyProxy]) -> None:
    client = openai.OpenAI(base_url=f"{edge}/v1", api_key="unused", max_retries=0)
    # when a chat completion with a tool is sent to the cluster's id
    answer = client.chat.completions.create(model=CLUSTER, max_tokens=6, temperature=0, tools=[WEATHER],
                                            messages=[{"role": "user", "content": "Say hello."}])
    # then SmolLM2 answered through the upstream, which got the key, the tools and a bounded max_tokens
    assert answer.choices[0].message.content and answer.usage is not None and answer.usage.completion_tokens > 0
    forwarded = upstream[1].requests[-1]
    assert forwarded["path"] == "/v1/chat/completions" and forwarded["authorization"] == f"Bearer {KEY}"
    assert forwarded["body"]["tools"][0]["function"]["name"] == "get_weather"
    assert forwarded["body"]["max_tokens"] == 6


def test_anthropic_messages_stream_is_translated(edge: str) -> None:
    client = anthropic.Anthropic(base_url=edge, api_key="unused", max_retries=0)
    # when the Anthropic SDK streams a message from the upstream
    with client.messages.stream(model=CLUSTER, max_tokens=6,
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        kinds = [event.type for event in stream]
        final = stream.get_final_message()
    # then it is a well-formed Anthropic stream carrying SmolLM2's text and usage
    assert kinds[0] == "message_start" and "content_block_delta" in kinds and kinds[-1] == "message_stop"
    assert final.content and final.content[0].type == "text" and final.content[0].text
    assert final.usage.output_tokens > 0


def test_responses_streamed_through_the_upstream(edge: str) -> None:
    client = openai.OpenAI(base_url=f"{edge}/v1", api_key="unused", max_retries=0)
    # when a Responses stream is asked of the upstream (cut by max_output_tokens: it ends "incomplete")
    events = list(client.responses.create(model=CLUSTER, input="Say hello.", max_output_tokens=6, store=False,
                                          stream=True))
    # then it is a Responses event stream with SmolLM2's text
    kinds = [e.type for e in events]
    assert kinds[0] == "response.created" and kinds[-1] in ("response.completed", "response.incomplete")
    assert "".join(e.delta for e in events if e.type == "response.output_text.delta")


def test_a_refused_key_is_an_error_in_each_dialect(edge: str, upstream: tuple[MlxLmServer, KeyProxy]) -> None:
    # given the same upstream behind a cluster holding a wrong key
    bad = CLUSTER + "-badkey"
    r = httpx.put(f"{edge}/admin/clusters/{bad}", json={"kind": "telemak", "url": upstream[1].base,
                                                        "api_key": "sk-wrong", "protocol": "openai",
                                                        "models": ["m"]}, timeout=30)
    assert r.status_code == 200, r.text
    try:
        # when each SDK calls it; then each gets a 502 naming the refused credentials, in its own shape
        with pytest.raises(openai.APIStatusError) as oa:
            openai.OpenAI(base_url=f"{edge}/v1", api_key="unused", max_retries=0).chat.completions.create(
                model=bad, max_tokens=4, messages=[{"role": "user", "content": "hi"}])
        assert oa.value.status_code == 502 and "credentials" in oa.value.message
        assert oa.value.body["code"] == "upstream_auth_failed"
        raw = httpx.post(f"{edge}/v1/messages", json={"model": bad, "max_tokens": 4, "stream": True,
                                                      "messages": [{"role": "user", "content": "hi"}]}, timeout=30)
        assert raw.status_code == 502 and raw.json()["type"] == "error"
        assert "credentials" in raw.json()["error"]["message"] and "sk-wrong" not in raw.text
    finally:
        httpx.delete(f"{edge}/admin/clusters/{bad}")


def test_embeddings_go_to_an_openai_protocol_upstream_that_serves_them(edge: str) -> None:
    # given an OpenAI-protocol upstream with an embedding model (mlx_lm.server has none: the fake provider stands in)
    fake = FakeProviders().start()
    cluster = CLUSTER + "-emb"
    try:
        r = httpx.put(f"{edge}/admin/clusters/{cluster}", json={
            "kind": "telemak", "url": fake.base + "/openai", "api_key": "sk-emb", "protocol": "openai",
            "models": ["emb-up"]}, timeout=30)
        assert r.status_code == 200, r.text
        # when the SDK asks the cluster for embeddings
        answer = openai.OpenAI(base_url=f"{edge}/v1", api_key="unused", max_retries=0).embeddings.create(
            model=cluster, input="hello", encoding_format="float")
        # then the upstream answered, called with its model name and the cluster's key
        assert answer.data[0].embedding == [0.1, 0.2, 0.3]
        sent = fake.last("emb-up")
        assert sent["path"].endswith("/v1/embeddings") and sent["headers"]["authorization"] == "Bearer sk-emb"
    finally:
        httpx.delete(f"{edge}/admin/clusters/{cluster}")
        fake.stop()
