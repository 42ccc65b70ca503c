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
from collections.abc import AsyncIterator, Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from isthmus import metrics
from isthmus.errors import ApiError
from isthmus.ports.backend import BackendResolver, InferenceBackend
from isthmus.ports.gate import Gate
from isthmus.services.inference.accumulate import StreamAccumulator, fold
from isthmus.services.inference.file_parts import FileParts, file_owner, has_files, reads_documents
from isthmus.services.inference.token_bounds import RequestBound, default_output_tokens
from isthmus_contracts.agent import TokenizeRequest
from isthmus_contracts.internal import ErrorEvent, InternalRequest, InternalResponse, StreamEvent, Usage

if TYPE_CHECKING:
    from isthmus.services.tenancy.gate import Admission, Principal

# A whole answer starts watching for its client's disconnect after this long (sooner costs every answer a task).
WATCH_DISCONNECT_AFTER_S = 0.05


@dataclass
class Call:
    """One admitted request on its way to a backend."""

    backend: InferenceBackend
    request: InternalRequest  # with the concrete model the backend serves
    endpoint: str
    request_id: str
    admission: Admission | None = None
    started: float = field(default_factory=time.monotonic)
    # Settle off the answer's path: queued for the next settlement batch, not waited for (a long-lived server).
    # Under Lambda the invoke ends with the response, so there the bill is written before the handler returns.
    detach_settle: bool = False
    metered: bool = False  # its tokens are counted in the metrics


class ClientGone(Exception):
    """The client went away before its whole answer was ready; the request is settled as cancelled."""


class _HangupWatch:
    """Cancels the current task (one producing a whole answer) once its client has gone away. One watcher task
    that cancels this one, rather than the backend call in a task of its own (the answer's path gains no task
    switch), started only once the answer takes a while: most whole answers are back before a client could give
    up, and then cost a timer, not a task."""

    def __init__(self, client_gone: Callable[[], Awaitable[object]]) -> None:
        self.client_gone = client_gone
        self.task = asyncio.current_task()
        self.gone = False
        self._watching = True
        self._watcher: asyncio.Task[None] | None = None
        self._timer = asyncio.get_running_loop().call_later(WATCH_DISCONNECT_AFTER_S, self._start)

    def _start(self) -> None:
        self._watcher = asyncio.create_task(self._watch())

    async def _watch(self) -> None:
        try:
            await self.client_gone()
        except Exception:  # a server that cannot tell us: the answer goes out (or fails) as usual
            return
        if self._watching and self.task is not None:
            self.gone = True
            self.task.cancel()

    def stop(self) -> bool:
        """Stops watching; True when the client went away (the task's cancellation is then taken back: it was
        ours, and the request is over)."""
        if self._watching:
            self._watching = False
            self._timer.cancel()
            if self._watcher is not None:
                self._watcher.cancel()
            if self.gone and self.task is not None:
                self.task.uncancel()
        return self.gone


def input_estimate(request: InternalRequest) -> int:
    """Prompt tokens, estimated at 4 characters a token: what the tokens-per-minute limit takes. Never the
    budget hold's count, which is an upper bound (isthmus.services.inference.token_bounds)."""
    chars = sum(len(part.model_dump_json()) for m in request.messages for part in m.content)
    chars += sum(len(t.model_dump_json()) for t in request.tools)
    return max(1, math.ceil(chars / 4))


