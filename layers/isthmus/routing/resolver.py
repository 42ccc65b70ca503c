"""Model resolution: the request's ``model`` -> a :class:`Route` (backend, cluster, concrete model, nodes).

Pure over a :class:`~isthmus.control.models.Snapshot` (no I/O), so every rule is a unit test. Order:
a single-Mac upstream (telemak) id or ``<cluster>:<model>``; an exact published cloud alias; a local pool
by cluster name (its default alias), by alias, by concrete model path (case-insensitive); the cluster's
``fallback`` alias; ``claude-*`` names by tier on ``/v1/messages``; else 404 ``model_not_loaded`` listing
the ready models. ``CoeOS`` is resolved by :mod:`isthmus.routing.coeos` before it gets here.
"""

from __future__ import annotations

from datetime import timedelta
from typing import Literal

from pydantic import BaseModel, ConfigDict, Field

from isthmus.control.models import Cluster, Pool, Snapshot, UpstreamProtocol
from isthmus.errors import ApiError

Backend = Literal["mlx", "telemak", "cloud"]
COEOS_ID = "CoeOS"


class NodeTarget(BaseModel):
    model_config = ConfigDict(defer_build=True)
    node_id: str
    base_url: str
    api_key: str | None = Field(default=None, repr=False, exclude=True)  # sent as Bearer; never serialized or logged


class Route(BaseModel):
    model_config = ConfigDict(defer_build=True)
    backend: Backend
    requested: str
    model: str  # the concrete model behind the requested id
    cluster: str | None = None
    alias: str | None = None
    nodes: list[NodeTarget] = Field(default_factory=list)  # candidates, best first (mlx)
    upstream_url: str | None = None  # telemak: the upstream base URL
    upstream_protocol: UpstreamProtocol = "agent"  # telemak: what the upstream speaks
    provider: str | None = None  # cloud: the provider publishing the alias (isthmus.backends.cloud serves it)
    upstream_api_key: str | None = Field(default=None, repr=False, exclude=True)  # never serialized or logged
    via: str = "alias"  # how the id matched: telemak, cloud, cluster, alias, model, fallback, claude_tier, coeos
    enable_thinking: bool | None = None  # defaults the caller applies when the client did not set them
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
    coeos_axis: str | None = None
    system_prefix: str | None = None  # settings.system_prefix_text, for the caller to prepend

    @property
    def base_urls(self) -> list[str]:
        return [n.base_url for n in self.nodes]


def is_coeos(model: str) -> bool:
    return model.strip().lower() == COEOS_ID.lower()


# Retry-After of a 503 for a pool with no node up (seconds): a loading model takes a while, a node that missed
# its heartbeats may be back within one interval.
LOADING_RETRY_AFTER_S = "5"
NO_NODE_RETRY_AFTER_S = "2"


def pool_targets(snapshot: Snapshot, cluster: Cluster, pool: Pool) -> list[NodeTarget]:
    """Up nodes of the pool, less those that reported nothing loaded (or a model still loading) well after the
    pool was loaded (a restarted agent that lost its model); the grace covers a heartbeat that raced the load
    (sent while the load that formed the pool was still running)."""
    settled = pool.loaded_at + timedelta(seconds=snapshot.stale_seconds / 2)
    if pool.ranks and len(snapshot.up_nodes(pool.ranks, cluster_id=cluster.cluster_id)) < len(pool.ranks):
        return []  # a sharded pool answers only with every rank up (until the control plane heals it)
    return [NodeTarget(node_id=n.node_id, base_url=n.base_url)
            for n in snapshot.up_nodes(pool.nodes, cluster_id=cluster.cluster_id)
            if not (n.load.loaded_model is None and n.last_seen > settled)]


def pool_loading(snapshot: Snapshot, cluster: Cluster, pool: Pool) -> list[str]:
    """Up nodes of the pool that report loading a model with nothing loaded yet (a restarted agent reloading):
    when no node is a target, these make the pool "loading" rather than "no node up"."""
    return [n.node_id for n in snapshot.up_nodes(pool.nodes, cluster_id=cluster.cluster_id)
            if n.load.loaded_model is None and n.load.loading_model is not None]


def no_node_up(snapshot: Snapshot, cluster: Cluster, pool: Pool) -> ApiError:
    """The 503 for a pool none of whose nodes can take a request now; always with Retry-After, since it is a
    state that passes (``model_loading`` when the pool's up nodes are loading, else ``no_ready_nodes``)."""
    loading = pool_loading(snapshot, cluster, pool)
    if loading:
        return ApiError(503, f"Pool '{pool.alias}' on cluster '{cluster.cluster_id}' is loading its model "
                        f"(node {', '.join(loading)}); retry shortly.", code="model_loading", param="model",
                        headers={"Retry-After": LOADING_RETRY_AFTER_S})
    return ApiError(503, f"No node of pool '{pool.alias}' on cluster '{cluster.cluster_id}' is up.",
                    code="no_ready_nodes", param="model", headers={"Retry-After": NO_NODE_RETRY_AFTER_S})


def _default_pool(cluster: Cluster) -> Pool | None:
    if cluster.default_alias and cluster.default_alias in cluster.pools:
        return cluster.pools[cluster.default_alias]
    if len(cluster.pools) == 1:
        return next(iter(cluster.pools.values()))
    return None


