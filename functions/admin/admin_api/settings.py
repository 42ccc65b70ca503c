"""/admin/settings and /admin/coeos: global settings, the CoeOS config and its recent decisions."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from isthmus.control.models import SettingsUpdate
from isthmus.handlers import ADMIN_TOKEN, authorized
from isthmus.routing.coeos import CoeosConfig
from isthmus.web import json_response, parse_body

from . import services


@authorized(ADMIN_TOKEN)
async def get_settings(request: Request) -> Response:
    return json_response(await services.settings().get())


@authorized(ADMIN_TOKEN)
async def put_settings(request: Request) -> Response:
    return json_response(await services.settings().put(await parse_body(request, SettingsUpdate)))


@authorized(ADMIN_TOKEN)
async def get_coeos(request: Request) -> Response:
    return json_response(await services.settings().get_coeos())


@authorized(ADMIN_TOKEN)
async def put_coeos(request: Request) -> Response:
    return json_response(await services.settings().put_coeos(await parse_body(request, CoeosConfig)))


@authorized(ADMIN_TOKEN)
async def coeos_decisions(request: Request) -> Response:
    return json_response({"decisions": await services.settings().decisions()})


routes = [
    Route("/admin/settings", get_settings, methods=["GET"]),
    Route("/admin/settings", put_settings, methods=["PUT"]),
    Route("/admin/coeos", get_coeos, methods=["GET"]),
    Route("/admin/coeos", put_coeos, methods=["PUT"]),
    Route("/admin/coeos/decisions", coeos_decisions, methods=["GET"]),
]
