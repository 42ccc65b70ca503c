"""Hold, lease and owner records over DynamoDB: every amount in a user's ``reserved`` is also written down
here, with the process that owns it and an expiry, so that a process that dies cannot strand it.

Records (table ``holds``, key ``hold_id``):
- ``hold#<admission id>``: one exact hold (amount, tokens, 1 request), put in the same transaction as the
  user row's reservation and deleted in the same transaction as its settlement;
- ``lease#<owner>#<user>#<n>``: the part of a user's ``reserved`` that one process's budget lease stands for
  (the unused balance plus the holds carved from it and not yet settled); every lease, release and
  settlement moves its ``amount`` in the same transaction as the user row;
- ``owner#<owner>``: a live process's heartbeat. While it is fresh, none of that owner's records is reclaimed.

Reclaiming (the sweeper) gives a record's amount back to the user and deletes the record in one transaction
conditioned on the record being unchanged and its owner's heartbeat being stale, so it serialises with a late
settlement of the same hold: whichever comes second sees the other's write (see DynamoUsageStore.settle).
"""

from __future__ import annotations

import random
import time
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.ddb_items import cancellation_codes, scan_all, to_item, values
from isthmus.ports.tenancy import Charge, HoldTag

CCF = "ConditionalCheckFailed"
CONFLICT_ATTEMPTS = 6


def transact(ddb: Any, items: list[dict[str, Any]]) -> None:
    """TransactWriteItems, tried again (jittered, a few ms) when only cancelled by another transaction in flight on
    one of its items (``TransactionConflict``: the user row is hot, and reservations, leases and settlements are
    all transactions on it); botocore does not retry a cancelled transaction. A failed condition is final. Sent
    as a lean call when the client has one (isthmus.adapters.ddb_lean: the same errors, a fraction of the CPU)."""
    send = dynamodb.writer(ddb).transact_write_items
    for attempt in range(CONFLICT_ATTEMPTS):
        try:
            send(TransactItems=items)
            return
        except ddb.exceptions.TransactionCanceledException as exc:
            codes = cancellation_codes(exc)
            if "TransactionConflict" not in codes or CCF in codes or attempt == CONFLICT_ATTEMPTS - 1:
                raise
            time.sleep(random.uniform(0, 0.004 * 2 ** attempt))


def table() -> str:
    return settings.table_name("holds")


def owner_key(owner: str) -> str:
    return f"owner#{owner}"


def hold_put(tag: HoldTag, user_id: str, amount: Decimal, tokens: int) -> dict[str, Any]:
    """The Put of an exact hold's record (the second half of DynamoUserStore.reserve's transaction)."""
    item = {"hold_id": tag.record_id, "kind": "hold", "user_id": user_id, "amount": amount, "tokens": tokens,
            "requests": 1, "owner": tag.owner, "expires_at": tag.expires_at}
    return {"Put": {"TableName": table(), "Item": to_item(item),
                    "ConditionExpression": "attribute_not_exists(hold_id)"}}


def lease_add(tag: HoldTag, user_id: str, amount: Decimal, *, new: bool) -> dict[str, Any]:
    """``amount`` more on a lease record: a new one is created, an existing one must still be there (else the
    sweeper reclaimed it, and the balance the process thinks it has was given back)."""
    vals: dict[str, Any] = {":x": amount, ":u": user_id, ":k": "lease", ":e": tag.expires_at}
    expr = "ADD amount :x SET user_id = :u, kind = :k, expires_at = :e"
    if tag.owner is not None:
        expr += ", #o = :o"
        vals[":o"] = tag.owner
    update: dict[str, Any] = {
        "TableName": table(), "Key": {"hold_id": {"S": tag.record_id}}, "UpdateExpression": expr,
        "ConditionExpression": "attribute_not_exists(hold_id)" if new else "attribute_exists(hold_id)",
        "ExpressionAttributeValues": values(vals)}
    if tag.owner is not None:
        update["ExpressionAttributeNames"] = {"#o": "owner"}
    return {"Update": update}


def lease_sub(record_id: str, amount: Decimal) -> dict[str, Any]:
    """``amount`` off a lease record that must still exist (a release, or settlements carved from it)."""
    return {"Update": {"TableName": table(), "Key": {"hold_id": {"S": record_id}},
                       "UpdateExpression": "ADD amount :nx", "ConditionExpression": "attribute_exists(hold_id)",
                       "ExpressionAttributeValues": values({":nx": -amount})}}


