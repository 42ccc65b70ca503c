"""``GET /v1/models`` and ``GET /v1/models/{id}`` (also under /api/v1): servable models with x_odyssai."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from isthmus import init_parts, wiring
from isthmus.auth_http import LISTING_KEY
from isthmus.handlers import authorized
from isthmus.observability import lambda_entry
from isthmus.services.inference import models_listing
from isthmus.web import create_app, json_response, versioned

SERVICE = "models"
_TRUE = {"1", "true", "yes", "on"}


async def _state() -> tuple[models_listing.Snapshot, models_listing.CoeosConfig]:
    routing = wiring.new_routing_service()
    return await routing.snapshot(), await routing.coeos_config()


@authorized(LISTING_KEY)
async def list_models(request: Request) -> Response:
    include = request.query_params.get("include_unloaded", "").lower() in _TRUE
    snap, coeos = await _state()
    return json_response({"object": "list", "data": models_listing.list_models(snap, coeos, include_unloaded=include)})


@authorized(LISTING_KEY)
async def get_model(request: Request) -> Response:
    snap, coeos = await _state()
    return json_response(models_listing.get_model(snap, coeos, request.path_params["model_id"]))


app = create_app(versioned("/models", list_models, ["GET"]) + versioned("/models/{model_id:path}", get_model, ["GET"]),
                 service=SERVICE)
handler = lambda_entry(app, SERVICE, prepare=init_parts.prepare_models)
