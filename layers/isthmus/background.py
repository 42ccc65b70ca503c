"""Two asyncio patterns the services share: state kept per event loop, and one background refresh per name.

Per loop: connections, queues and futures belong to the loop that made them, and one process may run several
(Mangum keeps one per Lambda sandbox, the local edge's lambda mode one per worker thread, tests one per
``asyncio.run``). Keyed by the loop object itself, so a new loop never inherits a closed one's entry.
"""

from __future__ import annotations

import asyncio
import functools
from collections.abc import Callable, Coroutine
from typing import Any, TypeVar

from isthmus.observability import get_logger

T = TypeVar("T")
log = get_logger("background")


def per_loop(registry: dict[asyncio.AbstractEventLoop, T], make: Callable[[], T]) -> T:
    """The running loop's entry of ``registry``, made on first use (entries of closed loops are dropped)."""
    loop = asyncio.get_running_loop()
    value = registry.get(loop)
    if value is None:
        for gone in [lp for lp in registry if lp.is_closed()]:
            del registry[gone]
        value = registry[loop] = make()
    return value


class SingleFlight:
    """At most one background task per name (a stale value keeps serving meanwhile); a task that fails is
    logged as ``<what> refresh failed`` and the next caller may start another."""

    def __init__(self, what: str) -> None:
        self.what = what
        self._tasks: dict[str, asyncio.Future[Any]] = {}

    def start(self, name: str, work: Coroutine[Any, Any, Any]) -> None:
        running = self._tasks.get(name)
        if running is not None and not running.done():
            work.close()
            return
        task = asyncio.ensure_future(work)
        self._tasks[name] = task
        task.add_done_callback(functools.partial(self._done, name))

    def _done(self, name: str, task: asyncio.Future[Any]) -> None:
        if self._tasks.get(name) is task:
            del self._tasks[name]
        if not task.cancelled() and task.exception() is not None:
            log.warning(f"{self.what} refresh failed", extra={"refresh": name.split(":", 1)[0],
                                                               "error": type(task.exception()).__name__})
