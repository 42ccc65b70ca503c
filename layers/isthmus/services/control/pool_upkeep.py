"""The control plane's upkeep of pools, run every 30 s from heartbeats (and on ``POST /admin/pools/reap``):
sharded pools that lost a rank are loaded again on the ranks left or unloaded with the reason; pools idle
beyond their TTL are unloaded."""

from __future__ import annotations

import asyncio
from datetime import datetime
from typing import Any

from starlette.concurrency import run_in_threadpool

from isthmus.control.models import Cluster, Pool, utcnow
from isthmus.errors import ApiError
from isthmus.ports.control import ControlStore
from isthmus.services.control import pool_usage, sharded
from isthmus.services.control.clusters import ClusterService, LoadBody, UnloadBody


async def heal_sharded(service: ClusterService) -> list[dict[str, Any]]:
    """Each sharded pool that lost a rank (a node down, or rank 0 reporting its group broken) is loaded
    again on its ranks still up (sharded over several, whole on one) when the model fits them; else it is
    unloaded and keeps only its record, with no nodes and the reason (shown in /admin/clusters)."""
    snap = await service.snapshot()
    healed = []
    for cluster in snap.clusters:
        up = {n.node_id for n in snap.up_nodes(cluster_id=cluster.cluster_id)}
        for alias, pool in cluster.pools.items():
            reason = sharded.view(pool, snap, up)["degraded"] if pool.ranks else None
            if not reason:
                continue
            remaining = [n for n in pool.ranks if n in up]
            try:
                if not remaining:
                    raise ApiError(503, "no rank is up", code="no_ready_nodes")
                mode = pool.mode if len(remaining) > 1 else "solo"
                # rank 0 restarts after losing its group: a whole load must reach the new process
                await asyncio.gather(*(sharded.wait_fresh(service.agents, n) for n in snap.nodes
                                       if n.node_id in remaining))
                await service.load(cluster.cluster_id, LoadBody(model=pool.model, alias=alias, sharding=mode,
                                                             nodes=remaining, backend=pool.backend, force=True,
                                                             ttl_seconds=pool.ttl_seconds))
                note = f"reloaded on {', '.join(remaining)} ({mode}) after: {reason}"
                await _set_note(service.store, cluster.cluster_id, alias, note, unload=False)
            except ApiError as exc:
                # another load holds the cluster: try again next time (ranks that cannot be reached are a
                # failed reload, as before their answer became a 409)
                if exc.status == 409 and exc.code != "nodes_unreachable":
                    continue
                errors = await sharded.unload_group(service.agents, [n for n in snap.nodes if n.node_id in remaining])
                note = f"unloaded after: {reason}; not reloaded: {exc.message}"
                await _set_note(service.store, cluster.cluster_id, alias, note, unload=True)
                note += f" ({errors})" if errors else ""
            healed.append({"cluster": cluster.cluster_id, "alias": alias, "note": note})
    return healed

async def _set_note(store: ControlStore, cluster_id: str, alias: str, note: str, *, unload: bool) -> None:
    def noted(current: Cluster) -> dict[str, Pool] | None:
        if alias not in current.pools:
            return None
        update: dict[str, Any] = {"note": note, **({"nodes": [], "ranks": []} if unload else {})}
        return {**current.pools, alias: current.pools[alias].model_copy(update=update)}

    await run_in_threadpool(store.update_pools, cluster_id, noted)

async def reap_idle(service: ClusterService, now: datetime | None = None) -> list[dict[str, Any]]:
    """Unload every pool idle for longer than its TTL (the pool's own, else ``pool_ttl_seconds_default``;
    0 or unset: never). Idle time counts from the later of the load and the last routed request."""
    now = now or utcnow()
    settings, clusters = await asyncio.gather(run_in_threadpool(service.store.get_settings),
                                              run_in_threadpool(service.store.list_clusters))
    reaped = []
    for cluster in clusters:
        for alias, pool in cluster.pools.items():
            ttl = pool.ttl_seconds if pool.ttl_seconds is not None else settings.pool_ttl_seconds_default
            if not ttl:
                continue
            last = max(pool.loaded_at, await pool_usage.last_used(service.store, cluster.cluster_id, alias)
                       or pool.loaded_at)
            idle = (now - last).total_seconds()
            if idle > ttl:
                await service.unload(cluster.cluster_id, UnloadBody(alias=alias))
                reaped.append({"cluster": cluster.cluster_id, "alias": alias, "idle_s": round(idle, 1),
                               "ttl_seconds": ttl})
    return reaped
