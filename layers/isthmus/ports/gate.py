"""What inference needs from tenancy: who calls, may they (and can they pay), and the bill afterwards."""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Mapping
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    from isthmus.services.inference.token_bounds import TokenBound
    from isthmus.services.tenancy.gate import Admission, Principal


class Gate(Protocol):
    async def authenticate(self, headers: Mapping[str, str]) -> Principal: ...

    async def admit(self, principal: Principal, *, model: str, endpoint: str, input_tokens_estimate: int = 0,
                    max_output_tokens: int = 0,
                    bound: Callable[[], Awaitable[TokenBound]] | None = None) -> Admission: ...

    async def settle(self, admission: Admission, *, prompt_tokens: int, completion_tokens: int, cached_tokens: int,
                     status: str, status_code: int, latency_ms: int, backend: str, request_id: str,
                     detached: bool = False) -> None: ...

    async def refuse(self, principal: Principal | None, *, model: str, endpoint: str, status_code: int,
                     request_id: str, reason: str) -> None: ...
