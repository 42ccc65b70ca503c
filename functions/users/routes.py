"""/v1/users (master key): create, list, get, patch, soft delete, and a user's usage."""

from starlette.requests import Request
from starlette.responses import Response

from isthmus import init_parts, wiring
from isthmus.auth_http import MASTER
from isthmus.handlers import authorized
from isthmus.observability import lambda_entry
from isthmus.services.tenancy.credentials import OffLoop, off_loop
from isthmus.services.tenancy.usage import UsageService
from isthmus.services.tenancy.users import CreateUser, UpdateUser, UserService
from isthmus.services.tenancy.views import page, paging
from isthmus.web import create_app, json_response, parse_body, versioned

SERVICE = "users"


def _service() -> OffLoop[UserService]:
    return off_loop(UserService(wiring.stores()))


def _usage() -> OffLoop[UsageService]:
    return off_loop(UsageService(wiring.stores()))


@authorized(MASTER)
async def create_user(request: Request) -> Response:
    body = await parse_body(request, CreateUser)
    return json_response(await _service().create(body))


@authorized(MASTER)
async def list_users(request: Request) -> Response:
    skip, limit = paging(request.query_params)
    return json_response(page(await _service().list(), skip, limit))


@authorized(MASTER)
async def get_user(request: Request) -> Response:
    return json_response(await _service().get(request.path_params["user_id"]))


@authorized(MASTER)
async def update_user(request: Request) -> Response:
    body = await parse_body(request, UpdateUser)
    return json_response(await _service().update(request.path_params["user_id"], body))


@authorized(MASTER)
async def delete_user(request: Request) -> Response:
    await _service().delete(request.path_params["user_id"])
    return Response(status_code=204)


@authorized(MASTER)
async def user_usage(request: Request) -> Response:
    user_id = request.path_params["user_id"]
    skip, limit = paging(request.query_params)
    await _service().live(user_id)
    return json_response(await _usage().list(request.query_params, [user_id], skip, limit))


app = create_app(
    versioned("/users", create_user, ["POST"]) + versioned("/users", list_users, ["GET"])
    + versioned("/users/{user_id}", get_user, ["GET"]) + versioned("/users/{user_id}", update_user, ["PATCH"])
    + versioned("/users/{user_id}", delete_user, ["DELETE"]) + versioned("/users/{user_id}/usage", user_usage, ["GET"]),
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE, prepare=init_parts.prepare_tenancy)
