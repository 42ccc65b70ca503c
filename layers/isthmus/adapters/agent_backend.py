"""InferenceBackend over a node agent's HTTP protocol (``/agent/v1/*``), with one pooled httpx client per
event loop (Mangum reuses one loop per sandbox; the local edge's lambda mode has one per worker thread)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import TYPE_CHECKING, Any

from pydantic import TypeAdapter, ValidationError

from isthmus.errors import ApiError
from isthmus_contracts.agent import AgentStatus, TokenizeRequest, TokenizeResponse
from isthmus_contracts.internal import ErrorEvent, InternalRequest, InternalResponse, StreamEvent

if TYPE_CHECKING:
    import httpx

_EVENT = TypeAdapter(StreamEvent)
_clients: dict[int, httpx.AsyncClient] = {}


def _client() -> httpx.AsyncClient:
    import httpx

    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None or client.is_closed:
        # Connect fast (a dead node must fail over quickly); reads may wait through a long prefill.
        client = httpx.AsyncClient(timeout=httpx.Timeout(connect=2.0, read=600.0, write=30.0, pool=10.0),
                                   limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        _clients[loop_id] = client
    return client


def _upstream_error(status: int, payload: Any, headers: dict[str, str] | None = None) -> ApiError:
    detail = payload.get("detail") if isinstance(payload, dict) else None
    message = detail if isinstance(detail, str) else f"node agent answered {status}"
    passthrough = {k: v for k, v in (headers or {}).items() if k.lower() == "retry-after"}
    if status in (400, 404, 409, 413, 422, 429, 503):
        return ApiError(400 if status == 422 else status, message, code="backend_error", headers=passthrough)
    return ApiError(502, f"node agent error: {message}", code="backend_error")


class AgentBackend:
    def __init__(self, base_url: str) -> None:
        self.base_url = base_url.rstrip("/")
        self.name = f"agent:{self.base_url}"

    async def _post(self, path: str, body: dict[str, Any]) -> Any:
        import httpx

        try:
            resp = await _client().post(f"{self.base_url}{path}", json=body)
        except httpx.TransportError as exc:
            raise ApiError(503, f"node agent unreachable: {type(exc).__name__}", code="backend_unavailable") from exc
        payload = resp.json() if resp.headers.get("content-type", "").startswith("application/json") else None
        if resp.status_code >= 400:
            raise _upstream_error(resp.status_code, payload, dict(resp.headers))
        return payload

    async def status(self) -> AgentStatus:
        import httpx

        try:
            resp = await _client().get(f"{self.base_url}/agent/v1/status")
        except httpx.TransportError as exc:
            raise ApiError(503, f"node agent unreachable: {type(exc).__name__}", code="backend_unavailable") from exc
        if resp.status_code >= 400:
            raise _upstream_error(resp.status_code, None)
        return AgentStatus.model_validate(resp.json())

    async def generate(self, request: InternalRequest) -> InternalResponse:
        body = request.model_dump(mode="json", exclude_none=True)
        body["stream"] = False
        return InternalResponse.model_validate(await self._post("/agent/v1/generate", body))

    async def count_tokens(self, request: TokenizeRequest) -> int | None:
        payload = await self._post("/agent/v1/tokenize", request.model_dump(mode="json", exclude_none=True))
        return TokenizeResponse.model_validate(payload).prompt_tokens

    async def stream(self, request: InternalRequest) -> AsyncIterator[StreamEvent]:
        import httpx

        body = request.model_dump(mode="json", exclude_none=True)
        body["stream"] = True
        try:
            async with _client().stream("POST", f"{self.base_url}/agent/v1/generate", json=body) as resp:
                if resp.status_code >= 400:
                    raw = await resp.aread()
                    try:
                        payload = resp.json() if raw else None
                    except ValueError:
                        payload = None
                    raise _upstream_error(resp.status_code, payload, dict(resp.headers))
                async for line in resp.aiter_lines():
                    if line:
                        yield _parse_event(line)
        except httpx.TransportError as exc:
            # Before the first byte this is a 503 the caller can retry elsewhere; after it, the relay turns
            # the ApiError into an in-band error event.
            raise ApiError(503, f"node agent connection failed: {type(exc).__name__}",
                           code="backend_unavailable") from exc


def _parse_event(line: str) -> StreamEvent:
    try:
        return _EVENT.validate_json(line)
    except ValidationError:
        return ErrorEvent(message="node agent sent an unreadable event", code="backend_protocol_error", status=502)
