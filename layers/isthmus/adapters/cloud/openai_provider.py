"""OpenAIProviderBackend: an InferenceBackend over ``POST {api_base}/chat/completions`` (OpenAI, OpenRouter and
other OpenAI-protocol providers). The internal request becomes an OpenAI body (model rewritten to the
upstream model, ``stream_options.include_usage`` forced, Isthmus-only fields such as session_id dropped);
the answer and the stream map back to internal responses and events. The wire's shared pieces (tool calls,
usage, finish reasons) are the dialect's (isthmus.dialects.openai_chat), read and written in one place."""

from __future__ import annotations

import base64
import json
from collections.abc import AsyncIterator
from typing import Any

from isthmus.adapters.cloud import transport
from isthmus.dialects.common import new_id, now
from isthmus.dialects.openai_chat import FINISH_REASONS, tool_call_json, usage_from_json
from isthmus.errors import ApiError
from isthmus_contracts.internal import (
    ErrorEvent,
    FilePart,
    FinishEvent,
    FinishReason,
    ImagePart,
    InternalRequest,
    InternalResponse,
    Message,
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


def _image_url(part: ImagePart) -> str:
    return part.url or f"data:{part.media_type or 'image/png'};base64,{part.data or ''}"


def file_block(part: FilePart) -> dict[str, Any]:
    """A document as OpenAI's chat ``file`` part (inline data: the provider cannot see our file store)."""
    data = part.data if part.data is not None else base64.b64encode((part.text or "").encode()).decode("ascii")
    ref: dict[str, Any] = {"file_data": f"data:{part.media_type or 'application/pdf'};base64,{data}"}
    if part.filename:
        ref["filename"] = part.filename
    return {"type": "file", "file": ref}


def _message(msg: Message) -> list[dict[str, Any]]:
    if msg.role == "tool" or any(isinstance(p, ToolResultPart) for p in msg.content):
        out = [{"role": "tool", "tool_call_id": p.tool_call_id, "content": p.content}
               for p in msg.content if isinstance(p, ToolResultPart)]
        rest: list[Part] = [p for p in msg.content if isinstance(p, TextPart | ImagePart | FilePart)]
        return out + ([_message(Message(role="user", content=rest))[0]] if rest else [])
    if msg.role == "assistant":
        entry: dict[str, Any] = {"role": "assistant", "content": msg.text() or None}
        calls = [tool_call_json(p.id, p.name, p.arguments) for p in msg.content if isinstance(p, ToolCallPart)]
        if calls:
            entry["tool_calls"] = calls
        return [entry]
    if msg.role == "system" or all(isinstance(p, TextPart) for p in msg.content):
        return [{"role": msg.role, "content": msg.text()}]
    parts: list[dict[str, Any]] = []
    for p in msg.content:
        if isinstance(p, TextPart):
            parts.append({"type": "text", "text": p.text})
        elif isinstance(p, ImagePart):
            parts.append({"type": "image_url", "image_url": {"url": _image_url(p)}})
        elif isinstance(p, FilePart):
            parts.append(file_block(p))
    return [{"role": msg.role, "content": parts}]


def to_body(request: InternalRequest, upstream_model: str, *, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {"model": upstream_model,
                            "messages": [m for msg in request.messages for m in _message(msg)]}
    s = request.sampling
    for key, value in (("max_tokens", s.max_tokens), ("temperature", s.temperature), ("top_p", s.top_p),
                       ("seed", s.seed), ("user", request.user), ("reasoning_effort", request.reasoning_effort)):
        if value is not None:
            body[key] = value
    if s.stop:
        body["stop"] = s.stop
    if request.tools:
        body["tools"] = [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                                           "parameters": t.parameters}} for t in request.tools]
    if request.tool_choice is not None:
        tc = request.tool_choice
        body["tool_choice"] = ({"type": "function", "function": {"name": tc.name}} if tc.mode == "tool"
                               else tc.mode)
    rf = request.response_format
    if rf is not None and rf.type != "text":
        body["response_format"] = ({"type": "json_schema", "json_schema": {"name": rf.name or "response",
                                                                          "schema": rf.json_schema or {}}}
                                   if rf.type == "json_schema" else {"type": "json_object"})
    if stream:
        body["stream"] = True
        body["stream_options"] = {"include_usage": True}
    return body


def _said(message: dict[str, Any]) -> list[tuple[bool, str]]:
    """(is reasoning, text) of an answer's message or a stream's delta, reasoning first: ``reasoning_content``,
    or ``reasoning`` as OpenRouter names it, then ``content``."""
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    return [(thinking, text) for thinking, text in ((True, reasoning), (False, message.get("content"))) if text]


