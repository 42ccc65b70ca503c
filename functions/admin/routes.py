"""The cluster admin API: node enrollment and heartbeats, clusters and pools, settings, CoeOS, model sync,
cloud providers.

Open when no admin token is set; else ``Authorization: Bearer <token>`` (enrollment and heartbeats use
``ISTHMUS_ENROLL_TOKEN`` instead). Handlers parse, authorize, call a service and shape the answer.
"""

from __future__ import annotations

import time

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from isthmus import wiring
from isthmus.control.admin_auth import admin
from isthmus.control.models import SettingsUpdate
from isthmus.errors import ApiError
from isthmus.observability import get_logger, lambda_entry
from isthmus.routing.coeos import CoeosConfig
from isthmus.services.clusters import ClusterConfig, LoadBody, UnloadBody
from isthmus.web import ALL_METHODS, create_app, json_response, parse_body, read_body, read_json
from isthmus_contracts.control import EnrollRequest, HeartbeatRequest

SERVICE = "admin"


async def _optional_body(request: Request, model: type[UnloadBody]) -> UnloadBody:
    return await parse_body(request, model) if await read_body(request) else model()


# ---- nodes --------------------------------------------------------------------------------------------
async def enroll(request: Request) -> Response:
    from isthmus.services.nodes import check_enroll_token

    check_enroll_token(request.headers.get("authorization"))
    return json_response(await wiring.node_service().enroll(await parse_body(request, EnrollRequest)))


async def heartbeat(request: Request) -> Response:
    from isthmus.services.nodes import check_enroll_token

    check_enroll_token(request.headers.get("authorization"))
    body = await parse_body(request, HeartbeatRequest)
    response = json_response(await wiring.node_service().heartbeat(request.path_params["node_id"], body))
    # Heartbeats are the control plane's clock: idle pools are reaped from here (at most every 30 s).
    if time.monotonic() - _last_reap[0] >= REAP_EVERY_S:
        _last_reap[0] = time.monotonic()
        response.background = BackgroundTask(_reap_quietly)
    return response


REAP_EVERY_S = 30.0
_last_reap = [float("-inf")]


async def _reap_quietly() -> None:
    try:
        await wiring.cluster_service().reap_idle()
    except Exception:
        get_logger(SERVICE).exception("idle pool reaping failed")


@admin
async def reap_pools(request: Request) -> Response:
    return json_response({"reaped": await wiring.cluster_service().reap_idle()})


@admin
async def list_nodes(request: Request) -> Response:
    return json_response({"nodes": await wiring.cluster_service().nodes()})


@admin
async def delete_node(request: Request) -> Response:
    await wiring.node_service().remove(request.path_params["node_id"])
    return Response(status_code=204)


# ---- clusters -----------------------------------------------------------------------------------------
@admin
async def list_clusters(request: Request) -> Response:
    return json_response({"clusters": await wiring.cluster_service().list_all()})


@admin
async def put_cluster(request: Request) -> Response:
    config = await parse_body(request, ClusterConfig)
    return json_response(await wiring.cluster_service().put(request.path_params["cluster_id"], config))


@admin
async def delete_cluster(request: Request) -> Response:
    await wiring.cluster_service().delete(request.path_params["cluster_id"])
    return Response(status_code=204)


@admin
async def cluster_status(request: Request) -> Response:
    return json_response(await wiring.cluster_service().status(request.path_params["cluster_id"]))


@admin
async def load(request: Request) -> Response:
    body = await parse_body(request, LoadBody)
    return json_response(await wiring.cluster_service().load(request.path_params["cluster_id"], body))


@admin
async def unload(request: Request) -> Response:
    body = await _optional_body(request, UnloadBody)
    return json_response(await wiring.cluster_service().unload(request.path_params["cluster_id"], body))


# ---- settings and CoeOS -------------------------------------------------------------------------------
@admin
async def get_settings(request: Request) -> Response:
    return json_response(await wiring.settings_service().get())


@admin
async def put_settings(request: Request) -> Response:
    return json_response(await wiring.settings_service().put(await parse_body(request, SettingsUpdate)))


@admin
async def get_coeos(request: Request) -> Response:
    return json_response(await wiring.settings_service().get_coeos())


@admin
async def put_coeos(request: Request) -> Response:
    return json_response(await wiring.settings_service().put_coeos(await parse_body(request, CoeosConfig)))


