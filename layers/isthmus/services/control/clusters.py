"""Clusters and pools: configuration, status, load and unload through the node agents."""

from __future__ import annotations

import asyncio
import re
import time
from dataclasses import dataclass
from datetime import timedelta
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
    UpstreamProtocol,
    utcnow,
)
from isthmus.errors import AgentUnreachable, ApiError
from isthmus.fields import URL, Alias, ModelList, ModelName, Secret, Text
from isthmus.ports.control import AgentPort, ControlStore
from isthmus.services.control import sharded

LOAD_LEASE = timedelta(minutes=15)
RAM_FRACTION = 0.75  # weights beyond this share of a node's RAM leave no room for the KV cache
MODES = ("solo", "pipeline", "tensor")
RESERVED_ALIASES = frozenset({"coeos"})
_NEW_CLUSTER_ID = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._\-]{0,63}$")
_CLUSTER_ID_RULE = "cluster id: letters, digits, '.', '_' or '-', starting with a letter or digit (at most 64)"


def nodes_unreachable(cluster_id: str, reasons: dict[str, str]) -> ApiError:
    """A load none of whose nodes could be reached (no connection, no answer): they still count as up until their
    heartbeats lapse, so the cluster's state stands in the way, not the server (as for no node up, a 409 with when
    to look again; found by schemathesis, which enrolls nodes at addresses nobody listens on). Agents that answered
    with an error stay a 502 (``load_failed``)."""
    named = "; ".join(f"{node}: {why}" for node, why in reasons.items())
    return ApiError(409, f"No node of cluster '{cluster_id}' could be reached for the load ({named}).",
                    code="nodes_unreachable", headers={"Retry-After": "2"})


class ClusterConfig(NullsAsAbsent):
    kind: ClusterKind = "mlx"
    default_alias: Alias | None = None
    fallback: Alias | None = None
    url: URL | None = None
    api_key: Secret | None = None
    models: ModelList = Field(default_factory=list)
    protocol: UpstreamProtocol | None = None  # telemak: absent = asked of the upstream (_detect_protocol)
    description: Text = ""


class LoadBody(NullsAsAbsent):
    model: ModelName
    alias: Alias | None = None
    sharding: str | None = None
    mode: str | None = None
    nodes: list[str] | None = None  # sharded: in rank order (rank 0 takes the requests)
    backend: str | None = None  # sharded: MLX distributed backend, ring (default, ISTHMUS_SHARD_BACKEND) or jaccl
    ibv_devices: list[list[str | None]] | None = None  # jaccl: RDMA device matrix (mlx.distributed_config's)
    force: bool = False
    ttl_seconds: int | None = Field(default=None, ge=0)  # unload after this long idle (0: never)
    wait: bool = True  # False: 202 with a load job at once (GET /admin/clusters/{id}/loads/{job_id})


@dataclass
class LoadPlan:
    """A checked load holding its cluster: where the model goes and under which alias."""
    cluster_id: str
    alias: str
    model: str
    mode: str
    nodes: list[Node]
    ttl_seconds: int | None
    cluster: Cluster | None = None  # as read when checked (its sharded pools end before the load)
    group: bool = False  # one model over all the nodes, as an MLX distributed group
    backend: str | None = None  # the group's MLX distributed backend
    ibv_devices: list[list[str | None]] | None = None


class UnloadBody(NullsAsAbsent):
    alias: str | None = None


