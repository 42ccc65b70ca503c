"""Batch throughput: the same N chat requests (a) sent interactively one by one through the edge and (b) run
as one batch by the edge's in-process worker, against one real agent (SmolLM2-135M by default), in one run.
Prints lines/s of each and their ratio: a batch keeps ``ISTHMUS_BATCH_CONCURRENCY`` lines in flight, so it should
reach the agent's batched decode rate (the agent's ``--max-batch``), not its one-request rate; (c) the same requests
sent ``--max-batch`` at a time interactively show that batched rate for comparison.

Run: .venv/bin/python bench/batch_throughput.py [--n 24] [--tokens 32] [--concurrency 4] [--max-batch 4]
"""

from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import httpx

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))

from local_runtime.agent.launcher import agent_command, agent_env  # noqa: E402
from local_runtime.agent.models.registry import fetch  # noqa: E402
from local_runtime.ddb import DynamoLocal, free_port, use_local_endpoint  # noqa: E402
from local_runtime.process import stop, wait_http  # noqa: E402


def request_body(i: int, tokens: int) -> dict:
    return {"messages": [{"role": "user", "content": f"Write one sentence about the number {i}."}],
            "max_tokens": tokens, "temperature": 0}


def interactive(client: httpx.Client, n: int, tokens: int) -> tuple[float, int]:
    """(seconds, completion tokens) for n requests sent one after the other."""
    started, generated = time.perf_counter(), 0
    for i in range(n):
        answer = client.post("/v1/chat/completions", json={"model": "default", **request_body(i, tokens)})
        answer.raise_for_status()
        generated += answer.json()["usage"]["completion_tokens"]
    return time.perf_counter() - started, generated


PARALLEL_IDS: set[str] = set()
BATCH_IDS: list[str] = []


def mean_latency_ms(client: httpx.Client, batch_id: str) -> tuple[float, float]:
    """Mean gateway latency (the usage rows' latency_ms) of the batch's lines and of the parallel phase's requests."""
    rows = client.get("/v1/usage", params={"limit": 1000}).json()
    ours = [r["latency_ms"] for r in rows if str(r.get("request_id", "")).startswith(f"{batch_id}#")]
    theirs = [r["latency_ms"] for r in rows if r.get("request_id") in PARALLEL_IDS]
    return sum(ours) / max(1, len(ours)), sum(theirs) / max(1, len(theirs))


def parallel(client: httpx.Client, n: int, tokens: int, width: int) -> tuple[float, int]:
    """(seconds, completion tokens) for n requests sent ``width`` at a time: the agent's batched rate."""
    from concurrent.futures import ThreadPoolExecutor

    def one(i: int) -> int:
        answer = client.post("/v1/chat/completions", json={"model": "default", **request_body(i, tokens)})
        answer.raise_for_status()
        PARALLEL_IDS.add(answer.headers["x-request-id"])
        return int(answer.json()["usage"]["completion_tokens"])

    started = time.perf_counter()
    with ThreadPoolExecutor(width) as pool:
        generated = sum(pool.map(one, range(n)))
    return time.perf_counter() - started, generated


