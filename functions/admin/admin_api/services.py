"""The admin API's services, from the composition root (isthmus.wiring: one control store and agent client
shared by all, built on first use)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from isthmus import wiring

if TYPE_CHECKING:
    from isthmus.services.cloud.providers import ProviderService
    from isthmus.services.control.admin_settings import SettingsService
    from isthmus.services.control.clusters import ClusterService
    from isthmus.services.control.load_jobs import LoadJobService
    from isthmus.services.control.nodes import NodeService
    from isthmus.services.control.sync_jobs import SyncService


def clusters() -> ClusterService:
    return wiring.cluster_service()


def load_jobs() -> LoadJobService:
    return wiring.load_job_service()


def nodes() -> NodeService:
    return wiring.node_service()


def settings() -> SettingsService:
    return wiring.settings_service()


def sync() -> SyncService:
    return wiring.sync_service()


def providers() -> ProviderService:
    return wiring.provider_service()


def providers_changed() -> None:
    """A provider was written or deleted: inference reads the catalog again."""
    wiring.providers_changed()
