"""/admin/providers: cloud provider records (the key sealed, never returned), their test call."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from isthmus.handlers import ADMIN_TOKEN, authorized
from isthmus.web import json_response, read_json

from . import services


@authorized(ADMIN_TOKEN)
async def list_providers(request: Request) -> Response:
    return json_response(await services.providers().list_all())


@authorized(ADMIN_TOKEN)
async def put_provider(request: Request) -> Response:
    view = await services.providers().put(request.path_params["provider_id"], await read_json(request))
    services.providers_changed()
    return json_response(view)


@authorized(ADMIN_TOKEN)
async def get_provider(request: Request) -> Response:
    return json_response(await services.providers().get(request.path_params["provider_id"]))


@authorized(ADMIN_TOKEN)
async def delete_provider(request: Request) -> Response:
    await services.providers().delete(request.path_params["provider_id"])
    services.providers_changed()
    return Response(status_code=204)


@authorized(ADMIN_TOKEN)
async def test_provider(request: Request) -> Response:
    return json_response(await services.providers().test(request.path_params["provider_id"]))


routes = [
    Route("/admin/providers", list_providers, methods=["GET"]),
    Route("/admin/providers/{provider_id}", put_provider, methods=["PUT"]),
    Route("/admin/providers/{provider_id}", get_provider, methods=["GET"]),
    Route("/admin/providers/{provider_id}", delete_provider, methods=["DELETE"]),
    Route("/admin/providers/{provider_id}/test", test_provider, methods=["POST"]),
]
