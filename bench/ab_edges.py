"""Two checkouts' edges side by side in one run (A/B), on the paths of bench/paths.py: what a change buys.

A is the tree before (e.g. ``git archive <commit> | tar -x -C /tmp/before``), B the tree after (default: this one).
Both edges of each mode (tenancy off, open, keyed) run at once against one deterministic upstream and one DynamoDB
Local; at c=1 every target is called in turn, request by request, so load from elsewhere falls on A and B alike.
Printed per path and shape: p50/p90/p99 and what each edge adds over the direct call, and the edge's CPU per
request (psutil, over the timed requests). ``--inproc R``: instead, R rounds of the edge app run in process (ASGI,
no server, no sockets on the client side) for A then B, tenancy as the first mode: CPU us per request (the least
of the rounds; what other load on the host cannot inflate much) and Python function calls per request (cProfile:
exact, load-independent).

Run: .venv/bin/python bench/ab_edges.py /tmp/before [--after .] [--n 400] [--modes off,open,keyed]
     [--only "cloud openai,raw passthrough"] [--inproc 3]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import subprocess
import sys
import time
import uuid
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway_overhead import local_store  # noqa: E402
from paths import (  # noqa: E402
    MASTER,
    PATHS,
    SDK_PLACEHOLDER,
    PathCase,
    Refused,
    Target,
    configure,
    enroll_pool_node,
    pct_ms,
    tear_down,
    timed,
    url_body,
)

from local_runtime.ddb import free_port  # noqa: E402
from local_runtime.process import stop, wait_http  # noqa: E402

REFUSED: dict[str, int] = {}


def python_path(root: Path) -> str:
    return f"{root}:{root}/layers:{root}/shared"


def start_edge(root: Path, env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "local_runtime.cli", "edge", "--port", str(port)], cwd=root,
                            env={**env, "PYTHONPATH": python_path(root)}, start_new_session=True)
    return proc, f"http://127.0.0.1:{port}"


def ready(targets: list[Target], cases: list[PathCase], deadline_s: float = 90) -> None:
    end = time.monotonic() + deadline_s
    for target in targets:
        for case in cases:
            url, body = url_body(target, case, False)
            while (resp := httpx.post(url, json=body, headers=target.headers, timeout=30)).status_code != 200:
                if time.monotonic() > end:
                    raise RuntimeError(f"{target.label} {case.name}: {resp.status_code} {resp.text[:300]}")
                time.sleep(0.3)


async def in_turn(targets: list[Target], case: PathCase, stream: bool,
                  n: int) -> tuple[dict[str, list[float]], dict[str, float]]:
    """c=1, each target in turn, n rounds after 20 of warm-up: latencies, and CPU ms per request."""
    clients = [httpx.AsyncClient(headers=t.headers, timeout=60) for t in targets]
    out: dict[str, list[float]] = {t.label: [] for t in targets}
    cpu: dict[str, float] = {}
    try:
        for i in range(20 + n):
            if i == 20:  # each edge's own CPU over the timed rounds (it serves nothing else meanwhile)
                cpu = {t.label: t.cpu_now() for t in targets}
            for client, target in zip(clients, targets, strict=True):
                url, body = url_body(target, case, stream)
                try:
                    total, first = await timed(client, url, body, stream)
                except Refused:
                    REFUSED[target.label] = REFUSED.get(target.label, 0) + 1
                    continue
                if i >= 20:
                    out[target.label].append(first if stream else total)
        cpu = {t.label: (t.cpu_now() - cpu[t.label]) / max(1, len(out[t.label])) * 1e3 for t in targets}
    finally:
        for client in clients:
            await client.aclose()
    return out, cpu


def run_in_turn(targets: list[Target], cases: list[PathCase], n: int) -> None:
    print(f"{'path':<16}{'shape':<8}{'target':<10}{'p50':>7}{'added':>7}{'p90':>7}{'added':>7}{'p99':>7}"
          f"{'added':>7}{'CPU ms':>8}")
    for case in cases:
        for stream in ((False, True) if case.streams else (False,)):
            lat, cpu = asyncio.run(in_turn(targets, case, stream, n))
            d50, d90, d99 = (pct_ms(lat["direct"], q) for q in (.5, .9, .99))
            print(f"{case.name:<16}{'TTFT' if stream else 'whole':<8}{'direct':<10}{d50:>7.2f}{'':>7}{d90:>7.2f}"
                  f"{'':>7}{d99:>7.2f}")
            for t in targets[1:]:
                e50, e90, e99 = (pct_ms(lat[t.label], q) for q in (.5, .9, .99))
                print(f"{'':<24}{t.label:<10}{e50:>7.2f}{e50 - d50:>+7.2f}{e90:>7.2f}{e90 - d90:>+7.2f}"
                      f"{e99:>7.2f}{e99 - d99:>+7.2f}{cpu[t.label]:>8.2f}")


def run_in_process(roots: dict[str, Path], env: dict[str, str], key: str, cases: list[PathCase], rounds: int) -> None:
    """Each tree's edge app in process (bench/ab_child.py, with that tree's code only), A then B, ``rounds`` times."""
    cells = [[f"{c.name} {'TTFT' if s else 'whole'}", c.edge_path, c.edge_body(s)]
             for c in cases for s in ((False, True) if c.streams else (False,))]
    results: dict[str, list[dict[str, list[float]]]] = {tag: [] for tag in roots}
    for _ in range(rounds):
        for tag, root in roots.items():
            done = subprocess.run([sys.executable, str(ROOT / "bench" / "ab_child.py"), key, "300", json.dumps(cells)],
                                  cwd=root, env={**env, "PYTHONPATH": python_path(root)}, capture_output=True,
                                  text=True)
            line = next((ln for ln in done.stdout.splitlines() if ln.startswith("RESULT ")), None)
            if line is None:
                raise RuntimeError(f"in-process run of {tag} failed: {done.stderr[-2000:]}")
            results[tag].append(json.loads(line[7:]))
    print(f"in process, {rounds} rounds A then B: CPU us per request (least of the rounds), Python calls per request")
    for cell in results["A"][0]:
        a, b = (min(r[cell][0] for r in results[tag]) for tag in ("A", "B"))
        ca, cb = (results[tag][0][cell][1] for tag in ("A", "B"))
        print(f"{cell:<24} CPU A {a:>6.0f} B {b:>6.0f} ({b - a:+.0f} us)   calls A {ca:>6.0f} B {cb:>6.0f} "
              f"({cb - ca:+.0f})")


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("before", help="the tree before (A)")
    parser.add_argument("--after", default=str(ROOT), help="the tree after (B); default: this one")
    parser.add_argument("--n", type=int, default=400)
    parser.add_argument("--modes", default="off,open,keyed")
    parser.add_argument("--only", default="cloud openai,raw passthrough", help="path names, comma separated")
    parser.add_argument("--inproc", type=int, default=0, help="rounds of the in-process count instead")
    args = parser.parse_args()
    cases = [p for p in PATHS if any(o and o in p.name for o in args.only.split(","))]
    modes = args.modes.split(",")
    roots = {"A": Path(args.before).resolve(), "B": Path(args.after).resolve()}
    ddb = local_store(f"ab-{uuid.uuid4().hex[:6]}-")
    procs: list[subprocess.Popen[bytes]] = []
    enrollment = None
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up_port)],
                                      start_new_session=True))
        if not wait_http(f"{upstream}/health", 30):
            raise RuntimeError("upstream did not start")
        data = Path(f"/tmp/ab-edges-{uuid.uuid4().hex[:6]}")  # one provider key file for both trees' edges
        env = {**os.environ, "ISTHMUS_DEFAULT_AGENT_URL": upstream, "ISTHMUS_NODE_STALE_SECONDS": "30",
               "ISTHMUS_LOCAL_KEY_FILE": str(data / "provider.key"), "ISTHMUS_SPOOL_DIR": str(data / "spool")}
        env_of = {"off": {**env, "ISTHMUS_TENANCY": "off"}, "open": env, "keyed": {**env, "ISTHMUS_MASTER_KEY": MASTER}}
        setup, base = start_edge(roots["B"], env_of["keyed"])  # providers and a key exist before the edges start
        procs.append(setup)
        if not wait_http(f"{base}/health", 90):
            raise RuntimeError("the set-up edge did not start")
        key = configure(base, upstream)
        if any(c.name == "agent pool" for c in cases):  # the node heartbeats to the set-up edge, kept running
            enrollment = enroll_pool_node(base, upstream)
        else:
            stop(setup)
        if args.inproc:
            run_in_process(roots, env_of[modes[0]], key if modes[0] == "keyed" else "sk-placeholder", cases,
                           args.inproc)
            return 0
        targets = [Target("direct", upstream, SDK_PLACEHOLDER)]
        for mode in modes:
            for tag, root in roots.items():
                proc, base = start_edge(root, env_of[mode])
                procs.append(proc)
                headers: dict[str, Any] = {"Authorization": f"Bearer {key}"} if mode == "keyed" else SDK_PLACEHOLDER
                targets.append(Target(f"{tag}-{mode}", base, headers, pid=proc.pid))
        for target in targets[1:]:
            if not wait_http(f"{target.base}/health", 90):
                raise RuntimeError(f"edge {target.label} did not start")
        ready(targets[1:], cases)
        print(f"A/B {time.strftime('%Y-%m-%d %H:%M UTC', time.gmtime())}, {os.cpu_count()} cores, load average "
              f"{os.getloadavg()[0]:.1f}; A={roots['A']} B={roots['B']}; n={args.n} at c=1, in turn")
        run_in_turn(targets, cases, args.n)
        print(f"load average {os.getloadavg()[0]:.1f} at the end; refused (not timed): {REFUSED or 'none'}")
    finally:
        tear_down(procs, ddb, enrollment)
    return 0


if __name__ == "__main__":
    sys.exit(main())
