"""Pydantic models of the OpenAI Responses request (lenient: unknown fields are accepted)."""

from __future__ import annotations

from typing import Annotated, Any, Literal

from pydantic import Discriminator, Field, Tag

from isthmus.dialects.common import Lenient
from isthmus.fields import ModelName, ResponseId, SessionId, StrictFlag


class InputText(Lenient):
    type: Literal["input_text"]
    text: str


class OutputText(Lenient):
    type: Literal["output_text"]
    text: str


class RefusalContent(Lenient):
    type: Literal["refusal"]
    refusal: str


class InputImage(Lenient):
    type: Literal["input_image"]
    image_url: str | None = None
    file_id: str | None = None
    detail: str | None = None


class InputFile(Lenient):
    type: Literal["input_file"]
    file_id: str | None = None
    file_data: str | None = None  # a base64 data URL
    filename: str | None = None
    file_url: str | None = None


MessageContent = Annotated[InputText | OutputText | RefusalContent | InputImage | InputFile,
                           Field(discriminator="type")]


class MessageItem(Lenient):
    type: Literal["message"] = "message"
    role: Literal["user", "assistant", "system", "developer"]
    content: str | list[MessageContent]
    id: str | None = None
    status: str | None = None


class FunctionCallItem(Lenient):
    type: Literal["function_call"]
    call_id: str
    name: str
    arguments: str = "{}"
    id: str | None = None
    status: str | None = None


class FunctionCallOutputItem(Lenient):
    type: Literal["function_call_output"]
    call_id: str
    output: str | list[MessageContent]
    id: str | None = None
    status: str | None = None


class SummaryText(Lenient):
    type: Literal["summary_text"] = "summary_text"
    text: str


class ReasoningText(Lenient):
    type: Literal["reasoning_text"] = "reasoning_text"
    text: str


class ReasoningItem(Lenient):
    type: Literal["reasoning"]
    id: str | None = None
    summary: list[SummaryText] = Field(default_factory=list)
    content: list[ReasoningText] | None = None
    encrypted_content: str | None = None


def _item_kind(value: Any) -> str:
    kind = value.get("type", "message") if isinstance(value, dict) else getattr(value, "type", "message")
    return str(kind)


InputItem = Annotated[
    Annotated[MessageItem, Tag("message")]
    | Annotated[FunctionCallItem, Tag("function_call")]
    | Annotated[FunctionCallOutputItem, Tag("function_call_output")]
    | Annotated[ReasoningItem, Tag("reasoning")],
    Discriminator(_item_kind),
]


class FunctionToolDef(Lenient):
    type: str
    name: str | None = None
    description: str | None = None
    parameters: dict[str, Any] | None = None
    strict: bool | None = None


class NamedToolChoice(Lenient):
    type: str
    name: str | None = None


class TextFormat(Lenient):
    type: Literal["text", "json_object", "json_schema"]
    name: str | None = None
    schema_: dict[str, Any] | None = Field(default=None, alias="schema")
    strict: bool | None = None
    description: str | None = None


class TextConfig(Lenient):
    format: TextFormat | None = None
    verbosity: str | None = None


class ReasoningConfig(Lenient):
    effort: Literal["none", "minimal", "low", "medium", "high", "xhigh"] | None = None
    summary: str | None = None


class ResponsesRequest(Lenient):
    model: ModelName
    input: str | list[InputItem]
    instructions: str | None = None
    tools: list[FunctionToolDef] | None = None
    tool_choice: Literal["auto", "none", "required"] | NamedToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_output_tokens: int | None = Field(default=None, ge=1)
    temperature: float | None = Field(default=None, ge=0, le=2)
    top_p: float | None = Field(default=None, gt=0, le=1)
    text: TextConfig | None = None
    reasoning: ReasoningConfig | None = None
    previous_response_id: ResponseId | None = None
    store: StrictFlag | None = None
    stream: StrictFlag | None = False
    user: str | None = None
    metadata: dict[str, str] | None = None
    # Isthmus extensions shared with the chat dialect.
    session_id: SessionId | None = None
    enable_thinking: bool | None = None
