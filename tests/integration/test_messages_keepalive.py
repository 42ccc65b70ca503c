"""A messages stream sends Anthropic's ``ping`` events while the backend is silent, and only then; a chat
completions stream never does (the OpenAI dialect has no such event). The inference app in process, over the
fake agent on loopback with a pause between its events, and the ping interval made short."""

from __future__ import annotations

from collections.abc import Iterator

import pytest
from starlette.testclient import TestClient

from isthmus import wiring
from isthmus.backends.default_agent import DefaultAgentResolver
from isthmus.services.inference.inference import InferenceService
from tests.support.control_agents import AgentSpec, RunningAgent, fake_agent_command, start_agent

pytestmark = pytest.mark.integration
EVENT_GAP_S = 0.5  # the agent's silence between two events
PING_S = 0.15


@pytest.fixture(scope="module")
def slow_agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    spec = AgentSpec(node_id="slow", models_dir=tmp_path_factory.mktemp("slow"), model="fake-model",
                     extra=("--event-delay", str(EVENT_GAP_S)))
    running = start_agent(spec, fake_agent_command)
    yield running
    running.stop()


@pytest.fixture()
def inference(slow_agent: RunningAgent, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    import functions.inference.routes as routes

    service = InferenceService(DefaultAgentResolver(slow_agent.base_url), None)  # no tenancy gate
    monkeypatch.setattr(wiring, "inference_service", lambda: service)
    monkeypatch.setattr(routes, "PING_INTERVAL_S", PING_S)
    with TestClient(routes.app) as client:
        yield client


def event_names(client: TestClient, path: str, body: dict[str, object]) -> list[str]:
    with client.stream("POST", path, json={**body, "stream": True}) as resp:
        assert resp.status_code == 200, resp.read()
        return [line[7:] if line.startswith("event: ") else line for line in resp.iter_lines()
                if line.startswith(("event: ", "data: {\"id\""))]


def test_a_messages_stream_pings_in_the_backend_silences_and_a_chat_stream_does_not(inference: TestClient) -> None:
    ask = {"model": "fake-model", "max_tokens": 32, "messages": [{"role": "user", "content": "one two"}]}
    # when a messages stream is relayed from an agent that pauses 0.5 s between events
    names = event_names(inference, "/v1/messages", ask)
    # then it starts with message_start (no ping before the first event), pings fill each silence, and the
    # stream still ends properly
    assert names[0] == "message_start" and names[-1] == "message_stop", names
    deltas = [i for i, n in enumerate(names) if n == "content_block_delta"]
    assert len(deltas) >= 3
    between = names[deltas[0] + 1:deltas[1]]
    assert 1 <= between.count("ping") <= 4, names
    # when the same is asked as a chat completion, then no ping (and nothing else foreign) is in it
    chunks = event_names(inference, "/v1/chat/completions", ask)
    assert chunks and all(c.startswith("data: ") for c in chunks), chunks
