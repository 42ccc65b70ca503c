"""/v1/usage (master key): usage rows with filters, newest first; /v1/usage/summary by day and by model."""

from starlette.requests import Request
from starlette.responses import Response

from isthmus import wiring
from isthmus.auth_http import require_master
from isthmus.observability import lambda_entry
from isthmus.services.credentials import call
from isthmus.services.usage import UsageService
from isthmus.services.views import paging
from isthmus.web import create_app, json_response, versioned

SERVICE = "usage"


def _service() -> UsageService:
    return UsageService(wiring.stores())


async def list_usage(request: Request) -> Response:
    await require_master(request)
    skip, limit = paging(request.query_params)
    user_ids = request.query_params.getlist("user_id")
    return json_response(await call(_service().list, request.query_params, user_ids, skip, limit))


async def usage_summary(request: Request) -> Response:
    await require_master(request)
    user_ids = request.query_params.getlist("user_id")
    return json_response(await call(_service().summary, request.query_params, user_ids))


app = create_app(
    versioned("/usage", list_usage, ["GET"]) + versioned("/usage/summary", usage_summary, ["GET"]),
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE)
