"""OpenAI Responses <-> the internal model: request mapping, previous_response_id, Response rendering.

The stream encoder lives in :mod:`isthmus.dialects.openai_responses_stream`.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from isthmus.dialects.common import (
    bare,
    file_part,
    internal_tool,
    parse_request,
    refused_tool,
    require,
    split_data_url,
    thinking_fields,
    with_prefix,
)
from isthmus.dialects.openai_responses_models import (
    FunctionCallItem,
    FunctionCallOutputItem,
    InputFile,
    InputImage,
    InputText,
    MessageContent,
    MessageItem,
    OutputText,
    ReasoningItem,
    ResponsesRequest,
)
from isthmus.errors import Dialect, bad_request
from isthmus_contracts.internal import (
    ImagePart,
    InternalRequest,
    InternalResponse,
    Message,
    Part,
    ResponseFormat,
    Sampling,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    Usage,
)

# ---- request ------------------------------------------------------------------------------------------


def parse(body: Any) -> ResponsesRequest:
    return parse_request(ResponsesRequest, body, Dialect.OPENAI)


def to_internal(req: ResponsesRequest, *, header_session_id: str | None = None) -> InternalRequest:
    """The internal request (without the previous response's turns: see :func:`prepend_previous`)."""
    require(bool(req.input), "input: must not be empty", "input")
    messages = [Message(role="system", content=[TextPart(text=req.instructions)])] if req.instructions else []
    if isinstance(req.input, str):
        messages.append(Message(role="user", content=[TextPart(text=req.input)]))
    else:
        for i, item in enumerate(req.input):
            _add_item(messages, item, f"input.{i}")
    require(bool(messages), "input: contains no message", "input")
    effort = req.reasoning.effort if req.reasoning else None
    return InternalRequest(
        model=req.model,
        messages=messages,
        tools=_tools(req),
        tool_choice=_tool_choice(req),
        sampling=Sampling(max_tokens=req.max_output_tokens, temperature=req.temperature, top_p=req.top_p),
        stream=bool(req.stream),
        session_id=header_session_id or req.session_id,
        response_format=_response_format(req),
        user=req.user,
        metadata=dict(req.metadata or {}),
        **thinking_fields(effort, req.enable_thinking),
    )


def prepend_previous(request: InternalRequest, previous_messages: Sequence[Message],
                     previous_output: InternalResponse | Sequence[Part]) -> InternalRequest:
    """``request`` continuing a stored response: its system prompt, then the previous request's turns
    (whose instructions do not carry over), the previous output as an assistant turn, then the new turns."""
    output = previous_output.content if isinstance(previous_output, InternalResponse) else previous_output
    system = [m for m in request.messages if m.role == "system"]
    history = [m for m in previous_messages if m.role != "system"]
    if output:
        history.append(Message(role="assistant", content=list(output)))
    turns = [m for m in request.messages if m.role != "system"]
    return request.model_copy(update={"messages": [*system, *history, *turns]})


def _content(content: str | list[MessageContent], where: str) -> list[Part]:
    if isinstance(content, str):
        return [TextPart(text=content)]
    parts: list[Part] = []
    for j, part in enumerate(content):
        if isinstance(part, InputText | OutputText):
            parts.append(TextPart(text=part.text))
        elif isinstance(part, InputImage):
            param = f"{where}.content.{j}.image_url"
            require(part.image_url is not None, f"{param}: only image URLs are supported", param)
            url = part.image_url or ""
            data_url = split_data_url(url)
            parts.append(ImagePart(media_type=data_url[0], data=data_url[1]) if data_url
                         else ImagePart(url=url))
        elif isinstance(part, InputFile):
            param = f"{where}.content.{j}"
            require(part.file_url is None, f"{param}.file_url: file URLs are not fetched; upload the file or send "
                    "file_data", f"{param}.file_url")
            parts.append(file_part(file_id=part.file_id, file_data=part.file_data, filename=part.filename,
                                   param=param))
        else:
            parts.append(TextPart(text=part.refusal))
    return parts


def _assistant(messages: list[Message]) -> Message:
    """The assistant message to append output-side items to (a new one unless the last is one)."""
    if not messages or messages[-1].role != "assistant":
        messages.append(Message(role="assistant"))
    return messages[-1]


def _add_item(messages: list[Message], item: Any, where: str) -> None:
    if isinstance(item, MessageItem):
        parts = _content(item.content, where)
        if item.role == "assistant":
            _assistant(messages).content.extend(parts)
        else:
            messages.append(Message(role="system" if item.role in ("system", "developer") else "user",
                                    content=parts))
    elif isinstance(item, FunctionCallItem):
        _assistant(messages).content.append(ToolCallPart(id=item.call_id, name=item.name,
                                                         arguments=item.arguments))
    elif isinstance(item, FunctionCallOutputItem):
        output = item.output if isinstance(item.output, str) else "".join(
            p.text for p in _content(item.output, where) if isinstance(p, TextPart))
        result = ToolResultPart(tool_call_id=item.call_id, content=output)
        messages.append(Message(role="tool", content=[result]))
    elif isinstance(item, ReasoningItem):
        texts = [c.text for c in item.content] if item.content else [s.text for s in item.summary]
        if texts:
            _assistant(messages).content.append(ThinkingPart(text="\n\n".join(texts)))


def _tools(req: ResponsesRequest) -> list[Tool]:
    tools = []
    for i, tool in enumerate(req.tools or []):
        if tool.type != "function" or not tool.name:
            raise refused_tool(i, f"only function tools are supported (got {tool.type!r})")
        tools.append(internal_tool(tool.name, tool.description, tool.parameters))
    return tools


def _tool_choice(req: ResponsesRequest) -> ToolChoice | None:
    choice = req.tool_choice
    if choice is None or isinstance(choice, str):
        return ToolChoice(mode=choice) if choice else None
    if choice.type != "function" or not choice.name:
        raise bad_request(f"tool_choice.type: unsupported tool choice {choice.type!r}", param="tool_choice")
    return ToolChoice(mode="tool", name=choice.name)


def _response_format(req: ResponsesRequest) -> ResponseFormat | None:
    fmt = req.text.format if req.text else None
    if fmt is None:
        return None
    return ResponseFormat(type=fmt.type, name=fmt.name, json_schema=fmt.schema_)


# ---- response -----------------------------------------------------------------------------------------


def item_id(kind: str, response_id: str, output_index: int) -> str:
    """Output item ids derive from the response id: ``msg_<base>_<n>``, ``rs_…``, ``fc_…``."""
    return f"{kind}_{bare(response_id)}_{output_index}"


def message_item(item_id_: str, text: str, status: str = "completed") -> dict[str, Any]:
    part = {"type": "output_text", "text": text, "annotations": [], "logprobs": []}
    return {"id": item_id_, "type": "message", "role": "assistant", "status": status, "content": [part]}


def reasoning_item(item_id_: str, text: str) -> dict[str, Any]:
    return {"id": item_id_, "type": "reasoning", "summary": [],
            "content": [{"type": "reasoning_text", "text": text}], "status": "completed"}


def function_call_item(item_id_: str, call_id: str, name: str, arguments: str,
                       status: str = "completed") -> dict[str, Any]:
    return {"id": item_id_, "type": "function_call", "call_id": call_id, "name": name,
            "arguments": arguments, "status": status}


def output_items(response_id: str, content: Sequence[Part], *,
                 incomplete: bool = False) -> list[dict[str, Any]]:
    """Consecutive text parts make one message item, thinking parts one reasoning item; one item per call."""
    items: list[dict[str, Any]] = []
    for part in content:
        last = items[-1] if items else None
        n = len(items)
        if isinstance(part, TextPart):
            if last and last["type"] == "message":
                last["content"][0]["text"] += part.text
            else:
                items.append(message_item(item_id("msg", response_id, n), part.text,
                                          "incomplete" if incomplete else "completed"))
        elif isinstance(part, ThinkingPart):
            if last and last["type"] == "reasoning":
                last["content"][0]["text"] += part.text
            else:
                items.append(reasoning_item(item_id("rs", response_id, n), part.text))
        elif isinstance(part, ToolCallPart):
            fc_id = item_id("fc", response_id, n)
            items.append(function_call_item(fc_id, part.id, part.name, part.arguments))
    return items


def usage_json(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.prompt_tokens,
        "input_tokens_details": {"cached_tokens": usage.cached_tokens or 0, "cache_write_tokens": 0},
        "output_tokens": usage.completion_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens or 0},
        "total_tokens": usage.prompt_tokens + usage.completion_tokens,
    }


