"""The ASGI app factory every function uses: routes under /v1 and /api/v1, dialect-shaped errors,
a request id on every request and every log line, and one log line per unhandled exception."""

from __future__ import annotations

import json
import re
import uuid
from collections.abc import Awaitable, Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

from starlette.applications import Starlette
from starlette.exceptions import HTTPException
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import BaseRoute, Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from isthmus import limits, metrics
from isthmus.errors import (
    ApiError,
    Dialect,
    allowed_methods,
    dialect_for_path,
    error_body,
    method_not_allowed,
    store_failure,
)
from isthmus.observability import get_logger, inflight, request_id_var
from isthmus.validation import validate

if TYPE_CHECKING:
    from pydantic import BaseModel

M = TypeVar("M", bound="BaseModel")
Endpoint = Callable[[Request], Awaitable[Response]]
_SAFE_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
MAX_PATH_BYTES = 2048
MAX_HEADER_BYTES = 32 * 1024


def versioned(path: str, endpoint: Endpoint, methods: Sequence[str]) -> list[Route]:
    """The same endpoint under ``/v1{path}`` and ``/api/v1{path}`` (newer otari clients use the latter)."""
    return versioned_all([(path, endpoint, methods)])


def versioned_all(endpoints: Sequence[tuple[str, Endpoint, Sequence[str]]]) -> list[Route]:
    """Each endpoint under ``/v1`` first, then each under ``/api/v1``: Starlette matches routes in order."""
    return [Route(f"{prefix}{path}", endpoint, methods=list(methods))
            for prefix in ("/v1", "/api/v1") for path, endpoint, methods in endpoints]


class SafeJSONResponse(JSONResponse):
    """JSON that always encodes: a lone surrogate already stored (written before input was checked) comes out
    as its ``\\udXXX`` escape instead of failing the whole answer (one bad row must not 500 a list)."""

    def render(self, content: Any) -> bytes:
        try:
            return super().render(content)
        except UnicodeEncodeError:
            return json.dumps(content, ensure_ascii=True, allow_nan=False, separators=(",", ":")).encode("ascii")


def json_response(data: Any, status: int = 200, headers: dict[str, str] | None = None) -> JSONResponse:
    return SafeJSONResponse(data, status_code=status, headers=headers)


async def read_body(request: Request) -> bytes:
    """The raw body, refused with a 413 as soon as it is known to exceed the route's limit: on its declared
    Content-Length before a byte is read, else while it streams in (a chunked body is never read whole)."""
    limit = limits.body_limit(request.url.path)
    declared = request.headers.get("content-length")
    if declared is not None:
        if not declared.strip().isdigit():
            raise ApiError(400, "Content-Length is not a number.", code="invalid_content_length")
        if int(declared) > limit:
            raise limits.too_large(limit, request.url.path)
    cached = getattr(request, "_body", None)
    if isinstance(cached, bytes):
        if len(cached) > limit:
            raise limits.too_large(limit, request.url.path)
        return cached
    received = bytearray()
    async for chunk in request.stream():
        received += chunk
        if len(received) > limit:
            raise limits.too_large(limit, request.url.path)
    body = bytes(received)
    request._body = body  # Starlette's own cache: a later request.body() sees the same bytes
    return body


async def read_json(request: Request) -> Any:
    """The request body as bounded JSON (size, depth, integer range, string length, valid Unicode), or a
    413/400 in the caller's dialect that says what is wrong with it."""
    raw = await read_body(request)
    if not raw:
        raise ApiError(400, "Request body is empty; expected a JSON object.")
    return limits.loads(raw, request.url.path)


async def parse_body(request: Request, model: type[M]) -> M:
    """Validate the JSON body against ``model``; validation failures name the field (never a 500)."""
    return validate(model, await read_json(request), dialect_for_path(request.url.path))


def error_response(request_path: str, err: ApiError, request_id: str | None = None) -> JSONResponse:
    headers = dict(err.headers)
    if request_id:
        headers["x-request-id"] = request_id
    return SafeJSONResponse(err.body(dialect_for_path(request_path)), status_code=err.status, headers=headers)


async def _api_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, ApiError)
    return error_response(request.url.path, exc)


async def _http_error(request: Request, exc: Exception) -> Response:
    assert isinstance(exc, HTTPException)
    headers = dict(exc.headers or {})
    if exc.status_code == 404:
        err = ApiError(404, f"No route for {request.method} {request.url.path}", code="not_found", headers=headers)
    elif exc.status_code == 405:
        allowed = [m.strip() for m in headers.pop("Allow", "").split(",") if m.strip()]
        err = method_not_allowed(request.method, request.url.path, allowed)
    else:
        err = ApiError(exc.status_code, str(exc.detail), headers=headers)
    return error_response(request.url.path, err)


