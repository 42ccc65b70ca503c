"""The lean agent HTTP client against real loopback servers: whole bodies, chunked NDJSON streams, keep-alive
reuse, an idle connection the server closed, early close of a stream, refused connections and timeouts."""

from __future__ import annotations

import asyncio
import json
from collections.abc import Awaitable, Callable

import pytest

from isthmus.adapters import agent_http
from tests.support.loopback_server import read_http_request

Handler = Callable[[asyncio.StreamReader, asyncio.StreamWriter], Awaitable[None]]


async def read_request(reader: asyncio.StreamReader) -> tuple[str, bytes] | None:
    request = await read_http_request(reader)
    return None if request is None else (request[0].split(b" ")[1].decode(), request[1])


def respond(body: bytes, status: int = 200, extra: str = "") -> bytes:
    return (f"HTTP/1.1 {status} OK\r\ncontent-type: application/json\r\ncontent-length: {len(body)}\r\n{extra}\r\n"
            ).encode() + body


async def serve(handler: Handler) -> tuple[asyncio.Server, str]:
    server = await asyncio.start_server(handler, "127.0.0.1", 0)
    port = server.sockets[0].getsockname()[1]
    return server, f"http://127.0.0.1:{port}"


def test_json_requests_reuse_one_keep_alive_connection() -> None:
    connections: list[int] = []

    async def echo(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while (req := await read_request(reader)) is not None:
            path, body = req
            writer.write(respond(json.dumps({"path": path, "got": json.loads(body)}).encode()))
            await writer.drain()
        writer.close()

    async def scenario() -> list[dict[str, object]]:
        server, base = await serve(echo)
        async with server:
            # when three requests go to the same agent one after another
            return [(await agent_http.request("POST", f"{base}/agent/v1/x?q=1", json_body={"n": n})).json()
                    for n in range(3)]

    answers = asyncio.run(scenario())
    # then each got its own answer, over a single connection
    assert answers == [{"path": "/agent/v1/x?q=1", "got": {"n": n}} for n in range(3)]
    assert len(connections) == 1


def test_chunked_ndjson_stream_is_read_line_by_line() -> None:
    async def ndjson(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n")
        for piece in (b'{"a": 1}\n{"b"', b': 2}\n', b'{"c": 3}\n'):
            writer.write(f"{len(piece):x}\r\n".encode() + piece + b"\r\n")
            await writer.drain()
            await asyncio.sleep(0.01)
        writer.write(b"0\r\n\r\n")
        await writer.drain()

    async def scenario() -> list[str]:
        server, base = await serve(ndjson)
        async with server:
            resp = await agent_http.stream("POST", f"{base}/agent/v1/generate", json_body={})
            lines = [line async for line in resp.lines()]
            await resp.aclose()
            return lines

    # then lines split across chunks come out whole
    assert asyncio.run(scenario()) == ['{"a": 1}', '{"b": 2}', '{"c": 3}']


def test_an_idle_connection_the_server_closed_is_replaced_transparently() -> None:
    served = 0

    async def one_shot(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        nonlocal served
        await read_request(reader)
        served += 1
        writer.write(respond(b'{"ok": true}'))  # keep-alive promised, then the server closes anyway
        await writer.drain()
        writer.close()

    async def scenario() -> list[int]:
        server, base = await serve(one_shot)
        async with server:
            first = await agent_http.request("GET", f"{base}/agent/v1/status")
            await asyncio.sleep(0.05)
            second = await agent_http.request("GET", f"{base}/agent/v1/status")
            return [first.status, second.status]

    assert asyncio.run(scenario()) == [200, 200]
    assert served == 2


def test_closing_a_stream_early_drops_the_connection() -> None:
    async def scenario() -> bool:
        saw_eof = asyncio.Event()

        async def endless(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
            await read_request(reader)
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            writer.write(b"6\r\n{\"a\":1\r\n")
            await writer.drain()
            # the agent sees the caller go when its socket reads EOF
            if await reader.read(1) == b"":
                saw_eof.set()

        server, base = await serve(endless)
        async with server:
            resp = await agent_http.stream("POST", f"{base}/agent/v1/generate", json_body={})
            await resp.aclose()
            await asyncio.wait_for(saw_eof.wait(), 5)
            return saw_eof.is_set()

    assert asyncio.run(scenario())


def test_refused_connection_and_silent_agent_are_typed_errors() -> None:
    async def silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await asyncio.sleep(10)

    async def scenario() -> None:
        server, base = await serve(silent)
        port = int(base.rsplit(":", 1)[1])
        async with server:
            with pytest.raises(agent_http.ReadTimedOut):
                await agent_http.request("GET", f"{base}/agent/v1/status", timeout=0.2)
        server.close()
        await server.wait_closed()
        with pytest.raises(agent_http.ConnectFailed):
            await agent_http.request("GET", f"http://127.0.0.1:{port}/agent/v1/status", timeout=0.2)

    asyncio.run(scenario())


def test_chunk_framing_split_anywhere_across_reads_is_reassembled() -> None:
    # given a chunked body written a few bytes at a time (sizes, data and CRLFs cut mid-way), several chunks in
    # one write, and a chunk extension
    lines = [json.dumps({"n": n, "text": "x" * n}).encode() + b"\n" for n in range(12)]
    framed = b"".join(f"{len(line):x}{';ext=1' if n == 3 else ''}\r\n".encode() + line + b"\r\n"
                      for n, line in enumerate(lines)) + b"0\r\n\r\n"
    connections: list[int] = []

    async def dribble(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        connections.append(1)
        while await read_request(reader) is not None:
            writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n")
            for i in range(0, len(framed), 7):
                writer.write(framed[i:i + 7])
                await writer.drain()
                await asyncio.sleep(0)
        writer.close()

    async def scenario() -> list[list[str]]:
        server, base = await serve(dribble)
        async with server:
            read = []
            for _ in range(2):
                resp = await agent_http.stream("POST", f"{base}/agent/v1/generate", json_body={})
                read.append([line async for line in resp.lines()])
                await resp.aclose()
            return read

    # when it is read twice as a stream
    first, second = asyncio.run(scenario())
    # then every line comes out whole and in order, and the connection was reused (the body ended where it should)
    assert first == second == [line.decode().rstrip("\n") for line in lines]
    assert len(connections) == 1


@pytest.mark.parametrize("framing", [b"zz\r\nabc\r\n0\r\n\r\n", b"3\r\nabcXY0\r\n\r\n", b"3\r\nab"])
def test_broken_chunk_framing_is_a_lost_connection(framing: bytes) -> None:
    async def broken(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n" + framing)
        await writer.drain()
        writer.close()

    async def scenario() -> None:
        server, base = await serve(broken)
        async with server:
            resp = await agent_http.stream("POST", f"{base}/agent/v1/generate", json_body={})
            try:
                [line async for line in resp.lines()]
            finally:
                await resp.aclose()

    # given a bad size line, a chunk not closed by CRLF, or a body cut short, then the read fails as a lost link
    with pytest.raises(agent_http.ConnectionLost):
        asyncio.run(scenario())
