"""Where a cloud stream's first byte goes: the edge in process under uvicorn (as `isthmus edge` serves it), with
perf_counter probes around the request's arrival, the upstream call (sent, headers back), the upstream's first SSE
event, the response's start and its first body write; the client (the same process, another thread: it shares the
GIL, so its own side reads a little slow) calls the upstream directly and then the edge, in turn. Prints the p50 of
each mark and of each gap: what the relay itself adds is "upstream_first_event -> first_body_write".

Run: .venv/bin/python bench/stream_probe.py [off|open|keyed] [N] [openai|anthropic]   (the alias's protocol, and the
dialect the client speaks: chat completions to an OpenAI-protocol alias, messages to an Anthropic-protocol one)
"""

from __future__ import annotations

import asyncio
import os
import subprocess
import sys
import threading
import time
import uuid
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT))
sys.path.insert(0, str(ROOT / "bench"))

import httpx  # noqa: E402
from ab_edges import start_edge  # noqa: E402
from gateway_overhead import local_store  # noqa: E402
from paths import MASTER, configure  # noqa: E402

from local_runtime.ddb import free_port  # noqa: E402
from local_runtime.process import stop, wait_http  # noqa: E402

MODE = sys.argv[1] if len(sys.argv) > 1 else "off"
N = int(sys.argv[2]) if len(sys.argv) > 2 else 300
PROTOCOL = sys.argv[3] if len(sys.argv) > 3 else "openai"
# (edge path, alias, upstream path, upstream model) per protocol, as bench/paths.py's cloud cases
CASES = {"openai": ("/v1/chat/completions", "cloud-oa", "/openai/v1/chat/completions", "up-oa"),
         "anthropic": ("/v1/messages", "cloud-an", "/anthropic/v1/messages", "up-an")}
marks: dict[str, float] = {}


def mark(name: str) -> None:
    if name not in marks:
        marks[name] = time.perf_counter()


def med(values: list[float]) -> float:
    return sorted(values)[len(values) // 2]


def main() -> None:
    ddb = local_store(f"probe-{uuid.uuid4().hex[:6]}-")
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    up = subprocess.Popen([sys.executable, str(ROOT / "bench" / "upstream.py"), str(up_port)], start_new_session=True)
    assert wait_http(f"{upstream}/health", 30)
    data = f"/tmp/probe-{uuid.uuid4().hex[:6]}"
    env = {"ISTHMUS_DEFAULT_AGENT_URL": upstream, "ISTHMUS_LOCAL_KEY_FILE": f"{data}/provider.key",
           "ISTHMUS_SPOOL_DIR": f"{data}/spool"}
    os.environ.update(env)
    setup, base = start_edge(ROOT, {**os.environ, "ISTHMUS_MASTER_KEY": MASTER})
    assert wait_http(f"{base}/health", 90)
    key = configure(base, upstream)
    stop(setup)
    if MODE == "off":
        os.environ["ISTHMUS_TENANCY"] = "off"
    if MODE == "keyed":
        os.environ["ISTHMUS_MASTER_KEY"] = MASTER

    import uvicorn

    from isthmus import streaming
    from isthmus.adapters.cloud import transport
    from local_runtime.edge.server import create_edge

    edge = create_edge()

    async def app(scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "http":
            marks.clear()
            mark("arrive")
        await edge(scope, receive, send)

    real_send = transport.send

    async def send(*a: Any, **k: Any) -> Any:
        mark("upstream_call")
        resp = await real_send(*a, **k)
        mark("upstream_headers")
        return resp

    transport.send = send
    real_sse = transport.sse

    async def sse(*a: Any, **k: Any) -> Any:
        async for item in real_sse(*a, **k):
            mark("upstream_first_event")
            yield item

    transport.sse = sse
    real_call = streaming.RelayResponse.__call__

    async def relay_call(self: Any, scope: Any, receive: Any, send_: Any) -> None:
        mark("response_start")

        async def probed(message: Any) -> None:
            if message["type"] == "http.response.body" and message.get("body"):
                mark("first_body_write")
            await send_(message)

        await real_call(self, scope, receive, probed)

    streaming.RelayResponse.__call__ = relay_call  # type: ignore[method-assign,assignment]
    port = free_port()
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=port, log_level="warning"))
    threading.Thread(target=server.run, daemon=True).start()
    assert wait_http(f"http://127.0.0.1:{port}/health", 30)
    edge_path, alias, up_path, up_model = CASES[PROTOCOL]
    body = {"model": alias, "messages": [{"role": "user", "content": "What is the capital of France?"}],
            "max_tokens": 16, "stream": True}
    rows: list[dict[str, float]] = []
    direct: list[float] = []

    async def run() -> None:
        bearer = key if MODE == "keyed" else "sk-placeholder"
        async with httpx.AsyncClient(timeout=60, headers={"Authorization": f"Bearer {bearer}"}) as c:
            for i in range(N + 20):
                start = time.perf_counter()
                async with c.stream("POST", f"{upstream}{up_path}", json={**body, "model": up_model}) as r:
                    async for _ in r.aiter_raw():
                        if i >= 20:
                            direct.append(time.perf_counter() - start)
                        break
                start = time.perf_counter()
                async with c.stream("POST", f"http://127.0.0.1:{port}{edge_path}", json=body) as r:
                    first = 0.0
                    async for _ in r.aiter_raw():
                        first = first or time.perf_counter()
                if i >= 20:
                    rows.append({**{k: (v - start) * 1e3 for k, v in marks.items()}, "client_first_byte":
                                 (first - start) * 1e3})

    asyncio.run(run())
    server.should_exit = True
    stop(up)
    ddb.stop()
    print(f"{PROTOCOL} stream, mode {MODE}, n={N}, load {os.getloadavg()[0]:.1f}; ms since the client sent "
          "(p50 of each mark)")
    print(f"  direct first byte (same client, upstream alone): {med(direct) * 1e3:.3f}")
    for k in ("arrive", "upstream_call", "upstream_headers", "upstream_first_event", "response_start",
              "first_body_write", "client_first_byte"):
        print(f"  {k:<22}{med([r[k] for r in rows if k in r]):8.3f}")
    gaps = [("arrive", "upstream_call"), ("upstream_call", "upstream_headers"),
            ("upstream_headers", "upstream_first_event"), ("upstream_first_event", "response_start"),
            ("response_start", "first_body_write"), ("first_body_write", "client_first_byte")]
    for a, b in gaps:
        print(f"  {a} -> {b}: p50 {med([r[b] - r[a] for r in rows if a in r and b in r]):.3f}")


if __name__ == "__main__":
    main()
