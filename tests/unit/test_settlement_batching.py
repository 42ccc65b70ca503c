"""How long a settlement waits for company: usage rows without a charge wait longer (their store call's CPU is
shared by more rows), a charge is never held past the settlement delay, and shutdown writes everything at once."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping, Sequence
from decimal import Decimal
from typing import Any

from isthmus.ports.tenancy import Charge
from isthmus.services.tenancy.settlements import Settlement, SettlementWriter, default_usage_delay_s


class RecordingLedger:
    """The usage store's two settlement calls, recorded (each call is one store round trip)."""

    def __init__(self) -> None:
        self.calls: list[list[str]] = []

    def settle(self, row: Mapping[str, Any], charge: Charge | None) -> bool:
        self.calls.append([str(row["id"])])
        return True

    def settle_many(self, rows: Sequence[Mapping[str, Any]], charges: Sequence[Charge]) -> bool:
        self.calls.append([str(r["id"]) for r in rows])
        return True


async def direct(fn: Any, *args: Any) -> Any:
    return fn(*args)


def writer(ledger: RecordingLedger, *, usage_delay_s: float) -> SettlementWriter:
    return SettlementWriter(ledger, None, direct, delay_s=0.01, usage_delay_s=usage_delay_s,  # type: ignore[arg-type]
                            spool=None)


def free(row_id: str) -> Settlement:
    return Settlement({"id": row_id})


def charged(row_id: str) -> Settlement:
    return Settlement({"id": row_id}, Charge("u1", cost=Decimal("0.001"), hold=Decimal("0.01")))


def test_rows_without_a_charge_share_one_store_call_over_the_longer_wait() -> None:
    ledger = RecordingLedger()

    async def scenario() -> None:
        w = writer(ledger, usage_delay_s=2.0)
        # given three anonymous requests settled 50 ms apart (longer than the 10 ms settlement delay)
        pending = []
        for n in range(3):
            pending.append(asyncio.create_task(w.write(free(f"r{n}"))))
            await asyncio.sleep(0.05)
        await asyncio.gather(*pending)

    asyncio.run(scenario())
    # then their rows went to the store together, in one call
    assert ledger.calls == [["r0", "r1", "r2"]]


def test_a_charge_is_not_held_back_by_the_usage_rows_wait() -> None:
    ledger = RecordingLedger()

    async def scenario() -> None:
        w = writer(ledger, usage_delay_s=60.0)
        first = asyncio.create_task(w.write(free("anon")))
        await asyncio.sleep(0.05)
        # when a keyed request's settlement joins a batch of usage rows that would wait a minute
        await asyncio.wait_for(asyncio.gather(first, w.write(charged("keyed"))), 20)

    # then both are written long before that minute (the wait_for bound fails the test otherwise)
    asyncio.run(scenario())
    assert sorted(row for call in ledger.calls for row in call) == ["anon", "keyed"]


def test_shutdown_writes_waiting_usage_rows_at_once() -> None:
    ledger = RecordingLedger()

    async def scenario() -> None:
        w = writer(ledger, usage_delay_s=60.0)
        waiting = asyncio.create_task(w.write(free("anon")))
        await asyncio.sleep(0.05)
        # when the edge shuts down while a usage row waits for company
        await asyncio.wait_for(w.close(), 20)
        await waiting

    asyncio.run(scenario())
    # then it was written, without waiting out the minute
    assert ledger.calls == [["anon"]]


def test_the_usage_rows_wait_defaults_to_five_settlement_delays(monkeypatch: Any) -> None:
    monkeypatch.delenv("ISTHMUS_USAGE_BATCH_MS", raising=False)
    assert default_usage_delay_s(0.2) == 1.0
    monkeypatch.setenv("ISTHMUS_USAGE_BATCH_MS", "50")
    assert default_usage_delay_s(0.2) == 0.2  # never shorter than the settlement delay


def test_a_transaction_is_filled_to_dynamodbs_100_actions_and_never_past_them() -> None:
    ledger = RecordingLedger()

    async def scenario() -> None:
        w = writer(ledger, usage_delay_s=0.05)
        # given 150 anonymous usage rows and then 40 charged settlements (a row, a user update and a hold record
        # each: three actions) queued together
        await asyncio.gather(*(w.write(free(f"a{n}")) for n in range(150)),
                             *(w.write(charged(f"c{n}")) for n in range(40)))

    asyncio.run(scenario())
    # then every row is written once, in queue order, the first transaction holds 100 rows, and none holds more
    # than 100 actions
    written = [row for call in ledger.calls for row in call]
    assert written == [f"a{n}" for n in range(150)] + [f"c{n}" for n in range(40)]
    assert len(ledger.calls[0]) == 100
    for call in ledger.calls:
        assert sum(3 if row.startswith("c") else 1 for row in call) <= 100


def test_submitted_settlements_are_written_with_no_task_or_future_per_request() -> None:
    ledger = RecordingLedger()
    tasks_while_queued = 0

    async def scenario() -> None:
        nonlocal tasks_while_queued
        w = writer(ledger, usage_delay_s=0.05)
        # given 200 answers settled off their path (the long-running edge): queued, not waited for
        for n in range(200):
            w.submit(free(f"r{n}"))
        tasks_while_queued = len(asyncio.all_tasks())
        # and one that a caller does wait for, queued after them
        await w.write(charged("keyed"))
        await w.close()

    asyncio.run(scenario())
    # then only this scenario and the one flusher were running while 200 settlements waited
    assert tasks_while_queued == 2
    # and every row was written once, in order, the waited-for one included
    assert [row for call in ledger.calls for row in call] == [f"r{n}" for n in range(200)] + ["keyed"]


class BrokenLedger(RecordingLedger):
    def settle_many(self, rows: Sequence[Mapping[str, Any]], charges: Sequence[Charge]) -> bool:
        raise RuntimeError("a bug, not the store being away")


def test_a_submitted_settlement_that_cannot_be_written_is_logged_with_its_row(caplog: Any) -> None:
    async def scenario() -> None:
        w = writer(BrokenLedger(), usage_delay_s=0.02)
        # given two submitted settlements whose batch fails for a reason no spool would cure
        w.submit(free("lost-1"))
        w.submit(free("lost-2"))
        await w.close()

    asyncio.run(scenario())
    # then the failure is logged with the rows' ids (nobody was waiting to be told)
    logged = [r for r in caplog.records if r.getMessage() == "settlements not written"]
    assert len(logged) == 1 and logged[0].rows == ["lost-1", "lost-2"]
