"""Authorization for control-surface handlers (Starlette requests -> credentials service)."""

from __future__ import annotations

from starlette.requests import Request

from isthmus import wiring
from isthmus.services.gate import Principal

gate = wiring.gate  # the one tenancy gate of the process (isthmus.wiring)


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


async def require_master(request: Request) -> None:
    """Management: the master key whenever one is configured; open on loopback when none is."""
    await wiring.credentials().require_master(request.headers, client_host(request))


async def require_reader(request: Request) -> Principal:
    """Read endpoints (pricing): any valid API key or the master key; open mode lets anyone read."""
    return await gate().authenticate(request.headers)
