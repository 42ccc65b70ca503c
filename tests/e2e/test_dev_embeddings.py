"""`isthmus dev --embedding-model`: the embedding agent is started beside the chat one, supervised, and published so
that the openai SDK's ``embeddings.create`` through the stack's edge gets the local model's vectors, while chat
still goes to the chat agent."""

from __future__ import annotations

from pathlib import Path

import openai
import pytest

from local_runtime.agent.embeddings.fetch import build_tiny_embedding_model
from local_runtime.ddb import free_port
from tests.e2e.test_dev_stack import DevRun

pytestmark = pytest.mark.e2e


def test_dev_loads_an_embedding_model_beside_the_chat_model(tiny_model: Path, tmp_path: Path) -> None:
    embedder = build_tiny_embedding_model(tmp_path / "tiny-bert")
    # given `isthmus dev` with a chat model and an embedding model
    run = DevRun("--model", str(tiny_model), "--embedding-model", str(embedder), "--embedding-port",
                 str(free_port()), cwd=tmp_path, data_dir=tmp_path / "data")
    try:
        run.wait_for(r"^Isthmus is up: ", timeout=240)
        assert run.wait_for(r"^embeddings: POST \S+/v1/embeddings with model 'tiny-bert'")
        client = openai.OpenAI(base_url=f"{run.base}/v1", api_key="unused", max_retries=0)
        # when the SDK asks for embeddings under the published name, and for a chat
        answer = client.embeddings.create(model="tiny-bert", input=["the cat", "a dog"], encoding_format="float")
        chat = client.chat.completions.create(model="default", max_tokens=2,
                                              messages=[{"role": "user", "content": "hi"}])
        # then the embedding agent answered with its model's 32-dimension vectors, the chat agent the chat
        assert [len(d.embedding) for d in answer.data] == [32, 32] and answer.usage.prompt_tokens > 4
        assert chat.choices[0].message.content is not None
    finally:
        run.stop()
    assert run.lines[-1] == "stopped"
