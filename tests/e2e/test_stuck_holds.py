"""No stuck holds: a gateway process killed (SIGKILL) while it holds exact holds and a budget lease leaves
them in the users' ``reserved`` only until the expiry; the sweeper of another edge gives them back. A
settlement of one of those holds that arrives after the reclaim is recorded once and charged without giving
the hold back twice, never past max_budget."""

from __future__ import annotations

import contextlib
import os
import signal
import time
import uuid
from collections.abc import Iterator
from decimal import Decimal
from typing import Any

import httpx
import pytest

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.ddb_items import scan_all
from isthmus.adapters.holds_ddb import DynamoHoldStore
from isthmus.adapters.ledger_ddb import DynamoUsageStore
from isthmus.adapters.tenancy_ddb import DynamoUserStore
from isthmus.ports.tenancy import Charge
from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.agents import AgentProcess
from tests.support.waiting import poll

pytestmark = pytest.mark.e2e
MASTER = "sk-stuck-holds-master"
EXPIRY_S = 3
EDGE_ENV = {"ISTHMUS_MASTER_KEY": MASTER, "ISTHMUS_HOLD_EXPIRY_S": str(EXPIRY_S), "ISTHMUS_HOLD_SWEEP_S": "1"}


def holds_of(user_id: str) -> list[dict[str, Any]]:
    return [r for r in scan_all(dynamodb.client(), settings.table_name("holds"), ConsistentRead=True)
            if r.get("user_id") == user_id]


def user(user_id: str) -> dict[str, Any]:
    found = DynamoUserStore().get(user_id)
    assert found is not None
    return found


@pytest.fixture()
def edge_env(tiny_agent: AgentProcess, ddb_tables: str) -> dict[str, str]:
    return {**EDGE_ENV, "ISTHMUS_DEFAULT_AGENT_URL": tiny_agent.base}


@pytest.fixture()
def admin(edge_env: dict[str, str]) -> Iterator[tuple[httpx.Client, Any]]:
    """An edge that will be killed (yielded with its process) and the admin client on it."""
    proc, base = start_edge("asgi", env=edge_env)
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {MASTER}"}, timeout=60) as client:
            yield client, proc
    finally:
        stop(proc)


def tenant(admin: httpx.Client, model: str, max_budget: float) -> tuple[str, str]:
    budget = admin.post("/v1/budgets", json={"max_budget": max_budget, "budget_duration_sec": 86400}).json()
    user_id = f"stuck-{uuid.uuid4().hex[:6]}"
    admin.post("/v1/users", json={"user_id": user_id, "budget_id": budget["budget_id"]}).raise_for_status()
    return user_id, admin.post("/v1/keys", json={"user_id": user_id}).json()["key"]


