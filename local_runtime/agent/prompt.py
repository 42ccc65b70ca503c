"""Internal messages -> chat-template prompt tokens.

``enable_thinking`` and ``reasoning_effort`` go to the template as kwargs. Templates that reject a kwarg
(strict ones raise on unknown variables) are retried without it: an option the model does not
understand must never fail the request.
"""

from __future__ import annotations

import json
import logging
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any

from isthmus_contracts.internal import (
    ImagePart,
    Message,
    ReasoningEffort,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCallPart,
    ToolResultPart,
)

log = logging.getLogger("isthmus.agent.prompt")


@dataclass
class Prompt:
    text: str
    tokens: list[int]
    thinking_open: bool  # the template's generation prompt ends inside an open <think> block
    # Text appended after the generation prompt that the model continues from (a forced tool call's
    # opening markup); the output pipeline reads it as if the model had written it.
    prefill: str = ""
    forced_tool: bool = False


def _arguments(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def to_chat_messages(messages: list[Message]) -> list[dict[str, Any]]:
    """HF chat-template messages: text joined, tool calls on the assistant turn, results as tool turns."""
    out: list[dict[str, Any]] = []
    for message in messages:
        text = "".join(p.text for p in message.content if isinstance(p, TextPart))
        if any(isinstance(p, ImagePart) for p in message.content):
            text += "" if text else "[image]"  # text-only models: keep the turn, say what was there
        calls = [p for p in message.content if isinstance(p, ToolCallPart)]
        results = [p for p in message.content if isinstance(p, ToolResultPart)]
        thinking = "".join(p.text for p in message.content if isinstance(p, ThinkingPart))
        for result in results:
            out.append({"role": "tool", "content": result.content, "tool_call_id": result.tool_call_id})
        if results and not text and not calls:
            continue
        entry: dict[str, Any] = {"role": message.role, "content": text}
        if message.name:
            entry["name"] = message.name
        if calls:
            entry["tool_calls"] = [{"id": c.id, "type": "function",
                                    "function": {"name": c.name, "arguments": _arguments(c.arguments)}}
                                   for c in calls]
        if thinking:
            entry["reasoning_content"] = thinking
        out.append(entry)
    return out


def to_chat_tools(tools: list[Tool]) -> list[dict[str, Any]] | None:
    if not tools:
        return None
    return [{"type": "function", "function": {"name": t.name, "description": t.description or "",
                                              "parameters": t.parameters}} for t in tools]


def render(tokenizer: Any, messages: list[Message], tools: list[Tool], *, enable_thinking: bool | None,
           reasoning_effort: ReasoningEffort | None) -> str:
    chat = to_chat_messages(messages)
    kwargs: dict[str, Any] = {}
    if enable_thinking is not None:
        kwargs["enable_thinking"] = enable_thinking
    if reasoning_effort is not None:
        kwargs["reasoning_effort"] = reasoning_effort
    chat_tools = to_chat_tools(tools)
    if getattr(tokenizer, "chat_template", None) is None:
        return "".join(f"{m['role']}: {m['content']}\n" for m in chat) + "assistant: "
    # Drop optional kwargs one at a time (effort first) until the template accepts the call.
    attempts = [dict(kwargs)]
    for key in ("reasoning_effort", "enable_thinking"):
        if key in kwargs:
            kwargs.pop(key)
            attempts.append(dict(kwargs))
    last_error: Exception | None = None
    for attempt in attempts:
        try:
            text = tokenizer.apply_chat_template(chat, tools=chat_tools, add_generation_prompt=True,
                                                 tokenize=False, **attempt)
            return str(text)
        except Exception as exc:  # jinja raises many types; any of them means "try simpler"
            log.info("chat template rejected kwargs %s: %s", sorted(attempt), exc)
            last_error = exc
    raise ValueError(f"chat template failed: {last_error}")


def tool_call_prefill(forced_tool: str, *, thinking_open: bool, tools: Sequence[Tool] = ()) -> str:
    """The opening of a ``<tool_call>`` the model must complete: with the name when one tool is forced
    (``forced_tool``), up to the name's opening quote when any tool will do (``""``). An open think block
    is closed first: a forced call has nothing to reason about in the output. When the forced tool takes
    exactly one required argument, its key is written too (small models otherwise wander off the schema)."""
    head = "</think>\n\n" if thinking_open else ""
    if not forced_tool:
        return f'{head}<tool_call>\n{{"name": "'
    opening = f'{head}<tool_call>\n{{"name": {json.dumps(forced_tool)}, "arguments": '
    tool = next((t for t in tools if t.name == forced_tool), None)
    required = (tool.parameters.get("required") or []) if tool else []
    if len(required) == 1:
        prop = (tool.parameters.get("properties") or {}).get(required[0], {}) if tool else {}
        opening += "{" + json.dumps(required[0]) + ": " + ('"' if prop.get("type") == "string" else "")
    return opening


def build_prompt(
    tokenizer: Any, messages: list[Message], tools: list[Tool], *,
    enable_thinking: bool | None = None, reasoning_effort: ReasoningEffort | None = None,
    forced_tool: str | None = None,
) -> Prompt:
    """``forced_tool``: None lets the model choose; a tool name forces that call; "" forces some call."""
    text = render(tokenizer, messages, tools, enable_thinking=enable_thinking,
                  reasoning_effort=reasoning_effort)
    thinking_open = text.rstrip().endswith("<think>")
    prefill = tool_call_prefill(forced_tool, thinking_open=thinking_open, tools=tools) \
        if forced_tool is not None else ""
    tokens = list(tokenizer.encode(text + prefill, add_special_tokens=False))
    return Prompt(text=text + prefill, tokens=tokens, thinking_open=thinking_open, prefill=prefill,
                  forced_tool=forced_tool is not None)
