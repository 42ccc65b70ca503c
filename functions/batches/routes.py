"""/v1/batches (and /api/v1/batches): OpenAI's Batch API and Otari's inline shape over one engine
(isthmus.services.batches). Any valid key or the master key; a caller sees only its own batches (the master key
all). Otari's ``provider`` query parameter is accepted everywhere: one engine serves every provider here."""

from __future__ import annotations

from starlette.requests import Request
from starlette.responses import Response

from isthmus import init_parts, wiring
from isthmus.auth_http import ANY_KEY
from isthmus.errors import ApiError, Dialect
from isthmus.handlers import authorized
from isthmus.observability import lambda_entry
from isthmus.services.batches.intake import CreateOpenAIBatch, CreateOtariBatch
from isthmus.services.batches.service import BatchService
from isthmus.services.tenancy.gate import Principal
from isthmus.validation import validate
from isthmus.web import create_app, json_response, read_json, versioned

SERVICE = "batches"


def _service() -> BatchService:
    return wiring.batch_service()


def _principal(request: Request) -> Principal | None:
    return getattr(request.state, "principal", None) if wiring.tenancy_on() else None


def _limit(request: Request) -> int:
    raw = request.query_params.get("limit") or "20"
    if not raw.isdigit() or not 1 <= int(raw) <= 100:
        raise ApiError(400, "limit must be an integer from 1 to 100.", param="limit", code="invalid_value")
    return int(raw)


@authorized(ANY_KEY)
async def create_batch(request: Request) -> Response:
    body = await read_json(request)
    if isinstance(body, dict) and "requests" in body:  # Otari's shape: model + inline requests
        otari = validate(CreateOtariBatch, body, Dialect.OPENAI)
        batch = await _service().create_otari(_principal(request), otari, request.query_params.get("provider"))
    else:
        openai = validate(CreateOpenAIBatch, body, Dialect.OPENAI)
        batch = await _service().create_openai(_principal(request), openai)
    return json_response(batch.to_openai())


@authorized(ANY_KEY)
async def list_batches(request: Request) -> Response:
    batches, more = await _service().list_page(_principal(request), after=request.query_params.get("after") or None,
                                          limit=_limit(request))
    data = [b.to_openai() for b in batches]
    return json_response({"object": "list", "data": data, "first_id": data[0]["id"] if data else None,
                          "last_id": data[-1]["id"] if data else None, "has_more": more})


@authorized(ANY_KEY)
async def get_batch(request: Request) -> Response:
    return json_response((await _service().get(_principal(request), request.path_params["batch_id"])).to_openai())


@authorized(ANY_KEY)
async def cancel_batch(request: Request) -> Response:
    batch = await _service().cancel(_principal(request), request.path_params["batch_id"])
    return json_response(batch.to_openai())


@authorized(ANY_KEY)
async def batch_results(request: Request) -> Response:
    results = await _service().results(_principal(request), request.path_params["batch_id"])
    return json_response({"results": results})


app = create_app(
    versioned("/batches", create_batch, ["POST"]) + versioned("/batches", list_batches, ["GET"])
    + versioned("/batches/{batch_id}", get_batch, ["GET"])
    + versioned("/batches/{batch_id}/cancel", cancel_batch, ["POST"])
    + versioned("/batches/{batch_id}/results", batch_results, ["GET"]),
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE, prepare=init_parts.prepare_batches)
