"""The cloud providers' HTTP/1.1 transport (isthmus.adapters.cloud.lean_http) against a scripted HTTP server on
loopback: keep-alive reuse, a connection the server closed while idle, bodies by length, chunked (streamed as they
arrive) and until close, interim responses, and the httpx errors the cloud transport maps (timeouts, a cut body,
a full pool); what it does not handle (a multipart upload) goes to httpx's own transport."""

from __future__ import annotations

import asyncio
import socket
import struct
from collections.abc import Awaitable, Callable

import httpx
import pytest

from isthmus.adapters.cloud import transport
from isthmus.adapters.cloud.lean_http import LeanTransport
from isthmus.ports.providers import ProviderTarget
from local_runtime.ddb import free_port
from tests.support.loopback_server import read_http_request

pytestmark = pytest.mark.integration
Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter, bytes], Awaitable[bool]]
TIMEOUT = httpx.Timeout(connect=2.0, read=2.0, write=2.0, pool=2.0)


async def _read_request(reader: asyncio.StreamReader) -> bytes | None:
    """One request (head and a Content-Length body) as bytes; None at the connection's end."""
    request = await read_http_request(reader)
    return None if request is None else request[0] + request[1]


class Server:
    """Answers each request with ``handler`` (which returns whether to keep the connection); counts connections
    and requests."""

    def __init__(self, handler: Handler) -> None:
        self.handler = handler
        self.connections = 0
        self.requests: list[bytes] = []
        self.writers: list[asyncio.StreamWriter] = []

    async def __aenter__(self) -> str:
        self.server = await asyncio.start_server(self._serve, "127.0.0.1", 0)
        return f"http://127.0.0.1:{self.server.sockets[0].getsockname()[1]}"

    async def __aexit__(self, *exc: object) -> None:
        for writer in self.writers:
            writer.close()
        self.server.close()
        await asyncio.sleep(0.01)  # the handlers see their connections end (not cancelled at the loop's end)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self.connections += 1
        self.writers.append(writer)
        while (request := await _read_request(reader)) is not None and not writer.is_closing():
            self.requests.append(request)
            if not await self.handler(reader, writer, request):
                break
        writer.close()


def ok(body: bytes = b'{"ok":true}') -> Handler:
    async def answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/json\r\ncontent-length: %d\r\n\r\n%s"
                     % (len(body), body))
        await writer.drain()
        return True

    return answer


def client() -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=LeanTransport(), timeout=TIMEOUT)


def test_requests_share_one_kept_alive_connection_and_arrive_whole() -> None:
    async def run() -> None:
        server = Server(ok())
        async with server as base, client() as c:
            # when three requests are sent one after the other
            answers = [await c.post(f"{base}/v1/messages?x=1", json={"n": i}) for i in range(3)]
        # then each is answered, all over one connection, each request with its body and query intact
        assert [a.json() for a in answers] == [{"ok": True}] * 3
        assert server.connections == 1 and len(server.requests) == 3
        assert server.requests[2].startswith(b"POST /v1/messages?x=1 HTTP/1.1\r\n")
        assert server.requests[2].endswith(b'{"n":2}')

    asyncio.run(run())


@pytest.mark.parametrize("reset", [False, True])
def test_a_connection_the_server_closed_while_idle_is_replaced_once(reset: bool) -> None:
    async def close_after_answer(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, req: bytes) -> bool:
        await ok()(reader, writer, req)
        if reset:  # an abortive close: the client's next read on it is a connection reset
            writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
        return False  # closes without saying so (no Connection: close): the client finds out on its next request

    async def run() -> None:
        server = Server(close_after_answer)
        async with server as base, client() as c:
            first = await c.post(f"{base}/a", json={})
            await asyncio.sleep(0.05)  # the close reaches the client's idle connection
            # when the next request is sent
            second = await c.post(f"{base}/b", json={})
        # then it is answered on a new connection, sent once
        assert first.status_code == second.status_code == 200
        assert server.connections == 2 and len(server.requests) == 2

    asyncio.run(run())


def test_a_chunked_stream_arrives_chunk_by_chunk() -> None:
    got_first = asyncio.Event()

    async def chunked(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: text/event-stream\r\ntransfer-encoding: chunked\r\n\r\n"
                     b"8\r\ndata: 1\n\r\n")
        await writer.drain()
        await asyncio.wait_for(got_first.wait(), 5)  # the rest only once the client has the first chunk
        writer.write(b"8\r\ndata: 2\n\r\n0\r\n\r\n")
        await writer.drain()
        return True

    async def run() -> None:
        server = Server(chunked)
        async with server as base, client() as c, c.stream("POST", f"{base}/s", json={}) as resp:
            chunks = []
            async for chunk in resp.aiter_bytes():
                chunks.append(chunk)
                got_first.set()
            again = await c.post(f"{base}/s2", json={})  # (answered by the same handler: a second stream)
        # then the first chunk came before the server sent the second, and the connection was kept
        assert chunks == [b"data: 1\n", b"data: 2\n"] and again.text == "data: 1\ndata: 2\n"
        assert server.connections == 1

    asyncio.run(run())