@admin
async def coeos_decisions(request: Request) -> Response:
    return json_response({"decisions": await wiring.settings_service().decisions()})


# ---- model sync -----------------------------------------------------------------------------------------
@admin
async def rsync(request: Request) -> Response:
    from isthmus.services.sync_jobs import RsyncBody

    return json_response(await wiring.sync_service().start(await parse_body(request, RsyncBody)))


@admin
async def sync_jobs(request: Request) -> Response:
    return json_response({"jobs": await wiring.sync_service().list_all()})


@admin
async def sync_job(request: Request) -> Response:
    return json_response(await wiring.sync_service().get(request.path_params["job_id"]))


@admin
async def cancel_sync_job(request: Request) -> Response:
    return json_response(await wiring.sync_service().cancel(request.path_params["job_id"]))


# ---- cloud providers --------------------------------------------------------------------------------------
def _providers_changed() -> None:
    wiring.providers_changed()


@admin
async def list_providers(request: Request) -> Response:
    return json_response(await wiring.provider_service().list_all())


@admin
async def put_provider(request: Request) -> Response:
    body = await read_json(request)
    view = await wiring.provider_service().put(request.path_params["provider_id"], body)
    _providers_changed()
    return json_response(view)


@admin
async def get_provider(request: Request) -> Response:
    return json_response(await wiring.provider_service().get(request.path_params["provider_id"]))


@admin
async def delete_provider(request: Request) -> Response:
    await wiring.provider_service().delete(request.path_params["provider_id"])
    _providers_changed()
    return Response(status_code=204)


@admin
async def test_provider(request: Request) -> Response:
    return json_response(await wiring.provider_service().test(request.path_params["provider_id"]))


@admin
async def unknown(request: Request) -> Response:
    raise ApiError(404, f"No route for {request.method} {request.url.path}", code="not_found")


app = create_app([
    Route("/admin/nodes/enroll", enroll, methods=["POST"]),
    Route("/admin/nodes/{node_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/admin/nodes", list_nodes, methods=["GET"]),
    Route("/admin/nodes/{node_id}", delete_node, methods=["DELETE"]),
    Route("/admin/clusters", list_clusters, methods=["GET"]),
    Route("/admin/clusters/{cluster_id}", put_cluster, methods=["PUT"]),
    Route("/admin/clusters/{cluster_id}", delete_cluster, methods=["DELETE"]),
    Route("/admin/clusters/{cluster_id}", cluster_status, methods=["GET"]),
    Route("/admin/clusters/{cluster_id}/status", cluster_status, methods=["GET"]),
    Route("/admin/clusters/{cluster_id}/load", load, methods=["POST"]),
    Route("/admin/clusters/{cluster_id}/unload", unload, methods=["POST"]),
    Route("/admin/pools/reap", reap_pools, methods=["POST"]),
    Route("/admin/settings", get_settings, methods=["GET"]),
    Route("/admin/settings", put_settings, methods=["PUT"]),
    Route("/admin/coeos", get_coeos, methods=["GET"]),
    Route("/admin/coeos", put_coeos, methods=["PUT"]),
    Route("/admin/coeos/decisions", coeos_decisions, methods=["GET"]),
    Route("/admin/providers", list_providers, methods=["GET"]),
    Route("/admin/providers/{provider_id}", put_provider, methods=["PUT"]),
    Route("/admin/providers/{provider_id}", get_provider, methods=["GET"]),
    Route("/admin/providers/{provider_id}", delete_provider, methods=["DELETE"]),
    Route("/admin/providers/{provider_id}/test", test_provider, methods=["POST"]),
    Route("/admin/sync/rsync", rsync, methods=["POST"]),
    Route("/admin/sync/jobs", sync_jobs, methods=["GET"]),
    Route("/admin/sync/jobs/{job_id}", sync_job, methods=["GET"]),
    Route("/admin/sync/jobs/{job_id}/cancel", cancel_sync_job, methods=["POST"]),
    Route("/admin/{cluster_id}/load", load, methods=["POST"]),
    Route("/admin/{cluster_id}/unload", unload, methods=["POST"]),
    Route("/admin/{rest:path}", unknown, methods=list(ALL_METHODS)),
], service=SERVICE)
handler = lambda_entry(app, SERVICE)
