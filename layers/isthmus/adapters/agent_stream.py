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

HTTP goes through :mod:`isthmus.adapters.agent_http` (keep-alive connections per event loop). A stream
that is closed before its end drops its connection: that is how the agent learns the caller has gone.
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Any

from pydantic import ConfigDict, TypeAdapter

from isthmus.adapters import agent_http
from isthmus.adapters.agent_client import AgentUnreachable
from isthmus.errors import ApiError
from isthmus_contracts.agent import TokenizeRequest, TokenizeResponse
from isthmus_contracts.internal import InternalRequest, InternalResponse, StreamEvent

_events: TypeAdapter[Any] = TypeAdapter(StreamEvent, config=ConfigDict(defer_build=True))  # built on first use
CONNECT_TIMEOUT_S = 2.0
FIRST_EVENT_TIMEOUT_S = 300.0  # prefill of a long prompt on a busy node
class AgentStreamBroken(Exception):
    """The agent's stream ended or failed after its first event (bytes may have reached the client)."""


def _agent_error(status: int, raw: bytes, base_url: str) -> ApiError:
    """The agent's error as an ApiError; a 503 (not serving: no model, shutting down) is
    :class:`AgentUnreachable`, so failover tries another node: nothing has reached the client yet."""
    error = _error_body(status, raw, base_url)
    if error.status == 503:
        return AgentUnreachable(base_url, f"503 {error.message}")
    return error


def _error_body(status: int, raw: bytes, base_url: str) -> ApiError:
    try:
        import json

        data = json.loads(raw)
    except ValueError:
        data = {}
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    message = (data.get("detail") if isinstance(data, dict) else None) or error.get("message")
    code = error.get("code")
    return ApiError(status, str(message or f"node agent at {base_url} answered {status}"), code=code or "agent_error")


_tls: list[Any] = []


def shared_tls() -> Any:
    """One TLS context for every agent client: a fresh one loads the CA bundle, ~40 ms of CPU on the loop."""
    import ssl

    if not _tls:
        _tls.append(ssl.create_default_context())
    return _tls[0]


class AgentStream:
    def __init__(self, resp: agent_http.StreamResponse, lines: AsyncIterator[str], first: Any, base_url: str) -> None:
        self._resp, self._lines = resp, lines
        self.first = first
        self.base_url = base_url

    async def events(self) -> AsyncIterator[Any]:
        yield self.first
        try:
            async for line in self._lines:
                if line.strip():
                    yield _events.validate_json(line)
        except (agent_http.AgentHttpError, ValueError) as exc:
            raise AgentStreamBroken(f"stream from {self.base_url} broke: {type(exc).__name__}") from exc

    async def aclose(self) -> None:
        """Drops the connection unless the stream was read to its end: the agent sees the disconnect and stops."""
        await self._resp.aclose()

    async def __aenter__(self) -> AgentStream:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.aclose()


def _url(base_url: str, path: str) -> str:
    return base_url.rstrip("/") + path


async def open_stream(base_url: str, request: InternalRequest) -> AgentStream:
    """A streamed generation whose first event has arrived; connection failures before it are
    :class:`AgentUnreachable`, agent errors (4xx/5xx) are :class:`ApiError` with the agent's status."""
    body = request.model_copy(update={"stream": True}).model_dump(mode="json", exclude_none=True)
    try:
        resp = await agent_http.stream("POST", _url(base_url, "/agent/v1/generate"), json_body=body,
                                       connect_timeout=CONNECT_TIMEOUT_S, timeout=FIRST_EVENT_TIMEOUT_S)
    except agent_http.AgentHttpError as exc:
        raise AgentUnreachable(base_url, exc.kind) from None
    try:
        if resp.status >= 400:
            raise _agent_error(resp.status, await resp.read(), base_url)
        lines = resp.lines()
        first_line = ""
        while not first_line.strip():
            first_line = await lines.__anext__()
        first = _events.validate_json(first_line)
    except (agent_http.AgentHttpError, StopAsyncIteration) as exc:
        await resp.aclose()
        raise AgentUnreachable(base_url, f"no first event ({type(exc).__name__})") from None
    except BaseException:
        await resp.aclose()
        raise
    return AgentStream(resp, lines, first, base_url)


async def generate(base_url: str, request: InternalRequest) -> InternalResponse:
    """A whole (non-streamed) generation; connection failures are :class:`AgentUnreachable`."""
    body = request.model_copy(update={"stream": False}).model_dump(mode="json", exclude_none=True)
    try:
        resp = await agent_http.request("POST", _url(base_url, "/agent/v1/generate"), json_body=body,
                                        connect_timeout=CONNECT_TIMEOUT_S, timeout=FIRST_EVENT_TIMEOUT_S)
    except agent_http.ReadTimedOut:
        # The agent may still be working on it: not retried on another node.
        raise ApiError(504, f"node agent at {base_url} did not answer in time", code="agent_timeout") from None
    except agent_http.AgentHttpError as exc:
        # Nothing has reached the client yet: another node may serve it.
        raise AgentUnreachable(base_url, exc.kind) from None
    if resp.status >= 400:
        raise _agent_error(resp.status, resp.body, base_url)
    return InternalResponse.model_validate_json(resp.body)


async def tokenize(base_url: str, request: TokenizeRequest) -> int:
    """Exact prompt tokens with the node's tokenizer and chat template."""
    return (await tokenize_response(base_url, request)).prompt_tokens


async def tokenize_response(base_url: str, request: TokenizeRequest) -> TokenizeResponse:
    """The node's whole tokenize answer: the exact prompt tokens and what bounds the output."""
    try:
        resp = await agent_http.request("POST", _url(base_url, "/agent/v1/tokenize"),
                                        json_body=request.model_dump(mode="json", exclude_none=True),
                                        connect_timeout=CONNECT_TIMEOUT_S, timeout=30.0)
    except agent_http.AgentHttpError as exc:
        raise AgentUnreachable(base_url, exc.kind) from None
    if resp.status >= 400:
        raise _error_body(resp.status, resp.body, base_url)
    return TokenizeResponse.model_validate_json(resp.body)
