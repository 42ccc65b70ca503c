"""Usage rows, versioned prices and rate-limit buckets over DynamoDB (sync)."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from typing import Any

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.ddb_items import (
    cancellation_codes,
    from_item,
    is_conditional_failure,
    query_all,
    scan_all,
    to_item,
    values,
)


class DynamoUsageStore:
    @property
    def name(self) -> str:
        return settings.table_name("usage")

    def put(self, row: Mapping[str, Any]) -> bool:
        """Write a row once; False when a row with that id already exists."""
        ddb = dynamodb.client()
        try:
            ddb.put_item(TableName=self.name, Item=to_item(row), ConditionExpression="attribute_not_exists(id)")
            return True
        except ddb.exceptions.ConditionalCheckFailedException:
            return False

    def settle(self, row: Mapping[str, Any], user_update: dict[str, Any] | None) -> bool:
        """The usage row and the user's reconciliation in one transaction, keyed by the row id: a second
        settlement of the same admission changes nothing and answers False."""
        if user_update is None:
            return self.put(row)
        ddb = dynamodb.client()
        put = {"Put": {"TableName": self.name, "Item": to_item(row), "ConditionExpression": "attribute_not_exists(id)"}}
        try:
            ddb.transact_write_items(TransactItems=[put, user_update])
            return True
        except ddb.exceptions.TransactionCanceledException as exc:
            codes = cancellation_codes(exc)
            if codes and codes[0] == "ConditionalCheckFailed":
                return False  # already settled
            if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                return self.put(row)  # the user is gone: keep the row anyway
            raise

    def settle_many(self, rows: Sequence[Mapping[str, Any]], user_updates: Sequence[dict[str, Any]]) -> bool:
        """Several settlements in one transaction (each row once, each user's updates already summed).
        False when any row was already written or any user is gone: nothing was written, and the caller
        settles the rows one by one instead."""
        ddb = dynamodb.client()
        puts = [{"Put": {"TableName": self.name, "Item": to_item(row),
                         "ConditionExpression": "attribute_not_exists(id)"}} for row in rows]
        try:
            ddb.transact_write_items(TransactItems=[*puts, *user_updates])
            return True
        except ddb.exceptions.TransactionCanceledException as exc:
            if "ConditionalCheckFailed" in cancellation_codes(exc):
                return False
            raise

    def get(self, row_id: str) -> dict[str, Any] | None:
        out = dynamodb.client().get_item(TableName=self.name, Key={"id": {"S": row_id}}, ConsistentRead=True)
        return from_item(out.get("Item"))

    def candidates(self, *, user_ids: Sequence[str] = (), api_key_id: str | None = None,
                   start: str | None = None, end: str | None = None) -> list[dict[str, Any]]:
        """Rows that may match: an index query per user (or for the key) within [start, end], else a scan.
        The caller applies the remaining filters, the order and the page."""
        ddb = dynamodb.client()
        lo, hi = start or "0000", end or "9999"
        between = {":lo": {"S": lo}, ":hi": {"S": hi}}
        if user_ids:
            rows: list[dict[str, Any]] = []
            for uid in dict.fromkeys(user_ids):
                rows += query_all(ddb, self.name, IndexName="by_user",
                                  KeyConditionExpression="user_id = :k AND #ts BETWEEN :lo AND :hi",
                                  ExpressionAttributeNames={"#ts": "timestamp"},
                                  ExpressionAttributeValues={":k": {"S": uid}, **between}, ScanIndexForward=False)
            return rows
        if api_key_id:
            return list(query_all(ddb, self.name, IndexName="by_key",
                                  KeyConditionExpression="api_key_id = :k AND #ts BETWEEN :lo AND :hi",
                                  ExpressionAttributeNames={"#ts": "timestamp"},
                                  ExpressionAttributeValues={":k": {"S": api_key_id}, **between},
                                  ScanIndexForward=False))
        days = _days(start, end)
        if days is not None:
            rows = []
            for day in days:
                rows += query_all(ddb, self.name, IndexName="by_day",
                                  KeyConditionExpression="#d = :k AND #ts BETWEEN :lo AND :hi",
                                  ExpressionAttributeNames={"#ts": "timestamp", "#d": "day"},
                                  ExpressionAttributeValues={":k": {"S": day}, **between}, ScanIndexForward=False)
            return rows
        return list(scan_all(ddb, self.name, FilterExpression="#ts BETWEEN :lo AND :hi",
                             ExpressionAttributeNames={"#ts": "timestamp"}, ExpressionAttributeValues=between))


class DynamoPricingStore:
    @property
    def name(self) -> str:
        return settings.table_name("pricing")

    def put(self, item: Mapping[str, Any]) -> None:
        dynamodb.client().put_item(TableName=self.name, Item=to_item(item))

    def get(self, model_key: str, effective_at: str) -> dict[str, Any] | None:
        out = dynamodb.client().get_item(TableName=self.name, ConsistentRead=True,
                                         Key={"model_key": {"S": model_key}, "effective_at": {"S": effective_at}})
        return from_item(out.get("Item"))

    def effective(self, model_key: str, as_of: str) -> dict[str, Any] | None:
        """The newest version with effective_at <= as_of."""
        out = dynamodb.client().query(
            TableName=self.name, ConsistentRead=True, ScanIndexForward=False, Limit=1,
            KeyConditionExpression="model_key = :m AND effective_at <= :t",
            ExpressionAttributeValues={":m": {"S": model_key}, ":t": {"S": as_of}})
        items = out.get("Items", [])
        return from_item(items[0]) if items else None

    def history(self, model_key: str) -> list[dict[str, Any]]:
        return list(query_all(dynamodb.client(), self.name, ConsistentRead=True, ScanIndexForward=False,
                              KeyConditionExpression="model_key = :m",
                              ExpressionAttributeValues={":m": {"S": model_key}}))

    def all_versions(self) -> list[dict[str, Any]]:
        return list(scan_all(dynamodb.client(), self.name, ConsistentRead=True))

    def delete(self, model_key: str, effective_at: str) -> bool:
        ddb = dynamodb.client()
        try:
            ddb.delete_item(TableName=self.name, ConditionExpression="attribute_exists(model_key)",
                            Key={"model_key": {"S": model_key}, "effective_at": {"S": effective_at}})
            return True
        except ddb.exceptions.ConditionalCheckFailedException:
            return False


class DynamoRateLimiter:
    """Per-minute buckets shared by every instance: ``ADD n :amount`` only while the total stays <= limit."""

    @property
    def name(self) -> str:
        return settings.table_name("ratelimits")

    def take(self, bucket: str, amount: int, limit: int, expires_epoch: int) -> tuple[bool, int | None]:
        """(taken, count after the take — or the count that refused it when the engine tells)."""
        if amount > limit:
            return False, None
        ddb = dynamodb.client()
        try:
            out = ddb.update_item(
                TableName=self.name, Key={"bucket": {"S": bucket}},
                UpdateExpression="ADD n :a SET expires_at_epoch = :exp",
                ConditionExpression="attribute_not_exists(n) OR n <= :room",
                ExpressionAttributeValues=values({":a": amount, ":room": limit - amount, ":exp": expires_epoch}),
                ReturnValues="UPDATED_NEW", ReturnValuesOnConditionCheckFailure="ALL_OLD")
            return True, int(out["Attributes"]["n"]["N"])
        except Exception as exc:
            if not is_conditional_failure(exc):
                raise
            old = (getattr(exc, "response", None) or {}).get("Item") or {}
            return False, int(old["n"]["N"]) if "n" in old else None

    def give_back(self, bucket: str, amount: int) -> None:
        dynamodb.client().update_item(TableName=self.name, Key={"bucket": {"S": bucket}},
                                      UpdateExpression="ADD n :a", ExpressionAttributeValues=values({":a": -amount}))


MAX_DAY_QUERIES = 62


def _days(start: str | None, end: str | None) -> list[str] | None:
    """The UTC days of [start, end] (end defaults to today) when few enough to query the by_day index one by
    one; None means scan (no start, or a long range)."""
    if not start:
        return None
    first = date.fromisoformat(start[:10])
    last = date.fromisoformat(end[:10]) if end else datetime.now(UTC).date()
    count = (last - first).days + 1
    if count > MAX_DAY_QUERIES:
        return None
    return [(first + timedelta(days=i)).isoformat() for i in range(max(0, count))]
