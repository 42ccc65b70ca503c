"""The one handler idiom of ``functions/``: ``@authorized(<rule>)`` in front of every route; the handler then
parses, awaits a service and shapes the answer (a blocking service is awaited through
``credentials.off_loop``: no handler threads a call itself).

    @authorized(MASTER)
    async def get_budget(request: Request) -> Response:
        return json_response(await _service().get(request.path_params["budget_id"]))

The rules, each documenting what it checks: here ``ADMIN_TOKEN``, ``ENROLL_TOKEN`` and ``ApiKey`` (inference);
in isthmus.auth_http the ones over the tenancy tables, ``MASTER``, ``ANY_KEY`` and ``LISTING_KEY`` (apart so
that the admin function does not import the tenancy gate). A refusal is an ``ApiError``, rendered in the
caller's dialect by the app.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, Protocol

from starlette.requests import Request
from starlette.responses import Response

from isthmus.control.admin_auth import check_admin, check_enroll_token
from isthmus.errors import ApiError
from isthmus.web import Endpoint

if TYPE_CHECKING:
    from isthmus.services.tenancy.gate import Principal


class Rule(Protocol):
    async def guard(self, request: Request, endpoint: Endpoint) -> Response: ...


class Check:
    """A rule that checks the request and then lets the handler run (or raises the refusal)."""

    async def check(self, request: Request) -> None:
        raise NotImplementedError

    async def guard(self, request: Request, endpoint: Endpoint) -> Response:
        await self.check(request)
        return await endpoint(request)


# Which rule guards each handler (tests check that every route of functions/ has one, or is public on purpose).
RULES: dict[Endpoint, Rule] = {}


def authorized(rule: Rule) -> Callable[[Endpoint], Endpoint]:
    """The handler runs only once ``rule`` lets the request through."""

    def wrap(endpoint: Endpoint) -> Endpoint:
        async def guarded(request: Request) -> Response:
            return await rule.guard(request, endpoint)

        guarded.__name__, guarded.__doc__ = endpoint.__name__, endpoint.__doc__
        RULES[guarded] = rule
        return guarded

    return wrap


class AdminToken(Check):
    """``/admin/*``: open when no admin token is configured (trusted LAN); otherwise ``Authorization: Bearer
    <ISTHMUS_ADMIN_TOKEN>`` (constant-time compare) or 401 with ``WWW-Authenticate: Bearer``."""

    async def check(self, request: Request) -> None:
        check_admin(request.headers.get("authorization"))


class EnrollToken(Check):
    """Node enrollment and heartbeats: ``Authorization: Bearer <ISTHMUS_ENROLL_TOKEN>`` when one is set (401
    ``invalid_enroll_token`` + ``WWW-Authenticate: Bearer`` otherwise); open when unset."""

    async def check(self, request: Request) -> None:
        check_enroll_token(request.headers.get("authorization"))


class Authenticator(Protocol):
    """What ApiKey needs of the inference service."""

    async def authenticate(self, headers: Mapping[str, str]) -> Principal | None: ...

    async def refuse(self, principal: Principal | None, *, model: str, endpoint: str, error: ApiError,
                     request_id: str) -> None: ...


class _NeverRaised(Exception):
    """ApiKey's ``hung_up`` when the service has none."""


def request_id(request: Request) -> str:
    return str(request.state.request_id) if hasattr(request.state, "request_id") else ""


class ApiKey:
    """Inference: a valid API key (or the master key) in keyed mode, anyone in open mode, no check at all when
    the service runs without tenancy; the principal is left on ``request.state.principal``.

    With ``endpoint`` (a billed route), a request turned away before admission (bad key, bad input, unknown
    model, budget, rate) still gets its ``refused`` usage row for that endpoint, naming
    ``request.state.model`` when the handler got that far; once ``request.state.call`` is set the service
    owns the accounting. A client that hung up (``hung_up``, the service's exception for a request already
    settled as cancelled) is answered 499. (Passed in rather than imported: control functions import this
    module and should not pay for the inference service at cold start.)
    """

    def __init__(self, service: Callable[[], Authenticator], *, endpoint: str | None = None,
                 hung_up: type[Exception] | None = None) -> None:
        self.service = service
        self.endpoint = endpoint
        self.hung_up = hung_up or _NeverRaised

    async def guard(self, request: Request, endpoint: Endpoint) -> Response:
        if self.endpoint is None:
            request.state.principal = await self.service().authenticate(request.headers)
            return await endpoint(request)
        principal = None
        try:
            principal = await self.service().authenticate(request.headers)
            request.state.principal = principal
            return await endpoint(request)
        except ApiError as exc:
            if getattr(request.state, "call", None) is None:
                await self.service().refuse(principal, model=getattr(request.state, "model", ""),
                                            endpoint=self.endpoint, error=exc, request_id=request_id(request))
            raise
        except self.hung_up:  # settled as cancelled; nobody is left to read this
            return Response(status_code=499)


ADMIN_TOKEN = AdminToken()
ENROLL_TOKEN = EnrollToken()
