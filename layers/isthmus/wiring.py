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
import threading
from collections.abc import Callable
from functools import cache
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from isthmus.backends.cloud import CloudResolver
    from isthmus.ports.backend import BackendResolver
    from isthmus.ports.batches import BatchStore
    from isthmus.ports.control import ControlStore
    from isthmus.ports.files import BlobStore, FileAccess
    from isthmus.ports.responses import ResponseStore
    from isthmus.services.batches.model import Batch
    from isthmus.services.batches.runner import BatchRunner
    from isthmus.services.batches.service import BatchService
    from isthmus.services.batches.worker import BatchWorker
    from isthmus.services.cloud.cloud_catalog import ProvidersCatalog
    from isthmus.services.cloud.providers import ProviderService
    from isthmus.services.control.admin_settings import SettingsService
    from isthmus.services.control.clusters import ClusterService
    from isthmus.services.control.load_jobs import LoadJobService
    from isthmus.services.control.nodes import NodeService
    from isthmus.services.control.sync_jobs import SyncService
    from isthmus.services.files import FileService
    from isthmus.services.inference.file_parts import FileParts
    from isthmus.services.inference.inference import InferenceService
    from isthmus.services.inference.passthrough import PassthroughService
    from isthmus.services.inference.routing import RoutingService
    from isthmus.services.tenancy.credentials import Credentials, Stores
    from isthmus.services.tenancy.gate import Principal, TenancyGate
    from isthmus.services.tenancy.holds import HoldKeeper

# Single-Mac mode's composition when it asked for one: (inference service, response store, its agent resolver).
_single_mac: list[tuple[InferenceService, ResponseStore, BackendResolver]] = []


# ---- tenancy ------------------------------------------------------------------------------------------------

@cache
def stores() -> Stores:
    """The tenancy tables: the DynamoDB adapters (one set per process; they resolve table names and clients
    per call, so one set serves whatever endpoint and table names the environment says)."""
    from isthmus.adapters.ledger_ddb import DynamoPricingStore, DynamoRateLimiter, DynamoUsageStore
    from isthmus.adapters.tenancy_ddb import DynamoBudgetStore, DynamoKeyStore, DynamoSettingsStore, DynamoUserStore
    from isthmus.services.tenancy.credentials import Stores

    return Stores(DynamoKeyStore(), DynamoUserStore(), DynamoBudgetStore(), DynamoSettingsStore(),
                  DynamoUsageStore(), DynamoPricingStore(), DynamoRateLimiter())


_credentials: dict[str, Credentials] = {}
_credentials_lock = threading.Lock()


def credentials() -> Credentials:
    """Master-key and pepper state, one per store location: they belong to the settings table they came from
    (tests point one process at several stores)."""
    from isthmus import settings
    from isthmus.services.tenancy.credentials import Credentials

    where = f"{settings.dynamodb_endpoint()}|{settings.table_name('settings')}"
    with _credentials_lock:
        if where not in _credentials:
            _credentials[where] = Credentials(stores())
        return _credentials[where]


@cache
def gate() -> TenancyGate:
    """The tenancy gate: authentication, budgets, rate limits, usage rows (one per process)."""
    return new_gate()


def new_gate(**options: Any) -> TenancyGate:
    """A gate of its own over this process's stores (``clock``, ``leases``: tests where several gates play
    several processes)."""
    from isthmus.services.tenancy.gate import TenancyGate

    return TenancyGate(stores(), credentials(), dead_letter=settlement_dead_letter(), **options)


