"""OpenAI chat completions <-> the internal model: request mapping, response rendering, stream encoder."""

from __future__ import annotations

from typing import Any

from isthmus.dialects.common import (
    file_part,
    internal_tool,
    new_id,
    now,
    parse_request,
    require,
    split_data_url,
    thinking_fields,
    with_prefix,
)
from isthmus.dialects.openai_chat_models import (
    ChatCompletionRequest,
    ChatMessage,
    ContentPart,
    FileContent,
    RefusalContent,
    TextContent,
)
from isthmus.errors import Dialect, bad_request, error_body
from isthmus_contracts.internal import (
    ErrorEvent,
    FinishEvent,
    FinishReason,
    ImagePart,
    InternalRequest,
    InternalResponse,
    Message,
    Part,
    ReasoningDelta,
    ResponseFormat,
    Sampling,
    StartEvent,
    StreamEvent,
    TextDelta,
    TextPart,
    ThinkingPart,
    ToolCallEvent,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    Usage,
    UsageEvent,
)

# ---- request ------------------------------------------------------------------------------------------


def parse(body: Any) -> ChatCompletionRequest:
    return parse_request(ChatCompletionRequest, body, Dialect.OPENAI)


def to_internal(req: ChatCompletionRequest, *, header_session_id: str | None = None) -> InternalRequest:
    """The internal request; ``header_session_id`` (X-Session-Id) wins over the body's ``session_id``."""
    require(bool(req.messages), "messages: must contain at least one message", "messages")
    if req.n not in (None, 1):
        raise bad_request("n: only n=1 is supported", param="n")
    stop = [req.stop] if isinstance(req.stop, str) else list(req.stop or [])
    return InternalRequest(
        model=req.model,
        messages=[_message(m, i) for i, m in enumerate(req.messages)],
        tools=[internal_tool(t.function.name, t.function.description, t.function.parameters) for t in req.tools or []],
        tool_choice=_tool_choice(req),
        sampling=Sampling(
            max_tokens=req.max_completion_tokens or req.max_tokens, temperature=req.temperature,
            top_p=req.top_p, top_k=req.top_k, min_p=req.min_p, seed=req.seed, stop=stop),
        stream=bool(req.stream),
        session_id=header_session_id or req.session_id,
        response_format=_response_format(req),
        user=req.user,
        metadata=dict(req.metadata or {}),
        **thinking_fields(req.reasoning_effort, req.enable_thinking),
    )


def _tool_choice(req: ChatCompletionRequest) -> ToolChoice | None:
    choice = req.tool_choice
    if choice is None:
        return None
    if isinstance(choice, str):
        return ToolChoice(mode=choice)
    return ToolChoice(mode="tool", name=choice.function.name)


def _response_format(req: ChatCompletionRequest) -> ResponseFormat | None:
    fmt = req.response_format
    if fmt is None:
        return None
    if fmt.type != "json_schema":
        return ResponseFormat(type=fmt.type)
    require(fmt.json_schema is not None, "response_format.json_schema: required for type json_schema",
            "response_format.json_schema")
    assert fmt.json_schema is not None
    return ResponseFormat(type="json_schema", name=fmt.json_schema.name, json_schema=fmt.json_schema.schema_)


def _parts(content: str | list[ContentPart] | None, where: str = "content") -> list[Part]:
    if content is None:
        return []
    if isinstance(content, str):
        return [TextPart(text=content)] if content else []
    parts: list[Part] = []
    for j, part in enumerate(content):
        if isinstance(part, TextContent):
            parts.append(TextPart(text=part.text))
        elif isinstance(part, RefusalContent):
            parts.append(TextPart(text=part.refusal))
        elif isinstance(part, FileContent):
            parts.append(file_part(file_id=part.file.file_id, file_data=part.file.file_data,
                                   filename=part.file.filename, param=f"{where}.{j}.file"))
        else:
            data_url = split_data_url(part.image_url.url)
            parts.append(ImagePart(media_type=data_url[0], data=data_url[1]) if data_url
                         else ImagePart(url=part.image_url.url))
    return parts


def _text(content: str | list[ContentPart] | None) -> str:
    return "".join(p.text for p in _parts(content) if isinstance(p, TextPart))


def _message(msg: ChatMessage, index: int) -> Message:
    if msg.role == "tool":
        require(bool(msg.tool_call_id), f"messages.{index}.tool_call_id: required for tool messages",
                f"messages.{index}.tool_call_id")
        part = ToolResultPart(tool_call_id=msg.tool_call_id or "", content=_text(msg.content))
        return Message(role="tool", content=[part], name=msg.name)
    if msg.role == "assistant":
        content: list[Part] = [ThinkingPart(text=msg.reasoning_content)] if msg.reasoning_content else []
        content += _parts(msg.content)
        content += [ToolCallPart(id=c.id, name=c.function.name, arguments=c.function.arguments)
                    for c in msg.tool_calls or []]
        return Message(role="assistant", content=content, name=msg.name)
    if msg.role in ("system", "developer"):
        return Message(role="system", content=_parts(msg.content), name=msg.name)
    return Message(role="user", content=_parts(msg.content, f"messages.{index}.content"), name=msg.name)


# ---- response -----------------------------------------------------------------------------------------


# An upstream's finish_reason read back (isthmus.adapters.cloud.openai_provider); finish_reason() writes it.
FINISH_REASONS: dict[str, FinishReason] = {"stop": "stop", "length": "length", "tool_calls": "tool_calls",
                                           "function_call": "tool_calls", "content_filter": "stop"}


