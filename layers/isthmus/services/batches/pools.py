"""Which pool a batch line runs on, and whether that pool has requests waiting: read from the routing snapshot
(the same clusters, nodes and heartbeats routing uses), so batch lines are capped per pool, not per model name
(an alias and its concrete model share the cap), and yield to interactive requests queued by any gateway."""

from __future__ import annotations

from collections.abc import Awaitable, Callable

from isthmus.control.models import Snapshot
from isthmus.routing.resolver import is_coeos, resolve


class PoolView:
    def __init__(self, snapshot: Callable[[], Awaitable[Snapshot]]) -> None:
        self.snapshot = snapshot

    async def __call__(self, model: str) -> tuple[str, bool]:
        """(pool key, whether the pool's agents report requests queued). A model routing cannot place here
        (CoeOS picks per request; unknown models fail when the line runs) is its own pool."""
        if is_coeos(model):
            return model, False
        try:
            snap = await self.snapshot()
            route = resolve(snap, model)
        except Exception:
            return model, False
        pool = route.cluster or route.provider or route.upstream_url or route.model
        queued = any((node := snap.node(t.node_id)) is not None and node.load.queue_depth > 0 for t in route.nodes)
        return f"{route.backend}:{pool}", queued
