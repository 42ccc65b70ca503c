"""Rendering internal messages through a chat template (a stand-in tokenizer; no model needed)."""

from __future__ import annotations

from typing import Any

import pytest

from isthmus_contracts.internal import Message, TextPart, Tool, ToolCallPart, ToolResultPart
from local_runtime.agent.prompt import build_prompt, to_chat_messages


class StrictTemplateTokenizer:
    """Behaves like a template that raises on kwargs it does not know."""

    chat_template = "strict"

    def __init__(self, rejects: set[str], opens_think: bool = False) -> None:
        self.rejects = rejects
        self.opens_think = opens_think
        self.calls: list[dict[str, Any]] = []

    def apply_chat_template(self, messages: list[dict[str, Any]], **kwargs: Any) -> str:
        self.calls.append(kwargs)
        bad = self.rejects & set(kwargs)
        if bad:
            raise TypeError(f"unexpected {bad}")
        return "|".join(m["content"] for m in messages) + ("<think>\n" if self.opens_think else "")

    def encode(self, text: str, add_special_tokens: bool = False) -> list[int]:
        return [ord(c) for c in text]


def user(text: str) -> Message:
    return Message(role="user", content=[TextPart(text=text)])


def test_rejected_template_kwargs_are_dropped_not_fatal() -> None:
    # given a template that rejects reasoning_effort
    tok = StrictTemplateTokenizer(rejects={"reasoning_effort"})
    # when both options are requested
    prompt = build_prompt(tok, [user("hi")], [], enable_thinking=True, reasoning_effort="high")
    # then the render succeeds without the rejected one and keeps the other
    assert prompt.text == "hi"
    assert tok.calls[-1]["enable_thinking"] is True and "reasoning_effort" not in tok.calls[-1]


def test_template_that_rejects_everything_optional_still_renders() -> None:
    tok = StrictTemplateTokenizer(rejects={"reasoning_effort", "enable_thinking"})
    assert build_prompt(tok, [user("a")], [], enable_thinking=False, reasoning_effort="low").text == "a"


def test_template_failure_without_options_is_a_value_error() -> None:
    tok = StrictTemplateTokenizer(rejects={"add_generation_prompt"})
    with pytest.raises(ValueError, match="chat template"):
        build_prompt(tok, [user("a")], [])


def test_generation_prompt_opening_think_is_detected() -> None:
    prompt = build_prompt(StrictTemplateTokenizer(set(), opens_think=True), [user("a")], [Tool(name="f")])
    assert prompt.thinking_open and prompt.tokens[0] == ord("a")


def test_tool_calls_and_results_map_to_chat_template_messages() -> None:
    messages = [
        user("weather?"),
        Message(role="assistant", content=[ToolCallPart(id="c1", name="w", arguments='{"city": "Paris"}')]),
        Message(role="tool", content=[ToolResultPart(tool_call_id="c1", content="sunny")]),
    ]
    chat = to_chat_messages(messages)
    assert chat[1]["tool_calls"][0]["function"] == {"name": "w", "arguments": {"city": "Paris"}}
    assert chat[2] == {"role": "tool", "content": "sunny", "tool_call_id": "c1"}
