"""Keys, users, budgets and settings over DynamoDB (sync; services call them through a thread pool).

The user row holds ``spend``, ``reserved``, a copy of its budget's ``max_budget`` and
``headroom`` = max_budget - spend - reserved. DynamoDB conditions cannot add two attributes, so every
write that moves spend, reserved or max_budget moves headroom in the same atomic UpdateItem; a hold is
then ``ADD reserved :x, headroom -:x`` conditioned on ``headroom >= :x``, which is exactly
``spend + reserved + :x <= max_budget`` without a read before the write.
"""

from __future__ import annotations

import contextlib
from collections.abc import Mapping
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
from isthmus.ports.tenancy import HoldTag


def _set_clause(fields: Mapping[str, Any]) -> tuple[str, dict[str, str], dict[str, Any]]:
    """``SET #a = :a, ...`` / ``REMOVE #b`` for a patch; None values are removed."""
    names: dict[str, str] = {}
    vals: dict[str, Any] = {}
    sets, removes = [], []
    for i, (k, v) in enumerate(fields.items()):
        names[f"#f{i}"] = k
        if v is None:
            removes.append(f"#f{i}")
        else:
            sets.append(f"#f{i} = :v{i}")
            vals[f":v{i}"] = v
    expr = ""
    if sets:
        expr += "SET " + ", ".join(sets)
    if removes:
        expr += (" " if expr else "") + "REMOVE " + ", ".join(removes)
    return expr, names, vals


class _Table:
    logical = ""
    pk = ""

    @property
    def name(self) -> str:
        return settings.table_name(self.logical)

    @property
    def ddb(self) -> Any:
        return dynamodb.client()

    def get(self, key: str) -> dict[str, Any] | None:
        out = self.ddb.get_item(TableName=self.name, Key={self.pk: {"S": key}}, ConsistentRead=True)
        return from_item(out.get("Item"))

    def put_new(self, item: Mapping[str, Any]) -> bool:
        """Put unless the key exists; False when it does."""
        try:
            self.ddb.put_item(TableName=self.name, Item=to_item(item), ConditionExpression="attribute_not_exists(#pk)",
                              ExpressionAttributeNames={"#pk": self.pk})
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False

    def update(self, key: str, fields: Mapping[str, Any], *, condition: str | None = None,
               cond_values: Mapping[str, Any] | None = None) -> dict[str, Any] | None:
        """Patch an existing item; None when it does not exist (or ``condition`` fails)."""
        expr, names, vals = _set_clause(fields)
        if not expr:
            return self.get(key)
        cond = "attribute_exists(#pk)" + (f" AND ({condition})" if condition else "")
        names["#pk"] = self.pk
        vals.update(cond_values or {})
        kwargs: dict[str, Any] = {"ExpressionAttributeNames": names}
        if vals:
            kwargs["ExpressionAttributeValues"] = values(vals)
        try:
            out = self.ddb.update_item(TableName=self.name, Key={self.pk: {"S": key}}, UpdateExpression=expr,
                                       ConditionExpression=cond, ReturnValues="ALL_NEW", **kwargs)
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return None
        return from_item(out["Attributes"])

    def delete(self, key: str) -> bool:
        try:
            self.ddb.delete_item(TableName=self.name, Key={self.pk: {"S": key}},
                                 ConditionExpression="attribute_exists(#pk)", ExpressionAttributeNames={"#pk": self.pk})
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False

    def scan(self) -> list[dict[str, Any]]:
        return list(scan_all(self.ddb, self.name, ConsistentRead=True))


class DynamoKeyStore(_Table):
    logical, pk = "keys", "key_id"

    def find_by_hash(self, key_hash: str) -> dict[str, Any] | None:
        """The key whose secret hashes to ``key_hash``. The index is eventually consistent, so the
        base item is re-read consistently and must still carry that hash (a rotated secret is dead at once)."""
        out = self.ddb.query(TableName=self.name, IndexName="by_hash", KeyConditionExpression="key_hash = :h",
                             ExpressionAttributeValues={":h": {"S": key_hash}}, Limit=5)
        for raw in out.get("Items", []):
            item = from_item(raw) or {}
            fresh = self.get(str(item["key_id"]))
            if fresh is not None and fresh.get("key_hash") == key_hash:
                return fresh
        return None

    def by_user(self, user_id: str) -> list[dict[str, Any]]:
        return list(query_all(self.ddb, self.name, IndexName="by_user", KeyConditionExpression="user_id = :u",
                              ExpressionAttributeValues={":u": {"S": user_id}}))


