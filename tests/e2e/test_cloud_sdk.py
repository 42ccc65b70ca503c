"""The official SDKs through the local edge to cloud aliases served by the fake providers on loopback: the
openai SDK calls an Anthropic-protocol alias and the anthropic SDK an OpenAI-protocol alias, whole and
streamed, tools included; the SDKs parse every answer into their own types. Providers are configured through
the edge's /admin/providers like an operator would."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.fake_providers import FakeProviders, put_providers

pytestmark = pytest.mark.e2e
KEY = "sk-e2e-" + uuid.uuid4().hex
WEATHER = {"type": "function", "function": {
    "name": "get_weather", "description": "Current weather for a city",
    "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}}}
CLAUDE_WEATHER = {"name": "get_weather", "description": "Current weather for a city",
                  "input_schema": WEATHER["function"]["parameters"]}


@pytest.fixture(scope="module", params=["asgi", "lambda"])
def gateway(request: pytest.FixtureRequest, ddb_tables: str, fake: FakeProviders,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[str, str]]:
    key_file: Path = tmp_path_factory.mktemp("edge-keys") / "provider.key"
    proc, base = start_edge(request.param, env={"ISTHMUS_LOCAL_KEY_FILE": str(key_file),
                                                "ISTHMUS_CLOUD_CATALOG_SECONDS": "0",
                                                "ISTHMUS_ROUTING_CACHE_SECONDS": "0"})
    tag = f"{request.param}{uuid.uuid4().hex[:4]}"
    try:
        providers = {
            f"claude-{tag}": {"template": "anthropic", "api_base": fake.anthropic_base, "api_key": KEY,
                              "published": [{"alias": f"{tag}:claude", "upstream_model": "claude-up",
                                             "capabilities": ["chat", "tools"]},
                                            {"alias": f"{tag}:claude-cut", "upstream_model": "claude-up-cut"}]},
            f"gpt-{tag}": {"template": "openai", "api_base": fake.openai_base, "api_key": KEY,
                           "published": [{"alias": f"{tag}:gpt", "upstream_model": "gpt-up"},
                                         {"alias": f"{tag}:gpt-limited", "upstream_model": "gpt-e429x99",
                                          "fallbacks": []}],
                           "max_retries": 0},
        }
        put_providers(base, providers)
        yield base, tag
    finally:
        stop(proc)


@pytest.fixture()
def oai(gateway: tuple[str, str]) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway[0]}/v1", api_key="dummy", max_retries=0, timeout=60)


@pytest.fixture()
def claude(gateway: tuple[str, str]) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway[0], api_key="dummy", max_retries=0, timeout=60)


def test_models_lists_the_cloud_aliases(oai: openai.OpenAI, gateway: tuple[str, str]) -> None:
    tag = gateway[1]
    models = {m.id: m for m in oai.models.list()}
    assert models[f"{tag}:claude"].owned_by == f"claude-{tag}"
    assert models[f"{tag}:gpt"].owned_by == f"gpt-{tag}"


def test_openai_sdk_to_anthropic_alias_whole_and_streamed(oai: openai.OpenAI, gateway: tuple[str, str]) -> None:
    alias = f"{gateway[1]}:claude"
    messages = [{"role": "system", "content": "be brief"}, {"role": "user", "content": "hello from openai"}]
    # when asked whole
    whole = oai.chat.completions.create(model=alias, messages=messages, max_tokens=16)
    # then the Anthropic answer comes back as a chat completion with the upstream usage
    assert whole.choices[0].message.content == "echo: hello from openai"
    assert whole.choices[0].finish_reason == "stop" and whole.model == alias
    assert whole.usage is not None and whole.usage.completion_tokens == 4 and whole.usage.prompt_tokens > 0
    # when streamed with usage
    chunks = list(oai.chat.completions.create(model=alias, messages=messages, max_tokens=16, stream=True,
                                              stream_options={"include_usage": True}))
    # then the text, one finish reason and the usage chunk
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == "echo: hello from openai"
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] == ["stop"]
    assert chunks[-1].usage is not None and chunks[-1].usage.completion_tokens == 4


def test_openai_sdk_tools_through_anthropic_alias(oai: openai.OpenAI, gateway: tuple[str, str]) -> None:
    alias = f"{gateway[1]}:claude"
    messages: list[dict] = [{"role": "user", "content": "weather in Paris?"}]
    first = oai.chat.completions.create(model=alias, messages=messages, tools=[WEATHER], max_tokens=32)
    call = first.choices[0].message.tool_calls[0]
    assert first.choices[0].finish_reason == "tool_calls"
    assert call.function.name == "get_weather" and json.loads(call.function.arguments) == {"city": "Paris"}
    streamed = list(oai.chat.completions.create(model=alias, messages=messages, tools=[WEATHER], max_tokens=32,
                                                stream=True))
    deltas = [tc for c in streamed if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert deltas and deltas[0].function.name == "get_weather"
    assert json.loads("".join(d.function.arguments or "" for d in deltas)) == {"city": "Paris"}
    messages += [first.choices[0].message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": "sunny"}]
    final = oai.chat.completions.create(model=alias, messages=messages, tools=[WEATHER], max_tokens=32)
    assert final.choices[0].message.content == "tool said: sunny"


def test_anthropic_sdk_to_openai_alias_whole_and_streamed(claude: anthropic.Anthropic,
                                                          gateway: tuple[str, str]) -> None:
    alias = f"{gateway[1]}:gpt"
    msg = claude.messages.create(model=alias, max_tokens=16, system="be brief",
                                 messages=[{"role": "user", "content": "hello from claude"}])
    assert msg.content[0].type == "text" and msg.content[0].text == "echo: hello from claude"
    assert msg.stop_reason == "end_turn" and msg.usage.output_tokens == 4 and msg.usage.input_tokens > 0
    with claude.messages.stream(model=alias, max_tokens=16,
                                messages=[{"role": "user", "content": "hello again"}]) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert final.content[0].text == "echo: hello again" and final.usage.output_tokens == 3


def test_anthropic_sdk_tools_through_openai_alias(claude: anthropic.Anthropic, gateway: tuple[str, str]) -> None:
    alias = f"{gateway[1]}:gpt"
    messages: list[dict] = [{"role": "user", "content": "weather in Paris?"}]
    first = claude.messages.create(model=alias, max_tokens=32, tools=[CLAUDE_WEATHER], messages=messages)
    use = next(b for b in first.content if b.type == "tool_use")
    assert first.stop_reason == "tool_use" and use.name == "get_weather" and use.input == {"city": "Paris"}
    with claude.messages.stream(model=alias, max_tokens=32, tools=[CLAUDE_WEATHER], messages=messages) as stream:
        streamed = stream.get_final_message()
    streamed_use = next(b for b in streamed.content if b.type == "tool_use")
    assert streamed_use.input == {"city": "Paris"} and streamed.stop_reason == "tool_use"
    messages += [{"role": "assistant", "content": [b.model_dump(exclude_none=True) for b in first.content]},
                 {"role": "user", "content": [{"type": "tool_result", "tool_use_id": use.id, "content": "sunny"}]}]
    final = claude.messages.create(model=alias, max_tokens=32, tools=[CLAUDE_WEATHER], messages=messages)
    assert final.content[0].text == "tool said: sunny"


def test_upstream_faults_in_the_callers_dialect(oai: openai.OpenAI, claude: anthropic.Anthropic,
                                               gateway: tuple[str, str]) -> None:
    tag = gateway[1]
    # a provider that keeps rate limiting: a 429 for the caller, in either dialect
    with pytest.raises(openai.RateLimitError):
        oai.chat.completions.create(model=f"{tag}:gpt-limited", messages=[{"role": "user", "content": "hi"}])
    with pytest.raises(anthropic.RateLimitError):
        claude.messages.create(model=f"{tag}:gpt-limited", max_tokens=8, messages=[{"role": "user", "content": "hi"}])
    # a stream cut after its first bytes: the deltas so far, then an in-band error the SDK raises
    with pytest.raises(openai.APIError):
        for _ in oai.chat.completions.create(model=f"{tag}:claude-cut", stream=True,
                                             messages=[{"role": "user", "content": "one two three"}]):
            pass