def finish_reason(reason: FinishReason, has_tool_calls: bool) -> str:
    if reason == "length":
        return "length"
    if has_tool_calls or reason == "tool_calls":
        return "tool_calls"
    return "stop"


def usage_json(usage: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        "prompt_tokens": usage.prompt_tokens,
        "completion_tokens": usage.completion_tokens,
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }
    if usage.cached_tokens is not None:
        out["prompt_tokens_details"] = {"cached_tokens": usage.cached_tokens}
    if usage.reasoning_tokens is not None:
        out["completion_tokens_details"] = {"reasoning_tokens": usage.reasoning_tokens}
    return out


def usage_from_json(data: Any) -> Usage:
    """The usage object usage_json() writes, read back from an upstream (missing or odd fields count 0)."""
    data = data if isinstance(data, dict) else {}
    details = data.get("prompt_tokens_details") or {}
    out_details = data.get("completion_tokens_details") or {}
    return Usage(prompt_tokens=int(data.get("prompt_tokens") or 0),
                 completion_tokens=int(data.get("completion_tokens") or 0),
                 cached_tokens=details.get("cached_tokens") if isinstance(details, dict) else None,
                 reasoning_tokens=out_details.get("reasoning_tokens") if isinstance(out_details, dict) else None)


def to_chat_completion(resp: InternalResponse) -> dict[str, Any]:
    text = "".join(p.text for p in resp.content if isinstance(p, TextPart))
    reasoning = "".join(p.text for p in resp.content if isinstance(p, ThinkingPart))
    calls = [p for p in resp.content if isinstance(p, ToolCallPart)]
    message: dict[str, Any] = {"role": "assistant", "content": text or (None if calls else "")}
    if reasoning:
        message["reasoning_content"] = reasoning
    if calls:
        message["tool_calls"] = [tool_call_json(c.id, c.name, c.arguments) for c in calls]
    return {
        "id": with_prefix(resp.id, "chat"),
        "object": "chat.completion",
        "created": resp.created,
        "model": resp.model,
        "choices": [{"index": 0, "message": message, "logprobs": None,
                     "finish_reason": finish_reason(resp.finish_reason, bool(calls))}],
        "usage": usage_json(resp.usage),
    }


def tool_call_json(call_id: str, name: str, arguments: str) -> dict[str, Any]:
    return {"id": call_id or new_id("tool_call"), "type": "function",
            "function": {"name": name, "arguments": arguments}}


# ---- stream -------------------------------------------------------------------------------------------


class ChatStreamEncoder:
    """Feed internal stream events, get ``chat.completion.chunk`` dicts (and in-band error dicts).

    The handler frames each dict with :func:`isthmus.dialects.common.sse_data` and ends the stream with
    ``SSE_DONE`` after :meth:`close`.
    """

    def __init__(self, *, include_usage: bool = False, model: str = "", response_id: str = "") -> None:
        self.include_usage = include_usage
        self.id = with_prefix(response_id, "chat")
        self.model = model
        self.created = now()
        self.usage = Usage()
        self._started = False
        self._tool_calls = 0
        self._finished = False
        self._usage_sent = False
        self._usage_seen = False

    def feed(self, event: StreamEvent) -> list[dict[str, Any]]:
        out: list[dict[str, Any]] = []
        if isinstance(event, StartEvent):
            self.id = with_prefix(event.id, "chat")
            self.model, self.created = event.model or self.model, event.created
            self.usage = Usage(prompt_tokens=event.prompt_tokens, cached_tokens=event.cached_tokens)
            return self._ensure_started()
        if isinstance(event, ErrorEvent):
            return [error_body(Dialect.OPENAI, event.status, event.message, code=event.code)]
        if isinstance(event, UsageEvent):
            self.usage, self._usage_seen = event.usage, True
            return self._usage_chunk() if self._finished else []
        out = self._ensure_started()
        if isinstance(event, TextDelta):
            out.append(self._chunk({"content": event.text}))
        elif isinstance(event, ReasoningDelta):
            out.append(self._chunk({"reasoning_content": event.text}))
        elif isinstance(event, ToolCallEvent):
            call = {"index": self._tool_calls, **tool_call_json(event.id, event.name, event.arguments)}
            self._tool_calls += 1
            out.append(self._chunk({"tool_calls": [call]}))
        elif isinstance(event, FinishEvent) and not self._finished:
            self._finished = True
            out.append(self._chunk({}, finish_reason(event.reason, self._tool_calls > 0)))
            if self._usage_seen:
                out += self._usage_chunk()
        return out

    def close(self) -> list[dict[str, Any]]:
        """Chunks still owed at the end of the backend stream (the usage chunk if not yet sent)."""
        return self._usage_chunk() if self._finished else []

    def _ensure_started(self) -> list[dict[str, Any]]:
        if self._started:
            return []
        self._started = True
        return [self._chunk({"role": "assistant", "content": ""})]

    def _usage_chunk(self) -> list[dict[str, Any]]:
        if not self.include_usage or self._usage_sent:
            return []
        self._usage_sent = True
        return [{**self._base(), "choices": [], "usage": usage_json(self.usage)}]

    def _chunk(self, delta: dict[str, Any], reason: str | None = None) -> dict[str, Any]:
        choice = {"index": 0, "delta": delta, "logprobs": None, "finish_reason": reason}
        return {**self._base(), "choices": [choice]}

    def _base(self) -> dict[str, Any]:
        return {"id": self.id, "object": "chat.completion.chunk", "created": self.created,
                "model": self.model}
