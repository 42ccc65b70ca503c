"""The part the Anthropic Messages and OpenAI Responses stream encoders share: the order of a stream's end.

Their terminal events carry both the finish reason and the final usage, and a backend may report the usage
before or after the finish; so the ending goes out once both are known, :meth:`EndsAfterUsage.close` flushes it
when the backend never reported usage, and nothing follows it (nor an in-band error).
"""

from __future__ import annotations

from typing import Any

from isthmus_contracts.internal import ErrorEvent, FinishEvent, StartEvent, StreamEvent, Usage, UsageEvent


class EndsAfterUsage:
    """A stream encoder: internal events in, the dialect's event dicts out. Subclasses render the dialect:
    ``_started`` (the opening events, once), ``_error`` (an in-band error, which ends the stream), ``_content``
    (text, reasoning, a tool call), ``_close_open`` (what closes an open block at the finish), ``_ending``."""

    def __init__(self) -> None:
        self.usage = Usage()
        self._finish: FinishEvent | None = None
        self._usage_seen = False
        self._ended = False

    def feed(self, event: StreamEvent) -> list[dict[str, Any]]:
        if self._ended:
            return []
        if isinstance(event, StartEvent):
            self.usage = Usage(prompt_tokens=event.prompt_tokens, cached_tokens=event.cached_tokens)
            self._on_start(event)
            return self._started()
        if isinstance(event, ErrorEvent):
            self._ended = True
            return [self._error(event)]
        if isinstance(event, UsageEvent):
            self.usage, self._usage_seen = event.usage, True
            return self._end() if self._finish else []
        out = self._started()
        if isinstance(event, FinishEvent):
            self._finish = event
            out += self._close_open()
            return out + self._end() if self._usage_seen else out
        return out + self._content(event)

    def close(self) -> list[dict[str, Any]]:
        """Events still owed when the backend stream ends."""
        return self._end() if self._finish and not self._ended else []

    def _end(self) -> list[dict[str, Any]]:
        assert self._finish is not None
        self._ended = True
        return self._ending(self._finish)

    # ---- the dialect's part ----

    def _on_start(self, event: StartEvent) -> None:
        """Take the stream's id and model from its start."""

    def _started(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _error(self, event: ErrorEvent) -> dict[str, Any]:
        raise NotImplementedError

    def _content(self, event: StreamEvent) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _close_open(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _ending(self, finish: FinishEvent) -> list[dict[str, Any]]:
        raise NotImplementedError
