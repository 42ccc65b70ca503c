"""Stream plumbing shared by every dialect: keepalives while the backend is silent, and coalescing of
small SSE writes (flush on a short timer or a byte count, never one network write per token)."""

from __future__ import annotations

import asyncio
import contextlib
import os
from collections.abc import AsyncIterator, Callable
from typing import TypeVar

T = TypeVar("T")
_END = object()


def flush_interval() -> float:
    return float(os.environ.get("ISTHMUS_STREAM_FLUSH_MS", "15")) / 1000


async def _pump(source: AsyncIterator[T], queue: asyncio.Queue[object]) -> None:
    try:
        async for item in source:
            await queue.put(item)
    except Exception as exc:  # handed to the consumer, which re-raises it in order
        await queue.put(exc)
    finally:
        await queue.put(_END)


@contextlib.asynccontextmanager
async def _pumped(source: AsyncIterator[T]) -> AsyncIterator[asyncio.Queue[object]]:
    """Runs ``source`` in its own task, so waiting with a timeout never cancels the source itself."""
    queue: asyncio.Queue[object] = asyncio.Queue()
    task = asyncio.create_task(_pump(source, queue))
    try:
        yield queue
    finally:
        task.cancel()
        with contextlib.suppress(asyncio.CancelledError, Exception):
            await task
        aclose = getattr(source, "aclose", None)
        if aclose is not None:
            with contextlib.suppress(Exception):
                await aclose()


async def with_keepalive(source: AsyncIterator[T], interval: float, ping: Callable[[], T]) -> AsyncIterator[T]:
    """``source``'s items, plus ``ping()`` whenever it has been silent for ``interval`` seconds."""
    async with _pumped(source) as queue:
        while True:
            try:
                item = await asyncio.wait_for(queue.get(), interval)
            except TimeoutError:
                yield ping()
                continue
            if item is _END:
                return
            if isinstance(item, Exception):
                raise item
            yield item  # type: ignore[misc]


async def coalesce(source: AsyncIterator[bytes], interval: float | None = None,
                   max_bytes: int = 16384) -> AsyncIterator[bytes]:
    """At most one write per ``interval``: data that arrives after a quiet spell goes out at once (no added
    latency to the first byte); data that arrives within the interval is batched until it ends."""
    interval = flush_interval() if interval is None else interval
    loop = asyncio.get_running_loop()
    last_flush = -1e9
    async with _pumped(source) as queue:
        while True:
            item = await queue.get()
            buf: list[bytes] = []
            size = 0
            deadline = last_flush + interval
            while True:
                if item is _END:
                    if buf:
                        yield b"".join(buf)
                    return
                if isinstance(item, Exception):
                    if buf:
                        yield b"".join(buf)
                    raise item
                buf.append(item)  # type: ignore[arg-type]
                size += len(item)  # type: ignore[arg-type]
                if size >= max_bytes:
                    break
                try:
                    item = queue.get_nowait()
                    continue
                except asyncio.QueueEmpty:
                    pass
                remaining = deadline - loop.time()
                if remaining <= 0:
                    break
                try:
                    item = await asyncio.wait_for(queue.get(), remaining)
                except TimeoutError:
                    break
            yield b"".join(buf)
            last_flush = loop.time()
