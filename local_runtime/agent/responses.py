"""Folding a stream of protocol events into one :class:`InternalResponse` (non-streaming requests)."""

from __future__ import annotations

from pydantic import BaseModel

from isthmus_contracts.internal import (
    FinishEvent,
    InternalResponse,
    Part,
    ReasoningDelta,
    StartEvent,
    TextDelta,
    TextPart,
    ThinkingPart,
    ToolCallEvent,
    ToolCallPart,
    UsageEvent,
)


def collect(events: list[BaseModel]) -> InternalResponse:
    start = next(e for e in events if isinstance(e, StartEvent))
    parts: list[Part] = []
    for event in events:
        last = parts[-1] if parts else None
        if isinstance(event, TextDelta):
            if isinstance(last, TextPart):
                last.text += event.text
            else:
                parts.append(TextPart(text=event.text))
        elif isinstance(event, ReasoningDelta):
            if isinstance(last, ThinkingPart):
                last.text += event.text
            else:
                parts.append(ThinkingPart(text=event.text))
        elif isinstance(event, ToolCallEvent):
            parts.append(ToolCallPart(id=event.id, name=event.name, arguments=event.arguments))
    response = InternalResponse(id=start.id, model=start.model, created=start.created, content=parts)
    for event in events:
        if isinstance(event, UsageEvent):
            response.usage = event.usage
        elif isinstance(event, FinishEvent):
            response.finish_reason = event.reason
            response.stop_sequence = event.stop_sequence
            response.loop_guard = event.loop_guard
    return response
