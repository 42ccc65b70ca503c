"""The OpenAI Responses stream encoder: internal stream events -> Responses stream event dicts.

Frame each dict with :func:`isthmus.dialects.common.sse_event` (``event: <type>`` + ``data:``).
"""

from __future__ import annotations

from typing import Any

from isthmus.dialects.common import EndsAfterUsage, new_id, now, with_prefix
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
)


class ResponsesStreamEncoder(EndsAfterUsage):
    """Feed internal stream events, get Responses stream events with increasing ``sequence_number``.

    The terminal ``response.completed`` / ``response.incomplete`` goes out once both the finish and the
    usage are known; :meth:`close` flushes it if the backend never reported usage.
    """

    def __init__(self, req: ResponsesRequest, *, response_id: str = "", model: str = "") -> None:
        super().__init__()
        self.req = req
        self.id = with_prefix(response_id, "response")
        self.model = model or req.model
        self.created = now()
        self.items: list[dict[str, Any]] = []  # finished output items
        self._seq = 0
        self._opened = False
        self._open: dict[str, Any] | None = None  # the open item, as last sent in output_item.added
        self._text = ""  # text (or reasoning text) of the open item

    def _on_start(self, event: StartEvent) -> None:
        self.id, self.created = with_prefix(event.id, "response"), event.created
        self.model = event.model or self.model

    def _error(self, event: ErrorEvent) -> dict[str, Any]:
        return self._emit({"type": "error", "code": event.code, "message": event.message, "param": None})

    def _content(self, event: StreamEvent) -> list[dict[str, Any]]:
        if isinstance(event, TextDelta):
            return self._text_delta("message", event.text)
        if isinstance(event, ReasoningDelta):
            return self._text_delta("reasoning", event.text)
        if not isinstance(event, ToolCallEvent):
            return []
        out = self._close_item()
        call_id = event.id or new_id("tool_call")
        fc_id = item_id("fc", self.id, len(self.items))
        out += self._open_item(function_call_item(fc_id, call_id, event.name, "", "in_progress"))
        ref = self._ref()
        out.append(self._emit({"type": "response.function_call_arguments.delta", **ref, "delta": event.arguments}))
        out.append(self._emit({"type": "response.function_call_arguments.done", **ref,
                               "arguments": event.arguments}))
        return out + self._done_item(function_call_item(fc_id, call_id, event.name, event.arguments))

    def _close_open(self) -> list[dict[str, Any]]:
        return self._close_item()

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

    def _started(self) -> list[dict[str, Any]]:
        if self._opened:
            return []
        self._opened = True
        return [self._emit({"type": kind, "response": self._snapshot("in_progress", None)})
                for kind in ("response.created", "response.in_progress")]

    def _ending(self, finish: FinishEvent) -> list[dict[str, Any]]:
        status = "incomplete" if finish.reason == "length" else "completed"
        return [self._emit({"type": f"response.{status}", "response": self._snapshot(status, self.usage)})]

    def _emit(self, payload: dict[str, Any]) -> dict[str, Any]:
        payload["sequence_number"] = self._seq
        self._seq += 1
        return payload
