"""The OpenAI Responses stream encoder: internal stream events -> Responses stream event dicts.

Frame each dict with :func:`isthmus.dialects.common.sse_event` (``event: <type>`` + ``data:``).
"""

from __future__ import annotations

from typing import Any

from isthmus.dialects.common import new_id, now, with_prefix
from isthmus.dialects.openai_responses import (
    function_call_item,
    item_id,
    message_item,
    reasoning_item,
    response_json,
)
from isthmus.dialects.openai_responses_models import ResponsesRequest
from isthmus_contracts.internal import (
    ErrorEvent,
    FinishEvent,
    ReasoningDelta,
    StartEvent,
    StreamEvent,
    TextDelta,
    ToolCallEvent,
    Usage,
    UsageEvent,
)


class ResponsesStreamEncoder:
    """Feed internal stream events, get Responses stream events with increasing ``sequence_number``.

    The terminal ``response.completed`` / ``response.incomplete`` goes out once both the finish and the
    usage are known; :meth:`close` flushes it if the backend never reported usage.
    """

    def __init__(self, req: ResponsesRequest, *, response_id: str = "", model: str = "") -> None:
        self.req = req
        self.id = with_prefix(response_id, "response")
        self.model = model or req.model
        self.created = now()
        self.usage = Usage()
        self.items: list[dict[str, Any]] = []  # finished output items
        self._seq = 0
        self._started = False
        self._open: dict[str, Any] | None = None  # the open item, as last sent in output_item.added
        self._text = ""  # text (or reasoning text) of the open item
        self._finish: FinishEvent | None = None
        self._usage_seen = False
        self._ended = False

    def feed(self, event: StreamEvent) -> list[dict[str, Any]]:
        if self._ended:
            return []
        if isinstance(event, StartEvent):
            self.id, self.created = with_prefix(event.id, "response"), event.created
            self.model = event.model or self.model
            self.usage = Usage(prompt_tokens=event.prompt_tokens, cached_tokens=event.cached_tokens)
            return self._ensure_started()
        if isinstance(event, ErrorEvent):
            self._ended = True
            error = {"type": "error", "code": event.code, "message": event.message, "param": None}
            return [self._emit(error)]
        if isinstance(event, UsageEvent):
            self.usage, self._usage_seen = event.usage, True
            return self._end() if self._finish else []
        out = self._ensure_started()
        if isinstance(event, TextDelta):
            out += self._text_delta("message", event.text)
        elif isinstance(event, ReasoningDelta):
            out += self._text_delta("reasoning", event.text)
        elif isinstance(event, ToolCallEvent):
            out += self._close_item()
            call_id = event.id or new_id("tool_call")
            fc_id = item_id("fc", self.id, len(self.items))
            out += self._open_item(function_call_item(fc_id, call_id, event.name, "", "in_progress"))
            ref = self._ref()
            out.append(self._emit({"type": "response.function_call_arguments.delta", **ref,
                                   "delta": event.arguments}))
            out.append(self._emit({"type": "response.function_call_arguments.done", **ref,
                                   "arguments": event.arguments}))
            out += self._done_item(function_call_item(fc_id, call_id, event.name, event.arguments))
        elif isinstance(event, FinishEvent):
            self._finish = event
            out += self._close_item()
            if self._usage_seen:
                out += self._end()
        return out

    def close(self) -> list[dict[str, Any]]:
        """Events still owed when the backend stream ends."""
        return self._end() if self._finish and not self._ended else []

    # ---- items ----

    def _text_delta(self, kind: str, text: str) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if self._open is None or self._open["type"] != kind:
            out += self._close_item()
            n = len(self.items)
            if kind == "message":
                item = {**message_item(item_id("msg", self.id, n), "", "in_progress"), "content": []}
                part: dict[str, Any] = {"type": "output_text", "text": "", "annotations": [], "logprobs": []}
            else:
                item = {**reasoning_item(item_id("rs", self.id, n), ""), "content": [],
                        "status": "in_progress"}
                part = {"type": "reasoning_text", "text": ""}
            out += self._open_item(item)
            out.append(self._emit({"type": "response.content_part.added", **self._ref(), "content_index": 0,
                                   "part": part}))
        self._text += text
        if kind == "message":
            delta = {"type": "response.output_text.delta", "delta": text, "logprobs": []}
        else:
            delta = {"type": "response.reasoning_text.delta", "delta": text}
        out.append(self._emit({**delta, **self._ref(), "content_index": 0}))
        return out

    def _open_item(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        self._open, self._text = item, ""
        return [self._emit({"type": "response.output_item.added", "output_index": len(self.items),
                            "item": item})]

    def _close_item(self) -> list[dict[str, Any]]:
        """Close an open message or reasoning item (function calls close as soon as they open)."""
        if self._open is None:
            return []
        ref, text = {**self._ref(), "content_index": 0}, self._text
        if self._open["type"] == "message":
            status = "incomplete" if self._finish and self._finish.reason == "length" else "completed"
            item = message_item(self._open["id"], text, status)
            done = [self._emit({"type": "response.output_text.done", **ref, "text": text, "logprobs": []})]
        else:
            item = reasoning_item(self._open["id"], text)
            done = [self._emit({"type": "response.reasoning_text.done", **ref, "text": text})]
        done.append(self._emit({"type": "response.content_part.done", **ref, "part": item["content"][0]}))
        return done + self._done_item(item)

    def _done_item(self, item: dict[str, Any]) -> list[dict[str, Any]]:
        event = self._emit({"type": "response.output_item.done", "output_index": len(self.items),
                            "item": item})
        self.items.append(item)
        self._open, self._text = None, ""
        return [event]

    def _ref(self) -> dict[str, Any]:
        assert self._open is not None
        return {"item_id": self._open["id"], "output_index": len(self.items)}

    # ---- response envelope ----

    def _snapshot(self, status: str, usage: Usage | None) -> dict[str, Any]:
        return response_json(self.req, response_id=self.id, created_at=self.created, model=self.model,
                             status=status, output=list(self.items), usage=usage)

    def _ensure_started(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        return [self._emit({"type": kind, "response": self._snapshot("in_progress", None)})
                for kind in ("response.created", "response.in_progress")]

    def _end(self) -> list[dict[str, Any]]:
        assert self._finish is not None
        self._ended = True
        status = "incomplete" if self._finish.reason == "length" else "completed"
        return [self._emit({"type": f"response.{status}", "response": self._snapshot(status, self.usage)})]

    def _emit(self, payload: dict[str, Any]) -> dict[str, Any]:
        payload["sequence_number"] = self._seq
        self._seq += 1
        return payload