def to_response(data: dict[str, Any], model: str) -> InternalResponse:
    choice = (data.get("choices") or [{}])[0]
    message = choice.get("message") or {}
    content: list[Part] = []
    content += [ThinkingPart(text=text) if thinking else TextPart(text=text) for thinking, text in _said(message)]
    for call in message.get("tool_calls") or []:
        fn = call.get("function") or {}
        content.append(ToolCallPart(id=call.get("id") or new_id("call"), name=fn.get("name", ""),
                                    arguments=fn.get("arguments") or "{}"))
    finish = FINISH_REASONS.get(choice.get("finish_reason") or "stop", "stop")
    return InternalResponse(id=data.get("id") or new_id("chatcmpl"), model=model, created=data.get("created") or now(),
                            content=content, finish_reason=finish, usage=usage_from_json(data.get("usage")))


class _StreamDecoder:
    """OpenAI chunks -> internal events (tool calls emitted whole once the stream ends)."""

    def __init__(self, model: str) -> None:
        self.model = model
        self.started = False
        self.calls: dict[int, dict[str, str]] = {}
        self.finish: FinishReason = "stop"
        self.usage: Usage | None = None

    def feed(self, chunk: dict[str, Any]) -> list[StreamEvent]:
        out: list[StreamEvent] = []
        if not self.started:
            self.started = True
            out.append(StartEvent(id=chunk.get("id") or new_id("chatcmpl"), model=self.model,
                                  created=chunk.get("created") or now()))
        if chunk.get("error"):
            out.append(ErrorEvent(message=transport.upstream_message(json.dumps(chunk).encode()),
                                  code="upstream_error", status=502))
            return out
        for choice in chunk.get("choices") or []:
            delta = choice.get("delta") or {}
            out += [ReasoningDelta(text=text) if thinking else TextDelta(text=text) for thinking, text in _said(delta)]
            for call in delta.get("tool_calls") or []:
                slot = self.calls.setdefault(int(call.get("index", 0)), {"id": "", "name": "", "arguments": ""})
                fn = call.get("function") or {}
                slot["id"] = call.get("id") or slot["id"]
                slot["name"] += fn.get("name") or ""
                slot["arguments"] += fn.get("arguments") or ""
            if choice.get("finish_reason"):
                self.finish = FINISH_REASONS.get(choice["finish_reason"], "stop")
        if chunk.get("usage"):
            self.usage = usage_from_json(chunk["usage"])
            # Providers that report usage on every chunk (continuous usage stats): the deltas carry the count,
            # so a stream cut before the end bills what the provider reported, not the byte-length bound.
            for event in out:
                if isinstance(event, TextDelta | ReasoningDelta):
                    event.completion_tokens = self.usage.completion_tokens
                elif isinstance(event, StartEvent):
                    event.prompt_tokens, event.cached_tokens = self.usage.prompt_tokens, self.usage.cached_tokens
        return out

    def close(self) -> list[StreamEvent]:
        out: list[StreamEvent] = [ToolCallEvent(index=i, id=c["id"] or new_id("call"), name=c["name"],
                                                arguments=c["arguments"] or "{}")
                                  for i, c in sorted(self.calls.items())]
        if self.usage is not None:
            out.append(UsageEvent(usage=self.usage))
        out.append(FinishEvent(reason="tool_calls" if self.calls and self.finish == "stop" else self.finish))
        return out


class OpenAIProviderBackend(transport.ProviderBackend):
    PATH = "/chat/completions"
    to_body = staticmethod(to_body)  # this module's wire mapping, used by the base class
    to_response = staticmethod(to_response)

    def _headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.target.api_key}"} if self.target.api_key else {}

    @staticmethod
    def is_last_event(event: str | None, data: str) -> bool:
        return data.strip() == "[DONE]"

    async def stream(self, request: InternalRequest) -> AsyncIterator[StreamEvent]:
        decoder = _StreamDecoder(request.model)
        done = False
        async for _event, data in await self._events(request):
            if data.strip() == "[DONE]":
                done = True
                break
            try:
                chunk = json.loads(data)
            except ValueError:
                raise ApiError(502, "provider sent an unreadable chunk", code="upstream_error") from None
            for event in decoder.feed(chunk):
                yield event
                if isinstance(event, ErrorEvent):
                    return
        if not done:
            raise self._ended_early()
        for event in decoder.close():
            yield event

    async def raw(self, path: str, body: dict[str, Any], *, content: bytes | None = None,
                  content_type: str | None = None) -> Any:
        """Forward a raw OpenAI call (embeddings, moderations, images, audio, rerank) with the model rewritten;
        ``content`` (with its ``content_type``): a body already encoded, the upstream model already in it."""
        if content is not None:
            headers = {**self._headers(), "content-type": content_type or "application/octet-stream"}
            return await transport.send(self.target, path, None, headers, content=content, whole=True)
        return await transport.send(self.target, path, {**body, "model": self.target.upstream_model},
                                    self._headers(), whole=True)


BACKEND = OpenAIProviderBackend  # the protocol registry (isthmus.adapters.cloud.protocols) builds this
