"""Time bounds without a process in the way: the routing snapshot's liveness clock, the agent client's first-byte
and idle bounds against real loopback servers (keep-alive lines, silence, a non-streamed answer read as a
stream), and failover's 503s (Retry-After; ``model_loading`` when every node is loading)."""

from __future__ import annotations

import asyncio
import json
import time
from datetime import UTC, datetime
from typing import Any

import pytest

from isthmus.adapters import agent_http, agent_stream
from isthmus.backends.first_byte import first_connecting
from isthmus.control.models import Cluster, GlobalSettings, Node, Pool
from isthmus.errors import AgentUnreachable, ApiError
from isthmus.routing.affinity import NodeTracker
from isthmus.routing.failover import NoNodeAvailable
from isthmus.routing.resolver import NodeTarget, resolve
from isthmus.services.inference.routing import RoutingService
from isthmus_contracts.control import NodeLoad
from isthmus_contracts.internal import InternalRequest, Message, TextPart
from tests.unit.test_agent_http import read_request, serve


# ---- the routing snapshot ------------------------------------------------------------------------------------
class HeartbeatingStore:
    """One node whose heartbeat is always fresh at read time (as a live agent's is); counts reads."""

    def __init__(self) -> None:
        self.reads = 0

    def list_clusters(self) -> list[Cluster]:
        pool = Pool(alias="chat", model="m", nodes=["n1"], loaded_at=datetime(2026, 1, 1, tzinfo=UTC))
        return [Cluster(cluster_id="lab", pools={"chat": pool})]

    def list_nodes(self) -> list[Node]:
        self.reads += 1
        return [Node(node_id="n1", cluster_id="lab", base_url="http://n1", load=NodeLoad(loaded_model="m"),
                     last_seen=datetime.now(UTC))]

    def get_settings(self) -> GlobalSettings:
        return GlobalSettings()


class NoCatalog:
    def owners(self) -> dict[str, str]:
        return {}


def routing(store: HeartbeatingStore, cache_seconds: float) -> RoutingService:
    return RoutingService(store, None, catalog=NoCatalog(), cache_seconds=cache_seconds)  # type: ignore[arg-type]