def settlement_dead_letter() -> Callable[[list[dict[str, Any]]], None] | None:
    """Where settlements the store would not take go under Lambda: the SQS dead-letter queue when configured;
    the local edge's lambda mode (a long-running process that only plays at being a sandbox, with no queue)
    keeps them in the spool its HoldKeeper replays. None outside Lambda (the writer spools them itself)."""
    from isthmus import settings

    if not settings.in_lambda():
        return None
    # cold start: the SQS client only when a dead-letter queue is configured
    from isthmus.adapters.settlement_queue import SqsDeadLetter, queue_url

    if url := queue_url():
        return SqsDeadLetter(url).send
    if not os.environ.get("AWS_LAMBDA_FUNCTION_NAME"):
        from isthmus.services.tenancy.spool import default_spool

        return default_spool().append
    return None


async def start_hold_keeper(*, heartbeat: bool) -> HoldKeeper | None:
    """The long-running process's hold keeper over the holds table, the spool and the usage table (stopped by
    isthmus.lifecycle.shutdown); none with tenancy off (no holds, no settlements)."""
    if not tenancy_on():
        return None
    from isthmus import lifecycle
    from isthmus.adapters.holds_ddb import DynamoHoldStore
    from isthmus.services.tenancy.credentials import call
    from isthmus.services.tenancy.holds import HoldKeeper
    from isthmus.services.tenancy.settlements import spool_replayer
    from isthmus.services.tenancy.spool import default_spool

    replay = spool_replayer(default_spool(), stores().usage, call)
    keeper = HoldKeeper(DynamoHoldStore(), call, heartbeat=heartbeat, replay=replay)
    keeper.start()
    lifecycle.on_shutdown(keeper.close)
    return keeper


def tenancy_on() -> bool:
    return os.environ.get("ISTHMUS_TENANCY", "on").lower() != "off"


# ---- control plane ------------------------------------------------------------------------------------------

@cache
def control_store() -> ControlStore:
    from isthmus.adapters.control_tables import DynamoControlStore

    return DynamoControlStore()


@cache
def provider_service() -> ProviderService:
    from isthmus.adapters.cloud.protocols import ProtocolRegistry
    from isthmus.adapters.keywrap import EnvelopeSealer, default_wrapper
    from isthmus.adapters.providers_table import DynamoProviderStore
    from isthmus.services.cloud.providers import ProviderService

    return ProviderService(DynamoProviderStore(), EnvelopeSealer(default_wrapper()), ProtocolRegistry())


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
def load_job_service() -> LoadJobService:
    from isthmus.adapters.agent_client import AgentClient
    from isthmus.services.control.load_jobs import LoadJobService

    return LoadJobService(control_store(), AgentClient(), cluster_service())


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
def file_parts() -> FileParts:
    """File understanding: attached files extracted to text (markitdown) or inlined for native readers."""
    from isthmus.adapters.extract_markitdown import MarkitdownExtractor
    from isthmus.services.inference.file_parts import FileParts

    return FileParts(file_access, MarkitdownExtractor())


@cache
def _gateway_inference() -> InferenceService:
    from isthmus.services.inference.inference import InferenceService

    return InferenceService(cloud_resolver(), gate() if tenancy_on() else None, file_parts())


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
    from isthmus.backends.cloud import CloudResolver, NoCloudAliases
    from isthmus.services.inference.passthrough import PassthroughService

    if _single_mac:  # no cloud aliases: /v1/embeddings goes to the one agent (when its model is an embedding model)
        return PassthroughService(CloudResolver(NoCloudAliases(), _single_mac[0][2]), None)
    return PassthroughService(cloud_resolver(), inference_service().gate)


def use_single_mac(agent_url: str, api_key: str | None = None) -> None:
    """Single-Mac mode: inference over the one agent at ``agent_url`` only (``api_key``: the agent's own, sent on
    every call to it), no tenancy gate (no keys, budgets or usage rows), responses kept in memory."""
    from isthmus.adapters.memory_responses import MemoryResponseStore
    from isthmus.backends.default_agent import DefaultAgentResolver
    from isthmus.services.inference.inference import InferenceService

    resolver: BackendResolver = DefaultAgentResolver(agent_url, api_key)
    _single_mac[:] = [(InferenceService(resolver, None, file_parts()), MemoryResponseStore(), resolver)]


