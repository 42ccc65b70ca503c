"""TenancyGate with a token bound, against DynamoDB Local: the bound is computed only when a hold is needed, and
a settlement reporting more than the hold charges the hold, records the rest as unbilled_cost, and says so."""

from __future__ import annotations

import asyncio
import logging
from decimal import Decimal

import pytest

from isthmus import wiring
from isthmus.observability import get_metrics
from isthmus.services.inference.token_bounds import TokenBound
from isthmus.services.tenancy.credentials import Credentials
from isthmus.services.tenancy.gate import ANONYMOUS, MASTER
from isthmus.services.tenancy.keys import CreateKey, KeyService
from isthmus.services.tenancy.usage import usage_view
from tests.integration.test_gate_money import tenant, usage_rows

pytestmark = pytest.mark.integration


class Bound:
    """A token bound that counts how often it was asked for."""

    def __init__(self, input_tokens: int, output_tokens: int) -> None:
        self.value = TokenBound(input_tokens, output_tokens, exact=True)
        self.calls = 0

    async def __call__(self) -> TokenBound:
        self.calls += 1
        return self.value


def test_the_bound_is_only_computed_when_a_hold_is_needed(ddb_tables: str) -> None:
    # given a priced model, a user with a budget, and a key of that user excluded from budgets
    model, user_id, secret = tenant(Decimal(1))
    excluded = KeyService(wiring.stores(), Credentials(wiring.stores())).create(
        CreateKey(user_id=user_id, exclude_from_budget=True))["key"]
    gate = wiring.new_gate(leases=False)

    async def scenario() -> tuple[int, int, Decimal]:
        free, unpaid = Bound(1000, 1000), Bound(1000, 1000)
        # when the anonymous caller (open mode), the master key, an excluded key, or anyone on an unpriced
        # model is admitted, then no bound is computed
        principal = await gate.authenticate({"Authorization": f"Bearer {secret}"})
        for who in (ANONYMOUS, MASTER, await gate.authenticate({"Authorization": f"Bearer {excluded}"})):
            await gate.admit(who, model=model, endpoint="e", input_tokens_estimate=1, max_output_tokens=1, bound=free)
        await gate.admit(principal, model="unpriced:model", endpoint="e", input_tokens_estimate=1,
                         max_output_tokens=1, bound=unpaid)
        # when the user's key asks for the priced model, then the hold is the bound's worst case
        counted = Bound(300, 200)
        admission = await gate.admit(principal, model=model, endpoint="e", input_tokens_estimate=1,
                                     max_output_tokens=1, bound=counted)
        return free.calls + unpaid.calls, counted.calls, admission.hold

    uncounted, counted, hold = asyncio.run(scenario())
    assert uncounted == 0 and counted == 1
    assert hold == (300 * Decimal(1) + 200 * Decimal(2)) / Decimal(1_000_000)


def test_usage_above_the_hold_is_charged_the_hold_and_the_rest_is_unbilled(
        ddb_tables: str, caplog: pytest.LogCaptureFixture) -> None:
    # given a user whose budget fits exactly two holds of 100 prompt + 50 output tokens
    hold = (100 * Decimal(1) + 50 * Decimal(2)) / Decimal(1_000_000)
    model, user_id, secret = tenant(hold * 2)
    gate = wiring.new_gate(leases=False)
    metrics = get_metrics("gate")
    metrics.clear_metrics()
    caplog.set_level(logging.WARNING, logger="gate")

    async def scenario() -> None:
        principal = await gate.authenticate({"Authorization": f"Bearer {secret}"})
        first = await gate.admit(principal, model=model, endpoint="e", bound=Bound(100, 50))
        second = await gate.admit(principal, model=model, endpoint="e", bound=Bound(100, 50))
        # when the backend reports far more than the bound for the first (a provider's change), and less
        # for the second
        await gate.settle(first, prompt_tokens=100_000, completion_tokens=70, cached_tokens=0, status="success",
                          status_code=200, latency_ms=1, backend="cloud", request_id="over")
        await gate.settle(second, prompt_tokens=80, completion_tokens=50, cached_tokens=0, status="success",
                          status_code=200, latency_ms=1, backend="cloud", request_id="under")

    asyncio.run(scenario())
    rows = {r["request_id"]: r for r in usage_rows(user_id)}
    # then the first is charged its hold and the rest is recorded as unbilled; the second as it came
    reported = (100_000 * Decimal(1) + 70 * Decimal(2)) / Decimal(1_000_000)
    assert rows["over"]["cost"] == hold and rows["over"]["unbilled_cost"] == reported - hold
    assert rows["over"]["prompt_tokens"] == 100_000
    assert rows["under"]["cost"] == (80 + 100) / Decimal(1_000_000) and "unbilled_cost" not in rows["under"]
    # and the usage API shows it (null where nothing was left unbilled)
    views = {v["request_id"]: v for v in map(usage_view, rows.values())}
    assert views["over"]["unbilled_cost"] == float(reported - hold) and views["under"]["unbilled_cost"] is None
    # and the spend stays within the budget, nothing left reserved
    user = wiring.stores().users.get(user_id)
    assert user is not None
    assert user["spend"] == hold + rows["under"]["cost"] <= user["max_budget"] and user["reserved"] == 0
    # and a warning and a metric say so (with no secret in the line)
    lines = [r for r in caplog.records if "unbilled" in r.getMessage()]
    assert len(lines) == 1 and lines[0].__dict__["unbilled_cost"] == str(reported - hold)
    assert secret not in caplog.text
    assert metrics.metric_set["UnbilledRequests"]["Value"] == [1.0]
    metrics.clear_metrics()


def test_a_counted_request_admitted_with_nothing_held_is_charged_nothing(ddb_tables: str) -> None:
    # given a priced model and a bound of zero tokens (nothing to hold, so nothing reserved)
    model, user_id, secret = tenant(Decimal("0.001"))
    gate = wiring.new_gate(leases=False)

    async def scenario() -> None:
        principal = await gate.authenticate({"Authorization": f"Bearer {secret}"})
        admission = await gate.admit(principal, model=model, endpoint="e", bound=Bound(0, 0))
        assert admission.hold == 0 and not admission.reserved
        # when the backend still reports usage
        await gate.settle(admission, prompt_tokens=5000, completion_tokens=5000, cached_tokens=0, status="success",
                          status_code=200, latency_ms=1, backend="t", request_id="zero")

    asyncio.run(scenario())
    # then nothing unreserved reaches the spend: it is all unbilled
    (row,) = usage_rows(user_id)
    assert row["cost"] == 0 and row["unbilled_cost"] == (5000 + 10000) / Decimal(1_000_000)
    user = wiring.stores().users.get(user_id)
    assert user is not None and user["spend"] == 0 <= user["max_budget"]
