"""The cloud's batch worker (functions/batch_worker: the SQS-triggered Lambda handler) in-process against
DynamoDB Local and a real agent (tiny random model): a message runs its batch to ``completed``; a batch that
outlasts the invoke is stopped before the timeout with its finished lines kept, and its message is sent again
(here: reported back, there being no queue) so the next invoke goes on without re-running them."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import Callable, Iterator
from types import SimpleNamespace
from typing import Any

import pytest

from functions.batch_worker import worker
from isthmus import wiring
from isthmus.services.batches.intake import CreateOtariBatch
from isthmus.services.batches.model import Batch, new_batch_id
from isthmus.services.batches.service import BatchService
from isthmus.services.tenancy.keys import CreateKey, KeyService, UpdateKey
from tests.support.agents import AgentProcess

pytestmark = pytest.mark.integration


@pytest.fixture()
def gateway_env(ddb_tables: str, tiny_agent: AgentProcess, monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ISTHMUS_DEFAULT_AGENT_URL", tiny_agent.base)
    monkeypatch.setenv("ISTHMUS_BATCH_CONCURRENCY", "2")
    monkeypatch.delenv("ISTHMUS_MASTER_KEY", raising=False)
    monkeypatch.delenv("ISTHMUS_BATCH_QUEUE_URL", raising=False)
    wiring.reset()
    yield
    wiring.reset()


def create(lines: int, max_tokens: int) -> str:
    body = CreateOtariBatch.model_validate({"model": "default", "requests": [
        {"custom_id": f"c{i}", "body": {"messages": [{"role": "user", "content": f"hi {i}"}],
                                         "max_tokens": max_tokens}} for i in range(lines)]})
    return asyncio.run(BatchService(wiring.batch_store(), None).create_otari(None, body, None)).batch_id


def invoke(batch_id: str, remaining_s: float) -> dict[str, list[dict[str, str]]]:
    context = SimpleNamespace(get_remaining_time_in_millis=lambda: int(remaining_s * 1000))
    return worker.handler({"Records": [{"messageId": "m1", "body": batch_id}]}, context)


def test_a_message_runs_its_batch_to_completed(gateway_env: None) -> None:
    # given a batch of 6 requests
    batch_id = create(6, 8)
    # when the worker gets its message with the whole invoke ahead of it
    out = invoke(batch_id, 900)
    # then nothing is reported back and the batch is completed, every line answered once
    assert out == {"batchItemFailures": []}
    head = wiring.batch_store().get_batch(batch_id)
    assert head is not None and (head["status"], head["completed"], head.get("failed", 0)) == ("completed", 6, 0)
    lines = wiring.batch_store().lines(batch_id, 6)
    assert all(line["done"] and line["result"]["response"]["status_code"] == 200 for line in lines)


def test_a_batch_outlasting_the_invoke_stops_in_time_and_goes_on_next_invoke(gateway_env: None,
                                                                             monkeypatch: pytest.MonkeyPatch) -> None:
    # given a batch of long requests run one at a time (all three take far longer than the 1 s the invoke has)
    monkeypatch.setenv("ISTHMUS_BATCH_CONCURRENCY", "1")
    batch_id = create(3, 2000)
    out = invoke(batch_id, worker.STOP_BEFORE_END_S + 1)
    # then the invoke stops with the batch unfinished, and its message comes again
    assert out == {"batchItemFailures": [{"itemIdentifier": "m1"}]}
    head = wiring.batch_store().get_batch(batch_id)
    assert head is not None and head["status"] == "in_progress" and 1 <= head.get("completed", 0) < 3
    ran_first = {line["n"] for line in wiring.batch_store().lines(batch_id, 3) if line["done"]}
    # when the next invoke has the time
    assert invoke(batch_id, 900) == {"batchItemFailures": []}
    # then the batch completes and the lines finished before kept their first answer (one attempt each)
    head = wiring.batch_store().get_batch(batch_id)
    assert head is not None and (head["status"], head["completed"]) == ("completed", 3)
    lines = wiring.batch_store().lines(batch_id, 3)
    assert all(line["attempts"] == 1 for line in lines if line["n"] in ran_first)


def test_lines_run_as_the_creating_key_and_stop_once_it_is_revoked(gateway_env: None) -> None:
    # given a key that created a batch, and its first run done as that key's user
    keys = KeyService(wiring.stores(), wiring.credentials())
    user_id = f"batch-owner-{uuid.uuid4().hex[:6]}"
    created = keys.create(CreateKey(user_id=user_id))
    principal = asyncio.run(wiring.gate().authenticate({"authorization": f"Bearer {created['key']}"}))
    service = BatchService(wiring.batch_store(), None)
    first = asyncio.run(service.create_otari(principal, CreateOtariBatch.model_validate(
        {"model": "default", "requests": [{"custom_id": "a", "body": {"messages": [{"role": "user", "content": "x"}],
                                                                        "max_tokens": 4}}]}), None))
    assert invoke(first.batch_id, 900) == {"batchItemFailures": []}
    head = wiring.batch_store().get_batch(first.batch_id)
    assert head is not None and (head["owner_id"], head["completed"]) == (user_id, 1)
    # when the key is revoked and a second batch of the same key runs
    second = asyncio.run(service.create_otari(principal, CreateOtariBatch.model_validate(
        {"model": "default", "requests": [{"custom_id": f"b{i}", "body": {"messages": [
            {"role": "user", "content": "x"}], "max_tokens": 4}} for i in range(3)]}), None))
    keys.update(created["id"], UpdateKey(is_active=False))
    assert invoke(second.batch_id, 900) == {"batchItemFailures": []}
    # then it finishes with every line refused (401, in the OpenAI error shape), none of them run
    head = wiring.batch_store().get_batch(second.batch_id)
    assert head is not None and (head["status"], head.get("completed", 0), head["failed"]) == ("completed", 0, 3)
    for line in wiring.batch_store().lines(second.batch_id, 3):
        assert line["result"]["response"]["status_code"] == 401
        assert "inactive" in line["result"]["response"]["body"]["error"]["message"]


@pytest.mark.parametrize(("endpoint", "body", "check"), [
    ("/v1/messages", {"model": "default", "max_tokens": 4, "messages": [{"role": "user", "content": "hi"}]},
     lambda b: b["type"] == "message" and b["usage"]["output_tokens"] > 0),
    ("/v1/responses", {"model": "default", "max_output_tokens": 4, "input": "hi"},
     lambda b: b["object"] == "response" and b["usage"]["output_tokens"] > 0),
])
def test_each_endpoint_answers_in_its_own_dialect(gateway_env: None, endpoint: str, body: dict[str, Any],
                                                  check: Callable[[dict[str, Any]], bool]) -> None:
    # given a batch of two lines for the endpoint (and one line its backend refuses: no such model)
    store = wiring.batch_store()
    batch = Batch(batch_id=new_batch_id(), owner_id="__open__", endpoint=endpoint, status="in_progress", total=3,
                  expires_at=int(time.time()) + 60)
    store.put_lines(batch.batch_id, [{"n": 0, "custom_id": "a", "body": body}, {"n": 1, "custom_id": "b", "body": body},
                                     {"n": 2, "custom_id": "c", "body": {**body, "model": "no-such-model"}}])
    store.put_batch(batch.model_dump())
    # when the worker runs it
    assert invoke(batch.batch_id, 900) == {"batchItemFailures": []}
    # then the good lines answer in the endpoint's dialect and the refused one is an error line with the 404
    lines = store.lines(batch.batch_id, 3)
    assert [line["ok"] for line in lines] == [True, True, False]
    assert all(check(line["result"]["response"]["body"]) for line in lines[:2])
    assert lines[2]["result"]["response"]["status_code"] == 404
