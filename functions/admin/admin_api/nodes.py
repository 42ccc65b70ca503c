"""/admin/nodes: enrollment and heartbeats (enroll token), the node list and removal (admin token)."""

from __future__ import annotations

import time

from starlette.background import BackgroundTask
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from isthmus.handlers import ADMIN_TOKEN, ENROLL_TOKEN, authorized
from isthmus.observability import get_logger
from isthmus.services.control import pool_upkeep
from isthmus.web import json_response, parse_body
from isthmus_contracts.control import EnrollRequest, HeartbeatRequest

from . import services

# Heartbeats are the control plane's clock: idle pools are reaped from here (at most every 30 s).
REAP_EVERY_S = 30.0
_last_reap = [float("-inf")]


def _reap_due() -> BackgroundTask | None:
    if time.monotonic() - _last_reap[0] < REAP_EVERY_S:
        return None
    _last_reap[0] = time.monotonic()
    return BackgroundTask(_reap_quietly)


async def _reap_quietly() -> None:
    try:
        await pool_upkeep.reap_idle(services.clusters())
        await pool_upkeep.heal_sharded(services.clusters())  # sharded pools that lost a rank
    except Exception:
        get_logger("admin").exception("idle pool reaping failed")


@authorized(ENROLL_TOKEN)
async def enroll(request: Request) -> Response:
    return json_response(await services.nodes().enroll(await parse_body(request, EnrollRequest)))


@authorized(ENROLL_TOKEN)
async def heartbeat(request: Request) -> Response:
    body = await parse_body(request, HeartbeatRequest)
    response = json_response(await services.nodes().heartbeat(request.path_params["node_id"], body))
    response.background = _reap_due()
    return response


@authorized(ADMIN_TOKEN)
async def list_nodes(request: Request) -> Response:
    return json_response({"nodes": await services.clusters().nodes()})


@authorized(ADMIN_TOKEN)
async def delete_node(request: Request) -> Response:
    await services.nodes().remove(request.path_params["node_id"])
    return Response(status_code=204)


routes = [
    Route("/admin/nodes/enroll", enroll, methods=["POST"]),
    Route("/admin/nodes/{node_id}/heartbeat", heartbeat, methods=["POST"]),
    Route("/admin/nodes", list_nodes, methods=["GET"]),
    Route("/admin/nodes/{node_id}", delete_node, methods=["DELETE"]),
]
