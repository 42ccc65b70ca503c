"""Reclaiming a dead process's holds races its late settlements on DynamoDB Local (not moto: moto loses concurrent
updates): whichever transaction lands second sees the other's write, so every hold is given back exactly once
(by its settlement or by the sweeper), every row is written once and spend is exactly the costs."""

from __future__ import annotations

import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from decimal import Decimal
from typing import Any

import pytest

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.ddb_items import query_all, scan_all
from isthmus.adapters.holds_ddb import DynamoHoldStore
from isthmus.adapters.ledger_ddb import DynamoUsageStore
from isthmus.adapters.tenancy_ddb import DynamoUserStore
from isthmus.ports.tenancy import Charge, HoldTag

pytestmark = pytest.mark.integration
HOLD, COST = Decimal("0.01"), Decimal("0.004")


def records(user_id: str) -> list[dict[str, Any]]:
    return [r for r in scan_all(dynamodb.client(), settings.table_name("holds"), ConsistentRead=True)
            if r.get("user_id") == user_id]


def row(user_id: str) -> dict[str, Any]:
    return {"id": uuid.uuid4().hex, "user_id": user_id, "model": "m", "cost": COST, "status": "success",
            "timestamp": "2026-01-01T00:00:00Z", "day": "2026-01-01", "endpoint": "e"}


def test_settlements_racing_the_reclaim_of_their_holds_give_each_hold_back_once(ddb_tables: str) -> None:
    # given a user with 24 exact holds and a lease (12 holds carved from it) of a process that is dead
    users, usage, holds = DynamoUserStore(), DynamoUsageStore(), DynamoHoldStore()
    user_id, owner = f"race-{uuid.uuid4().hex[:6]}", f"dead-{uuid.uuid4().hex[:6]}"
    assert users.create_or_revive({"user_id": user_id, "spend": Decimal(0), "reserved": Decimal(0),
                                   "max_budget": Decimal(10), "headroom": Decimal(10)})
    expired = Decimal(str(round(time.time() - 1, 3)))
    exact = []
    for _ in range(24):
        tag = HoldTag(f"hold#{uuid.uuid4().hex}", owner, expired)
        assert users.reserve(user_id, HOLD, 100, tag)
        exact.append(tag.record_id)
    lease = HoldTag(f"lease#{owner}#{user_id}#x", owner, expired)
    assert users.lease(user_id, HOLD * 20, HOLD, lease, True) == "ok"
    settlements = [(row(user_id), Charge(user_id, cost=COST, hold=HOLD, tokens_held=100, tokens_used=50,
                                         requests_held=1, hold_record=rid)) for rid in exact]
    settlements += [(row(user_id), Charge(user_id, cost=COST, hold=HOLD, tokens_used=50, hold_record=lease.record_id,
                                          leased=True)) for _ in range(12)]
    now = Decimal(str(round(time.time(), 3)))
    # when the sweeper reclaims them while their settlements arrive, all at once
    with ThreadPoolExecutor(max_workers=8) as pool:
        found = {str(r["hold_id"]): r for r in records(user_id)}
        reclaims, settled = [], []
        for i, (r, c) in enumerate(settlements):  # each hold's reclaim and settlement side by side
            if c.hold_record in found and (not c.leased or i == len(settlements) - 6):
                reclaims.append(pool.submit(holds.reclaim, found[c.hold_record], now))
            settled.append(pool.submit(usage.settle, r, c))
        assert all(f.result() for f in settled)  # every settlement was recorded
        [f.result() for f in reclaims]
    # (whatever the sweeper lost to a settlement it finds on its next pass)
    for _ in range(10):
        for r in records(user_id):
            holds.reclaim(r, Decimal(str(round(time.time(), 3))))
    assert records(user_id) == []
    # then nothing is left reserved, spend is exactly the 36 costs, each row is in once
    user = users.get(user_id)
    assert user is not None
    assert user["reserved"] == 0 and user["reserved_requests"] == 0 and user["reserved_tokens"] == 0
    assert user["spend"] == 36 * COST and user["headroom"] == 10 - 36 * COST
    assert user["current_requests"] == 36
    ids = [r["id"] for r in query_all(dynamodb.client(), settings.table_name("usage"), IndexName="by_user",
                                      KeyConditionExpression="user_id = :u",
                                      ExpressionAttributeValues={":u": {"S": user_id}})]
    assert len(ids) == len(set(ids)) == 36
    # and a second delivery of any of them changes nothing
    assert not any(usage.settle(r, c) for r, c in settlements[:3] + settlements[-3:])
    assert users.get(user_id) == user