def batched(client: httpx.Client, n: int, tokens: int) -> tuple[float, int]:
    """(seconds from create to completed, completion tokens) for the same n requests as one batch."""
    requests = [{"custom_id": f"r{i}", "body": request_body(i, tokens)} for i in range(n)]
    started = time.perf_counter()
    created = client.post("/v1/batches", json={"model": "default", "requests": requests})
    assert created.status_code == 200, created.text
    batch = created.json()
    while True:
        answer = client.get(f"/v1/batches/{batch['id']}")  # a 503 (store busy on a loaded host): ask again
        if answer.status_code == 200 and (status := answer.json())["status"] in ("completed", "failed"):
            break
        time.sleep(0.1)
    elapsed = time.perf_counter() - started
    assert status["status"] == "completed" and status["request_counts"]["completed"] == n, status
    results = client.get(f"/v1/batches/{batch['id']}/results").json()["results"]
    BATCH_IDS.append(batch["id"])
    return elapsed, sum(r["result"]["usage"]["completion_tokens"] for r in results)


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--n", type=int, default=24)
    parser.add_argument("--tokens", type=int, default=32)
    parser.add_argument("--concurrency", type=int, default=4, help="ISTHMUS_BATCH_CONCURRENCY")
    parser.add_argument("--max-batch", type=int, default=4, help="the agent's --max-batch")
    parser.add_argument("--model", default="smollm2-135m")
    args = parser.parse_args()

    from isthmus.adapters import dynamodb
    from local_runtime.tables import create_tables

    ddb = DynamoLocal(free_port(), None, nice=10).start()
    os.environ["ISTHMUS_TABLE_PREFIX"] = "batch-bench-"
    use_local_endpoint(ddb.endpoint)
    for attempt in range(30):  # DynamoDB Local can take a while to answer on a loaded host
        try:
            create_tables(dynamodb.client())
            break
        except Exception:
            if attempt == 29:
                raise
            time.sleep(3)
    agent_port, edge_port = free_port(), free_port()
    agent = subprocess.Popen(agent_command(str(fetch(args.model)), port=agent_port,
                                           extra=["--max-batch", str(args.max_batch)]),
                             env=agent_env(), cwd=ROOT, start_new_session=True, stdout=subprocess.DEVNULL)
    files = tempfile.mkdtemp(prefix="batch-bench-files-")
    # open mode with tenancy on: every line is admitted and gets its usage row, as an interactive request does
    env = {**os.environ, "ISTHMUS_DEFAULT_AGENT_URL": f"http://127.0.0.1:{agent_port}", "ISTHMUS_FILES_DIR": files,
           "ISTHMUS_BATCH_CONCURRENCY": str(args.concurrency), "ISTHMUS_BATCH_POLL_SECONDS": "0.1"}
    edge = subprocess.Popen([sys.executable, "-m", "local_runtime.cli", "edge", "--port", str(edge_port)],
                            cwd=ROOT, env=env, start_new_session=True)
    try:
        assert wait_http(f"http://127.0.0.1:{agent_port}/health", 180), "agent did not start"
        assert wait_http(f"http://127.0.0.1:{edge_port}/health/liveness", 60), "edge did not start"
        with httpx.Client(base_url=f"http://127.0.0.1:{edge_port}", timeout=600) as client:
            deadline = time.monotonic() + 300  # warm-up: the agent's model loaded (503 model_loading until then)
            while (warm := client.post("/v1/chat/completions", json={"model": "default",
                                                                     **request_body(0, 4)})).status_code != 200:
                assert time.monotonic() < deadline, warm.text
                time.sleep(1)
            interactive(client, 2, args.tokens)
            one_s, one_tokens = interactive(client, args.n, args.tokens)
            batch_s, batch_tokens = batched(client, args.n, args.tokens)
            wide_s, wide_tokens = parallel(client, args.n, args.tokens, args.max_batch)
            time.sleep(1)  # settlements of the last requests written
            line_ms, request_ms = mean_latency_ms(client, BATCH_IDS[0])
    finally:
        stop(edge)
        stop(agent)
        ddb.stop()
    print(f"{args.n} requests x {args.tokens} max tokens, {args.model}, agent --max-batch {args.max_batch}, "
          f"ISTHMUS_BATCH_CONCURRENCY={args.concurrency}")
    print(f"interactive one by one: {args.n / one_s:6.2f} lines/s  {one_tokens / one_s:6.1f} tok/s  ({one_s:.1f} s)")
    print(f"batch:                  {args.n / batch_s:6.2f} lines/s  {batch_tokens / batch_s:6.1f} tok/s  "
          f"({batch_s:.2f} s, create to completed)")
    print(f"{args.max_batch} at a time, interactive: {args.n / wide_s:6.2f} lines/s  "
          f"{wide_tokens / wide_s:6.1f} tok/s  ({wide_s:.2f} s: the agent's batched rate)")
    print(f"mean latency per line: batch {line_ms:.0f} ms, {args.max_batch} at a time {request_ms:.0f} ms")
    print(f"batch / one by one: {one_s / batch_s:.2f}x lines/s; batch / {args.max_batch} at a time: "
          f"{wide_s / batch_s:.2f}x")
    return 0


if __name__ == "__main__":
    sys.exit(main())
