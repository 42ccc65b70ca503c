"""The official openai and anthropic SDKs, unmodified (base URL only), against the edge and the real
SmolLM2-135M node agent: whole and streamed answers, session prefix reuse, a tool-call round trip."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from tests.conftest import SharedEdges
from tests.support.agents import AgentProcess

pytestmark = [pytest.mark.e2e, pytest.mark.slow]

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


@pytest.fixture(scope="module", params=["asgi", "lambda"])
def gateway(request: pytest.FixtureRequest, smol_agent: AgentProcess, shared_edges: SharedEdges) -> str:
    # the same edge as test_bad_input_edge's (only requests are sent to it)
    return shared_edges.get(request.param, {"ISTHMUS_DEFAULT_AGENT_URL": smol_agent.base})


@pytest.fixture()
def oai(gateway: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{gateway}/v1", api_key="dummy", max_retries=0, timeout=120)


@pytest.fixture()
def claude(gateway: str) -> anthropic.Anthropic:
    return anthropic.Anthropic(base_url=gateway, api_key="dummy", max_retries=0, timeout=120)


def test_openai_chat_whole_and_streamed(oai: openai.OpenAI) -> None:
    # given a short question
    messages = [{"role": "user", "content": "What is the capital of France?"}]
    # when asked whole
    whole = oai.chat.completions.create(model="default", messages=messages, max_tokens=8)
    # then a real answer with usage
    assert whole.choices[0].message.content
    assert whole.usage is not None and whole.usage.prompt_tokens > 0 and whole.usage.completion_tokens > 0
    # when streamed, with usage
    chunks = list(oai.chat.completions.create(model="default", messages=messages, max_tokens=8,
                                              stream=True, stream_options={"include_usage": True}))
    # then role first, text deltas, a finish reason, then the usage chunk
    assert chunks[0].choices[0].delta.role == "assistant"
    text = "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    assert text.strip()
    assert [c.choices[0].finish_reason for c in chunks if c.choices and c.choices[0].finish_reason] in (["stop"],
                                                                                                         ["length"])
    assert chunks[-1].usage is not None and chunks[-1].choices == []


def test_second_turn_of_a_session_reports_cached_tokens(oai: openai.OpenAI, gateway: str) -> None:
    session = f"e2e-{gateway.rsplit(':', 1)[1]}"
    history: list[dict[str, str]] = [
        {"role": "system", "content": "You are a helpful assistant who answers in one short sentence."},
        {"role": "user", "content": "Name a large city in France."},
    ]
    first = oai.chat.completions.create(model="default", messages=history, max_tokens=8,
                                        extra_body={"session_id": session})
    history += [{"role": "assistant", "content": first.choices[0].message.content or ""},
                {"role": "user", "content": "And one in Italy?"}]
    second = oai.chat.completions.create(model="default", messages=history, max_tokens=8,
                                         extra_body={"session_id": session})
    assert second.usage is not None and second.usage.prompt_tokens_details is not None
    assert (second.usage.prompt_tokens_details.cached_tokens or 0) > 0


def test_openai_tool_call_round_trip(oai: openai.OpenAI) -> None:
    # given a tool the model must call
    messages: list[dict] = [{"role": "user", "content": "What is the weather in Paris?"}]
    # when the client forces the call
    first = oai.chat.completions.create(model="default", messages=messages, tools=[WEATHER_TOOL],
                                        tool_choice={"type": "function", "function": {"name": "get_weather"}},
                                        max_tokens=24)
    # then the answer is a tool call with JSON arguments and finish_reason tool_calls
    choice = first.choices[0]
    assert choice.finish_reason == "tool_calls"
    call = choice.message.tool_calls[0]
    assert call.function.name == "get_weather"
    json.loads(call.function.arguments)
    # when the client sends the tool result back
    messages += [choice.message.model_dump(exclude_none=True),
                 {"role": "tool", "tool_call_id": call.id, "content": '{"temp_c": 18, "sky": "clear"}'}]
    final = oai.chat.completions.create(model="default", messages=messages, tools=[WEATHER_TOOL],
                                        max_tokens=12)
    # then the model answers in text
    assert final.choices[0].message.content


def test_anthropic_messages_whole_and_streamed(claude: anthropic.Anthropic) -> None:
    msg = claude.messages.create(model="default", max_tokens=8, system="Answer briefly.",
                                 messages=[{"role": "user", "content": "What is the capital of France?"}])
    assert msg.content and msg.content[0].type == "text" and msg.content[0].text.strip()
    assert msg.stop_reason in {"end_turn", "max_tokens"}
    with claude.messages.stream(model="default", max_tokens=8,
                                messages=[{"role": "user", "content": "Say hello."}]) as stream:
        events = [event.type for event in stream]
        final = stream.get_final_message()
    assert events[0] == "message_start" and events[-1] == "message_stop"
    assert "content_block_delta" in events
    assert final.usage.output_tokens > 0


def test_anthropic_count_tokens_is_exact_from_the_agent(claude: anthropic.Anthropic) -> None:
    short = claude.messages.count_tokens(model="default", messages=[{"role": "user", "content": "Hi"}])
    longer = claude.messages.count_tokens(model="default",
                                          messages=[{"role": "user", "content": "Hi there, how are you today?"}])
    assert 0 < short.input_tokens < longer.input_tokens


def test_responses_api_with_previous_response_id(oai: openai.OpenAI) -> None:
    first = oai.responses.create(model="default", input="Name a color.", max_output_tokens=16)
    assert first.output_text.strip()
    second = oai.responses.create(model="default", input="And another?", previous_response_id=first.id,
                                  max_output_tokens=16)
    assert second.output_text.strip()
    assert second.usage is not None and second.usage.input_tokens > first.usage.input_tokens
    fetched = oai.responses.retrieve(first.id)
    assert fetched.output_text == first.output_text


def test_bad_input_answers_in_the_callers_dialect(oai: openai.OpenAI, claude: anthropic.Anthropic) -> None:
    with pytest.raises(openai.NotFoundError) as nf:
        oai.chat.completions.create(model="no-such-model", messages=[{"role": "user", "content": "hi"}])
    assert "no-such-model" in str(nf.value)
    with pytest.raises(openai.BadRequestError) as n2:
        oai.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}], n=2)
    assert "n" in str(n2.value)
    with pytest.raises(openai.BadRequestError):
        oai.chat.completions.create(model="default", messages=[])
    with pytest.raises(anthropic.BadRequestError) as mt:
        claude.messages.create(model="default", messages=[{"role": "user", "content": "hi"}],
                               max_tokens=10**9)
    assert "max_tokens" in str(mt.value)
