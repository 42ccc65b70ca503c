"""TenancyGate against DynamoDB Local (not moto: moto loses concurrent updates): no overspend under a race,
settle after a disconnect, settle idempotency, lazy budget reset, and the 503 when the store is gone."""

from __future__ import annotations

import asyncio
import uuid
from decimal import Decimal
from typing import Any

import pytest

from isthmus import settings, wiring
from isthmus.adapters import dynamodb
from isthmus.adapters.ddb_items import query_all
from isthmus.errors import ApiError
from isthmus.services.tenancy.budgets import BudgetService, CreateBudget
from isthmus.services.tenancy.credentials import Credentials
from isthmus.services.tenancy.gate import Admission, Principal, TenancyGate
from isthmus.services.tenancy.keys import CreateKey, KeyService
from isthmus.services.tenancy.pricing import PricingService, SetPricing
from isthmus.services.tenancy.users import CreateUser, UserService

pytestmark = pytest.mark.integration

# 1 USD per million input tokens, 2 per million output: 1000 in + 1000 out reserves exactly 0.003 USD.
HOLD = Decimal("0.003")


def tenant(max_budget: Decimal | None, **key: Any) -> tuple[str, str, str]:
    """A priced model, a budget, a user on it and a key: (model, user_id, secret)."""
    stores = wiring.stores()
    tag = uuid.uuid4().hex[:8]
    model = f"test:model-{tag}"
    PricingService(stores).set(SetPricing(model_key=model, input_price_per_million=Decimal(1),
                                          output_price_per_million=Decimal(2),
                                          effective_at="2020-01-01T00:00:00+00:00"))  # type: ignore[arg-type]
    budget = BudgetService(stores).create(CreateBudget(max_budget=max_budget, budget_duration_sec=86400))
    user_id = f"user-{tag}"
    UserService(stores).create(CreateUser(user_id=user_id, budget_id=budget["budget_id"]))
    created = KeyService(stores, Credentials(stores)).create(CreateKey(user_id=user_id, **key))
    return model, user_id, created["key"]


def usage_rows(user_id: str) -> list[dict[str, Any]]:
    return list(query_all(dynamodb.client(), settings.table_name("usage"), IndexName="by_user",
                          KeyConditionExpression="user_id = :u", ExpressionAttributeValues={":u": {"S": user_id}}))


async def admit_or_refuse(gate: TenancyGate, principal: Principal, model: str, i: int) -> Admission | None:
    try:
        return await gate.admit(principal, model=model, endpoint="/v1/chat/completions",
                                input_tokens_estimate=1000, max_output_tokens=1000)
    except ApiError as exc:
        await gate.refuse(principal, model=model, endpoint="/v1/chat/completions", status_code=exc.status,
                          request_id=f"req-{i}", reason=exc.message)
        return None


def test_200_concurrent_admissions_never_overspend(ddb_tables: str) -> None:
    # given a user whose budget fits exactly 50 worst-case holds
    model, user_id, secret = tenant(HOLD * 50)
    gate = wiring.new_gate()

    async def scenario() -> list[Admission | None]:
        principal = await gate.authenticate({"Authorization": f"Bearer {secret}"})
        # when 200 requests race for admission at once
        results = await asyncio.gather(*(admit_or_refuse(gate, principal, model, i) for i in range(200)))
        admitted = [a for a in results if a is not None]
        # and every admitted one is settled with its real (smaller) usage
        await asyncio.gather(*(gate.settle(a, prompt_tokens=900, completion_tokens=700, cached_tokens=0,
                                           status="success", status_code=200, latency_ms=12, backend="test",
                                           request_id=f"ok-{n}") for n, a in enumerate(admitted)))
        return list(results)

    results = asyncio.run(scenario())
    # then exactly 50 were admitted and 150 refused with 403 "budget exceeded"
    admitted = [a for a in results if a is not None]
    assert len(admitted) == 50
    user = wiring.stores().users.get(user_id)
    assert user is not None
    # and the final spend is within the budget, with every hold released to exactly zero
    assert user["spend"] == 50 * (Decimal(900) * 1 + Decimal(700) * 2) / Decimal(1_000_000)
    assert user["spend"] <= user["max_budget"]
    assert user["reserved"] == 0
    assert user["reserved_requests"] == 0 and user["reserved_tokens"] == 0
    assert user["headroom"] == user["max_budget"] - user["spend"]
    # and there is one usage row per request: 50 successes and 150 refusals
    rows = usage_rows(user_id)
    assert len(rows) == 200
    assert sum(r["status"] == "success" for r in rows) == 50
    refused = [r for r in rows if r["status"] == "refused"]
    assert len(refused) == 150 and {r["status_code"] for r in refused} == {403}


