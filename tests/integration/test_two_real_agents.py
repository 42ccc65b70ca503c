"""Two real node agents (SmolLM2-135M, different loopback ports) behind the control plane: enrollment,
load through the admin API, routing by alias and cluster name, session affinity (the prefix cache keeps
hitting), CoeOS asking the real model as its decider, and (last, as it takes a node down) a node killed
mid-answer: an in-band error for the stream in flight, a usage row saying error, and the next requests served
by the other node."""

from __future__ import annotations

import json
import os
import re
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.control_tables import DynamoSessionStore
from isthmus.control.models import utcnow
from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.agents import AgentProcess, enrolled_agents, nodes_up
from tests.support.waiting import poll

pytestmark = [pytest.mark.integration, pytest.mark.slow]
CLUSTER = "lan"




class Lan:
    def __init__(self, edge: str, agents: dict[str, AgentProcess]) -> None:
        self.edge = edge
        self.agents = agents

    def up(self) -> set[str]:
        return nodes_up(self.edge, CLUSTER)

    def chat(self, model: str, messages: list[dict[str, str]], session: str | None = None,
             max_tokens: int = 6) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model, "messages": messages, "max_tokens": max_tokens}
        if session:
            body["session_id"] = session
        r = httpx.post(f"{self.edge}/v1/chat/completions", json=body, timeout=120)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def lan(ddb_tables: str, smollm2_model: Path, agent_logs: Path) -> Iterator[Lan]:
    # Stale after 12 s: two missed 5 s heartbeats (a node busy generating on 2 cores may send one late).
    proc, edge = start_edge("asgi", env={"ISTHMUS_NODE_STALE_SECONDS": "12"})
    try:
        with enrolled_agents(edge, CLUSTER, ("node-a", "node-b"), "--max-batch", "2", log_dir=agent_logs,
                             timeout=120) as agents:
            yield Lan(edge, agents)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def loaded(lan: Lan, smollm2_model: Path) -> dict[str, Any]:
    """The operator loads the model on the cluster under the alias ``smol`` (once for the module)."""
    r = httpx.post(f"{lan.edge}/admin/{CLUSTER}/load", json={"model": str(smollm2_model), "alias": "smol"},
                   timeout=300)
    assert r.status_code == 200, r.text
    return dict(r.json())


def test_load_through_the_admin_api_then_route_by_alias_and_cluster(lan: Lan, loaded: dict[str, Any]) -> None:
    # when the operator loaded the model on the cluster under an alias, then both nodes loaded it
    assert loaded["loaded"] is True and sorted(loaded["nodes"]) == ["node-a", "node-b"]
    assert "smol" in {m["id"] for m in httpx.get(f"{lan.edge}/v1/models").json()["data"]}
    # and requests route by alias and by cluster name to a real answer
    question = [{"role": "user", "content": "What is the capital of France?"}]
    for model in ("smol", CLUSTER):
        answer = lan.chat(model, question)
        assert answer["choices"][0]["message"]["content"].strip()


def test_a_session_stays_on_its_node_so_cached_tokens_grow(lan: Lan, loaded: dict[str, Any]) -> None:
    history = [{"role": "system", "content": "You are a helpful assistant. Answer in a few words."},
               {"role": "user", "content": "Name a river in France."}]
    cached: list[int] = []
    for follow_up in ("And one in Spain?", "And one in Italy?"):
        answer = lan.chat("smol", history, session="affinity-1")
        cached.append(answer["usage"].get("prompt_tokens_details", {}).get("cached_tokens", 0))
        history += [{"role": "assistant", "content": answer["choices"][0]["message"]["content"]},
                    {"role": "user", "content": follow_up}]
    last = lan.chat("smol", history, session="affinity-1")
    cached.append(last["usage"]["prompt_tokens_details"]["cached_tokens"])
    # turn 1 is cold; every later turn reuses the growing prefix on the same node
    assert cached[0] == 0
    assert 0 < cached[1] < cached[2]


