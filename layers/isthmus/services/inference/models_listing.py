"""``GET /v1/models``: the servable models (loaded pools, telemak clusters, cloud aliases, CoeOS when
enabled), and with ``include_unloaded`` the on-disk inventory as ``ready: false``."""

from __future__ import annotations

from typing import Any

from isthmus.control.models import Cluster, ModelOnDisk, Pool, Snapshot
from isthmus.errors import ApiError
from isthmus.routing.coeos import COEOS_NAME, CoeosConfig
from isthmus.routing.resolver import pool_targets

OWNER = "isthmus"


def _entry(model_id: str, *, created: int, root: str, owned_by: str = OWNER, **x: Any) -> dict[str, Any]:
    block: dict[str, Any] = {
        "ready": True, "loaded": True, "backend": None, "pool": None, "nodes": [], "alias_for": None, "kind": "model",
        "context_length": None, "quantization": None, "supports_tools": None,
        "supports_vision": None, "supports_streaming": True, "supports_embeddings": None}
    block.update(x)
    return {"id": model_id, "object": "model", "created": created, "owned_by": owned_by, "root": root,
            "x_odyssai": block}


def _meta(snap: Snapshot, model: str, nodes: list[str]) -> dict[str, Any]:
    for node in snap.nodes:
        if nodes and node.node_id not in nodes:
            continue
        for m in node.models:
            if model in (m.name, m.path):
                return {"context_length": m.context_length, "quantization": m.quantization,
                        "supports_tools": m.supports_tools, "supports_vision": m.supports_vision,
                        **({"supports_embeddings": True, "supports_streaming": False} if m.embedding else {})}
    return {}


def _pool_entries(snap: Snapshot, cluster: Cluster, alias: str, pool: Pool, *,
                  include_down: bool) -> list[dict[str, Any]]:
    """A pool's alias (and concrete model) entries, ready when a node of it is up (a fresh heartbeat, the
    snapshot's own time); a pool with no node up is left out, or with ``include_down`` listed as not ready
    (``loaded`` stays true: the pool exists, its nodes are down or frozen)."""
    ready_nodes = [t.node_id for t in pool_targets(snap, cluster, pool)]
    if not ready_nodes and not include_down:
        return []
    created = int(pool.loaded_at.timestamp())
    common = {"backend": "mlx", "pool": cluster.cluster_id, "nodes": ready_nodes, "ready": bool(ready_nodes),
              "sharding": pool.mode, "ranks": [{"rank": r, "node_id": n} for r, n in enumerate(pool.ranks)],
              **_meta(snap, pool.model, [])}
    out = [_entry(alias, created=created, root=pool.model, alias_for=pool.model, kind="alias", **common)]
    if pool.model != alias:
        out.append(_entry(pool.model, created=created, root=pool.model, kind="model", **common))
    return out


def list_models(snap: Snapshot, coeos: CoeosConfig | None, *, include_unloaded: bool = False) -> list[dict[str, Any]]:
    entries: list[dict[str, Any]] = []
    for cluster in snap.clusters:
        created = int(cluster.created_at.timestamp())
        if cluster.kind == "telemak":
            if not cluster.url:
                continue
            default = cluster.default_alias or (cluster.models[0] if len(cluster.models) == 1 else None)
            entries.append(_entry(cluster.cluster_id, created=created, root=default or cluster.cluster_id,
                                  backend="telemak", pool=cluster.cluster_id, alias_for=default, kind="telemak"))
            entries += [_entry(f"{cluster.cluster_id}:{m}", created=created, root=m, backend="telemak",
                               pool=cluster.cluster_id, alias_for=m, kind="telemak") for m in cluster.models]
            continue
        for alias, pool in cluster.pools.items():
            entries += _pool_entries(snap, cluster, alias, pool, include_down=include_unloaded)
    entries += [_entry(a, created=0, root=a, owned_by=snap.cloud_owners.get(a) or a.split(":", 1)[0],
                       backend="cloud", kind="cloud") for a in snap.cloud_aliases]
    if coeos is not None and coeos.enabled:
        created = int(coeos.updated_at.timestamp()) if coeos.updated_at else 0
        entries.append(_entry(COEOS_NAME, created=created, root=COEOS_NAME, backend="coeos", kind="router",
                              axes=[a.key for a in coeos.axes]))
    seen: dict[str, dict[str, Any]] = {}
    for e in entries:
        seen.setdefault(e["id"], e)
    if include_unloaded:
        for e in _on_disk(snap):
            seen.setdefault(e["id"], e)
    return list(seen.values())


def _on_disk(snap: Snapshot) -> list[dict[str, Any]]:
    found: dict[str, tuple[ModelOnDisk, list[str], set[str]]] = {}
    for node in snap.nodes:
        for m in node.models:
            _, holders, clusters = found.setdefault(m.name, (m, [], set()))
            holders.append(node.node_id)
            clusters.add(node.cluster_id)
    out = []
    for name, (m, holders, clusters) in sorted(found.items()):
        out.append(_entry(name, created=0, root=m.path or name, ready=False, loaded=False, backend="mlx",
                          pool=sorted(clusters)[0] if len(clusters) == 1 else None, nodes=holders, kind="on_disk",
                          context_length=m.context_length, quantization=m.quantization,
                          supports_tools=m.supports_tools, supports_vision=m.supports_vision,
                          size_bytes=m.size_bytes))
    return out


def get_model(snap: Snapshot, coeos: CoeosConfig | None, model_id: str) -> dict[str, Any]:
    entries = list_models(snap, coeos, include_unloaded=True)
    for exact in (True, False):
        for e in entries:
            if (e["id"] == model_id) if exact else (e["id"].lower() == model_id.lower()):
                return e
    raise ApiError(404, f"The model '{model_id}' does not exist.", code="model_not_found", param="model")
