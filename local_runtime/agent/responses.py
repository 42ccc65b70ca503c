"""Folding a stream of protocol events into one :class:`InternalResponse` (non-streaming requests)."""

from __future__ import annotations

from pydantic import BaseModel

from isthmus.services.inference.accumulate import StreamAccumulator
from isthmus_contracts.internal import InternalResponse


def collect(events: list[BaseModel]) -> InternalResponse:
    """The same fold the gateway applies to a relayed stream, so both agree on what an answer is."""
    acc = StreamAccumulator()
    for event in events:
        acc.feed(event)  # type: ignore[arg-type]
    return acc.response
