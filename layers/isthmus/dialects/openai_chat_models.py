"""Pydantic models of the OpenAI chat-completions request (lenient: unknown fields are accepted)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Field

from isthmus.dialects.common import Lenient
from isthmus.fields import ModelName, Seed, SessionId, StrictFlag


class TextContent(Lenient):
    type: Literal["text"]
    text: str


class ImageUrl(Lenient):
    url: str
    detail: str | None = None


class ImageContent(Lenient):
    type: Literal["image_url"]
    image_url: ImageUrl


class RefusalContent(Lenient):
    type: Literal["refusal"]
    refusal: str


class FileRef(Lenient):
    file_id: str | None = None
    file_data: str | None = None  # a base64 data URL
    filename: str | None = None


class FileContent(Lenient):
    type: Literal["file"]
    file: FileRef


ContentPart = Annotated[TextContent | ImageContent | RefusalContent | FileContent, Field(discriminator="type")]


class FunctionCall(Lenient):
    name: str
    arguments: str = "{}"


class ToolCall(Lenient):
    id: str
    type: Literal["function"] = "function"
    function: FunctionCall


class ChatMessage(Lenient):
    role: Literal["system", "developer", "user", "assistant", "tool"]
    content: str | list[ContentPart] | None = None
    name: str | None = None
    tool_calls: list[ToolCall] | None = None
    tool_call_id: str | None = None
    reasoning_content: str | None = None


class FunctionDef(Lenient):
    name: str
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class ToolDef(Lenient):
    type: Literal["function"] = "function"
    function: FunctionDef


class NamedFunction(Lenient):
    name: str


class NamedToolChoice(Lenient):
    type: Literal["function"] = "function"
    function: NamedFunction


class JsonSchemaFormat(Lenient):
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class ResponseFormatParam(Lenient):
    type: Literal["text", "json_object", "json_schema"]
    json_schema: JsonSchemaFormat | None = None


class StreamOptions(Lenient):
    include_usage: bool | None = None


class ChatCompletionRequest(Lenient):
    model: ModelName
    messages: list[ChatMessage]
    max_tokens: int | None = Field(default=None, ge=1)
    max_completion_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    top_k: int | None = Field(default=None, ge=0)
    min_p: float | None = Field(default=None, ge=0, le=1)
    n: int | None = None
    stream: StrictFlag | None = False
    stream_options: StreamOptions | None = None
    stop: str | list[str] | None = None
    seed: Seed | None = None
    user: str | None = None
    tools: list[ToolDef] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    response_format: ResponseFormatParam | None = None
    session_id: SessionId | None = None
    enable_thinking: bool | None = None
    reasoning_effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    metadata: dict[str, Any] | None = None

    @property
    def include_usage(self) -> bool:
        return bool(self.stream_options and self.stream_options.include_usage)
