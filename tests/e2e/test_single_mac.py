"""Single-Mac mode: `isthmus agent --serve-api` serves the public /v1/* surface by itself (no edge, no
DynamoDB), with the agent as its only backend; the official SDK talks to it unmodified."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import openai
import pytest

from tests.support.agents import AgentProcess

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module")
def single_mac(tiny_model: Path, agent_logs: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess(str(tiny_model), "--serve-api", "--no-loop-guard", log_dir=agent_logs)
    yield agent
    agent.stop()


def test_the_agent_alone_answers_both_dialects_and_lists_its_model(single_mac: AgentProcess) -> None:
    oai = openai.OpenAI(base_url=f"{single_mac.base}/v1", api_key="unused", max_retries=0)
    # given the agent's own /v1/models
    ids = [m.id for m in oai.models.list().data]
    assert ids[0] == "default" and len(ids) == 2
    # when asked in the OpenAI dialect, whole and streamed
    whole = oai.chat.completions.create(model="default", messages=[{"role": "user", "content": "hi"}],
                                        max_tokens=6)
    chunks = list(oai.chat.completions.create(model=ids[1], messages=[{"role": "user", "content": "hi"}],
                                              max_tokens=6, stream=True))
    # then real answers come back (random weights: the content is noise, the shape is not)
    assert whole.choices[0].finish_reason == "length" and whole.usage.completion_tokens == 6
    assert chunks[0].choices[0].delta.role == "assistant"
    assert any(c.choices and c.choices[0].finish_reason == "length" for c in chunks)
    # and the Anthropic dialect works on the same port
    msg = anthropic.Anthropic(base_url=single_mac.base, api_key="unused", max_retries=0).messages.create(
        model="default", max_tokens=5, messages=[{"role": "user", "content": "hi"}])
    assert msg.stop_reason == "max_tokens" and msg.usage.output_tokens == 5


def test_unknown_model_is_a_404_in_the_openai_shape(single_mac: AgentProcess) -> None:
    oai = openai.OpenAI(base_url=f"{single_mac.base}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.NotFoundError, match="not loaded"):
        oai.chat.completions.create(model="nope", messages=[{"role": "user", "content": "hi"}], max_tokens=4)
