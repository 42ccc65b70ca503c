"""An agent that requires a key (``isthmus agent --api-key``, or ``ISTHMUS_AGENT_API_KEY``): for an agent reachable
beyond a trusted LAN, typically the upstream of a telemak cluster, which sends the cluster's stored ``api_key``.

Every HTTP route needs ``Authorization: Bearer <key>`` (what the gateway sends, and the OpenAI SDK) or
``x-api-key: <key>`` (the Anthropic SDK, in single-Mac mode), compared in constant time; a missing or wrong key is a
401 with ``WWW-Authenticate: Bearer`` in the route's error dialect. Only ``/health`` stays open: a liveness probe
(idle/busy/loading and the model's name, as the on-prem gateway's ``/health``), which supervisors and the test
harness poll without credentials. ``/agent/v1/status`` is keyed: it also tells the node's memory, queue and cache.
"""

from __future__ import annotations

import hmac

from starlette.types import ASGIApp, Receive, Scope, Send

from isthmus.errors import ApiError
from isthmus.web import error_response

ENV_VAR = "ISTHMUS_AGENT_API_KEY"
OPEN_PATHS = frozenset({"/health"})


def _presented(scope: Scope) -> bytes | None:
    """The key the caller sent: a Bearer in Authorization, else x-api-key."""
    headers = dict(scope.get("headers") or [])
    authorization = headers.get(b"authorization", b"")
    scheme, _, token = authorization.partition(b" ")
    if scheme.lower() == b"bearer" and token.strip():
        return token.strip()
    return headers.get(b"x-api-key") or None


def require_api_key(app: ASGIApp, api_key: str) -> ASGIApp:
    """``app`` behind ``api_key`` (an empty key is a configuration mistake: refused rather than open)."""
    if not api_key:
        raise ValueError("an agent API key cannot be empty")
    expected = api_key.encode()

    async def keyed(scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http" or scope.get("path", "") in OPEN_PATHS:
            await app(scope, receive, send)
            return
        presented = _presented(scope)
        if presented is not None and hmac.compare_digest(presented, expected):
            await app(scope, receive, send)
            return
        err = ApiError(401, "this agent requires its API key: send it as 'Authorization: Bearer <key>' or "
                            "'x-api-key: <key>'" + (" (the key sent is not this agent's)" if presented else ""),
                       code="invalid_api_key", headers={"WWW-Authenticate": "Bearer"})
        await error_response(scope.get("path", ""), err)(scope, receive, send)

    return keyed
