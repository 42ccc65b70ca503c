"""Pure-logic stages of the agent's output pipeline, fed text in awkward chunks."""

from __future__ import annotations

import json

import pytest

from isthmus_contracts.internal import ReasoningDelta, TextDelta, ToolCallEvent
from local_runtime.agent.text_stream import (
    LoopGuard,
    OutputPipeline,
    StopMatcher,
    ThinkSplitter,
    ToolCallExtractor,
    held_suffix_len,
    parse_tool_call,
)


def chars(text: str) -> list[str]:
    return list(text)


Result = tuple[str, str, list[ToolCallEvent], OutputPipeline]


def run_pipeline(chunks: list[str], stops: list[str] | None = None, *, thinking_open: bool = False,
                 thinking_enabled: bool | None = None) -> Result:
    pipe = OutputPipeline(stops or [], thinking_open=thinking_open, thinking_enabled=thinking_enabled)
    events = [e for c in chunks for e in pipe.feed(c)] + pipe.flush()
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    reasoning = "".join(e.text for e in events if isinstance(e, ReasoningDelta))
    return text, reasoning, [e for e in events if isinstance(e, ToolCallEvent)], pipe


def test_held_suffix_is_the_longest_marker_prefix_at_the_end() -> None:
    assert held_suffix_len("hello </th", ["</think>"]) == 4
    assert held_suffix_len("hello", ["</think>"]) == 0
    assert held_suffix_len("a<", ["<tool_call>", "</think>"]) == 1


def test_stop_sequence_split_across_chunks_is_found_and_cut() -> None:
    # given a stop sequence arriving one character at a time
    matcher = StopMatcher(["END"])
    # when the text streams through
    out = "".join(matcher.feed(c) for c in chars("abc ENDxyz")) + matcher.flush()
    # then the text before it is released and nothing after
    assert out == "abc "
    assert matcher.matched == "END"


def test_stop_prefix_that_does_not_complete_is_released_at_the_end() -> None:
    matcher = StopMatcher(["STOP"])
    assert matcher.feed("go ST") == "go "
    assert matcher.feed("AR") == "STAR"
    assert matcher.feed("ST") == ""
    assert matcher.flush() == "ST"
    assert matcher.matched is None


def test_earliest_of_several_stop_sequences_wins() -> None:
    matcher = StopMatcher(["zz", "b"])
    assert matcher.feed("a b zz") == "a "
    assert matcher.matched == "b"


def test_think_block_goes_to_reasoning_and_markers_never_leak() -> None:
    splitter = ThinkSplitter()
    parts = [p for c in chars("<think>plan</think>answer") for p in splitter.feed(c)] + splitter.flush()
    reasoning = "".join(t for k, t in parts if k == "reasoning")
    text = "".join(t for k, t in parts if k == "text")
    assert (reasoning, text) == ("plan", "answer")


def test_template_opened_think_block_starts_in_reasoning() -> None:
    text, reasoning, _, _ = run_pipeline(chars("step 1\n</think>\n\nParis"), thinking_open=True)
    assert reasoning == "step 1\n"
    assert text == "\n\nParis"
    assert "think>" not in text


def test_thinking_off_but_only_reasoning_produced_still_gives_an_answer() -> None:
    text, reasoning, _, _ = run_pipeline(["<think>Paris</think>"], thinking_enabled=False)
    assert reasoning == "Paris"
    assert text == "Paris"


def test_tool_call_markup_becomes_a_call_and_leaves_the_text() -> None:
    raw = 'Let me check.<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
    text, _, calls, _ = run_pipeline(chars(raw))
    assert text == "Let me check."
    got = [(c.index, c.name, json.loads(c.arguments)) for c in calls]
    assert got == [(0, "get_weather", {"city": "Paris"})]


def test_two_tool_calls_are_indexed_in_order() -> None:
    raw = ('<tool_call>{"name": "a", "arguments": {}}</tool_call>\n'
           '<tool_call>{"name": "b", "arguments": {}}</tool_call>')
    _, _, calls, _ = run_pipeline([raw[:20], raw[20:]])
    assert [(c.index, c.name) for c in calls] == [(0, "a"), (1, "b")]


@pytest.mark.parametrize("truncated, expected", [
    ('{"name": "f", "arguments": {"city": "Par', {"city": "Par"}),
    ('{"name": "f", "arguments": {"a": 1, "b": [1, 2', {"a": 1, "b": [1, 2]}),
    ('{"name": "f", "arguments": {"a": 1,', {"a": 1}),
    ('{"name": "f", "arguments": {"a":', {"a": None}),
    ('{"name": "f", "arguments": {"a": 1, "b', {"a": 1}),
    ('{"name": "f", "arguments":', {}),
    ('{"name": "f"', {}),
])
def test_truncated_tool_call_json_is_recovered(truncated: str, expected: dict) -> None:
    # given output cut off inside a tool call (max_tokens hit)
    extractor = ToolCallExtractor()
    assert extractor.feed("<tool_call>" + truncated) == []
    # when generation ends
    out = extractor.flush()
    # then the call is closed and parsed
    assert len(extractor.calls) == 1 and extractor.calls[0].recovered
    assert json.loads(extractor.calls[0].arguments) == expected
    assert out == extractor.calls


def test_unreadable_tool_call_is_reported_back_as_text() -> None:
    text, _, calls, pipe = run_pipeline(["<tool_call>not json</tool_call>"])
    assert calls == []
    assert text == "<tool_call>not json</tool_call>"
    assert pipe.tools.unparsed == ["<tool_call>not json</tool_call>"]


def test_arguments_given_as_a_json_string_are_normalised() -> None:
    call = parse_tool_call('{"name": "f", "arguments": "{\\"x\\": 2}"}')
    assert call is not None and json.loads(call.arguments) == {"x": 2}


def test_stop_sequence_applies_before_think_and_tool_parsing() -> None:
    text, _, _, pipe = run_pipeline(chars("Hello###<tool_call>"), ["###"])
    assert text == "Hello"
    assert pipe.stop.matched == "###"


def test_loop_guard_fires_on_a_periodic_tail_only() -> None:
    guard = LoopGuard(window=12, max_period=3)
    assert not any(guard.feed(t) for t in range(12))
    assert any(guard.feed(t) for t in [7, 8] * 6)
    off = LoopGuard(window=4, enabled=False)
    assert not any(off.feed(1) for _ in range(10))
