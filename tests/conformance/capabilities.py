"""What the gateway's guarantees need from a DynamoDB-compatible store, probed one capability at a time on a
scratch table, so that an engine lacking one is named at once (``missing``) instead of failing deep in a test.

Each capability: (name, what it is for, probe). A probe raises on a store that lacks it."""

from __future__ import annotations

import uuid
from collections.abc import Callable
from typing import Any

Probe = Callable[[Any, str], None]


class Missing(AssertionError):
    """The store answered, but not as DynamoDB does."""


def _conditional_add(ddb: Any, table: str) -> None:
    key = {"pk": {"S": f"cond-{uuid.uuid4().hex}"}}
    ddb.put_item(TableName=table, Item={**key, "n": {"N": "1"}})
    ddb.update_item(TableName=table, Key=key, UpdateExpression="ADD n :one", ConditionExpression="n < :lim",
                    ExpressionAttributeValues={":one": {"N": "1"}, ":lim": {"N": "2"}})
    try:
        ddb.update_item(TableName=table, Key=key, UpdateExpression="ADD n :one", ConditionExpression="n < :lim",
                        ExpressionAttributeValues={":one": {"N": "1"}, ":lim": {"N": "2"}})
    except ddb.exceptions.ConditionalCheckFailedException:
        pass
    else:
        raise Missing("an UpdateItem whose ConditionExpression is false was applied")
    got = ddb.get_item(TableName=table, Key=key, ConsistentRead=True)["Item"]["n"]["N"]
    if got != "2":
        raise Missing(f"ADD under a condition left {got}, expected 2")


def _transactions(ddb: Any, table: str) -> None:
    a, b = ({"pk": {"S": f"tx-{uuid.uuid4().hex}"}} for _ in range(2))
    ddb.transact_write_items(TransactItems=[{"Put": {"TableName": table, "Item": a}},
                                            {"Put": {"TableName": table, "Item": b}}])
    try:  # all or nothing: the second item's condition fails, so the first update must not land
        ddb.transact_write_items(TransactItems=[
            {"Update": {"TableName": table, "Key": a, "UpdateExpression": "SET v = :v",
                        "ExpressionAttributeValues": {":v": {"S": "written"}}}},
            {"ConditionCheck": {"TableName": table, "Key": b, "ConditionExpression": "attribute_not_exists(pk)"}}])
    except ddb.exceptions.TransactionCanceledException:
        pass
    else:
        raise Missing("a transaction with a failing ConditionCheck was applied")
    if "v" in ddb.get_item(TableName=table, Key=a, ConsistentRead=True)["Item"]:
        raise Missing("a cancelled transaction wrote one of its items")


def _ttl(ddb: Any, table: str) -> None:
    described = ddb.describe_time_to_live(TableName=table)["TimeToLiveDescription"]
    if described.get("TimeToLiveStatus") not in ("ENABLED", "ENABLING") or described.get("AttributeName") != "ttl":
        raise Missing(f"TTL on attribute 'ttl' was set but is described as {described}")


def _consistent_read_and_query(ddb: Any, table: str) -> None:
    key = {"pk": {"S": f"q-{uuid.uuid4().hex}"}}
    ddb.put_item(TableName=table, Item=key)
    found = ddb.query(TableName=table, KeyConditionExpression="pk = :k", ConsistentRead=True,
                      ExpressionAttributeValues={":k": key["pk"]})["Items"]
    if found != [key]:
        raise Missing(f"a strongly consistent Query right after PutItem returned {found}")


CAPABILITIES: list[tuple[str, str, Probe]] = [
    ("ConditionExpression on UpdateItem (ADD)", "budget holds, rate limits, load locks: never check-then-write",
     _conditional_add),
    ("TransactWriteItems (all or nothing, ConditionCheck)", "exact holds with their record, settlements "
     "(usage row + user charge + hold record), leases, the holds sweeper", _transactions),
    ("UpdateTimeToLive / DescribeTimeToLive", "expiry of rate-limit buckets, sessions, holds (also filtered on "
     "read)", _ttl),
    ("ConsistentRead Query", "reading back what was just written (settlement idempotency, prices)",
     _consistent_read_and_query),
]


def scratch_table(ddb: Any, name: str) -> None:
    ddb.create_table(TableName=name, BillingMode="PAY_PER_REQUEST",
                     AttributeDefinitions=[{"AttributeName": "pk", "AttributeType": "S"}],
                     KeySchema=[{"AttributeName": "pk", "KeyType": "HASH"}])
    ddb.get_waiter("table_exists").wait(TableName=name, WaiterConfig={"Delay": 0.2, "MaxAttempts": 100})
    ddb.update_time_to_live(TableName=name, TimeToLiveSpecification={"Enabled": True, "AttributeName": "ttl"})


def missing(ddb: Any, table: str) -> list[str]:
    """One line per capability the store lacks: what failed, and which guarantee needs it."""
    from botocore.exceptions import BotoCoreError, ClientError

    lines = []
    for name, needed_by, probe in CAPABILITIES:
        try:
            probe(ddb, table)
        except Missing as exc:
            lines.append(f"{name}: {exc} (needed by {needed_by})")
        except (ClientError, BotoCoreError) as exc:
            lines.append(f"{name}: refused by the store: {exc} (needed by {needed_by})")
    return lines
