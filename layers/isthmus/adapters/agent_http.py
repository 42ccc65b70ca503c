"""A lean HTTP/1.1 client for the node-agent protocol: keep-alive connections per event loop, JSON bodies,
NDJSON streams.

Why not httpx here: on the request path to a node agent, httpx and httpcore cost ~1.2 ms of CPU per call on
the reference machine (URL and header models, cookies, auth and redirect hooks, h11's pure-Python state
machine), against ~0.1 ms for this, and most of the gateway's own overhead was that. The protocol is ours
and narrow (a JSON request, then a JSON body or a chunked NDJSON stream from uvicorn), so the client only
has to speak that much HTTP/1.1: Content-Length or chunked bodies, keep-alive, TLS for https agents.

A pooled connection that the agent closed while idle is detected before reuse (it reads EOF); a request
that fails on a reused connection before any response byte arrived is sent once more on a fresh one.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
from collections.abc import AsyncGenerator, AsyncIterator
from dataclasses import dataclass
from typing import Any
from urllib.parse import urlsplit

from isthmus.background import per_loop

MAX_IDLE_PER_HOST = 32
MAX_SIZE_LINE = 1024  # a chunk-size line (hex size, maybe extensions) longer than this is not HTTP we speak
READ_BYTES = 1 << 16
_pools: dict[asyncio.AbstractEventLoop, dict[tuple[str, str, int], list[_Conn]]] = {}  # idle connections


class AgentHttpError(Exception):
    """A transport failure talking to an agent; ``kind`` names it for error messages."""

    kind = "TransportError"


class ConnectFailed(AgentHttpError):
    kind = "ConnectError"


class ReadTimedOut(AgentHttpError):
    kind = "ReadTimeout"


class ConnectionLost(AgentHttpError):
    kind = "ReadError"


class _Conn:
    def __init__(self, key: tuple[str, str, int], reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.key, self.reader, self.writer = key, reader, writer
        self.reused = False

    def usable(self) -> bool:
        """Open, not at EOF and with no stray bytes waiting (an idle connection has nothing to read)."""
        stray = bool(getattr(self.reader, "_buffer", b""))
        return not self.writer.is_closing() and not self.reader.at_eof() and not stray

    def close(self) -> None:
        try:
            self.writer.close()
        except RuntimeError:  # its event loop is gone (closed after the request): close the socket itself
            sock = getattr(self.writer.transport, "_sock", None)
            if sock is not None:
                sock.close()


@dataclass
class Response:
    status: int
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


_tls: list[Any] = []


def shared_tls() -> Any:
    """One TLS context for every agent client: a fresh one loads the CA bundle, ~40 ms of CPU on the loop."""
    import ssl  # cold start: only an https agent pays for ssl

    if not _tls:
        _tls.append(ssl.create_default_context())
    return _tls[0]


def _pool() -> dict[tuple[str, str, int], list[_Conn]]:
    return per_loop(_pools, dict)


async def _connect(key: tuple[str, str, int], timeout: float) -> _Conn:
    scheme, host, port = key
    ssl_ctx = None
    if scheme == "https":
        ssl_ctx = shared_tls()
    try:
        reader, writer = await asyncio.wait_for(
            asyncio.open_connection(host, port, ssl=ssl_ctx, limit=1 << 20), timeout)
    except (OSError, TimeoutError, UnicodeError) as exc:  # UnicodeError: a host IDNA cannot encode ("http://.x")
        raise ConnectFailed(f"{type(exc).__name__}: {exc}") from None
    return _Conn(key, reader, writer)


async def _checkout(key: tuple[str, str, int], connect_timeout: float) -> _Conn:
    idle = _pool().get(key, [])
    while idle:
        conn = idle.pop()
        if conn.usable():
            conn.reused = True
            return conn
        conn.close()
    return await _connect(key, connect_timeout)


def _checkin(conn: _Conn) -> None:
    idle = _pool().setdefault(conn.key, [])
    if len(idle) < MAX_IDLE_PER_HOST and conn.usable():
        idle.append(conn)
    else:
        conn.close()


def _target(url: str) -> tuple[tuple[str, str, int], str, str]:
    parts = urlsplit(url)
    scheme = parts.scheme or "http"
    port = parts.port or (443 if scheme == "https" else 80)
    path = parts.path or "/"
    if parts.query:
        path += "?" + parts.query
    return (scheme, parts.hostname or "127.0.0.1", port), parts.netloc, path


class _Exchange:
    """One request on one connection, its response head read."""

    def __init__(self, conn: _Conn, status: int, headers: dict[str, str]) -> None:
        self.conn, self.status, self.headers = conn, status, headers
        self._chunked = headers.get("transfer-encoding", "").lower() == "chunked"
        length = headers.get("content-length")
        self._remaining = int(length) if length is not None and not self._chunked else None
        if status in (204, 304):
            self._remaining = 0  # no body, whatever the headers say
        self.done = False
        self._stray = False

    async def chunks(self, timeout: float) -> AsyncIterator[bytes]:
        reader = self.conn.reader
        try:
            if self._chunked:
                async with contextlib.aclosing(self._dechunked(reader, timeout)) as dechunked:
                    async for data in dechunked:
                        yield data
            elif self._remaining is not None:
                if self._remaining:
                    async with asyncio.timeout(timeout):
                        data = await reader.readexactly(self._remaining)
                    yield data
            else:  # no length: the body runs to the end of the connection
                while True:
                    async with asyncio.timeout(timeout):
                        data = await reader.read(65536)
                    if not data:
                        break
                    yield data
                self.conn.close()
        except TimeoutError:
            raise ReadTimedOut("no data from the agent in time") from None
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError, ValueError) as exc:
            raise ConnectionLost(type(exc).__name__) from None
        self.done = True

    async def _dechunked(self, reader: asyncio.StreamReader, timeout: float) -> AsyncGenerator[bytes, None]:
        """A chunked body, one yield per read from the socket: every chunk that read completed, joined. Two awaits
        (each under its own timeout) per chunk cost more than the rest of a stream's relay; an agent's small
        NDJSON chunks mostly arrive several to a read, and where they split does not matter to the readers."""
        buffer = bytearray()
        while True:
            ready: list[bytes] = []
            start = 0
            while True:
                line_end = buffer.find(b"\r\n", start)
                if line_end < 0:
                    if len(buffer) - start > MAX_SIZE_LINE:
                        raise ValueError("chunk size line too long")
                    break
                size = int(bytes(buffer[start:line_end]).split(b";", 1)[0], 16)
                if size < 0:
                    raise ValueError("negative chunk size")
                data_end = line_end + 2 + size
                if len(buffer) < data_end + 2:
                    break  # this chunk (or its closing CRLF) is still on its way
                if buffer[data_end:data_end + 2] != b"\r\n":
                    raise ValueError("chunk not followed by CRLF")
                if size == 0:  # the last chunk (the agents send no trailers)
                    if ready:
                        yield b"".join(ready)
                    if data_end + 2 < len(buffer):
                        self._stray = True  # bytes past the body: this connection is not reused
                    return
                ready.append(bytes(buffer[line_end + 2:data_end]))
                start = data_end + 2
            del buffer[:start]
            if ready:
                yield b"".join(ready)
            async with asyncio.timeout(timeout):  # no task per read, unlike wait_for
                received = await reader.read(READ_BYTES)
            if not received:
                raise asyncio.IncompleteReadError(bytes(buffer), None)
            buffer += received

    def release(self) -> None:
        """Back to the pool if the body was read whole and the agent keeps the connection; else closed."""
        if self.done and not self._stray and self.headers.get("connection", "").lower() != "close":
            _checkin(self.conn)
        else:
            self.conn.close()


async def _exchange(method: str, url: str, body: bytes | None, headers: dict[str, str] | None,
                    connect_timeout: float, timeout: float) -> _Exchange:
    try:  # a URL that cannot go on the wire as it is (a bad port, a character beyond latin-1) reaches no agent
        key, host, path = _target(url)
        head = [f"{method} {path} HTTP/1.1", f"host: {host}", "accept: */*"]
        for k, v in (headers or {}).items():
            head.append(f"{k}: {v}")
        if body is not None:
            head += ["content-type: application/json", f"content-length: {len(body)}"]
        raw = ("\r\n".join(head) + "\r\n\r\n").encode("latin-1") + (body or b"")
    except ValueError as exc:  # UnicodeEncodeError included
        raise ConnectFailed(f"unusable URL ({type(exc).__name__})") from None
    for attempt in (1, 2):
        conn = await _checkout(key, connect_timeout)
        try:
            conn.writer.write(raw)
            async with asyncio.timeout(timeout):
                status_line = await conn.reader.readuntil(b"\r\n")
                header_block = await conn.reader.readuntil(b"\r\n\r\n")
        except TimeoutError:
            conn.close()
            raise ReadTimedOut("no answer from the agent in time") from None
        except asyncio.CancelledError:
            conn.close()  # the caller went away: the agent sees the disconnect and stops
            raise
        except (OSError, asyncio.IncompleteReadError, asyncio.LimitOverrunError) as exc:
            conn.close()
            if conn.reused and attempt == 1:
                continue  # the agent closed the idle connection as we reused it: nothing was processed
            raise ConnectionLost(type(exc).__name__) from None
        try:
            status = int(status_line.split(b" ", 2)[1])
        except (IndexError, ValueError):
            conn.close()
            raise ConnectionLost("RemoteProtocolError") from None
        parsed: dict[str, str] = {}
        for line in header_block.decode("latin-1").split("\r\n"):
            name, sep, value = line.partition(":")
            if sep:
                parsed[name.strip().lower()] = value.strip()
        return _Exchange(conn, status, parsed)
    raise AssertionError("unreachable")


async def request(method: str, url: str, *, json_body: Any = None, body: bytes | None = None,
                  headers: dict[str, str] | None = None, connect_timeout: float = 2.0,
                  timeout: float = 30.0) -> Response:
    """A whole request and response."""
    if json_body is not None:
        body = json.dumps(json_body, separators=(",", ":")).encode()
    ex = await _exchange(method, url, body, headers, connect_timeout, timeout)
    try:
        data = b"".join([chunk async for chunk in ex.chunks(timeout)])
    finally:
        ex.release()
    return Response(ex.status, ex.headers, data)


class StreamResponse:
    """A response whose body is read as it comes; ``aclose`` before the end drops the connection, which is
    how the agent learns that the caller has gone. ``idle_timeout`` bounds the wait for each next chunk (the
    agent sends a blank keep-alive line while it has nothing else to say, so silence means it is stuck)."""

    def __init__(self, ex: _Exchange, idle_timeout: float) -> None:
        self._ex, self._timeout = ex, idle_timeout
        self.status, self.headers = ex.status, ex.headers
        self._closed = False

    async def lines(self) -> AsyncIterator[str]:
        buffer = b""
        async for chunk in self._ex.chunks(self._timeout):
            buffer += chunk
            *complete, buffer = buffer.split(b"\n")
            for line in complete:
                yield line.decode()
        if buffer:
            yield buffer.decode()

    async def read(self) -> bytes:
        return b"".join([chunk async for chunk in self._ex.chunks(self._timeout)])

    async def aclose(self) -> None:
        if not self._closed:
            self._closed = True
            self._ex.release()


async def stream(method: str, url: str, *, json_body: Any, headers: dict[str, str] | None = None,
                 connect_timeout: float = 2.0, first_byte_timeout: float = 10.0,
                 idle_timeout: float = 20.0) -> StreamResponse:
    """A streamed request: the response head must arrive within ``first_byte_timeout`` (the agent answers it
    as soon as the request is queued), then every chunk within ``idle_timeout`` of the one before
    (:class:`ReadTimedOut` otherwise)."""
    body = json.dumps(json_body, separators=(",", ":")).encode()
    ex = await _exchange(method, url, body, headers, connect_timeout, first_byte_timeout)
    return StreamResponse(ex, idle_timeout)
