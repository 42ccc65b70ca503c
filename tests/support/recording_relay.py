"""A recording relay in front of a real node agent: a uvicorn server on 127.0.0.1 (in a thread) that forwards
every request to the agent unchanged (streams included) and keeps the JSON body of each ``/agent/v1/generate``
it relays. Tests point the edge at the relay to observe exactly what the agent received (the messages its chat
template renders into the prompt). Never used outside tests."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

import httpx
from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.support.loopback_server import LoopbackServer

_HOP = {"host", "content-length", "transfer-encoding", "connection"}


class RecordingRelay(LoopbackServer):
    def __init__(self, agent_base: str) -> None:
        self.agent_base = agent_base
        self.generated: list[dict[str, Any]] = []
        super().__init__([Route("/{path:path}", self.relay, methods=["GET", "POST", "PUT", "DELETE"])])

    async def relay(self, request: Request) -> StreamingResponse:
        body = await request.body()
        if request.url.path == "/agent/v1/generate":
            self.generated.append(json.loads(body))
        client = httpx.AsyncClient(base_url=self.agent_base, timeout=300)
        upstream = await client.send(client.build_request(
            request.method, request.url.path, params=request.query_params, content=body,
            headers={k: v for k, v in request.headers.items() if k.lower() not in _HOP}), stream=True)

        async def chunks() -> AsyncIterator[bytes]:
            async for chunk in upstream.aiter_raw():
                yield chunk

        async def close() -> None:
            await upstream.aclose()
            await client.aclose()

        return StreamingResponse(chunks(), status_code=upstream.status_code, background=BackgroundTask(close),
                                 headers={k: v for k, v in upstream.headers.items() if k.lower() not in _HOP})
