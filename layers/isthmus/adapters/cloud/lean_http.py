"""LeanTransport: an httpx transport for the cloud providers' HTTP/1.1 calls, over asyncio streams and httptools'
C response parser, with a keep-alive pool.

Why: httpx's default transport (httpcore + h11 + anyio) cost ~0.35-0.6 ms of CPU and 1-1.5 ms of wall time per
call to a loopback upstream on this 2-core VM, a raw asyncio exchange ~0.03 ms and ~0.2 ms (bench/ab_edges.py and
the figures in the README): the largest part of what a cloud alias added over calling its provider directly.

Same contract as httpx's transport: httpx ``Request`` in, httpx ``Response`` with a streamed body out; the
request's timeouts (connect, read: per read, write, pool) are honoured and raise httpx's own exceptions
(``ConnectTimeout``, ``ReadTimeout``, ``ConnectError``, ``ReadError``, ``RemoteProtocolError``, ``PoolTimeout``),
so the cloud transport's retry and error mapping do not change. The request is written in one write (head and
body together: no extra segment). What it does not do goes to the default transport, unchanged: HTTP/2, bodies
that are not in memory (multipart uploads), HEAD, CONNECT and upgrades, schemes other than http(s).
"""

from __future__ import annotations

import asyncio
import json
import ssl
import time
from collections.abc import AsyncIterator
from typing import Any

import httptools
import httpx

KEEPALIVE_EXPIRY_S = 5.0  # as httpcore: many servers close idle keep-alive connections after 5 s (uvicorn's default)
_READ_SIZE = 65536
_LEAN_METHODS = frozenset({"GET", "POST", "PUT", "PATCH", "DELETE", "OPTIONS"})


class _Exchange:
    """httptools callbacks of one response (interim 1xx responses are skipped)."""

    def __init__(self) -> None:
        self.headers: list[tuple[bytes, bytes]] = []
        self.head_done = False
        self.chunks: list[bytes] = []
        self.complete = False
        self.status = 0
        self.keep_alive = False
        self.parser = httptools.HttpResponseParser(self)

    def on_header(self, name: bytes, value: bytes) -> None:
        self.headers.append((name, value))

    def on_headers_complete(self) -> None:
        self.status = self.parser.get_status_code()
        if self.status >= 200:
            self.head_done = True
            self.keep_alive = self.parser.should_keep_alive()  # (read here: the parser forgets it once done)

    def on_body(self, body: bytes) -> None:
        self.chunks.append(body)

    def on_message_complete(self) -> None:
        if self.status >= 200:
            self.complete = True
        else:  # an interim response (100, 103): the real one follows on the same connection
            self.headers, self.status = [], 0

    def feed(self, data: bytes, request: httpx.Request) -> None:
        try:
            self.parser.feed_data(data)
        except httptools.HttpParserUpgrade:
            raise httpx.RemoteProtocolError("upstream switched protocols", request=request) from None
        except httptools.HttpParserError as exc:
            raise httpx.RemoteProtocolError(f"malformed HTTP response ({exc})", request=request) from None

    def reads_until_close(self) -> bool:
        """A body delimited by the connection's end (no length, not chunked)."""
        names = {name.lower() for name, _ in self.headers}
        return (b"content-length" not in names and b"transfer-encoding" not in names
                and self.status not in (204, 304))


