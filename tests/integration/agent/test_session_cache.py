"""The session-scoped prefix cache with a real model: turn 2 prefills only the new suffix."""

from __future__ import annotations

import uuid
from typing import Any

import pytest

from tests.support.agents import AgentProcess, user

pytestmark = [pytest.mark.integration, pytest.mark.slow]


def answer(body: dict[str, Any]) -> str:
    return "".join(p["text"] for p in body["content"] if p["type"] == "text")


def prefilled(usage: dict[str, Any]) -> int:
    return int(usage["prompt_tokens"] - (usage["cached_tokens"] or 0))


def test_second_turn_reuses_the_first_turns_prefix(smol_agent: AgentProcess) -> None:
    session = uuid.uuid4().hex
    # given a first turn in a session
    turn1 = [user("What is the capital of France?")]
    first = smol_agent.generate(messages=turn1, max_tokens=16, session_id=session).json()
    assert first["usage"]["cached_tokens"] == 0  # a session, but nothing cached yet
    # when the conversation continues in the same session
    turn2 = [*turn1, {"role": "assistant", "content": [{"type": "text", "text": answer(first)}]},
             user("And of Germany?")]
    second = smol_agent.generate(messages=turn2, max_tokens=16, session_id=session).json()
    # then most of the prompt comes from the cache and only the suffix is prefilled
    usage = second["usage"]
    assert usage["cached_tokens"] > first["usage"]["prompt_tokens"] // 2
    assert prefilled(usage) < usage["prompt_tokens"]
    assert prefilled(usage) < prefilled(first["usage"])
    assert smol_agent.status()["cache_entries"] >= 1


def test_session_passed_as_header_is_honoured(smol_agent: AgentProcess) -> None:
    session = uuid.uuid4().hex
    turn1 = [user("Name a colour.")]
    smol_agent.client.post("/agent/v1/generate", headers={"X-Session-Id": session},
                           json={"model": "m", "messages": turn1, "sampling": {"max_tokens": 4}})
    turn2 = [*turn1, {"role": "assistant", "content": [{"type": "text", "text": "Blue."}]}, user("Another?")]
    r = smol_agent.client.post("/agent/v1/generate", headers={"X-Session-Id": session},
                               json={"model": "m", "messages": turn2, "sampling": {"max_tokens": 4}})
    assert r.json()["usage"]["cached_tokens"] > 0


def test_identical_resend_and_no_session_report_no_cached_tokens(smol_agent: AgentProcess) -> None:
    session = uuid.uuid4().hex
    messages = [user("Say hello.")]
    smol_agent.generate(messages=messages, max_tokens=4, session_id=session)
    again = smol_agent.generate(messages=messages, max_tokens=4, session_id=session).json()
    assert again["usage"]["cached_tokens"] == 0
    anonymous = smol_agent.generate(messages=messages, max_tokens=4).json()
    assert anonymous["usage"]["cached_tokens"] is None


def test_divergent_prompt_reuses_the_common_prefix(smol_agent: AgentProcess) -> None:
    session = uuid.uuid4().hex
    long_system = {"role": "system", "content": [{"type": "text", "text": "You answer in one word. " * 8}]}
    smol_agent.generate(messages=[long_system, user("Capital of Spain?")], max_tokens=4, session_id=session)
    # an edited question: the cache holds prompt+answer, so it is trimmed back to the shared system prefix
    edited = [long_system, user("Capital of Italy?")]
    r = smol_agent.generate(messages=edited, max_tokens=4, session_id=session)
    usage = r.json()["usage"]
    assert 40 < usage["cached_tokens"] < usage["prompt_tokens"]
