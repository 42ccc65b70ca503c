"""Health probes, and the catch-all that answers unknown routes with a 404 in the caller's dialect."""

from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route

from isthmus.adapters.dynamodb import DynamoStoreProbe, client
from isthmus.errors import ApiError, allowed_methods, method_not_allowed
from isthmus.observability import lambda_entry
from isthmus.services.control import health
from isthmus.web import ALL_METHODS, create_app, json_response

SERVICE = "health"
_probe = DynamoStoreProbe()


async def get_health(request: Request) -> Response:
    return json_response(health.status())


async def liveness(request: Request) -> Response:
    return json_response({"status": "alive"})


async def readiness(request: Request) -> Response:
    status, body = await health.ready(_probe)
    return json_response(body, status=status)


async def unknown_route(request: Request) -> Response:
    # API Gateway sends a wrong method on an inference route here too: that is a 405, not a 404.
    allowed = allowed_methods(request.url.path)
    if allowed and request.method not in allowed:
        raise method_not_allowed(request.method, request.url.path, allowed)
    raise ApiError(404, f"No route for {request.method} {request.url.path}", code="not_found")


app = create_app(
    [
        Route("/health", get_health, methods=["GET"]),
        Route("/health/liveness", liveness, methods=["GET"]),
        Route("/health/readiness", readiness, methods=["GET"]),
        Route("/{path:path}", unknown_route, methods=list(ALL_METHODS)),
    ],
    service=SERVICE,
)
# Lambda init: readiness asks the store through the probe's own client (fast-fail timeouts, no retries)
handler = lambda_entry(app, SERVICE, prepare=lambda: client(fast_fail=True))
