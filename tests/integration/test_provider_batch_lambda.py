"""The cloud's batch worker (functions/batch_worker) with a batch for a cloud alias, in-process against DynamoDB
Local and the fake OpenAI provider on loopback: the first invoke hands the batch to the provider's batch API and
sends its message back with the provider poll interval as the SQS delay (not at once: nothing to do until the
provider moves); later invokes poll it to ``completed``, its lines recorded once. Two runners handing the same
batch off at once leave one provider batch: the one whose head move lost cancels its own."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest

from functions.batch_worker import worker
from isthmus import wiring
from isthmus.services.batches.intake import CreateOtariBatch
from isthmus.services.batches.service import BatchService
from tests.support.fake_providers import FakeProviders

pytestmark = pytest.mark.integration


class SentAgain:
    sent: list[tuple[str, int]] = []

    def __init__(self, url: str) -> None:
        self.url = url

    def send(self, batch_id: str, delay_s: int = 0) -> None:
        self.sent.append((batch_id, delay_s))


@pytest.fixture()
def cloud_env(ddb_tables: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[tuple[FakeProviders, str]]:
    fake = FakeProviders().start()
    monkeypatch.setenv("ISTHMUS_LOCAL_KEY_FILE", str(tmp_path / "provider.key"))
    monkeypatch.setenv("ISTHMUS_CLOUD_CATALOG_SECONDS", "0")
    monkeypatch.delenv("ISTHMUS_MASTER_KEY", raising=False)
    monkeypatch.setattr(worker, "SqsBatchQueue", SentAgain)
    monkeypatch.setattr(worker, "queue_url", lambda: "https://sqs.test/queue")
    wiring.reset()
    alias = f"lambda{uuid.uuid4().hex[:6]}:gpt"
    asyncio.run(wiring.provider_service().put(f"p{uuid.uuid4().hex[:6]}", {
        "template": "openai", "api_base": fake.openai_base, "api_key": "sk-lambda-test", "max_retries": 0,
        "published": [{"alias": alias, "upstream_model": "gpt-lambda-up"}]}))
    try:
        yield fake, alias
    finally:
        wiring.reset()
        fake.stop()


def invoke(batch_id: str) -> dict[str, list[dict[str, str]]]:
    context = SimpleNamespace(get_remaining_time_in_millis=lambda: 900_000)
    return worker.handler({"Records": [{"messageId": "m1", "body": batch_id}]}, context)


def test_a_handed_off_batch_comes_back_after_the_poll_delay_until_the_provider_is_done(
        cloud_env: tuple[FakeProviders, str], monkeypatch: pytest.MonkeyPatch) -> None:
    fake, alias = cloud_env
    SentAgain.sent.clear()
    body = CreateOtariBatch.model_validate({"model": alias, "requests": [
        {"custom_id": f"c{i}", "body": {"messages": [{"role": "user", "content": f"hi {i}"}], "max_tokens": 8}}
        for i in range(3)]})
    batch_id = asyncio.run(BatchService(wiring.batch_store(), None).create_otari(None, body, None)).batch_id
    # given the provider is asked at most every 7 seconds
    monkeypatch.setenv("ISTHMUS_BATCH_PROVIDER_POLL_SECONDS", "7")
    # when the worker gets the batch's message
    assert invoke(batch_id) == {"batchItemFailures": []}
    # then the batch is with the provider (one upload, one batch) and its message comes again in 7 seconds
    head = wiring.batch_store().get_batch(batch_id)
    assert head is not None and head["status"] == "in_progress" and head["upstream_batch_id"]
    assert [r["path"] for r in fake.requests].count("/openai/v1/files") == 1
    assert [r["path"] for r in fake.requests].count("/openai/v1/batches") == 1
    assert SentAgain.sent == [(batch_id, 7)]
    # when later invokes come (the interval passed: here, no interval)
    monkeypatch.setenv("ISTHMUS_BATCH_PROVIDER_POLL_SECONDS", "0")
    for _ in range(5):
        invoke(batch_id)
        head = wiring.batch_store().get_batch(batch_id)
        if head is not None and head["status"] == "completed":
            break
    # then it completed from the provider's results, each line once, and no chat call was made per line
    assert head is not None and (head["status"], head["completed"], head.get("failed", 0)) == ("completed", 3, 0)
    lines = wiring.batch_store().lines(batch_id, 3)
    assert [line["result"]["custom_id"] for line in lines] == ["c0", "c1", "c2"]
    assert all(line["result"]["response"]["body"]["model"] == alias for line in lines)
    assert fake.count("gpt-lambda-up") == 0


def test_two_runners_handing_off_at_once_leave_one_provider_batch(cloud_env: tuple[FakeProviders, str],
                                                                  monkeypatch: pytest.MonkeyPatch) -> None:
    fake, alias = cloud_env
    monkeypatch.setenv("ISTHMUS_BATCH_PROVIDER_POLL_SECONDS", "0")
    body = CreateOtariBatch.model_validate({"model": alias, "requests": [
        {"custom_id": f"r{i}", "body": {"messages": [{"role": "user", "content": f"race {i}"}], "max_tokens": 8}}
        for i in range(2)]})
    batch_id = asyncio.run(BatchService(wiring.batch_store(), None).create_otari(None, body, None)).batch_id

    async def both() -> None:
        await asyncio.gather(wiring.new_batch_runner().run(batch_id), wiring.new_batch_runner().run(batch_id))

    # when two runners validate the same batch at once (two workers given it together)
    asyncio.run(both())
    # then whichever moved the head second cancelled its own provider batch: one is left running
    head = wiring.batch_store().get_batch(batch_id)
    assert head is not None and head["upstream_batch_id"]
    ours = [b for b in fake.batch_apis.batches.values() if b.get("_lines")
            and b["_lines"][0]["custom_id"] == "r0"]
    live = [b["id"] for b in ours if b["status"] not in ("cancelling", "cancelled")]
    assert live == [head["upstream_batch_id"]]
    assert len(ours) == 2, ours  # both submitted (each read the head in validating)
