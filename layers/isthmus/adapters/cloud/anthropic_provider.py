"""AnthropicProviderBackend: an InferenceBackend over ``POST {api_base}/messages`` (``x-api-key`` and
``anthropic-version``). The internal request becomes a Messages body (system hoisted, tool results as user
``tool_result`` blocks, consecutive same-role turns merged); answers and SSE events map back. The wire's shared
pieces (tool_use blocks, usage, stop reasons) are the dialect's (isthmus.dialects.anthropic_messages)."""

from __future__ import annotations

import json
from collections.abc import AsyncIterator
from typing import Any

from isthmus.adapters.cloud import transport
from isthmus.dialects.anthropic_messages import FINISH_REASONS, tool_use_block, usage_from_json
from isthmus.dialects.common import new_id, now, split_data_url
from isthmus.errors import ApiError
from isthmus_contracts.internal import (
    ErrorEvent,
    FilePart,
    FinishEvent,
    FinishReason,
    ImagePart,
    InternalRequest,
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
    ToolResultPart,
    Usage,
    UsageEvent,
)

ANTHROPIC_VERSION = "2023-06-01"
DEFAULT_MAX_TOKENS = 4096
THINKING_BUDGET = 1024
def _image(part: ImagePart) -> dict[str, Any]:
    if part.data:
        return {"type": "image", "source": {"type": "base64", "media_type": part.media_type or "image/png",
                                            "data": part.data}}
    split = split_data_url(part.url or "")
    if split:
        return {"type": "image", "source": {"type": "base64", "media_type": split[0], "data": split[1]}}
    return {"type": "image", "source": {"type": "url", "url": part.url or ""}}


def _document(part: FilePart) -> dict[str, Any]:
    """A document block: text as a text source, anything else as base64 (our file ids are inlined before)."""
    if part.text is not None:
        source: dict[str, Any] = {"type": "text", "media_type": part.media_type or "text/plain", "data": part.text}
    else:
        source = {"type": "base64", "media_type": part.media_type or "application/pdf", "data": part.data or ""}
    block: dict[str, Any] = {"type": "document", "source": source}
    if part.filename:
        block["title"] = part.filename
    return block


def _block(part: Part) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text} if part.text else None
    if isinstance(part, ImagePart):
        return _image(part)
    if isinstance(part, FilePart):
        return _document(part)
    if isinstance(part, ToolCallPart):
        return tool_use_block(part)
    if isinstance(part, ToolResultPart):
        return {"type": "tool_result", "tool_use_id": part.tool_call_id, "content": part.content,
                "is_error": part.is_error}
    if isinstance(part, ThinkingPart) and part.signature:
        return {"type": "thinking", "thinking": part.text, "signature": part.signature}
    return None


def to_body(request: InternalRequest, upstream_model: str, *, stream: bool) -> dict[str, Any]:
    system = "\n\n".join(m.text() for m in request.messages if m.role == "system")
    turns: list[dict[str, Any]] = []
    for msg in request.messages:
        if msg.role == "system":
            continue
        role = "assistant" if msg.role == "assistant" else "user"
        blocks = [b for b in (_block(p) for p in msg.content) if b is not None]
        if not blocks:
            continue
        if turns and turns[-1]["role"] == role:
            turns[-1]["content"] += blocks
        else:
            turns.append({"role": role, "content": blocks})
    s = request.sampling
    body: dict[str, Any] = {"model": upstream_model, "messages": turns,
                            "max_tokens": s.max_tokens or DEFAULT_MAX_TOKENS}
    if system:
        body["system"] = system
    if s.temperature is not None:
        body["temperature"] = min(s.temperature, 1.0)
    for key, value in (("top_p", s.top_p), ("top_k", s.top_k)):
        if value is not None:
            body[key] = value
    if s.stop:
        body["stop_sequences"] = s.stop
    if request.tools:
        body["tools"] = [{"name": t.name, "description": t.description or "", "input_schema": t.parameters}
                         for t in request.tools]
    if request.tool_choice is not None:
        mode = request.tool_choice.mode
        body["tool_choice"] = ({"type": "tool", "name": request.tool_choice.name} if mode == "tool"
                               else {"type": {"required": "any"}.get(mode, mode)})
    if request.enable_thinking:
        body["thinking"] = {"type": "enabled", "budget_tokens": THINKING_BUDGET}
        body["max_tokens"] = max(body["max_tokens"], THINKING_BUDGET + 1)
        body.pop("temperature", None)
    if request.user:
        body["metadata"] = {"user_id": request.user}
    if stream:
        body["stream"] = True
    return body


