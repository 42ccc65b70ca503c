"""Generation calls to a node agent (``POST /agent/v1/generate``), shaped for failover before the first
byte: :func:`open_stream` returns only once the agent's first NDJSON event has arrived, so a refused
connection, a reset or an agent that dies before answering raises :class:`AgentUnreachable` (the failover
helper then tries the next node). After that, a broken stream raises :class:`AgentStreamBroken` from
``events()``: the caller renders the in-band error event and the usage row. An agent that answers 503 (not serving)
counts as unreachable; other agent errors (400 context too long, ...) propagate with their status.

    async def attempt(target):                      # isthmus.backends.first_byte.first_connecting
        return await open_stream(target.base_url, request)
    target, stream = await first_connecting(route.nodes, attempt)
    async with stream:
        async for event in stream.events(): ...

HTTP goes through :mod:`isthmus.adapters.agent_http` (keep-alive connections per event loop). A stream
that is closed before its end drops its connection: that is how the agent learns the caller has gone.

Time is bounded in seconds, so a frozen agent (SIGSTOP, a wedged host: the kernel still accepts the
connection, nothing ever answers) is an error, not a hang: the response head must come within
``ISTHMUS_AGENT_FIRST_BYTE_SECONDS`` (10; the agent sends it once the request is tokenized and queued), then
each next line within ``ISTHMUS_AGENT_IDLE_SECONDS`` (20). A long prefill or a wait for a batch slot is
legitimate silence, so the agent fills it with blank keep-alive lines every couple of seconds (skipped here):
the idle bound then only measures whether the agent is alive, not how long the model takes. Non-streamed
generations are read as a stream too and folded into one answer, so the same bounds hold for them.
"""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from pydantic import ConfigDict, TypeAdapter

from isthmus import settings
from isthmus.adapters import agent_http
from isthmus.errors import AgentUnreachable, ApiError
from isthmus.services.inference.accumulate import StreamAccumulator, fold
from isthmus_contracts.agent import TokenizeRequest, TokenizeResponse
from isthmus_contracts.internal import InternalRequest, InternalResponse, StreamEvent

_events: TypeAdapter[Any] = TypeAdapter(StreamEvent, config=ConfigDict(defer_build=True))  # built on first use
CONNECT_TIMEOUT_S = 2.0
FIRST_BYTE_DEFAULT_S = 10.0
IDLE_DEFAULT_S = 20.0


def _seconds(name: str, default: float) -> float:
    return settings.env_number(name, default, floor=0.1)


def first_byte_seconds() -> float:
    """How long an agent may take to answer a generation's head (``ISTHMUS_AGENT_FIRST_BYTE_SECONDS``)."""
    return _seconds("ISTHMUS_AGENT_FIRST_BYTE_SECONDS", FIRST_BYTE_DEFAULT_S)


def idle_seconds() -> float:
    """How long an agent's stream may stay silent, keep-alives included (``ISTHMUS_AGENT_IDLE_SECONDS``)."""
    return _seconds("ISTHMUS_AGENT_IDLE_SECONDS", IDLE_DEFAULT_S)


class AgentStreamBroken(Exception):
    """The agent's stream ended or failed after its first event (bytes may have reached the client)."""


def _auth(api_key: str | None) -> dict[str, str] | None:
    """The agent's key as a Bearer (an agent started with ``--api-key``; a telemak cluster's stored key)."""
    return {"authorization": f"Bearer {api_key}"} if api_key else None


def _agent_error(status: int, raw: bytes, base_url: str) -> ApiError:
    """The agent's error as an ApiError; a 503 (not serving: no model, loading one, shutting down) is
    :class:`AgentUnreachable`, so failover tries another node: nothing has reached the client yet. It keeps
    the agent's code (``model_loading``...), which the failover's 503 reports when no node could serve."""
    error = _error_body(status, raw, base_url)
    if error.status == 503:
        return AgentUnreachable(base_url, f"503 {error.message}", agent_code=error.code)
    return error