# ---- files --------------------------------------------------------------------------------------------------

@cache
def blob_store() -> BlobStore:
    """Where uploaded bytes go: the S3 bucket when ``ISTHMUS_FILES_BUCKET`` is set (the cloud), else the data dir
    (``ISTHMUS_FILES_DIR``, the local edge's default)."""
    if bucket := os.environ.get("ISTHMUS_FILES_BUCKET"):
        from isthmus.adapters.blob_s3 import S3BlobStore

        return S3BlobStore(bucket)
    from isthmus.adapters.blob_local import LocalBlobStore

    return LocalBlobStore()


@cache
def file_access() -> FileService:
    """The files service (isthmus.ports.files.FileAccess): the files endpoints, file understanding and batches."""
    from isthmus.adapters.files_table import DynamoFileMetaStore
    from isthmus.services.files import FileService

    return FileService(blob_store(), DynamoFileMetaStore())


# ---- batches ------------------------------------------------------------------------------------------------

@cache
def batch_store() -> BatchStore:
    from isthmus.adapters.batches_table import DynamoBatchStore

    return DynamoBatchStore()


def _batch_files() -> Callable[[], FileAccess] | None:
    """The files service the batch engine reads input from and writes output to."""
    return file_access


def batch_service() -> BatchService:
    """The batches API; in a Lambda with the batch queue configured, a created batch is sent to the worker."""
    from isthmus import settings
    from isthmus.adapters.batch_queue import SqsBatchQueue, queue_url
    from isthmus.services.batches.service import BatchService

    url = queue_url() if settings.in_lambda() else None
    return BatchService(batch_store(), _batch_files(), SqsBatchQueue(url).send if url else None)


async def _batch_principal(batch: Batch) -> Principal | None:
    """Who a batch's lines run as: its key looked up again (refused once revoked), the master key, or nobody."""
    from isthmus.services.tenancy.gate import ANONYMOUS, MASTER

    if batch.principal_kind == "none" or not tenancy_on():
        return None
    if batch.principal_kind == "master":
        return MASTER
    if batch.principal_kind == "anonymous" or batch.key_id is None:
        return ANONYMOUS
    return await gate().principal_for_key(batch.key_id)


def new_batch_runner() -> BatchRunner:
    """A batch runner over this process's inference service (same routing, holds and settlement as the edge)."""
    from isthmus.adapters.cloud.batch_api import CloudBatchApi
    from isthmus.services.batches.lines import LineRunner, Owners
    from isthmus.services.batches.pools import PoolView
    from isthmus.services.batches.runner import BatchRunner, Priority

    lines = LineRunner(inference_service, passthrough_service, Owners(_batch_principal))
    return BatchRunner(batch_store(), lines, _batch_files(), Priority(pools=PoolView(routing_service().snapshot)),
                       provider_api=CloudBatchApi())


async def start_batch_worker() -> BatchWorker | None:
    """A long-running process's in-process batch worker (stopped by isthmus.lifecycle.shutdown); off with
    ``ISTHMUS_BATCH_WORKER=off`` (a process that only serves the API)."""
    if os.environ.get("ISTHMUS_BATCH_WORKER", "on").lower() == "off":
        return None
    from isthmus import lifecycle
    from isthmus.services.batches.worker import BatchWorker

    worker = BatchWorker(batch_store(), new_batch_runner())
    worker.start()
    lifecycle.on_shutdown(worker.close)
    return worker


def reset() -> None:
    """Forget every part built so far (tests that change tables or environment between cases)."""
    _single_mac.clear()
    for built in (gate, control_store, provider_service, cloud_catalog, routing_service, cluster_service,
                  node_service, settings_service, sync_service, cloud_resolver, _gateway_inference,
                  _table_responses, blob_store, file_access, file_parts,
                  batch_store):
        built.cache_clear()