def ready_ids(snapshot: Snapshot) -> list[str]:
    """Every id a request can use right now: pool aliases with an up node, telemak ids, cloud aliases."""
    out: list[str] = []
    for cluster in snapshot.clusters:
        if cluster.kind == "telemak" and cluster.url:
            out.append(cluster.cluster_id)
            out += [f"{cluster.cluster_id}:{m}" for m in cluster.models]
            continue
        out += [alias for alias, pool in cluster.pools.items() if pool_targets(snapshot, cluster, pool)]
    out += snapshot.cloud_aliases
    return list(dict.fromkeys(out))


def _telemak(snapshot: Snapshot, name: str) -> Route | None:
    lowered = name.lower()
    for cluster in snapshot.clusters:
        if cluster.kind != "telemak" or not cluster.url:
            continue
        cid = cluster.cluster_id.lower()
        if lowered == cid:
            if cluster.default_alias:
                model = cluster.default_alias
            elif len(cluster.models) == 1:
                model = cluster.models[0]
            elif not cluster.models:
                model = cluster.cluster_id
            else:
                raise ApiError(400, f"'{name}' serves several models ({', '.join(cluster.models)}); "
                               f"ask for '{cluster.cluster_id}:<model>'.", code="ambiguous_model", param="model")
            return Route(backend="telemak", requested=name, model=model, cluster=cluster.cluster_id,
                         upstream_url=cluster.url, upstream_api_key=cluster.api_key,
                         upstream_protocol=cluster.protocol, via="telemak")
        if lowered.startswith(cid + ":"):
            wanted = name[len(cid) + 1:]
            match = next((m for m in cluster.models if m.lower() == wanted.lower()), None)
            if match is None and cluster.models:
                raise ApiError(404, f"'{cluster.cluster_id}' does not serve '{wanted}' "
                               f"(it serves {', '.join(cluster.models)}).", code="model_not_found", param="model")
            return Route(backend="telemak", requested=name, model=match or wanted, cluster=cluster.cluster_id,
                         upstream_url=cluster.url, upstream_api_key=cluster.api_key,
                         upstream_protocol=cluster.protocol, via="telemak")
    return None


def _local_match(snapshot: Snapshot, name: str) -> tuple[Cluster, Pool | None, str] | None:
    """(cluster, pool or None when the cluster has no usable pool, how it matched)."""
    lowered = name.lower()
    mlx = [c for c in snapshot.clusters if c.kind == "mlx"]
    for cluster in mlx:
        if cluster.cluster_id.lower() == lowered:
            return cluster, _default_pool(cluster), "cluster"
    for cluster in mlx:
        for alias, pool in cluster.pools.items():
            if alias.lower() == lowered:
                return cluster, pool, "alias"
    for cluster in mlx:
        for pool in cluster.pools.values():
            concrete = pool.model.lower().rstrip("/")
            if lowered in (concrete, concrete.rsplit("/", 1)[-1]):
                return cluster, pool, "model"
    return None


def _claude_tier(snapshot: Snapshot, name: str) -> str | None:
    lowered = name.lower()
    if not lowered.startswith("claude-"):
        return None
    s = snapshot.settings
    for tier, alias in (("opus", s.claude_opus_alias), ("sonnet", s.claude_sonnet_alias),
                        ("haiku", s.claude_haiku_alias)):
        if tier in lowered and alias:
            return alias
    return None


def not_loaded(snapshot: Snapshot, name: str) -> ApiError:
    ready = ready_ids(snapshot)
    listing = ", ".join(ready) if ready else "none"
    return ApiError(404, f"The model '{name}' is not loaded. Ready models: {listing}.", code="model_not_loaded",
                    param="model", detail={"message": f"model '{name}' is not loaded", "ready_models": ready})


def resolve(snapshot: Snapshot, model: str, *, dialect: str = "openai", _depth: int = 0) -> Route:
    """The route for ``model``; raises :class:`ApiError` (400 ambiguous, 404 not loaded)."""
    name = model.strip()
    if not name:
        raise ApiError(400, "model is required", param="model", code="invalid_value")
    if _depth > 3:
        raise ApiError(508, f"alias loop while resolving '{model}'", code="alias_loop")
    if is_coeos(name):
        raise ApiError(400, "CoeOS is resolved by the CoeOS router", code="coeos_unresolved")
    telemak = _telemak(snapshot, name)
    if telemak is not None:
        return telemak
    cloud = next((a for a in snapshot.cloud_aliases if a == name), None)
    if cloud is not None:
        return Route(backend="cloud", requested=name, model=cloud, alias=cloud,
                     provider=snapshot.cloud_owners.get(cloud), via="cloud")
    local = _local_match(snapshot, name)
    if local is not None:
        cluster, pool, via = local
        nodes = pool_targets(snapshot, cluster, pool) if pool else []
        if pool and nodes:
            return Route(backend="mlx", requested=name, model=pool.model, cluster=cluster.cluster_id,
                         alias=pool.alias, nodes=nodes, via=via)
        if cluster.fallback and cluster.fallback.lower() != name.lower():
            route = resolve(snapshot, cluster.fallback, dialect=dialect, _depth=_depth + 1)
            return route.model_copy(update={"requested": name, "via": "fallback"})
        if pool:
            raise no_node_up(snapshot, cluster, pool)
        raise not_loaded(snapshot, name)
    if dialect == "anthropic":
        tier_alias = _claude_tier(snapshot, name)
        if tier_alias:
            route = resolve(snapshot, tier_alias, dialect=dialect, _depth=_depth + 1)
            return route.model_copy(update={"requested": name, "via": "claude_tier"})
    raise not_loaded(snapshot, name)


def servable(snapshot: Snapshot, model: str) -> bool:
    try:
        resolve(snapshot, model)
    except ApiError:
        return False
    return True