class DynamoSettingsStore(_Table):
    logical, pk = "settings", "name"

    def value(self, name: str) -> str | None:
        item = self.get(name)
        return None if item is None else str(item.get("value"))

    def put_if_absent(self, name: str, value: str) -> str:
        """Store ``value`` unless one is there; returns the value in force (race-safe across instances)."""
        if self.put_new({"name": name, "value": value}):
            return value
        current = self.value(name)
        assert current is not None
        return current


class DynamoBudgetStore(_Table):
    logical, pk = "budgets", "budget_id"


class DynamoUserStore(_Table):
    logical, pk = "users", "user_id"

    def create_or_revive(self, item: Mapping[str, Any]) -> bool:
        """Create the user; a soft-deleted one with the same id is replaced. False on a live duplicate."""
        try:
            self.ddb.put_item(TableName=self.name, Item=to_item(item),
                              ConditionExpression="attribute_not_exists(user_id) OR deleted = :t",
                              ExpressionAttributeValues={":t": {"BOOL": True}})
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False

    def with_budget(self, budget_id: str) -> list[dict[str, Any]]:
        return list(scan_all(self.ddb, self.name, ConsistentRead=True, FilterExpression="budget_id = :b",
                             ExpressionAttributeValues={":b": {"S": budget_id}}))

    def set_limit(self, user_id: str, max_budget: Decimal | None, extra: Mapping[str, Any]) -> dict[str, Any] | None:
        """Set (or clear) the copied ``max_budget`` and recompute headroom from the spend and reserved
        read, conditioned on both being unchanged (optimistic; retried on a race)."""
        for _ in range(20):
            user = self.get(user_id)
            if user is None:
                return None
            spend, reserved = Decimal(user.get("spend", 0)), Decimal(user.get("reserved", 0))
            fields = dict(extra)
            fields["max_budget"] = max_budget
            fields["headroom"] = None if max_budget is None else max_budget - spend - reserved
            updated = self.update(user_id, fields, condition="spend = :s0 AND reserved = :r0",
                                  cond_values={":s0": spend, ":r0": reserved})
            if updated is not None:
                return updated
        raise RuntimeError(f"could not set the budget of user {user_id}: too much contention")

    def reserve(self, user_id: str, amount: Decimal, tokens: int, tag: HoldTag | None = None) -> bool:
        """One conditional UpdateItem: the hold is taken only if it fits under max_budget. With a ``tag`` the
        hold's own record (owner, expiry) is put in the same transaction, so a dead process's hold can be
        reclaimed (isthmus.adapters.holds_ddb)."""
        update = {
            "TableName": self.name, "Key": {"user_id": {"S": user_id}},
            "UpdateExpression": "ADD reserved :x, headroom :nx, reserved_requests :one, reserved_tokens :t",
            "ConditionExpression": ("attribute_exists(user_id) AND "
                                    "(attribute_not_exists(max_budget) OR headroom >= :x)"),
            "ExpressionAttributeValues": values({":x": amount, ":nx": -amount, ":one": 1, ":t": tokens})}
        try:
            if tag is None:
                self.ddb.update_item(**update)
            else:
                holds_ddb.transact(self.ddb, [{"Update": update},
                                                             holds_ddb.hold_put(tag, user_id, amount, tokens)])
            return True
        except (self.ddb.exceptions.ConditionalCheckFailedException,
                self.ddb.exceptions.TransactionCanceledException) as exc:
            if tag is not None and cancellation_codes(exc)[:1] != [holds_ddb.CCF]:
                raise
            return False

    def lease(self, user_id: str, amount: Decimal, need: Decimal, tag: HoldTag | None = None,
              new: bool = True) -> str:
        """A budget lease (see isthmus.services.tenancy.budget_leases): ``amount`` moves from headroom to reserved,
        only while the user has at least ``need`` of headroom (or no budget limit), and onto the lease record
        ``tag`` in the same transaction. ``"ok"``; ``"refused"`` (no room); ``"lost"``: the existing record
        (``new=False``) is gone, reclaimed by the sweeper."""
        update = {
            "TableName": self.name, "Key": {"user_id": {"S": user_id}},
            "UpdateExpression": "ADD reserved :x, headroom :nx",
            "ConditionExpression": ("attribute_exists(user_id) AND "
                                    "(attribute_not_exists(max_budget) OR headroom >= :need)"),
            "ExpressionAttributeValues": values({":x": amount, ":nx": -amount, ":need": max(need, amount)})}
        try:
            if tag is None:
                self.ddb.update_item(**update)
            else:
                holds_ddb.transact(self.ddb, [{"Update": update},
                                                             holds_ddb.lease_add(tag, user_id, amount, new=new)])
            return "ok"
        except (self.ddb.exceptions.ConditionalCheckFailedException,
                self.ddb.exceptions.TransactionCanceledException) as exc:
            codes = cancellation_codes(exc) if tag is not None else [holds_ddb.CCF]
            if codes[:1] == [holds_ddb.CCF]:
                return "refused"
            if codes[1:2] == [holds_ddb.CCF]:
                return "lost"
            raise

    def release(self, user_id: str, amount: Decimal, record_id: str | None = None) -> None:
        """An unused lease back to headroom, and off its lease record in the same transaction (a deleted user
        has nothing to give back to; a reclaimed record was given back already)."""
        update = {"TableName": self.name, "Key": {"user_id": {"S": user_id}},
                  "UpdateExpression": "ADD reserved :nx, headroom :x",
                  "ConditionExpression": "attribute_exists(user_id)",
                  "ExpressionAttributeValues": values({":x": amount, ":nx": -amount})}
        if record_id is None:
            with contextlib.suppress(self.ddb.exceptions.ConditionalCheckFailedException):
                self.ddb.update_item(**update)
            return
        try:
            holds_ddb.transact(self.ddb, [{"Update": update}, holds_ddb.lease_sub(record_id, amount)])
        except self.ddb.exceptions.TransactionCanceledException as exc:
            if holds_ddb.CCF not in cancellation_codes(exc):
                raise

    def settle_update(self, user_id: str, *, cost: Decimal, hold: Decimal, tokens_held: int,
                      tokens_used: int, requests_held: int, requests: int = 1) -> dict[str, Any]:
        """The Update half of a settlement transaction (see DynamoUsageStore.settle); ``requests`` > 1 when
        several settlements of one user are summed into one update."""
        return {"Update": {
            "TableName": self.name, "Key": {"user_id": {"S": user_id}},
            "UpdateExpression": ("ADD spend :c, reserved :nh, headroom :d, reserved_requests :nrq, "
                                 "reserved_tokens :nt, current_requests :one, current_tokens :used"),
            "ConditionExpression": "attribute_exists(user_id)",
            "ExpressionAttributeValues": values({":c": cost, ":nh": -hold, ":d": hold - cost, ":nrq": -requests_held,
                                                 ":nt": -tokens_held, ":one": requests, ":used": tokens_used}),
        }}

    def reset_period(self, user: Mapping[str, Any], *, now_iso: str, next_iso: str | None) -> bool:
        """Lazy reset: spend (and the period's counters) to 0 and one history entry, in one write that
        only the first instance to see this period's end wins (conditioned on the old reset time and spend)."""
        has_max = user.get("max_budget") is not None
        head = ", headroom = max_budget - reserved" if has_max else ""
        entry = {"reset_at": now_iso, "previous_spend": Decimal(user.get("spend", 0)),
                 "budget_id": user.get("budget_id"), "next_reset_at": next_iso}
        vals: dict[str, Any] = {":zero": 0, ":old": user["next_budget_reset_at"], ":spend": user.get("spend", 0),
                                ":entry": [{k: v for k, v in entry.items() if v is not None}], ":empty": [],
                                ":started": now_iso}
        expr = ("SET spend = :zero, current_requests = :zero, current_tokens = :zero, budget_started_at = :started, "
                "reset_history = list_append(if_not_exists(reset_history, :empty), :entry)" + head)
        if next_iso is None:
            expr += " REMOVE next_budget_reset_at"
        else:
            expr = expr.replace("SET ", "SET next_budget_reset_at = :next, ", 1)
            vals[":next"] = next_iso
        cond = "next_budget_reset_at = :old AND spend = :spend AND " + \
            ("attribute_exists(max_budget)" if has_max else "attribute_not_exists(max_budget)")
        try:
            self.ddb.update_item(TableName=self.name, Key={"user_id": {"S": str(user["user_id"])}},
                                 UpdateExpression=expr, ConditionExpression=cond,
                                 ExpressionAttributeValues=values(vals))
            return True
        except Exception as exc:
            if is_conditional_failure(exc):
                return False
            raise
