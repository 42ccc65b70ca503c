"""Clusters and pools: configuration, status, load and unload through the node agents."""

from __future__ import annotations

import asyncio
import re
import time
from datetime import datetime, timedelta
from typing import Any

from pydantic import Field
from starlette.concurrency import run_in_threadpool

from isthmus.control.models import (
    RESERVED_CLUSTER_IDS,
    Cluster,
    ClusterKind,
    Node,
    NullsAsAbsent,
    Pool,
    Snapshot,
    utcnow,
)
from isthmus.errors import ApiError
from isthmus.fields import URL, Alias, ModelList, ModelName, Secret, Text
from isthmus.ports.control import AgentPort, ControlStore
from isthmus.services.control import pool_usage

LOAD_LEASE = timedelta(minutes=15)
RAM_FRACTION = 0.75  # weights beyond this share of a node's RAM leave no room for the KV cache
MODES = ("solo", "pipeline", "tensor")
RESERVED_ALIASES = frozenset({"coeos"})
_NEW_CLUSTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
_CLUSTER_ID_RULE = "cluster id: letters, digits, '.', '_' or '-', starting with a letter or digit (at most 64)"


class ClusterConfig(NullsAsAbsent):
    kind: ClusterKind = "mlx"
    default_alias: Alias | None = None
    fallback: Alias | None = None
    url: URL | None = None
    api_key: Secret | None = None
    models: ModelList = Field(default_factory=list)
    description: Text = ""


class LoadBody(NullsAsAbsent):
    model: ModelName
    alias: Alias | None = None
    sharding: str | None = None
    mode: str | None = None
    nodes: list[str] | None = None
    force: bool = False
    ttl_seconds: int | None = Field(default=None, ge=0)  # unload after this long idle (0: never)


class UnloadBody(NullsAsAbsent):
    alias: str | None = None


def _short_name(model: str) -> str:
    return model.rstrip("/").rsplit("/", 1)[-1]


def node_view(node: Node, snap: Snapshot) -> dict[str, Any]:
    age = (snap.now - node.last_seen).total_seconds()
    return {"node_id": node.node_id, "base_url": node.base_url, "up": node.is_up(snap.now, snap.stale_seconds),
            "last_seen": node.last_seen.isoformat(), "last_seen_age_s": round(age, 3), "chip": node.chip,
            "ram_bytes": node.ram_bytes, "platform": node.platform, "load": node.load.model_dump(),
            "models": [m.model_dump() for m in node.models]}


