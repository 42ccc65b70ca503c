from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from isthmus import __version__
from isthmus.observability import inflight
from isthmus.ports.health import StoreProbe


def status() -> dict[str, Any]:
    return {"status": "busy" if inflight.busy else "idle", "version": __version__}


def readiness(probe: StoreProbe) -> tuple[int, dict[str, Any]]:
    """200 when the store answers with every table; 503 naming what is wrong otherwise. Blocking (the probe
    waits on the store): async callers run it in a thread."""
    problems = probe.problems()
    if problems:
        return 503, {"status": "unavailable", "detail": "; ".join(problems), "checks": {"dynamodb": problems}}
    return 200, {"status": "ready", "checks": {"dynamodb": "ok"}}


async def ready(probe: StoreProbe) -> tuple[int, dict[str, Any]]:
    """:func:`readiness` in a worker thread: the probe may block on a hung store for its timeouts, never on the
    event loop."""
    return await run_in_threadpool(readiness, probe)
