"""/admin/clusters and /admin/pools: cluster configs, status, model load/unload, idle pool reaping."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from isthmus.handlers import ADMIN_TOKEN, authorized
from isthmus.services.control import pool_upkeep
from isthmus.services.control.clusters import ClusterConfig, LoadBody, UnloadBody
from isthmus.web import json_response, parse_body, read_body

from . import services


@authorized(ADMIN_TOKEN)
async def list_clusters(request: Request) -> Response:
    return json_response({"clusters": await services.clusters().list_all()})


@authorized(ADMIN_TOKEN)
async def put_cluster(request: Request) -> Response:
    config = await parse_body(request, ClusterConfig)
    return json_response(await services.clusters().put(request.path_params["cluster_id"], config))


@authorized(ADMIN_TOKEN)
async def delete_cluster(request: Request) -> Response:
    await services.clusters().delete(request.path_params["cluster_id"])
    return Response(status_code=204)


@authorized(ADMIN_TOKEN)
async def cluster_status(request: Request) -> Response:
    return json_response(await services.clusters().status(request.path_params["cluster_id"]))


@authorized(ADMIN_TOKEN)
async def load(request: Request) -> Response:
    body = await parse_body(request, LoadBody)
    if not body.wait:  # a job: 202 now, progress at /admin/clusters/{id}/loads/{job_id}
        return json_response(await services.load_jobs().start(request.path_params["cluster_id"], body), status=202)
    return json_response(await services.clusters().load(request.path_params["cluster_id"], body))


@authorized(ADMIN_TOKEN)
async def load_jobs(request: Request) -> Response:
    return json_response({"jobs": await services.load_jobs().list_all(request.path_params["cluster_id"])})


@authorized(ADMIN_TOKEN)
async def load_job(request: Request) -> Response:
    params = request.path_params
    return json_response(await services.load_jobs().get(params["cluster_id"], params["job_id"]))


@authorized(ADMIN_TOKEN)
async def unload(request: Request) -> Response:
    body = await parse_body(request, UnloadBody) if await read_body(request) else UnloadBody()  # body optional
    return json_response(await services.clusters().unload(request.path_params["cluster_id"], body))


@authorized(ADMIN_TOKEN)
async def reap_pools(request: Request) -> Response:
    clusters = services.clusters()
    return json_response({"reaped": await pool_upkeep.reap_idle(clusters),
                          "healed": await pool_upkeep.heal_sharded(clusters)})


routes = [
    Route("/admin/clusters", list_clusters, methods=["GET"]),
    Route("/admin/clusters/{cluster_id}", put_cluster, methods=["PUT"]),
    Route("/admin/clusters/{cluster_id}", delete_cluster, methods=["DELETE"]),
    Route("/admin/clusters/{cluster_id}", cluster_status, methods=["GET"]),
    Route("/admin/clusters/{cluster_id}/status", cluster_status, methods=["GET"]),
    Route("/admin/clusters/{cluster_id}/load", load, methods=["POST"]),
    Route("/admin/clusters/{cluster_id}/unload", unload, methods=["POST"]),
    Route("/admin/clusters/{cluster_id}/loads", load_jobs, methods=["GET"]),
    Route("/admin/clusters/{cluster_id}/loads/{job_id}", load_job, methods=["GET"]),
    Route("/admin/pools/reap", reap_pools, methods=["POST"]),
]
# The first API's spelling, kept for existing callers: composed after every /admin/<sub-resource> route.
legacy_routes = [
    Route("/admin/{cluster_id}/load", load, methods=["POST"]),
    Route("/admin/{cluster_id}/unload", unload, methods=["POST"]),
]
