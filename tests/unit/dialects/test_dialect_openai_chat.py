"""OpenAI chat completions: golden request mapping, responses and stream chunks, SDK-validated."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from pydantic import TypeAdapter

from isthmus.dialects import openai_chat
from isthmus.dialects.common import SSE_DONE, sse_data
from isthmus_contracts.internal import InternalResponse, StreamEvent
from tests.unit.dialects.golden_support import assert_sdk_valid, cases, expect, internal_json, load

EVENTS: TypeAdapter[list[StreamEvent]] = TypeAdapter(list[StreamEvent])
REASONING = frozenset({"reasoning_content"})


@pytest.mark.parametrize("path", cases("openai_chat", "req"), ids=lambda p: p.stem)
def test_request_maps_to_internal(path: Path) -> None:
    # given a chat completions request body (and maybe an X-Session-Id header value)
    golden = load(path)
    # when it is parsed and mapped
    req = openai_chat.parse(golden["given"])
    internal = openai_chat.to_internal(req, header_session_id=golden.get("header_session_id"))
    # then the internal request is the golden one
    expect(path, "internal", internal_json(internal))


@pytest.mark.parametrize("path", cases("openai_chat", "resp"), ids=lambda p: p.stem)
def test_response_renders_chat_completion(path: Path) -> None:
    # given an internal response
    resp = InternalResponse.model_validate(load(path)["given"])
    # when it is rendered
    body = openai_chat.to_chat_completion(resp)
    # then it is a valid ChatCompletion equal to the golden
    assert_sdk_valid(ChatCompletion, body, allowed_extra=REASONING)
    expect(path, "expected", body)


@pytest.mark.parametrize("path", cases("openai_chat", "stream"), ids=lambda p: p.stem)
def test_stream_encodes_chunks(path: Path) -> None:
    # given a scripted list of internal stream events
    golden = load(path)
    encoder = openai_chat.ChatStreamEncoder(include_usage=golden["include_usage"])
    # when every event is fed and the stream is closed
    chunks = [c for e in EVENTS.validate_python(golden["given"]) for c in encoder.feed(e)] + encoder.close()
    # then every chunk is a valid ChatCompletionChunk (or an in-band error) and the list is the golden one
    for chunk in chunks:
        if "error" in chunk:
            assert set(chunk["error"]) == {"message", "type", "param", "code"}
        else:
            assert_sdk_valid(ChatCompletionChunk, chunk, allowed_extra=REASONING)
    expect(path, "expected", chunks)


def test_stream_tool_call_deltas_carry_their_own_index() -> None:
    # given an encoder fed three tool calls
    encoder = openai_chat.ChatStreamEncoder()
    calls = [{"type": "tool_call", "index": i, "id": f"call_{i}", "name": "f", "arguments": "{}"}
             for i in range(3)]
    events = [{"type": "start", "id": "x", "model": "m", "created": 1}, *calls]
    # when they are encoded
    chunks = [c for e in EVENTS.validate_python(events) for c in encoder.feed(e)]
    # then each delta names its call by index 0, 1, 2
    indexes = [c["choices"][0]["delta"]["tool_calls"][0]["index"] for c in chunks[1:]]
    assert indexes == [0, 1, 2]


def test_usage_chunk_waits_for_close_when_backend_sends_no_usage() -> None:
    # given an include_usage stream that finishes without a usage event
    encoder = openai_chat.ChatStreamEncoder(include_usage=True)
    events = [{"type": "start", "id": "x", "model": "m", "created": 1, "prompt_tokens": 3},
              {"type": "finish", "reason": "stop"}]
    fed = [c for e in EVENTS.validate_python(events) for c in encoder.feed(e)]
    # when the stream is closed
    tail = encoder.close()
    # then the usage chunk (choices: []) comes last, exactly once
    assert [c.get("usage") for c in fed] == [None, None]
    assert tail[0]["choices"] == [] and tail[0]["usage"]["prompt_tokens"] == 3
    assert encoder.close() == []


@pytest.mark.parametrize(("choice", "mode", "name"), [
    ("auto", "auto", None), ("none", "none", None), ("required", "required", None),
    ({"type": "function", "function": {"name": "f"}}, "tool", "f")])
def test_tool_choice_variants(choice: object, mode: str, name: str | None) -> None:
    # given a request with a tool_choice
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}], "tool_choice": choice}
    req = openai_chat.parse(body)
    # when mapped
    tool_choice = openai_chat.to_internal(req).tool_choice
    # then the internal tool choice matches
    assert tool_choice is not None and (tool_choice.mode, tool_choice.name) == (mode, name)


def test_sse_framing() -> None:
    # given a chunk; when framed; then it is one data: event and the stream ends with [DONE]
    assert sse_data({"a": 1}) == 'data: {"a":1}\n\n'
    assert SSE_DONE == "data: [DONE]\n\n"


def test_assistant_refusal_part_is_kept_as_text() -> None:
    # given an assistant turn whose content is a refusal part
    refusal = {"role": "assistant", "content": [{"type": "refusal", "refusal": "No."}]}
    body = {"model": "m", "messages": [{"role": "user", "content": "x"}, refusal]}
    # when mapped
    internal = openai_chat.to_internal(openai_chat.parse(body))
    # then the refusal is the assistant's text
    assert internal.messages[1].text() == "No."
