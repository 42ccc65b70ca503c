"""Tenancy overhead: the same chat request through two edges in one run, one with auth + budget hold +
usage row (keyed mode, a key on a user with a budget, a priced model, DynamoDB Local) and one with tenancy
off. Prints p50/p99 at concurrency 1 and the difference (alternating blocks of requests to the two edges), then
the user's spend and reserved once the budget lease has gone back. Target: <= 3 ms added at p99, c=1.

The budget hold counts the prompt exactly with the backend's tokenizer (POST /agent/v1/tokenize), cached per
model and prompt: the first two cases repeat one prompt (the count is cached), the "new prompt" case sends a
prompt never seen before with every request, so every hold on the 'on' edge waits for a count.

Run: .venv/bin/python bench/tenancy_overhead.py [--n 300]
"""

from __future__ import annotations

import argparse
import asyncio
import itertools
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

from gateway_overhead import ROUNDS, VIA_EDGE, local_store, pct, timed  # noqa: E402

from local_runtime.ddb import free_port  # noqa: E402
from local_runtime.process import stop, wait_http  # noqa: E402

MASTER = "sk-bench-master"


def row(label: str, a: list[float], b: list[float]) -> None:
    p50a, p50b, p99a, p99b = pct(a, .5) * 1e3, pct(b, .5) * 1e3, pct(a, .99) * 1e3, pct(b, .99) * 1e3
    print(f"{label:<14}{p50a:>9.2f}{p50b:>9.2f}{p50b - p50a:>8.2f}{p99a:>10.2f}{p99b:>9.2f}{p99b - p99a:>8.2f}")
IDLE_WAIT_S = 8.0


def start_edge(env: dict[str, str]) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    proc = subprocess.Popen([sys.executable, "-m", "local_runtime.cli", "edge", "--port", str(port)], cwd=ROOT,
                            env=env, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    assert wait_http(f"{base}/health", 30), "edge did not start"
    return proc, base


def tenant(base: str) -> tuple[str, str]:
    """A priced model, a budget, a user on it, and a key for that user: (key, user_id)."""
    auth = {"Authorization": f"Bearer {MASTER}"}
    with httpx.Client(base_url=base, headers=auth, timeout=30) as c:
        c.post("/v1/pricing", json={"model_key": "bench-model", "input_price_per_million": 1,
                                    "output_price_per_million": 2}).raise_for_status()
        budget = c.post("/v1/budgets", json={"max_budget": 1_000_000, "budget_duration_sec": 86400}).json()
        user_id = f"bench-{uuid.uuid4().hex[:6]}"
        c.post("/v1/users", json={"user_id": user_id, "budget_id": budget["budget_id"]}).raise_for_status()
        return str(c.post("/v1/keys", json={"user_id": user_id, "key_name": "bench"}).json()["key"]), user_id


async def _block(url: str, n: int, stream: bool, headers: dict[str, str],
                 body: Callable[[int], dict[str, Any]]) -> list[float]:
    """Latencies of ``n`` requests (total, or time to first byte for streams) after 10 of warm-up."""
    out: list[float] = []
    async with httpx.AsyncClient(headers=headers, timeout=60) as client:  # a busy host stalls; never fail on it
        for i in range(10 + n):
            total, first = await timed(client, url, body(i), stream)
            if i >= 10:
                out.append(first if stream else total)
    return out


def blocks(urls: list[str], n: int, stream: bool, headers: dict[str, str],
           body: Callable[[int], dict[str, Any]]) -> list[list[float]]:
    """Per URL, ``n`` latencies taken in alternating blocks (ROUNDS of them): load from anything else on the
    machine falls on every URL alike, and the 'on' edge's own background work (settlement batches, lease
    top-ups, DynamoDB Local's CPU for them), a cost of tenancy, does not land on 'off' requests."""
    out: list[list[float]] = [[] for _ in urls]
    for _ in range(ROUNDS):
        for url, into in zip(urls, out, strict=True):
            into += asyncio.run(_block(url, n // ROUNDS, stream, headers, body))
    return out


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=300)
    args = parser.parse_args()
    from isthmus.adapters import dynamodb

    ddb = local_store("bench-")
    procs: list[subprocess.Popen[bytes]] = []
    try:
        up_port = free_port()
        procs.append(subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up_port)],
                                      cwd=ROOT, start_new_session=True))
        assert wait_http(f"http://127.0.0.1:{up_port}/health", 30)
        env = {**os.environ, "ISTHMUS_DEFAULT_AGENT_URL": f"http://127.0.0.1:{up_port}", "ISTHMUS_MASTER_KEY": MASTER}
        on, on_base = start_edge(env)
        off, off_base = start_edge({**env, "ISTHMUS_TENANCY": "off"})
        procs += [on, off]
        key, user_id = tenant(on_base)
        headers = {"Authorization": f"Bearer {key}"}
        print(f"tenancy overhead, c=1, n={args.n} (ms)")
        print(f"{'case':<14}{'off p50':>9}{'on p50':>9}{'added':>8}{'off p99':>10}{'on p99':>9}{'added':>8}")
        urls = [off_base + "/v1/chat/completions", on_base + "/v1/chat/completions"]
        for stream in (False, True):
            row("TTFT stream" if stream else "non-stream", *blocks(urls, args.n, stream, headers, lambda i: VIA_EDGE))
        tag, fresh = uuid.uuid4().hex[:8], itertools.count()  # no prompt is ever sent twice
        row("new prompt", *blocks(urls, args.n, False, headers, lambda i: {**VIA_EDGE, "messages": [
            {"role": "user", "content": f"What is the capital of France? {tag}-{next(fresh)}"}]}))
        time.sleep(IDLE_WAIT_S)  # unused budget leases go back after 5 s idle
        user = dynamodb.client().get_item(TableName="bench-users", Key={"user_id": {"S": user_id}})["Item"]
        print(f"user after {IDLE_WAIT_S:.0f} s idle: spend {user['spend']['N']} USD, reserved {user['reserved']['N']}")
        rows, page = 0, {"TableName": "bench-usage", "Select": "COUNT"}
        while True:  # a scan counts at most 1 MB of items per page
            counted = dynamodb.client().scan(**page)
            rows += counted["Count"]
            if "LastEvaluatedKey" not in counted:
                break
            page["ExclusiveStartKey"] = counted["LastEvaluatedKey"]
        print(f"usage rows written by the 'on' edge: {rows}")
    finally:
        for proc in procs:
            stop(proc)
        ddb.stop()
    return 0


if __name__ == "__main__":
    sys.exit(main())
