"""Gateway overhead: the same chat request (a) straight to a deterministic upstream on loopback and (b)
through the edge to it, in one run. Superseded by bench/paths.py (every path, every tenancy mode, c=1/32/128);
kept for its helpers (local_store, pct) and the README's earlier figures. Prints p50/p99 latency added by the
edge at concurrency 1 and 16, and the TTFT added for streams.

Targets (c=1): p50 <= 1.5 ms, p99 <= 3 ms added.  Run: .venv/bin/python bench/gateway_overhead.py [--n 2000]
(n per cell: at 2000 the p99 is the 20th worst request, not one scheduling hiccup)
"""

from __future__ import annotations

import argparse
import asyncio
import os
import subprocess
import sys
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local_runtime.ddb import DynamoLocal, free_port, use_local_endpoint  # noqa: E402
from local_runtime.process import stop, wait_http  # noqa: E402

MESSAGES = [{"role": "user", "content": "What is the capital of France?"}]
DIRECT = {"model": "bench-model", "sampling": {"max_tokens": 16},
          "messages": [{"role": "user", "content": [{"type": "text", "text": MESSAGES[0]["content"]}]}]}
VIA_EDGE = {"model": "bench-model", "messages": MESSAGES, "max_tokens": 16}
ROUNDS = 4


def pct(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))]


async def timed(client: httpx.AsyncClient, url: str, body: dict, stream: bool,
                headers: dict[str, str] | None = None) -> tuple[float, float]:
    """(total seconds, seconds to first body byte)."""
    start = time.perf_counter()
    first = 0.0
    async with client.stream("POST", url, json={**body, "stream": stream}, headers=headers) as resp:
        async for _ in resp.aiter_raw():
            if not first:
                first = time.perf_counter() - start
        assert resp.status_code == 200, resp.status_code
    return time.perf_counter() - start, first


async def run(url: str, body: dict, n: int, concurrency: int, stream: bool,
              headers: dict[str, str] | None = None) -> tuple[list[float], list[float]]:
    totals: list[float] = []
    firsts: list[float] = []
    async with httpx.AsyncClient(limits=httpx.Limits(max_connections=concurrency), headers=headers) as client:
        for _ in range(10):  # warm-up
            await timed(client, url, body, stream)
        remaining = n

        async def worker() -> None:
            nonlocal remaining
            while remaining > 0:
                remaining -= 1
                total, first = await timed(client, url, body, stream)
                totals.append(total)
                firsts.append(first)

        await asyncio.gather(*(worker() for _ in range(concurrency)))
    return totals, firsts


def alternating(targets: list[tuple[str, dict]], n: int, concurrency: int, stream: bool,
                headers: dict[str, str] | None = None, in_turn: bool = True) -> list[list[float]]:
    """Latencies (total, or time to first byte for streams) per target, taken so that load from anything else
    on the machine falls on every target alike: at concurrency 1, request by request in turn (one kept-alive
    client per target) unless ``in_turn`` is off; otherwise in alternating blocks."""
    if concurrency == 1 and in_turn:
        return asyncio.run(_in_turn(targets, n, stream, headers))
    out: list[list[float]] = [[] for _ in targets]
    for _ in range(ROUNDS):
        for (url, body), into in zip(targets, out, strict=True):
            totals, firsts = asyncio.run(run(url, body, n // ROUNDS, concurrency, stream, headers))
            into += firsts if stream else totals
    return out


async def _in_turn(targets: list[tuple[str, dict]], n: int, stream: bool,
                   headers: dict[str, str] | None) -> list[list[float]]:
    clients = [httpx.AsyncClient(headers=headers) for _ in targets]
    out: list[list[float]] = [[] for _ in targets]
    try:
        for i in range(10 + n):  # the first 10 rounds warm up
            for client, (url, body), into in zip(clients, targets, out, strict=True):
                total, first = await timed(client, url, body, stream)
                if i >= 10:
                    into.append(first if stream else total)
    finally:
        for client in clients:
            await client.aclose()
    return out


def local_store(prefix: str, nice: int = 10) -> DynamoLocal:
    """An in-memory DynamoDB Local with the template's tables, pointed at by this process and its children.
    It runs at lower CPU priority: in production the store is on other machines, not on the gateway's cores."""
    from isthmus.adapters import dynamodb
    from local_runtime.tables import create_tables

    ddb = DynamoLocal(free_port(), None, nice=nice).start(timeout=180)
    os.environ["ISTHMUS_TABLE_PREFIX"] = prefix
    use_local_endpoint(ddb.endpoint)
    deadline = time.monotonic() + 90
    while True:  # a cold JVM at nice 10 on a busy host can take longer than the store client's read timeout
        try:
            create_tables(dynamodb.client())
            return ddb
        except Exception:
            if time.monotonic() > deadline:
                raise
            time.sleep(1.0)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=2000)
    parser.add_argument("--mode", default="asgi", choices=["asgi", "lambda"])
    args = parser.parse_args()
    ddb = local_store("gw-bench-")  # routing reads clusters from it (a snapshot reused for a second)
    up_port, edge_port = free_port(), free_port()
    upstream = subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up_port)], cwd=ROOT,
                                start_new_session=True)
    # The gateway itself: no tenancy (auth, budgets, usage rows are bench/tenancy_overhead.py's business).
    env = {**os.environ, "ISTHMUS_DEFAULT_AGENT_URL": f"http://127.0.0.1:{up_port}", "ISTHMUS_TENANCY": "off"}
    edge = subprocess.Popen([sys.executable, "-m", "local_runtime.cli", "edge", "--port", str(edge_port),
                             "--mode", args.mode], cwd=ROOT, env=env, start_new_session=True)
    try:
        assert wait_http(f"http://127.0.0.1:{up_port}/health", 30)
        assert wait_http(f"http://127.0.0.1:{edge_port}/health", 30)
        direct_url = f"http://127.0.0.1:{up_port}/agent/v1/generate"
        edge_url = f"http://127.0.0.1:{edge_port}/v1/chat/completions"
        print(f"gateway overhead, {args.mode} edge, n={args.n} per cell (ms)")
        print(f"{'case':<22}{'direct p50':>11}{'edge p50':>10}{'added p50':>11}{'direct p99':>12}{'edge p99':>10}"
              f"{'added p99':>11}{'ratio p50':>11}")
        for concurrency in (1, 16):
            for stream in (False, True):
                d, e = alternating([(direct_url, DIRECT), (edge_url, VIA_EDGE)], args.n, concurrency, stream)
                label = f"c={concurrency} {'TTFT stream' if stream else 'non-stream'}"
                dp50, ep50, dp99, ep99 = (pct(d, 0.5) * 1e3, pct(e, 0.5) * 1e3, pct(d, 0.99) * 1e3,
                                          pct(e, 0.99) * 1e3)
                print(f"{label:<22}{dp50:>11.2f}{ep50:>10.2f}{ep50 - dp50:>11.2f}{dp99:>12.2f}{ep99:>10.2f}"
                      f"{ep99 - dp99:>11.2f}{ep50 / dp50:>11.2f}")
    finally:
        stop(edge)
        stop(upstream)
        ddb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
