"""Bounded time and no silent wrong answers, against a real edge, DynamoDB Local and agent subprocesses on
loopback: an idle spell longer than the node stale limit, a frozen agent (SIGSTOP) mid-stream and before the
first byte, a killed agent, a pool node that restarts and loads its model, a frozen store (SIGSTOP of the
DynamoDB Local JVM) and an agent still loading its model. Limits are made small through the edge's environment;
every wait has a generous upper bound and every SIGSTOP is undone in a ``finally``."""

from __future__ import annotations

import functools
import json
import os
import signal
import subprocess
import threading
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from local_runtime.ddb import DynamoLocal, free_port
from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.control_agents import ROOT, AgentSpec, RunningAgent, fake_agent_command, start_agent
from tests.support.waiting import poll

pytestmark = [pytest.mark.integration]

STALE_S = 4.0  # heartbeats every 1.33 s (a third of it)
FIRST_BYTE_S = 2.0
IDLE_S = 2.0
STORE_READ_S = 1.0
BOUND_S = 15.0  # generous upper bound on every "answered quickly" below (not a performance target)
LONG_TEXT = " ".join(f"word{i}" for i in range(120))  # 120+ events at 0.1 s: ~12 s of stream


@dataclass
class Gateway:
    edge: str
    agents: dict[str, RunningAgent]
    default_agent_port: int

    def chat(self, model: str, text: str = "hello", **extra: Any) -> httpx.Response:
        body = {"model": model, "messages": [{"role": "user", "content": text}], "max_tokens": 8, **extra}
        return httpx.post(f"{self.edge}/v1/chat/completions", json=body, timeout=60)

    def models(self, **params: str) -> httpx.Response:
        return httpx.get(f"{self.edge}/v1/models", params=params, timeout=60)

    def pool_nodes(self, model: str) -> list[str]:
        r = self.models()
        entry = next((m for m in r.json()["data"] if m["id"] == model), None) if r.status_code == 200 else None
        return list(entry["x_odyssai"]["nodes"]) if entry else []

    def in_pool(self, node: str, model: str) -> bool:
        return node in self.pool_nodes(model)

    def ready_ids(self) -> set[str]:
        r = self.models()
        return {m["id"] for m in r.json()["data"]} if r.status_code == 200 else set()


@pytest.fixture(scope="module")
def gateway(ddb_tables: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Gateway]:
    default_port = free_port()  # the default agent comes up later, in the loading test
    proc, edge = start_edge("asgi", env={
        "ISTHMUS_NODE_STALE_SECONDS": str(STALE_S), "ISTHMUS_AGENT_FIRST_BYTE_SECONDS": str(FIRST_BYTE_S),
        "ISTHMUS_AGENT_IDLE_SECONDS": str(IDLE_S), "ISTHMUS_STORE_READ_TIMEOUT_SECONDS": str(STORE_READ_S),
        "ISTHMUS_STORE_CONNECT_TIMEOUT_SECONDS": "1", "ISTHMUS_STORE_MAX_ATTEMPTS": "2",
        "ISTHMUS_DEFAULT_AGENT_URL": f"http://127.0.0.1:{default_port}"})
    agents: dict[str, RunningAgent] = {}
    gw = Gateway(edge, agents, default_port)
    try:
        for node, cluster, model in (("fa", "faults", "fake-model"), ("fb", "faults", "fake-model"),
                                     ("solo", "solo", "solo-model")):
            spec = AgentSpec(node_id=node, models_dir=tmp_path_factory.mktemp(node), control_url=edge,
                             cluster=cluster, model=model, extra=("--event-delay", "0.1"))
            agents[node] = start_agent(spec, fake_agent_command)
            # one at a time, each in its pool before the next starts
            poll(functools.partial(gw.in_pool, node, model), timeout=60)
        yield gw
    finally:
        for agent in agents.values():
            if agent.proc.poll() is None:
                os.kill(agent.proc.pid, signal.SIGCONT)
            agent.stop()
        stop(proc)


