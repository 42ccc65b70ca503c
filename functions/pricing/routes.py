"""/v1/pricing: upsert a version (master key); list, get (?as_of=), history (any key); delete (master key).

Model keys contain ``/`` and ``:`` (percent-encoded by clients), so the routes take the rest of the path.
"""

from starlette.requests import Request
from starlette.responses import Response

from isthmus import init_parts, wiring
from isthmus.auth_http import ANY_KEY, MASTER
from isthmus.errors import ApiError
from isthmus.handlers import authorized
from isthmus.observability import lambda_entry
from isthmus.services.tenancy.credentials import OffLoop, off_loop
from isthmus.services.tenancy.pricing import PricingService, SetPricing
from isthmus.services.tenancy.views import page, paging
from isthmus.web import create_app, json_response, parse_body, versioned

SERVICE = "pricing"
HISTORY = "/history"


def _service() -> OffLoop[PricingService]:
    return off_loop(PricingService(wiring.stores()))


def _model_key(request: Request) -> str:
    key = request.path_params["model_key"]
    if not key:
        raise ApiError(404, "A model key is needed: /v1/pricing/{model_key}")
    return str(key)


@authorized(MASTER)
async def set_pricing(request: Request) -> Response:
    body = await parse_body(request, SetPricing)
    return json_response(await _service().set(body))


@authorized(ANY_KEY)
async def list_pricing(request: Request) -> Response:
    skip, limit = paging(request.query_params)
    return json_response(page(await _service().list(), skip, limit))


@authorized(ANY_KEY)
async def get_pricing(request: Request) -> Response:
    key = _model_key(request)
    if key.endswith(HISTORY) and len(key) > len(HISTORY):
        return json_response(await _service().history(key[: -len(HISTORY)]))
    return json_response(await _service().get(key, request.query_params.get("as_of")))


@authorized(MASTER)
async def delete_pricing(request: Request) -> Response:
    await _service().delete(_model_key(request), request.query_params.get("effective_at"))
    return Response(status_code=204)


app = create_app(
    versioned("/pricing", set_pricing, ["POST"]) + versioned("/pricing", list_pricing, ["GET"])
    + versioned("/pricing/{model_key:path}", get_pricing, ["GET"])
    + versioned("/pricing/{model_key:path}", delete_pricing, ["DELETE"]),
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE, prepare=init_parts.prepare_tenancy)
