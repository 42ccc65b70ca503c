"""Authorization for control-surface handlers (Starlette requests -> credentials service)."""

from __future__ import annotations

from starlette.requests import Request

from isthmus.services.credentials import default_credentials
from isthmus.services.gate import Principal, TenancyGate

_gate: dict[str, TenancyGate] = {}


def gate() -> TenancyGate:
    if "g" not in _gate:
        _gate["g"] = TenancyGate()
    return _gate["g"]


def client_host(request: Request) -> str | None:
    return request.client.host if request.client else None


async def require_master(request: Request) -> None:
    """Management: the master key whenever one is configured; open on loopback when none is."""
    await default_credentials().require_master(request.headers, client_host(request))


async def require_reader(request: Request) -> Principal:
    """Read endpoints (pricing): any valid API key or the master key; open mode lets anyone read."""
    return await gate().authenticate(request.headers)
