"""The inference service: authenticate, resolve the model to a backend, admit (rate limit + budget hold),
answer whole or as a stream of events, and settle the bill exactly once whatever happens.

Streams are opened eagerly: the backend's first event is awaited before the HTTP response starts, so a
backend that is down or refuses the request is an ordinary HTTP error in the caller's dialect, and only
failures after the first byte become in-band error events. Settlement runs when the stream ends, fails or is
abandoned by the client (the iterator's ``finally``), off the path of the answer itself.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import time
from collections.abc import AsyncIterator, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from isthmus.errors import ApiError
from isthmus.ports.backend import BackendResolver, InferenceBackend
from isthmus.ports.gate import Gate
from isthmus.services.accumulate import StreamAccumulator
from isthmus.services.token_bounds import RequestBound, default_output_tokens
from isthmus_contracts.agent import TokenizeRequest
from isthmus_contracts.internal import ErrorEvent, InternalRequest, InternalResponse, StreamEvent, Usage

if TYPE_CHECKING:
    from isthmus.services.gate import Admission, Principal



@dataclass
class Call:
    """One admitted request on its way to a backend."""

    backend: InferenceBackend
    request: InternalRequest  # with the concrete model the backend serves
    endpoint: str
    request_id: str
    admission: Admission | None = None
    started: float = field(default_factory=time.monotonic)
    # Settle in a task of its own, off the answer's path (a long-lived server). Under Lambda the invoke ends
    # with the response, so there the bill is settled before the handler returns.
    detach_settle: bool = False


_settling: set[asyncio.Task[None]] = set()  # strong references: a detached settle must not be collected


def input_estimate(request: InternalRequest) -> int:
    """Prompt tokens, estimated at 4 characters a token: what the tokens-per-minute limit takes. Never the
    budget hold's count, which is an upper bound (isthmus.services.token_bounds)."""
    chars = sum(len(part.model_dump_json()) for m in request.messages for part in m.content)
    chars += sum(len(t.model_dump_json()) for t in request.tools)
    return max(1, math.ceil(chars / 4))


class InferenceService:
    def __init__(self, resolver: BackendResolver, gate: Gate | None = None) -> None:
        self.resolver = resolver
        self.gate = gate

    async def authenticate(self, headers: Mapping[str, str]) -> Principal | None:
        return await self.gate.authenticate(headers) if self.gate else None

    async def refuse(self, principal: Principal | None, *, model: str, endpoint: str, error: ApiError,
                     request_id: str) -> None:
        if self.gate is not None:
            await self.gate.refuse(principal, model=model, endpoint=endpoint, status_code=error.status,
                                   request_id=request_id, reason=error.message)

    async def begin(self, principal: Principal | None, request: InternalRequest, *, endpoint: str,
                    request_id: str, detach_settle: bool = False, axis_header: str | None = None) -> Call:
        """Resolve and admit. Raises ApiError (404 model, 403 budget, 429 rate, ...) with nothing held."""
        backend, routed = await self.resolver.resolve(request, endpoint=endpoint, axis_header=axis_header)
        call = Call(backend, routed, endpoint, request_id, detach_settle=detach_settle)
        if self.gate is not None and principal is not None:
            bound = RequestBound(backend, routed)
            call.admission = await self.gate.admit(
                principal, model=routed.model, endpoint=endpoint, input_tokens_estimate=input_estimate(request),
                max_output_tokens=request.sampling.max_tokens or default_output_tokens(), bound=bound)
            # A hold that covers a default output length is only a bound if the backend stops there too.
            call.request = bound.bounded_request()
        return call

    async def settle(self, call: Call, usage: Usage, *, status: str, status_code: int) -> None:
        if self.gate is None or call.admission is None:
            return
        if call.detach_settle:
            call.detach_settle = False
            task = asyncio.create_task(self.settle(call, usage, status=status, status_code=status_code))
            _settling.add(task)
            task.add_done_callback(_settling.discard)
            return
        await self.gate.settle(call.admission, prompt_tokens=usage.prompt_tokens,
                               completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens or 0,
                               status=status, status_code=status_code,
                               latency_ms=int((time.monotonic() - call.started) * 1000),
                               backend=call.backend.name, request_id=call.request_id)

    async def complete(self, call: Call) -> InternalResponse:
        """The whole answer. The caller settles it (after sending, off the answer's path) via ``settle``;
        on failure it is settled here, before the error propagates."""
        try:
            return await call.backend.generate(call.request)
        except ApiError as exc:
            await self.settle(call, Usage(), status="error", status_code=exc.status)
            raise
        except BaseException:
            await self.settle(call, Usage(), status="error", status_code=500)
            raise

    async def open_stream(self, call: Call) -> AsyncIterator[StreamEvent]:
        """The backend's events, starting with its already-received first one; settles when it ends."""
        events = call.backend.stream(call.request)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            error = ApiError(502, "The backend closed the stream without answering.", code="backend_error")
            await self._abandon(call, events, error)
            raise error from None
        except ApiError as exc:
            await self._abandon(call, events, exc)
            raise
        if isinstance(first, ErrorEvent):
            error = ApiError(first.status, first.message, code=first.code)
            await self._abandon(call, events, error)
            raise error
        return self._metered(call, first, events)

    async def _abandon(self, call: Call, events: AsyncIterator[StreamEvent], error: ApiError) -> None:
        with contextlib.suppress(Exception):
            await events.aclose()  # type: ignore[attr-defined]
        await self.settle(call, Usage(), status="error", status_code=error.status)

    async def _metered(self, call: Call, first: StreamEvent,
                       rest: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
        acc = StreamAccumulator(call.request.model)
        status, code = "cancelled", 499  # unless the stream reaches its end
        try:
            acc.feed(first)
            yield first
            async for event in rest:
                acc.feed(event)
                yield event
            if acc.error is not None:
                status, code = "error", acc.error.status
            elif acc.finished:
                status, code = "success", 200
            else:
                status, code = "error", 502
        except ApiError as exc:
            status, code = "error", exc.status
            raise
        finally:
            with contextlib.suppress(Exception):
                await rest.aclose()  # type: ignore[attr-defined]
            await self.settle(call, acc.response.usage, status=status, status_code=code)

    async def count_tokens(self, model: str, request: TokenizeRequest) -> int | None:
        """Exact count from a backend that tokenizes (local pools); None when it cannot."""
        probe = InternalRequest(model=model, messages=request.messages, tools=request.tools)
        backend, _ = await self.resolver.resolve(probe, endpoint="/v1/messages/count_tokens")
        return await backend.count_tokens(request)
