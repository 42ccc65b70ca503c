"""Generation through a real agent: answers, streaming, stop sequences, limits, thinking, tools."""

from __future__ import annotations

import json
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import pytest

from tests.support.agents import AgentProcess, request_body, text_of, user

pytestmark = [pytest.mark.integration]


@pytest.mark.slow
def test_smollm2_answers_a_simple_question(smol_agent: AgentProcess) -> None:
    # given a real small chat model
    # when asked a factual question without streaming
    r = smol_agent.generate(text="What is the capital of France?", max_tokens=24)
    # then the answer is sensible English and the usage adds up
    assert r.status_code == 200, r.text
    body = r.json()
    answer = "".join(p["text"] for p in body["content"] if p["type"] == "text")
    assert "Paris" in answer
    assert body["finish_reason"] == "stop"
    assert body["usage"]["prompt_tokens"] > 10
    assert 0 < body["usage"]["completion_tokens"] <= 24
    assert body["usage"]["cached_tokens"] is None  # no session


@pytest.mark.slow
def test_stream_is_ndjson_start_deltas_usage_finish(smol_agent: AgentProcess) -> None:
    events = smol_agent.stream(text="What is the capital of France?", max_tokens=24)
    kinds = [e["type"] for e in events]
    assert kinds[0] == "start" and kinds[-2:] == ["usage", "finish"]
    assert events[0]["prompt_tokens"] > 10 and events[0]["cached_tokens"] is None
    assert "Paris" in text_of(events)
    usage = events[-2]["usage"]
    assert usage["prefill_tps"] > 0 and usage["completion_tokens"] == len(
        [k for k in kinds if k == "text"]) + 1  # every token but the end token carries text
    assert events[-1] == {"type": "finish", "reason": "stop", "stop_sequence": None, "loop_guard": False}


@pytest.mark.slow
def test_stop_sequence_cuts_the_output_and_is_reported(smol_agent: AgentProcess) -> None:
    events = smol_agent.stream(text="What is the capital of France?", max_tokens=24, stop=["Paris"])
    assert "Paris" not in text_of(events)
    assert events[-1]["reason"] == "stop_sequence" and events[-1]["stop_sequence"] == "Paris"


def test_max_tokens_ends_with_finish_length(tiny_agent: AgentProcess) -> None:
    events = tiny_agent.stream(text="hello", max_tokens=5, enable_thinking=False)
    assert events[-1]["reason"] == "length"
    assert events[-2]["usage"]["completion_tokens"] == 5


def test_template_opened_think_block_streams_as_reasoning_only(tiny_agent: AgentProcess) -> None:
    # given a template whose generation prompt opens <think> when thinking is on
    events = tiny_agent.stream(text="hello", max_tokens=12, enable_thinking=True)
    # then everything generated (no </think> from random weights) is reasoning, never text
    assert text_of(events, "reasoning")
    assert "<think>" not in text_of(events) and "</think>" not in text_of(events)
    assert not [e for e in events if e["type"] == "text" and "think>" in e["text"]]


def test_thinking_off_gives_a_non_empty_answer(tiny_agent: AgentProcess) -> None:
    body = tiny_agent.generate(text="hello", max_tokens=12, enable_thinking=False).json()
    texts = [p for p in body["content"] if p["type"] == "text"]
    assert texts and texts[0]["text"].strip()
    assert all("think>" not in p["text"] for p in texts)


def test_unknown_template_kwarg_values_never_fail_the_request(tiny_agent: AgentProcess) -> None:
    r = tiny_agent.generate(text="hello", max_tokens=3, enable_thinking=True, reasoning_effort="minimal")
    assert r.status_code == 200, r.text


def test_tools_reach_the_chat_template(tiny_agent: AgentProcess) -> None:
    # given the same conversation with and without a tool
    plain = {"messages": [user("weather in Paris?")]}
    schema = {"type": "object", "properties": {"city": {"type": "string"}}}
    tool = {"name": "get_weather", "description": "Current weather", "parameters": schema}
    tools = {**plain, "tools": [tool]}
    # when counting prompt tokens
    n_plain = tiny_agent.client.post("/agent/v1/tokenize", json=plain).json()["prompt_tokens"]
    n_tools = tiny_agent.client.post("/agent/v1/tokenize", json=tools).json()["prompt_tokens"]
    # then the tool schema is part of the prompt
    assert n_tools > n_plain + 10


def test_tool_call_history_renders_and_generates(tiny_agent: AgentProcess) -> None:
    messages = [
        user("weather?"),
        {"role": "assistant", "content": [{"type": "tool_call", "id": "c1", "name": "get_weather",
                                           "arguments": '{"city": "Paris"}'}]},
        {"role": "tool", "content": [{"type": "tool_result", "tool_call_id": "c1", "content": "sunny"}]},
    ]
    r = tiny_agent.generate(messages=messages, max_tokens=3)
    assert r.status_code == 200, r.text


