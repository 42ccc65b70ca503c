"""OpenAI and Anthropic provider backends against the fake providers on 127.0.0.1: request rewriting, answers
and streams mapped to the internal model, tools included."""

from __future__ import annotations

import asyncio
import json
from typing import Any

import pytest

from isthmus.adapters.cloud.anthropic_provider import AnthropicProviderBackend
from isthmus.adapters.cloud.openai_provider import OpenAIProviderBackend
from isthmus.ports.providers import ProviderTarget
from isthmus_contracts.internal import (
    FinishEvent,
    InternalRequest,
    Message,
    StartEvent,
    TextDelta,
    TextPart,
    Tool,
    ToolCallEvent,
    ToolCallPart,
    ToolResultPart,
    UsageEvent,
)
from tests.support.fake_providers import FakeProviders

pytestmark = pytest.mark.integration


def target(fake: FakeProviders, protocol: str, upstream: str, **kw: Any) -> ProviderTarget:
    base = fake.anthropic_base if protocol == "anthropic" else fake.openai_base
    return ProviderTarget(provider_id=f"fake-{protocol}", protocol=protocol, api_base=base, alias=f"x:{upstream}",
                          upstream_model=upstream, api_key="sk-test-123", **kw)


def backend(fake: FakeProviders, protocol: str, upstream: str, **kw: Any) -> Any:
    t = target(fake, protocol, upstream, **kw)
    return AnthropicProviderBackend(t) if protocol == "anthropic" else OpenAIProviderBackend(t)


def ask(text: str = "hello there world", **kw: Any) -> InternalRequest:
    return InternalRequest(model="alias-x", messages=[Message(role="system", content=[TextPart(text="be brief")]),
                                                      Message(role="user", content=[TextPart(text=text)])], **kw)


WEATHER = Tool(name="get_weather", description="weather", parameters={
    "type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]})


async def collect(b: Any, request: InternalRequest) -> list[Any]:
    return [e async for e in b.stream(request)]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_whole_answer_rewrites_model_and_maps_usage(fake: FakeProviders, protocol: str) -> None:
    # given a provider backend whose alias maps to an upstream model
    b = backend(fake, protocol, f"whole-{protocol}")
    # when a request with Isthmus-only fields is answered whole
    resp = asyncio.run(b.generate(ask(session_id="s-1", enable_thinking=False)))
    # then the upstream saw its own model name and none of the Isthmus-only fields
    sent = fake.last(f"whole-{protocol}")["body"]
    assert sent["model"] == f"whole-{protocol}"
    assert "session_id" not in sent and "enable_thinking" not in sent
    # and the answer is internal, with the upstream's usage and the alias as model
    assert resp.model == "alias-x"
    assert resp.content == [TextPart(text="echo: hello there world")]
    assert resp.finish_reason == "stop"
    assert resp.usage.prompt_tokens > 0 and resp.usage.completion_tokens == 4


def test_openai_stream_forces_include_usage(fake: FakeProviders) -> None:
    # given an OpenAI-protocol backend
    b = backend(fake, "openai", "stream-openai")
    # when streamed
    events = asyncio.run(collect(b, ask()))
    # then include_usage was forced upstream and the events carry start, text, usage and finish
    assert fake.last("stream-openai")["body"]["stream_options"] == {"include_usage": True}
    assert isinstance(events[0], StartEvent)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "echo: hello there world"
    usage = [e for e in events if isinstance(e, UsageEvent)]
    assert usage and usage[0].usage.completion_tokens == 4
    assert isinstance(events[-1], FinishEvent) and events[-1].reason == "stop"


def test_anthropic_headers_and_system(fake: FakeProviders) -> None:
    # given an Anthropic-protocol backend
    b = backend(fake, "anthropic", "hdr-anthropic")
    # when called
    asyncio.run(b.generate(ask()))
    # then x-api-key and anthropic-version were sent, the system prompt hoisted, max_tokens set
    seen = fake.last("hdr-anthropic")
    assert seen["headers"]["x-api-key"] == "sk-test-123" and seen["headers"]["anthropic-version"]
    assert seen["body"]["system"] == "be brief" and seen["body"]["max_tokens"] > 0
    assert [m["role"] for m in seen["body"]["messages"]] == ["user"]


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_tool_call_round_trip(fake: FakeProviders, protocol: str) -> None:
    # given a tool the fake provider always calls first
    b = backend(fake, protocol, f"tools-{protocol}")
    first = ask("weather in Paris?", tools=[WEATHER])
    # when answered whole and streamed
    resp = asyncio.run(b.generate(first))
    events = asyncio.run(collect(b, first))
    # then both carry one complete call with its JSON arguments
    call = next(p for p in resp.content if isinstance(p, ToolCallPart))
    assert call.name == "get_weather" and json.loads(call.arguments) == {"city": "Paris"}
    assert resp.finish_reason == "tool_calls"
    streamed = [e for e in events if isinstance(e, ToolCallEvent)]
    assert len(streamed) == 1 and json.loads(streamed[0].arguments) == {"city": "Paris"}
    assert isinstance(events[-1], FinishEvent) and events[-1].reason == "tool_calls"
    # when the tool's result goes back
    follow = first.model_copy(update={"messages": [
        *first.messages, Message(role="assistant", content=[call]),
        Message(role="tool", content=[ToolResultPart(tool_call_id=call.id, content="sunny")])]})
    final = asyncio.run(b.generate(follow))
    # then the provider saw the result (as a tool message / tool_result block) and answers with text
    assert final.content == [TextPart(text="tool said: sunny")]
