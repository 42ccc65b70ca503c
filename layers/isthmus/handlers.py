"""The one handler idiom of ``functions/``: ``@authorized(<rule>)`` in front of every route, and services the
handler awaits (``off_loop`` puts a blocking service behind ``await``).

    @authorized(MASTER)
    async def get_budget(request: Request) -> Response:
        return json_response(await _service().get(request.path_params["budget_id"]))

Each rule documents what it checks; a refusal is an ``ApiError`` rendered in the caller's dialect by the app.
"""

from __future__ import annotations

import os
from collections.abc import Awaitable, Callable, Mapping
from types import ModuleType
from typing import TYPE_CHECKING, Any, Generic, Protocol, TypeVar

from starlette.requests import Request
from starlette.responses import Response

from isthmus.control.admin_auth import check_admin, check_enroll_token
from isthmus.errors import ApiError
from isthmus.services.credentials import call, default_credentials
from isthmus.web import Endpoint

if TYPE_CHECKING:
    from isthmus.services.gate import Principal

S = TypeVar("S")


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


def _auth() -> ModuleType:
    # Imported on first use: the tenancy gate costs ~50 ms of cold start that the admin and health functions
    # (which never check a master or API key) should not pay.
    from isthmus import auth_http

    return auth_http


class MasterKey(Check):
    """Management (/v1/keys, users, budgets, usage, pricing writes): the master key whenever one is configured
    (401 + ``WWW-Authenticate: Bearer`` when missing or wrong); with none configured, loopback callers only."""

    async def check(self, request: Request) -> None:
        await _auth().require_master(request)


class AnyKey(Check):
    """Read endpoints (pricing): any valid API key or the master key; open mode lets anyone read. The principal
    is left on ``request.state.principal``."""

    async def check(self, request: Request) -> None:
        request.state.principal = await _auth().require_reader(request)


class ListingKey(Check):
    """``/v1/models``: keyed mode is keyed everywhere, so a valid API key (or the master key) is needed, as for
    inference, with the same 401 for none, an unknown, inactive, expired or rotated-out key. Open mode (and
    ``ISTHMUS_TENANCY=off``) lists for anyone, whatever key is sent."""

    async def check(self, request: Request) -> None:
        if os.environ.get("ISTHMUS_TENANCY", "on").lower() == "off":
            return
        if await default_credentials().keyed():
            await _auth().gate().authenticate(request.headers)


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


MASTER = MasterKey()
ANY_KEY = AnyKey()
LISTING_KEY = ListingKey()
ADMIN_TOKEN = AdminToken()
ENROLL_TOKEN = EnrollToken()


class OffLoop(Generic[S]):
    """A blocking service behind ``await``: every method runs in the threadpool through ``credentials.call``
    (an unreachable or failing store is a 503 + Retry-After, never a silent allow), so handlers see one kind
    of service and never thread a call themselves."""

    def __init__(self, target: S) -> None:
        self._target = target

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._target, name)

        async def awaited(*args: Any, **kwargs: Any) -> Any:
            return await call(method, *args, **kwargs)

        awaited.__name__ = name
        return awaited


def off_loop(target: S) -> OffLoop[S]:
    return OffLoop(target)
