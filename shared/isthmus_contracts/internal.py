"""The internal request / response / stream-event model.

Every dialect (OpenAI chat, Anthropic messages, OpenAI responses) maps to and from these types, and the
node agent speaks them on the wire (``/agent/v1/generate``), so one backend serves every dialect.
"""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import BaseModel, ConfigDict, Field


class _Model(BaseModel):
    # defer_build: schemas are built on first use, not at import (a cold start only pays for what it uses).
    model_config = ConfigDict(extra="forbid", defer_build=True)


# ---- content parts ---------------------------------------------------------------------------------

class TextPart(_Model):
    type: Literal["text"] = "text"
    text: str


class ImagePart(_Model):
    """An image as a URL (http(s) or data:) or as base64 data with its media type."""

    type: Literal["image"] = "image"
    url: str | None = None
    media_type: str | None = None
    data: str | None = None


class FilePart(_Model):
    """A document the user attached: a reference to an uploaded file (``file_id``, this gateway's store), inline
    base64 ``data`` with its ``media_type``, or plain ``text`` (Anthropic's text source). The inference service
    resolves it before any backend sees it: inlined as ``data`` for a model that reads documents natively, else
    replaced by a TextPart holding its extracted text (isthmus.services.inference.file_parts)."""

    type: Literal["file"] = "file"
    file_id: str | None = None
    data: str | None = None
    media_type: str | None = None
    filename: str | None = None
    text: str | None = None


class ToolCallPart(_Model):
    type: Literal["tool_call"] = "tool_call"
    id: str
    name: str
    arguments: str = "{}"  # JSON text, exactly as the model produced it (OpenAI carries it as a string)


class ToolResultPart(_Model):
    type: Literal["tool_result"] = "tool_result"
    tool_call_id: str
    content: str
    is_error: bool = False


class ThinkingPart(_Model):
    type: Literal["thinking"] = "thinking"
    text: str
    signature: str | None = None


Part = Annotated[TextPart | ImagePart | FilePart | ToolCallPart | ToolResultPart | ThinkingPart,
                 Field(discriminator="type")]
Role = Literal["system", "user", "assistant", "tool"]


class Message(_Model):
    role: Role
    content: list[Part] = Field(default_factory=list)
    name: str | None = None

    def text(self) -> str:
        return "".join(p.text for p in self.content if isinstance(p, TextPart))


# ---- request -----------------------------------------------------------------------------------------

class Tool(_Model):
    name: str
    description: str | None = None
    parameters: dict[str, Any] = Field(default_factory=lambda: {"type": "object", "properties": {}})


class ToolChoice(_Model):
    mode: Literal["auto", "none", "required", "tool"] = "auto"
    name: str | None = None  # with mode "tool": the one tool the model must call


class Sampling(_Model):
    max_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    seed: int | None = None
    stop: list[str] = Field(default_factory=list)


class ResponseFormat(_Model):
    type: Literal["text", "json_object", "json_schema"] = "text"
    name: str | None = None
    json_schema: dict[str, Any] | None = None


ReasoningEffort = Literal["minimal", "low", "medium", "high"]


class InternalRequest(_Model):
    model: str
    messages: list[Message] = Field(min_length=1)
    tools: list[Tool] = Field(default_factory=list)
    tool_choice: ToolChoice | None = None
    sampling: Sampling = Field(default_factory=Sampling)
    stream: bool = False
    session_id: str | None = None
    enable_thinking: bool | None = None
    reasoning_effort: ReasoningEffort | None = None
    response_format: ResponseFormat | None = None
    user: str | None = None
    metadata: dict[str, Any] = Field(default_factory=dict)


# ---- response -----------------------------------------------------------------------------------------

FinishReason = Literal["stop", "length", "tool_calls", "stop_sequence", "error"]


class Usage(_Model):
    prompt_tokens: int = 0
    completion_tokens: int = 0
    # Prompt tokens served from the prefix cache. None when the request had no session (then the
    # dialects omit the field, as the on-prem gateway does).
    cached_tokens: int | None = None
    # Completion tokens spent inside think blocks, when the backend counts them (None: unknown).
    reasoning_tokens: int | None = None
    prefill_tps: float | None = None
    decode_tps: float | None = None


class InternalResponse(_Model):
    id: str
    model: str
    created: int
    content: list[Part] = Field(default_factory=list)  # text, thinking and tool_call parts, in order
    finish_reason: FinishReason = "stop"
    stop_sequence: str | None = None
    usage: Usage = Field(default_factory=Usage)
    loop_guard: bool = False  # generation was stopped by the degenerate-repetition guard


# ---- stream events (NDJSON lines from the agent; one typed event per line) ------------------------------

class StartEvent(_Model):
    """First event: the prompt is tokenized (and the cache consulted) before any output."""

    type: Literal["start"] = "start"
    id: str
    model: str
    created: int
    prompt_tokens: int = 0
    cached_tokens: int | None = None


# ``completion_tokens`` on a delta: the completion tokens generated so far, this delta's included, when the
# backend counts them (the node agent always does). They travel on every delta so that whoever relays the
# stream knows what was generated even when the stream is cut before its usage event (a client gone, an agent
# killed): the bill counts what was generated, not zero. None: the backend does not say.


class TextDelta(_Model):
    type: Literal["text"] = "text"
    text: str
    completion_tokens: int | None = None


class ReasoningDelta(_Model):
    type: Literal["reasoning"] = "reasoning"
    text: str
    completion_tokens: int | None = None


class ToolCallEvent(_Model):
    """One complete tool call (the agent emits it once its markup closes)."""

    type: Literal["tool_call"] = "tool_call"
    index: int
    id: str
    name: str
    arguments: str
    completion_tokens: int | None = None


class UsageEvent(_Model):
    type: Literal["usage"] = "usage"
    usage: Usage


class FinishEvent(_Model):
    type: Literal["finish"] = "finish"
    reason: FinishReason
    stop_sequence: str | None = None
    loop_guard: bool = False


class ErrorEvent(_Model):
    type: Literal["error"] = "error"
    message: str
    code: str = "backend_error"
    status: int = 500
    # What the failed generation had used when it failed (prompt included), when the backend knows: billed.
    usage: Usage | None = None


StreamEvent = Annotated[
    StartEvent | TextDelta | ReasoningDelta | ToolCallEvent | UsageEvent | FinishEvent | ErrorEvent,
    Field(discriminator="type"),
]
