"""Under Lambda (no local file outlives a sandbox) a settlement the store will not take is retried within the
invoke, then dead-lettered; the dead-letter consumer replays it exactly once, even when SQS delivers it twice.
The store is really unreachable here: DYNAMODB endpoint pointed at a closed loopback port."""

from __future__ import annotations

import asyncio
import time
import uuid
from decimal import Decimal
from typing import Any

import pytest

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.ddb_items import scan_all
from isthmus.adapters.ledger_ddb import DynamoUsageStore
from isthmus.adapters.tenancy_ddb import DynamoUserStore
from isthmus.ports.tenancy import Charge, HoldTag
from isthmus.services.tenancy.credentials import call
from isthmus.services.tenancy.settlements import Settlement, SettlementWriter
from isthmus.services.tenancy.spool import dumps
from local_runtime.ddb import free_port

pytestmark = pytest.mark.integration
HOLD, COST = Decimal("0.3"), Decimal("0.125")


def holds_of(user_id: str) -> list[dict[str, Any]]:
    return [r for r in scan_all(dynamodb.client(), settings.table_name("holds"), ConsistentRead=True)
            if r.get("user_id") == user_id]


def held_settlement() -> tuple[str, Settlement]:
    """A user with one exact hold in the table, and the settlement of that hold."""
    users, user_id = DynamoUserStore(), f"lambda-{uuid.uuid4().hex[:6]}"
    assert users.create_or_revive({"user_id": user_id, "spend": Decimal(0), "reserved": Decimal(0),
                                   "max_budget": Decimal(1), "headroom": Decimal(1)})
    admission_id = uuid.uuid4().hex
    tag = HoldTag(f"hold#{admission_id}", None, Decimal(str(time.time() + 960)))
    assert users.reserve(user_id, HOLD, 50, tag)
    row = {"id": admission_id, "user_id": user_id, "model": "m", "cost": COST, "status": "success",
           "timestamp": "2026-01-01T00:00:00Z", "day": "2026-01-01", "endpoint": "/v1/chat/completions"}
    return user_id, Settlement(row, Charge(user_id, cost=COST, hold=HOLD, tokens_held=50, tokens_used=20,
                                           requests_held=1, hold_record=tag.record_id))


def settled_once(user_id: str) -> dict[str, Any]:
    user = DynamoUserStore().get(user_id)
    assert user is not None
    assert user["spend"] == COST and user["reserved"] == 0 and user["headroom"] == 1 - COST
    assert user["reserved_requests"] == 0 and user["reserved_tokens"] == 0 and user["current_requests"] == 1
    assert holds_of(user_id) == []
    return user


def test_a_settlement_the_store_refuses_all_invoke_long_is_dead_lettered_and_replayed_once(
        ddb_tables: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.settlement_replay.replay import handler

    monkeypatch.setenv("ISTHMUS_RUNTIME", "lambda")
    user_id, settlement = held_settlement()
    dead: list[dict[str, Any]] = []
    writer = SettlementWriter(DynamoUsageStore(), DynamoUserStore(), call, delay_s=0, dead_letter=dead.extend)
    # when the store is unreachable for the whole invoke
    monkeypatch.setenv("ISTHMUS_DYNAMODB_ENDPOINT", f"http://127.0.0.1:{free_port()}")
    asyncio.run(writer.write(settlement))  # then the request's settlement returns normally
    monkeypatch.setenv("ISTHMUS_DYNAMODB_ENDPOINT", ddb_tables)
    dynamodb.reset_clients()
    # and the settlement went to the dead-letter queue, nothing to the table
    assert len(dead) == 1 and DynamoUsageStore().get(settlement.row["id"]) is None
    # when the consumer gets it, twice (SQS delivers at least once)
    event = {"Records": [{"messageId": f"m{i}", "body": dumps(dead[0])} for i in range(2)]}
    assert handler(event, None) == {"batchItemFailures": []}
    # then the row is in once, charged once, its hold released once
    assert DynamoUsageStore().get(settlement.row["id"]) is not None
    settled_once(user_id)


def test_a_store_back_within_the_invoke_takes_the_settlement_without_the_dead_letter_queue(
        ddb_tables: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_RUNTIME", "lambda")
    user_id, settlement = held_settlement()
    dead: list[dict[str, Any]] = []
    writer = SettlementWriter(DynamoUsageStore(), DynamoUserStore(), call, delay_s=0, dead_letter=dead.extend)

    async def scenario() -> None:
        # when the store is unreachable as the settlement is written, and back a moment later
        monkeypatch.setenv("ISTHMUS_DYNAMODB_ENDPOINT", f"http://127.0.0.1:{free_port()}")
        asyncio.get_running_loop().call_later(0.1, monkeypatch.setenv, "ISTHMUS_DYNAMODB_ENDPOINT", ddb_tables)
        await writer.write(settlement)

    asyncio.run(scenario())
    # then it was written by a retry within the invoke: nothing dead-lettered
    assert dead == []
    settled_once(user_id)
