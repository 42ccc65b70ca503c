"""Issue 14 on DynamoDB Local: a stored Responses conversation larger than DynamoDB's 400 KB item limit is
stored after its answer was generated (compressed, split over items), read back, continued and deleted,
never turned into an error after generation. Inference goes to the fake agent over HTTP (it echoes the last
user turn, so the answer is as big as the question)."""

from __future__ import annotations

import asyncio
import base64
import json
import os
from collections.abc import Iterator
from pathlib import Path

import pytest
from botocore.exceptions import ClientError
from starlette.testclient import TestClient

from isthmus import settings, wiring
from isthmus.adapters import dynamodb
from isthmus.adapters.responses_table import DynamoResponseStore
from isthmus.backends.default_agent import DefaultAgentResolver
from isthmus.services.inference.inference import InferenceService
from tests.support.control_agents import AgentSpec, RunningAgent, fake_agent_command, start_agent

pytestmark = pytest.mark.integration
ITEM_LIMIT = 400 * 1024


@pytest.fixture(scope="module")
def agent(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RunningAgent]:
    spec = AgentSpec(node_id="echo", models_dir=tmp_path_factory.mktemp("echo"), model="fake-model")
    running = start_agent(spec, fake_agent_command)
    yield running
    running.stop()


@pytest.fixture()
def inference(ddb_tables: str, agent: RunningAgent, monkeypatch: pytest.MonkeyPatch) -> Iterator[TestClient]:
    import functions.inference.routes as routes

    # the composition root hands inference the fake agent and the responses table, with no tenancy gate
    service, store = InferenceService(DefaultAgentResolver(agent.base_url), None), DynamoResponseStore()
    monkeypatch.setattr(wiring, "inference_service", lambda: service)
    monkeypatch.setattr(wiring, "response_store", lambda: store)
    with TestClient(routes.app) as client:
        yield client


def big_text(n_bytes: int) -> str:
    """Text that zlib barely shrinks (base64 of random bytes): the stored form stays over one item."""
    return base64.b64encode(os.urandom(n_bytes * 3 // 4)).decode()


def item(key: str) -> dict[str, object] | None:
    found = dynamodb.client().get_item(TableName=settings.table_name("responses"), Key={"response_id": {"S": key}})
    return found.get("Item")


def test_a_conversation_over_the_item_limit_is_stored_continued_and_deleted(inference: TestClient) -> None:
    # given a question of 300 KB, echoed back: a conversation of ~600 KB, which one item cannot hold
    question = big_text(300_000)
    with pytest.raises(ClientError, match="size"):
        dynamodb.client().put_item(TableName=settings.table_name("responses"), Item={
            "response_id": {"S": "one-item"}, "doc": {"S": question * 2}})
    # when it is asked with store on (the default)
    first = inference.post("/v1/responses", json={"model": "fake-model", "input": question})
    # then the answer comes back, and is stored in more than one item
    assert first.status_code == 200, first.text
    first_id = first.json()["id"]
    assert question in first.json()["output"][0]["content"][0]["text"]
    assert item(first_id) is not None and item(f"{first_id}#1") is not None
    # and it reads back whole
    got = inference.get(f"/v1/responses/{first_id}")
    assert got.status_code == 200 and got.json()["output"] == first.json()["output"]
    # when the conversation is continued (streamed), the stored turns go with the new one
    with inference.stream("POST", "/v1/responses", json={"model": "fake-model", "input": "and then?",
                                                          "previous_response_id": first_id, "stream": True}) as r:
        assert r.status_code == 200
        frames = [json.loads(line[6:]) for line in r.iter_lines() if line.startswith("data: ")]
    second_id = frames[-1]["response"]["id"]
    assert frames[-1]["type"] == "response.completed"
    stored = asyncio.run(DynamoResponseStore().get(second_id))
    assert stored is not None and len(stored.model_dump_json()) > ITEM_LIMIT
    assert [m.role for m in stored.messages] == ["user", "assistant", "user"]
    assert stored.messages[0].text() == question
    # when the first is deleted, then its parts go with it, and a part is never a response
    assert inference.delete(f"/v1/responses/{first_id}").status_code == 200
    assert item(first_id) is None and item(f"{first_id}#1") is None
    assert inference.get(f"/v1/responses/{second_id}%231").status_code == 404
    assert inference.delete(f"/v1/responses/{second_id}%231").status_code == 404
    assert inference.get(f"/v1/responses/{second_id}").status_code == 200


def test_store_false_stores_nothing(inference: TestClient) -> None:
    # given a big question asked with store: false
    r = inference.post("/v1/responses", json={"model": "fake-model", "input": big_text(200_000), "store": False})
    # then the answer comes back and nothing was stored under its id
    assert r.status_code == 200
    assert item(r.json()["id"]) is None
    assert inference.get(f"/v1/responses/{r.json()['id']}").status_code == 404


def test_a_store_that_fails_after_generation_does_not_lose_the_answer(inference: TestClient,
                                                                       monkeypatch: pytest.MonkeyPatch) -> None:
    # given a responses table that is gone (every write fails: table names are resolved per call)
    monkeypatch.setenv("ISTHMUS_TABLE_PREFIX", "missing-")
    # when a response is created with store on
    r = inference.post("/v1/responses", json={"model": "fake-model", "input": "hello"})
    # then the generated answer still goes out
    assert r.status_code == 200 and "hello" in r.json()["output"][0]["content"][0]["text"]


def test_the_tests_ran_against_dynamodb_local(ddb_tables: str) -> None:
    assert ddb_tables.startswith("http://127.0.0.1") and Path(__file__).name == "test_responses_store.py"
