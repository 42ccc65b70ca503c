"""An agent that requires a key (``ISTHMUS_AGENT_API_KEY`` / ``--api-key``) behind a telemak cluster whose upstream
speaks the agent protocol (issue 18, part 3): the cluster's stored ``api_key`` goes to the agent as a Bearer, so the
chat works through the edge in both dialects; a cluster with the wrong key gives the caller a clear error in its
dialect. The keyed agent in single-Mac mode takes the key from either SDK and refuses calls without it; ``/health``
stays open; the key never reaches its log."""

from __future__ import annotations

import os
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from tests.conftest import SharedEdges
from tests.support.agents import AgentProcess

pytestmark = pytest.mark.e2e
KEY = "sk-agent-" + uuid.uuid4().hex
GOOD = "keyed" + uuid.uuid4().hex[:4]
BAD = "wrongkey" + uuid.uuid4().hex[:4]
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(scope="module")
def keyed_agent(tiny_model: Path, agent_logs: Path) -> Iterator[AgentProcess]:
    # given an agent in single-Mac mode started with its key in the environment (not on its command line)
    saved = os.environ.get("ISTHMUS_AGENT_API_KEY")
    os.environ["ISTHMUS_AGENT_API_KEY"] = KEY
    try:
        agent = AgentProcess(str(tiny_model), "--serve-api", "--no-loop-guard", log_dir=agent_logs)
    finally:
        if saved is None:
            os.environ.pop("ISTHMUS_AGENT_API_KEY", None)
        else:
            os.environ["ISTHMUS_AGENT_API_KEY"] = saved
    yield agent
    agent.stop()


@pytest.fixture(scope="module")
def edge(shared_edges: SharedEdges, keyed_agent: AgentProcess) -> str:
    base = shared_edges.get("asgi", {"ISTHMUS_ROUTING_CACHE_SECONDS": "0"})  # shared: clusters of its own names
    # given two telemak clusters in front of it: one with its key (protocol detected), one with a wrong key
    r = httpx.put(f"{base}/admin/clusters/{GOOD}", json={"kind": "telemak", "url": keyed_agent.base,
                                                         "api_key": KEY}, timeout=30)
    assert r.status_code == 200, r.text
    r = httpx.put(f"{base}/admin/clusters/{BAD}", json={"kind": "telemak", "url": keyed_agent.base,
                                                        "api_key": "sk-not-this-one", "protocol": "agent"},
                  timeout=30)
    assert r.status_code == 200, r.text
    return base


def test_the_agent_refuses_calls_without_its_key_and_health_stays_open(keyed_agent: AgentProcess) -> None:
    # when its routes are called without the key, or with another one
    health = httpx.get(f"{keyed_agent.base}/health", timeout=10)
    status = httpx.get(f"{keyed_agent.base}/agent/v1/status", timeout=10)
    wrong = httpx.post(f"{keyed_agent.base}/agent/v1/generate", headers={"authorization": "Bearer nope"},
                       json={"model": "default", "messages": []}, timeout=10)
    # then only /health answers; the others are a 401 naming how to send the key
    assert health.status_code == 200 and health.json()["status"] in ("idle", "busy")
    assert status.status_code == 401 and status.headers["www-authenticate"] == "Bearer"
    assert "Authorization: Bearer" in status.json()["detail"]
    assert wrong.status_code == 401 and "not this agent's" in wrong.json()["detail"]
    # and its /v1/* answers each SDK's own authentication error without the key
    with pytest.raises(openai.AuthenticationError, match="requires its API key"):
        openai.OpenAI(base_url=f"{keyed_agent.base}/v1", api_key="wrong", max_retries=0).chat.completions.create(
            model="default", messages=HI, max_tokens=2)
    with pytest.raises(anthropic.AuthenticationError, match="requires its API key"):
        anthropic.Anthropic(base_url=keyed_agent.base, api_key="wrong", max_retries=0).messages.create(
            model="default", max_tokens=2, messages=HI)


def test_single_mac_mode_takes_the_key_from_either_sdk(keyed_agent: AgentProcess) -> None:
    # when both SDKs call the keyed agent's own /v1/* with its key (Bearer; x-api-key)
    whole = openai.OpenAI(base_url=f"{keyed_agent.base}/v1", api_key=KEY, max_retries=0).chat.completions.create(
        model="default", messages=HI, max_tokens=4)
    msg = anthropic.Anthropic(base_url=keyed_agent.base, api_key=KEY, max_retries=0).messages.create(
        model="default", max_tokens=3, messages=HI)
    # then both are answered (the /v1/* surface sends the key on its own calls to the agent too)
    assert whole.usage is not None and whole.usage.completion_tokens == 4
    assert msg.usage.output_tokens == 3


def test_a_telemak_cluster_sends_its_key_to_an_agent_upstream(edge: str) -> None:
    # given the cluster was recognised as an agent (its status route answered with the key)
    cluster = httpx.get(f"{edge}/admin/clusters/{GOOD}", timeout=10).json()
    assert cluster["protocol"] == "agent" and cluster["has_api_key"] is True
    assert KEY not in httpx.get(f"{edge}/admin/clusters", timeout=10).text
    # when a chat completion and an Anthropic stream go through the edge to it
    answer = openai.OpenAI(base_url=f"{edge}/v1", api_key="unused", max_retries=0).chat.completions.create(
        model=GOOD, messages=HI, max_tokens=5)
    with anthropic.Anthropic(base_url=edge, api_key="unused", max_retries=0).messages.stream(
            model=GOOD, max_tokens=4, messages=HI) as stream:
        final = stream.get_final_message()
    # then the agent served both
    assert answer.choices[0].finish_reason == "length" and answer.usage is not None
    assert answer.usage.completion_tokens == 5
    assert final.stop_reason == "max_tokens" and final.usage.output_tokens == 4


def test_a_wrong_stored_key_is_a_clear_error_in_each_dialect(edge: str, keyed_agent: AgentProcess) -> None:
    # when callers use the cluster whose stored key the agent refuses
    with pytest.raises(openai.APIStatusError) as oai:
        openai.OpenAI(base_url=f"{edge}/v1", api_key="unused", max_retries=0).chat.completions.create(
            model=BAD, messages=HI, max_tokens=2, stream=True)
    with pytest.raises(anthropic.APIStatusError) as ant:
        anthropic.Anthropic(base_url=edge, api_key="unused", max_retries=0).messages.create(
            model=BAD, max_tokens=2, messages=HI)
    # then each gets a 502 in its own shape that says the gateway's key for the upstream is wrong
    assert oai.value.status_code == 502
    assert oai.value.body["code"] == "upstream_auth_failed"
    assert "api_key is missing or wrong" in oai.value.message
    assert ant.value.status_code == 502 and ant.value.body["type"] == "error"
    assert "api_key is missing or wrong" in ant.value.body["error"]["message"]
    # and the key is in no log line of the agent
    keyed_agent.log.flush()
    assert KEY not in Path(keyed_agent.log.name).read_text()
