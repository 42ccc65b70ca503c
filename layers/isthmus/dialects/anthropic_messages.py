"""Anthropic Messages <-> the internal model: request mapping, Message rendering, stream encoder."""

from __future__ import annotations

from typing import Any

from isthmus.dialects.anthropic_models import (
    Base64Source,
    CountTokensRequest,
    DocumentBlock,
    FileSource,
    ImageBlock,
    InputMessage,
    MessagesRequest,
    RedactedThinkingBlock,
    TextBlock,
    TextSource,
    ThinkingBlock,
    ThinkingConfig,
    ToolResultBlock,
    ToolUseBlock,
)
from isthmus.dialects.common import (
    EndsAfterUsage,
    dump_json,
    internal_tool,
    new_id,
    parse_arguments,
    parse_request,
    refused_tool,
    require,
    thinking_signature,
    with_prefix,
)
from isthmus.errors import Dialect, bad_request, error_body
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
    Sampling,
    StartEvent,
    StreamEvent,
    TextDelta,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCallEvent,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    Usage,
)

# ---- request ------------------------------------------------------------------------------------------


def parse(body: Any) -> MessagesRequest:
    return parse_request(MessagesRequest, body, Dialect.ANTHROPIC)


def to_internal(req: MessagesRequest, *, header_session_id: str | None = None) -> InternalRequest:
    """The internal request; ``header_session_id`` (X-Session-Id) wins over the body's ``session_id``."""
    enable_thinking, effort = thinking_fields(req.thinking)
    return InternalRequest(
        model=req.model,
        messages=to_internal_messages(req),
        tools=to_internal_tools(req),
        tool_choice=_tool_choice(req),
        sampling=Sampling(max_tokens=req.max_tokens, temperature=req.temperature, top_p=req.top_p,
                          top_k=req.top_k, stop=list(req.stop_sequences or [])),
        stream=bool(req.stream),
        session_id=header_session_id or req.session_id,
        enable_thinking=req.enable_thinking if req.enable_thinking is not None else enable_thinking,
        reasoning_effort=req.reasoning_effort or effort,
        user=req.metadata.user_id if req.metadata else None,
    )


def thinking_fields(config: ThinkingConfig | None) -> tuple[bool | None, Any]:
    """``thinking`` as (enable_thinking, reasoning_effort): the budget picks the effort."""
    if config is None:
        return None, None
    if config.type == "disabled":
        return False, None
    budget = config.budget_tokens
    if budget is None:
        return True, None
    return True, "low" if budget <= 1024 else "medium" if budget <= 8192 else "high"


def to_internal_tools(req: CountTokensRequest) -> list[Tool]:
    for i, tool in enumerate(req.tools or []):
        if tool.type not in (None, "custom"):
            raise refused_tool(i, f"server tool {tool.type!r} is not supported")
    return [internal_tool(t.name, t.description, t.input_schema) for t in req.tools or []]


def _tool_choice(req: MessagesRequest) -> ToolChoice | None:
    choice = req.tool_choice
    if choice is None:
        return None
    if choice.type == "tool":
        require(bool(choice.name), "tool_choice.name: required for type tool", "tool_choice.name")
        return ToolChoice(mode="tool", name=choice.name)
    if choice.type == "any":
        return ToolChoice(mode="required")
    return ToolChoice(mode=choice.type)


def to_internal_messages(req: CountTokensRequest) -> list[Message]:
    """System prompt and messages; each tool_result becomes its own ``tool`` message, in order."""
    require(bool(req.messages), "messages: must contain at least one message", "messages")
    out: list[Message] = []
    if req.system:
        text = req.system if isinstance(req.system, str) else "\n\n".join(b.text for b in req.system)
        out.append(Message(role="system", content=[TextPart(text=text)]))
    for i, msg in enumerate(req.messages):
        out += _messages(msg, i)
    return out


