"""Authorization for control-surface handlers (Starlette requests -> credentials service), and the
``@authorized`` rules over the tenancy tables (see isthmus.handlers)."""

from __future__ import annotations

import os

from starlette.requests import Request

from isthmus import wiring
from isthmus.handlers import Check
from isthmus.services.tenancy.gate import Principal

gate = wiring.gate  # the one tenancy gate of the process (isthmus.wiring)


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


async def require_master(request: Request) -> None:
    """Management: the master key whenever one is configured; open on loopback when none is."""
    await wiring.credentials().require_master(request.headers, client_host(request))


async def require_reader(request: Request) -> Principal:
    """Read endpoints (pricing): any valid API key or the master key; open mode lets anyone read."""
    return await gate().authenticate(request.headers)


class MasterKey(Check):
    """Management (/v1/keys, users, budgets, usage, pricing writes): the master key whenever one is configured
    (401 + ``WWW-Authenticate: Bearer`` when missing or wrong); with none configured, loopback callers only."""

    async def check(self, request: Request) -> None:
        await require_master(request)


class AnyKey(Check):
    """Read endpoints (pricing): any valid API key or the master key; open mode lets anyone read."""

    async def check(self, request: Request) -> None:
        request.state.principal = await require_reader(request)


class ListingKey(Check):
    """``/v1/models``: keyed mode is keyed everywhere, so a valid API key (or the master key) is needed, as for
    inference, with the same 401 for none, an unknown, inactive, expired or rotated-out key. Open mode (and
    ``ISTHMUS_TENANCY=off``) lists for anyone, whatever key is sent."""

    async def check(self, request: Request) -> None:
        if os.environ.get("ISTHMUS_TENANCY", "on").lower() == "off":
            return
        if await wiring.credentials().keyed():
            await gate().authenticate(request.headers)


MASTER = MasterKey()
ANY_KEY = AnyKey()
LISTING_KEY = ListingKey()
