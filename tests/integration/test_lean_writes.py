"""The lean writes (isthmus.adapters.ddb_lean) against DynamoDB Local: the usage store's settlements go through
them, a batch with one row already written is refused whole (nothing of it lands), a reservation's failed
condition comes back as botocore's own modeled error with its reasons, and the rows read back as written."""

from __future__ import annotations

import uuid
from decimal import Decimal

import pytest

from isthmus.adapters import dynamodb, holds_ddb
from isthmus.adapters.ddb_items import cancellation_codes
from isthmus.adapters.ddb_lean import LeanDynamo
from isthmus.adapters.ledger_ddb import DynamoUsageStore

pytestmark = pytest.mark.integration


def usage_row(**extra: object) -> dict[str, object]:
    return {"id": uuid.uuid4().hex, "timestamp": "2026-11-30T23:00:00+00:00", "day": "2026-11-30",
            "user_id": "anonymous", "model": "m", "prompt_tokens": 12, "completion_tokens": 8, "cost": Decimal("0"),
            "stream": False, "text": "東京の天気は", **extra}


def test_settlements_go_through_the_lean_writer_and_land_whole_or_not_at_all(ddb_tables: str) -> None:
    # given the store client on DynamoDB Local, with its lean writer
    assert isinstance(dynamodb.lean(dynamodb.client()), LeanDynamo)
    usage = DynamoUsageStore()
    written = [usage_row() for _ in range(40)]
    # when 40 rows are settled in one transaction
    assert usage.settle_many(written, []) is True
    # then each reads back as written (CJK text, numbers as Decimal, booleans)
    back = usage.get(str(written[7]["id"]))
    assert back is not None and back["text"] == "東京の天気は" and back["prompt_tokens"] == Decimal(12)
    assert back["stream"] is False
    # when a batch holds one row already written and three new ones
    fresh = [usage_row() for _ in range(3)]
    assert usage.settle_many([*fresh, written[0]], []) is False
    # then none of the new rows landed, and a lone row written twice is refused the second time
    assert all(usage.get(str(r["id"])) is None for r in fresh)
    assert usage.put(fresh[0]) is True and usage.put(fresh[0]) is False


def test_a_failed_condition_in_a_transaction_is_botocores_modeled_error_with_reasons(ddb_tables: str) -> None:
    ddb = dynamodb.client()
    row = usage_row()
    put = {"Put": {"TableName": DynamoUsageStore().name, "Item": {"id": {"S": str(row["id"])}},
                   "ConditionExpression": "attribute_not_exists(id)"}}
    holds_ddb.transact(ddb, [put])
    with pytest.raises(ddb.exceptions.TransactionCanceledException) as caught:
        holds_ddb.transact(ddb, [put])
    assert cancellation_codes(caught.value) == ["ConditionalCheckFailed"]
