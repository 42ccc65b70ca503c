"""Coalescing and keepalives, driven by a scripted async source (given / when / then)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, MutableMapping
from typing import Any

import pytest

from isthmus.errors import Dialect
from isthmus.streaming import RelayResponse, coalesce, relay_frames, sse_response
from isthmus_contracts.internal import FinishEvent, StreamEvent, TextDelta


async def scripted(items: list[tuple[float, bytes]]) -> AsyncIterator[bytes]:
    for delay, item in items:
        if delay:
            await asyncio.sleep(delay)
        yield item


async def endless(closed: list[bool], every: float = 0.001) -> AsyncIterator[bytes]:
    """A token every ``every`` seconds, forever; notes in ``closed`` when it is closed."""
    try:
        while True:
            await asyncio.sleep(every)
            yield b"t"
    finally:
        closed.append(True)


async def collect(it: AsyncIterator[bytes]) -> list[bytes]:
    return [chunk async for chunk in it]


def test_a_burst_of_tokens_becomes_few_writes_and_nothing_is_lost() -> None:
    # given 200 tokens arriving back to back
    tokens = [(0.0, f"data: {i}\n\n".encode()) for i in range(200)]
    # when coalesced with a 50 ms window
    writes = asyncio.run(collect(coalesce(scripted(tokens), interval=0.05)))
    # then every byte arrives in order, in far fewer writes than tokens
    assert b"".join(writes) == b"".join(t for _, t in tokens)
    assert len(writes) <= 3


def test_the_first_chunk_after_a_quiet_spell_is_not_held_back() -> None:
    # given one chunk, a long pause, and another chunk
    items = [(0.0, b"a"), (0.3, b"b")]
    # when coalesced with a window much shorter than the pause
    writes = asyncio.run(collect(coalesce(scripted(items), interval=0.02)))
    # then each goes out on its own
    assert writes == [b"a", b"b"]


def test_byte_budget_forces_a_flush() -> None:
    items = [(0.0, b"x" * 1000) for _ in range(10)]
    writes = asyncio.run(collect(coalesce(scripted(items), interval=10, max_bytes=2500)))
    assert b"".join(writes) == b"x" * 10000
    assert all(len(w) <= 3000 for w in writes)
    assert len(writes) >= 4


def test_a_source_error_is_raised_after_the_data_before_it() -> None:
    async def failing() -> AsyncIterator[bytes]:
        yield b"partial"
        raise RuntimeError("upstream cut")

    async def run() -> list[bytes]:
        got: list[bytes] = []
        with pytest.raises(RuntimeError, match="upstream cut"):
            async for chunk in coalesce(failing(), interval=0.01):
                got.append(chunk)
        return got

    assert asyncio.run(run()) == [b"partial"]


def test_keepalive_pings_while_the_source_is_silent_then_passes_items() -> None:
    # given a source that sends its first chunk, then is silent for 0.25 s
    items = [(0.0, b"first"), (0.25, b"late")]
    # when coalesced with a 0.05 s keepalive
    out = asyncio.run(collect(coalesce(scripted(items), interval=0.01, ping=b"ping", ping_interval=0.05)))
    # then the first chunk came first, pings filled the silence, and the late chunk still arrived, last
    assert out[0] == b"first" and out[-1] == b"late"
    assert 2 <= out.count(b"ping") <= 5


def test_no_ping_goes_out_before_the_first_chunk_or_while_chunks_keep_coming() -> None:
    # given a source silent before its first chunk, then a chunk every 20 ms for 0.3 s
    items = [(0.2, b"first")] + [(0.02, b"t")] * 15
    # when coalesced with a 0.05 s keepalive (longer than any gap after the first chunk)
    out = asyncio.run(collect(coalesce(scripted(items), interval=0.005, ping=b"ping", ping_interval=0.05)))
    # then no ping: the stream's first bytes are its own, and a stream that writes needs no keepalive
    assert b"ping" not in out and out[0] == b"first"
    assert b"".join(out) == b"first" + b"t" * 15


def test_data_that_goes_out_when_a_ping_falls_due_is_not_followed_by_that_ping() -> None:
    # given data held by a long coalescing window, whose keepalive falls due while it waits
    async def run() -> list[tuple[float, bytes]]:
        loop = asyncio.get_running_loop()
        source = scripted([(0.0, b"first"), (0.01, b"data"), (0.2, b"late")])
        return [(loop.time(), chunk) async for chunk in coalesce(source, interval=0.1, ping=b"ping",
                                                                ping_interval=0.05)]

    out = asyncio.run(run())
    # then the data goes out at the ping's time, and the next ping only after a silence of its own
    data_at = next(t for t, chunk in out if chunk == b"data")
    assert [c for _, c in out][:2] == [b"first", b"data"]
    assert all(t - data_at >= 0.04 for t, chunk in out if chunk == b"ping"), out


def test_an_sse_response_with_a_ping_sends_it_while_its_frames_are_silent() -> None:
    # given frames with a silence after the first
    async def frames() -> AsyncIterator[str]:
        yield "event: one\n\n"
        await asyncio.sleep(0.3)
        yield "event: two\n\n"

    # when relayed as an SSE response with a 0.1 s ping
    sent, _ = _relay_run(sse_response(frames(), ping="event: ping\n\n", ping_interval=0.1).body_stream, [])
    bodies = [m.get("body") for m in sent[1:]]
    # then pings went out between the two frames, and the response ended properly
    assert bodies[0] == b"event: one\n\n" and bodies[-2:] == [b"event: two\n\n", b""]
    assert 1 <= bodies.count(b"event: ping\n\n") <= 3


def relayed(events: AsyncIterator[StreamEvent]) -> AsyncIterator[str]:
    return relay_frames(events, lambda e: [{"kind": type(e).__name__}], lambda: [], lambda p: p["kind"],
                        Dialect.ANTHROPIC)


def test_a_relay_sends_its_first_frame_without_a_task_switch() -> None:
    # given an opened stream (its first event in hand), then a pause, then the finish
    async def opened() -> AsyncIterator[StreamEvent]:
        yield TextDelta(text="hi")
        await asyncio.sleep(0.05)
        yield FinishEvent(reason="stop")

    async def run() -> tuple[str, bool, list[str]]:
        switched = False

        def other_task_ran() -> None:
            nonlocal switched
            switched = True

        asyncio.get_running_loop().call_soon(other_task_ran)  # runs at the first loop turn this task gives away
        relay = relayed(opened())
        first = await anext(relay)
        ran_before_first = switched
        return first, ran_before_first, [frame async for frame in relay]

    first, ran_before_first, rest = asyncio.run(run())
    # when relayed, then the first frame came before the loop ran anything else, and the finish after it
    assert first == "TextDelta" and not ran_before_first
    assert rest == ["FinishEvent"]


async def endless_events(closed: list[bool]) -> AsyncIterator[StreamEvent]:
    """An opened backend stream that never ends; notes in ``closed`` when it is closed (where it settles)."""
    try:
        while True:
            yield TextDelta(text="t")
            await asyncio.sleep(0.001)
    finally:
        closed.append(True)


def test_closing_a_relay_after_its_first_frame_closes_the_stream() -> None:
    closed: list[bool] = []

    async def run() -> None:
        relay = relayed(endless_events(closed))
        await anext(relay)
        await relay.aclose()  # type: ignore[attr-defined]

    asyncio.run(run())
    assert closed == [True]


def test_closing_the_consumer_closes_the_source() -> None:
    closed: list[bool] = []

    async def run() -> None:
        it = coalesce(endless(closed), interval=0.01)
        await it.__anext__()
        await it.aclose()  # type: ignore[attr-defined]

    asyncio.run(run())
    assert closed == [True]


def test_the_first_chunk_is_not_held_for_the_rest_of_a_burst() -> None:
    # given a source whose second chunk is far away
    async def run() -> float:
        loop = asyncio.get_running_loop()
        it = coalesce(scripted([(0.0, b"first"), (0.5, b"second")]), interval=10)
        started = loop.time()
        assert await it.__anext__() == b"first"
        waited = loop.time() - started
        await it.aclose()  # type: ignore[attr-defined]
        return waited

    # when the first chunk is read through a long window, then it comes at once
    assert asyncio.run(run()) < 0.25


def _relay_run(body: AsyncIterator[bytes], messages: list[tuple[float, dict[str, Any]]],
               outer_cancel_after: float | None = None) -> tuple[list[MutableMapping[str, Any]], bool]:
    """Runs a RelayResponse against scripted ASGI receive messages; returns what it sent and whether the call
    was cancelled from outside."""
    sent: list[MutableMapping[str, Any]] = []

    async def receive() -> dict[str, Any]:
        if messages:
            delay, message = messages.pop(0)
            await asyncio.sleep(delay)
            return message
        await asyncio.Event().wait()
        return {}

    async def send(message: MutableMapping[str, Any]) -> None:
        sent.append(message)

    async def run() -> bool:
        task = asyncio.create_task(RelayResponse(body)({"type": "http"}, receive, send))
        if outer_cancel_after is not None:
            await asyncio.sleep(outer_cancel_after)
            task.cancel()
        try:
            await asyncio.wait_for(task, 2)
        except asyncio.CancelledError:
            return True
        return False

    return sent, asyncio.run(run())


def test_a_client_going_away_mid_stream_ends_the_response_and_closes_the_body() -> None:
    closed: list[bool] = []
    # given a client that disconnects after 0.1 s of an endless stream
    sent, cancelled = _relay_run(endless(closed, every=0.01), [(0.1, {"type": "http.disconnect"})])
    # then the response ends quietly (no error out of the app), the body was closed, no final chunk was sent
    assert not cancelled
    assert closed == [True]
    assert sent[0]["type"] == "http.response.start"
    assert all(m.get("more_body", True) for m in sent[1:])


def test_a_disconnect_after_the_last_byte_changes_nothing() -> None:
    # given a client that disconnects once the whole body is out
    sent, cancelled = _relay_run(scripted([(0.0, b"a"), (0.0, b"b")]), [(0.05, {"type": "http.disconnect"})])
    # then the body went out whole and ended properly
    assert not cancelled
    assert [m.get("body") for m in sent[1:]] == [b"a", b"b", b""]
    assert sent[-1]["more_body"] is False


def test_a_cancellation_from_outside_is_not_swallowed() -> None:
    # given a server that cancels the response task itself (shutdown), the cancellation reaches the caller
    _, cancelled = _relay_run(endless([], every=0.01), [], outer_cancel_after=0.05)
    assert cancelled


def test_an_sse_body_closed_after_its_first_chunk_closes_the_backend_events() -> None:
    closed: list[bool] = []

    async def run() -> list[bool]:
        # given a relayed stream's response body, its frames still referenced (as a wrapper of them would be,
        # so no garbage-collector finalizer closes them)
        frames = relayed(endless_events(closed))
        body = sse_response(frames, ping="ping").body_stream
        # when it is closed once its first chunk went out (the client left at once)
        await anext(body)
        await body.aclose()  # type: ignore[attr-defined]
        # then every layer closed the one below: the backend's events are closed
        return list(closed)

    assert asyncio.run(run()) == [True]