def hold_delete(record_id: str) -> dict[str, Any]:
    return {"Delete": {"TableName": table(), "Key": {"hold_id": {"S": record_id}},
                       "ConditionExpression": "attribute_exists(hold_id)"}}


def settle_ops(charges: Sequence[Charge]) -> list[dict[str, Any]]:
    """The holds-table half of settling ``charges``: each exact hold's record deleted, each lease record
    reduced by the holds carved from it (summed: a record appears once per transaction)."""
    ops: list[dict[str, Any]] = []
    per_lease: dict[str, Decimal] = {}
    for c in charges:
        if c.hold_record is None:
            continue
        if c.leased:
            per_lease[c.hold_record] = per_lease.get(c.hold_record, Decimal(0)) + c.hold
        else:
            ops.append(hold_delete(c.hold_record))
    ops += [lease_sub(record_id, amount) for record_id, amount in per_lease.items()]
    return ops


def give_back(user_id: str, record: Mapping[str, Any]) -> dict[str, Any]:
    """The user-row half of a reclaim: the record's amount (and an exact hold's counters) back to headroom."""
    amount = Decimal(record.get("amount", 0))
    return {"Update": {
        "TableName": settings.table_name("users"), "Key": {"user_id": {"S": user_id}},
        "UpdateExpression": "ADD reserved :nx, headroom :x, reserved_requests :nr, reserved_tokens :nt",
        "ConditionExpression": "attribute_exists(user_id)",
        "ExpressionAttributeValues": values({":x": amount, ":nx": -amount,
                                             ":nr": -int(record.get("requests", 0)),
                                             ":nt": -int(record.get("tokens", 0))})}}


class DynamoHoldStore:
    @property
    def ddb(self) -> Any:
        return dynamodb.client()

    def heartbeat(self, owner: str, expires_at: Decimal) -> None:
        self.ddb.put_item(TableName=table(), Item=to_item({"hold_id": owner_key(owner), "kind": "owner",
                                                           "owner": owner, "expires_at": expires_at}))

    def records(self) -> list[dict[str, Any]]:
        return list(scan_all(self.ddb, table(), ConsistentRead=True))

    def reclaim(self, record: Mapping[str, Any], now: Decimal) -> bool:
        """Give an expired hold or lease back, in one transaction that holds only if the record is as read
        (a settlement or lease change in between wins) and its owner's heartbeat is still stale."""
        record_id, user_id = str(record["hold_id"]), str(record["user_id"])
        delete = {"Delete": {
            "TableName": table(), "Key": {"hold_id": {"S": record_id}},
            "ConditionExpression": "expires_at = :e AND amount = :a AND expires_at < :now",
            "ExpressionAttributeValues": values({":e": record["expires_at"], ":a": record.get("amount", 0),
                                                 ":now": now})}}
        items = [delete, give_back(user_id, record)]
        owner = record.get("owner")
        if owner:
            items.append({"ConditionCheck": {
                "TableName": table(), "Key": {"hold_id": {"S": owner_key(str(owner))}},
                "ConditionExpression": "attribute_not_exists(hold_id) OR expires_at < :now",
                "ExpressionAttributeValues": values({":now": now})}})
        try:
            transact(self.ddb, items)
            return True
        except self.ddb.exceptions.TransactionCanceledException as exc:
            codes = cancellation_codes(exc)
            if len(codes) > 1 and codes[0] != CCF and codes[1] == CCF and (len(codes) < 3 or codes[2] != CCF):
                # the user is gone: nothing to give back to, the record goes alone
                items = [delete, *items[2:]]
                try:
                    transact(self.ddb, items)
                    return True
                except self.ddb.exceptions.TransactionCanceledException:
                    return False
            if CCF in codes:
                return False
            raise

    def forget_owner(self, owner: str, expires_at: Decimal) -> bool:
        """Delete a stale heartbeat (conditioned on it not having been renewed since it was read)."""
        try:
            self.ddb.delete_item(TableName=table(), Key={"hold_id": {"S": owner_key(owner)}},
                                 ConditionExpression="expires_at = :e",
                                 ExpressionAttributeValues=values({":e": expires_at}))
            return True
        except self.ddb.exceptions.ConditionalCheckFailedException:
            return False
