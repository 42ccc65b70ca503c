"""A recording relay in front of a real node agent: a uvicorn server on 127.0.0.1 (in a thread) that forwards
every request to the agent unchanged (streams included) and keeps the JSON body of each ``/agent/v1/generate``
it relays. Tests point the edge at the relay to observe exactly what the agent received (the messages its chat
template renders into the prompt). Never used outside tests."""

from __future__ import annotations

import json
from collections.abc import Mapping
from typing import Any

from starlette.requests import Request
from starlette.responses import StreamingResponse
from starlette.routing import Route

from tests.support.loopback_server import LoopbackServer, streamed_from

_HOP = {"host", "content-length", "transfer-encoding", "connection"}


def _end_to_end(headers: Mapping[str, str]) -> dict[str, str]:
    """The headers a relay passes on (hop-by-hop ones and those httpx or uvicorn set again left out)."""
    return {k: v for k, v in headers.items() if k.lower() not in _HOP}


class RecordingRelay(LoopbackServer):
    def __init__(self, agent_base: str) -> None:
        self.agent_base = agent_base
        self.generated: list[dict[str, Any]] = []
        super().__init__([Route("/{path:path}", self.relay, methods=["GET", "POST", "PUT", "DELETE"])])

    async def relay(self, request: Request) -> StreamingResponse:
        body = await request.body()
        if request.url.path == "/agent/v1/generate":
            self.generated.append(json.loads(body))
        return await streamed_from(
            request.method, self.agent_base + request.url.path, timeout=300, params=request.query_params,
            content=body, headers=_end_to_end(request.headers), answer_headers=lambda up: _end_to_end(up.headers))
