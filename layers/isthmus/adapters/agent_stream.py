"""Generation calls to a node agent (``POST /agent/v1/generate``), shaped for failover before the first
byte: :func:`open_stream` returns only once the agent's first NDJSON event has arrived, so a refused
connection, a reset or an agent that dies before answering raises :class:`AgentUnreachable` (the failover
helper then tries the next node). After that, a broken stream raises :class:`AgentStreamBroken` from
``events()``: the caller renders the in-band error event and the usage row. An agent that answers 503 (not serving)
counts as unreachable; other agent errors (400 context too long, ...) propagate with their status.

    async def attempt(target):                      # isthmus.routing.failover.first_connecting
        return await open_stream(target.base_url, request)
    target, stream = await first_connecting(route.nodes, attempt)
    async with stream:
        async for event in stream.events(): ...

httpx is imported on first use. Whole generations and tokenize calls share a pooled client (one per event
loop: Mangum reuses one loop per sandbox; the local edge's lambda mode has one per worker thread). A stream
gets a client of its own: closing it is the one sure way to drop the connection when the caller goes away
mid-read (a cancelled read can leave a pooled connection checked out and open, and the agent generating).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import ConfigDict, TypeAdapter

from isthmus.adapters.agent_client import AgentUnreachable
from isthmus.errors import ApiError
from isthmus_contracts.agent import TokenizeRequest, TokenizeResponse
from isthmus_contracts.internal import InternalRequest, InternalResponse, StreamEvent

_events: TypeAdapter[Any] = TypeAdapter(StreamEvent, config=ConfigDict(defer_build=True))  # built on first use
CONNECT_TIMEOUT_S = 2.0
FIRST_EVENT_TIMEOUT_S = 300.0  # prefill of a long prompt on a busy node
_clients: dict[int, Any] = {}


def pooled_client() -> Any:
    """This event loop's shared httpx.AsyncClient for node agents."""
    import asyncio

    import httpx

    loop_id = id(asyncio.get_running_loop())
    client = _clients.get(loop_id)
    if client is None or client.is_closed:
        client = httpx.AsyncClient(timeout=httpx.Timeout(FIRST_EVENT_TIMEOUT_S, connect=CONNECT_TIMEOUT_S),
                                   limits=httpx.Limits(max_connections=256, max_keepalive_connections=64))
        _clients[loop_id] = client
    return client


class AgentStreamBroken(Exception):
    """The agent's stream ended or failed after its first event (bytes may have reached the client)."""


async def _agent_error(resp: Any, base_url: str) -> ApiError:
    """The agent's error as an ApiError; a 503 (not serving: no model, shutting down) is
    :class:`AgentUnreachable`, so failover tries another node: nothing has reached the client yet."""
    error = await _error_body(resp, base_url)
    if error.status == 503:
        return AgentUnreachable(base_url, f"503 {error.message}")
    return error


async def _error_body(resp: Any, base_url: str) -> ApiError:
    raw = await resp.aread()
    try:
        import json

        data = json.loads(raw)
    except ValueError:
        data = {}
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    message = (data.get("detail") if isinstance(data, dict) else None) or error.get("message")
    code = error.get("code")
    return ApiError(resp.status_code, str(message or f"node agent at {base_url} answered {resp.status_code}"),
                    code=code or "agent_error")


_tls: list[Any] = []


def _stream_client() -> Any:
    """A client of the stream's own. Its TLS context is built once and shared: a fresh one loads the CA
    bundle, ~40 ms, which a per-stream client would pay on every request."""
    import ssl

    import httpx

    if not _tls:
        _tls.append(ssl.create_default_context())
    return httpx.AsyncClient(timeout=httpx.Timeout(FIRST_EVENT_TIMEOUT_S, connect=CONNECT_TIMEOUT_S), verify=_tls[0])


class AgentStream:
    def __init__(self, client: Any, resp: Any, lines: AsyncIterator[str], first: Any, base_url: str) -> None:
        self._client, self._resp, self._lines = client, resp, lines
        self.first = first
        self.base_url = base_url

    async def events(self) -> AsyncIterator[Any]:
        import httpx

        yield self.first
        try:
            async for line in self._lines:
                if line.strip():
                    yield _events.validate_json(line)
        except (httpx.TransportError, ValueError) as exc:
            raise AgentStreamBroken(f"stream from {self.base_url} broke: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Drops the connection (the stream's own client): the agent sees the disconnect and stops."""
        try:
            await self._resp.aclose()
        finally:
            await self._client.aclose()

    async def __aenter__(self) -> AgentStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


async def open_stream(base_url: str, request: InternalRequest) -> AgentStream:
    """A streamed generation whose first event has arrived; connection failures before it are
    :class:`AgentUnreachable`, agent errors (4xx/5xx) are :class:`ApiError` with the agent's status."""
    import httpx

    client = _stream_client()
    body = request.model_copy(update={"stream": True}).model_dump(mode="json", exclude_none=True)
    try:
        resp = await client.send(client.build_request("POST", base_url.rstrip("/") + "/agent/v1/generate",
                                                      json=body), stream=True)
    except httpx.TransportError as exc:
        await client.aclose()
        raise AgentUnreachable(base_url, type(exc).__name__) from None
    try:
        if resp.status_code >= 400:
            raise await _agent_error(resp, base_url)
        lines = resp.aiter_lines()
        first_line = ""
        while not first_line.strip():
            first_line = await lines.__anext__()
        first = _events.validate_json(first_line)
    except (httpx.TransportError, StopAsyncIteration) as exc:
        await resp.aclose()
        await client.aclose()
        raise AgentUnreachable(base_url, f"no first event ({type(exc).__name__})") from None
    except BaseException:
        await resp.aclose()
        await client.aclose()
        raise
    return AgentStream(client, resp, lines, first, base_url)


async def generate(base_url: str, request: InternalRequest) -> InternalResponse:
    """A whole (non-streamed) generation; connection failures are :class:`AgentUnreachable`."""
    import httpx

    body = request.model_copy(update={"stream": False}).model_dump(mode="json", exclude_none=True)
    try:
        resp = await pooled_client().post(base_url.rstrip("/") + "/agent/v1/generate", json=body)
    except (httpx.ConnectError, httpx.ConnectTimeout, httpx.ReadError, httpx.RemoteProtocolError) as exc:
        # Nothing has reached the client yet: another node may serve it (a read timeout is not retried).
        raise AgentUnreachable(base_url, type(exc).__name__) from None
    if resp.status_code >= 400:
        raise await _agent_error(resp, base_url)
    return InternalResponse.model_validate_json(resp.content)


async def tokenize(base_url: str, request: TokenizeRequest) -> int:
    """Exact prompt tokens with the node's tokenizer and chat template."""
    import httpx

    try:
        resp = await pooled_client().post(base_url.rstrip("/") + "/agent/v1/tokenize",
                                          json=request.model_dump(mode="json", exclude_none=True))
    except httpx.TransportError as exc:
        raise AgentUnreachable(base_url, type(exc).__name__) from None
    if resp.status_code >= 400:
        raise await _error_body(resp, base_url)
    return TokenizeResponse.model_validate_json(resp.content).prompt_tokens
