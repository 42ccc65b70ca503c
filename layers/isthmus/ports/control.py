"""Ports of the control plane: its metadata store, session pins, node agents, the CoeOS decider and the
cloud catalog. Store ports are synchronous (boto3); async services call them through a thread pool."""

from __future__ import annotations

from collections.abc import Callable
from datetime import datetime
from typing import Any, Protocol

from isthmus.control.models import Cluster, GlobalSettings, Node, Pool
from isthmus_contracts.control import ModelOnDisk, NodeLoad


class ControlStore(Protocol):
    def list_clusters(self) -> list[Cluster]: ...
    def get_cluster(self, cluster_id: str) -> Cluster | None: ...
    def put_cluster_config(self, cluster: Cluster) -> Cluster:
        """Create or update a cluster's configuration; its pools are kept."""
        ...
    def delete_cluster(self, cluster_id: str) -> bool: ...
    def acquire_load(self, cluster_id: str, until: datetime, now: datetime) -> bool:
        """Hold the cluster for a load (one conditional write); False when another load holds it."""
        ...
    def set_pools(self, cluster_id: str, pools: dict[str, Pool], *, release: bool) -> None:
        """Write the cluster's pools as given (the caller holds the cluster's load); ``release`` drops the hold."""
        ...
    def update_pools(self, cluster_id: str, change: Callable[[Cluster], dict[str, Pool] | None], *,
                     release: bool = False) -> dict[str, Pool] | None:
        """Read-modify-write of the cluster's pools without a lost update: ``change`` gets the cluster as stored
        and returns its new pools (None: nothing to write); the write is conditional on no other pools write
        having happened since the read, and on a conflict it is read and applied again. Returns the pools
        written (None when nothing was, or the cluster does not exist); raises :class:`PoolsBusy` when other
        writers kept winning."""
        ...
    def list_nodes(self, cluster_id: str | None = None) -> list[Node]: ...
    def get_node(self, node_id: str) -> Node | None: ...
    def put_node(self, node: Node) -> None: ...
    def heartbeat(self, node_id: str, load: NodeLoad, models: list[ModelOnDisk] | None, now: datetime) -> bool:
        """Record a heartbeat; False when the node is unknown (it must enroll again)."""
        ...
    def delete_node(self, node_id: str) -> bool: ...
    def get_settings(self) -> GlobalSettings: ...
    def put_settings(self, settings: GlobalSettings) -> None: ...
    def get_doc(self, name: str) -> Any: ...
    def put_doc(self, name: str, value: Any) -> None: ...
    def list_docs(self, prefix: str) -> list[Any]: ...


class PoolsBusy(RuntimeError):
    """Other writers kept changing a cluster's pools while an update tried to apply (retry later)."""


class SessionStore(Protocol):
    def get(self, session_id: str, now: datetime) -> tuple[str, str] | None:
        """(node id, cluster id) that served the session last, unless expired (TTL filtered on read)."""
        ...
    def put(self, session_id: str, node_id: str, cluster_id: str, ttl_seconds: int, now: datetime) -> None: ...


class AgentPort(Protocol):
    async def load(self, base_url: str, model: str) -> dict[str, Any]: ...
    async def unload(self, base_url: str) -> dict[str, Any]: ...
    async def status(self, base_url: str) -> dict[str, Any]: ...
    async def request(self, method: str, base_url: str, path: str, body: Any = None, timeout: float | None = None,
                      api_key: str | None = None) -> tuple[int, Any]: ...


class Decider(Protocol):
    async def decide(self, base_urls: list[str], model: str, prompt: str) -> str:
        """The decider model's raw answer to ``prompt`` (the CoeOS service parses ``AXIS: <key>``)."""
        ...


class CloudCatalog(Protocol):
    def aliases(self) -> list[str]:
        """Published cloud aliases (e.g. ``or:claude-haiku``)."""
        ...

    def owners(self) -> dict[str, str]:
        """Published cloud alias -> the provider id that publishes it."""
        ...


class NoCloudCatalog:
    """No cloud providers (tests, single-Mac mode)."""

    def aliases(self) -> list[str]:
        return []

    def owners(self) -> dict[str, str]:
        return {}
