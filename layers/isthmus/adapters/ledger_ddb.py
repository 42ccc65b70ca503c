"""Usage rows, versioned prices and rate-limit buckets over DynamoDB (sync)."""

from __future__ import annotations

import contextlib
import random
import time
from collections.abc import Mapping, Sequence
from datetime import UTC, date, datetime, timedelta
from decimal import Decimal
from typing import Any

from isthmus import settings
from isthmus.adapters import dynamodb, holds_ddb
from isthmus.adapters.ddb_items import (
    cancellation_codes,
    from_item,
    is_conditional_failure,
    query_all,
    scan_all,
    to_item,
    values,
)
from isthmus.adapters.tenancy_ddb import DynamoUserStore
from isthmus.ports.tenancy import Charge


def _user_updates(charges: Sequence[Charge]) -> list[dict[str, Any]]:
    """One update per user: the charges' amounts summed (every field is an ADD)."""
    per_user: dict[str, list[Charge]] = {}
    for c in charges:
        per_user.setdefault(c.user_id, []).append(c)
    users = DynamoUserStore()
    return [users.settle_update(
        user_id, cost=sum((c.cost for c in group), Decimal(0)), hold=sum((c.hold for c in group), Decimal(0)),
        tokens_held=sum(c.tokens_held for c in group), tokens_used=sum(c.tokens_used for c in group),
        requests_held=sum(c.requests_held for c in group), requests=sum(c.requests for c in group))
        for user_id, group in per_user.items()]


class DynamoUsageStore:
    @property
    def name(self) -> str:
        return settings.table_name("usage")

    def put(self, row: Mapping[str, Any]) -> bool:
        """Write a row once; False when a row with that id already exists."""
        ddb = dynamodb.client()
        try:
            dynamodb.writer(ddb).put_item(TableName=self.name, Item=to_item(row),
                                          ConditionExpression="attribute_not_exists(id)")
            return True
        except ddb.exceptions.ConditionalCheckFailedException:
            return False

    def settle(self, row: Mapping[str, Any], charge: Charge | None) -> bool:
        """The usage row, the user's reconciliation and the hold's record in one transaction, keyed by the row
        id: a second settlement of the same admission changes nothing and answers False. A hold whose record
        the sweeper already reclaimed (and gave back) is settled late: the cost alone (see _settle_late)."""
        if charge is None:
            return self.put(row)
        ddb = dynamodb.client()
        put = {"Put": {"TableName": self.name, "Item": to_item(row), "ConditionExpression": "attribute_not_exists(id)"}}
        try:
            holds_ddb.transact(ddb, [put, *_user_updates([charge]), *holds_ddb.settle_ops([charge])])
            return True
        except ddb.exceptions.TransactionCanceledException as exc:
            codes = cancellation_codes(exc)
            if codes and codes[0] == "ConditionalCheckFailed":
                return False  # already settled
            if len(codes) > 1 and codes[1] == "ConditionalCheckFailed":
                if charge.hold_record and not charge.leased:  # the user is gone: keep the row, drop the record
                    with contextlib.suppress(Exception):
                        ddb.delete_item(TableName=holds_ddb.table(), Key={"hold_id": {"S": charge.hold_record}})
                return self.put(row)
            if len(codes) > 2 and codes[2] == "ConditionalCheckFailed":
                return self._settle_late(row, charge)
            raise

    def _settle_late(self, row: Mapping[str, Any], charge: Charge) -> bool:
        """A settlement after its hold was reclaimed: spend += cost, but never past max_budget (the hold that
        made room for it is gone); what could not be charged is on the row as ``unbilled_cost``. Optimistic:
        conditioned on the spend and limit read, retried on a race; the row still goes in once."""
        ddb = dynamodb.client()
        users = settings.table_name("users")
        for _ in range(20):
            out = ddb.get_item(TableName=users, Key={"user_id": {"S": charge.user_id}}, ConsistentRead=True)
            user = from_item(out.get("Item"))
            if user is None:
                return self.put(row)
            spend = Decimal(user.get("spend", 0))
            limit = user.get("max_budget")
            charged = charge.cost if limit is None else max(Decimal(0), min(charge.cost, Decimal(limit) - spend))
            late_row = dict(row)
            if charged < charge.cost:  # the row says what was charged; the rest joins any excess already capped
                late_row["cost"] = charged
                late_row["unbilled_cost"] = Decimal(row.get("unbilled_cost") or 0) + charge.cost - charged
            vals: dict[str, Any] = {":c": charged, ":nc": -charged, ":one": charge.requests,
                                    ":used": charge.tokens_used}
            cond = "attribute_not_exists(spend)"
            if "spend" in user:
                cond, vals[":s0"] = "spend = :s0", user["spend"]
            if limit is None:
                cond += " AND attribute_not_exists(max_budget)"
            else:
                cond += " AND max_budget = :m0"
                vals[":m0"] = limit
            update = {"Update": {
                "TableName": users, "Key": {"user_id": {"S": charge.user_id}},
                "UpdateExpression": "ADD spend :c, headroom :nc, current_requests :one, current_tokens :used",
                "ConditionExpression": cond, "ExpressionAttributeValues": values(vals)}}
            put = {"Put": {"TableName": self.name, "Item": to_item(late_row),
                           "ConditionExpression": "attribute_not_exists(id)"}}
            try:
                holds_ddb.transact(ddb, [put, update])
                return True
            except ddb.exceptions.TransactionCanceledException as exc:
                codes = cancellation_codes(exc)
                if codes and codes[0] == "ConditionalCheckFailed":
                    return False  # already settled
                if len(codes) < 2 or codes[1] != "ConditionalCheckFailed":
                    raise
                time.sleep(random.uniform(0, 0.01))  # another settlement moved spend first: read it again
        raise RuntimeError(f"could not settle {row.get('id')} late: too much contention on user {charge.user_id}")

    def settle_many(self, rows: Sequence[Mapping[str, Any]], charges: Sequence[Charge]) -> bool:
        """Several settlements in one transaction (each row once, each user's and each lease record's amounts
        summed). False when any row was already written, any user is gone or any hold record was reclaimed:
        nothing was written, and the caller settles the rows one by one instead."""
        ddb = dynamodb.client()
        name = self.name
        puts = [{"Put": {"TableName": name, "Item": to_item(row),
                         "ConditionExpression": "attribute_not_exists(id)"}} for row in rows]
        try:
            holds_ddb.transact(ddb, [*puts, *_user_updates(charges), *holds_ddb.settle_ops(charges)])
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
