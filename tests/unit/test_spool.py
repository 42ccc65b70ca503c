"""The settlement spool's file contract (fast, no store): entries survive as written (Decimal exact), a torn
last line is skipped, a replay that stops midway keeps the segment, a segment another process is still
appending to is left alone, and the dead-letter adapter's messages decode to the same entries (moto SQS)."""

from __future__ import annotations

import fcntl
from decimal import Decimal
from pathlib import Path
from typing import Any

import boto3
import pytest
from moto import mock_aws

from isthmus.adapters import aws, settlement_queue
from isthmus.services.tenancy.spool import SettlementSpool, loads

ENTRY = {"row": {"id": "r1", "cost": Decimal("0.000123"), "metadata": {"n": Decimal(2)}},
         "charge": {"user_id": "u", "cost": Decimal("0.000123"), "hold": Decimal("0.5"), "leased": True}}


def test_entries_come_back_exact_and_a_replayed_segment_is_removed(tmp_path: Path) -> None:
    # given two entries spooled, and a torn line left by a crash mid-write in another segment
    spool = SettlementSpool(tmp_path)
    spool.append([ENTRY, {**ENTRY, "row": {**ENTRY["row"], "id": "r2"}}])
    (tmp_path / "settlements-0-1-torn.jsonl").write_text('{"row": {"id": "r0"}, "charge": null}\n{"row": {"id"')
    seen: list[dict[str, Any]] = []

    def settle(entry: dict[str, Any]) -> bool:
        seen.append(entry)
        return True

    # when it is replayed
    assert spool.replay(settle) == 3
    # then every whole entry came back exactly as written, the torn one was skipped, and nothing is left
    assert [e["row"]["id"] for e in seen] == ["r0", "r1", "r2"]
    assert seen[1] == ENTRY and isinstance(seen[1]["row"]["cost"], Decimal)
    assert not spool.pending()


def test_a_replay_that_fails_keeps_the_segment_for_the_next_one(tmp_path: Path) -> None:
    spool = SettlementSpool(tmp_path)
    spool.append([ENTRY])

    def store_down(entry: dict[str, Any]) -> bool:
        raise ConnectionError("store down")

    with pytest.raises(ConnectionError):
        spool.replay(store_down)
    assert spool.pending()
    assert spool.replay(lambda e: True) == 1 and not spool.pending()


def test_an_entry_the_store_rejects_for_what_it_is_is_set_aside_and_the_rest_replayed(tmp_path: Path) -> None:
    from botocore.exceptions import ClientError

    from isthmus.services.tenancy.spool import is_poison

    # given three spooled entries, the middle one malformed in a way the store refuses
    spool = SettlementSpool(tmp_path)
    spool.append([{**ENTRY, "row": {**ENTRY["row"], "id": i}} for i in ("r1", "bad", "r3")])
    seen: list[str] = []

    def settle(entry: dict[str, Any]) -> bool:
        if entry["row"]["id"] == "bad":
            raise ClientError({"Error": {"Code": "ValidationException", "Message": "no"}}, "TransactWriteItems")
        seen.append(entry["row"]["id"])
        return True

    # when it is replayed, then the others are written and the rejected one is kept aside, not lost
    assert spool.replay(settle, is_poison) == 2
    assert seen == ["r1", "r3"] and not spool.pending()
    rejected = list(tmp_path.glob("rejected-*.jsonl"))
    assert len(rejected) == 1 and loads(rejected[0].read_text().strip())["row"]["id"] == "bad"
    # and a store that is away is not mistaken for a rejection
    assert not is_poison(ClientError({"Error": {"Code": "ThrottlingException"}}, "TransactWriteItems"))
    assert not is_poison(ConnectionError("down"))


def test_a_segment_still_locked_by_its_writer_is_left_alone(tmp_path: Path) -> None:
    # given a segment another process holds (its writer's lock)
    other = SettlementSpool(tmp_path)
    other.append([ENTRY])
    segment = other.segments()[0]
    other._seal()  # (its lock is per open file: taken again below, as another process would hold it)
    with open(segment) as handle:
        fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        # when a replayer comes by, then it skips that segment
        assert SettlementSpool(tmp_path).replay(lambda e: True) == 0
        assert segment.exists()
    # and once the lock is gone, it is replayed
    assert SettlementSpool(tmp_path).replay(lambda e: True) == 1


@mock_aws
def test_dead_lettered_settlements_decode_to_the_same_entries(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    monkeypatch.delenv("ISTHMUS_SQS_ENDPOINT", raising=False)
    aws.reset()
    settlement_queue._clients.clear()
    sqs = boto3.client("sqs", region_name="us-east-1")
    url = sqs.create_queue(QueueName="dead")["QueueUrl"]
    monkeypatch.setenv("ISTHMUS_SETTLEMENT_DLQ_URL", url)
    assert settlement_queue.queue_url() == url
    entries = [{**ENTRY, "row": {**ENTRY["row"], "id": f"r{i}"}} for i in range(12)]  # two send batches
    settlement_queue.SqsDeadLetter(url).send(entries)
    got = []
    while batch := sqs.receive_message(QueueUrl=url, MaxNumberOfMessages=10).get("Messages", []):
        got += [loads(m["Body"]) for m in batch]
        for m in batch:
            sqs.delete_message(QueueUrl=url, ReceiptHandle=m["ReceiptHandle"])
    assert sorted(got, key=lambda e: int(e["row"]["id"][1:])) == entries
    settlement_queue._clients.clear()
    aws.reset()


def test_a_template_ref_that_is_not_a_url_is_no_queue(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_SETTLEMENT_DLQ_URL", "isthmus-settlementdeadletterqueue")  # the local edge's Ref
    assert settlement_queue.queue_url() is None
