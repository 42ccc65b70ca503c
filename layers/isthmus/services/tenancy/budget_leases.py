"""Budget leases: a long-running gateway process admits most requests without a DynamoDB round trip.

Why: a budget hold is one conditional UpdateItem, 3-12 ms on the request path. A process that serves a
user steadily instead takes a *lease*, a block of that user's headroom moved into ``reserved`` with the
same kind of conditional write, and carves each request's hold out of it in memory. Holds are settled
exactly as before (spend += cost, reserved -= hold, headroom += hold - cost), so the user row always
reads ``reserved`` = holds in flight + unused leases, and money can never overspend: a process only
hands out what it has already reserved in the table.

A lease is sized to about ``LEASE_SECONDS`` of the user's traffic through this process (at least
``LEASE_HOLDS`` holds), so that a top-up, started in the background when half is used, lands before it
runs dry even when the store is slow.

What it costs: while a lease is out, other processes see less headroom. So a lease is taken only when
the user's headroom is at least ``HEADROOM_FACTOR`` times the lease (a user near the end of the budget
gets exact per-request holds, so "exactly N fit" stays exact), the unused part goes back after
``IDLE_S`` seconds without use and at shutdown, and leases are off where a process can be frozen or
killed without notice (AWS Lambda), unless ``ISTHMUS_BUDGET_LEASES=on``.

A lease is also written down as one record per (process, user) in the holds table (isthmus.adapters.holds_ddb),
moved in the same transaction as every lease, release and settlement carved from it, and owned by this
process's heartbeat (isthmus.services.tenancy.holds): if the process dies, the sweeper gives it back after the expiry.
A record found gone on a top-up was reclaimed (the heartbeat lagged): its balance is dropped, a new one is taken.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from decimal import Decimal
from typing import Any

from isthmus import settings
from isthmus.errors import ApiError
from isthmus.observability import get_logger
from isthmus.services.tenancy import holds, hot_cache

log = get_logger("budget-leases")

LEASE_HOLDS = 32  # a lease covers at least this many holds of the request that asked for it,
LEASE_SECONDS = 2.0  # ... or this long of the user's traffic through this process, measured (a slow store must
MAX_LEASE_HOLDS = 4096  # not let a busy user's lease run dry before the top-up lands),
HEADROOM_FACTOR = 8  # ... and is taken only if the user has 8x the lease left
REFILL_BELOW = 0.5  # top up in the background when the balance falls under half a lease
IDLE_S = 5.0
RATE_WINDOW_S = 0.5
RETRY_AFTER_REFUSAL_S = 2.0

Caller = Callable[..., Awaitable[Any]]


def leases_enabled() -> bool:
    mode = os.environ.get("ISTHMUS_BUDGET_LEASES", "auto").lower()
    if mode in ("on", "off"):
        return mode == "on"
    return not settings.in_lambda()


@dataclass
class _Lease:
    balance: Decimal = Decimal(0)
    last_used: float = 0.0
    refused_until: float = 0.0
    busy: bool = False  # a lease or release call is in flight for this user
    topping_up: asyncio.Future[None] | None = None
    window_start: float = 0.0  # admissions counted since then, to size the next lease
    window_count: int = 0
    rate: float = 0.0  # admissions per second over the last whole window (RATE_WINDOW_S or longer)
    record_id: str | None = None  # the lease record in the holds table that the balance is written on

    def count(self, now: float) -> None:
        if self.window_count == 0:
            self.window_start = now
        self.window_count += 1
        elapsed = now - self.window_start
        if elapsed >= RATE_WINDOW_S:
            self.rate, self.window_start, self.window_count = self.window_count / elapsed, now, 0

    def holds(self) -> int:
        return max(LEASE_HOLDS, min(MAX_LEASE_HOLDS, int(self.rate * LEASE_SECONDS)))


class BudgetLeases:
    def __init__(self, users: Any, call: Caller, clock: Callable[[], float] = time.monotonic) -> None:
        self.users = users  # a UserStore: lease(user_id, amount, need, tag, new), release(user_id, amount, record)
        self.call = call
        self.clock = clock
        self._leases: dict[str, _Lease] = {}
        self._tasks: set[asyncio.Future[None]] = set()
        self._reaper: asyncio.Task[None] | None = None
        self._generation = hot_cache.generation
        self._records: dict[str, str | None] = {}  # user id -> lease record, kept after the lease goes idle

    def take(self, user_id: str, hold: Decimal) -> str | None:
        """Carve ``hold`` out of this process's lease for the user (no I/O); returns the lease record the hold
        is written on (its settlement takes it off there). None: no lease covers it, the caller takes an exact
        hold in the table; a top-up is started in the background either way."""
        if hot_cache.generation != self._generation:
            # a key, user or budget changed in this process: leases taken under the old terms go back first
            self._generation = hot_cache.generation
            for uid in list(self._leases):
                self._spawn(self._give_back(uid, self._detach(uid)))
        lease = self._leases.get(user_id) or self._new_lease(user_id)
        lease.last_used = self.clock()
        lease.count(lease.last_used)
        covered = lease.record_id if lease.balance >= hold else None
        if covered:
            lease.balance -= hold
        if lease.balance < hold * lease.holds() * Decimal(REFILL_BELOW):
            self._refill(user_id, lease, hold)
        return covered

    def _new_lease(self, user_id: str) -> _Lease:
        # an idle user's lease record outlives its in-memory lease: reused, so a process has one per user
        lease = self._leases[user_id] = _Lease(record_id=self._records.get(user_id))
        return lease

    def _refill(self, user_id: str, lease: _Lease, hold: Decimal) -> None:
        if lease.busy or lease.refused_until > self.clock():
            return
        lease.busy = True
        holds = lease.holds()
        sizes = [hold * holds] + ([hold * LEASE_HOLDS] if holds > LEASE_HOLDS else [])
        lease.topping_up = self._spawn(self._top_up(user_id, lease, sizes))

    async def acquire(self, user_id: str, hold: Decimal) -> str | None:
        """:meth:`take`, but when the lease is dry and a top-up is already on its way, wait for it: it was
        asked for earlier, so it lands sooner than a hold of this request's own would."""
        if record := self.take(user_id, hold):
            return record
        pending = self._leases[user_id].topping_up
        if pending is None or pending.done():
            return None
        await asyncio.shield(pending)
        return self.take(user_id, hold)

    async def _top_up(self, user_id: str, lease: _Lease, sizes: list[Decimal]) -> None:
        """The first size the user's headroom allows (the rate-sized lease, else the smallest)."""
        try:
            for amount in sizes:
                outcome = await self._lease(user_id, lease, amount)
                if outcome == "lost":
                    # the sweeper gave this record back (our heartbeat went stale): so is our balance
                    log.warning("budget lease reclaimed under a live process", extra={"user_id": user_id})
                    lease.balance, lease.record_id = Decimal(0), None
                    outcome = await self._lease(user_id, lease, amount)
                if outcome == "ok":
                    lease.balance += amount
                    self._ensure_reaper()
                    return
            lease.refused_until = self.clock() + RETRY_AFTER_REFUSAL_S
        except ApiError:
            lease.refused_until = self.clock() + RETRY_AFTER_REFUSAL_S
        finally:
            lease.busy = False

    async def _lease(self, user_id: str, lease: _Lease, amount: Decimal) -> str:
        tag = holds.lease_tag(user_id, lease.record_id)
        outcome = str(await self.call(self.users.lease, user_id, amount, amount * HEADROOM_FACTOR, tag,
                                      lease.record_id is None))
        if outcome == "ok":
            lease.record_id = tag.record_id
        return outcome

    def _detach(self, user_id: str) -> tuple[Decimal, str | None]:
        """The unused balance, taken off the lease at once (so no admission can use it meanwhile)."""
        lease = self._leases.get(user_id)
        if lease is None or lease.busy or lease.balance <= 0:
            return Decimal(0), None
        amount, lease.balance, lease.busy = lease.balance, Decimal(0), True
        return amount, lease.record_id

    async def _give_back(self, user_id: str, detached: tuple[Decimal, str | None]) -> None:
        amount, record_id = detached
        if amount <= 0:
            return
        lease = self._leases.get(user_id) or self._new_lease(user_id)
        try:
            await self.call(self.users.release, user_id, amount, record_id)
        except ApiError:
            lease.balance += amount  # still ours in the table: try again later
            log.warning("budget lease release failed", extra={"user_id": user_id})
        finally:
            lease.busy = False

    async def release(self, user_id: str) -> None:
        """Give the unused balance back to the user's headroom."""
        await self._give_back(user_id, self._detach(user_id))

    async def release_idle(self) -> None:
        now = self.clock()
        for user_id, lease in list(self._leases.items()):
            if lease.balance > 0 and now - lease.last_used >= IDLE_S:
                await self.release(user_id)
            if lease.balance <= 0 and not lease.busy and now - lease.last_used >= IDLE_S:
                self._records[user_id] = self._leases.pop(user_id).record_id

    async def close(self) -> None:
        """Shutdown: wait for top-ups in flight, then give every unused balance back."""
        if self._reaper is not None:
            self._reaper.cancel()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        for user_id in list(self._leases):
            await self.release(user_id)

    def outstanding(self) -> Decimal:
        return sum((lease.balance for lease in self._leases.values()), Decimal(0))

    def _spawn(self, coro: Awaitable[None]) -> asyncio.Future[None]:
        task = asyncio.ensure_future(coro)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    def _ensure_reaper(self) -> None:
        if self._reaper is None or self._reaper.done():
            self._reaper = asyncio.ensure_future(self._reap())

    async def _reap(self) -> None:
        while any(lease.balance > 0 for lease in self._leases.values()):
            await asyncio.sleep(1.0)
            with contextlib.suppress(Exception):
                await self.release_idle()
