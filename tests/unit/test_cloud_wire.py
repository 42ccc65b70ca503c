"""Pure mapping of the cloud backends: internal request -> provider body, provider answer / stream -> internal."""

from __future__ import annotations

import json
from typing import Any

from isthmus.adapters.cloud import anthropic_provider, openai_provider, transport
from isthmus.ports.providers import ProviderTarget
from isthmus_contracts.internal import (
    FinishEvent,
    ImagePart,
    InternalRequest,
    Message,
    ReasoningDelta,
    Sampling,
    StartEvent,
    TextDelta,
    TextPart,
    ThinkingPart,
    Tool,
    ToolCallEvent,
    ToolCallPart,
    ToolChoice,
    ToolResultPart,
    UsageEvent,
)

TOOL = Tool(name="lookup", parameters={"type": "object", "properties": {"q": {"type": "string"}}})


def conversation() -> InternalRequest:
    return InternalRequest(
        model="alias", session_id="s", enable_thinking=True, tools=[TOOL],
        tool_choice=ToolChoice(mode="tool", name="lookup"), sampling=Sampling(max_tokens=50, temperature=1.5, top_k=5),
        messages=[Message(role="system", content=[TextPart(text="sys")]),
                  Message(role="user", content=[TextPart(text="look"), ImagePart(url="data:image/png;base64,QUJD")]),
                  Message(role="assistant", content=[ThinkingPart(text="hm"), ToolCallPart(id="c1", name="lookup",
                                                                                            arguments='{"q": "x"}')]),
                  Message(role="tool", content=[ToolResultPart(tool_call_id="c1", content="found")]),
                  Message(role="user", content=[TextPart(text="thanks")])])


def test_anthropic_body_hoists_system_and_merges_tool_results_into_user_turns() -> None:
    body = anthropic_provider.to_body(conversation(), "claude-up", stream=True)
    assert body["model"] == "claude-up" and body["system"] == "sys" and body["stream"] is True
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][0]["content"][1]["source"] == {"type": "base64", "media_type": "image/png", "data": "QUJD"}
    assert body["messages"][1]["content"] == [{"type": "tool_use", "id": "c1", "name": "lookup", "input": {"q": "x"}}]
    assert body["messages"][2]["content"][0]["type"] == "tool_result"
    assert body["messages"][2]["content"][1] == {"type": "text", "text": "thanks"}
    assert body["tool_choice"] == {"type": "tool", "name": "lookup"}
    assert body["thinking"]["type"] == "enabled" and body["max_tokens"] > body["thinking"]["budget_tokens"]
    assert "temperature" not in body and body["top_k"] == 5 and "session_id" not in body


def test_openai_body_keeps_roles_and_drops_isthmus_fields() -> None:
    body = openai_provider.to_body(conversation(), "gpt-up", stream=False)
    assert body["model"] == "gpt-up" and "stream" not in body and "stream_options" not in body
    assert [m["role"] for m in body["messages"]] == ["system", "user", "assistant", "tool", "user"]
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64,QUJD"}}
    assert body["messages"][1]["content"][1] == image
    assert body["messages"][2]["tool_calls"][0]["function"] == {"name": "lookup", "arguments": '{"q": "x"}'}
    assert body["tool_choice"] == {"type": "function", "function": {"name": "lookup"}}
    assert not {"session_id", "enable_thinking", "top_k", "metadata"} & set(body)


def test_anthropic_stream_decoding_with_thinking_and_a_tool() -> None:
    decoder = anthropic_provider._StreamDecoder("alias")
    frames: list[dict[str, Any]] = [
        {"type": "message_start", "message": {"id": "m1", "usage": {"input_tokens": 7, "cache_read_input_tokens": 3}}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "thinking", "thinking": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "hmm"}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {"type": "tool_use", "id": "t1", "name": "f"}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": '{"a":'}},
        {"type": "content_block_delta", "index": 1, "delta": {"type": "input_json_delta", "partial_json": " 1}"}},
        {"type": "content_block_stop", "index": 1},
        {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 9}},
        {"type": "message_stop"},
    ]
    events = [e for f in frames for e in decoder.feed(None, f)]
    assert isinstance(events[0], StartEvent) and events[0].prompt_tokens == 10 and events[0].cached_tokens == 3
    assert events[1] == ReasoningDelta(text="hmm")
    assert events[2] == ToolCallEvent(index=0, id="t1", name="f", arguments='{"a": 1}')
    assert isinstance(events[3], UsageEvent) and events[3].usage.completion_tokens == 9
    assert events[4] == FinishEvent(reason="tool_calls")


def test_openai_stream_decoding_assembles_tool_calls() -> None:
    decoder = openai_provider._StreamDecoder("alias")
    chunks: list[dict[str, Any]] = [
        {"id": "c", "choices": [{"delta": {"role": "assistant", "content": "Hi"}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "id": "x",
                                                "function": {"name": "f", "arguments": "{"}}]}}]},
        {"choices": [{"delta": {"tool_calls": [{"index": 0, "function": {"arguments": "}"}}]},
                      "finish_reason": "tool_calls"}]},
        {"choices": [], "usage": {"prompt_tokens": 3, "completion_tokens": 2}},
    ]
    events = [e for c in chunks for e in decoder.feed(c)] + decoder.close()
    assert isinstance(events[0], StartEvent) and events[1] == TextDelta(text="Hi")
    assert events[2] == ToolCallEvent(index=0, id="x", name="f", arguments="{}")
    assert isinstance(events[3], UsageEvent) and events[3].usage.prompt_tokens == 3
    assert events[4] == FinishEvent(reason="tool_calls")


def test_error_mapping() -> None:
    target = ProviderTarget(provider_id="p", protocol="openai", api_base="http://x", alias="a", upstream_model="m")
    raw = json.dumps({"error": {"message": "x" * 2000}}).encode()
    assert transport.map_status(target, 422, raw).status == 400
    assert len(transport.map_status(target, 400, raw).message) <= 500
    assert transport.map_status(target, 403, raw).status == 502
    assert transport.map_status(target, 404, b"").status == 404
    limited = transport.map_status(target, 429, b"{}", {"retry-after": "2.5"})
    assert limited.status == 429 and limited.headers == {"Retry-After": "3"}
    assert transport.map_status(target, 503, b"{}").status == 502
    assert "sk-" not in repr(ProviderTarget(provider_id="p", protocol="openai", api_base="http://x", alias="a",
                                            upstream_model="m", api_key="sk-hidden"))
