"""Folds a stream of internal events into the InternalResponse it amounts to (for storing a streamed
Responses-API answer and for accounting a stream's usage)."""

from __future__ import annotations

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
    UsageEvent,
)


class StreamAccumulator:
    def __init__(self, model: str = "") -> None:
        self.response = InternalResponse(id="", model=model, created=0)
        self.error: ErrorEvent | None = None
        self.finished = False

    def feed(self, event: StreamEvent) -> None:
        resp = self.response
        if isinstance(event, StartEvent):
            resp.id, resp.model, resp.created = event.id, event.model or resp.model, event.created
            resp.usage.prompt_tokens, resp.usage.cached_tokens = event.prompt_tokens, event.cached_tokens
        elif isinstance(event, TextDelta):
            self._append(TextPart, event.text)
        elif isinstance(event, ReasoningDelta):
            self._append(ThinkingPart, event.text)
        elif isinstance(event, ToolCallEvent):
            resp.content.append(ToolCallPart(id=event.id, name=event.name, arguments=event.arguments))
        elif isinstance(event, UsageEvent):
            resp.usage = event.usage
        elif isinstance(event, FinishEvent):
            resp.finish_reason, resp.stop_sequence = event.reason, event.stop_sequence
            resp.loop_guard = event.loop_guard
            self.finished = True
        elif isinstance(event, ErrorEvent):
            self.error = event
            resp.finish_reason = "error"

    def _append(self, kind: type[TextPart] | type[ThinkingPart], text: str) -> None:
        content: list[Part] = self.response.content
        if content and type(content[-1]) is kind:
            content[-1].text += text
        else:
            content.append(kind(text=text))
