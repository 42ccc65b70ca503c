"""The admin API's services, built once per process (one control store and agent client shared by all)."""

from __future__ import annotations

from functools import lru_cache
from typing import TYPE_CHECKING, Any

from isthmus.services.clusters import ClusterService

if TYPE_CHECKING:  # the others are imported on the first call (cold start of a refused request stays small)
    from isthmus.services.admin_settings import SettingsService
    from isthmus.services.nodes import NodeService
    from isthmus.services.providers import ProviderService
    from isthmus.services.sync_jobs import SyncService


@lru_cache(maxsize=1)
def _services() -> dict[str, Any]:
    from isthmus.adapters.agent_client import AgentClient
    from isthmus.adapters.control_tables import DynamoControlStore
    from isthmus.services.admin_settings import SettingsService
    from isthmus.services.cloud_catalog import provider_service
    from isthmus.services.nodes import NodeService
    from isthmus.services.sync_jobs import SyncService

    store, agents = DynamoControlStore(), AgentClient()
    return {"clusters": ClusterService(store, agents), "nodes": NodeService(store),
            "settings": SettingsService(store), "sync": SyncService(store, agents), "providers": provider_service()}


def clusters() -> ClusterService:
    return _services()["clusters"]


def nodes() -> NodeService:
    return _services()["nodes"]


def settings() -> SettingsService:
    return _services()["settings"]


def sync() -> SyncService:
    return _services()["sync"]


def providers() -> ProviderService:
    return _services()["providers"]


def providers_changed() -> None:
    """A provider was written or deleted: inference reads the catalog again."""
    from isthmus.services.cloud_catalog import invalidate_shared

    invalidate_shared()
