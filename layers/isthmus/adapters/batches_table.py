"""BatchStore over the ``batches`` table.

Two kinds of items share the table:
- the head, keyed by the batch id: the batch's fields as attributes (``errors`` and ``metadata`` as JSON text),
  ``owner_id`` and a sortable ``created_at`` (``<unix seconds, 12 digits>#<write's ns clock>#<batch id>``) for the
  by_owner index,
  the int creation time in ``created_unix``;
- one item per input line, keyed ``<batch id>#<n>``, with no ``owner_id`` (so lines stay out of the index):
  the request (``custom_id``, ``body`` as JSON text), its lease (``lease_owner``, ``lease_until``), the number of
  ``attempts`` and, once done, ``done_at``, ``ok`` and ``result`` (the output line, JSON text).

A line is claimed with a conditional write (not done, no live lease) and finished with a transaction that
records the result only if the line is still not done and still leased by the finisher, and counts it on the
head: a line is run to completion once, and the head's counts are exact. Everything expires by TTL
(``expires_at_epoch``) ``RETENTION_S`` after the completion window.
"""

from __future__ import annotations

import json
import time
from collections.abc import Collection, Mapping, Sequence
from decimal import Decimal
from typing import Any

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.ddb_items import from_item, is_conditional_failure, query_all, scan_all, to_item, to_value
from isthmus.ports.batches import Item

JSON_FIELDS = ("errors", "metadata")
_HEAD_ONLY = ("owner_id", "created_at", "created_unix", "expires_at_epoch")
RETENTION_S = 30 * 24 * 3600


def _line_key(batch_id: str, n: int) -> dict[str, Any]:
    return {"batch_id": {"S": f"{batch_id}#{n}"}}


def _sort_key(created_unix: int, batch_id: str) -> str:
    # The write's nanosecond clock between the seconds and the id: batches made in the same second list in the
    # order they were made (by the id alone, their order was the ids' random one).
    return f"{int(created_unix):012d}#{time.time_ns():020d}#{batch_id}"


def _plain(value: Any) -> Any:
    return int(value) if isinstance(value, Decimal) and value == value.to_integral_value() else value


def _head_out(item: Mapping[str, Any]) -> Item:
    head = {k: _plain(v) for k, v in item.items() if k not in _HEAD_ONLY}
    head["created_at"] = int(item["created_unix"])
    head["owner_id"] = item["owner_id"]
    for name in JSON_FIELDS:
        if isinstance(head.get(name), str):
            head[name] = json.loads(head[name])
    return head


def _encode(fields: Mapping[str, Any]) -> dict[str, Any]:
    return {k: (json.dumps(v) if k in JSON_FIELDS and v is not None else v) for k, v in fields.items()}


def _updated_or_none(**update: Any) -> dict[str, Any] | None:
    """The item as a conditional ``update_item`` left it (decoded), or None when its condition did not hold."""
    try:
        out = dynamodb.client().update_item(**update, ReturnValues="ALL_NEW")
    except Exception as exc:
        if is_conditional_failure(exc):
            return None
        raise
    return from_item(out["Attributes"])


