"""Anthropic Messages: golden request mapping, Message rendering and stream events, SDK-validated."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from anthropic.types import Message, RawMessageStreamEvent

from isthmus.dialects import anthropic_messages
from isthmus.dialects.common import sse_event
from isthmus_contracts.internal import InternalResponse
from tests.unit.dialects.golden_support import (
    GOLDEN,
    assert_sdk_valid,
    cases,
    encode,
    expect,
    internal_json,
    load,
)


def _request(**extra: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "x"}], **extra}


@pytest.mark.parametrize("path", cases("anthropic", "req"), ids=lambda p: p.stem)
def test_request_maps_to_internal(path: Path) -> None:
    # given a Messages request body (and maybe an X-Session-Id header value)
    golden = load(path)
    # when it is parsed and mapped
    req = anthropic_messages.parse(golden["given"])
    internal = anthropic_messages.to_internal(req, header_session_id=golden.get("header_session_id"))
    # then the internal request is the golden one
    expect(path, "internal", internal_json(internal))


@pytest.mark.parametrize("path", cases("anthropic", "resp"), ids=lambda p: p.stem)
def test_response_renders_message(path: Path) -> None:
    # given an internal response
    resp = InternalResponse.model_validate(load(path)["given"])
    # when it is rendered
    body = anthropic_messages.to_message(resp)
    # then it is a valid anthropic Message equal to the golden
    assert_sdk_valid(Message, body)
    expect(path, "expected", body)


@pytest.mark.parametrize("path", cases("anthropic", "stream"), ids=lambda p: p.stem)
def test_stream_encodes_events(path: Path) -> None:
    # given a scripted list of internal stream events
    encoder = anthropic_messages.MessagesStreamEncoder()
    # when every event is fed and the stream is closed
    events = encode(encoder, load(path)["given"])
    # then every event is a valid raw stream event (or an error event) and the list is the golden one
    for event in events:
        if event["type"] == "error":
            assert set(event) == {"type", "error"} and set(event["error"]) == {"type", "message"}
        else:
            assert_sdk_valid(RawMessageStreamEvent, event)
    expect(path, "expected", events)


def test_block_indexes_count_across_kinds() -> None:
    # given the thinking + text + two tool calls stream
    encoder = anthropic_messages.MessagesStreamEncoder()
    events = encode(encoder, load(GOLDEN / "anthropic/stream_thinking_tools.json")["given"])
    # when the block starts are collected
    starts = [(e["index"], e["content_block"]["type"]) for e in events if e["type"] == "content_block_start"]
    # then indexes run 0..3 across thinking, text and tool_use blocks, and the thinking block is signed
    assert starts == [(0, "thinking"), (1, "text"), (2, "tool_use"), (3, "tool_use")]
    kinds = [e["delta"]["type"] for e in events if e["type"] == "content_block_delta" and e["index"] == 0]
    assert kinds[-1] == "signature_delta"


@pytest.mark.parametrize(("thinking", "enabled", "effort"), [
    ({"type": "enabled", "budget_tokens": 1024}, True, "low"),
    ({"type": "enabled", "budget_tokens": 1025}, True, "medium"),
    ({"type": "enabled", "budget_tokens": 8192}, True, "medium"),
    ({"type": "enabled", "budget_tokens": 8193}, True, "high"),
    ({"type": "disabled"}, False, None),
    (None, None, None)])
def test_thinking_budget_picks_effort(thinking: Any, enabled: bool | None, effort: str | None) -> None:
    # given a thinking config; when mapped
    internal = anthropic_messages.to_internal(anthropic_messages.parse(_request(thinking=thinking)))
    # then enable_thinking and reasoning_effort follow the budget
    assert (internal.enable_thinking, internal.reasoning_effort) == (enabled, effort)


@pytest.mark.parametrize(("choice", "mode"), [("auto", "auto"), ("any", "required"), ("none", "none")])
def test_tool_choice_modes(choice: str, mode: str) -> None:
    # given a tool_choice type; when mapped; then the internal mode matches (any -> required)
    req = anthropic_messages.parse(_request(tool_choice={"type": choice}))
    internal = anthropic_messages.to_internal(req)
    assert internal.tool_choice is not None and internal.tool_choice.mode == mode


def test_sse_framing_and_ping() -> None:
    # given a ping; when framed; then it is an event:/data: pair named by its type
    assert sse_event(anthropic_messages.ping_event()) == 'event: ping\ndata: {"type":"ping"}\n\n'
