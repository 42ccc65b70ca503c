"""One model over two real node agents as an MLX distributed group (ring backend on loopback), loaded through
the admin API: greedy answers through the edge identical to one node's, each agent holding about half of the
weights (pipeline) or a slice of every layer (tensor), and (last: it takes a node down) a rank killed
mid-stream: an in-band error in both dialects and /admin/clusters saying why the pool is degraded."""

from __future__ import annotations

import json
import os
import signal
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local_runtime.agent.models.tiny import build_tiny_model
from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.agents import AgentProcess, enrolled_agent, enrolled_agents
from tests.support.waiting import poll

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
CLUSTER = "shards"
PROMPT = [{"role": "user", "content": "Tell me about the sea."}]


class Group:
    def __init__(self, edge: str, agents: dict[str, AgentProcess], model: Path) -> None:
        self.edge, self.agents, self.model = edge, agents, model

    def admin(self, path: str, body: dict[str, Any] | None = None) -> httpx.Response:
        if body is None:
            return httpx.get(f"{self.edge}/admin{path}", timeout=30)
        return httpx.post(f"{self.edge}/admin{path}", json=body, timeout=300)

    def load(self, **body: Any) -> httpx.Response:
        """A load right after a request: a node's last heartbeat may still say busy, hence force."""
        return self.admin(f"/{CLUSTER}/load", {**body, "force": True})

    def pool(self, alias: str) -> dict[str, Any]:
        clusters = self.admin("/clusters").json()["clusters"]
        # {} while the control plane heals the pool (its record is replaced: the old group ends, the new loads)
        return dict(next(c for c in clusters if c["cluster_id"] == CLUSTER)["pools"].get(alias) or {})

    def chat(self, model: str, max_tokens: int = 24) -> dict[str, Any]:
        body = {"model": model, "messages": PROMPT, "max_tokens": max_tokens, "temperature": 0}
        # the edge's routing snapshot may predate the load by a second (ISTHMUS_ROUTING_CACHE_SECONDS)
        r = poll(lambda: (x := httpx.post(f"{self.edge}/v1/chat/completions", json=body, timeout=120)).status_code
                 != 404 and x, timeout=15)
        assert r.status_code == 200, r.text
        return dict(r.json())


@pytest.fixture(scope="module")
def group(ddb_tables: str, tmp_path_factory: pytest.TempPathFactory, agent_logs: Path) -> Iterator[Group]:
    # 8 layers: the embedding (kept by rank 0 only) is small beside them, so "about half" is measurable
    model = build_tiny_model(tmp_path_factory.mktemp("shard-models") / "tiny8", "qwen2", layers=8)
    proc, edge = start_edge("asgi", env={"ISTHMUS_NODE_STALE_SECONDS": "4"})
    try:
        with enrolled_agents(edge, CLUSTER, ("a", "b"), "--no-loop-guard", log_dir=agent_logs) as agents:
            yield Group(edge, agents, model)
    finally:
        stop(proc)


@pytest.fixture(scope="module")
def one_node_answer(group: Group) -> dict[str, Any]:
    """The same model whole on one node (node a), greedy: the reference every sharded answer must match."""
    r = group.load(model=str(group.model), alias="whole", nodes=["a"])
    assert r.status_code == 200, r.text
    answer = group.chat("whole")
    assert group.admin(f"/{CLUSTER}/unload", {"alias": "whole"}).status_code == 200
    return answer


def full_weight_bytes(model: Path) -> int:
    import mlx.core as mx

    weights: dict[str, Any] = mx.load(str(model / "model.safetensors"))  # type: ignore[assignment]
    return sum(int(v.nbytes) for v in weights.values())


def test_pipeline_over_two_agents_answers_like_one_node_with_half_the_weights_each(
        group: Group, one_node_answer: dict[str, Any]) -> None:
    # when the model is loaded with pipeline sharding over both agents (a is rank 0)
    r = group.load(model=str(group.model), alias="pp", sharding="pipeline", nodes=["a", "b"])
    assert r.status_code == 200, r.text
    loaded = r.json()
    assert (loaded["mode"], loaded["ranks"], loaded["backend"]) == ("pipeline", ["a", "b"], "ring")
    # then each agent holds about half of the weights (rank 0 also the embedding and final norm)
    full = full_weight_bytes(group.model)
    held = loaded["param_bytes"]
    assert held["a"] + held["b"] == full
    assert 0.35 * full < held["b"] < 0.5 * full < held["a"] < 0.65 * full, (held, full)
    for node, rank in (("a", 0), ("b", 1)):
        shard = group.agents[node].status()["shard"]
        assert (shard["rank"], shard["mode"], shard["param_bytes"]) == (rank, "pipeline", held[node])
    # and the greedy answer through the edge is the one node's, token for token
    answer = group.chat("pp")
    assert answer["choices"][0]["message"] == one_node_answer["choices"][0]["message"]
    assert answer["usage"]["completion_tokens"] == one_node_answer["usage"]["completion_tokens"] == 24
    # and /v1/models and /admin/clusters show the sharding and the node of each rank
    entry = next(m for m in httpx.get(f"{group.edge}/v1/models").json()["data"] if m["id"] == "pp")
    assert entry["x_odyssai"]["sharding"] == "pipeline"
    assert entry["x_odyssai"]["ranks"] == [{"rank": 0, "node_id": "a"}, {"rank": 1, "node_id": "b"}]
    pool = group.pool("pp")
    assert (pool["mode"], pool["nodes"], pool["degraded"], pool["ready"]) == ("pipeline", ["a"], None, True)
    assert [r["node_id"] for r in pool["ranks"]] == ["a", "b"]


