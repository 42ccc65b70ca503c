"""Node enrollment and heartbeats. A node is up while its last heartbeat is younger than
``ISTHMUS_NODE_STALE_SECONDS``; the record's TTL attribute only cleans up long-gone nodes."""

from __future__ import annotations

from typing import Any

from starlette.concurrency import run_in_threadpool

from isthmus.control.models import RESERVED_CLUSTER_IDS, Cluster, Node, Pool, stale_seconds, utcnow
from isthmus.errors import ApiError
from isthmus.ports.control import ControlStore, PoolsBusy
from isthmus_contracts.control import EnrollRequest, HeartbeatRequest, NodeLoad

HEARTBEAT_INTERVAL_S = 5.0


def heartbeat_interval() -> float:
    return max(0.2, min(HEARTBEAT_INTERVAL_S, stale_seconds() / 3))


class NodeService:
    def __init__(self, store: ControlStore) -> None:
        self.store = store

    async def enroll(self, req: EnrollRequest) -> dict[str, Any]:
        return await run_in_threadpool(self._enroll, req)

    def _enroll(self, req: EnrollRequest) -> dict[str, Any]:
        if req.cluster_id in RESERVED_CLUSTER_IDS:
            raise ApiError(400, f"'{req.cluster_id}' is a reserved name and cannot be a cluster id.",
                           param="cluster_id")
        now = utcnow()
        cluster = self.store.get_cluster(req.cluster_id)
        if cluster is None:  # first node of a cluster creates it (an mlx pool)
            cluster = self.store.put_cluster_config(Cluster(cluster_id=req.cluster_id, kind="mlx"))
        elif cluster.kind != "mlx":
            raise ApiError(409, f"cluster '{req.cluster_id}' is a {cluster.kind} cluster; nodes cannot join it.",
                           code="conflict")
        previous = self.store.get_node(req.node_id)
        node = Node(node_id=req.node_id, cluster_id=req.cluster_id, base_url=req.base_url.rstrip("/"),
                    chip=req.chip, ram_bytes=req.ram_bytes, platform=req.platform, models=req.models,
                    load=req.load, enrolled_at=previous.enrolled_at if previous else now, last_seen=now)
        self.store.put_node(node)
        self._adopt_loaded_model(cluster, node)
        return {"node_id": node.node_id, "cluster_id": node.cluster_id, "enrolled": True,
                "heartbeat_interval_s": heartbeat_interval(), "stale_after_s": stale_seconds()}

    def _adopt_loaded_model(self, cluster: Cluster, node: Node) -> None:
        """A node that starts with a model already loaded joins (or forms) the pool serving that model. A
        conditional read-modify-write: two nodes enrolling at once into one cluster both end up in the pool
        (a plain write let the later one replace the pool with only itself)."""
        model = node.load.loaded_model
        if not model:
            return

        def joined(current: Cluster) -> dict[str, Pool] | None:
            if any(node.node_id in p.nodes or node.node_id in p.ranks for p in current.pools.values()):
                return None
            pools = dict(current.pools)
            same = next((p for p in pools.values() if p.model == model), None)
            if same is not None:
                pools[same.alias] = same.model_copy(update={"nodes": [*same.nodes, node.node_id]})
                return pools
            alias = current.default_alias or model.rstrip("/").rsplit("/", 1)[-1]
            if alias in pools or any(alias in c.pools or alias == c.cluster_id
                                     for c in self.store.list_clusters() if c.cluster_id != current.cluster_id):
                return None
            pools[alias] = Pool(alias=alias, model=model, nodes=[node.node_id], loaded_at=utcnow())
            return pools

        try:
            self.store.update_pools(cluster.cluster_id, joined)
        except PoolsBusy:
            raise ApiError(503, f"The pools of cluster '{cluster.cluster_id}' are changing; enroll again shortly.",
                           code="pools_busy", headers={"Retry-After": "1"}) from None

    async def heartbeat(self, node_id: str, req: HeartbeatRequest) -> dict[str, Any]:
        load = req.model_dump(exclude={"models"})
        known = await run_in_threadpool(self.store.heartbeat, node_id, NodeLoad.model_validate(load),
                                        req.models, utcnow())
        if not known:
            raise ApiError(404, f"Node '{node_id}' is not enrolled; enroll again.", code="node_not_enrolled")
        return {"ok": True, "node_id": node_id, "heartbeat_interval_s": heartbeat_interval()}

    async def remove(self, node_id: str) -> None:
        if not await run_in_threadpool(self.store.delete_node, node_id):
            raise ApiError(404, f"Node '{node_id}' is not enrolled.", code="not_found")
