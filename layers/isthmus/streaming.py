"""Stream plumbing shared by every dialect: coalescing of small SSE writes (flush on a short timer or a byte count,
never one network write per token), and keepalive frames while nothing has been written for a while."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import Any

from starlette.responses import StreamingResponse
from starlette.types import Receive, Scope, Send

from isthmus.errors import ApiError, Dialect, error_body
from isthmus.observability import get_logger
from isthmus_contracts.internal import ErrorEvent, FinishEvent, StreamEvent

logger = get_logger("inference")


def flush_interval() -> float:
    return float(os.environ.get("ISTHMUS_STREAM_FLUSH_MS", "15")) / 1000


async def _aclose(source: AsyncIterator[Any]) -> None:
    aclose = getattr(source, "aclose", None)
    if aclose is not None:
        with contextlib.suppress(Exception):
            await aclose()


async def coalesce(source: AsyncIterator[bytes], interval: float | None = None, max_bytes: int = 16384,
                   ping: bytes | None = None, ping_interval: float = 10.0) -> AsyncIterator[bytes]:
    """At most one write per ``interval``: data that arrives after a quiet spell goes out at once (no added
    latency to the first byte); data that arrives within the interval is batched until it ends. With ``ping``,
    that frame goes out whenever nothing has been written for ``ping_interval`` seconds after the first chunk
    (a long generation's silence)."""
    interval = flush_interval() if interval is None else interval
    try:
        # The first chunk is awaited right here: no pump task between the backend's first event and the first
        # byte out (the pump is only needed to wait for the next chunk with a deadline).
        try:
            first = await anext(source)
        except StopAsyncIteration:
            return
        yield first
        batcher = _Batcher(interval, max_bytes, ping, ping_interval)
        task = asyncio.create_task(batcher.pump(source))
        try:
            async for chunk in batcher.batches():
                yield chunk
        finally:
            batcher.stop_timers()
            task.cancel()
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
    finally:
        await _aclose(source)


class _Batcher:
    """The chunks after a coalesced stream's first: a pump task appends them to one buffer and wakes the writer
    only when a write is due (the interval since the last flush is over, the byte budget is reached, or the source
    ended), so a chunk costs an append, not a queue hop and a timer of its own (one timer per batch). The keepalive
    lives here too, at the byte level, as one timer per ``ping_interval`` that checks whether anything was written
    since it was armed (an event-level keepalive cost every event a queue hop and a timeout of its own)."""

    def __init__(self, interval: float, max_bytes: int, ping: bytes | None = None,
                 ping_interval: float = 10.0) -> None:
        self.loop = asyncio.get_running_loop()
        self.interval = interval
        self.max_bytes = max_bytes
        self.buf: list[bytes] = []
        self.size = 0
        self.ended = False
        self.error: Exception | None = None
        self.last_flush = self.loop.time()
        self.expired = False  # the deadline's timer fired (it may fire a clock tick before loop.time() says so)
        self.waiter: asyncio.Future[None] | None = None
        self.timer: asyncio.TimerHandle | None = None
        self.ping = ping
        self.ping_interval = ping_interval
        self.ping_due = False
        self.ping_timer: asyncio.TimerHandle | None = None
        self.ping_armed_at = 0.0  # last_flush when the ping timer was armed: unchanged when it fires = silence

    def _due(self) -> bool:
        if self.ended or self.size >= self.max_bytes or self.ping_due:
            return True
        return bool(self.buf) and (self.expired or self.loop.time() >= self.last_flush + self.interval)

    def _wake(self) -> None:
        if self.waiter is not None and not self.waiter.done():
            self.waiter.set_result(None)

    def _deadline(self) -> None:
        self.expired = True
        self._wake()

    def _arm(self) -> None:
        if self.timer is None:
            self.timer = self.loop.call_at(self.last_flush + self.interval, self._deadline)

    def _arm_ping(self) -> None:
        if self.ping is not None and self.ping_timer is None:
            self.ping_armed_at = self.last_flush
            self.ping_timer = self.loop.call_at(self.last_flush + self.ping_interval, self._ping_check)

    def _ping_check(self) -> None:
        self.ping_timer = None
        if self.last_flush == self.ping_armed_at:  # nothing written since: a ping is due
            self.ping_due = True
            self._wake()
        elif self.waiter is not None:  # written meanwhile and idle again: wait for a silence from the last write
            self._arm_ping()

    def stop_timers(self) -> None:
        for timer in (self.timer, self.ping_timer):
            if timer is not None:
                timer.cancel()

    async def pump(self, source: AsyncIterator[bytes]) -> None:
        try:
            async for item in source:
                self.buf.append(item)
                self.size += len(item)
                if self.waiter is not None:  # the writer is idle: wake it now, or once the interval is over
                    if self._due():
                        self._wake()
                    else:
                        self._arm()
        except Exception as exc:  # handed to the writer, which raises it after the data before it
            self.error = exc
        finally:
            self.ended = True
            self._wake()

    def _take(self) -> bytes:
        """The next write: the buffered chunks, up to the first that reaches the byte budget."""
        taken, size = len(self.buf), self.size
        if size >= self.max_bytes:
            taken = size = 0
            while size < self.max_bytes:
                size += len(self.buf[taken])
                taken += 1
        chunk = b"".join(self.buf[:taken])
        del self.buf[:taken]
        self.size -= size
        self.expired = False
        return chunk

    async def batches(self) -> AsyncIterator[bytes]:
        while True:
            if not self._due():
                if self.buf:
                    self._arm()
                self._arm_ping()
                self.waiter = self.loop.create_future()
                try:
                    await self.waiter
                finally:
                    self.waiter = None
                continue
            if self.timer is not None:
                self.timer.cancel()
                self.timer = None
            if self.buf:
                self.ping_due = False  # the data itself breaks the silence
                yield self._take()
                self.last_flush = self.loop.time()
                continue
            if self.ended:
                if self.error is not None:
                    raise self.error
                return
            self.ping_due = False  # due, and nothing else is: the silence's keepalive
            assert self.ping is not None
            yield self.ping
            self.last_flush = self.loop.time()


class RelayResponse(StreamingResponse):
    """An SSE response that notices a client going away at once, whatever the ASGI server's spec version
    (Starlette's StreamingResponse only notices on the next write under ASGI 2.4), and always closes its body
    iterator, so the backend generation stops and the usage is settled promptly."""

    def __init__(self, body: AsyncIterator[bytes], headers: dict[str, str] | None = None) -> None:
        super().__init__(body, media_type="text/event-stream",
                         headers={"cache-control": "no-cache", "x-accel-buffering": "no", **(headers or {})})
        self.body_stream = body

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        # The body is sent from this task; one watcher task cancels it when the client goes away (a plain
        # asyncio task: cheaper than the anyio task group of two it replaces, and the body's first chunk no
        # longer waits for a task switch).
        this = asyncio.current_task()
        assert this is not None
        sending = True
        gone = False

        async def watch() -> None:
            nonlocal gone
            try:
                while (await receive())["type"] != "http.disconnect":
                    pass
            except Exception:  # a server that cannot tell us: the next failed write will
                return
            if sending:
                gone = True
                this.cancel()

        watcher = asyncio.create_task(watch())
        try:
            await send({"type": "http.response.start", "status": self.status_code, "headers": self.raw_headers})
            async for chunk in self.body_stream:
                await send({"type": "http.response.body", "body": chunk, "more_body": True})
            sending = False
            await send({"type": "http.response.body", "body": b"", "more_body": False})
        except OSError:
            pass  # the client went away mid-write
        except asyncio.CancelledError:
            if not gone:
                raise
            this.uncancel()  # our own cancellation: the client is gone, the response is over
        finally:
            sending = False
            watcher.cancel()
            # Closing the body settles the usage: shielded, so a second cancellation cannot cut it short.
            await asyncio.shield(_aclose(self.body_stream))


def sse_response(frames: AsyncIterator[str], headers: dict[str, str] | None = None, ping: str | None = None,
                 ping_interval: float = 10.0) -> RelayResponse:
    """SSE frames as a coalesced, disconnect-aware response; ``ping`` frames go out while nothing else has been
    written for ``ping_interval`` seconds (a dialect's keepalive during long generations)."""

    async def body() -> AsyncIterator[bytes]:
        try:
            async for frame in frames:
                yield frame.encode()
        finally:  # closed early: the frames' source closes (and settles) now, each layer closing the one below
            await _aclose(frames)

    return RelayResponse(coalesce(body(), ping=ping.encode() if ping else None, ping_interval=ping_interval),
                         headers=headers)


async def relay_frames(events: AsyncIterator[StreamEvent], feed: Callable[[StreamEvent], list[dict[str, Any]]],
                       close: Callable[[], list[dict[str, Any]]], frame: Callable[[dict[str, Any]], str],
                       dialect: Dialect, done: str = "",
                       on_event: Callable[[StreamEvent], None] | None = None) -> AsyncIterator[str]:
    """Backend events -> a dialect's SSE frames (``feed``/``close`` are a dialect stream encoder's, ``frame``
    its framing). A failure after the first byte, or a stream that ends without a finish, becomes one in-band
    error event in ``dialect``. Keepalives are the response's (``sse_response``'s ``ping``)."""
    ended = False  # a finish or an error event arrived: the backend ended the stream properly
    try:
        async for event in events:
            ended = ended or isinstance(event, FinishEvent | ErrorEvent)
            if on_event is not None:
                on_event(event)
            for payload in feed(event):
                yield frame(payload)
        if not ended:
            raise ApiError(502, "The backend stream ended before the answer was complete.", code="backend_error")
        for payload in close():
            yield frame(payload)
        if done:
            yield done
    except ApiError as exc:
        logger.warning("stream failed after the first byte", extra={"status": exc.status, "code": exc.code})
        yield frame(error_body(dialect, exc.status, exc.message, code=exc.code))
    finally:  # closed early (the client went away): the backend's stream stops and settles now, not at GC
        await _aclose(events)
