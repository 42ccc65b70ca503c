"""A/B of two checkouts' edges on the cloud-alias paths, side by side in one run (noise from other work on the
host falls on both alike): each checkout's edge (tenancy off, open or keyed), one deterministic upstream
(bench/upstream.py) on loopback, called request by request in turn at c=1. Per case: p50 / p99 added over the
direct call, and the edge's CPU per request (psutil: user + system of the edge process over the timed requests),
which other load on the host affects less than latency.

Cases: the Anthropic-protocol alias called with /v1/messages and with /v1/chat/completions, and the
OpenAI-protocol alias (the reference), whole answers and stream time to first byte.

Run: .venv/bin/python bench/edge_ab.py --before /tmp/old-checkout [--after .] [--mode keyed] [--n 400]
(``git archive <commit> | tar -x -C /tmp/old-checkout`` makes a checkout of an earlier commit)
"""

from __future__ import annotations

import argparse
import asyncio
import functools
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx
import psutil

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway_overhead import local_store, pct  # noqa: E402
from paths import MASTER, configure  # noqa: E402

from local_runtime.ddb import free_port  # noqa: E402
from local_runtime.process import stop, wait_http  # noqa: E402

QUESTION = "What is the capital of France?"
# (name, edge path, alias, direct path, upstream model)
CASES = [
    ("anthropic /v1/messages", "/v1/messages", "cloud-an", "/anthropic/v1/messages", "up-an"),
    ("anthropic /v1/chat", "/v1/chat/completions", "cloud-an", "/anthropic/v1/messages", "up-an"),
    ("openai /v1/chat", "/v1/chat/completions", "cloud-oa", "/openai/v1/chat/completions", "up-oa"),
]


def body(model: str, stream: bool) -> dict[str, Any]:
    return {"model": model, "messages": [{"role": "user", "content": QUESTION}], "max_tokens": 16, "stream": stream}


def edge_cpu(pid: int) -> float:
    proc = psutil.Process(pid)
    return sum(t.user + t.system for t in (p.cpu_times() for p in [proc, *proc.children(recursive=True)]))


REFUSED: dict[str, list[str]] = {}


async def timed(client: httpx.AsyncClient, url: str, payload: dict[str, Any], stream: bool) -> float | None:
    """Seconds to the whole answer (or a stream's first byte); None for an answer other than 200 (counted: a busy
    host can starve the store)."""
    start = time.perf_counter()
    first = 0.0
    received = b""
    async with client.stream("POST", url, json=payload) as resp:
        async for chunk in resp.aiter_raw():
            if not first:
                first = time.perf_counter() - start
            if resp.status_code != 200:
                received += chunk
    if resp.status_code != 200:
        REFUSED.setdefault(url, []).append(f"{resp.status_code} {received[:200]!r}")
        return None
    return first if stream else time.perf_counter() - start


Timings = dict[tuple[str, str], tuple[list[float], float]]


async def in_turn(upstream: str, edges: list[tuple[str, str, int]], headers: dict[str, str],
                  cases: list[tuple[str, str, str, str, str]], stream: bool, n: int) -> Timings:
    """c=1, request by request in turn, every case interleaved: per case the direct call, then each edge;
    (case, target) -> (latencies, edge CPU s per request)."""
    targets: list[tuple[str, str, str, dict[str, Any], int | None]] = []
    for name, edge_path, alias, direct_path, up_model in cases:
        targets.append((name, "direct", upstream + direct_path, body(up_model, stream), None))
        targets += [(name, label, base + edge_path, body(alias, stream), pid) for label, base, pid in edges]
    clients = {label: httpx.AsyncClient(headers=headers, timeout=60) for label in ["direct", *(e[0] for e in edges)]}
    out: dict[tuple[str, str], list[float]] = {(t[0], t[1]): [] for t in targets}
    cpu = dict.fromkeys(out, 0.0)
    try:
        for i in range(20 + n):
            for name, label, url, payload, pid in targets:
                before = edge_cpu(pid) if pid else 0.0
                latency = await timed(clients[label], url, payload, stream)
                if i >= 20 and latency is not None:
                    out[(name, label)].append(latency)
                    cpu[(name, label)] += (edge_cpu(pid) - before) if pid else 0.0
    finally:
        for client in clients.values():
            await client.aclose()
    return {key: (values, cpu[key] / max(1, len(values))) for key, values in out.items()}


