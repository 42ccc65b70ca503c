"""``GET /v1/models`` and ``GET /v1/models/{id}`` (also under /api/v1): servable models with x_odyssai."""

from __future__ import annotations

import os

from starlette.requests import Request
from starlette.responses import Response

from isthmus import wiring
from isthmus.observability import lambda_entry
from isthmus.services import models_listing
from isthmus.web import create_app, json_response, versioned

SERVICE = "models"
_TRUE = {"1", "true", "yes", "on"}


async def _state() -> tuple[models_listing.Snapshot, models_listing.CoeosConfig]:
    routing = wiring.new_routing_service()
    return await routing.snapshot(), await routing.coeos_config()


async def _authorize(request: Request) -> None:
    """Keyed mode is keyed everywhere: the listing needs a valid API key (or the master key), as inference
    does; the same 401 for none, an unknown, inactive, expired or rotated-out key. Open mode (and tenancy off)
    lists for anyone, whatever key is sent."""
    if os.environ.get("ISTHMUS_TENANCY", "on").lower() == "off":
        return
    if await wiring.credentials().keyed():
        await wiring.gate().authenticate(request.headers)


async def list_models(request: Request) -> Response:
    await _authorize(request)
    include = request.query_params.get("include_unloaded", "").lower() in _TRUE
    snap, coeos = await _state()
    return json_response({"object": "list", "data": models_listing.list_models(snap, coeos, include_unloaded=include)})


async def get_model(request: Request) -> Response:
    await _authorize(request)
    snap, coeos = await _state()
    return json_response(models_listing.get_model(snap, coeos, request.path_params["model_id"]))


app = create_app(versioned("/models", list_models, ["GET"]) + versioned("/models/{model_id:path}", get_model, ["GET"]),
                 service=SERVICE)
handler = lambda_entry(app, SERVICE)
