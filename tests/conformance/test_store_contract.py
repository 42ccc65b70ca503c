"""The store contract: every table's access patterns, the conditional and transactional writes the money path needs,
and TTL, through the real adapters, against whatever DynamoDB-compatible endpoint the suite was pointed at
(``ISTHMUS_DYNAMODB_ENDPOINT=http://... make conformance``; in the ordinary suite, DynamoDB Local)."""

from __future__ import annotations

import asyncio
import time
import uuid
from concurrent.futures import ThreadPoolExecutor
from datetime import UTC, datetime, timedelta
from decimal import Decimal
from typing import Any

import pytest

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.control_tables import DynamoControlStore, DynamoSessionStore
from isthmus.adapters.holds_ddb import DynamoHoldStore
from isthmus.adapters.ledger_ddb import DynamoPricingStore, DynamoRateLimiter, DynamoUsageStore
from isthmus.adapters.responses_table import DynamoResponseStore
from isthmus.adapters.tenancy_ddb import DynamoBudgetStore, DynamoKeyStore, DynamoSettingsStore, DynamoUserStore
from isthmus.ports.responses import StoredResponse
from isthmus.ports.tenancy import Charge, HoldTag
from isthmus_contracts.internal import InternalResponse, Message, TextPart, Usage
from tests.conformance.conftest import ttl_attributes

pytestmark = pytest.mark.integration
NOW = datetime.now(UTC)


def new_user(max_budget: Decimal | None = Decimal("1.00")) -> str:
    user_id = f"u-{uuid.uuid4().hex[:10]}"
    item: dict[str, Any] = {"user_id": user_id, "spend": Decimal(0), "reserved": Decimal(0),
                            "created_at": NOW.isoformat(), "updated_at": NOW.isoformat(), "blocked": False}
    if max_budget is not None:
        item |= {"max_budget": max_budget, "headroom": max_budget}
    assert DynamoUserStore().create_or_revive(item)
    return user_id


def user(user_id: str) -> dict[str, Any]:
    found = DynamoUserStore().get(user_id)
    assert found is not None
    return found


def row(user_id: str, row_id: str | None = None) -> dict[str, Any]:
    return {"id": row_id or uuid.uuid4().hex, "user_id": user_id, "api_key_id": f"k-{user_id}", "model": "m",
            "endpoint": "/v1/chat/completions", "status": "success", "timestamp": NOW.isoformat(),
            "day": NOW.isoformat()[:10], "source": "gateway", "prompt_tokens": 10, "completion_tokens": 5}


def test_every_template_table_exists_with_its_ttl_attribute() -> None:
    ddb = dynamodb.client()
    for logical in settings.TABLES:
        assert ddb.describe_table(TableName=settings.table_name(logical))["Table"]["TableStatus"] == "ACTIVE"
    for logical, attribute in ttl_attributes().items():
        described = ddb.describe_time_to_live(TableName=settings.table_name(logical))["TimeToLiveDescription"]
        assert described.get("AttributeName") == attribute, (logical, described)


def test_item_tables_create_once_update_conditionally_and_delete() -> None:
    budgets = DynamoBudgetStore()
    budget_id = f"b-{uuid.uuid4().hex[:8]}"
    # given a budget written once
    assert budgets.put_new({"budget_id": budget_id, "max_budget": Decimal("5"), "created_at": NOW.isoformat()})
    # then a second create of the same id is refused, not overwritten
    assert not budgets.put_new({"budget_id": budget_id, "max_budget": Decimal("9")})
    assert budgets.get(budget_id)["max_budget"] == Decimal("5")  # type: ignore[index]
    # when updated under a condition that holds, then under one that does not
    assert budgets.update(budget_id, {"max_budget": Decimal("6")}, condition="max_budget = :m",
                          cond_values={":m": Decimal("5")}) is not None
    assert budgets.update(budget_id, {"max_budget": Decimal("7")}, condition="max_budget = :m",
                          cond_values={":m": Decimal("5")}) is None
    assert any(b["budget_id"] == budget_id for b in budgets.scan())
    assert budgets.delete(budget_id) and budgets.get(budget_id) is None
    # and the settings table keeps the first value written
    name = f"s-{uuid.uuid4().hex[:8]}"
    assert DynamoSettingsStore().put_if_absent(name, "first") == "first"
    assert DynamoSettingsStore().put_if_absent(name, "second") == "first"


def test_keys_are_found_by_hash_and_by_user_through_their_indexes() -> None:
    keys, user_id = DynamoKeyStore(), new_user()
    key_hash = uuid.uuid4().hex
    assert keys.put_new({"key_id": f"k-{key_hash[:8]}", "key_hash": key_hash, "user_id": user_id,
                         "created_at": NOW.isoformat(), "is_active": True})
    assert keys.find_by_hash(key_hash)["user_id"] == user_id  # type: ignore[index]
    assert [k["key_hash"] for k in keys.by_user(user_id)] == [key_hash]


def test_a_budget_hold_is_one_conditional_write_that_never_overspends_under_a_race() -> None:
    users, user_id = DynamoUserStore(), new_user(Decimal("1.00"))
    # when 40 holds of 0.10 race for a budget of 1.00
    with ThreadPoolExecutor(max_workers=16) as pool:
        taken = list(pool.map(lambda _: users.reserve(user_id, Decimal("0.10"), 100), range(40)))
    # then exactly ten got through, and reserved + headroom still add up to the budget
    assert taken.count(True) == 10
    after = user(user_id)
    assert after["reserved"] == Decimal("1.00") and after["headroom"] == Decimal("0.00")


