"""The control-plane wire models that node agents send: enrollment and heartbeats (``/admin/nodes/*``).

An agent enrolls once at start (and again if the control plane forgets it), then heartbeats every few
seconds. Both are shared by the control plane (layers/) and the agent side (local_runtime/enrollment.py).
"""

from __future__ import annotations

from pydantic import BaseModel, ConfigDict, Field


class ModelOnDisk(BaseModel):
    """One model folder a node holds: what ``?include_unloaded=true`` lists and what a load checks for RAM."""

    model_config = ConfigDict(defer_build=True)

    name: str
    size_bytes: int = Field(default=0, ge=0)
    path: str | None = None
    context_length: int | None = None
    quantization: str | None = None
    supports_tools: bool | None = None
    supports_vision: bool | None = None
    embedding: bool | None = None  # a sentence-embedding model (serves /v1/embeddings, not chat)


class NodeLoad(BaseModel):
    """What a heartbeat reports: load, busy/idle, the loaded model (or the one loading) and prefix-cache stats."""

    model_config = ConfigDict(defer_build=True)

    busy: bool = False
    active: int = Field(default=0, ge=0)
    queue_depth: int = Field(default=0, ge=0)
    loaded_model: str | None = None
    # The model the node is loading now (it answers 503 model_loading meanwhile): a pool whose up nodes are all
    # loading is "come back shortly" (503 model_loading + Retry-After), not "no node".
    loading_model: str | None = None
    cache_entries: int = Field(default=0, ge=0)
    cache_bytes: int = Field(default=0, ge=0)
    rss_bytes: int = Field(default=0, ge=0)
    shard_error: str | None = None  # a sharded group's rank 0 lost a peer (the pool is degraded)


class EnrollRequest(BaseModel):
    model_config = ConfigDict(defer_build=True)
    node_id: str = Field(min_length=1, max_length=128, pattern=r"^[A-Za-z0-9._:\-]+$")
    base_url: str = Field(min_length=1, max_length=512, pattern=r"^https?://")
    cluster_id: str = Field(default="default", min_length=1, max_length=64, pattern=r"^[A-Za-z0-9._\-]+$")
    chip: str = ""
    ram_bytes: int = Field(default=0, ge=0)
    platform: str = ""
    models: list[ModelOnDisk] = Field(default_factory=list)
    load: NodeLoad = Field(default_factory=NodeLoad)


class HeartbeatRequest(NodeLoad):
    models: list[ModelOnDisk] | None = None  # the on-disk inventory, when it changed (None: unchanged)


__all__ = ["EnrollRequest", "HeartbeatRequest", "ModelOnDisk", "NodeLoad"]