class ClusterService:
    def __init__(self, store: ControlStore, agents: AgentPort) -> None:
        self.store = store
        self.agents = agents

    async def snapshot(self) -> Snapshot:
        return await run_in_threadpool(lambda: Snapshot(clusters=self.store.list_clusters(),
                                                        nodes=self.store.list_nodes()))

    async def _cluster(self, cluster_id: str) -> Cluster:
        cluster = await run_in_threadpool(self.store.get_cluster, cluster_id)
        if cluster is None:
            raise ApiError(404, f"Cluster '{cluster_id}' does not exist.", code="cluster_not_found")
        return cluster

    def _summary(self, cluster: Cluster, snap: Snapshot) -> dict[str, Any]:
        nodes = [n for n in snap.nodes if n.cluster_id == cluster.cluster_id]
        up = {n.node_id for n in nodes if n.is_up(snap.now, snap.stale_seconds)}
        pools = {alias: {**p.model_dump(mode="json"), "ready_nodes": [n for n in p.nodes if n in up],
                         "ready": any(n in up for n in p.nodes)} for alias, p in cluster.pools.items()}
        loading = cluster.loading_until is not None and cluster.loading_until > snap.now
        ready = bool(cluster.url) if cluster.kind == "telemak" else any(p["ready"] for p in pools.values())
        return {**cluster.public(), "pools": pools, "nodes": [n.node_id for n in nodes], "nodes_up": sorted(up),
                "state": "loading" if loading else ("ready" if ready else "idle")}

    async def list_all(self) -> list[dict[str, Any]]:
        snap = await self.snapshot()
        return [self._summary(c, snap) for c in snap.clusters]

    async def status(self, cluster_id: str) -> dict[str, Any]:
        cluster = await self._cluster(cluster_id)
        snap = await self.snapshot()
        summary = self._summary(cluster, snap)
        summary["nodes"] = [node_view(n, snap) for n in snap.nodes if n.cluster_id == cluster_id]
        return summary

    async def put(self, cluster_id: str, config: ClusterConfig) -> dict[str, Any]:
        if cluster_id.lower() in RESERVED_CLUSTER_IDS:
            raise ApiError(400, f"'{cluster_id}' is a reserved name.", param="cluster_id")
        if not _NEW_CLUSTER_ID.match(cluster_id):  # stored ids are read as they are; new ones: no "." / ".."
            raise ApiError(400, _CLUSTER_ID_RULE, param="cluster_id")
        if config.kind == "telemak" and not config.url:
            raise ApiError(400, "a telemak cluster needs the upstream's url", param="url")
        existing = await run_in_threadpool(self.store.get_cluster, cluster_id)
        if existing is not None and existing.kind != config.kind and existing.pools:
            raise ApiError(409, f"cluster '{cluster_id}' has loaded pools; unload before changing its kind.",
                           code="conflict")
        try:
            cluster = Cluster(cluster_id=cluster_id, **config.model_dump(),
                              created_at=existing.created_at if existing else utcnow(), updated_at=utcnow())
        except ValueError:
            raise ApiError(400, _CLUSTER_ID_RULE, param="cluster_id") from None
        if config.api_key is None and existing is not None:
            cluster.api_key = existing.api_key  # a PUT without a key keeps the stored one
        if cluster.kind == "telemak" and not cluster.models:
            cluster.models = await self._discover_models(cluster)
        stored = await run_in_threadpool(self.store.put_cluster_config, cluster)
        snap = await self.snapshot()
        return self._summary(stored, snap)

    async def _discover_models(self, cluster: Cluster) -> list[str]:
        """A telemak upstream's model ids from its ``/v1/models`` (best effort: empty when it does not answer)."""
        assert cluster.url
        try:
            status, data = await self.agents.request("GET", cluster.url, "/v1/models", api_key=cluster.api_key)
        except ApiError:
            return []
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("data"), list):
            return []
        return [str(m["id"]) for m in data["data"] if isinstance(m, dict) and m.get("id")]

    async def nodes(self) -> list[dict[str, Any]]:
        snap = await self.snapshot()
        return [{**node_view(n, snap), "cluster_id": n.cluster_id} for n in snap.nodes]

    async def delete(self, cluster_id: str) -> None:
        cluster = await self._cluster(cluster_id)
        if cluster.pools:
            raise ApiError(409, f"cluster '{cluster_id}' has loaded pools; unload first.", code="conflict")
        await run_in_threadpool(self.store.delete_cluster, cluster_id)

    # ---- load / unload ---------------------------------------------------------------------------------
    def _check_alias(self, snap: Snapshot, cluster: Cluster, alias: str) -> None:
        lowered = alias.lower()
        for other in snap.clusters:
            if other.cluster_id == cluster.cluster_id:
                continue
            if other.cluster_id.lower() == lowered or any(a.lower() == lowered for a in other.pools):
                raise ApiError(409, f"alias '{alias}' is already used by cluster '{other.cluster_id}'.",
                               code="alias_conflict")

    def _pick_nodes(self, snap: Snapshot, cluster: Cluster, wanted: list[str] | None) -> list[Node]:
        up = snap.up_nodes(cluster_id=cluster.cluster_id)
        if wanted:
            by_id = {n.node_id: n for n in up}
            missing = [n for n in wanted if n not in by_id]
            if missing:
                raise ApiError(400, f"node(s) {', '.join(missing)} are not up in cluster '{cluster.cluster_id}'.",
                               param="nodes")
            return [by_id[n] for n in wanted]
        if not up:
            # The cluster's state, not the server, stands in the way (as for named nodes that are not up, a 400):
            # a 409 with a hint when to look again, never a 5xx for an admin asking too early.
            raise ApiError(409, f"No node of cluster '{cluster.cluster_id}' is up.", code="no_ready_nodes",
                           headers={"Retry-After": "2"})
        return up

    @staticmethod
    def _check_fit(nodes: list[Node], model: str) -> None:
        for node in nodes:
            size = node.model_size(model)
            if size and node.ram_bytes and size > node.ram_bytes * RAM_FRACTION:
                raise ApiError(400, f"'{model}' ({size / 2**30:.1f} GiB) does not fit node '{node.node_id}' "
                               f"({node.ram_bytes / 2**30:.1f} GiB RAM).", code="model_too_large", param="model")

    async def load(self, cluster_id: str, body: LoadBody) -> dict[str, Any]:
        mode = (body.sharding or body.mode or "solo").lower()
        if mode not in MODES:
            raise ApiError(400, f"unknown mode '{mode}'; use one of {', '.join(MODES)}", param="sharding")
        cluster = await self._cluster(cluster_id)
        if cluster.kind != "mlx":
            raise ApiError(400, f"'{cluster_id}' is a {cluster.kind} cluster: it serves its upstream's models.",
                           code="not_loadable")
        snap = await self.snapshot()
        nodes = self._pick_nodes(snap, cluster, body.nodes)
        if mode != "solo" and len(nodes) > 1:
            raise ApiError(501, f"{mode} sharding over {len(nodes)} nodes is not supported yet; load with "
                           "mode 'solo' (one replica per node) or name a single node.", code="not_implemented",
                           param="sharding")
        self._check_fit(nodes, body.model)
        alias = body.alias or cluster.default_alias or _short_name(body.model)
        if alias.lower() in RESERVED_ALIASES:
            raise ApiError(400, f"'{alias}' is a reserved model id.", param="alias")
        self._check_alias(snap, cluster, alias)
        busy = [n.node_id for n in nodes if n.load.busy or n.load.active]
        if busy and not body.force:
            raise ApiError(409, f"node(s) {', '.join(busy)} are serving requests; retry or pass force=true.",
                           code="cluster_busy")
        now = utcnow()
        if not await run_in_threadpool(self.store.acquire_load, cluster_id, now + LOAD_LEASE, now):
            raise ApiError(409, f"cluster '{cluster_id}' is busy with another load.", code="cluster_busy")
        released = False
        try:
            started = time.monotonic()
            results = await asyncio.gather(*(self.agents.load(n.base_url, body.model) for n in nodes),
                                           return_exceptions=True)
            failed = {n.node_id: getattr(r, "message", type(r).__name__)
                      for n, r in zip(nodes, results, strict=True) if isinstance(r, BaseException)}
            if len(failed) == len(nodes):
                reasons = "; ".join(f"{nid}: {why}" for nid, why in failed.items())
                raise ApiError(502, f"load of '{body.model}' failed on {reasons}", code="load_failed")
            load_s = round(time.monotonic() - started, 3)
            # The nodes that loaded now hold the model whatever happened elsewhere: the record follows them. A
            # conditional read-modify-write, so a node that enrolled during the load keeps its place.
            ids = [n.node_id for n in nodes if n.node_id not in failed]
            loaded = Pool(alias=alias, model=body.model, nodes=ids, mode=mode,  # type: ignore[arg-type]
                          loaded_at=utcnow(), load_s=load_s, ttl_seconds=body.ttl_seconds)

            def moved(current: Cluster) -> dict[str, Pool]:
                pools = {a: p.model_copy(update={"nodes": [x for x in p.nodes if x not in ids]})
                         for a, p in current.pools.items() if a != alias}
                return {**{a: p for a, p in pools.items() if p.nodes}, alias: loaded}

            await run_in_threadpool(self.store.update_pools, cluster_id, moved, release=True)
            released = True
            fresh = await self._cluster(cluster_id)
            if fresh.default_alias is None:
                await run_in_threadpool(self.store.put_cluster_config,
                                        fresh.model_copy(update={"default_alias": alias, "updated_at": utcnow()}))
        finally:
            if not released:
                current = await run_in_threadpool(self.store.get_cluster, cluster_id)
                if current is not None:
                    await run_in_threadpool(self.store.set_pools, cluster_id, current.pools, release=True)
        answer = {"loaded": True, "cluster": cluster_id, "alias": alias, "model": body.model, "nodes": ids,
                  "mode": mode, "load_s": load_s}
        return {**answer, "failed": failed} if failed else answer

    async def unload(self, cluster_id: str, body: UnloadBody) -> dict[str, Any]:
        cluster = await self._cluster(cluster_id)
        if body.alias and body.alias not in cluster.pools:
            raise ApiError(404, f"cluster '{cluster_id}' has no pool '{body.alias}'.", code="not_found")
        aliases = [body.alias] if body.alias else list(cluster.pools)
        ids = sorted({n for a in aliases for n in cluster.pools[a].nodes})
        snap = await self.snapshot()
        targets = [n for n in snap.nodes if n.node_id in ids]
        results = await asyncio.gather(*(self.agents.unload(n.base_url) for n in targets), return_exceptions=True)
        errors = {n.node_id: getattr(r, "message", type(r).__name__)
                  for n, r in zip(targets, results, strict=True) if isinstance(r, BaseException)}
        await run_in_threadpool(self.store.update_pools, cluster_id,
                                lambda current: {a: p for a, p in current.pools.items() if a not in aliases})
        return {"unloaded": True, "cluster": cluster_id, "aliases": aliases, "nodes": ids, "errors": errors}

    async def reap_idle(self, now: datetime | None = None) -> list[dict[str, Any]]:
        """Unload every pool idle for longer than its TTL (the pool's own, else ``pool_ttl_seconds_default``;
        0 or unset: never). Idle time counts from the later of the load and the last routed request."""
        now = now or utcnow()
        settings, clusters = await asyncio.gather(run_in_threadpool(self.store.get_settings),
                                                  run_in_threadpool(self.store.list_clusters))
        reaped = []
        for cluster in clusters:
            for alias, pool in cluster.pools.items():
                ttl = pool.ttl_seconds if pool.ttl_seconds is not None else settings.pool_ttl_seconds_default
                if not ttl:
                    continue
                last = max(pool.loaded_at, await pool_usage.last_used(self.store, cluster.cluster_id, alias)
                           or pool.loaded_at)
                idle = (now - last).total_seconds()
                if idle > ttl:
                    await self.unload(cluster.cluster_id, UnloadBody(alias=alias))
                    reaped.append({"cluster": cluster.cluster_id, "alias": alias, "idle_s": round(idle, 1),
                                   "ttl_seconds": ttl})
        return reaped