def test_settle_after_a_disconnect_writes_the_row_and_releases_the_hold(ddb_tables: str) -> None:
    model, user_id, secret = tenant(HOLD * 10)
    gate = wiring.new_gate()

    async def scenario() -> None:
        principal = await gate.authenticate({"x-api-key": secret})
        admission = await gate.admit(principal, model=model, endpoint="/v1/messages",
                                     input_tokens_estimate=1000, max_output_tokens=1000)

        async def handler() -> None:
            try:
                await asyncio.Event().wait()  # streaming until the client goes away
            finally:
                await gate.settle(admission, prompt_tokens=1000, completion_tokens=10, cached_tokens=0,
                                  status="cancelled", status_code=499, latency_ms=5, backend="test",
                                  request_id="gone")

        # given a request in flight, when the client disconnects (the handler task is cancelled)
        task = asyncio.create_task(handler())
        await asyncio.sleep(0)
        task.cancel()
        with pytest.raises(asyncio.CancelledError):
            await task
        # and a second settle of the same admission (another finally, a retry) changes nothing
        await gate.settle(admission, prompt_tokens=1000, completion_tokens=10, cached_tokens=0, status="cancelled",
                          status_code=499, latency_ms=5, backend="test", request_id="gone")
        await wiring.new_gate().settle(admission, prompt_tokens=1000, completion_tokens=10, cached_tokens=0,
                                   status="cancelled", status_code=499, latency_ms=5, backend="test",
                                   request_id="gone")

    asyncio.run(scenario())
    # then the usage row is there, once, and the hold went back (only the real cost is spent)
    rows = usage_rows(user_id)
    assert [r["status"] for r in rows] == ["cancelled"]
    user = wiring.stores().users.get(user_id)
    assert user is not None
    assert user["reserved"] == 0
    assert user["spend"] == (Decimal(1000) + Decimal(20)) / Decimal(1_000_000)


def test_free_models_and_excluded_keys_pass_over_budget(ddb_tables: str) -> None:
    # given a user with a zero budget, and a key excluded from budgets
    model, user_id, secret = tenant(Decimal(0))
    excluded = KeyService(wiring.stores(), Credentials(wiring.stores())).create(
        CreateKey(user_id=user_id, exclude_from_budget=True))["key"]
    gate = wiring.new_gate()

    async def scenario() -> None:
        principal = await gate.authenticate({"Otari-Key": f"Bearer {secret}"})
        # when a priced model is asked for, then the budget refuses
        with pytest.raises(ApiError) as refused:
            await gate.admit(principal, model=model, endpoint="/v1/chat/completions", input_tokens_estimate=10,
                             max_output_tokens=10)
        assert refused.value.status == 403 and "budget exceeded" in refused.value.message.lower()
        # when an unpriced model is asked for (require_pricing off), then it passes with no hold
        free = await gate.admit(principal, model="unpriced:model", endpoint="/v1/chat/completions",
                                input_tokens_estimate=10, max_output_tokens=10)
        assert free.hold == 0
        # when the excluded key asks for the priced model, then it passes, logged but not counted
        p2 = await gate.authenticate({"AnyLLM-Key": excluded})
        adm = await gate.admit(p2, model=model, endpoint="/v1/chat/completions", input_tokens_estimate=10,
                               max_output_tokens=10)
        await gate.settle(adm, prompt_tokens=10, completion_tokens=10, cached_tokens=0, status="success",
                          status_code=200, latency_ms=1, backend="test", request_id="x")

    asyncio.run(scenario())
    rows = usage_rows(user_id)
    assert len(rows) == 1 and rows[0]["counts_toward_budget"] is False and rows[0]["cost"] > 0
    user = wiring.stores().users.get(user_id)
    assert user is not None and user["spend"] == 0


