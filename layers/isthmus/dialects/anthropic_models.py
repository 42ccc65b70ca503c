"""Pydantic models of the Anthropic Messages request (lenient: unknown fields are accepted)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from isthmus.dialects.common import Lenient
from isthmus.fields import ModelName, SessionId, StrictFlag


class TextBlock(Lenient):
    type: Literal["text"]
    text: str


class Base64Source(Lenient):
    type: Literal["base64"]
    media_type: str
    data: str


class UrlSource(Lenient):
    type: Literal["url"]
    url: str


class ImageBlock(Lenient):
    type: Literal["image"]
    source: Annotated[Base64Source | UrlSource, Field(discriminator="type")]


class TextSource(Lenient):
    type: Literal["text"]
    media_type: str = "text/plain"
    data: str


class FileSource(Lenient):
    type: Literal["file"]
    file_id: str


class DocumentBlock(Lenient):
    type: Literal["document"]
    source: Annotated[Base64Source | TextSource | FileSource | UrlSource, Field(discriminator="type")]
    title: str | None = None
    context: str | None = None


class ToolUseBlock(Lenient):
    type: Literal["tool_use"]
    id: str
    name: str
    input: dict[str, Any] = Field(default_factory=dict)


class ToolResultBlock(Lenient):
    type: Literal["tool_result"]
    tool_use_id: str
    content: str | list[Annotated[TextBlock | ImageBlock, Field(discriminator="type")]] | None = None
    is_error: bool | None = None


class ThinkingBlock(Lenient):
    type: Literal["thinking"]
    thinking: str
    signature: str | None = None


class RedactedThinkingBlock(Lenient):
    type: Literal["redacted_thinking"]
    data: str | None = None


ContentBlock = Annotated[
    TextBlock | ImageBlock | DocumentBlock | ToolUseBlock | ToolResultBlock | ThinkingBlock | RedactedThinkingBlock,
    Field(discriminator="type"),
]


class InputMessage(Lenient):
    role: Literal["user", "assistant"]
    content: str | list[ContentBlock]


class ToolDef(Lenient):
    name: str
    description: str | None = None
    input_schema: dict[str, Any] | None = None
    type: str | None = None  # "custom" or absent; server tools (web_search_...) are not supported


class ToolChoiceParam(Lenient):
    type: Literal["auto", "any", "tool", "none"]
    name: str | None = None
    disable_parallel_tool_use: bool | None = None


class ThinkingConfig(Lenient):
    type: Literal["enabled", "disabled", "adaptive"]
    budget_tokens: int | None = Field(default=None, ge=0)


class Metadata(Lenient):
    user_id: str | None = None


class CountTokensRequest(Lenient):
    """``/v1/messages/count_tokens``: a Messages request without ``max_tokens``."""

    model: ModelName
    messages: list[InputMessage]
    system: str | list[TextBlock] | None = None
    tools: list[ToolDef] | None = None
    tool_choice: ToolChoiceParam | None = None
    thinking: ThinkingConfig | None = None


class MessagesRequest(CountTokensRequest):
    max_tokens: int = Field(ge=1)
    stop_sequences: list[str] | None = None
    temperature: float | None = Field(default=None, ge=0, le=1)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    stream: StrictFlag | None = False
    metadata: Metadata | None = None
    # Isthmus extensions shared with the OpenAI dialect.
    session_id: SessionId | None = None
    enable_thinking: bool | None = None
    reasoning_effort: Literal["minimal", "low", "medium", "high"] | None = None
