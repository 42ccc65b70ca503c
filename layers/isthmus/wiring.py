"""The composition root: the one place that picks adapters and builds the services over them.

Handlers ask it for what they call (``wiring.inference_service()``, ``wiring.cluster_service()``...); services
only ever see ports. Each part is built on first use and kept for the process (its caches, node tracker and
snapshot are shared by requests); :func:`reset` forgets them (tests that change the environment between cases).

Builders import their modules inside the function on purpose: a Lambda handler imports this module at init, and
only the parts its first request needs are paid for (bench/cold_import.py).

Single-Mac mode (`isthmus agent --serve-api`) asks for its own composition with :func:`use_single_mac`: the
inference service over the one local agent, no tenancy gate, responses kept in memory.
"""

from __future__ import annotations

import os
from functools import cache
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from isthmus.backends.cloud import CloudResolver
    from isthmus.ports.backend import BackendResolver
    from isthmus.ports.control import ControlStore
    from isthmus.ports.responses import ResponseStore
    from isthmus.services.cloud.cloud_catalog import ProvidersCatalog
    from isthmus.services.cloud.providers import ProviderService
    from isthmus.services.control.admin_settings import SettingsService
    from isthmus.services.control.clusters import ClusterService
    from isthmus.services.control.nodes import NodeService
    from isthmus.services.control.sync_jobs import SyncService
    from isthmus.services.inference.inference import InferenceService
    from isthmus.services.inference.passthrough import PassthroughService
    from isthmus.services.inference.routing import RoutingService
    from isthmus.services.tenancy.credentials import Credentials, Stores
    from isthmus.services.tenancy.gate import TenancyGate

# Single-Mac mode's composition when it asked for one: (inference service, response store).
_single_mac: list[tuple[InferenceService, ResponseStore]] = []


# ---- tenancy ------------------------------------------------------------------------------------------------

def stores() -> Stores:
    """The tenancy tables (one set per process)."""
    from isthmus.services.tenancy.credentials import default_stores

    return default_stores()


def credentials() -> Credentials:
    """Master-key and pepper state of the settings table in use."""
    from isthmus.services.tenancy.credentials import default_credentials

    return default_credentials()


@cache
def gate() -> TenancyGate:
    """The tenancy gate: authentication, budgets, rate limits, usage rows (one per process)."""
    from isthmus.services.tenancy.gate import TenancyGate

    return TenancyGate()


def tenancy_on() -> bool:
    return os.environ.get("ISTHMUS_TENANCY", "on").lower() != "off"


# ---- control plane ------------------------------------------------------------------------------------------

@cache
def control_store() -> ControlStore:
    from isthmus.adapters.control_tables import DynamoControlStore

    return DynamoControlStore()


@cache
def provider_service() -> ProviderService:
    from isthmus.adapters.keywrap import default_wrapper
    from isthmus.adapters.providers_table import DynamoProviderStore
    from isthmus.services.cloud.providers import ProviderService

    return ProviderService(DynamoProviderStore(), default_wrapper())


@cache
def cloud_catalog() -> ProvidersCatalog:
    """One catalog per process: its cache is shared by the routing snapshot and the inference resolver."""
    from isthmus.services.cloud.cloud_catalog import ProvidersCatalog

    return ProvidersCatalog(provider_service())


def providers_changed() -> None:
    """After a provider changed in this process (the admin API): the next read sees it at once."""
    if cloud_catalog.cache_info().currsize:
        cloud_catalog().invalidate()


def new_routing_service() -> RoutingService:
    """A routing service with its own snapshot cache (the models listing reads the tables as they are now)."""
    from isthmus.adapters.control_tables import DynamoSessionStore
    from isthmus.backends.decider import AgentDecider
    from isthmus.services.inference.routing import RoutingService

    return RoutingService(control_store(), DynamoSessionStore(), AgentDecider(), catalog=cloud_catalog())


@cache
def routing_service() -> RoutingService:
    """The request path's routing service: its snapshot cache and node tracker are shared by requests."""
    return new_routing_service()


@cache
def cluster_service() -> ClusterService:
    from isthmus.adapters.agent_client import AgentClient
    from isthmus.services.control.clusters import ClusterService

    return ClusterService(control_store(), AgentClient())


@cache
def node_service() -> NodeService:
    from isthmus.services.control.nodes import NodeService

    return NodeService(control_store())


@cache
def settings_service() -> SettingsService:
    from isthmus.services.control.admin_settings import SettingsService

    return SettingsService(control_store())


@cache
def sync_service() -> SyncService:
    from isthmus.adapters.agent_client import AgentClient
    from isthmus.services.control.sync_jobs import SyncService

    return SyncService(control_store(), AgentClient())


# ---- inference ----------------------------------------------------------------------------------------------

@cache
def cloud_resolver() -> CloudResolver:
    """Published cloud aliases first, then the control plane's clusters (or the default agent)."""
    from isthmus.backends.cloud import CloudResolver
    from isthmus.backends.control_plane import ControlPlaneResolver

    control = ControlPlaneResolver(routing_service())
    cloud = CloudResolver(cloud_catalog(), control)
    control.cloud = cloud  # a CoeOS pick or fallback alias naming a cloud alias goes back to the catalog
    return cloud


@cache
def _gateway_inference() -> InferenceService:
    from isthmus.services.inference.inference import InferenceService

    return InferenceService(cloud_resolver(), gate() if tenancy_on() else None)


def inference_service() -> InferenceService:
    """The inference service of this process: the gateway's, or single-Mac mode's when it asked for one."""
    return _single_mac[0][0] if _single_mac else _gateway_inference()


@cache
def _table_responses() -> ResponseStore:
    from isthmus.adapters.responses_table import DynamoResponseStore

    return DynamoResponseStore()


def response_store() -> ResponseStore:
    """Stored Responses API answers: the responses table, or memory in single-Mac mode."""
    return _single_mac[0][1] if _single_mac else _table_responses()


def passthrough_service() -> PassthroughService:
    from isthmus.services.inference.passthrough import PassthroughService

    return PassthroughService(cloud_resolver(), inference_service().gate)


def use_single_mac(agent_url: str) -> None:
    """Single-Mac mode: inference over the one agent at ``agent_url`` only, no tenancy gate (no keys, budgets
    or usage rows), responses kept in memory."""
    from isthmus.adapters.memory_responses import MemoryResponseStore
    from isthmus.backends.default_agent import DefaultAgentResolver
    from isthmus.services.inference.inference import InferenceService

    resolver: BackendResolver = DefaultAgentResolver(agent_url)
    _single_mac[:] = [(InferenceService(resolver, None), MemoryResponseStore())]


def reset() -> None:
    """Forget every part built so far (tests that change tables or environment between cases)."""
    _single_mac.clear()
    for built in (gate, control_store, provider_service, cloud_catalog, routing_service, cluster_service,
                  node_service, settings_service, sync_service, cloud_resolver, _gateway_inference,
                  _table_responses):
        built.cache_clear()