def test_require_pricing_refuses_unpriced_models_with_402(ddb_tables: str, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_REQUIRE_PRICING", "1")
    _, _, secret = tenant(Decimal(1))
    gate = wiring.new_gate()

    async def scenario() -> ApiError:
        principal = await gate.authenticate({"Authorization": f"Bearer {secret}"})
        with pytest.raises(ApiError) as err:
            await gate.admit(principal, model="nobody:priced", endpoint="/v1/chat/completions",
                             input_tokens_estimate=1, max_output_tokens=1)
        return err.value

    err = asyncio.run(scenario())
    assert err.status == 402 and "POST /v1/pricing" in err.message


def test_lazy_reset_zeroes_spend_once_and_logs_it(ddb_tables: str) -> None:
    # given a user with spend whose period ended
    model, user_id, secret = tenant(HOLD * 2)
    stores = wiring.stores()
    stores.users.update(user_id, {"next_budget_reset_at": "2000-01-01T00:00:00.000000+00:00"})
    gate = wiring.new_gate()

    async def scenario() -> None:
        principal = await gate.authenticate({"Authorization": f"Bearer {secret}"})
        a = await gate.admit(principal, model=model, endpoint="e", input_tokens_estimate=1000, max_output_tokens=1000)
        await gate.settle(a, prompt_tokens=1000, completion_tokens=1000, cached_tokens=0, status="success",
                          status_code=200, latency_ms=1, backend="t", request_id="1")
        stores.users.update(user_id, {"next_budget_reset_at": "2000-01-01T00:00:00.000000+00:00"})
        # when the next requests arrive (concurrently) after the period's end
        principal = await gate.authenticate({"Authorization": f"Bearer {secret}"})
        await asyncio.gather(*(gate.admit(principal, model=model, endpoint="e", input_tokens_estimate=1,
                                          max_output_tokens=1) for _ in range(5)))

    asyncio.run(scenario())
    user = stores.users.get(user_id)
    assert user is not None
    # then spend restarted from 0 (only the new holds remain), the next reset is in the future,
    # and the history holds the previous spend
    assert user["spend"] == 0 and user["reserved"] > 0
    assert user["next_budget_reset_at"] > "2026"
    assert [h["previous_spend"] for h in user["reset_history"]][-1] == HOLD


def test_store_down_during_auth_is_503_not_allow(ddb_tables: str, monkeypatch: pytest.MonkeyPatch) -> None:
    # given a gateway whose store cannot be reached
    monkeypatch.setenv("ISTHMUS_DYNAMODB_ENDPOINT", "http://127.0.0.1:9")
    monkeypatch.setenv("ISTHMUS_MASTER_KEY", "sk-master-down")
    dynamodb.reset_clients()
    try:
        gate = TenancyGate(wiring.stores(), Credentials(wiring.stores()))
        # when a key must be checked, then the answer is 503
        with pytest.raises(ApiError) as err:
            asyncio.run(gate.authenticate({"Authorization": "Bearer gw-something"}))
        assert err.value.status == 503
    finally:
        monkeypatch.setenv("ISTHMUS_DYNAMODB_ENDPOINT", ddb_tables)
        dynamodb.reset_clients()
