"""``/agent/v1/embeddings`` on a real agent with the tiny random BERT (``isthmus model tiny --arch bert``): the
batching, the token-array input, Matryoshka ``dimensions`` and the refusals, fast. The real weights' meaning
(paraphrases closer than unrelated sentences) is tests/e2e/test_embeddings.py's."""

from __future__ import annotations

import math
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local_runtime.agent.embeddings.fetch import build_tiny_embedding_model
from tests.support.agents import AgentProcess

pytestmark = [pytest.mark.integration]
WORDS = ["the", "cat", "sits", "on", "the", "mat", "a", "dog", "runs", "in", "park", "paris", "is", "capital",
         "of", "france", "rome", "italy"]


@pytest.fixture(scope="module")
def embed_agent(tmp_path_factory: pytest.TempPathFactory, agent_logs: Path) -> Iterator[AgentProcess]:
    model = build_tiny_embedding_model(tmp_path_factory.mktemp("models") / "tiny-bert")
    agent = AgentProcess(str(model), log_dir=agent_logs)
    yield agent
    agent.stop()


def embed(agent: AgentProcess, **body: Any) -> httpx.Response:
    return agent.client.post("/agent/v1/embeddings", json=body)


def vectors(r: httpx.Response) -> list[list[float]]:
    assert r.status_code == 200, r.text
    return [d["embedding"] for d in r.json()["data"]]


def test_a_batch_of_many_lengths_equals_each_input_alone(embed_agent: AgentProcess) -> None:
    # given 40 inputs of 1..40 words (more than one forward pass of 32, padded to different widths)
    texts = [" ".join(WORDS[j % len(WORDS)] for j in range(i + 1)) for i in range(40)]
    # when embedded together and one by one
    together = vectors(embed(embed_agent, input=texts))
    alone = [vectors(embed(embed_agent, input=t))[0] for t in texts[::7]]
    # then padding changed nothing, and every vector is a unit vector of the model's 32 dimensions
    for single, batched in zip(alone, together[::7], strict=True):
        assert max(abs(a - b) for a, b in zip(single, batched, strict=True)) < 1e-5
    assert all(len(v) == 32 and abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-5 for v in together)


def test_token_arrays_embed_like_their_text(embed_agent: AgentProcess) -> None:
    from tokenizers import Tokenizer

    tokenizer = Tokenizer.from_file(str(Path(embed_agent.status()["model"]) / "tokenizer.json"))
    ids = tokenizer.encode("the cat sits on the mat").ids[1:-1]  # without [CLS]/[SEP]: the agent adds them
    text, tokens = vectors(embed(embed_agent, input=["the cat sits on the mat"])), vectors(embed(embed_agent,
                                                                                                input=[ids]))
    assert max(abs(a - b) for a, b in zip(text[0], tokens[0], strict=True)) < 1e-6
    r = embed(embed_agent, input=ids)
    assert r.json()["usage"]["prompt_tokens"] == len(ids) + 2


def test_dimensions_truncate_and_renormalise_for_a_matryoshka_model(embed_agent: AgentProcess) -> None:
    full = vectors(embed(embed_agent, input="paris is the capital of france"))[0]
    cut = vectors(embed(embed_agent, input="paris is the capital of france", dimensions=8))[0]
    head = full[:8]
    norm = math.sqrt(sum(x * x for x in head))
    assert len(cut) == 8 and cut == pytest.approx([x / norm for x in head], abs=1e-5)
    assert len(vectors(embed(embed_agent, input="x", dimensions=32))[0]) == 32


@pytest.mark.parametrize(("body", "param"), [
    ({"input": []}, "input"),
    ({"input": ""}, "input"),
    ({"input": ["a", 3]}, "input"),
    ({"input": [[1, 2], "a"]}, "input"),
    ({"input": [10 ** 6]}, "input"),
    ({"input": ["w"] * 2049}, "input"),
    ({"input": "cat " * 80}, "input"),  # the tiny model takes 64 tokens
    ({"input": "x" * 10_000_000}, "input"),  # refused by its length, before tokenizing
    ({"input": "x", "dimensions": 33}, "dimensions"),
    ({"input": "x", "dimensions": 0}, "dimensions"),
    ({"input": "x", "encoding_format": "hex"}, "encoding_format"),
])
def test_bad_input_is_refused_naming_the_field(embed_agent: AgentProcess, body: dict[str, Any], param: str) -> None:
    r = embed(embed_agent, **body)
    assert r.status_code in (400, 413), r.text
    if r.status_code == 400:  # OpenAI's shape, as the gateway passes it on
        error = r.json()["error"]
        assert error["message"].startswith(param) and error["param"] == param


def test_chat_and_embeddings_are_refused_on_the_wrong_kind_of_model(embed_agent: AgentProcess,
                                                                     tiny_agent: AgentProcess) -> None:
    chat = embed_agent.generate(text="hi")
    assert chat.status_code == 400 and "embedding model" in chat.json()["detail"]
    r = embed(tiny_agent, input="hi")
    assert r.status_code == 400 and "chat model" in r.json()["error"]["message"]
