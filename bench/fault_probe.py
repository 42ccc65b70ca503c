"""Replay issue 14's fault probes against a running `isthmus dev` stack; print what each answered and how fast.

    python bench/fault_probe.py --data-dir .isthmus [--base http://127.0.0.1:8000] [--idle 20]

It reads the children's pids from DATA_DIR/dev.children.json and the keys from DATA_DIR/keys.json (a `--keyed`
stack; an open one works without keys) and then, in turn: a chat after an idle spell longer than the node stale
limit (class 1); the agent frozen (SIGSTOP) under an in-flight stream and a new request (class 5); DynamoDB Local
frozen under keys, models, chat, readiness and /health (classes 5, 6); the agent and DynamoDB Local killed
(SIGKILL), the stack bringing them back (class 7). Every frozen process is resumed (SIGCONT) whatever happens.
Loopback only; each wait is bounded.
"""

from __future__ import annotations

import argparse
import json
import os
import signal
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import Any

import httpx

CHAT = {"model": "default", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]}
BAD: list[str] = []


def child_pid(data_dir: Path, name: str) -> int:
    records = json.loads((data_dir / "dev.children.json").read_text())
    return int(next(r["pid"] for r in records if r["name"] == name))


@contextmanager
def frozen(pid: int) -> Iterator[None]:
    os.kill(pid, signal.SIGSTOP)
    try:
        yield
    finally:
        resume(pid)


def resume(pid: int) -> None:
    """SIGCONT, unless the stack's supervisor already replaced the hung process (then it is gone)."""
    with suppress(ProcessLookupError):
        os.kill(pid, signal.SIGCONT)


def timed(fn: Callable[[], httpx.Response]) -> tuple[int, float, str]:
    started = time.monotonic()
    try:
        r = fn()
        status, text = r.status_code, r.text[:120]
    except httpx.HTTPError as exc:
        status, text = 0, type(exc).__name__
    return status, time.monotonic() - started, text


def report(label: str, status: int, seconds: float, ok: bool, text: str = "") -> None:
    mark = "ok " if ok else "BAD"
    if not ok:
        BAD.append(label)
    print(f"{mark} {label}: {status} in {seconds:.2f} s {text if not ok else ''}", flush=True)


def wait_ok(client: httpx.Client, auth: dict[str, str], limit_s: float) -> float | None:
    """Seconds until a chat answers 200 again (None: not within ``limit_s``)."""
    started = time.monotonic()
    while time.monotonic() - started < limit_s:
        status, _, _ = timed(lambda: client.post("/v1/chat/completions", json=CHAT, headers=auth, timeout=10))
        if status == 200:
            return time.monotonic() - started
        time.sleep(0.5)
    return None


def stream_until_error(client: httpx.Client, auth: dict[str, str], freeze: Callable[[], Any]) -> tuple[str, float]:
    """Start a long stream, call ``freeze`` after its first bytes, and time the stream's end from then."""
    body = {**CHAT, "max_tokens": 400, "stream": True}
    with client.stream("POST", "/v1/chat/completions", json=body, headers=auth, timeout=120) as r:
        lines = r.iter_lines()
        next(lines)
        freeze()
        started, last = time.monotonic(), ""
        for line in lines:
            if line.startswith("data:"):
                last = line
        return last[:120], time.monotonic() - started


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("--base", default="http://127.0.0.1:8000")
    parser.add_argument("--data-dir", default=".isthmus")
    parser.add_argument("--idle", type=float, default=20.0, help="idle spell before class 1's second chat (s)")
    args = parser.parse_args()
    data_dir = Path(args.data_dir)
    keys_file = data_dir / "keys.json"
    keys = json.loads(keys_file.read_text()) if keys_file.exists() else {}
    auth = {"Authorization": f"Bearer {keys['api_key']}"} if keys else {}
    master = {"Authorization": f"Bearer {keys['master_key']}"} if keys else {}
    client = httpx.Client(base_url=args.base, timeout=60)

    # class 1: idle longer than the stale limit, then a chat
    status, s, text = timed(lambda: client.post("/v1/chat/completions", json=CHAT, headers=auth))
    report("chat before the idle spell", status, s, status == 200, text)
    time.sleep(args.idle)
    status, s, text = timed(lambda: client.post("/v1/chat/completions", json=CHAT, headers=auth))
    report(f"chat after {args.idle:.0f} s idle", status, s, status == 200, text)

    # class 5: the agent frozen under a stream, then a new request while it is frozen
    agent = child_pid(data_dir, "node agent")
    os.kill(agent, 0)
    try:
        last, s = stream_until_error(client, auth, lambda: os.kill(agent, signal.SIGSTOP))
        report("in-flight stream, agent frozen: ends with the error event", 200, s, "error" in last, last)
        status, s, text = timed(lambda: client.post("/v1/chat/completions", json=CHAT, headers=auth))
        report("new chat while the agent is frozen", status, s, status in (503, 504) and s < 30, text)
    finally:
        resume(agent)
    report("chat once the agent is resumed", 200, wait_ok(client, auth, 60) or -1, True)

    # classes 5 and 6: the store frozen
    ddb = child_pid(data_dir, "DynamoDB Local")
    with frozen(ddb):
        health = []
        for _ in range(10):
            _, s, _ = timed(lambda: client.get("/health"))
            health.append(s)
        status, s, text = timed(lambda: client.get("/health/readiness"))
        report("readiness, store frozen", status, s, status == 503 and s < 10, text)
        status, s, text = timed(lambda: client.get("/v1/keys", headers=master))
        report("GET /v1/keys, store frozen (never an empty 200)", status, s, status == 503 and s < 10, text)
        started = time.monotonic()
        r = client.get("/v1/models", headers=auth)
        s = time.monotonic() - started
        listed = r.status_code == 200 and bool(r.json().get("data"))
        report("GET /v1/models, store frozen (503, or the models it knows; never none)", r.status_code, s,
               s < 10 and (r.status_code == 503 or listed), r.text[:120])
        status, s, text = timed(lambda: client.post("/v1/chat/completions", json=CHAT, headers=auth))
        report("chat, store frozen (cached key: 200, settlement spooled; else 503)", status, s,
               status in (200, 503) and s < 15, text)
        print(f"    /health while the store is frozen: max {max(health) * 1000:.1f} ms over 10", flush=True)
        if max(health) > 0.05:
            BAD.append("/health slow while the store is frozen")
    report("chat once the store is resumed", 200, wait_ok(client, auth, 60) or -1, True)

    # class 7: children killed; the stack brings them back
    for name in ("node agent", "DynamoDB Local"):
        os.kill(child_pid(data_dir, name), signal.SIGKILL)
        back = wait_ok(client, auth, 120)
        report(f"{name} SIGKILLed: chat 200 again", 200 if back else 0, back or -1, back is not None)
        time.sleep(3)

    print(f"{len(BAD)} bad" + (f": {', '.join(BAD)}" if BAD else ""))
    return 1 if BAD else 0


if __name__ == "__main__":
    raise SystemExit(main())