def start_edge(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    env = {**env, "PYTHONPATH": os.pathsep.join(str(root / p) for p in ("", "layers", "shared"))}
    proc = subprocess.Popen([sys.executable, "-m", "local_runtime.cli", "edge", "--port", str(port)], cwd=root,
                            env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    if not wait_http(f"{base}/health", 90, alive=functools.partial(lambda p: p.poll() is None, proc)):
        stop(proc)
        raise RuntimeError(f"the edge of {root} did not start")
    return proc, base


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--before", required=True, help="the checkout to compare against")
    parser.add_argument("--after", default=str(ROOT))
    parser.add_argument("--mode", default="keyed", choices=["off", "open", "keyed"])
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--rounds", type=int, default=1, help="passes over every case (interleaved in time)")
    parser.add_argument("--only", default="", help="only the cases whose name contains this")
    parser.add_argument("--store-nice", type=int, default=10, help="DynamoDB Local's nice (0 on a busy host)")
    args = parser.parse_args()
    ddb = local_store(f"ab-{uuid.uuid4().hex[:6]}-", nice=args.store_nice)
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up_port)], cwd=ROOT,
                                      start_new_session=True))
        if not wait_http(f"{upstream}/health", 30):
            raise RuntimeError("upstream did not start")
        # One provider key file for every edge (its default is relative to the working directory, the checkout's).
        os.environ.setdefault("ISTHMUS_LOCAL_KEY_FILE", str(ROOT / ".isthmus" / "provider.key"))
        env = {**os.environ, "ISTHMUS_MASTER_KEY": MASTER}
        if args.mode == "off":
            env["ISTHMUS_TENANCY"] = "off"
        elif args.mode == "open":
            env.pop("ISTHMUS_MASTER_KEY")
        setup_proc, setup_base = start_edge(Path(args.after), {**os.environ, "ISTHMUS_MASTER_KEY": MASTER})
        procs.append(setup_proc)
        key = configure(setup_base, upstream)
        headers = {"Authorization": f"Bearer {key if args.mode == 'keyed' else 'sk-placeholder'}"}
        edges = []
        for label, root in (("before", args.before), ("after", args.after)):
            proc, base = start_edge(Path(root).resolve(), env)
            procs.append(proc)
            edges.append((label, base, proc.pid))
        load = os.getloadavg()[0]
        print(f"edge A/B, {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, mode {args.mode}, n={args.n} x "
              f"{args.rounds}, load {load:.1f}\n{'case':<24}{'shape':<8}{'target':<8}{'p50':>7}{'added':>7}"
              f"{'p99':>7}{'added':>7}{'CPU ms':>8}")
        cases = [c for c in CASES if args.only in c[0]]
        results: dict[tuple[bool, str, str], tuple[list[float], float]] = {}
        for _ in range(args.rounds):
            for stream in (False, True):
                for key, (values, cpu) in asyncio.run(in_turn(upstream, edges, headers, cases, stream,
                                                              args.n)).items():
                    was = results.get((stream, *key), ([], 0.0))
                    results[(stream, *key)] = (was[0] + values, was[1] + cpu / args.rounds)
        for stream in (False, True):
            for name, *_ in cases:
                direct = results[(stream, name, "direct")][0]
                d50, d99 = pct(direct, 0.5) * 1e3, pct(direct, 0.99) * 1e3
                print(f"{name:<24}{'TTFB' if stream else 'whole':<8}{'direct':<8}{d50:>7.2f}{'':>7}{d99:>7.2f}")
                for label, _, _ in edges:
                    values, cpu = results[(stream, name, label)]
                    if not values:
                        continue
                    p50, p99 = pct(values, 0.5) * 1e3, pct(values, 0.99) * 1e3
                    print(f"{'':<24}{'':<8}{label:<8}{p50:>7.2f}{p50 - d50:>+7.2f}{p99:>7.2f}{p99 - d99:>+7.2f}"
                          f"{cpu * 1e3:>8.2f}")
        for url, errors in REFUSED.items():
            print(f"  {len(errors)} answers other than 200 from {url} (not timed), first: {errors[0]}")
        print(f"load {os.getloadavg()[0]:.1f} at the end")
    finally:
        for proc in procs:
            stop(proc)
        ddb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