def test_a_hold_with_its_record_and_its_settlement_are_transactions_and_settle_once() -> None:
    users, usage, user_id = DynamoUserStore(), DynamoUsageStore(), new_user(Decimal("1.00"))
    tag = HoldTag(f"hold#{uuid.uuid4().hex}", None, Decimal(int(time.time()) + 600))
    # given a hold taken with its record in one transaction
    assert users.reserve(user_id, Decimal("0.30"), 300, tag)
    assert any(r["hold_id"] == tag.record_id for r in DynamoHoldStore().records())
    charge = Charge(user_id, cost=Decimal("0.12"), hold=Decimal("0.30"), tokens_held=300, tokens_used=15,
                    requests_held=1, hold_record=tag.record_id)
    settled_row = row(user_id)
    # when it is settled (row + charge + record deleted, one transaction), then settled again
    assert usage.settle(settled_row, charge)
    assert not usage.settle(settled_row, charge)
    # then spend was charged once, the hold is back, the record is gone and the row is there once
    after = user(user_id)
    assert after["spend"] == Decimal("0.12") and after["reserved"] == Decimal("0.00")
    assert after["headroom"] == Decimal("0.88")
    assert not any(r["hold_id"] == tag.record_id for r in DynamoHoldStore().records())
    assert usage.get(settled_row["id"])["user_id"] == user_id  # type: ignore[index]


def test_settlements_in_a_batch_and_usage_rows_by_user_key_and_day() -> None:
    usage, user_id = DynamoUsageStore(), new_user(None)
    rows = [row(user_id) for _ in range(3)]
    assert usage.settle_many(rows, [Charge(user_id, cost=Decimal("0.01"))] * 3)
    assert user(user_id)["spend"] == Decimal("0.03")
    ids = {r["id"] for r in rows}
    assert {r["id"] for r in usage.candidates(user_ids=[user_id])} == ids
    assert {r["id"] for r in usage.candidates(api_key_id=f"k-{user_id}")} == ids
    day_rows = usage.candidates(start=NOW.isoformat()[:10] + "T00:00:00", end=NOW.isoformat()[:10] + "T23:59:59")
    assert ids <= {r["id"] for r in day_rows}


def test_a_dead_processes_hold_is_reclaimed_once() -> None:
    users, holds, user_id = DynamoUserStore(), DynamoHoldStore(), new_user(Decimal("1.00"))
    tag = HoldTag(f"hold#{uuid.uuid4().hex}", None, Decimal(int(time.time()) - 5))  # already expired
    assert users.reserve(user_id, Decimal("0.25"), 10, tag)
    record = next(r for r in holds.records() if r["hold_id"] == tag.record_id)
    now = Decimal(int(time.time()))
    assert holds.reclaim(record, now)
    assert not holds.reclaim(record, now)  # the record is gone: the condition refuses a second give-back
    assert user(user_id)["reserved"] == Decimal("0.00") and user(user_id)["headroom"] == Decimal("1.00")


def test_rate_limit_buckets_are_conditional_adds() -> None:
    limiter, bucket = DynamoRateLimiter(), f"requests#{uuid.uuid4().hex}#1"
    expires = int(time.time()) + 120
    assert [limiter.take(bucket, 1, 3, expires)[0] for _ in range(4)] == [True, True, True, False]
    limiter.give_back(bucket, 1)
    assert limiter.take(bucket, 1, 3, expires) == (True, 3)


def test_prices_resolve_by_effective_date() -> None:
    pricing, model = DynamoPricingStore(), f"m-{uuid.uuid4().hex[:8]}"
    for at, price in (("2020-01-01T00:00:00+00:00", "1"), ("2030-01-01T00:00:00+00:00", "2")):
        pricing.put({"model_key": model, "effective_at": at, "input_price_per_million": Decimal(price),
                     "output_price_per_million": Decimal(price)})
    assert pricing.effective(model, NOW.isoformat())["input_price_per_million"] == Decimal(1)  # type: ignore[index]
    assert pricing.effective(model, "2031-01-01T00:00:00+00:00")["input_price_per_million"] == Decimal(2)  # type: ignore[index]
    assert len(pricing.history(model)) == 2


def test_control_tables_lock_loads_and_expire_sessions_on_read() -> None:
    from isthmus.control.models import Cluster

    control, cluster_id = DynamoControlStore(), f"c-{uuid.uuid4().hex[:8]}"
    control.put_cluster_config(Cluster(cluster_id=cluster_id))
    # one load at a time per cluster: a conditional write
    assert control.acquire_load(cluster_id, NOW + timedelta(seconds=60), NOW)
    assert not control.acquire_load(cluster_id, NOW + timedelta(seconds=60), NOW)
    # a session pin past its expiry is gone on read, whatever the engine's TTL sweeper did
    sessions, sid = DynamoSessionStore(), uuid.uuid4().hex
    sessions.put(sid, "node-1", cluster_id, 30, NOW)
    assert sessions.get(sid, NOW) == ("node-1", cluster_id)
    assert sessions.get(sid, NOW + timedelta(seconds=31)) is None


def test_a_stored_response_over_the_item_limit_round_trips() -> None:
    store, response_id = DynamoResponseStore(), f"resp_{uuid.uuid4().hex}"
    text = uuid.uuid4().hex * 40_000  # 1.28 MB of incompressible-enough text: several items
    stored = StoredResponse(response_id=response_id, model="m", created_at=int(time.time()),
                            messages=[Message(role="user", content=[TextPart(text=text)])],
                            output=InternalResponse(id=response_id, model="m", created=int(time.time()),
                                                    content=[TextPart(text="ok")],
                                                    finish_reason="stop", usage=Usage()))
    asyncio.run(store.put(stored))
    back = asyncio.run(store.get(response_id))
    assert back is not None and back.messages[0].content[0].text == text  # type: ignore[union-attr]
    assert asyncio.run(store.delete(response_id)) and asyncio.run(store.get(response_id)) is None