QUESTIONS = ["Name three colours.", "What is two plus two?", "Write a haiku about rain."]


def ask(group: Group, model: str, question: str, **extra: Any) -> dict[str, Any]:
    body = {"model": model, "messages": [{"role": "user", "content": question}], "max_tokens": 48,
            "temperature": 0, **extra}
    r = httpx.post(f"{group.edge}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return dict(r.json())


def two_turns(group: Group, model: str) -> tuple[dict[str, Any], dict[str, Any]]:
    session = f"s-{model}"
    first = ask(group, model, QUESTIONS[0], session_id=session)
    turn2 = [{"role": "user", "content": QUESTIONS[0]}, first["choices"][0]["message"],
             {"role": "user", "content": "And three more?"}]
    body = {"model": model, "messages": turn2, "max_tokens": 24, "temperature": 0, "session_id": session}
    r = httpx.post(f"{group.edge}/v1/chat/completions", json=body, timeout=120)
    assert r.status_code == 200, r.text
    return first, dict(r.json())


def test_a_pipeline_pool_batches_concurrent_requests_and_reuses_a_sessions_prefix(group: Group) -> None:
    from concurrent.futures import ThreadPoolExecutor

    # given the answers of the whole model on one node, each question asked alone, and a two-turn session
    assert group.load(model=str(group.model), alias="whole", nodes=["a"]).status_code == 200
    group.chat("whole")  # routable
    alone = [ask(group, "whole", q) for q in QUESTIONS]
    _, whole_turn2 = two_turns(group, "whole")
    assert group.admin(f"/{CLUSTER}/unload", {"alias": "whole"}).status_code == 200
    # when the same questions reach a pipeline pool at once
    r = group.load(model=str(group.model), alias="pp", sharding="pipeline", nodes=["a", "b"])
    assert r.status_code == 200, r.text
    group.chat("pp")
    with ThreadPoolExecutor(len(QUESTIONS)) as pool:
        together = list(pool.map(lambda q: ask(group, "pp", q), QUESTIONS))
    # then they were decoded together (one forward pass over the ring for several sequences) and each answer
    # is the one node's, token for token
    assert group.agents["a"].status()["shard"]["batch_rows_peak"] >= 2
    for got, want in zip(together, alone, strict=True):
        assert got["choices"][0]["message"] == want["choices"][0]["message"]
        assert got["usage"]["completion_tokens"] == want["usage"]["completion_tokens"]
    # and a session's second turn prefills only its new tokens, on both ranks, and answers as one node does
    _, turn2 = two_turns(group, "pp")
    assert turn2["usage"]["prompt_tokens_details"]["cached_tokens"] > 0, turn2["usage"]
    assert turn2["choices"][0]["message"] == whole_turn2["choices"][0]["message"]
    follower = group.agents["b"].status()["shard"]
    assert follower["sequences_held"] == group.agents["a"].status()["cache_entries"] >= 1


def test_pipeline_of_a_llama_class_model_with_its_own_head(group: Group, tmp_path: Path) -> None:
    # given a llama-class model (SmolLM2's class, which mlx-lm cannot pipeline) with an untied output head
    llama = build_tiny_model(tmp_path / "tiny8-llama", "llama", layers=8)
    assert group.load(model=str(llama), alias="whole-llama", nodes=["a"]).status_code == 200
    whole = group.chat("whole-llama")
    # when it is loaded with pipeline sharding
    r = group.load(model=str(llama), alias="pp-llama", sharding="pipeline", nodes=["a", "b"])
    assert r.status_code == 200, r.text
    # then rank 0 holds the embedding and the head, rank 1 only layers, and the greedy answer is the same
    held, full = r.json()["param_bytes"], full_weight_bytes(llama)
    assert held["a"] + held["b"] == full and held["b"] < held["a"]
    assert group.chat("pp-llama")["choices"][0]["message"] == whole["choices"][0]["message"]


def test_tensor_over_two_agents_answers_like_one_node(group: Group, one_node_answer: dict[str, Any]) -> None:
    # when the model (4 attention heads, 2 key/value heads: both divide by 2) is loaded with tensor sharding
    r = group.load(model=str(group.model), alias="tp", sharding="tensor", nodes=["b", "a"])
    assert r.status_code == 200, r.text
    # then the pipeline pool over the same nodes is gone, b takes the requests, each holds a slice of each layer
    pools = group.admin("/clusters").json()["clusters"]
    assert set(next(c for c in pools if c["cluster_id"] == CLUSTER)["pools"]) == {"tp"}
    held, full = r.json()["param_bytes"], full_weight_bytes(group.model)
    assert held["a"] == held["b"] < full
    assert group.pool("tp")["nodes"] == ["b"]
    # and the greedy answer is the one node's
    answer = group.chat("tp")
    assert answer["choices"][0]["message"] == one_node_answer["choices"][0]["message"]


def test_tensor_sharding_of_a_model_whose_heads_do_not_divide_is_refused(group: Group, smollm2_model: Path) -> None:
    # SmolLM2-135M has 9 attention heads and 3 key/value heads: not divisible over 2 nodes
    r = group.load(model=str(smollm2_model), alias="smol-tp", sharding="tensor", nodes=["a", "b"])
    assert r.status_code == 400, r.text
    assert "heads divisible by 2" in r.json()["detail"]
    clusters = group.admin("/clusters").json()["clusters"]
    assert "smol-tp" not in next(c for c in clusters if c["cluster_id"] == CLUSTER)["pools"]
    for agent in group.agents.values():  # and neither agent is left holding a part of it
        assert agent.status()["shard"] is None


def test_bad_group_requests_are_refused_before_anything_changes(group: Group) -> None:
    before = group.admin("/clusters").json()
    r = group.load(model=str(group.model), sharding="pipeline", nodes=["a", "a"])
    assert r.status_code == 400 and "twice" in r.json()["detail"]
    r = group.load(model=str(group.model), sharding="pipeline", backend="jaccl", nodes=["a", "b"])
    assert r.status_code == 400 and "ibv_devices" in r.json()["detail"]
    r = group.load(model=str(group.model), sharding="pipeline", backend="nccl", nodes=["a", "b"])
    assert r.status_code == 400 and "backend" in r.json()["detail"]
    assert group.admin("/clusters").json() == before


def stream_and_kill(group: Group, path: str, body: dict[str, Any], victim: str) -> list[dict[str, Any]]:
    """The data frames of a stream during which ``victim`` is killed (after the first few tokens)."""
    frames: list[dict[str, Any]] = []
    with httpx.stream("POST", f"{group.edge}{path}", json=body, timeout=120) as resp:
        assert resp.status_code == 200, resp.read()
        for line in resp.iter_lines():
            if not line.startswith("data:") or line == "data: [DONE]":
                continue
            frames.append(json.loads(line.removeprefix("data: ")))
            if len(frames) == 5:
                os.kill(group.agents[victim].proc.pid, signal.SIGKILL)
    return frames


def test_killing_a_rank_mid_stream_errors_in_band_in_both_dialects_and_marks_the_pool_degraded(
        group: Group, agent_logs: Path, one_node_answer: dict[str, Any]) -> None:
    dialects = {
        "openai": ("/v1/chat/completions", lambda f: f.get("error")),
        "anthropic": ("/v1/messages", lambda f: f.get("type") == "error" and f["error"]),
    }
    for dialect, (path, error_of) in dialects.items():
        # given a pipeline pool (a = rank 0, b = rank 1) with b running
        if group.agents["b"].proc.poll() is not None:
            group.agents["b"].stop()
            group.agents["b"] = enrolled_agent(group.edge, CLUSTER, "b", "--no-loop-guard", log_dir=agent_logs)
            poll(lambda: any(n["node_id"] == "b" and n["up"]
                             for n in group.admin(f"/clusters/{CLUSTER}/status").json()["nodes"]), timeout=60)
        # (the control plane may be healing the pool from the last round meanwhile: 409 until it is done)
        r = poll(lambda: (x := group.load(model=str(group.model), alias="pp", sharding="pipeline",
                                          nodes=["a", "b"])).status_code != 409 and x, timeout=120)
        assert r.status_code == 200, r.text
        # when rank 1 is killed while rank 0 streams an answer
        body = {"model": "pp", "messages": PROMPT, "max_tokens": 4000, "stream": True}
        frames = stream_and_kill(group, path, body, "b")
        # then the stream ends with the dialect's in-band error event, saying a node of the group was lost
        error = error_of(frames[-1])
        assert error, (dialect, frames[-3:])
        assert "sharded group was lost" in error["message"], (dialect, error)
        assert len(frames) < 4000
        # and /admin/clusters says why the pool is degraded (or, healed already, what happened)
        poll(lambda: (p := group.pool("pp")).get("degraded") and "'b' (rank 1) is down" in p["degraded"], timeout=30)
    # when the control plane heals its pools (every 30 s from heartbeats; here at once)
    pool = poll(lambda: group.admin("/pools/reap", {}).status_code == 200 and (p := group.pool("pp")).get("ranks") == []
                and p, timeout=120)
    # then the model, which fits one node, is whole again on the remaining rank, and says what happened
    assert pool["degraded"].startswith("reloaded on a (solo) after:"), pool
    assert (pool["mode"], pool["nodes"], pool["ranks"], pool["ready"]) == ("solo", ["a"], [], True)
    assert "'b' (rank 1) is down" in pool["degraded"]
    answer = group.chat("pp")
    assert answer["choices"][0]["message"] == one_node_answer["choices"][0]["message"]
