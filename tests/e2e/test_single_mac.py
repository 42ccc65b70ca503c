"""Single-Mac mode: `isthmus agent --serve-api` serves the public /v1/* surface by itself (no edge, no
DynamoDB), with the agent as its only backend; the official SDK talks to it unmodified, /v1/embeddings included
when the agent's model is an embedding model."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path

import anthropic
import httpx
import openai
import pytest

from local_runtime.agent.embeddings.fetch import build_tiny_embedding_model
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


@pytest.fixture(scope="module")
def single_mac_embedder(tmp_path_factory: pytest.TempPathFactory, agent_logs: Path) -> Iterator[AgentProcess]:
    model = build_tiny_embedding_model(tmp_path_factory.mktemp("models") / "tiny-bert")
    agent = AgentProcess(str(model), "--serve-api", log_dir=agent_logs)
    yield agent
    agent.stop()


def test_embeddings_are_served_when_the_agents_model_is_an_embedding_model(
        single_mac_embedder: AgentProcess) -> None:
    oai = openai.OpenAI(base_url=f"{single_mac_embedder.base}/v1", api_key="unused", max_retries=0)
    listed = httpx.get(f"{single_mac_embedder.base}/v1/models", timeout=10).json()["data"]
    loaded = listed[1]["id"]
    assert listed[1]["x_odyssai"]["supports_embeddings"] is True
    assert listed[1]["x_odyssai"]["supports_streaming"] is False
    # when the openai SDK asks the agent's own /v1/embeddings, by `default` and by the model's name
    batch = oai.embeddings.create(model="default", input=["a red guitar", "interest rates"])
    alone = oai.embeddings.create(model=loaded, input="interest rates", encoding_format="float")
    # then the vectors come from the local model: one per input, the batch equal to each input alone
    assert [d.index for d in batch.data] == [0, 1] and len(batch.data[0].embedding) == 32
    assert batch.model == loaded and batch.usage.prompt_tokens > 0
    assert max(abs(a - b) for a, b in zip(batch.data[1].embedding, alone.data[0].embedding, strict=True)) < 1e-5
    # and a model the agent does not serve is OpenAI's 404, bad input OpenAI's 400
    with pytest.raises(openai.NotFoundError, match="not loaded"):
        oai.embeddings.create(model="nope", input="x")
    with pytest.raises(openai.BadRequestError):
        oai.embeddings.create(model="default", input=[])


def test_embeddings_of_a_chat_model_are_a_clear_400(single_mac: AgentProcess) -> None:
    oai = openai.OpenAI(base_url=f"{single_mac.base}/v1", api_key="unused", max_retries=0)
    with pytest.raises(openai.BadRequestError, match="chat model"):
        oai.embeddings.create(model="default", input="x")