def _error_body(status: int, raw: bytes, base_url: str) -> ApiError:
    if status in (401, 403):  # the agent's key, not the caller's: a gateway-side misconfiguration, as for a provider
        return ApiError(502, f"node agent at {base_url} refused the gateway's credentials ({status}): the "
                             "cluster's api_key is missing or wrong", code="upstream_auth_failed")
    try:
        data = json.loads(raw)
    except ValueError:
        data = {}
    error = data.get("error") if isinstance(data, dict) else None
    error = error if isinstance(error, dict) else {}
    message = (data.get("detail") if isinstance(data, dict) else None) or error.get("message")
    code, param = error.get("code"), error.get("param")
    return ApiError(status, str(message or f"node agent at {base_url} answered {status}"), code=code or "agent_error",
                    param=param if isinstance(param, str) else None)


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


async def open_stream(base_url: str, request: InternalRequest, *, api_key: str | None = None) -> AgentStream:
    """A streamed generation whose first event has arrived; connection failures, and an agent that sends no
    head within the first-byte bound or goes silent before its first event, are :class:`AgentUnreachable`
    (nothing has reached the client: failover may try another node); agent errors (4xx/5xx) are
    :class:`ApiError` with the agent's status."""
    body = request.model_dump(mode="json", exclude_none=True)
    body["stream"] = True  # set on the dump: a model_copy per request costs more than the dump itself
    try:
        resp = await agent_http.stream("POST", _url(base_url, "/agent/v1/generate"), json_body=body,
                                       headers=_auth(api_key), connect_timeout=CONNECT_TIMEOUT_S,
                                       first_byte_timeout=first_byte_seconds(),
                                       idle_timeout=idle_seconds())
    except agent_http.AgentHttpError as exc:
        raise AgentUnreachable(base_url, exc.kind) from None
    try:
        if resp.status >= 400:
            raise _agent_error(resp.status, await resp.read(), base_url)
        lines = resp.lines()
        first_line = ""
        while not first_line.strip():  # blank lines are the agent's keep-alives
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
    """A whole (non-streamed) generation, read as a stream (so the first-byte and idle bounds hold) and folded
    like any other stream (isthmus.services.inference.accumulate.fold). Failures before the first event are
    :class:`AgentUnreachable`; an agent that breaks or goes silent after it is a 502 (not retried on another
    node: it may have done the work); an error event is the agent's error."""
    stream = await open_stream(base_url, request)
    async with stream:
        try:
            return await fold(stream.events(), StreamAccumulator(request.model))
        except AgentStreamBroken as exc:
            raise ApiError(502, f"node agent at {base_url} failed mid-answer: {exc}",
                           code="backend_stream_broken") from None


async def tokenize(base_url: str, request: TokenizeRequest, *, api_key: str | None = None) -> int:
    """Exact prompt tokens with the node's tokenizer and chat template."""
    return (await tokenize_response(base_url, request, api_key=api_key)).prompt_tokens


async def call_json(base_url: str, path: str, body: Any, timeout: float, *,
                    api_key: str | None = None) -> agent_http.Response:
    """A whole JSON call to the agent's ``/agent/v1{path}`` (embeddings): a connection failure is
    :class:`AgentUnreachable` (failover may try another node), an agent error an :class:`ApiError` with its
    status."""
    try:
        resp = await agent_http.request("POST", _url(base_url, "/agent/v1" + path), json_body=body,
                                        headers=_auth(api_key), connect_timeout=CONNECT_TIMEOUT_S, timeout=timeout)
    except agent_http.AgentHttpError as exc:
        raise AgentUnreachable(base_url, exc.kind) from None
    if resp.status >= 400:
        raise _error_body(resp.status, resp.body, base_url)
    return resp


async def tokenize_response(base_url: str, request: TokenizeRequest, *,
                            api_key: str | None = None) -> TokenizeResponse:
    """The node's whole tokenize answer: the exact prompt tokens and what bounds the output (answered at once
    by a live agent: bounded like a generation's first byte)."""
    try:
        resp = await agent_http.request("POST", _url(base_url, "/agent/v1/tokenize"),
                                        json_body=request.model_dump(mode="json", exclude_none=True),
                                        headers=_auth(api_key), connect_timeout=CONNECT_TIMEOUT_S,
                                        timeout=first_byte_seconds())
    except agent_http.AgentHttpError as exc:
        raise AgentUnreachable(base_url, exc.kind) from None
    if resp.status >= 400:
        raise _error_body(resp.status, resp.body, base_url)
    return TokenizeResponse.model_validate_json(resp.body)