def test_a_body_until_close_and_interim_responses() -> None:
    async def until_close(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200 OK\r\nconnection: close\r\n\r\nall of it")
        await writer.drain()
        return False

    async def run() -> None:
        server = Server(until_close)
        async with server as base, client() as c:
            answers = [await c.post(f"{base}/c", json={}) for _ in range(2)]
        # then the body is what came before the close, the interim 100 skipped, and no connection reused
        assert [(a.status_code, a.text) for a in answers] == [(200, "all of it")] * 2
        assert server.connections == 2

    asyncio.run(run())


def test_a_cut_body_a_silent_server_and_a_full_pool_raise_httpx_errors() -> None:
    release = asyncio.Event()

    async def faulty(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        if b"/cut" in request:
            writer.write(b"HTTP/1.1 200 OK\r\ncontent-length: 100\r\n\r\npartial")
            await writer.drain()
            return False
        await asyncio.wait_for(release.wait(), 5)  # /silent: no answer until the test is done
        return False

    async def run() -> None:
        async with Server(faulty) as base:
            short = httpx.Timeout(connect=2.0, read=0.2, write=2.0, pool=0.2)
            async with httpx.AsyncClient(transport=LeanTransport(max_connections=1), timeout=short) as c:
                with pytest.raises(httpx.RemoteProtocolError):
                    await c.post(f"{base}/cut", json={})
                with pytest.raises(httpx.ReadTimeout):
                    await c.post(f"{base}/silent", json={})
                async with c.stream("POST", f"{base}/cut", json={}) as held:  # holds the one connection
                    assert held.status_code == 200
                    with pytest.raises(httpx.PoolTimeout):
                        await c.post(f"{base}/cut", json={})
            release.set()
        async with client() as c:
            with pytest.raises(httpx.ConnectError):  # nothing listens there
                await c.get(f"http://127.0.0.1:{free_port()}/")

    asyncio.run(run())


def test_a_multipart_upload_goes_through_httpx_own_transport() -> None:
    async def run() -> None:
        server = Server(ok(b"{}"))
        async with server as base, client() as c:
            # when a file is uploaded as multipart (a body httpx streams, not one in memory)
            resp = await c.post(f"{base}/files", files={"file": ("a.jsonl", b'{"x":1}\n')}, data={"purpose": "batch"})
        # then it arrives whole
        assert resp.status_code == 200 and b'{"x":1}' in server.requests[0] and b"purpose" in server.requests[0]

    asyncio.run(run())


def test_the_cloud_transport_sends_what_httpx_sends_and_keeps_cookies() -> None:
    async def with_cookie(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        writer.write(b"HTTP/1.1 200 OK\r\nset-cookie: lb=one; Path=/\r\ncontent-length: 2\r\n\r\n{}")
        await writer.drain()
        return True

    def head_and_body(raw: bytes) -> tuple[set[bytes], bytes]:
        head, _, body = raw.partition(b"\r\n\r\n")
        return {line.lower() for line in head.split(b"\r\n")[1:]}, body

    async def run() -> None:
        server = Server(with_cookie)
        async with server as base:
            target = ProviderTarget(provider_id=f"lean-{base}", protocol="anthropic", api_base=f"{base}/v1",
                                    alias="a", upstream_model="m", headers={"x-extra": "1"})
            body = {"model": "m", "messages": [{"role": "user", "content": "café"}]}
            # when the cloud transport posts twice (the lean path, then through the client: a cookie came back)
            for _ in range(2):
                resp = await transport.send(target, "/messages", body, {"x-api-key": "k"})
                await resp.aread()
                await resp.aclose()
            # and httpx's own client posts the same
            async with httpx.AsyncClient() as plain:
                await plain.post(f"{base}/v1/messages", json=body, headers={"x-extra": "1", "x-api-key": "k"})
        lean, via_client, reference = (head_and_body(r) for r in server.requests)
        # then the lean request is byte for byte httpx's (headers in any order), and the cookie is sent back
        assert lean == reference
        assert via_client[0] - reference[0] == {b"cookie: lb=one"} and via_client[1] == reference[1]

    asyncio.run(run())


@pytest.mark.parametrize("reset", [False, True])
def test_a_kept_alive_connection_closed_as_the_request_arrives_is_tried_once_more(reset: bool) -> None:
    served: dict[asyncio.StreamWriter, int] = {}

    async def second_dropped(reader: asyncio.StreamReader, writer: asyncio.StreamWriter, request: bytes) -> bool:
        served[writer] = served.get(writer, 0) + 1
        if served[writer] == 2:  # the keep-alive race: the server closes just as the next request arrives
            if reset:
                writer.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_LINGER,
                                                           struct.pack("ii", 1, 0))
            return False
        return await ok()(reader, writer, request)

    async def run() -> None:
        server = Server(second_dropped)
        async with server as base, client() as c:
            # when a second request goes out on the kept-alive connection, which the server then drops unanswered
            answers = [await c.post(f"{base}/r", json={}) for _ in range(2)]
        # then it is sent once more, on a new connection, and answered
        assert [a.status_code for a in answers] == [200, 200]
        assert server.connections == 2 and len(server.requests) == 3

    asyncio.run(run())
