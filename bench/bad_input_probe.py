"""Replay issue 14's hostile requests against a running edge; print every 5xx, wrong-shaped or slow answer.

    python bench/bad_input_probe.py http://127.0.0.1:8000 [--agent http://127.0.0.1:8100] [--master-key sk-...]

Classes: 2 (answers that were 500/503), 3 (one bad key poisons the list), 4 (no body limit), 8 (accepted and
shouldn't be; wrong methods; unknown paths). With --agent, the agent's RSS is read before and after.
"""

from __future__ import annotations

import argparse
import json
import socket
import time
import uuid
from collections import Counter
from collections.abc import Iterator
from typing import Any

import httpx

MIB = 1024 * 1024
SLOW_S = 2.0
Probe = tuple[str, str, str, bytes | None, dict[str, str]]  # class, method, path, body, extra headers


def deep(n: int) -> bytes:
    return b'{"a":' * n + b"1" + b"}" * n


def js(value: Any) -> bytes:
    return json.dumps(value).encode()


def chat(**extra: Any) -> dict[str, Any]:
    return {"model": "default", "max_tokens": 2, "messages": [{"role": "user", "content": "hi"}], **extra}


def probes() -> Iterator[Probe]:
    inference = ["/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/messages/count_tokens",
                 "/api/v1/chat/completions", "/api/v1/messages"]
    control = ["/v1/keys", "/v1/users", "/v1/budgets", "/v1/pricing", "/api/v1/keys"]
    raw_bodies = [deep(10_000), deep(100_000), b"[" * 50_000 + b"]" * 50_000, b'{"model": 1' + b"0" * 5000 + b"}",
                  b'{"model": "\\ud800", "key_name": "\\ud800", "user_id": "\\udc00"}', b'{"x": 1e999}',
                  b'{"x": NaN}', b'{"x": "\xff\xfe"}', b"", b"not json"]
    for path in inference + control:
        for body in raw_bodies:
            yield "2", "POST", path, body, {}
    yield "2", "POST", "/v1/chat/completions", js(chat(seed=10 ** 30)), {}
    yield "2", "POST", "/v1/chat/completions", js(chat(seed=-1)), {}
    long_id = {"model": "default", "input": "hi", "previous_response_id": "r" * 100_000}
    yield "2", "POST", "/v1/responses", js(long_id), {}
    yield "2", "GET", "/v1/responses/" + "r" * 60_000, None, {}
    yield "2", "POST", "/v1/keys", js({"key_name": "k", "metadata": json.loads(deep(500))}), {}
    yield "2", "POST", "/v1/pricing", js({"model_key": "m", "input_price_per_million": 1e308,
                                          "output_price_per_million": 1}), {}
    yield "2", "POST", "/v1/pricing", js({"model_key": "m" * MIB, "input_price_per_million": 1,
                                          "output_price_per_million": 1}), {}
    for size in (MIB, 10 * MIB, 50 * MIB):
        yield "2", "POST", "/v1/keys", b'{"key_name": "' + b"k" * size + b'"}', {}
    pid = f"probe{uuid.uuid4().hex[:6]}"
    provider = {"protocol": "openai", "api_base": "http://127.0.0.1:9"}
    yield "2", "PUT", f"/admin/providers/{pid}", js({**provider, "headers": {"X-A": "v" * 500_000}}), {}
    for size in (10 * MIB, 50 * MIB):
        yield "2", "PUT", f"/admin/providers/{pid}", b'{"protocol": "' + b"o" * size + b'"}', {}
    # class 3: a bad key name, then the list
    yield "3", "POST", "/v1/keys", b'{"key_name": "\\ud800"}', {}
    yield "3", "GET", "/v1/keys", None, {}
    # class 4: body size and block count
    for size in (10 * MIB, 50 * MIB):
        yield "4", "POST", "/v1/chat/completions", js(chat(messages=[{"role": "user", "content": "w" * size}])), {}
    blocks = [{"type": "text", "text": "a"} for _ in range(20_000)]
    yield "4", "POST", "/v1/messages", js(chat(messages=[{"role": "user", "content": blocks}])), {}
    yield "4", "POST", "/v1/chat/completions", js(chat(messages=[{"role": "user", "content": "hi"}] * 20_000)), {}
    # class 8: accepted and shouldn't be
    yield "8", "PUT", f"/admin/providers/{pid}", js({**provider, "headers": {"X-A": "a\r\nX-Injected: 1"}}), {}
    yield "8", "PUT", f"/admin/providers/{pid}", js({**provider, "published": [{"alias": "../../x",
                                                                                "upstream_model": "m"}]}), {}
    yield "8", "PUT", "/admin/providers/..", js(provider), {}
    yield "8", "PUT", "/admin/clusters/..", js({}), {}
    yield "8", "POST", "/v1/keys", js({"key_name": "k", "expires_at": -1}), {}
    yield "8", "POST", "/v1/keys", js({"key_name": "a\x00b"}), {}
    yield "8", "POST", "/v1/users", js({"user_id": "../../x"}), {}
    yield "8", "POST", "/v1/users", js({"user_id": "u\x00"}), {}
    yield "8", "POST", "/v1/users", js({"user_id": f"u{uuid.uuid4().hex[:6]}", "alias": "a" * 100_000}), {}
    yield "8", "POST", "/v1/budgets", js({"budget_id": "../../b"}), {}
    for path in inference[:3]:
        yield "8", "POST", path, js(chat(stream="yes")), {}
    yield "8", "POST", "/v1/chat/completions", js(chat()), {"X-Session-Id": "s" * MIB}
    yield "8", "POST", "/v1/chat/completions", js(chat()), {"X-Big": "v" * MIB}
    for path in inference:
        for method in ("GET", "PUT", "DELETE"):
            yield "8", method, path, None, {}
    for path in ("/v1/nope", "/v1/assistants", "/api/v1/threads/x", "/v1/messages/nope", "/v1/fine_tuning/jobs"):
        yield "8", "POST", path, None, {}


