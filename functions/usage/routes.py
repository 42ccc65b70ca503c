"""/v1/usage (master key): usage rows with filters, newest first; /v1/usage/summary by day and by model."""

from starlette.requests import Request
from starlette.responses import Response

from isthmus import init_parts, wiring
from isthmus.auth_http import MASTER
from isthmus.handlers import authorized
from isthmus.observability import lambda_entry
from isthmus.services.tenancy.credentials import OffLoop, off_loop
from isthmus.services.tenancy.usage import UsageService
from isthmus.services.tenancy.views import paging
from isthmus.web import create_app, json_response, versioned

SERVICE = "usage"


def _service() -> OffLoop[UsageService]:
    return off_loop(UsageService(wiring.stores()))


@authorized(MASTER)
async def list_usage(request: Request) -> Response:
    skip, limit = paging(request.query_params)
    user_ids = request.query_params.getlist("user_id")
    return json_response(await _service().list(request.query_params, user_ids, skip, limit))


@authorized(MASTER)
async def usage_summary(request: Request) -> Response:
    user_ids = request.query_params.getlist("user_id")
    return json_response(await _service().summary(request.query_params, user_ids))


app = create_app(
    versioned("/usage", list_usage, ["GET"]) + versioned("/usage/summary", usage_summary, ["GET"]),
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE, prepare=init_parts.prepare_tenancy)
