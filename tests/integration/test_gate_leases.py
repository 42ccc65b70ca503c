"""Budget leases and batched settlements against DynamoDB Local: the table's ``reserved`` always equals
the holds in flight plus the unused leases, several gateway processes (gates) racing one budget never
overspend, leases go back at close, and a row settled twice (by two processes) is written and billed once."""

from __future__ import annotations

import asyncio
from decimal import Decimal

import pytest

from isthmus import wiring
from isthmus.services.tenancy import budget_leases
from isthmus.services.tenancy.gate import Admission, Principal, TenancyGate

from .test_gate_money import HOLD, admit_or_refuse, tenant, usage_rows

pytestmark = pytest.mark.integration


async def settle_at_worst_case(gate: TenancyGate, admission: Admission, n: int) -> None:
    """1000 in + 1000 out: the real cost equals the hold, so spend climbs as fast as the budget allows."""
    await gate.settle(admission, prompt_tokens=1000, completion_tokens=1000, cached_tokens=0, status="success",
                      status_code=200, latency_ms=1, backend="test", request_id=f"req-{n}")


def test_a_steady_user_is_served_from_a_lease_and_gets_it_back_at_close(ddb_tables: str,
                                                                        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_SETTLE_BATCH_MS", "5")  # settled one by one here: no need to wait for company
    # given a user with room for 10,000 holds and a gate with leases on
    model, user_id, secret = tenant(HOLD * 10_000)
    gate = wiring.new_gate(leases=True)
    users = wiring.stores().users

    async def scenario() -> tuple[list[Admission], Decimal, Decimal]:
        principal = await gate.authenticate({"Authorization": f"Bearer {secret}"})
        admitted = []
        # when 40 requests arrive one after another
        for n in range(40):
            admission = await gate.admit(principal, model=model, endpoint="e", input_tokens_estimate=1000,
                                         max_output_tokens=1000)
            admitted.append(admission)
            await settle_at_worst_case(gate, admission, n)
            await asyncio.sleep(0.01)  # room for the background top-up
        user = users.get(user_id)
        assert user is not None
        assert gate.leases is not None
        table_reserved, outstanding = user["reserved"], gate.leases.outstanding()
        await gate.close()
        return admitted, table_reserved, outstanding

    admitted, table_reserved, outstanding = asyncio.run(scenario())
    # then most of them were carved out of a lease, with no round trip of their own
    assert sum(a.leased for a in admitted) >= 30
    # and while the lease was out, the table's reserved was exactly the unused lease
    assert outstanding > 0 and table_reserved == outstanding
    # and after close the lease is back: nothing reserved, spend is the 40 costs, headroom is the rest
    user = users.get(user_id)
    assert user is not None
    assert user["reserved"] == 0 and user["reserved_requests"] == 0 and user["reserved_tokens"] == 0
    assert user["spend"] == 40 * HOLD
    assert user["headroom"] == user["max_budget"] - user["spend"]
    assert user["current_requests"] == 40
    assert len(usage_rows(user_id)) == 40


def test_four_processes_racing_one_budget_with_leases_never_overspend(ddb_tables: str) -> None:
    # given a budget that fits exactly 600 worst-case holds, and four gateway processes with leases on
    model, user_id, secret = tenant(HOLD * 600)
    gates = [wiring.new_gate(leases=True) for _ in range(4)]

    async def scenario() -> list[Admission | None]:
        principals: list[Principal] = [await g.authenticate({"Authorization": f"Bearer {secret}"}) for g in gates]
        # (each process has served its user a little, so every one holds a lease)
        warm = [await g.admit(p, model=model, endpoint="e", input_tokens_estimate=1000, max_output_tokens=1000)
                for g, p in zip(gates, principals, strict=True)]
        await asyncio.sleep(0.3)
        await asyncio.gather(*(settle_at_worst_case(g, a, -i) for i, (g, a) in enumerate(zip(gates, warm,
                                                                                              strict=True))))

        async def one(i: int) -> Admission | None:
            g = gates[i % 4]
            admission = await admit_or_refuse(g, principals[i % 4], model, i)
            if admission is not None:
                await settle_at_worst_case(g, admission, i)
            return admission

        # when 1000 more requests race across the four, every admitted one spending its whole hold
        results = await asyncio.gather(*(one(i) for i in range(1000)))
        for g in gates:
            await g.close()
        return [*warm, *results]

    results = asyncio.run(scenario())
    admitted = [a for a in results if a is not None]
    user = wiring.stores().users.get(user_id)
    assert user is not None
    # then leases did serve part of the race
    assert any(a.leased for a in admitted)
    # and no more than the budget was admitted or spent, and the leases all came back
    assert len(admitted) <= 600
    assert user["spend"] == len(admitted) * HOLD <= user["max_budget"]
    assert user["reserved"] == 0
    # and at most what four leases can strand went unused in the race: a lease and a half each, a lease being
    # at most an eighth of the headroom when it was taken
    assert len(admitted) >= 600 - 4 * (600 // budget_leases.HEADROOM_FACTOR) * 3 // 2
    # and every request has its row, refused ones included
    assert len(usage_rows(user_id)) == 1004


def test_a_row_settled_by_two_processes_is_written_and_billed_once(ddb_tables: str) -> None:
    # given two admissions, the first already settled by one process
    model, user_id, secret = tenant(HOLD * 10)
    first_gate, second_gate = wiring.new_gate(leases=False), wiring.new_gate(leases=False)

    async def scenario() -> None:
        principal = await first_gate.authenticate({"Authorization": f"Bearer {secret}"})
        a = await first_gate.admit(principal, model=model, endpoint="e", input_tokens_estimate=1000,
                                   max_output_tokens=1000)
        b = await first_gate.admit(principal, model=model, endpoint="e", input_tokens_estimate=1000,
                                   max_output_tokens=1000)
        await settle_at_worst_case(first_gate, a, 1)
        # when another process settles both in one batch (a retry of the first, the second for real),
        # each twice at once
        await asyncio.gather(*(settle_at_worst_case(second_gate, adm, n) for n, adm in ((1, a), (2, b), (1, a),
                                                                                        (2, b))))

    asyncio.run(scenario())
    # then there are two rows, and the user paid for two requests
    assert len(usage_rows(user_id)) == 2
    user = wiring.stores().users.get(user_id)
    assert user is not None
    assert user["spend"] == 2 * HOLD and user["reserved"] == 0 and user["current_requests"] == 2


def test_a_budget_cut_in_this_process_sends_the_leases_back(ddb_tables: str, monkeypatch: pytest.MonkeyPatch) -> None:
    from isthmus.services.tenancy.budgets import BudgetService, UpdateBudget

    monkeypatch.setenv("ISTHMUS_SETTLE_BATCH_MS", "5")
    # given a user served from a lease, 40 requests spent at worst case
    model, user_id, secret = tenant(HOLD * 10_000)
    gate = wiring.new_gate(leases=True)
    stores = wiring.stores()

    async def scenario() -> int:
        principal = await gate.authenticate({"Authorization": f"Bearer {secret}"})
        for n in range(40):
            await settle_at_worst_case(gate, await gate.admit(principal, model=model, endpoint="e",
                                                              input_tokens_estimate=1000, max_output_tokens=1000), n)
            await asyncio.sleep(0.01)
        assert gate.leases is not None and gate.leases.outstanding() > 0
        # when the budget is cut to leave room for exactly 5 more (through the service, in this process)
        user = stores.users.get(user_id)
        assert user is not None
        BudgetService(stores).update(str(user["budget_id"]), UpdateBudget(max_budget=HOLD * 45))
        admitted = 0
        for n in range(40, 60):
            found = await admit_or_refuse(gate, principal, model, n)
            if found is not None:
                admitted += 1
                await settle_at_worst_case(gate, found, n)
        await gate.close()
        return admitted

    # then exactly 5 more are admitted: the lease went back instead of serving requests past the new limit
    assert asyncio.run(scenario()) == 5
    user = stores.users.get(user_id)
    assert user is not None
    assert user["spend"] == HOLD * 45 and user["reserved"] == 0
