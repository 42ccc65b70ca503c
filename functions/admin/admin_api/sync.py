"""/admin/sync: model copies between nodes (rsync jobs), listed, read and cancelled."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from isthmus.handlers import ADMIN_TOKEN, authorized
from isthmus.web import json_response, parse_body

from . import services


@authorized(ADMIN_TOKEN)
async def rsync(request: Request) -> Response:
    from isthmus.services.control.sync_jobs import RsyncBody  # with the service, on the first call (cold start)

    return json_response(await services.sync().start(await parse_body(request, RsyncBody)))


@authorized(ADMIN_TOKEN)
async def sync_jobs(request: Request) -> Response:
    return json_response({"jobs": await services.sync().list_all()})


@authorized(ADMIN_TOKEN)
async def sync_job(request: Request) -> Response:
    return json_response(await services.sync().get(request.path_params["job_id"]))


@authorized(ADMIN_TOKEN)
async def cancel_sync_job(request: Request) -> Response:
    return json_response(await services.sync().cancel(request.path_params["job_id"]))


routes = [
    Route("/admin/sync/rsync", rsync, methods=["POST"]),
    Route("/admin/sync/jobs", sync_jobs, methods=["GET"]),
    Route("/admin/sync/jobs/{job_id}", sync_job, methods=["GET"]),
    Route("/admin/sync/jobs/{job_id}/cancel", cancel_sync_job, methods=["POST"]),
]