def test_a_killed_edge_leaves_no_stuck_holds_and_a_late_settlement_is_charged_once(
        admin: tuple[httpx.Client, Any], edge_env: dict[str, str], tiny_agent: AgentProcess) -> None:
    client, proc = admin
    # given a priced model; a user near the end of a small budget (exact holds) and one with plenty (a lease)
    model = tiny_agent.status()["model"]
    client.post("/v1/pricing", json={"model_key": model, "input_price_per_million": 1,
                                     "output_price_per_million": 2}).raise_for_status()
    tight_id, tight_key = tenant(client, model, 0.05)  # room for two holds of 10,000 output tokens
    rich_id, rich_key = tenant(client, model, 1000)
    body = {"model": "default", "stream": True, "max_tokens": 10_000,
            "messages": [{"role": "user", "content": "never ending"}], "metadata": {"loop_guard": False}}
    readers = []
    with contextlib.ExitStack() as streams:
        # when three streams are in flight through the edge: two on exact holds, one carved from a lease
        for key in (tight_key, tight_key, rich_key):
            http = streams.enter_context(httpx.Client(base_url=str(client.base_url), timeout=60))
            resp = streams.enter_context(http.stream("POST", "/v1/chat/completions", json=body,
                                                     headers={"Authorization": f"Bearer {key}"}))
            assert resp.status_code == 200
            readers.append(lines := resp.iter_lines())  # kept: a dropped reader closes its response
            while not next(lines).startswith("data:"):
                pass
        exact = [r for r in holds_of(tight_id) if r["kind"] == "hold"]
        leases = [r for r in holds_of(rich_id) if r["kind"] == "lease"]
        assert len(exact) == 2 and len(leases) == 1
        assert user(tight_id)["reserved"] == sum(r["amount"] for r in exact) > 0
        assert user(rich_id)["reserved"] == leases[0]["amount"] > 0
        # and the edge is killed without a chance to settle or give anything back
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=10)
    assert user(tight_id)["reserved"] > 0 and user(rich_id)["reserved"] > 0
    # then another edge's sweeper gives every hold and the lease back once the expiry has passed
    survivor, _ = start_edge("asgi", env=edge_env)
    try:
        poll(lambda: user(tight_id)["reserved"] == 0 and user(rich_id)["reserved"] == 0, timeout=EXPIRY_S + 30)
    finally:
        stop(survivor)
    tight, rich = user(tight_id), user(rich_id)
    assert tight["reserved_requests"] == 0 and tight["reserved_tokens"] == 0
    assert tight["headroom"] == tight["max_budget"] and rich["headroom"] == rich["max_budget"]
    assert holds_of(tight_id) == [] and holds_of(rich_id) == []

    # when the killed requests' settlements arrive late (e.g. replayed from a spool), after the reclaim
    usage = DynamoUsageStore()
    big, small = Decimal("0.04"), Decimal("0.02")  # together more than the 0.05 budget
    late = [(exact[0], big), (exact[1], small)]
    for record, cost in late:
        row_id = str(record["hold_id"]).removeprefix("hold#")
        charge = Charge(tight_id, cost=cost, hold=record["amount"], tokens_held=int(record["tokens"]),
                        tokens_used=10, requests_held=1, hold_record=str(record["hold_id"]))
        row = {"id": row_id, "user_id": tight_id, "model": model, "cost": cost, "timestamp": "2026-01-01T00:00:00Z",
               "day": "2026-01-01", "status": "success", "endpoint": "/v1/chat/completions"}
        assert usage.settle(row, charge) is True
        assert usage.settle(row, charge) is False  # and a second delivery changes nothing
    lease_row = {"id": uuid.uuid4().hex, "user_id": rich_id, "model": model, "cost": small,
                 "timestamp": "2026-01-01T00:00:00Z", "day": "2026-01-01", "status": "success", "endpoint": "e"}
    lease_charge = Charge(rich_id, cost=small, hold=Decimal("0.02"), hold_record=str(leases[0]["hold_id"]),
                          leased=True)
    assert usage.settle(lease_row, lease_charge) is True
    assert usage.settle(lease_row, lease_charge) is False
    # then each row is in once; spend is charged up to max_budget, never past it, nothing is given back twice
    tight, rich = user(tight_id), user(rich_id)
    assert tight["spend"] == Decimal("0.05") and tight["reserved"] == 0
    assert tight["headroom"] == 0 and tight["current_requests"] == 2
    first, second = (usage.get(str(r["hold_id"]).removeprefix("hold#")) for r, _ in late)
    assert first is not None and second is not None
    assert "unbilled_cost" not in first and second["unbilled_cost"] == Decimal("0.01")
    assert second["cost"] == Decimal("0.01")  # the row says what was charged
    assert rich["spend"] == small and rich["reserved"] == 0 and rich["headroom"] == rich["max_budget"] - small


def test_the_scheduled_sweeper_reclaims_an_ownerless_hold_only_after_its_expiry(ddb_tables: str) -> None:
    from functions.holds_sweeper.sweeper import handler
    from isthmus.ports.tenancy import HoldTag
    from isthmus.services.tenancy.holds import sweep_once

    # given a user with an exact hold of a sandbox (no heartbeat) that expires in a moment
    users, user_id = DynamoUserStore(), f"sandbox-{uuid.uuid4().hex[:6]}"
    assert users.create_or_revive({"user_id": user_id, "spend": Decimal(0), "reserved": Decimal(0),
                                   "max_budget": Decimal(1), "headroom": Decimal(1)})
    expires = Decimal(str(round(time.time() + 2, 3)))
    assert users.reserve(user_id, Decimal("0.25"), 100, HoldTag(f"hold#{uuid.uuid4().hex}", None, expires))
    # when the sweeper runs before the expiry, then nothing moves
    assert sweep_once(DynamoHoldStore(), now=float(expires) - 1) == 0
    assert user(user_id)["reserved"] == Decimal("0.25")
    # when the scheduled function runs after it, then the hold is back (and a second run finds nothing)
    poll(lambda: time.time() > float(expires), timeout=10)
    reclaimed = poll(lambda: handler({}, None)["reclaimed"] or None, timeout=10)
    assert reclaimed >= 1
    assert user(user_id)["reserved"] == 0 and user(user_id)["headroom"] == 1
    assert user(user_id)["reserved_requests"] == 0 and holds_of(user_id) == []
