"""Bearer-token checks of the cluster admin API (``@authorized(ADMIN_TOKEN)`` / ``ENROLL_TOKEN`` in
isthmus.handlers): each is open when its token is not configured (trusted LAN); otherwise ``Authorization:
Bearer <token>`` (constant-time compare) or 401 with ``WWW-Authenticate: Bearer``."""

from __future__ import annotations

import hmac
import os

from isthmus.errors import ApiError


def admin_token() -> str:
    return os.environ.get("ODYSSAI_X_ADMIN_TOKEN") or os.environ.get("ISTHMUS_ADMIN_TOKEN") or ""


def bearer_matches(authorization: str | None, expected: str) -> bool:
    scheme, _, given = (authorization or "").partition(" ")
    return scheme.lower() == "bearer" and hmac.compare_digest(given.strip().encode(), expected.encode())


def check_admin(authorization: str | None) -> None:
    expected = admin_token()
    if expected and not bearer_matches(authorization, expected):
        raise ApiError(401, "Admin token required: Authorization: Bearer <token>.", code="unauthorized",
                       headers={"WWW-Authenticate": "Bearer"})


def check_enroll_token(authorization: str | None) -> None:
    """``ISTHMUS_ENROLL_TOKEN`` guards enrollment and heartbeats; open when unset."""
    expected = os.environ.get("ISTHMUS_ENROLL_TOKEN") or ""
    if expected and not bearer_matches(authorization, expected):
        raise ApiError(401, "A valid enrollment token is required (Authorization: Bearer <token>).",
                       code="invalid_enroll_token", headers={"WWW-Authenticate": "Bearer"})
