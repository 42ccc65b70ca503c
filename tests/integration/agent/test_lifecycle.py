"""Load, unload, status and health of a real agent process."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import pytest

from tests.support.agents import AgentProcess

pytestmark = [pytest.mark.integration]


@pytest.fixture()
def empty_agent(agent_logs: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess("", log_dir=agent_logs)  # no --model value: starts with nothing loaded
    yield agent
    agent.stop()


def test_agent_without_model_refuses_generation_then_loads_and_unloads(
        empty_agent: AgentProcess, tiny_model: Path) -> None:
    # given an agent with nothing loaded
    assert empty_agent.client.get("/health").json() == {"status": "idle", "model": None, "loaded": False}
    r = empty_agent.generate(text="hi")
    assert r.status_code == 503 and "load" in r.json()["detail"]
    assert empty_agent.client.post("/agent/v1/tokenize", json={"messages": [
        {"role": "user", "content": [{"type": "text", "text": "hi"}]}]}).status_code == 503
    # when a model is loaded by path
    r = empty_agent.client.post("/agent/v1/load", json={"model": str(tiny_model)})
    # then it serves requests and reports itself
    assert r.status_code == 200, r.text
    assert r.json()["loaded"] is True and r.json()["model"] == str(tiny_model)
    assert empty_agent.generate(text="hi", max_tokens=2).status_code == 200
    # when it is unloaded
    r = empty_agent.client.post("/agent/v1/unload")
    assert r.status_code == 200 and r.json()["loaded"] is False
    assert empty_agent.generate(text="hi").status_code == 503


def test_loading_an_unknown_model_is_404(empty_agent: AgentProcess) -> None:
    r = empty_agent.client.post("/agent/v1/load", json={"model": "no-such-model"})
    assert r.status_code == 404 and "no-such-model" in r.json()["detail"]
    assert empty_agent.client.post("/agent/v1/load", json={}).status_code == 422


def test_status_reports_the_node(tiny_agent: AgentProcess) -> None:
    tiny_agent.generate(text="hi", max_tokens=2, session_id="status-test")
    status = tiny_agent.status()
    assert status["loaded"] and status["model"]
    assert status["max_queue"] == 8 and status["node_id"]
    assert status["cache_entries"] >= 1 and status["cache_bytes"] > 0
    assert status["rss_bytes"] > 10_000_000 and status["ram_total_bytes"] > status["rss_bytes"]
    assert tiny_agent.client.get("/health").json()["status"] in ("idle", "busy")


def test_unloading_mid_generation_ends_the_stream_with_an_error_event(
        empty_agent: AgentProcess, tiny_model: Path) -> None:
    import json
    import threading

    # given a long generation in progress
    assert empty_agent.client.post("/agent/v1/load", json={"model": str(tiny_model)}).status_code == 200
    body = {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}],
            "stream": True, "sampling": {"max_tokens": 200_000}, "metadata": {"loop_guard": False}}
    events: list[dict] = []

    def read() -> None:
        with empty_agent.client.stream("POST", "/agent/v1/generate", json=body) as r:
            events.extend(json.loads(line) for line in r.iter_lines() if line)

    reader = threading.Thread(target=read)
    reader.start()
    empty_agent.wait_for(lambda s: s["active"] == 1)
    # when the model is unloaded
    assert empty_agent.client.post("/agent/v1/unload").status_code == 200
    reader.join(timeout=60)
    # then the stream ends in-band with an error, and the agent is idle
    assert events[0]["type"] == "start"
    assert events[-1]["type"] == "error" and events[-1]["status"] == 503
    assert empty_agent.status()["active"] == 0
    # and the error says what the generation used up to there (the gateway bills it): the prompt of the start
    # event and at least the tokens counted on the deltas that went out
    used = events[-1]["usage"]
    counted = [e["completion_tokens"] for e in events if e["type"] in ("text", "reasoning", "tool_call")]
    assert used["prompt_tokens"] == events[0]["prompt_tokens"] > 0
    assert used["completion_tokens"] >= max(counted, default=0)