class DynamoBatchStore:
    @property
    def table(self) -> str:
        return settings.table_name("batches")

    def _expiry(self, expires_at: int) -> int:
        return int(expires_at) + RETENTION_S

    # ---- heads ----------------------------------------------------------------------------------------------
    def put_batch(self, head: Mapping[str, Any]) -> None:
        fields = _encode(head)
        fields.update(created_at=_sort_key(head["created_at"], head["batch_id"]), created_unix=head["created_at"],
                      expires_at_epoch=self._expiry(head["expires_at"]))
        dynamodb.client().put_item(TableName=self.table, Item=to_item(fields),
                                   ConditionExpression="attribute_not_exists(batch_id)")

    def get_batch(self, batch_id: str) -> Item | None:
        item = from_item(dynamodb.client().get_item(TableName=self.table, Key={"batch_id": {"S": batch_id}},
                                                    ConsistentRead=True).get("Item"))
        if item is None or "owner_id" not in item or int(item["expires_at_epoch"]) <= time.time():
            return None
        return _head_out(item)

    def transition(self, batch_id: str, fields: Mapping[str, Any], *, from_status: Collection[str]) -> Item | None:
        names: dict[str, str] = {"#status": "status"}
        vals: dict[str, Any] = {}
        sets, removes = [], []
        for i, (name, value) in enumerate(_encode(fields).items()):
            names[f"#f{i}"] = name
            if value is None:
                removes.append(f"#f{i}")
            else:
                sets.append(f"#f{i} = :v{i}")
                vals[f":v{i}"] = to_value(value)
        allowed = []
        for i, status in enumerate(from_status):
            allowed.append(f":s{i}")
            vals[f":s{i}"] = to_value(status)
        expression = (f"SET {', '.join(sets)}" if sets else "") + (f" REMOVE {', '.join(removes)}" if removes else "")
        item = _updated_or_none(
            TableName=self.table, Key={"batch_id": {"S": batch_id}}, UpdateExpression=expression.strip(),
            ConditionExpression=f"attribute_exists(owner_id) AND #status IN ({', '.join(allowed)})",
            ExpressionAttributeNames=names, ExpressionAttributeValues=vals)
        return _head_out(item) if item is not None else None

    def list_batches(self, owner_id: str | None, *, after: str | None, limit: int) -> tuple[list[Item], bool]:
        before = None
        if after:
            if self.get_batch(after) is None:
                return [], False
            stored = dynamodb.client().get_item(TableName=self.table, Key={"batch_id": {"S": after}},
                                                ConsistentRead=True, ProjectionExpression="created_at")
            if "Item" not in stored:  # deleted since
                return [], False
            before = stored["Item"]["created_at"]["S"]  # the sort key as written (it holds the write's clock)
        now = int(time.time())
        if owner_id is not None:
            cond, vals = "owner_id = :o", {":o": {"S": owner_id}}
            if before:
                cond += " AND created_at < :b"
                vals[":b"] = {"S": before}
            items = query_all(dynamodb.client(), self.table, IndexName="by_owner", KeyConditionExpression=cond,
                              ExpressionAttributeValues=vals, ScanIndexForward=False)
            heads = []
            for item in items:  # newest first: stop once the page (and one more, for has_more) is there
                if int(item["expires_at_epoch"]) > now:
                    heads.append(item)
                if len(heads) > limit:
                    break
        else:  # the master key: every owner's, sorted here (a scan of the heads' index; the master lists rarely)
            heads = sorted((i for i in scan_all(dynamodb.client(), self.table, IndexName="by_owner")
                            if int(i["expires_at_epoch"]) > now and (before is None or i["created_at"] < before)),
                           key=lambda i: str(i["created_at"]), reverse=True)[:limit + 1]
        return [_head_out(h) for h in heads[:limit]], len(heads) > limit

    def active_batch_ids(self, statuses: Collection[str]) -> list[str]:
        vals = {f":s{i}": {"S": s} for i, s in enumerate(statuses)}
        # the owner index holds heads only (lines carry no owner_id): a poll never reads a batch's lines
        items = scan_all(dynamodb.client(), self.table, IndexName="by_owner", ProjectionExpression="batch_id",
                         FilterExpression=f"#status IN ({', '.join(vals)})",
                         ExpressionAttributeNames={"#status": "status"}, ExpressionAttributeValues=vals)
        return [str(i["batch_id"]) for i in items]

    # ---- lines ----------------------------------------------------------------------------------------------
    def put_lines(self, batch_id: str, lines: Sequence[Mapping[str, Any]]) -> None:
        expires = int(time.time()) + 2 * RETENTION_S  # the head's TTL is the bound that counts; lines outlive it
        client = dynamodb.client()
        for start in range(0, len(lines), 25):
            requests = [{"PutRequest": {"Item": {
                **_line_key(batch_id, int(line["n"])), "n": {"N": str(int(line["n"]))},
                "custom_id": {"S": str(line["custom_id"])}, "body": {"S": json.dumps(line["body"])},
                "expires_at_epoch": {"N": str(expires)}}}} for line in lines[start:start + 25]]
            pending: dict[str, Any] = {self.table: requests}
            for attempt in range(8):
                out = client.batch_write_item(RequestItems=pending)
                pending = out.get("UnprocessedItems") or {}
                if not pending:
                    break
                time.sleep(0.05 * 2 ** attempt)
            if pending:
                raise RuntimeError("DynamoDB kept refusing batch line writes")

    def lines(self, batch_id: str, total: int, *, results: bool = True) -> list[Item]:
        client = dynamodb.client()
        found: dict[int, Item] = {}
        wanted: dict[str, Any] = {"ConsistentRead": True}
        if not results:  # what a dispatcher needs: not the answers of the lines already done
            names = ("n", "custom_id", "body", "attempts", "done_at", "ok")
            wanted.update(ProjectionExpression=", ".join(f"#p{i}" for i in range(len(names))),
                          ExpressionAttributeNames={f"#p{i}": name for i, name in enumerate(names)})
        for start in range(0, total, 100):
            keys = [_line_key(batch_id, n) for n in range(start, min(total, start + 100))]
            pending: dict[str, Any] = {self.table: {"Keys": keys, **wanted}}
            for attempt in range(8):
                out = client.batch_get_item(RequestItems=pending)
                for raw in out.get("Responses", {}).get(self.table, []):
                    item = from_item(raw)
                    assert item is not None
                    found[int(item["n"])] = _line_out(item)
                pending = out.get("UnprocessedKeys") or {}
                if not pending:
                    break
                time.sleep(0.05 * 2 ** attempt)
        return [found[n] for n in range(total) if n in found]

    def claim_line(self, batch_id: str, n: int, worker: str, lease_until: float, now: float) -> Item | None:
        item = _updated_or_none(
            TableName=self.table, Key=_line_key(batch_id, n),
            UpdateExpression="SET lease_owner = :w, lease_until = :u ADD attempts :one",
            ConditionExpression="attribute_exists(custom_id) AND attribute_not_exists(done_at) "
                                "AND (attribute_not_exists(lease_until) OR lease_until < :now)",
            ExpressionAttributeValues={":w": {"S": worker}, ":u": to_value(Decimal(str(round(lease_until, 3)))),
                                       ":one": {"N": "1"}, ":now": to_value(Decimal(str(round(now, 3))))})
        return _line_out(item) if item is not None else None

    def renew_lease(self, batch_id: str, n: int, worker: str, lease_until: float) -> bool:
        try:
            dynamodb.client().update_item(
                TableName=self.table, Key=_line_key(batch_id, n), UpdateExpression="SET lease_until = :u",
                ConditionExpression="lease_owner = :w AND attribute_not_exists(done_at)",
                ExpressionAttributeValues={":w": {"S": worker},
                                           ":u": to_value(Decimal(str(round(lease_until, 3))))})
        except Exception as exc:
            if is_conditional_failure(exc):
                return False
            raise
        return True

    def finish_line(self, batch_id: str, n: int, worker: str, result: Mapping[str, Any], *, ok: bool) -> bool:
        counter = "completed" if ok else "failed"
        try:
            dynamodb.client().transact_write_items(TransactItems=[
                {"Update": {"TableName": self.table, "Key": _line_key(batch_id, n),
                            "UpdateExpression": "SET done_at = :t, ok = :ok, #result = :r REMOVE lease_until",
                            "ConditionExpression": "attribute_not_exists(done_at) AND lease_owner = :w",
                            "ExpressionAttributeNames": {"#result": "result"},
                            "ExpressionAttributeValues": {":t": {"N": str(int(time.time()))}, ":ok": {"BOOL": ok},
                                                          ":r": {"S": json.dumps(result)}, ":w": {"S": worker}}}},
                {"Update": {"TableName": self.table, "Key": {"batch_id": {"S": batch_id}},
                            "UpdateExpression": f"ADD {counter} :one",
                            "ConditionExpression": "attribute_exists(owner_id)",
                            "ExpressionAttributeValues": {":one": {"N": "1"}}}},
            ])
        except Exception as exc:
            code = (getattr(exc, "response", None) or {}).get("Error", {}).get("Code", "")
            if code == "TransactionCanceledException":
                return False
            raise
        return True


def _line_out(item: Mapping[str, Any]) -> Item:
    line: Item = {"n": int(item["n"]), "custom_id": item["custom_id"], "body": json.loads(item["body"]),
                  "attempts": int(item.get("attempts") or 0), "done": "done_at" in item}
    if "done_at" in item:
        line["ok"] = bool(item.get("ok"))
        if "result" in item:
            line["result"] = json.loads(item["result"])
    return line
