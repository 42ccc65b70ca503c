"""``/admin/*`` authorization: open when no admin token is configured (trusted LAN); otherwise
``Authorization: Bearer <token>`` (constant-time compare) or 401 with ``WWW-Authenticate: Bearer``."""

from __future__ import annotations

import hmac
import os
from collections.abc import Awaitable, Callable

from starlette.requests import Request
from starlette.responses import Response

from isthmus.errors import ApiError

Endpoint = Callable[[Request], Awaitable[Response]]


def admin_token() -> str:
    return os.environ.get("ODYSSAI_X_ADMIN_TOKEN") or os.environ.get("ISTHMUS_ADMIN_TOKEN") or ""


def check_admin(authorization: str | None) -> None:
    expected = admin_token()
    if not expected:
        return
    scheme, _, given = (authorization or "").partition(" ")
    if scheme.lower() != "bearer" or not hmac.compare_digest(given.strip().encode(), expected.encode()):
        raise ApiError(401, "Admin token required: Authorization: Bearer <token>.", code="unauthorized",
                       headers={"WWW-Authenticate": "Bearer"})


def admin(endpoint: Endpoint) -> Endpoint:
    async def guarded(request: Request) -> Response:
        check_admin(request.headers.get("authorization"))
        return await endpoint(request)

    guarded.__name__ = endpoint.__name__
    return guarded