def shape_ok(path: str, status: int, body: Any) -> bool:
    if status < 400:
        return True
    bare = path.removeprefix("/api")
    if bare.startswith("/v1/messages"):
        return isinstance(body, dict) and body.get("type") == "error" and "message" in body.get("error", {})
    group = bare.removeprefix("/v1/").split("/", 1)[0] if bare.startswith("/v1/") else ""
    if bare.startswith("/v1/") and group not in {"keys", "users", "budgets", "pricing", "usage", "batches"}:
        return isinstance(body, dict) and "message" in body.get("error", {})
    return isinstance(body, dict) and "detail" in body


def declared_50mb(base: str, path: str, auth: dict[str, str]) -> tuple[int, float]:
    """(status, seconds) for a request that declares 50 MB and sends 64 KiB: answered without the rest (with the
    caller's key, so keyed mode answers the size, not the missing key)."""
    host, port = base.removeprefix("http://").split(":")
    started = time.monotonic()
    with socket.create_connection((host, int(port)), timeout=30) as sock:
        head_lines = (f"POST {path} HTTP/1.1\r\nHost: {host}\r\nContent-Type: application/json\r\n"
                      + "".join(f"{k}: {v}\r\n" for k, v in auth.items())
                      + f"Content-Length: {50 * MIB}\r\n\r\n")
        sock.sendall(head_lines.encode() + b"x" * 65536)
        head = sock.recv(65536)
    return int(head.split()[1]), time.monotonic() - started


def rss(agent: str | None) -> int | None:
    return int(httpx.get(f"{agent}/agent/v1/status").json()["rss_bytes"]) if agent else None


def main() -> int:
    parser = argparse.ArgumentParser()
    parser.add_argument("base")
    parser.add_argument("--agent")
    parser.add_argument("--master-key")
    args = parser.parse_args()
    auth = {"Authorization": f"Bearer {args.master_key}"} if args.master_key else {}
    statuses: Counter[str] = Counter()
    bad, slowest, count = 0, 0.0, 0
    rss_before = rss(args.agent)
    with httpx.Client(base_url=args.base, timeout=120) as client:
        for cls, method, path, body, headers in probes():
            count += 1
            started = time.monotonic()
            try:
                r = client.request(method, path, content=body,
                                   headers={"content-type": "application/json", **auth, **headers})
                status, text = r.status_code, r.text
            except httpx.HTTPError as exc:
                status, text = 0, f"{type(exc).__name__}: {exc}"
            elapsed = time.monotonic() - started
            slowest = max(slowest, elapsed)
            statuses[str(status)] += 1
            try:
                parsed = json.loads(text)
            except ValueError:
                parsed = None
            # 431: the HTTP server refuses an oversized header block before any app sees it (plain text)
            wrong_shape = status not in (0, 431) and not shape_ok(path, status, parsed)
            # every probe but the class-3 list is bad input: a 2xx means it was accepted
            accepted = status < 400 and not (cls == "3" and method == "GET")
            list_failed = cls == "3" and method == "GET" and status >= 400
            if status >= 500 or status == 0 or elapsed > SLOW_S or wrong_shape or accepted or list_failed:
                bad += 1
                print(f"BAD class {cls} {method} {path[:60]} ({len(body or b'')} B): {status} in {elapsed:.2f}s "
                      f"{text[:160]!r}")
    for path in ("/v1/chat/completions", "/v1/messages", "/v1/keys"):
        status, seconds = declared_50mb(args.base, path, auth)
        print(f"declared 50 MB, sent 64 KiB to {path}: {status} in {seconds * 1000:.0f} ms")
        bad += status != 413
    rss_after = rss(args.agent)
    print(f"{count} requests; statuses {dict(sorted(statuses.items()))}; slowest {slowest:.2f}s; {bad} bad")
    if rss_before is not None and rss_after is not None:
        print(f"agent RSS {rss_before / MIB:.0f} MiB before, {rss_after / MIB:.0f} MiB after")
    return 1 if bad else 0


if __name__ == "__main__":
    raise SystemExit(main())
