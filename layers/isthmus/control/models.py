"""Records of the control plane. They are stored as JSON documents in DynamoDB and read into a
:class:`Snapshot` that the routing resolver works on (pure, easy to test)."""

from __future__ import annotations

import os
from datetime import UTC, datetime
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, model_validator

from isthmus_contracts.control import ModelOnDisk, NodeLoad

ClusterKind = Literal["mlx", "telemak"]
# What a telemak upstream speaks: Isthmus's node-agent protocol (an `isthmus agent --serve-api`), or the OpenAI
# /v1/* surface (mlx_lm.server, LM Studio, Ollama, vLLM): chat completions + models, its api_key as a Bearer.
UpstreamProtocol = Literal["agent", "openai"]
LoadMode = Literal["solo", "pipeline", "tensor"]
RESERVED_CLUSTER_IDS = frozenset({"clusters", "nodes", "settings", "sync", "coeos", "pools"})
ID_PATTERN = r"^[A-Za-z0-9._\-]{1,64}$"


def utcnow() -> datetime:
    return datetime.now(UTC)


def stale_seconds() -> float:
    """A node whose last heartbeat is older than this is down (``ISTHMUS_NODE_STALE_SECONDS``, default 15)."""
    try:
        return float(os.environ.get("ISTHMUS_NODE_STALE_SECONDS", "15"))
    except ValueError:
        return 15.0


class NullsAsAbsent(BaseModel):
    """A request body where an explicit ``null`` means "not given" (clients send nulls for unset fields)."""

    model_config = ConfigDict(defer_build=True)

    @model_validator(mode="before")
    @classmethod
    def _drop_nulls(cls, data: Any) -> Any:
        return {k: v for k, v in data.items() if v is not None} if isinstance(data, dict) else data


class Pool(BaseModel):
    """A model loaded on some nodes of a cluster, published under an alias."""

    model_config = ConfigDict(defer_build=True)

    alias: str
    model: str
    nodes: list[str]
    mode: LoadMode = "solo"
    # pipeline/tensor over N>1 nodes: the node of each rank (rank 0 = ``nodes[0]``, the one taking requests)
    ranks: list[str] = Field(default_factory=list)
    backend: str | None = None  # the MLX distributed backend of a sharded pool (ring, jaccl)
    note: str | None = None  # a sharded pool reloaded on fewer nodes, or unloaded (no nodes), and why
    loaded_at: datetime
    load_s: float = 0.0
    ttl_seconds: int | None = None  # idle time before the pool is unloaded (None: the settings default)


class Cluster(BaseModel):
    model_config = ConfigDict(defer_build=True)
    cluster_id: str = Field(pattern=ID_PATTERN)
    kind: ClusterKind = "mlx"
    default_alias: str | None = None
    fallback: str | None = None  # an alias tried when the requested one is not servable
    url: str | None = None  # telemak: the upstream's base URL (OpenAI/Anthropic-compatible)
    api_key: str | None = Field(default=None, repr=False)  # telemak upstream key; never logged or listed
    models: list[str] = Field(default_factory=list)  # telemak: the upstream's model ids
    protocol: UpstreamProtocol = "agent"  # telemak: what the upstream speaks (records before it: the agent's)
    description: str = ""
    pools: dict[str, Pool] = Field(default_factory=dict)  # alias -> pool
    loading_until: datetime | None = None  # a load holds the cluster until then (409 for another)
    created_at: datetime = Field(default_factory=utcnow)
    updated_at: datetime = Field(default_factory=utcnow)

    def public(self) -> dict[str, object]:
        data = self.model_dump(mode="json", exclude={"api_key", "loading_until"})
        data["has_api_key"] = bool(self.api_key)
        return data


class Node(BaseModel):
    model_config = ConfigDict(defer_build=True)
    node_id: str
    cluster_id: str
    base_url: str
    chip: str = ""
    ram_bytes: int = 0
    platform: str = ""
    models: list[ModelOnDisk] = Field(default_factory=list)
    load: NodeLoad = Field(default_factory=NodeLoad)
    enrolled_at: datetime = Field(default_factory=utcnow)
    last_seen: datetime = Field(default_factory=utcnow)

    def is_up(self, now: datetime, stale: float) -> bool:
        return (now - self.last_seen).total_seconds() <= stale

    def model_size(self, model: str) -> int | None:
        for m in self.models:
            if model in (m.name, m.path):
                return m.size_bytes
        return None


class GlobalSettings(BaseModel):
    """Server-wide defaults (``GET``/``PUT /admin/settings``); read per request, so a PUT applies to live pools."""

    model_config = ConfigDict(defer_build=True)

    enable_thinking_default: bool | None = None
    pool_ttl_seconds_default: int | None = Field(default=None, ge=0)
    kv_q8_default: bool = False
    system_prefix_text: str = ""
    claude_opus_alias: str | None = None
    claude_sonnet_alias: str | None = None
    claude_haiku_alias: str | None = None
    updated_at: datetime | None = None


class SettingsUpdate(BaseModel):  # nulls matter here: null resets a nullable default
    model_config = ConfigDict(defer_build=True)
    enable_thinking_default: bool | None = None
    pool_ttl_seconds_default: int | None = Field(default=None, ge=0)
    kv_q8_default: bool | None = None
    system_prefix_text: str | None = None
    claude_opus_alias: str | None = None
    claude_sonnet_alias: str | None = None
    claude_haiku_alias: str | None = None


class Snapshot(BaseModel):
    """Everything routing needs, read once per request."""

    model_config = ConfigDict(defer_build=True)

    clusters: list[Cluster] = Field(default_factory=list)
    nodes: list[Node] = Field(default_factory=list)
    settings: GlobalSettings = Field(default_factory=GlobalSettings)
    cloud_aliases: list[str] = Field(default_factory=list)
    cloud_owners: dict[str, str] = Field(default_factory=dict)  # cloud alias -> provider id
    now: datetime = Field(default_factory=utcnow)
    stale_seconds: float = Field(default_factory=stale_seconds)

    def node(self, node_id: str) -> Node | None:
        return next((n for n in self.nodes if n.node_id == node_id), None)

    def up_nodes(self, node_ids: list[str] | None = None, cluster_id: str | None = None) -> list[Node]:
        out = [n for n in self.nodes if n.is_up(self.now, self.stale_seconds)]
        if cluster_id is not None:
            out = [n for n in out if n.cluster_id == cluster_id]
        if node_ids is not None:
            order = {nid: i for i, nid in enumerate(node_ids)}
            out = sorted((n for n in out if n.node_id in order), key=lambda n: order[n.node_id])
        return out

    def cluster(self, cluster_id: str) -> Cluster | None:
        return next((c for c in self.clusters if c.cluster_id == cluster_id), None)
