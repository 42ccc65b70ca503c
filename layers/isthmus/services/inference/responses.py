"""The Responses API's memory: a conversation continued from ``previous_response_id``, the answer remembered
(unless ``store: false``), a stored response read back or deleted. Behind the ResponseStore port.

Remembering happens after the answer was generated (and billed), so it must not turn a delivered answer into
an error: the store takes a conversation of any size (the DynamoDB adapter compresses and splits it over
items under the 400 KB item limit), and a store that fails anyway is logged and the answer still goes out
(a later ``previous_response_id`` naming it is then a 404).
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable

from isthmus.errors import ApiError
from isthmus.observability import get_logger
from isthmus.ports.responses import ResponseStore, StoredResponse
from isthmus.services.inference.accumulate import StreamAccumulator
from isthmus_contracts.internal import InternalRequest, InternalResponse, Message, Part

log = get_logger("inference")
# The dialect's way to put the stored turns and output before the new request's turns.
Prepend = Callable[[InternalRequest, list[Message], list[Part]], InternalRequest]


class Memory:
    """What one created response will remember: the request's turns (instructions excluded: they do not carry
    over), unless the caller said ``store: false``."""

    def __init__(self, store: ResponseStore, request: InternalRequest, keep: bool) -> None:
        self.store = store
        self.model = request.model
        self.history = [m for m in request.messages if m.role != "system"]
        self.keep = keep

    async def remember(self, output: InternalResponse, response_id: str) -> None:
        if not self.keep:
            return
        try:
            await self.store.put(StoredResponse(response_id=response_id, model=self.model, messages=self.history,
                                                output=output, created_at=output.created))
        except Exception as exc:  # the answer is generated and billed: it goes out whatever the store says
            log.warning("response not stored", extra={"response_id": response_id, "error": type(exc).__name__})

    async def after_stream(self, frames: AsyncIterator[str], folded: StreamAccumulator,
                           response_id: Callable[[], str]) -> AsyncIterator[str]:
        """``frames`` relayed, then the folded answer remembered if the stream finished without an error."""
        async for frame in frames:
            yield frame
        if folded.finished and folded.error is None:
            await self.remember(folded.response, response_id())


class ResponsesService:
    def __init__(self, store: ResponseStore) -> None:
        self.store = store

    async def continue_from(self, request: InternalRequest, previous_response_id: str | None,
                            prepend: Prepend) -> InternalRequest:
        """``request`` after the stored conversation it continues (404 ``previous_response_not_found``)."""
        if not previous_response_id:
            return request
        previous = await self.store.get(previous_response_id)
        if previous is None:
            raise ApiError(404, f"Previous response '{previous_response_id}' not found.",
                           param="previous_response_id", code="previous_response_not_found")
        return prepend(request, previous.messages, previous.output.content)

    def memory(self, request: InternalRequest, *, keep: bool) -> Memory:
        return Memory(self.store, request, keep)

    async def get(self, response_id: str) -> StoredResponse:
        stored = await self.store.get(response_id)
        if stored is None:
            raise ApiError(404, f"Response '{response_id}' not found.", code="not_found")
        return stored

    async def delete(self, response_id: str) -> None:
        if not await self.store.delete(response_id):
            raise ApiError(404, f"Response '{response_id}' not found.", code="not_found")
