"""A Starlette app served by uvicorn on a free 127.0.0.1 port in a daemon thread: the base of the tests' fake
upstreams and relays (each subclass builds its routes from its own bound handlers), and the streamed forwarding
the relays share. Never used outside tests."""

from __future__ import annotations

import asyncio
import threading
import time
from collections.abc import Callable, Sequence
from typing import Any, Self

import httpx
import uvicorn
from starlette.applications import Starlette
from starlette.background import BackgroundTask
from starlette.responses import StreamingResponse
from starlette.routing import BaseRoute

from local_runtime.ddb import free_port


class LoopbackServer:
    def __init__(self, routes: Sequence[BaseRoute], *, force_exit_on_stop: bool = False) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        config = uvicorn.Config(Starlette(routes=list(routes)), host="127.0.0.1", port=self.port,
                                log_level="critical", lifespan="off")
        self.server = uvicorn.Server(config)
        self.thread = threading.Thread(target=self.server.run, daemon=True)
        # True: stop() drops open connections (a test may leave a stream hanging) instead of waiting on them
        self.force_exit_on_stop = force_exit_on_stop

    def start(self) -> Self:
        self.thread.start()
        deadline = time.monotonic() + 10
        while not self.server.started and time.monotonic() < deadline:
            time.sleep(0.02)
        return self

    def stop(self) -> None:
        self.server.should_exit = True
        self.server.force_exit = self.force_exit_on_stop
        self.thread.join(5)


async def streamed_from(method: str, url: str, *, timeout: float,
                        answer_headers: Callable[[httpx.Response], dict[str, str]],
                        **request: Any) -> StreamingResponse:
    """The answer ``url`` gives to the request, streamed back as its bytes come (status kept, headers as
    ``answer_headers`` picks them from the upstream's); the client is closed once the answer has been sent."""
    client = httpx.AsyncClient(timeout=timeout)
    upstream = await client.send(client.build_request(method, url, **request), stream=True)

    async def close() -> None:
        await upstream.aclose()
        await client.aclose()

    return StreamingResponse(upstream.aiter_raw(), status_code=upstream.status_code,
                             headers=answer_headers(upstream), background=BackgroundTask(close))


async def read_http_request(reader: asyncio.StreamReader) -> tuple[bytes, bytes] | None:
    """One HTTP/1.1 request off a raw connection, (head, Content-Length body); None at the connection's end."""
    try:
        head = await reader.readuntil(b"\r\n\r\n")
    except (asyncio.IncompleteReadError, ConnectionError):
        return None
    length = 0
    for line in head.split(b"\r\n"):
        name, _, value = line.partition(b":")
        if name.strip().lower() == b"content-length":
            length = int(value)
    return head, await reader.readexactly(length) if length else b""