def node_of(text: str) -> str:
    """The fake agent answers ``[<node id>] <model>: ...``."""
    return text.split("]", 1)[0].lstrip("[")


def test_idle_longer_than_the_stale_limit_then_a_chat_is_served(gateway: Gateway) -> None:
    # given a chat served (the routing snapshot is read and cached)
    assert gateway.chat("fake-model").status_code == 200
    # when nothing happens for longer than the node stale limit
    time.sleep(STALE_S + 1.5)
    # then the next chat (chat and messages dialects) is served: heartbeats are judged at the snapshot's time
    r = gateway.chat("fake-model")
    assert r.status_code == 200, r.text
    time.sleep(STALE_S + 1.5)
    m = httpx.post(f"{gateway.edge}/v1/messages", timeout=60, json={
        "model": "fake-model", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
    assert m.status_code == 200, m.text


def test_a_frozen_agent_ends_the_stream_in_flight_and_the_next_request_goes_elsewhere(gateway: Gateway) -> None:
    body = {"model": "fake-model", "stream": True, "max_tokens": 200,
            "messages": [{"role": "user", "content": LONG_TEXT}]}
    frozen: RunningAgent | None = None
    try:
        with httpx.stream("POST", f"{gateway.edge}/v1/chat/completions", json=body, timeout=60) as resp:
            assert resp.status_code == 200
            lines = resp.iter_lines()
            first_text = ""
            frames: list[str] = []
            for line in lines:
                if line.startswith("data:") and line != "data: [DONE]":
                    frames.append(line)
                    delta = json.loads(line[5:])["choices"][0]["delta"]
                    first_text += delta.get("content") or ""
                    if "]" in first_text:
                        break
            victim = node_of(first_text)
            assert victim in ("fa", "fb"), first_text
            # when the agent streaming this answer freezes
            frozen = gateway.agents[victim]
            os.kill(frozen.proc.pid, signal.SIGSTOP)
            frozen_at = time.monotonic()
            frames += [line for line in lines if line.startswith("data:")]
            ended_after = time.monotonic() - frozen_at
        # then the stream ends with the OpenAI error event, within the idle bound (plus slack)
        last = json.loads(frames[-1].removeprefix("data: "))
        assert last["error"]["code"] == "backend_stream_broken", frames[-3:]
        assert ended_after < BOUND_S
        print(f"\nfrozen agent: in-flight stream ended {ended_after:.2f} s after SIGSTOP (idle bound {IDLE_S} s)")
        # and a new request is served by the other node, within the first-byte bound (plus slack)
        started = time.monotonic()
        r = gateway.chat("fake-model", "again")
        took = time.monotonic() - started
        assert r.status_code == 200, r.text
        assert node_of(r.json()["choices"][0]["message"]["content"]) != victim
        assert took < BOUND_S
        print(f"frozen agent: next request served by the other node in {took:.2f} s")
    finally:
        if frozen is not None:
            os.kill(frozen.proc.pid, signal.SIGCONT)


def test_every_node_frozen_is_a_503_within_the_first_byte_bound(gateway: Gateway) -> None:
    pool = [gateway.agents["fa"], gateway.agents["fb"]]
    poll(lambda: gateway.chat("fake-model").status_code == 200, timeout=BOUND_S)  # both back from the last test
    try:
        for agent in pool:
            os.kill(agent.proc.pid, signal.SIGSTOP)
        started = time.monotonic()
        r = gateway.chat("fake-model")
        took = time.monotonic() - started
        # then an error saying to come back, not a hang (at most one first-byte wait per node)
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] in ("no_node_available", "no_ready_nodes")
        assert took < BOUND_S
        print(f"\nboth nodes frozen: 503 in {took:.2f} s (first-byte bound {FIRST_BYTE_S} s per node)")
    finally:
        for agent in pool:
            os.kill(agent.proc.pid, signal.SIGCONT)
    poll(lambda: gateway.chat("fake-model").status_code == 200, timeout=BOUND_S)


def test_a_killed_agent_is_shown_not_ready(gateway: Gateway) -> None:
    # given the solo pool listed as ready
    entry = gateway.models(include_unloaded="true").json()["data"]
    assert next(m for m in entry if m["id"] == "solo-model")["x_odyssai"]["ready"] is True
    # when its only agent is killed
    solo = gateway.agents["solo"]
    solo.proc.send_signal(signal.SIGKILL)
    solo.proc.wait(timeout=10)
    # then, once its heartbeat is older than the stale limit, /v1/models does not offer it as ready
    poll(lambda: "solo-model" not in gateway.ready_ids(), timeout=STALE_S + BOUND_S)
    one = httpx.get(f"{gateway.edge}/v1/models/solo-model", timeout=30)
    assert one.status_code == 200 and one.json()["x_odyssai"]["ready"] is False
    assert one.json()["x_odyssai"]["nodes"] == []
    # and a chat to it is a 503 saying when to come back, not a hang
    r = gateway.chat("solo-model")
    assert r.status_code == 503 and r.json()["error"]["code"] == "no_ready_nodes", r.text
    assert int(r.headers["retry-after"]) >= 1


def test_a_pool_node_restarting_and_loading_is_a_503_model_loading_then_serves(gateway: Gateway,
                                                                                 tmp_path: Path) -> None:
    # given the solo pool's only node down (the test above killed it)
    gateway.agents["solo"].stop()
    # when it comes back and spends 8 s loading its model, heartbeating meanwhile
    spec = AgentSpec(node_id="solo", models_dir=tmp_path, control_url=gateway.edge, cluster="solo",
                     model="solo-model", extra=("--load-seconds", "8"))
    spec.port = free_port()
    agent = RunningAgent(spec, subprocess.Popen(fake_agent_command(spec), cwd=ROOT, start_new_session=True))
    gateway.agents["solo-again"] = agent  # stopped by the fixture
    # then its pool is a 503 model_loading + Retry-After (once its first heartbeat is in), not no_ready_nodes
    def loading_answer() -> httpx.Response | None:
        r = gateway.chat("solo-model")
        return r if r.status_code == 503 and r.json()["error"]["code"] == "model_loading" else None

    r = poll(loading_answer, timeout=BOUND_S, interval=0.2)
    assert int(r.headers["retry-after"]) >= 1 and "solo" in r.json()["error"]["message"], r.text
    # and once loaded it serves again
    poll(lambda: gateway.chat("solo-model").status_code == 200, timeout=BOUND_S + 8)


def test_an_agent_loading_its_model_is_a_503_with_retry_after_and_an_unknown_model_is_404(
        gateway: Gateway, tmp_path: Path) -> None:
    port = gateway.default_agent_port
    # given the default agent not up yet: its model is unknown, so a 503 (not a 502), saying to come back
    r = gateway.chat("loading-model")
    assert r.status_code == 503 and r.json()["error"]["code"] == "agent_unavailable" and "retry-after" in r.headers
    spec = AgentSpec(node_id="loader", models_dir=tmp_path, model="loading-model", port=port,
                     extra=("--load-seconds", "8"))
    # started by hand: start_agent waits for /health, which answers 503 while the model loads
    agent = RunningAgent(spec, subprocess.Popen(fake_agent_command(spec), cwd=ROOT, start_new_session=True))
    try:
        poll(lambda: _status(port).get("loading") == "loading-model", timeout=BOUND_S, interval=0.05)
        # when it is loading: its model is a 503 model_loading + Retry-After, in both dialects
        r = gateway.chat("loading-model")
        assert r.status_code == 503, r.text
        assert r.json()["error"]["code"] == "model_loading" and int(r.headers["retry-after"]) >= 1
        m = httpx.post(f"{gateway.edge}/v1/messages", timeout=30, json={
            "model": "loading-model", "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]})
        assert m.status_code == 503 and m.json()["type"] == "error" and "retry-after" in m.headers
        # and a model nobody serves is a 404 whatever the agent is doing
        missing = gateway.chat("no-such-model")
        assert missing.status_code == 404, missing.text
        assert missing.json()["error"]["code"] == "model_not_loaded"
        # then once loaded, it serves
        poll(lambda: gateway.chat("loading-model").status_code == 200, timeout=BOUND_S + 8)
        assert gateway.chat("no-such-model").status_code == 404
    finally:
        agent.stop()
    # and once the agent is gone, a name it never reported is still a 404 (not a 502)
    assert gateway.chat("no-such-model").status_code == 404


def _status(port: int) -> dict[str, Any]:
    try:
        return dict(httpx.get(f"http://127.0.0.1:{port}/agent/v1/status", timeout=2).json())
    except httpx.HTTPError:
        return {}


def test_a_frozen_store_is_a_503_within_seconds_and_the_event_loop_keeps_answering(
        gateway: Gateway, ddb_local: DynamoLocal) -> None:
    assert ddb_local.proc is not None
    # given the management list answering (its auth mode and the key pepper are cached)
    assert httpx.get(f"{gateway.edge}/v1/keys", timeout=30).status_code == 200
    health_ms: list[float] = []
    stop_probing = threading.Event()
    probes = httpx.Client(base_url=gateway.edge, timeout=10)  # one keep-alive connection: the figure is the edge's

    def probe_health(into: list[float], count: int | None = None) -> None:
        while not stop_probing.is_set() and (count is None or len(into) < count):
            started = time.monotonic()
            r = probes.get("/health")
            into.append((time.monotonic() - started) * 1000)
            assert r.status_code == 200
            time.sleep(0.05)

    baseline_ms: list[float] = []
    probe_health(baseline_ms, count=20)
    prober = threading.Thread(target=probe_health, args=(health_ms,), daemon=True)
    try:
        # when the store freezes
        os.kill(ddb_local.proc.pid, signal.SIGSTOP)
        prober.start()
        answers: dict[str, tuple[int, float, httpx.Response]] = {}

        def timed(name: str, path: str) -> None:
            started = time.monotonic()
            r = httpx.get(f"{gateway.edge}{path}", timeout=60)
            answers[name] = (r.status_code, time.monotonic() - started, r)

        calls = [threading.Thread(target=timed, args=(n, p)) for n, p in
                 (("readiness", "/health/readiness"), ("keys", "/v1/keys"), ("models", "/v1/models"))]
        for t in calls:
            t.start()
        for t in calls:
            t.join(timeout=60)
        # then each answers within seconds, and never an empty 200
        for name in ("readiness", "keys", "models"):
            status, took, resp = answers[name]
            assert status == 503, (name, resp.text)
            assert took < BOUND_S, (name, took)
        assert "retry-after" in answers["keys"][2].headers and "retry-after" in answers["models"][2].headers
        assert answers["models"][2].json()["error"]["code"] == "store_unavailable"
        # and the event loop kept answering /health meanwhile (the figure is recorded, the bound is generous)
        stop_probing.set()
        prober.join(timeout=15)
        assert health_ms and max(health_ms) < 1000, health_ms
        print(f"\nfrozen store: readiness {answers['readiness'][1]:.2f} s, keys {answers['keys'][1]:.2f} s, "
              f"models {answers['models'][1]:.2f} s (503 each); /health max {max(health_ms):.1f} ms, "
              f"median {sorted(health_ms)[len(health_ms) // 2]:.1f} ms over {len(health_ms)} probes (store up: "
              f"median {sorted(baseline_ms)[10]:.1f} ms, max {max(baseline_ms):.1f} ms)")
    finally:
        stop_probing.set()
        prober.join(timeout=15)
        probes.close()
        os.kill(ddb_local.proc.pid, signal.SIGCONT)
    poll(lambda: httpx.get(f"{gateway.edge}/v1/keys", timeout=30).status_code == 200, timeout=BOUND_S * 2)
