"""The admin API's handlers, one module per sub-resource, and their services (services.py).

A package of its own so its modules import each other relatively: on Lambda the function folder is the import
root (``routes``, ``admin_api.nodes``), locally it is the package ``functions.admin``.
"""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import BaseRoute, Route

from isthmus.errors import ApiError
from isthmus.handlers import ADMIN_TOKEN, authorized
from isthmus.web import ALL_METHODS

from . import clusters, nodes, providers, settings, sync


@authorized(ADMIN_TOKEN)  # unknown admin routes are not discoverable without the token either
async def unknown(request: Request) -> Response:
    raise ApiError(404, f"No route for {request.method} {request.url.path}", code="not_found")


routes: list[BaseRoute] = [
    *nodes.routes, *clusters.routes, *settings.routes, *providers.routes, *sync.routes, *clusters.legacy_routes,
    Route("/admin/{rest:path}", unknown, methods=list(ALL_METHODS)),
]