def to_response(data: dict[str, Any], model: str) -> InternalResponse:
    content: list[Part] = []
    for block in data.get("content") or []:
        kind = block.get("type")
        if kind == "text":
            content.append(TextPart(text=block.get("text", "")))
        elif kind == "tool_use":
            content.append(ToolCallPart(id=block.get("id") or new_id("toolu"), name=block.get("name", ""),
                                        arguments=json.dumps(block.get("input") or {})))
        elif kind == "thinking":
            content.append(ThinkingPart(text=block.get("thinking", ""), signature=block.get("signature")))
    return InternalResponse(id=data.get("id") or new_id("msg"), model=model, created=now(), content=content,
                            finish_reason=FINISH_REASONS.get(data.get("stop_reason") or "end_turn", "stop"),
                            stop_sequence=data.get("stop_sequence"), usage=usage_from_json(data.get("usage")))


class _StreamDecoder:
    def __init__(self, model: str) -> None:
        self.model = model
        self.blocks: dict[int, dict[str, Any]] = {}
        self.tool_index = 0
        self.usage = Usage()
        self.finish: FinishReason = "stop"
        self.stop_sequence: str | None = None

    def feed(self, event: str | None, data: dict[str, Any]) -> list[StreamEvent]:
        kind = data.get("type") or event
        if kind == "message_start":
            msg = data.get("message") or {}
            self.usage = usage_from_json(msg.get("usage"))
            return [StartEvent(id=msg.get("id") or new_id("msg"), model=self.model, created=now(),
                               prompt_tokens=self.usage.prompt_tokens, cached_tokens=self.usage.cached_tokens)]
        if kind == "content_block_start":
            block = dict(data.get("content_block") or {})
            block["partial"] = ""
            self.blocks[int(data.get("index", 0))] = block
        elif kind == "content_block_delta":
            delta = data.get("delta") or {}
            dtype = delta.get("type")
            if dtype == "text_delta" and delta.get("text"):
                return [TextDelta(text=delta["text"])]
            if dtype == "thinking_delta" and delta.get("thinking"):
                return [ReasoningDelta(text=delta["thinking"])]
            if dtype == "input_json_delta":
                self.blocks.setdefault(int(data.get("index", 0)), {"partial": ""})["partial"] += (
                    delta.get("partial_json") or "")
        elif kind == "content_block_stop":
            block = self.blocks.pop(int(data.get("index", 0)), {})
            if block.get("type") == "tool_use":
                self.tool_index += 1
                return [ToolCallEvent(index=self.tool_index - 1, id=block.get("id") or new_id("toolu"),
                                      name=block.get("name", ""), arguments=block["partial"] or "{}")]
        elif kind == "message_delta":
            delta = data.get("delta") or {}
            if delta.get("stop_reason"):
                self.finish = FINISH_REASONS.get(delta["stop_reason"], "stop")
                self.stop_sequence = delta.get("stop_sequence")
            out_tokens = (data.get("usage") or {}).get("output_tokens")
            if out_tokens is not None:
                self.usage = self.usage.model_copy(update={"completion_tokens": int(out_tokens)})
        elif kind == "message_stop":
            return [UsageEvent(usage=self.usage), FinishEvent(reason=self.finish, stop_sequence=self.stop_sequence)]
        elif kind == "error":
            error = data.get("error") or {}
            status = 429 if error.get("type") == "rate_limit_error" else 503 if error.get("type") in (
                "overloaded_error",) else 502
            return [ErrorEvent(message=str(error.get("message") or "upstream error")[:500], code="upstream_error",
                               status=status)]
        return []


class AnthropicProviderBackend(transport.ProviderBackend):
    PATH = "/messages"
    to_body = staticmethod(to_body)  # this module's wire mapping, used by the base class
    to_response = staticmethod(to_response)

    def _headers(self) -> dict[str, str]:
        headers = {"anthropic-version": ANTHROPIC_VERSION}
        if self.target.api_key:
            headers["x-api-key"] = self.target.api_key
        return headers

    @staticmethod
    def is_last_event(event: str | None, data: str) -> bool:
        return event == "message_stop"

    async def stream(self, request: InternalRequest) -> AsyncIterator[StreamEvent]:
        decoder = _StreamDecoder(request.model)
        ended = False
        async for event, data in await self._events(request):
            try:
                payload = json.loads(data)
            except ValueError:
                raise ApiError(502, "provider sent an unreadable event", code="upstream_error") from None
            for out in decoder.feed(event, payload):
                yield out
                if isinstance(out, FinishEvent | ErrorEvent):
                    ended = True
            if ended:
                return
        raise self._ended_early()


BACKEND = AnthropicProviderBackend  # the protocol registry (isthmus.adapters.cloud.protocols) builds this