def _alias_for(listed: dict[str, Any]) -> str | None:
    """The model a ``/v1/models`` entry is an alias of, when it says so (an Isthmus upstream's x_odyssai)."""
    extra = listed.get("x_odyssai")
    alias_for = extra.get("alias_for") if isinstance(extra, dict) else None
    return alias_for if isinstance(alias_for, str) and alias_for != listed.get("id") else None


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
                         "ready": any(n in up for n in p.nodes), "degraded": p.note}
                 for alias, p in cluster.pools.items()}
        for alias, p in cluster.pools.items():
            if p.ranks:
                pools[alias].update(sharded.view(p, snap, up))
                pools[alias]["ready"] = pools[alias]["ready"] and pools[alias]["degraded"] is None
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
            cluster = Cluster(cluster_id=cluster_id, **config.model_dump(exclude={"protocol"}),
                              created_at=existing.created_at if existing else utcnow(), updated_at=utcnow())
        except ValueError:
            raise ApiError(400, _CLUSTER_ID_RULE, param="cluster_id") from None
        if config.api_key is None and existing is not None:
            cluster.api_key = existing.api_key  # a PUT without a key keeps the stored one
        if cluster.kind == "telemak":
            same_upstream = existing is not None and existing.kind == "telemak" and existing.url == cluster.url
            cluster.protocol = config.protocol or (existing.protocol if existing is not None and same_upstream
                                                   else await self._detect_protocol(cluster))
        if cluster.kind == "telemak" and not cluster.models:
            cluster.models = await self._discover_models(cluster)
        stored = await run_in_threadpool(self.store.put_cluster_config, cluster)
        snap = await self.snapshot()
        return self._summary(stored, snap)

    async def _detect_protocol(self, cluster: Cluster) -> UpstreamProtocol:
        """``agent`` when the upstream answers the node-agent status route (an Isthmus agent), else ``openai``:
        every single-Mac server (mlx_lm.server, LM Studio, Ollama, vLLM; an Isthmus agent too) serves /v1/*."""
        assert cluster.url
        try:
            status, data = await self.agents.request("GET", cluster.url, "/agent/v1/status", api_key=cluster.api_key)
        except ApiError:
            return "openai"
        return "agent" if status == 200 and isinstance(data, dict) and "model" in data else "openai"

    async def _discover_models(self, cluster: Cluster) -> list[str]:
        """A telemak upstream's model ids from its ``/v1/models`` (best effort: empty when it does not answer)."""
        assert cluster.url
        try:
            status, data = await self.agents.request("GET", cluster.url, "/v1/models", api_key=cluster.api_key)
        except ApiError:
            return []
        if status != 200 or not isinstance(data, dict) or not isinstance(data.get("data"), list):
            return []
        listed = [m for m in data["data"] if isinstance(m, dict) and m.get("id")]
        ids = {str(m["id"]) for m in listed}
        # An Isthmus upstream also lists aliases (`default`) of its model: the cluster's id is that one model.
        return [str(m["id"]) for m in listed if _alias_for(m) not in ids]

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
            if len(set(wanted)) != len(wanted):
                raise ApiError(400, "a node is named twice in 'nodes'", param="nodes")
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

    async def prepare_load(self, cluster_id: str, body: LoadBody) -> LoadPlan:
        """Check a load (mode, nodes up, fit, alias, busy nodes) and hold the cluster for it (one conditional
        write); the caller ends with :meth:`record_pool` or :meth:`release_load`."""
        mode = (body.sharding or body.mode or "solo").lower()
        if mode not in MODES:
            raise ApiError(400, f"unknown mode '{mode}'; use one of {', '.join(MODES)}", param="sharding")
        cluster = await self._cluster(cluster_id)
        if cluster.kind != "mlx":
            raise ApiError(400, f"'{cluster_id}' is a {cluster.kind} cluster: it serves its upstream's models.",
                           code="not_loadable")
        snap = await self.snapshot()
        nodes = self._pick_nodes(snap, cluster, body.nodes)
        group = mode != "solo" and len(nodes) > 1  # one model over all the nodes, as an MLX distributed group
        backend = sharded.backend_of(body.backend, body.ibv_devices, len(nodes)) if group else None
        if group:
            sharded.check_fit(nodes, body.model, mode, RAM_FRACTION)
        else:
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
        return LoadPlan(cluster_id=cluster_id, alias=alias, model=body.model, mode=mode, nodes=nodes,
                        ttl_seconds=body.ttl_seconds, cluster=cluster, group=group, backend=backend,
                        ibv_devices=body.ibv_devices)

    async def record_pool(self, plan: LoadPlan, ids: list[str], load_s: float) -> None:
        """The nodes that loaded now hold the model whatever happened elsewhere: the record follows them (a
        conditional read-modify-write, so a node that enrolled during the load keeps its place); the
        cluster's hold is released in the same write."""
        group = plan.group
        loaded = Pool(alias=plan.alias, model=plan.model, nodes=ids[:1] if group else ids,
                      mode=plan.mode, ranks=ids if group else [], backend=plan.backend,  # type: ignore[arg-type]
                      loaded_at=utcnow(), load_s=load_s, ttl_seconds=plan.ttl_seconds)

        def moved(current: Cluster) -> dict[str, Pool]:
            pools = {a: p.model_copy(update={"nodes": [x for x in p.nodes if x not in ids]})
                     for a, p in current.pools.items() if a != plan.alias and not set(p.ranks) & set(ids)}
            return {**{a: p for a, p in pools.items() if p.nodes}, plan.alias: loaded}

        await run_in_threadpool(self.store.update_pools, plan.cluster_id, moved, release=True)
        fresh = await self._cluster(plan.cluster_id)
        if fresh.default_alias is None:
            await run_in_threadpool(self.store.put_cluster_config,
                                    fresh.model_copy(update={"default_alias": plan.alias, "updated_at": utcnow()}))

    async def release_load(self, cluster_id: str) -> None:
        """Give the cluster's load hold back, pools unchanged (a load that failed everywhere)."""
        current = await run_in_threadpool(self.store.get_cluster, cluster_id)
        if current is not None:
            await run_in_threadpool(self.store.set_pools, cluster_id, current.pools, release=True)

    async def load(self, cluster_id: str, body: LoadBody) -> dict[str, Any]:
        """The blocking load: answers once every node loaded or failed (see LoadJobService for the job form)."""
        plan = await self.prepare_load(cluster_id, body)
        nodes = plan.nodes
        released = False
        group_info: dict[str, Any] = {}
        try:
            started = time.monotonic()
            await self.leave_groups(plan)
            if plan.group:
                try:
                    group_info = await sharded.load_group(self.agents, nodes, body.model, plan.mode,
                                                          plan.backend or "ring", plan.ibv_devices)
                except AgentUnreachable as exc:  # a rank gone before the group formed
                    raise nodes_unreachable(cluster_id, {exc.base_url: exc.message}) from None
            results = [] if plan.group else await asyncio.gather(
                *(self.agents.load(n.base_url, body.model) for n in nodes), return_exceptions=True)
            failed = {n.node_id: getattr(r, "message", type(r).__name__)
                      for n, r in zip(nodes, results, strict=not plan.group) if isinstance(r, BaseException)}
            if len(failed) == len(nodes):
                if all(isinstance(r, AgentUnreachable) for r in results):
                    raise nodes_unreachable(cluster_id, failed)
                reasons = "; ".join(f"{nid}: {why}" for nid, why in failed.items())
                raise ApiError(502, f"load of '{body.model}' failed on {reasons}", code="load_failed")
            load_s = round(time.monotonic() - started, 3)
            ids = [n.node_id for n in nodes if n.node_id not in failed]
            await self.record_pool(plan, ids, load_s)
            released = True
        finally:
            if not released:
                await self.release_load(cluster_id)
        answer = {"loaded": True, "cluster": cluster_id, "alias": plan.alias, "model": body.model, "nodes": ids,
                  "mode": plan.mode, "load_s": load_s, **group_info}
        return {**answer, "failed": failed} if failed else answer

    async def leave_groups(self, plan: LoadPlan) -> None:
        """A node of a sharded pool leaves its group before any load on it (and restarts: see
        sharded.wait_fresh)."""
        if plan.cluster is not None:
            await self._unload_nodes_pools(plan.cluster, plan.nodes)

    async def unload(self, cluster_id: str, body: UnloadBody) -> dict[str, Any]:
        cluster = await self._cluster(cluster_id)
        if body.alias and body.alias not in cluster.pools:
            raise ApiError(404, f"cluster '{cluster_id}' has no pool '{body.alias}'.", code="not_found")
        aliases = [body.alias] if body.alias else list(cluster.pools)
        ids = sorted({n for a in aliases for n in [*cluster.pools[a].nodes, *cluster.pools[a].ranks]})
        snap = await self.snapshot()
        by_id = {n.node_id: n for n in snap.nodes}
        groups = [[by_id[n] for n in cluster.pools[a].ranks if n in by_id] for a in aliases if cluster.pools[a].ranks]
        in_group = {n.node_id for g in groups for n in g}
        targets = [n for n in snap.nodes if n.node_id in ids and n.node_id not in in_group]
        results = await asyncio.gather(*(self.agents.unload(n.base_url) for n in targets),
                                       *(sharded.unload_group(self.agents, g) for g in groups), return_exceptions=True)
        errors = {n.node_id: getattr(r, "message", type(r).__name__)
                  for n, r in zip(targets, results, strict=False) if isinstance(r, BaseException)}
        for r in results[len(targets):]:
            errors.update(r if isinstance(r, dict) else {})
        await run_in_threadpool(self.store.update_pools, cluster_id,
                                lambda current: {a: p for a, p in current.pools.items() if a not in aliases})
        return {"unloaded": True, "cluster": cluster_id, "aliases": aliases, "nodes": ids, "errors": errors}

    async def _unload_nodes_pools(self, cluster: Cluster, nodes: list[Node]) -> None:
        """Before any load on these nodes: the sharded pools they are ranks of end (the whole group is unloaded,
        its agents restart, and the load waits for them), so no rank keeps a part of an old model."""
        ids = {n.node_id for n in nodes}
        for alias, pool in cluster.pools.items():
            if set(pool.ranks) & ids:
                snap = await self.snapshot()
                await sharded.unload_group(self.agents, [n for r in pool.ranks for n in snap.nodes if n.node_id == r])

                def without(current: Cluster, gone: str = alias) -> dict[str, Pool]:
                    return {k: p for k, p in current.pools.items() if k != gone}

                await run_in_threadpool(self.store.update_pools, cluster.cluster_id, without)