class InferenceService:
    def __init__(self, resolver: BackendResolver, gate: Gate | None = None,
                 file_parts: FileParts | None = None) -> None:
        self.resolver = resolver
        self.gate = gate
        self.file_parts = file_parts

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
        if has_files(routed):
            # Before the bound: the hold must count the text the model will see, not the file reference.
            routed = await self._with_files(principal, backend, routed)
        call = Call(backend, routed, endpoint, request_id, detach_settle=detach_settle)
        metrics.routed(routed.model, backend.name)
        if self.gate is not None and principal is not None:
            bound = RequestBound(backend, routed)
            # Only a key's request can be rate limited or held against a budget (an anonymous or master caller
            # never is): the estimate serialises every message part, so the others skip it.
            estimate = input_estimate(routed) if principal.kind == "key" else 0
            call.admission = await self.gate.admit(
                principal, model=routed.model, endpoint=endpoint, input_tokens_estimate=estimate,
                max_output_tokens=request.sampling.max_tokens or default_output_tokens(), bound=bound)
            # A hold that covers a default output length is only a bound if the backend stops there too.
            call.request = bound.bounded_request()
        return call

    async def _with_files(self, principal: Principal | None, backend: InferenceBackend,
                          request: InternalRequest) -> InternalRequest:
        if self.file_parts is None:
            raise ApiError(400, "This route does not take file inputs.", code="files_unavailable")
        return await self.file_parts.prepare(request, owner_id=file_owner(principal),
                                             native=reads_documents(backend))

    async def settle(self, call: Call, usage: Usage, *, status: str, status_code: int) -> None:
        if not call.metered:  # once per call: a settle can be repeated (the gate's own settle is idempotent)
            call.metered = True
            metrics.tokens(call.request.model, call.backend.name, usage.prompt_tokens, usage.completion_tokens,
                           usage.cached_tokens or 0)
        if self.gate is None or call.admission is None:
            return
        # detached (the long-running edge): queued for the next settlement batch, without waiting for it
        await self.gate.settle(call.admission, prompt_tokens=usage.prompt_tokens,
                               completion_tokens=usage.completion_tokens, cached_tokens=usage.cached_tokens or 0,
                               status=status, status_code=status_code,
                               latency_ms=int((time.monotonic() - call.started) * 1000),
                               backend=call.backend.name, request_id=call.request_id, detached=call.detach_settle)

    async def complete(self, call: Call,
                       client_gone: Callable[[], Awaitable[object]] | None = None) -> InternalResponse:
        """The whole answer. The caller settles it (after sending, off the answer's path) via ``settle``;
        on failure it is settled here, before the error propagates, for what was generated until then.

        ``client_gone`` returns once the client has gone away: the backend call is then cancelled (the agent
        sees its connection drop and stops), the request is settled as cancelled (499) for what was generated,
        and :class:`ClientGone` is raised."""
        acc = StreamAccumulator(call.request.model)
        hangup = _HangupWatch(client_gone) if client_gone is not None else None
        try:
            return await self._whole(call, acc)
        except BaseException as exc:
            gone = hangup is not None and hangup.stop()
            status, code = (("cancelled", 499) if isinstance(exc, asyncio.CancelledError)
                            else ("error", exc.status) if isinstance(exc, ApiError) else ("error", 500))
            await self.settle(call, self._billable(call, acc), status=status, status_code=code)
            if gone:
                raise ClientGone() from None
            raise
        finally:
            if hangup is not None:
                hangup.stop()

    @staticmethod
    async def _whole(call: Call, acc: StreamAccumulator) -> InternalResponse:
        if getattr(call.backend, "whole_from_stream", False):
            # Folded here rather than in the backend, so ``acc`` knows what was generated if this is cancelled.
            return await fold(call.backend.stream(call.request), acc)
        return await call.backend.generate(call.request)

    @staticmethod
    def _billable(call: Call, acc: StreamAccumulator) -> Usage:
        """What a request used, also when it ended early (see StreamAccumulator.billable). A started request
        whose backend never said how long the prompt was (OpenAI-protocol providers report usage at the end
        only) is billed the 4-characters-a-token prompt estimate (its hold's byte bound would charge English
        prompts several times over); one that never started costs nothing."""
        usage = acc.billable()
        if acc.started and not acc.usage_reported and usage.prompt_tokens == 0:
            usage = usage.model_copy(update={"prompt_tokens": input_estimate(call.request)})
        return usage

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
            await self.settle(call, self._billable(call, acc), status=status, status_code=code)

    async def count_tokens(self, model: str, request: TokenizeRequest,
                           principal: Principal | None = None) -> int | None:
        """Exact count from a backend that tokenizes (local pools); None when it cannot. Attached files are
        counted as the model would read them (their extracted text, for a text-only backend)."""
        probe = InternalRequest(model=model, messages=request.messages, tools=request.tools)
        backend, _ = await self.resolver.resolve(probe, endpoint="/v1/messages/count_tokens")
        if has_files(probe):
            probe = await self._with_files(principal, backend, probe)
            request = request.model_copy(update={"messages": probe.messages})
        return await backend.count_tokens(request)