def test_coeos_asks_the_real_decider_model_for_the_axis(lan: Lan, loaded: dict[str, Any]) -> None:
    # given CoeOS with two axes and the loaded SmolLM2 pool as the decider
    config = {"enabled": True, "decider_model": "smol", "default_axis": "chat",
              "axes": [{"key": "code", "label": "Programming", "model": "smol",
                        "description": "writing or fixing source code"},
                       {"key": "chat", "label": "Small talk", "model": "smol", "description": "greetings"}]}
    assert httpx.put(f"{lan.edge}/admin/coeos", json=config, timeout=30).status_code == 200
    # when a request names CoeOS without an axis header
    answer = lan.chat("CoeOS", [{"role": "user", "content": "Write a Python function that reverses a list."}])
    # then the real model was asked and answered, and the pick follows from its answer: an axis of the menu
    # when it named one, the default axis when it did not (a 135M model often does not)
    decision = httpx.get(f"{lan.edge}/admin/coeos/decisions", timeout=10).json()["decisions"][-1]
    assert decision["decider_answer"], decision
    named = re.search(r"AXIS:\s*`?(code|chat)\b", decision["decider_answer"], re.IGNORECASE)
    if named:
        assert (decision["axis_source"], decision["axis"]) == ("decider", named.group(1).lower())
    else:
        assert (decision["axis_source"], decision["axis"]) == ("default", "chat")
    assert decision["model"] == "smol"
    assert answer["choices"][0]["message"]["content"] is not None


def pinned_node(session: str) -> str:
    pin = DynamoSessionStore().get(session, utcnow())
    assert pin is not None, f"session {session} is not pinned"
    return pin[0]


def usage_row(request_id: str) -> dict[str, Any] | None:
    rows = dynamodb.client().scan(TableName=settings.table_name("usage"), FilterExpression="request_id = :r",
                                  ExpressionAttributeValues={":r": {"S": request_id}}, ConsistentRead=True)
    return rows["Items"][0] if rows["Items"] else None


def test_killing_the_node_mid_stream_errors_in_band_and_the_other_node_takes_over(
        lan: Lan, loaded: dict[str, Any]) -> None:
    # given a session pinned to one node
    lan.chat("smol", [{"role": "user", "content": "Hello!"}], session="doomed")
    victim = pinned_node("doomed")
    survivor = "node-b" if victim == "node-a" else "node-a"
    body = {"model": "smol", "session_id": "doomed", "stream": True, "max_tokens": 400,
            "messages": [{"role": "user", "content": "Tell me a very long story about a dragon."}]}
    frames: list[str] = []
    with httpx.stream("POST", f"{lan.edge}/v1/chat/completions", json=body, timeout=120) as resp:
        assert resp.status_code == 200
        request_id = resp.headers["x-request-id"]
        lines = resp.iter_lines()
        # when the first chunk is out and the pinned node dies
        frames.append(next(line for line in lines if line.startswith("data:")))
        os.kill(lan.agents[victim].proc.pid, signal.SIGKILL)
        frames += [line for line in lines if line.startswith("data:")]
    # then the stream ends with one OpenAI-shaped error event (no [DONE] after a failure)
    last = json.loads(frames[-1].removeprefix("data: "))
    assert last["error"]["code"] == "backend_stream_broken", frames[-3:]
    # and the usage row says error
    row = poll(lambda: usage_row(request_id), timeout=20)
    assert row["status"]["S"] == "error"
    # when the next request for the same session comes in
    answer = lan.chat("smol", [{"role": "user", "content": "Hello again!"}], session="doomed")
    # then the other node serves it (failover before the first byte), and the dead node is marked down
    assert answer["choices"][0]["message"]["content"] is not None
    assert pinned_node("doomed") == survivor
    poll(lambda: lan.up() == {survivor}, timeout=60)