def test_bad_body_is_422_naming_the_field(tiny_agent: AgentProcess) -> None:
    r = tiny_agent.client.post("/agent/v1/generate", json={"model": "x", "messages": []})
    assert r.status_code == 422
    assert "messages" in str(r.json()["detail"])
    r = tiny_agent.client.post("/agent/v1/generate", content=b"{not json")
    assert r.status_code == 400 and "JSON" in r.json()["detail"]
    r = tiny_agent.client.post("/agent/v1/generate", json=request_body(max_tokens=0))
    assert r.status_code == 422 and "max_tokens" in str(r.json()["detail"])


def test_prompt_longer_than_the_context_is_a_400(smol_agent: AgentProcess) -> None:
    # SmolLM2's context is 8192 tokens: the prompt alone overflows it
    r = smol_agent.generate(text="word " * 9000, max_tokens=2)
    assert r.status_code == 400 and "context" in r.json()["detail"]


def test_max_tokens_beyond_the_context_is_a_400_naming_max_tokens(tiny_agent: AgentProcess) -> None:
    r = tiny_agent.generate(text="hi", max_tokens=300_000)
    assert r.status_code == 400
    assert "max_tokens" in r.json()["detail"] and "context" in r.json()["detail"]


def test_tool_choice_none_keeps_tools_out_of_the_prompt(tiny_agent: AgentProcess) -> None:
    tool = {"name": "get_weather", "parameters": {"type": "object", "properties": {}}}
    with_tools = tiny_agent.stream(text="hi", max_tokens=1, tools=[tool])
    refused = tiny_agent.stream(text="hi", max_tokens=1, tools=[tool], tool_choice={"mode": "none"})
    assert refused[0]["prompt_tokens"] < with_tools[0]["prompt_tokens"]


CALL = '<tool_call>{"name": "get_weather", "arguments": {"city": "Paris"}}</tool_call>'
# One shot of the markup: greedy SmolLM2 then answers with the same call (deterministic for this model).
FEW_SHOT_CALL = [user(f"Say {CALL}"), {"role": "assistant", "content": [{"type": "text", "text": CALL}]},
                 user(f"Say {CALL}")]


@pytest.mark.slow
def test_tool_call_markup_from_the_model_becomes_a_tool_call_event(smol_agent: AgentProcess) -> None:
    events = smol_agent.stream(messages=FEW_SHOT_CALL, max_tokens=40)
    calls = [e for e in events if e["type"] == "tool_call"]
    assert [(c["index"], c["name"], json.loads(c["arguments"])) for c in calls] == \
        [(0, "get_weather", {"city": "Paris"})]
    assert "tool_call" not in text_of(events)
    assert events[-1]["reason"] == "tool_calls"


@pytest.mark.slow
def test_tool_call_cut_by_max_tokens_is_recovered(smol_agent: AgentProcess) -> None:
    # given a call whose JSON is cut inside the arguments object
    events = smol_agent.stream(messages=FEW_SHOT_CALL, max_tokens=20)
    # then the JSON is closed and the call still reported
    [call] = [e for e in events if e["type"] == "tool_call"]
    assert call["name"] == "get_weather" and "city" in json.loads(call["arguments"])
    assert "tool_call" not in text_of(events)
    assert events[-1]["reason"] == "tool_calls"


def test_sampling_with_temperature_and_seed_runs_alone_and_in_a_batch(tiny_agent: AgentProcess) -> None:
    sampled = {"temperature": 0.9, "top_p": 0.9, "top_k": 20, "seed": 7, "max_tokens": 6}

    def ask(sampling: dict[str, Any]) -> int:
        body = request_body(text="hello", enable_thinking=False)
        body["sampling"].update(sampling)
        r = tiny_agent.client.post("/agent/v1/generate", json=body)
        assert r.status_code == 200, r.text
        return int(r.json()["usage"]["completion_tokens"])

    # alone
    assert ask(sampled) == 6
    # together with greedy requests (each sequence keeps its own sampler inside the batch)
    with ThreadPoolExecutor(4) as pool:
        counts = list(pool.map(ask, [sampled, {"max_tokens": 300}, {**sampled, "max_tokens": 300}, {}]))
    assert (counts[0], counts[1], counts[3]) == (6, 300, 8)
    assert 1 <= counts[2] <= 300  # sampling may draw the end token before the limit


def test_every_delta_carries_the_running_completion_count(tiny_agent: AgentProcess) -> None:
    # given a streamed generation cut by max_tokens
    events = tiny_agent.stream(text="count me", max_tokens=40, metadata={"loop_guard": False})
    # then every delta says how many tokens were generated so far, never fewer than before, and the last
    # count is at most the total the usage event reports (held-back text may still follow)
    counts = [e["completion_tokens"] for e in events if e["type"] in ("text", "reasoning", "tool_call")]
    assert counts and all(isinstance(c, int) for c in counts)
    assert counts == sorted(counts) and 0 < counts[-1] <= events[-2]["usage"]["completion_tokens"] == 40
