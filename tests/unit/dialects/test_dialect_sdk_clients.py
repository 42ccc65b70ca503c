"""The official SDK clients read our SSE streams: framed goldens are served over an in-memory transport."""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import anthropic
import httpx
import openai
import pytest

from isthmus.dialects import anthropic_messages, openai_chat, openai_responses
from isthmus.dialects.common import SSE_DONE, sse_data, sse_event
from isthmus.dialects.openai_responses_stream import ResponsesStreamEncoder
from tests.unit.dialects.golden_support import GOLDEN, encode, load


def _transport(body: str, http: Any = httpx) -> Any:
    """An in-memory HTTP client answering every request with ``body`` as an event stream."""

    def handler(request: Any) -> Any:
        return http.Response(200, headers={"content-type": "text/event-stream"}, content=body.encode())

    return http.Client(transport=http.MockTransport(handler))


def _openai(body: str) -> openai.OpenAI:
    return openai.OpenAI(api_key="k", base_url="http://isthmus.test/v1", http_client=_transport(body),
                         max_retries=0)


def _anthropic(body: str) -> anthropic.Anthropic:
    # this anthropic SDK runs on httpx2 (and rejects httpx objects); older ones run on httpx
    http = pytest.importorskip("httpx2") if _anthropic_uses_httpx2() else httpx
    return anthropic.Anthropic(api_key="k", base_url="http://isthmus.test",
                               http_client=_transport(body, http), max_retries=0)


def _anthropic_uses_httpx2() -> bool:
    from anthropic import _base_client

    return "httpx2" in vars(_base_client)


def _chat_body(name: str) -> str:
    golden = load(GOLDEN / "openai_chat" / f"{name}.json")
    encoder = openai_chat.ChatStreamEncoder(include_usage=golden["include_usage"])
    return "".join(sse_data(c) for c in encode(encoder, golden["given"])) + SSE_DONE


def _events_body(events: Iterable[dict[str, Any]]) -> str:
    return "".join(sse_event(e) for e in events)


CHAT_ARGS: dict[str, Any] = {"model": "qwen3-8b", "messages": [{"role": "user", "content": "x"}],
                             "stream": True}


def test_openai_client_reassembles_chat_stream() -> None:
    # given the thinking + tools chat stream served as SSE
    client = _openai(_chat_body("stream_thinking_tools"))
    # when the openai client streams it
    chunks = list(client.chat.completions.create(**CHAT_ARGS))
    # then text, tool calls and finish reason reassemble
    deltas = [c.choices[0].delta for c in chunks if c.choices]
    assert "".join(d.content or "" for d in deltas) == "Checking."
    calls = [t for d in deltas for t in d.tool_calls or []]
    assert [(t.index, t.id, t.function and t.function.name) for t in calls] == [
        (0, "call_a", "get_weather"), (1, "call_b", "get_weather")]
    assert chunks[-1].choices[0].finish_reason == "tool_calls"


def test_openai_client_reads_usage_chunk() -> None:
    # given a stream with include_usage; when streamed; then the last chunk carries usage and no choices
    chunks = list(_openai(_chat_body("stream_text_usage")).chat.completions.create(**CHAT_ARGS))
    assert chunks[-1].choices == [] and chunks[-1].usage is not None
    details = chunks[-1].usage.prompt_tokens_details
    assert details is not None and details.cached_tokens == 24


def test_openai_client_raises_on_in_band_error() -> None:
    # given a stream that fails mid-way; when streamed; then the client raises the in-band error
    with pytest.raises(openai.APIError, match="node agent went away"):
        list(_openai(_chat_body("stream_error")).chat.completions.create(**CHAT_ARGS))


def _anthropic_body(name: str) -> str:
    golden = load(GOLDEN / "anthropic" / f"{name}.json")
    events = encode(anthropic_messages.MessagesStreamEncoder(), golden["given"])
    return _events_body([anthropic_messages.ping_event(), *events])


MESSAGES_ARGS: dict[str, Any] = {"model": "claude-local", "max_tokens": 100,
                                 "messages": [{"role": "user", "content": "x"}]}


def test_anthropic_client_builds_final_message_from_stream() -> None:
    # given the thinking + tools Anthropic stream (after a ping) served as SSE
    client = _anthropic(_anthropic_body("stream_thinking_tools"))
    # when the anthropic client accumulates it
    with client.messages.stream(**MESSAGES_ARGS) as stream:
        message = stream.get_final_message()
    # then the final message has a signed thinking block, the text and both parsed tool inputs
    kinds = [b.type for b in message.content]
    assert kinds == ["thinking", "text", "tool_use", "tool_use"]
    thinking, _, first, second = message.content
    assert thinking.type == "thinking" and thinking.thinking == "Need both cities." and thinking.signature
    assert first.type == "tool_use" and first.input == {"city": "Paris"}
    assert second.type == "tool_use" and second.input == {"city": "Rome"}
    assert message.stop_reason == "tool_use" and message.usage.output_tokens == 40


def test_anthropic_client_raises_on_error_event() -> None:
    # given a stream that fails mid-way; when accumulated; then the client raises the error
    client = _anthropic(_anthropic_body("stream_error"))
    with pytest.raises(anthropic.APIError, match="node agent overloaded"), \
            client.messages.stream(**MESSAGES_ARGS) as stream:
        stream.get_final_message()


def _responses_body(name: str) -> str:
    golden = load(GOLDEN / "responses" / f"{name}.json")
    encoder = ResponsesStreamEncoder(openai_responses.parse(golden["request"]))
    return _events_body(encode(encoder, golden["given"]))


def test_openai_client_accumulates_responses_stream() -> None:
    # given the reasoning + tools Responses stream served as SSE
    client = _openai(_responses_body("stream_reasoning_tools"))
    # when the openai client's stream helper accumulates it
    with client.responses.stream(model="qwen3-8b", input="x") as stream:
        response = stream.get_final_response()
    # then the final response has the text and both function calls
    assert response.output_text == "Checking."
    calls = [(i.call_id, i.arguments) for i in response.output if i.type == "function_call"]
    assert calls == [("call_a", '{"city":"Paris"}'), ("call_b", '{"city":"Rome"}')]
    assert response.usage is not None and response.usage.output_tokens == 40