def response_json(req: ResponsesRequest, *, response_id: str, created_at: int, model: str, status: str,
                  output: list[dict[str, Any]], usage: Usage | None) -> dict[str, Any]:
    """A ``Response`` object echoing the request's settings (also the stream's snapshots)."""
    fmt = req.text.format if req.text and req.text.format else None
    tools = [{"type": "function", "name": t.name, "description": t.description, "parameters": t.parameters,
              "strict": t.strict} for t in req.tools or []]
    choice = req.tool_choice
    return {
        "id": response_id, "object": "response", "created_at": created_at, "status": status,
        "error": None,
        "incomplete_details": {"reason": "max_output_tokens"} if status == "incomplete" else None,
        "instructions": req.instructions, "max_output_tokens": req.max_output_tokens, "model": model,
        "output": output,
        "parallel_tool_calls": True if req.parallel_tool_calls is None else req.parallel_tool_calls,
        "previous_response_id": req.previous_response_id,
        "reasoning": {"effort": req.reasoning.effort if req.reasoning else None, "summary": None},
        "store": True if req.store is None else req.store,
        "temperature": req.temperature, "top_p": req.top_p,
        "text": {"format": fmt.model_dump(by_alias=True, exclude_none=True) if fmt else {"type": "text"}},
        "tool_choice": "auto" if choice is None else choice if isinstance(choice, str)
        else choice.model_dump(exclude_none=True),
        "tools": tools, "truncation": "disabled",
        "usage": usage_json(usage) if usage is not None else None,
        "user": req.user, "metadata": dict(req.metadata or {}),
    }


def to_response(resp: InternalResponse, req: ResponsesRequest) -> dict[str, Any]:
    response_id = with_prefix(resp.id, "response")
    incomplete = resp.finish_reason == "length"
    return response_json(req, response_id=response_id, created_at=resp.created, model=resp.model,
                         status="incomplete" if incomplete else "completed",
                         output=output_items(response_id, resp.content, incomplete=incomplete),
                         usage=resp.usage)