def _messages(msg: InputMessage, index: int) -> list[Message]:
    if isinstance(msg.content, str):
        return [Message(role=msg.role, content=[TextPart(text=msg.content)])]
    out: list[Message] = []
    parts: list[Part] = []
    for j, block in enumerate(msg.content):
        if isinstance(block, ToolResultBlock):
            out.append(Message(role="tool", content=[_tool_result(block)]))
        elif isinstance(block, TextBlock):
            parts.append(TextPart(text=block.text))
        elif isinstance(block, ImageBlock):
            parts.append(_image(block))
        elif isinstance(block, DocumentBlock):
            parts.append(_document(block, f"messages.{index}.content.{j}.source"))
        elif isinstance(block, ToolUseBlock):
            parts.append(ToolCallPart(id=block.id, name=block.name, arguments=dump_json(block.input)))
        elif isinstance(block, ThinkingBlock):
            parts.append(ThinkingPart(text=block.thinking, signature=block.signature))
        elif isinstance(block, RedactedThinkingBlock):
            continue
    if parts or not out:
        out.append(Message(role=msg.role, content=parts))
    return out


def _image(block: ImageBlock) -> ImagePart:
    source = block.source
    if isinstance(source, Base64Source):
        return ImagePart(media_type=source.media_type, data=source.data)
    return ImagePart(url=source.url)


def _document(block: DocumentBlock, where: str) -> FilePart:
    source = block.source
    if isinstance(source, Base64Source):
        return FilePart(data=source.data, media_type=source.media_type, filename=block.title)
    if isinstance(source, TextSource):
        return FilePart(text=source.data, media_type=source.media_type, filename=block.title)
    if isinstance(source, FileSource):
        return FilePart(file_id=source.file_id, filename=block.title)
    raise bad_request(f"{where}: URL documents are not fetched; upload the file or send it as base64",
                      param=where)


def _tool_result(block: ToolResultBlock) -> ToolResultPart:
    content = block.content
    if isinstance(content, list):  # images inside tool results are not carried (text only)
        content = "".join(b.text for b in content if isinstance(b, TextBlock))
    return ToolResultPart(tool_call_id=block.tool_use_id, content=content or "",
                          is_error=bool(block.is_error))


# ---- response -----------------------------------------------------------------------------------------

_STOP_REASONS = {"stop": "end_turn", "length": "max_tokens", "stop_sequence": "stop_sequence",
                 "tool_calls": "tool_use", "error": "end_turn"}


# An upstream's stop_reason read back (isthmus.adapters.cloud.anthropic_provider); stop_reason() writes it.
FINISH_REASONS: dict[str, FinishReason] = {"end_turn": "stop", "max_tokens": "length", "tool_use": "tool_calls",
                                           "stop_sequence": "stop_sequence", "pause_turn": "stop", "refusal": "stop"}


def stop_reason(reason: FinishReason, has_tool_calls: bool) -> str:
    if has_tool_calls and reason in ("stop", "tool_calls"):
        return "tool_use"
    return _STOP_REASONS[reason]


def usage_json(usage: Usage) -> dict[str, Any]:
    cached = usage.cached_tokens or 0
    return {"input_tokens": max(usage.prompt_tokens - cached, 0), "output_tokens": usage.completion_tokens,
            "cache_creation_input_tokens": 0, "cache_read_input_tokens": cached}


def usage_from_json(data: Any, prompt_tokens: int = 0) -> Usage:
    """The usage object usage_json() writes, read back from an upstream: the prompt is input plus cache reads and
    writes (``prompt_tokens`` when the upstream reports none)."""
    data = data if isinstance(data, dict) else {}
    cached = data.get("cache_read_input_tokens")
    prompt = int(data.get("input_tokens") or 0) + int(cached or 0) + int(data.get("cache_creation_input_tokens") or 0)
    return Usage(prompt_tokens=prompt or prompt_tokens, completion_tokens=int(data.get("output_tokens") or 0),
                 cached_tokens=int(cached) if cached else None)


def tool_use_block(part: ToolCallPart) -> dict[str, Any]:
    """A tool call as a ``tool_use`` block (answers to clients, and requests to an Anthropic upstream)."""
    return {"type": "tool_use", "id": part.id or new_id("tool_use"), "name": part.name,
            "input": parse_arguments(part.arguments)}


def _block(part: Part) -> dict[str, Any] | None:
    if isinstance(part, TextPart):
        return {"type": "text", "text": part.text}
    if isinstance(part, ThinkingPart):
        return {"type": "thinking", "thinking": part.text,
                "signature": part.signature or thinking_signature(part.text)}
    if isinstance(part, ToolCallPart):
        return tool_use_block(part)
    return None


