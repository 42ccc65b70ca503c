"""The control-surface handlers over HTTP (in-process) on DynamoDB Local: shapes, filters, edge cases."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import Iterator
from datetime import UTC, datetime, timedelta
from decimal import Decimal

import pytest
from starlette.testclient import TestClient

from isthmus import wiring
from isthmus.services.tenancy.credentials import Credentials
from isthmus.services.tenancy.gate import TenancyGate

pytestmark = pytest.mark.integration
MASTER = "sk-master-control"
AUTH = {"Authorization": f"Bearer {MASTER}"}


@pytest.fixture()
def clients(ddb_tables: str, monkeypatch: pytest.MonkeyPatch) -> Iterator[dict[str, TestClient]]:
    monkeypatch.setenv("ISTHMUS_MASTER_KEY", MASTER)
    from functions.budgets.app import app as budgets
    from functions.keys.app import app as keys
    from functions.pricing.app import app as pricing
    from functions.usage.app import app as usage
    from functions.users.app import app as users

    yield {n: TestClient(a) for n, a in
           (("budgets", budgets), ("keys", keys), ("pricing", pricing), ("usage", usage), ("users", users))}


def test_budget_limits_follow_the_budget_onto_its_users(clients: dict[str, TestClient]) -> None:
    b, u = clients["budgets"], clients["users"]
    both = b.post("/v1/budgets", headers=AUTH, json={"max_budget": 1, "budget_duration_sec": 60,
                                                     "reset_alignment": "calendar_day"})
    assert both.status_code == 400
    assert b.post("/v1/budgets", headers=AUTH, json={"reset_alignment": "fortnightly"}).status_code == 422
    budget = b.post("/v1/budgets", headers=AUTH, json={"max_budget": 5, "reset_alignment": "calendar_month"}).json()
    uid = f"bu-{uuid.uuid4().hex[:6]}"
    user = u.post("/api/v1/users", headers=AUTH, json={"user_id": uid, "budget_id": budget["budget_id"]}).json()
    assert user["next_budget_reset_at"].endswith("T00:00:00.000000+00:00") and user["max_budget"] == 5
    assert u.post("/v1/users", headers=AUTH, json={"user_id": uid}).status_code == 409
    assert u.post("/v1/users", headers=AUTH, json={"user_id": "x", "budget_id": "nope"}).status_code == 404
    # when the budget's limit changes, the copy on each user row (and its headroom) follows
    assert b.patch(f"/v1/budgets/{budget['budget_id']}", headers=AUTH, json={"max_budget": 7.5}).status_code == 200
    row = wiring.stores().users.get(uid)
    assert row is not None and row["max_budget"] == Decimal("7.5") and row["headroom"] == Decimal("7.5")
    assert b.get(f"/v1/budgets/{budget['budget_id']}", headers=AUTH).json()["user_count"] == 1
    # when the budget is deleted, its users are detached
    assert b.delete(f"/v1/budgets/{budget['budget_id']}", headers=AUTH).status_code == 204
    detached = u.get(f"/v1/users/{uid}", headers=AUTH).json()
    assert detached["budget_id"] is None and detached["max_budget"] is None


def test_pricing_paths_take_encoded_model_keys_and_versions(clients: dict[str, TestClient]) -> None:
    p = clients["pricing"]
    model = f"mlx/org:model-{uuid.uuid4().hex[:6]}"
    enc = model.replace("/", "%2F").replace(":", "%3A")
    for when, price in (("2024-01-01T00:00:00Z", 1), ("2025-01-01T00:00:00Z", 2)):
        r = p.post("/v1/pricing", headers=AUTH, json={"model_key": model, "input_price_per_million": price,
                                                      "output_price_per_million": 0.1, "effective_at": when,
                                                      "pricing_tiers": None, "unit": "tokens"})
        assert r.status_code == 200 and r.json()["output_price_per_million"] == 0.1
    assert p.get(f"/v1/pricing/{enc}", headers=AUTH).json()["input_price_per_million"] == 2
    assert p.get(f"/v1/pricing/{enc}?as_of=2024-06-01T00:00:00.000000%2B0000",
                 headers=AUTH).json()["input_price_per_million"] == 1
    assert p.get(f"/v1/pricing/{enc}?as_of=2023-01-01", headers=AUTH).status_code == 404
    assert [h["input_price_per_million"] for h in p.get(f"/v1/pricing/{enc}/history", headers=AUTH).json()] == [2, 1]
    assert p.delete(f"/v1/pricing/{enc}?effective_at=2025-01-01T00:00:00Z", headers=AUTH).status_code == 204
    assert p.get(f"/api/v1/pricing/{enc}", headers=AUTH).json()["input_price_per_million"] == 1
    assert p.delete(f"/v1/pricing/{enc}", headers=AUTH).status_code == 204
    assert p.get(f"/v1/pricing/{enc}/history", headers=AUTH).status_code == 404
    assert p.post("/v1/pricing", headers=AUTH, json={"model_key": model}).status_code == 422


def test_usage_filters_order_and_summary(clients: dict[str, TestClient]) -> None:
    stores = wiring.stores()
    uid = f"us-{uuid.uuid4().hex[:6]}"
    key = clients["keys"].post("/v1/keys", headers=AUTH, json={"user_id": uid, "key_name": "usage"}).json()
    gate = TenancyGate(stores, Credentials(stores))

    async def traffic() -> None:
        principal = await gate.authenticate({"x-api-key": key["key"]})
        for i, (model, status) in enumerate((("a:m", "success"), ("b:m", "error"), ("a:m", "success"))):
            adm = await gate.admit(principal, model=model, endpoint="/v1/chat/completions", input_tokens_estimate=5,
                                   max_output_tokens=5)
            await gate.settle(adm, prompt_tokens=10 * (i + 1), completion_tokens=1, cached_tokens=0, status=status,
                              status_code=200 if status == "success" else 502, latency_ms=3, backend="test",
                              request_id=f"r{i}")
        await gate.refuse(principal, model="c:m", endpoint="/v1/messages", status_code=429, request_id="r3",
                          reason="Rate limit exceeded")

    asyncio.run(traffic())
    u = clients["usage"]
    rows = u.get(f"/v1/usage?user_id={uid}", headers=AUTH).json()
    assert len(rows) == 4
    assert [r["timestamp"] for r in rows] == sorted((r["timestamp"] for r in rows), reverse=True)
    assert all(isinstance(r["prompt_tokens"], int) and isinstance(r["latency_ms"], int | None) for r in rows)
    assert len(u.get(f"/v1/usage?user_id={uid}&model=a:m", headers=AUTH).json()) == 2
    assert len(u.get(f"/v1/usage?user_id={uid}&status=refused", headers=AUTH).json()) == 1
    assert len(u.get(f"/v1/usage?user_id={uid}&endpoint=/v1/messages", headers=AUTH).json()) == 1
    assert len(u.get(f"/v1/usage?api_key_id={key['id']}&skip=1&limit=2", headers=AUTH).json()) == 2
    assert len(u.get(f"/v1/usage?user_id={uid}&user_id=nobody&start_date=2000-01-01T00:00:00.000000%2B0000",
                     headers=AUTH).json()) == 4
    assert u.get(f"/v1/usage?user_id={uid}&end_date=946684800", headers=AUTH).json() == []
    # a date range with no user or key filter reads the by_day index, day by day
    since = (datetime.now(UTC) - timedelta(days=1)).strftime("%Y-%m-%dT%H:%M:%S.%f%z")
    recent = u.get("/v1/usage", params={"start_date": since, "model": "c:m"}, headers=AUTH).json()
    assert [r["status"] for r in recent if r["user_id"] == uid] == ["refused"]
    summary = u.get(f"/v1/usage/summary?user_id={uid}", headers=AUTH).json()
    assert summary["totals"]["requests"] == 4 and summary["totals"]["errors"] == 2
    assert {m["model"]: m["requests"] for m in summary["by_model"]} == {"a:m": 2, "b:m": 1, "c:m": 1}
    assert len(summary["by_day"]) == 1 and summary["by_day"][0]["prompt_tokens"] == 60
    assert u.get("/v1/usage?limit=0", headers=AUTH).status_code == 422
    user_rows = clients["users"].get(f"/v1/users/{uid}/usage?limit=3", headers=AUTH).json()
    assert len(user_rows) == 3
