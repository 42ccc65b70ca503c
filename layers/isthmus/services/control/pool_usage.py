"""When each pool last served a request, for idle unloading (``pool_ttl_seconds_default``).

The routing service touches a pool when it routes to it, at most every ``TOUCH_EVERY_S`` per process, as
one document in the settings table (``pool_used#<cluster>#<alias>``): cheap and approximate, which is
all an idle timeout needs.
"""

from __future__ import annotations

import time
from datetime import datetime

from starlette.concurrency import run_in_threadpool

from isthmus.control.models import utcnow
from isthmus.ports.control import ControlStore

TOUCH_EVERY_S = 30.0
_PREFIX = "pool_used#"
_touched: dict[str, float] = {}


def _key(cluster_id: str, alias: str) -> str:
    return f"{_PREFIX}{cluster_id}#{alias}"


async def touch(store: ControlStore, cluster_id: str, alias: str) -> None:
    key, now = _key(cluster_id, alias), time.monotonic()
    if now - _touched.get(key, float("-inf")) < TOUCH_EVERY_S:
        return
    _touched[key] = now
    await run_in_threadpool(store.put_doc, key, utcnow().isoformat())


async def last_used(store: ControlStore, cluster_id: str, alias: str) -> datetime | None:
    value = await run_in_threadpool(store.get_doc, _key(cluster_id, alias))
    return datetime.fromisoformat(value) if isinstance(value, str) else None
