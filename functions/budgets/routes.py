"""/v1/budgets (master key): create, list, get, patch, delete, and the reset history."""

from starlette.requests import Request
from starlette.responses import Response

from isthmus import init_parts, wiring
from isthmus.auth_http import MASTER
from isthmus.handlers import authorized
from isthmus.observability import lambda_entry
from isthmus.services.tenancy.budgets import BudgetService, CreateBudget, UpdateBudget
from isthmus.services.tenancy.credentials import OffLoop, off_loop
from isthmus.services.tenancy.views import page, paging
from isthmus.web import create_app, json_response, parse_body, versioned

SERVICE = "budgets"


def _service() -> OffLoop[BudgetService]:
    return off_loop(BudgetService(wiring.stores()))


@authorized(MASTER)
async def create_budget(request: Request) -> Response:
    body = await parse_body(request, CreateBudget)
    return json_response(await _service().create(body))


@authorized(MASTER)
async def list_budgets(request: Request) -> Response:
    skip, limit = paging(request.query_params)
    return json_response(page(await _service().list(), skip, limit))


@authorized(MASTER)
async def get_budget(request: Request) -> Response:
    return json_response(await _service().get(request.path_params["budget_id"]))


@authorized(MASTER)
async def update_budget(request: Request) -> Response:
    body = await parse_body(request, UpdateBudget)
    return json_response(await _service().update(request.path_params["budget_id"], body))


@authorized(MASTER)
async def delete_budget(request: Request) -> Response:
    await _service().delete(request.path_params["budget_id"])
    return Response(status_code=204)


@authorized(MASTER)
async def reset_logs(request: Request) -> Response:
    skip, limit = paging(request.query_params)
    return json_response(page(await _service().reset_logs(request.path_params["budget_id"]), skip, limit))


app = create_app(
    versioned("/budgets", create_budget, ["POST"]) + versioned("/budgets", list_budgets, ["GET"])
    + versioned("/budgets/{budget_id}", get_budget, ["GET"])
    + versioned("/budgets/{budget_id}", update_budget, ["PATCH"])
    + versioned("/budgets/{budget_id}", delete_budget, ["DELETE"])
    + versioned("/budgets/{budget_id}/reset-logs", reset_logs, ["GET"]),
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE, prepare=init_parts.prepare_tenancy)