def test_a_snapshot_older_than_the_stale_limit_is_read_again_not_judged_down(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_NODE_STALE_SECONDS", "0.3")
    store = HeartbeatingStore()
    svc = routing(store, cache_seconds=0.05)

    async def scenario() -> list[int]:
        assert resolve(await svc.snapshot(), "chat").nodes  # given a snapshot read while the node heartbeats
        await asyncio.sleep(0.5)  # when idle for longer than the stale limit
        snap = await svc.snapshot()
        return [len(resolve(snap, "chat").nodes), store.reads]

    # then the next request sees the node up, from a snapshot read again
    assert asyncio.run(scenario()) == [1, 2]


def test_a_snapshot_served_stale_judges_liveness_at_its_read_time(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_NODE_STALE_SECONDS", "0.6")  # serve stale for up to 0.2 s
    store = HeartbeatingStore()
    svc = routing(store, cache_seconds=0.01)

    async def scenario() -> tuple[datetime, datetime, int]:
        first = await svc.snapshot()
        await asyncio.sleep(0.05)
        again = await svc.snapshot()  # past the cache time, within the serve-stale window: served as it was read
        await asyncio.sleep(0.05)  # the background refresh
        return first.now, again.now, store.reads

    first_now, again_now, reads = asyncio.run(scenario())
    assert again_now == first_now and reads == 2


# ---- the agent client's bounds -------------------------------------------------------------------------------
HEAD = b"HTTP/1.1 200 OK\r\ncontent-type: application/x-ndjson\r\ntransfer-encoding: chunked\r\n\r\n"


def chunk(data: bytes) -> bytes:
    return f"{len(data):x}\r\n".encode() + data + b"\r\n"


def event_lines(*events: dict[str, Any]) -> bytes:
    return b"".join(json.dumps(e).encode() + b"\n" for e in events)


START = {"type": "start", "id": "g1", "model": "m", "created": 1, "prompt_tokens": 3}
REQUEST = InternalRequest(model="m", messages=[Message(role="user", content=[TextPart(text="hi")])])


def bounds(monkeypatch: pytest.MonkeyPatch, first_byte: float, idle: float) -> None:
    monkeypatch.setenv("ISTHMUS_AGENT_FIRST_BYTE_SECONDS", str(first_byte))
    monkeypatch.setenv("ISTHMUS_AGENT_IDLE_SECONDS", str(idle))


def test_an_agent_that_never_answers_is_unreachable_within_the_first_byte_bound(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bounds(monkeypatch, first_byte=0.3, idle=30)

    async def frozen(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(30)  # accepted, never answered: what a SIGSTOPped agent looks like

    async def scenario() -> float:
        server, base = await serve(frozen)
        async with server:
            started = time.monotonic()
            with pytest.raises(AgentUnreachable):
                await agent_stream.open_stream(base, REQUEST)
            return time.monotonic() - started

    assert asyncio.run(scenario()) < 10  # the bound is 0.3 s; the old one was 300 s


def test_keep_alive_lines_carry_a_slow_prefill_past_the_idle_bound_and_silence_breaks_the_stream(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bounds(monkeypatch, first_byte=5, idle=0.4)

    async def slow_then_silent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD)
        for _ in range(6):  # 1.2 s of "prefill": only blank keep-alive lines, each well within the idle bound
            writer.write(chunk(b"\n"))
            await writer.drain()
            await asyncio.sleep(0.2)
        writer.write(chunk(event_lines(START, {"type": "text", "text": "Hel"})))
        await writer.drain()
        await asyncio.sleep(30)  # then frozen mid-answer

    async def scenario() -> list[Any]:
        server, base = await serve(slow_then_silent)
        seen: list[Any] = []
        async with server:
            stream = await agent_stream.open_stream(base, REQUEST)
            async with stream:
                with pytest.raises(agent_stream.AgentStreamBroken):
                    async for event in stream.events():
                        seen.append(event.type)
        return seen

    assert asyncio.run(scenario()) == ["start", "text"]


def test_a_non_streamed_generation_is_folded_from_the_stream(monkeypatch: pytest.MonkeyPatch) -> None:
    bounds(monkeypatch, first_byte=5, idle=5)

    async def agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        request = await read_request(reader)
        assert request is not None and json.loads(request[1])["stream"] is True
        writer.write(HEAD + chunk(b"\n") + chunk(event_lines(
            START, {"type": "text", "text": "Hello"}, {"type": "text", "text": " there"},
            {"type": "usage", "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
            {"type": "finish", "reason": "stop"})) + b"0\r\n\r\n")
        await writer.drain()

    async def scenario() -> Any:
        server, base = await serve(agent)
        async with server:
            return await agent_stream.generate(base, REQUEST)

    response = asyncio.run(scenario())
    assert response.content[0].text == "Hello there" and response.finish_reason == "stop"
    assert response.usage.completion_tokens == 2 and response.id == "g1"


def test_a_non_streamed_generation_that_breaks_after_its_start_is_a_502_not_a_failover(
        monkeypatch: pytest.MonkeyPatch) -> None:
    bounds(monkeypatch, first_byte=5, idle=0.3)

    async def agent(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        writer.write(HEAD + chunk(event_lines(START)))
        await writer.drain()
        await asyncio.sleep(30)

    async def scenario() -> ApiError:
        server, base = await serve(agent)
        async with server:
            with pytest.raises(ApiError) as err:
                await agent_stream.generate(base, REQUEST)
            return err.value

    error = asyncio.run(scenario())
    assert not isinstance(error, AgentUnreachable)
    assert (error.status, error.code) == (502, "backend_stream_broken")


def test_agent_http_stream_keeps_first_byte_and_idle_bounds_apart() -> None:
    async def head_then_silence(reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        await read_request(reader)
        await asyncio.sleep(0.3)  # slower than the idle bound, within the first-byte bound
        writer.write(HEAD)
        await writer.drain()
        await asyncio.sleep(30)

    async def scenario() -> int:
        server, base = await serve(head_then_silence)
        async with server:
            resp = await agent_http.stream("POST", f"{base}/x", json_body={}, first_byte_timeout=5,
                                           idle_timeout=0.2)
            with pytest.raises(agent_http.ReadTimedOut):
                await resp.read()
            await resp.aclose()
            return resp.status

    assert asyncio.run(scenario()) == 200


# ---- failover's answers --------------------------------------------------------------------------------------
A, B = (NodeTarget(node_id=n, base_url=f"http://{n}") for n in "ab")


def test_every_node_loading_is_503_model_loading_with_retry_after() -> None:
    async def attempt(t: NodeTarget) -> str:
        raise AgentUnreachable(t.base_url, "503 loading", agent_code="model_loading")

    with pytest.raises(NoNodeAvailable) as err:
        asyncio.run(first_connecting([A, B], attempt, nodes=NodeTracker()))
    assert (err.value.status, err.value.code) == (503, "model_loading")
    assert int(err.value.headers["Retry-After"]) >= 1


def test_no_node_taking_the_request_is_503_with_retry_after() -> None:
    async def attempt(t: NodeTarget) -> str:
        if t.node_id == "a":
            raise AgentUnreachable(t.base_url, "503 loading", agent_code="model_loading")
        raise AgentUnreachable(t.base_url, "ReadTimeout")

    with pytest.raises(NoNodeAvailable) as err:
        asyncio.run(first_connecting([A, B], attempt, nodes=NodeTracker()))
    assert (err.value.status, err.value.code) == (503, "no_node_available") and "Retry-After" in err.value.headers
    assert "ReadTimeout" in err.value.message