def to_message(resp: InternalResponse) -> dict[str, Any]:
    blocks = [b for b in (_block(p) for p in resp.content) if b is not None]
    reason = stop_reason(resp.finish_reason, any(b["type"] == "tool_use" for b in blocks))
    return {
        "id": with_prefix(resp.id, "message"), "type": "message", "role": "assistant", "model": resp.model,
        "content": blocks, "stop_reason": reason,
        "stop_sequence": resp.stop_sequence if reason == "stop_sequence" else None,
        "usage": usage_json(resp.usage),
    }


# ---- stream -------------------------------------------------------------------------------------------

PING: dict[str, Any] = {"type": "ping"}


def ping_event() -> dict[str, Any]:
    return dict(PING)


class MessagesStreamEncoder(EndsAfterUsage):
    """Feed internal stream events, get Anthropic stream event dicts (frame them with ``sse_event``).

    The ending (``message_delta`` + ``message_stop``) goes out once both the finish and the usage are
    known; :meth:`close` flushes it if the backend never reported usage.
    """

    def __init__(self, *, model: str = "", message_id: str = "") -> None:
        super().__init__()
        self.id = with_prefix(message_id, "message")
        self.model = model
        self._opened = False
        self._index = -1
        self._open: str | None = None  # type of the open content block
        self._thinking = ""
        self._tool_calls = 0

    def _on_start(self, event: StartEvent) -> None:
        self.id, self.model = with_prefix(event.id, "message"), event.model or self.model

    def _error(self, event: ErrorEvent) -> dict[str, Any]:
        return error_body(Dialect.ANTHROPIC, event.status, event.message)

    def _content(self, event: StreamEvent) -> list[dict[str, Any]]:
        if isinstance(event, TextDelta):
            return [*self._switch("text", {"type": "text", "text": ""}),
                    self._delta({"type": "text_delta", "text": event.text})]
        if isinstance(event, ReasoningDelta):
            out = self._switch("thinking", {"type": "thinking", "thinking": "", "signature": ""})
            self._thinking += event.text
            return [*out, self._delta({"type": "thinking_delta", "thinking": event.text})]
        if not isinstance(event, ToolCallEvent):
            return []
        self._tool_calls += 1
        block = {"type": "tool_use", "id": event.id or new_id("tool_use"), "name": event.name, "input": {}}
        out = self._switch("tool_use", block, force=True)
        out.append(self._delta({"type": "input_json_delta", "partial_json": event.arguments}))
        return out + self._close_block()

    def _close_open(self) -> list[dict[str, Any]]:
        return self._close_block()

    def _started(self) -> list[dict[str, Any]]:
        if self._opened:
            return []
        self._opened = True
        usage = {**usage_json(self.usage), "output_tokens": 0}
        message: dict[str, Any] = {
            "id": self.id, "type": "message", "role": "assistant", "model": self.model, "content": [],
            "stop_reason": None, "stop_sequence": None, "usage": usage}
        return [{"type": "message_start", "message": message}]

    def _switch(self, kind: str, block: dict[str, Any], *, force: bool = False) -> list[dict[str, Any]]:
        if self._open == kind and not force:
            return []
        out = self._close_block()
        self._index += 1
        self._open = kind
        return [*out, {"type": "content_block_start", "index": self._index, "content_block": block}]

    def _close_block(self) -> list[dict[str, Any]]:
        if self._open is None:
            return []
        out = []
        if self._open == "thinking":
            signature = thinking_signature(self._thinking)
            out.append(self._delta({"type": "signature_delta", "signature": signature}))
            self._thinking = ""
        self._open = None
        return [*out, {"type": "content_block_stop", "index": self._index}]

    def _delta(self, delta: dict[str, Any]) -> dict[str, Any]:
        return {"type": "content_block_delta", "index": self._index, "delta": delta}

    def _ending(self, finish: FinishEvent) -> list[dict[str, Any]]:
        reason = stop_reason(finish.reason, self._tool_calls > 0)
        delta = {"stop_reason": reason, "stop_sequence": finish.stop_sequence if reason == "stop_sequence" else None}
        usage = {"output_tokens": self.usage.completion_tokens}
        return [{"type": "message_delta", "delta": delta, "usage": usage}, {"type": "message_stop"}]
