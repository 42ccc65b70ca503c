"""Folds a stream of internal events into the InternalResponse it amounts to (for storing a streamed
Responses-API answer, for answering a non-streamed request from a backend's stream, and for accounting a
stream's usage, also when it is cut short)."""

from __future__ import annotations

from collections.abc import AsyncIterator

from isthmus.errors import ApiError
from isthmus_contracts.internal import (
    ErrorEvent,
    FinishEvent,
    InternalResponse,
    Part,
    ReasoningDelta,
    StartEvent,
    StreamEvent,
    TextDelta,
    TextPart,
    ThinkingPart,
    ToolCallEvent,
    ToolCallPart,
    Usage,
    UsageEvent,
)


class StreamAccumulator:
    def __init__(self, model: str = "") -> None:
        self._response = InternalResponse(id="", model=model, created=0)
        # Text of the last part not yet joined into it: a list append per delta, not a model attribute write.
        self._run: list[str] = []
        self._run_kind: type[TextPart] | type[ThinkingPart] | None = None
        self.error: ErrorEvent | None = None
        self.finished = False
        self.started = False  # the backend took the request (its start event arrived): the prompt is spent
        self.usage_reported = False  # a usage event (or an error event with usage) said what was used
        self._counted = 0  # the last running completion count a delta carried
        self._uncounted_bytes = 0  # UTF-8 bytes of output delivered after that count (or with no count at all)

    @property
    def response(self) -> InternalResponse:
        self._join_run()
        return self._response

    def feed(self, event: StreamEvent) -> None:
        resp = self._response
        if isinstance(event, TextDelta):  # first: by far the most frequent event
            self._append(TextPart, event.text)
            self._delivered(event.completion_tokens, event.text)
        elif isinstance(event, ReasoningDelta):
            self._append(ThinkingPart, event.text)
            self._delivered(event.completion_tokens, event.text)
        elif isinstance(event, StartEvent):
            resp.id, resp.model, resp.created = event.id, event.model or resp.model, event.created
            resp.usage.prompt_tokens, resp.usage.cached_tokens = event.prompt_tokens, event.cached_tokens
            self.started = True
        elif isinstance(event, ToolCallEvent):
            self._join_run()
            self._run_kind = None
            resp.content.append(ToolCallPart(id=event.id, name=event.name, arguments=event.arguments))
            self._delivered(event.completion_tokens, event.name + event.arguments)
        elif isinstance(event, UsageEvent):
            resp.usage = event.usage
            self.usage_reported = True
        elif isinstance(event, FinishEvent):
            resp.finish_reason, resp.stop_sequence = event.reason, event.stop_sequence
            resp.loop_guard = event.loop_guard
            self.finished = True
        elif isinstance(event, ErrorEvent):
            self.error = event
            resp.finish_reason = "error"
            if event.usage is not None:
                resp.usage = event.usage
                self.usage_reported = True

    def billable(self) -> Usage:
        """What the stream used, also when it ended early: the backend's own usage when it reported one; else
        the prompt its start event reported and the completion tokens its deltas counted, plus, for output it
        delivered with no count (cloud providers report usage only at the end), its UTF-8 byte length: an upper
        bound, since a byte-level tokenizer never makes more tokens than bytes."""
        usage = self._response.usage
        if self.usage_reported:
            return usage
        return usage.model_copy(update={"completion_tokens": self._counted + self._uncounted_bytes})

    def _delivered(self, count: int | None, text: str) -> None:
        if count is not None:
            self._counted, self._uncounted_bytes = max(self._counted, count), 0
        else:
            self._uncounted_bytes += len(text.encode())

    def _append(self, kind: type[TextPart] | type[ThinkingPart], text: str) -> None:
        if kind is not self._run_kind:
            self._join_run()
            self._run_kind = kind
            self._response.content.append(kind(text=""))
        self._run.append(text)

    def _join_run(self) -> None:
        if self._run:
            content: list[Part] = self._response.content
            last = content[-1]
            assert isinstance(last, TextPart | ThinkingPart)
            last.text += "".join(self._run)
            self._run.clear()


async def fold(events: AsyncIterator[StreamEvent], acc: StreamAccumulator) -> InternalResponse:
    """A whole answer from a stream of events (``acc`` keeps what arrived if this is cancelled midway); an
    error event, or a stream that ends without finishing, is an ApiError."""
    try:
        async for event in events:
            acc.feed(event)
    finally:
        aclose = getattr(events, "aclose", None)
        if aclose is not None:
            await aclose()  # early (cancelled, failed): drops the backend's connection, so it stops generating
    if acc.error is not None:
        raise ApiError(acc.error.status, acc.error.message, code=acc.error.code)
    if not acc.finished:
        raise ApiError(502, "The backend stream ended before the answer was complete.", code="backend_error")
    return acc.response
