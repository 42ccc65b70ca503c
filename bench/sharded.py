"""Sharded vs whole: one model on one local agent, then split over two local agents (an MLX distributed group,
ring backend over loopback), in one run.

    python bench/sharded.py [--model smollm2-135m] [--mode pipeline] [--tokens 48] [--rounds 2]

Prints, per layout, TTFT (request to first token event, client side) and decode tok/s (the agent's
``usage.decode_tps``) of a streamed greedy generation, the tokens per second of ``--concurrency`` generations
at once (continuous batching: one forward pass per step serves them all, sharded as on one node), and the
weights and RSS of each node. On one machine
the sharded layout is expected to be slower: both ranks share the same cores, and every forward pass crosses
the loopback twice (hidden state to rank 1 and back); the figure is what the transport costs. The layouts
alternate round by round (a shared 2-core machine drifts by more than the difference being measured); a
sharded layout's unload restarts both agents (mlx keeps one group per process), which the bench waits out.
"""

from __future__ import annotations

import argparse
import json
import socket
import statistics
import subprocess
import sys
import tempfile
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import httpx

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from local_runtime.agent.launcher import agent_command, agent_env
from local_runtime.agent.models.registry import resolve

PROMPT = "Write a long, detailed story about a dragon who learns to bake bread in a small village."


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class Agent:
    def __init__(self, log_dir: Path) -> None:
        self.port = free_port()
        self.log = (log_dir / f"agent-{self.port}.log").open("w")
        self.proc = subprocess.Popen(agent_command("", port=self.port, extra=("--no-loop-guard",)), env=agent_env(),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=f"http://127.0.0.1:{self.port}", timeout=600)
        self.wait_fresh()

    def wait_fresh(self, timeout: float = 120) -> dict[str, Any]:
        """Until the agent answers from a process free to load (a sharded unload restarts it)."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            try:
                status = self.client.get("/agent/v1/status").json()
                if not status.get("restarting"):
                    return dict(status)
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"agent on {self.port} did not come back")

    def status(self) -> dict[str, Any]:
        return dict(self.client.get("/agent/v1/status").json())

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        self.proc.wait(timeout=20)
        self.log.close()


def load_whole(agent: Agent, model: str) -> None:
    agent.client.post("/agent/v1/load", json={"model": model}).raise_for_status()


def load_sharded(agents: list[Agent], model: str, mode: str) -> None:
    hosts = [f"127.0.0.1:{a.client.post('/agent/v1/shard/port').json()['port']}" for a in agents]
    with ThreadPoolExecutor(len(agents)) as pool:  # every rank at once: the group forms when all have joined
        answers = list(pool.map(lambda ra: ra[1].client.post("/agent/v1/load", json={
            "model": model, "shard": {"mode": mode, "rank": ra[0], "hosts": hosts}}), enumerate(agents)))
    for r in answers:
        r.raise_for_status()


def unload(agents: list[Agent]) -> None:
    for agent in agents:  # rank 0 first: it stops the followers
        agent.client.post("/agent/v1/unload").raise_for_status()
    for agent in agents:
        agent.wait_fresh()


def measure(agent: Agent, tokens: int) -> tuple[float, float]:
    """(TTFT seconds, decode tok/s) of one streamed greedy generation."""
    body = {"model": "bench", "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
            "sampling": {"max_tokens": tokens, "temperature": 0}, "stream": True}
    started = time.perf_counter()
    ttft: float | None = None
    usage: dict[str, Any] = {}
    with agent.client.stream("POST", "/agent/v1/generate", json=body) as r:
        r.raise_for_status()
        for line in r.iter_lines():
            if not line:
                continue
            event = json.loads(line)
            if ttft is None and event["type"] in ("text", "thinking"):
                ttft = time.perf_counter() - started
            usage = event.get("usage") or usage
    assert ttft is not None and usage.get("decode_tps"), usage
    return ttft, float(usage["decode_tps"])


def measure_many(agent: Agent, tokens: int, n: int) -> float:
    """Generated tokens per second (wall) of ``n`` greedy generations started at once."""
    body = {"model": "bench", "messages": [{"role": "user", "content": [{"type": "text", "text": PROMPT}]}],
            "sampling": {"max_tokens": tokens, "temperature": 0}}
    started = time.perf_counter()
    with ThreadPoolExecutor(n) as pool:
        answers = list(pool.map(lambda _: agent.client.post("/agent/v1/generate", json=body), range(n)))
    elapsed = time.perf_counter() - started
    generated = 0
    for r in answers:
        r.raise_for_status()
        generated += int(r.json()["usage"]["completion_tokens"])
    return generated / elapsed


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--model", default="smollm2-135m")
    parser.add_argument("--mode", choices=["pipeline", "tensor"], default="pipeline")
    parser.add_argument("--tokens", type=int, default=48)
    parser.add_argument("--rounds", type=int, default=2)
    parser.add_argument("--concurrency", type=int, default=4)
    args = parser.parse_args()
    model = str(resolve(args.model))
    weights = sum(f.stat().st_size for f in Path(model).glob("*.safetensors"))
    log_dir = Path(tempfile.mkdtemp(prefix="bench-sharded-"))
    agents = [Agent(log_dir), Agent(log_dir)]
    results: dict[str, list[tuple[float, float]]] = {"whole": [], "sharded": []}
    many: dict[str, list[float]] = {"whole": [], "sharded": []}
    memory: dict[str, list[str]] = {}
    try:
        for i in range(args.rounds):
            order = ["whole", "sharded"] if i % 2 == 0 else ["sharded", "whole"]
            for layout in order:
                if layout == "whole":
                    load_whole(agents[0], model)
                    measure(agents[0], 4)  # warm-up
                    results[layout].append(measure(agents[0], args.tokens))
                    many[layout].append(measure_many(agents[0], args.tokens, args.concurrency))
                    memory[layout] = [f"node 0: weights {weights / 1e6:.0f} MB, RSS "
                                      f"{agents[0].status()['rss_bytes'] / 1e6:.0f} MB"]
                    unload(agents[:1])
                else:
                    load_sharded(agents, model, args.mode)
                    measure(agents[0], 4)
                    results[layout].append(measure(agents[0], args.tokens))
                    many[layout].append(measure_many(agents[0], args.tokens, args.concurrency))
                    statuses = [a.status() for a in agents]
                    memory[layout] = [f"node {r}: weights {s['shard']['param_bytes'] / 1e6:.0f} MB, RSS "
                                      f"{s['rss_bytes'] / 1e6:.0f} MB" for r, s in enumerate(statuses)]
                    unload(agents)
    finally:
        for agent in agents:
            agent.stop()
    print(f"model {args.model} ({weights / 1e6:.0f} MB of weights), {args.tokens} tokens, {args.rounds} rounds, "
          f"{args.mode} over 2 local agents (ring over loopback)")
    for layout, runs in results.items():
        ttft = statistics.median(r[0] for r in runs)
        tps = statistics.median(r[1] for r in runs)
        together = statistics.median(many[layout])
        print(f"{layout:8} TTFT {ttft * 1000:7.0f} ms   decode {tps:6.1f} tok/s   {args.concurrency} at once "
              f"{together:6.1f} tok/s ({together / tps:.2f}x one)   " + "; ".join(memory[layout]))
    whole, shard = (statistics.median(r[1] for r in results[k]) for k in ("whole", "sharded"))
    print(f"sharded/whole decode ratio {shard / whole:.2f}, {args.concurrency} at once "
          f"{statistics.median(many['sharded']) / statistics.median(many['whole']):.2f}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