class _Connection:
    def __init__(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.reader, self.writer = reader, writer
        self.idle_since = time.monotonic()
        self.reused = False

    def open(self) -> bool:
        return not self.writer.is_closing() and not self.reader.at_eof()

    def close(self) -> None:
        self.writer.close()  # no wait for the close handshake: nothing more is read from it


def _timeout(request: httpx.Request, which: str) -> float | None:
    value = (request.extensions.get("timeout") or {}).get(which)
    return float(value) if value is not None else None


class _Body(httpx.AsyncByteStream):
    """The response body, read as it arrives; on close the connection goes back to the pool when the answer was
    read to its end and may be kept alive, else it is closed."""

    def __init__(self, transport: LeanTransport, key: tuple[str, str, int], conn: _Connection,
                 exchange: _Exchange, request: httpx.Request) -> None:
        self.transport, self.key, self.conn, self.exchange, self.request = transport, key, conn, exchange, request
        self.until_close = exchange.reads_until_close()
        self.closed = False

    async def __aiter__(self) -> AsyncIterator[bytes]:
        exchange = self.exchange
        read_timeout = _timeout(self.request, "read")
        while True:
            if exchange.chunks:
                chunks, exchange.chunks = exchange.chunks, []
                yield chunks[0] if len(chunks) == 1 else b"".join(chunks)
            if exchange.complete:
                return
            data = await _read(self.conn, read_timeout, self.request)
            if not data:
                if self.until_close:
                    exchange.complete = True
                    continue
                raise httpx.RemoteProtocolError("peer closed connection without sending complete message body",
                                                request=self.request)
            exchange.feed(data, self.request)

    async def aclose(self) -> None:
        if self.closed:
            return
        self.closed = True
        keep = (self.exchange.complete and not self.exchange.chunks and not self.until_close
                and self.exchange.keep_alive)
        self.transport._done(self.key, self.conn, keep=keep)


async def _read(conn: _Connection, timeout: float | None, request: httpx.Request) -> bytes:
    try:
        async with asyncio.timeout(timeout):
            return await conn.reader.read(_READ_SIZE)
    except TimeoutError:
        raise httpx.ReadTimeout("timed out reading the response", request=request) from None
    except OSError as exc:
        raise httpx.ReadError(str(exc) or type(exc).__name__, request=request) from None


class LeanTransport(httpx.AsyncBaseTransport):
    def __init__(self, *, max_connections: int = 200, max_keepalive_connections: int = 50,
                 fallback: httpx.AsyncBaseTransport | None = None) -> None:
        self._slots = asyncio.Semaphore(max_connections)  # requests in flight, each on its own connection
        self._max_idle = max_keepalive_connections
        self._idle: dict[tuple[str, str, int], list[_Connection]] = {}
        self._idle_count = 0
        self._ssl: ssl.SSLContext | None = None
        self._fallback = fallback or httpx.AsyncHTTPTransport(
            limits=httpx.Limits(max_connections=max_connections, max_keepalive_connections=max_keepalive_connections))

    @staticmethod
    def handles(request: httpx.Request) -> bool:
        return (request.url.scheme in ("http", "https") and request.method in _LEAN_METHODS
                and isinstance(request.stream, httpx.ByteStream) and "upgrade" not in request.headers)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if not self.handles(request):
            return await self._fallback.handle_async_request(request)
        url = request.url
        key = (url.scheme, url.host, url.port or (443 if url.scheme == "https" else 80))
        try:
            async with asyncio.timeout(_timeout(request, "pool")):
                await self._slots.acquire()
        except TimeoutError:
            raise httpx.PoolTimeout("no connection free within the pool timeout", request=request) from None
        try:
            return await self._exchange(request, key, self._head(request) + request.content)
        except BaseException:
            self._slots.release()
            raise

    async def _exchange(self, request: httpx.Request, key: tuple[str, str, int], data: bytes) -> httpx.Response:
        while True:
            conn = self._take_idle(key) or await self._connect(request, key)
            try:
                exchange = await self._send(conn, request, data)
            except BaseException as exc:
                conn.close()
                # A kept-alive connection the server closed while it was idle: the request never reached it.
                if conn.reused and isinstance(exc, _ClosedBeforeAnswer):
                    continue
                if isinstance(exc, _ClosedBeforeAnswer):
                    raise httpx.RemoteProtocolError("Server disconnected without sending a response.",
                                                    request=request) from None
                raise
            stream = _Body(self, key, conn, exchange, request)
            return httpx.Response(exchange.status, headers=exchange.headers, stream=stream,
                                  extensions={"http_version": b"HTTP/1.1"})

    @staticmethod
    def _head(request: httpx.Request) -> bytes:
        lines = [b"%s %s HTTP/1.1" % (request.method.encode("ascii"), request.url.raw_path)]
        lines += [b"%s: %s" % (name, value) for name, value in request.headers.raw]
        return b"\r\n".join(lines) + b"\r\n\r\n"

    async def _send(self, conn: _Connection, request: httpx.Request, data: bytes) -> _Exchange:
        conn.writer.write(data)
        if conn.writer.transport.get_write_buffer_size():
            try:
                async with asyncio.timeout(_timeout(request, "write")):
                    await conn.writer.drain()
            except TimeoutError:
                raise httpx.WriteTimeout("timed out writing the request", request=request) from None
            except OSError as exc:
                raise httpx.WriteError(str(exc) or type(exc).__name__, request=request) from None
        exchange = _Exchange()
        read_timeout = _timeout(request, "read")
        received = False
        while not exchange.head_done:
            try:
                chunk = await _read(conn, read_timeout, request)
            except httpx.ReadError:  # reset before a byte of the answer: as closed (a stale kept-alive connection)
                if received:
                    raise
                raise _ClosedBeforeAnswer() from None
            if not chunk:
                if not received:
                    raise _ClosedBeforeAnswer()
                raise httpx.RemoteProtocolError("peer closed connection in the middle of the response head",
                                                request=request)
            received = True
            exchange.feed(chunk, request)
        return exchange

    async def _connect(self, request: httpx.Request, key: tuple[str, str, int]) -> _Connection:
        scheme, host, port = key
        context = None
        if scheme == "https":
            if self._ssl is None:
                self._ssl = httpx.create_ssl_context()
            context = self._ssl
        try:
            async with asyncio.timeout(_timeout(request, "connect")):
                reader, writer = await asyncio.open_connection(
                    host, port, ssl=context, server_hostname=host if context else None, limit=2 ** 20)
        except TimeoutError:
            raise httpx.ConnectTimeout(f"timed out connecting to {host}:{port}", request=request) from None
        except OSError as exc:  # refused, unreachable, DNS, TLS (ssl.SSLError is an OSError)
            raise httpx.ConnectError(str(exc) or type(exc).__name__, request=request) from None
        return _Connection(reader, writer)

    def _take_idle(self, key: tuple[str, str, int]) -> _Connection | None:
        idle = self._idle.get(key)
        while idle:
            conn = idle.pop()
            self._idle_count -= 1
            if conn.open() and time.monotonic() - conn.idle_since < KEEPALIVE_EXPIRY_S:
                conn.reused = True
                return conn
            conn.close()
        return None

    def _done(self, key: tuple[str, str, int], conn: _Connection, *, keep: bool) -> None:
        self._slots.release()
        if not keep or self._idle_count >= self._max_idle or not conn.open():
            conn.close()
            return
        conn.idle_since = time.monotonic()
        self._idle.setdefault(key, []).append(conn)
        self._idle_count += 1

    async def aclose(self) -> None:
        for conns in self._idle.values():
            for conn in conns:
                conn.close()
        self._idle.clear()
        self._idle_count = 0
        await self._fallback.aclose()


    async def post(self, client: httpx.AsyncClient, url: str, body: Any, content: bytes | None,
                   headers: dict[str, str], timeout: httpx.Timeout) -> httpx.Response:
        """``client.send(client.build_request("POST", url, json=body or content=content, ...), stream=True)``
        without the client's layers (auth, redirects, hooks, URL merging: a third of the cost of a call), for a
        client that adds nothing to it but its default headers (:func:`direct`)."""
        if content is None:  # as httpx encodes ``json=``
            content = json.dumps(body, ensure_ascii=False, separators=(",", ":"), allow_nan=False).encode()
            headers = {**headers, "Content-Type": "application/json"}
        merged = client.headers.copy()
        merged.update(headers)
        request = httpx.Request("POST", _url(url), content=content, headers=merged,
                                extensions={"timeout": timeout.as_dict()})
        response = await self.handle_async_request(request)
        response.request = request
        if "set-cookie" in response.headers:  # kept as the client would (then it goes through the client)
            client.cookies.extract_cookies(response)
        return response


_URLS: dict[str, httpx.URL] = {}


def _url(url: str) -> httpx.URL:
    """Parsed once per provider endpoint (parsing is a tenth of a call's cost)."""
    parsed = _URLS.get(url)
    if parsed is None:
        if len(_URLS) >= 1024:
            _URLS.clear()
        parsed = _URLS[url] = httpx.URL(url)
    return parsed


def direct(client: httpx.AsyncClient, url: str) -> LeanTransport | None:
    """The lean transport ``client`` sends ``url`` through, when the client adds nothing but its default headers
    (no cookies to send, no proxy for this URL, no auth, no event hooks); else None (send through the client)."""
    try:
        transport = client._transport_for_url(_url(url))  # a proxy from the environment, or the client's own
    except Exception:  # an httpx without it: the client's path
        return None
    if (not isinstance(transport, LeanTransport) or client.cookies or client.auth is not None
            or any(client.event_hooks.values())):
        return None
    return transport


class _ClosedBeforeAnswer(Exception):
    """The connection ended before a single byte of the response."""
