"""The inference service: resolve the model to a backend, then answer whole or as a stream of events.

Streams are opened eagerly: the backend's first event is awaited before the HTTP response starts, so a
backend that is down or refuses the request is an ordinary HTTP error in the caller's dialect, and only
failures after the first byte become in-band error events.
"""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from dataclasses import dataclass

from isthmus.errors import ApiError
from isthmus.ports.backend import BackendResolver, InferenceBackend
from isthmus_contracts.agent import TokenizeRequest
from isthmus_contracts.internal import ErrorEvent, InternalRequest, InternalResponse, StreamEvent


@dataclass
class Prepared:
    backend: InferenceBackend
    request: InternalRequest  # with the concrete model the backend serves


@dataclass
class OpenStream:
    backend: InferenceBackend
    events: AsyncIterator[StreamEvent]  # starts with the already-received first event


class InferenceService:
    def __init__(self, resolver: BackendResolver) -> None:
        self.resolver = resolver

    async def prepare(self, request: InternalRequest, endpoint: str) -> Prepared:
        backend, concrete = await self.resolver.resolve(request.model, session_id=request.session_id,
                                                        endpoint=endpoint)
        return Prepared(backend, request.model_copy(update={"model": concrete}))

    async def complete(self, prepared: Prepared) -> InternalResponse:
        return await prepared.backend.generate(prepared.request)

    async def open_stream(self, prepared: Prepared) -> OpenStream:
        events = prepared.backend.stream(prepared.request)
        try:
            first = await anext(events)
        except StopAsyncIteration:
            raise ApiError(502, "The backend closed the stream without answering.", code="backend_error") from None
        except BaseException:
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
            raise
        if isinstance(first, ErrorEvent):
            with contextlib.suppress(Exception):
                await events.aclose()  # type: ignore[attr-defined]
            raise ApiError(first.status, first.message, code=first.code)
        return OpenStream(prepared.backend, _chain(first, events))

    async def count_tokens(self, model: str, request: TokenizeRequest) -> int | None:
        """Exact count from a backend that tokenizes (local pools); None when it cannot."""
        backend, _ = await self.resolver.resolve(model, endpoint="/v1/messages/count_tokens")
        return await backend.count_tokens(request)


async def _chain(first: StreamEvent, rest: AsyncIterator[StreamEvent]) -> AsyncIterator[StreamEvent]:
    try:
        yield first
        async for event in rest:
            yield event
    finally:
        with contextlib.suppress(Exception):
            await rest.aclose()  # type: ignore[attr-defined]