class RequestContextMiddleware:
    """Request id, in-flight count, and the last word on unhandled exceptions: it logs each once with
    the request id and answers 500 in the caller's dialect, naming the request id."""

    def __init__(self, app: ASGIApp, service: str) -> None:
        self.app = app
        self.logger = get_logger(service)

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        request_id = _request_id(scope)
        scope.setdefault("state", {})["request_id"] = request_id
        token = request_id_var.set(request_id)
        counted = not scope["path"].startswith("/health")
        inference = counted and allowed_methods(scope["path"]) is not None  # batch lines yield to these
        started = False
        status = 500
        timing = metrics.request_started()

        async def send_with_id(message: Message) -> None:
            nonlocal started, status
            if message["type"] == "http.response.start":
                started, status = True, message["status"]
                message["headers"] = [*message.get("headers", []), (b"x-request-id", request_id.encode())]
            await send(message)

        refusal = _oversized_request_line(scope)
        if refusal is not None:
            await error_response(scope["path"], refusal, request_id)(scope, receive, send)
            request_id_var.reset(token)
            return
        if counted:
            inflight.count += 1
            inflight.inference += inference
        try:
            await self.app(scope, receive, send_with_id)
        except Exception as exc:
            failure = store_failure(exc)
            if failure is not None and not started:
                # A service that called the store without the 503 mapping: still the store's fault, not a bug.
                self.logger.warning("store call failed",
                                    extra={"path": scope["path"], "store_error": type(exc).__name__})
                status = failure.status
                await error_response(scope["path"], failure, request_id)(scope, receive, send)
                return
            self.logger.exception("unhandled error", extra={"path": scope["path"], "method": scope["method"]})
            if started:
                raise
            body = error_body(dialect_for_path(scope["path"]), 500,
                              f"Internal error; request id {request_id}", code="internal_error")
            await JSONResponse(body, status_code=500, headers={"x-request-id": request_id})(scope, receive, send)
        finally:
            if counted:
                inflight.count -= 1
                inflight.inference -= inference
            request_id_var.reset(token)
            metrics.request_done(timing, _route_template(scope), status)


def _route_template(scope: Scope) -> str:
    """The matched route's template (``/v1/keys/{key_id}``), never the raw path: ids would make a label each."""
    route = scope.get("route")
    return getattr(route, "path", None) or "unmatched"


def _oversized_request_line(scope: Scope) -> ApiError | None:
    """A path too long to be a store key (DynamoDB refuses keys over 2048 bytes) or a header block larger than
    any client needs (uvicorn's httptools parser sets no bound of its own): refused before routing."""
    if len(scope["path"].encode("utf-8", "surrogatepass")) > MAX_PATH_BYTES:
        return ApiError(414, f"The request path is longer than {MAX_PATH_BYTES} bytes.", code="uri_too_long")
    header_bytes = sum(len(name) + len(value) + 4 for name, value in scope.get("headers", []))
    if header_bytes > MAX_HEADER_BYTES:
        return ApiError(431, f"The request headers total {header_bytes} bytes; at most {MAX_HEADER_BYTES} are "
                             "accepted.", code="headers_too_large")
    return None


def _request_id(scope: Scope) -> str:
    for name, value in scope.get("headers", []):
        if name == b"x-request-id":
            candidate = value.decode("latin-1")
            if _SAFE_REQUEST_ID.match(candidate):
                return candidate
    context = scope.get("aws.context")
    rid = getattr(context, "aws_request_id", None)
    return str(rid) if rid else uuid.uuid4().hex


def create_app(routes: Sequence[BaseRoute], *, service: str) -> ASGIApp:
    # Our middleware sits inside Starlette's ServerErrorMiddleware, so a crash is answered (and logged)
    # here once, and never reaches the plain-text "Internal Server Error" page.
    return Starlette(
        routes=list(routes),
        middleware=[Middleware(RequestContextMiddleware, service=service)],
        exception_handlers={ApiError: _api_error, HTTPException: _http_error},
    )


def not_implemented(group: str, issue: int) -> Endpoint:
    """An honest 501 for a route whose group has not landed yet (its route and function exist)."""

    async def endpoint(request: Request) -> Response:
        raise ApiError(501, f"{request.method} {request.url.path} is not implemented yet ({group}, see #{issue}).",
                       code="not_implemented", error_type="not_implemented")

    return endpoint


__all__ = ["Dialect", "create_app", "json_response", "not_implemented", "parse_body", "read_body", "read_json",
           "versioned"]


ALL_METHODS = ("GET", "POST", "PUT", "PATCH", "DELETE")


def placeholder_routes(paths: Sequence[str], group: str, issue: int, *, versioned_paths: bool = True) -> list[Route]:
    """501 routes for a group whose service has not landed yet, under both API prefixes."""
    endpoint = not_implemented(group, issue)
    routes: list[Route] = []
    for path in paths:
        routes += versioned(path, endpoint, ALL_METHODS) if versioned_paths else \
            [Route(path, endpoint, methods=list(ALL_METHODS))]
    return routes
