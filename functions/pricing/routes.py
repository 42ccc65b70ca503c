"""/v1/pricing: upsert a version (master key); list, get (?as_of=), history (any key); delete (master key).

Model keys contain ``/`` and ``:`` (percent-encoded by clients), so the routes take the rest of the path.
"""

from starlette.requests import Request
from starlette.responses import Response

from isthmus import wiring
from isthmus.auth_http import require_master, require_reader
from isthmus.errors import ApiError
from isthmus.observability import lambda_entry
from isthmus.services.credentials import call
from isthmus.services.pricing import PricingService, SetPricing
from isthmus.services.views import page, paging
from isthmus.web import create_app, json_response, parse_body, versioned

SERVICE = "pricing"
HISTORY = "/history"


def _service() -> PricingService:
    return PricingService(wiring.stores())


def _model_key(request: Request) -> str:
    key = request.path_params["model_key"]
    if not key:
        raise ApiError(404, "A model key is needed: /v1/pricing/{model_key}")
    return str(key)


async def set_pricing(request: Request) -> Response:
    await require_master(request)
    body = await parse_body(request, SetPricing)
    return json_response(await call(_service().set, body))


async def list_pricing(request: Request) -> Response:
    await require_reader(request)
    skip, limit = paging(request.query_params)
    return json_response(page(await call(_service().list), skip, limit))


async def get_pricing(request: Request) -> Response:
    await require_reader(request)
    key = _model_key(request)
    if key.endswith(HISTORY) and len(key) > len(HISTORY):
        return json_response(await call(_service().history, key[: -len(HISTORY)]))
    return json_response(await call(_service().get, key, request.query_params.get("as_of")))


async def delete_pricing(request: Request) -> Response:
    await require_master(request)
    await call(_service().delete, _model_key(request), request.query_params.get("effective_at"))
    return Response(status_code=204)


app = create_app(
    versioned("/pricing", set_pricing, ["POST"]) + versioned("/pricing", list_pricing, ["GET"])
    + versioned("/pricing/{model_key:path}", get_pricing, ["GET"])
    + versioned("/pricing/{model_key:path}", delete_pricing, ["DELETE"]),
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE)
