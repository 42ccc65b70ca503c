"""/v1/keys (master key): create (the secret once), list, get, patch, delete, rotate."""

from starlette.requests import Request
from starlette.responses import Response

from isthmus import init_parts, wiring
from isthmus.auth_http import MASTER
from isthmus.handlers import authorized
from isthmus.observability import lambda_entry
from isthmus.services.tenancy.credentials import OffLoop, off_loop
from isthmus.services.tenancy.keys import CreateKey, KeyService, UpdateKey
from isthmus.services.tenancy.views import page, paging
from isthmus.web import create_app, json_response, parse_body, versioned

SERVICE = "keys"


def _service() -> OffLoop[KeyService]:
    return off_loop(KeyService(wiring.stores(), wiring.credentials()))


@authorized(MASTER)
async def create_key(request: Request) -> Response:
    body = await parse_body(request, CreateKey)
    return json_response(await _service().create(body))


@authorized(MASTER)
async def list_keys(request: Request) -> Response:
    skip, limit = paging(request.query_params)
    return json_response(page(await _service().list(), skip, limit))


@authorized(MASTER)
async def get_key(request: Request) -> Response:
    return json_response(await _service().get(request.path_params["key_id"]))


@authorized(MASTER)
async def update_key(request: Request) -> Response:
    body = await parse_body(request, UpdateKey)
    return json_response(await _service().update(request.path_params["key_id"], body))


@authorized(MASTER)
async def delete_key(request: Request) -> Response:
    await _service().delete(request.path_params["key_id"])
    return Response(status_code=204)


@authorized(MASTER)
async def rotate_key(request: Request) -> Response:
    return json_response(await _service().rotate(request.path_params["key_id"]))


app = create_app(
    versioned("/keys", create_key, ["POST"]) + versioned("/keys", list_keys, ["GET"])
    + versioned("/keys/{key_id}", get_key, ["GET"]) + versioned("/keys/{key_id}", update_key, ["PATCH"])
    + versioned("/keys/{key_id}", delete_key, ["DELETE"]) + versioned("/keys/{key_id}/rotate", rotate_key, ["POST"]),
    service=SERVICE,
)
handler = lambda_entry(app, SERVICE, prepare=init_parts.prepare_tenancy)
