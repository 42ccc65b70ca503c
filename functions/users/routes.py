"""/v1/users (master key): create, list, get, patch, soft delete, and a user's usage."""

from starlette.requests import Request
from starlette.responses import Response

from isthmus import wiring
from isthmus.auth_http import require_master
from isthmus.observability import lambda_entry
from isthmus.services.credentials import call
from isthmus.services.usage import UsageService
from isthmus.services.users import CreateUser, UpdateUser, UserService
from isthmus.services.views import page, paging
from isthmus.web import create_app, json_response, parse_body, versioned

SERVICE = "users"


def _service() -> UserService:
    return UserService(wiring.stores())


async def create_user(request: Request) -> Response:
    await require_master(request)
    body = await parse_body(request, CreateUser)
    return json_response(await call(_service().create, body))


async def list_users(request: Request) -> Response:
    await require_master(request)
    skip, limit = paging(request.query_params)
    return json_response(page(await call(_service().list), skip, limit))


async def get_user(request: Request) -> Response:
    await require_master(request)
    return json_response(await call(_service().get, request.path_params["user_id"]))


async def update_user(request: Request) -> Response:
    await require_master(request)
    body = await parse_body(request, UpdateUser)
    return json_response(await call(_service().update, request.path_params["user_id"], body))


async def delete_user(request: Request) -> Response:
    await require_master(request)
    await call(_service().delete, request.path_params["user_id"])
    return Response(status_code=204)


async def user_usage(request: Request) -> Response:
    await require_master(request)
    user_id = request.path_params["user_id"]
    skip, limit = paging(request.query_params)
    await call(_service().live, user_id)
    rows = await call(UsageService(wiring.stores()).list, request.query_params, [user_id], skip, limit)
    return json_response(rows)


app = create_app(
    versioned("/users", create_user, ["POST"]) + versioned("/users", list_users, ["GET"])
    + versioned("/users/{user_id}", get_user, ["GET"]) + versioned("/users/{user_id}", update_user, ["PATCH"])
    + versioned("/users/{user_id}", delete_user, ["DELETE"]) + versioned("/users/{user_id}/usage", user_usage, ["GET"]),
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE)
