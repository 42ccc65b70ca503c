"""Settlements written in small batches: usage rows and user reconciliations, off the request path.

Why: one transaction per request (usage row + user update) costs the store and this process more than
the request itself on a busy gateway; settling a few requests together writes one transaction for all of
them. Every row still goes in at most once (``attribute_not_exists(id)``) and together with its user's
update: a batch is one transaction, so it lands whole or not at all. When a batch is refused (a row
already settled by another instance, a user deleted meanwhile) its rows are settled one by one, the way
a lone settlement always was. A caller's ``write`` returns once its row is in the table, or kept for later.

A settlement the store cannot take is kept (a local spool, or a dead-letter queue under Lambda; see
SettlementWriter) and replayed later, exactly once thanks to the same row-id condition.

``delay_s`` is how long the first settlement of a batch waits for company: a fraction of a second in a
long-running process, 0 under Lambda (whose invocation waits for it). A batch of usage rows alone (no charge:
open mode, free or unpriced models) waits longer, ``usage_delay_s``: such a row moves no money, and each store
call costs this process ~2 ms of CPU (botocore) whatever its size against ~0.1 ms per row, taken from the
requests it runs beside (at one request at a time, 8 rows a call cost ~280 us of CPU per request, 32 ~100 us).
A charge joining the batch is written at the next ``delay_s`` step, as before.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import asdict, dataclass, field
from typing import Any

from starlette.concurrency import run_in_threadpool

from isthmus import settings
from isthmus.background import per_loop
from isthmus.errors import ApiError
from isthmus.observability import get_logger
from isthmus.ports.tenancy import Charge, UsageStore, UserStore
from isthmus.services.tenancy.spool import SettlementSpool, default_spool, is_poison

log = get_logger("settlements")

# rows + distinct users + hold records (one per exact hold, one per lease record) must stay under DynamoDB's
# 100 items per transaction: a settlement with a charge adds at most one of each, one without only its row. Why
# fill a transaction: botocore's cost is ~1 ms of CPU per call plus ~0.07 ms per row, so the usage rows of
# anonymous requests (open mode) cost ~0.1 ms of CPU each in batches of 32, ~0.08 in batches of 100.
MAX_ACTIONS = 100
LAMBDA_RETRY_PAUSES_S = (0.2, 0.5, 1.0)  # within one invoke, before the dead-letter queue


def _actions(s: Settlement) -> int:
    return 1 if s.charge is None else 3


def _full(pending: dict[str, Settlement]) -> bool:
    return sum(map(_actions, pending.values())) >= MAX_ACTIONS


def _take(pending: dict[str, Settlement]) -> list[Settlement]:
    """The oldest settlements that fit one transaction (at least one)."""
    batch: list[Settlement] = []
    actions = 0
    for key in list(pending):
        actions += _actions(pending[key])
        if batch and actions > MAX_ACTIONS:
            break
        batch.append(pending.pop(key))
    return batch


def default_delay_s() -> float:
    if settings.in_lambda():
        return 0.0
    return float(os.environ.get("ISTHMUS_SETTLE_BATCH_MS", "200")) / 1000


def default_usage_delay_s(delay_s: float) -> float:
    """How long a batch of usage rows without a charge waits for company: ``ISTHMUS_USAGE_BATCH_MS``, by default
    five times ``delay_s`` (1 s), never less than ``delay_s``."""
    if settings.in_lambda():
        return delay_s
    configured = os.environ.get("ISTHMUS_USAGE_BATCH_MS")
    return max(delay_s, float(configured) / 1000 if configured else 5 * delay_s)


@dataclass
class Settlement:
    row: dict[str, Any]
    charge: Charge | None = None  # None: nothing to reconcile (free, unpriced or not counted)
    done: asyncio.Future[None] | None = field(default=None, repr=False)

    def entry(self) -> dict[str, Any]:
        """The spool / dead-letter form (see replay_entry)."""
        return {"row": self.row, "charge": None if self.charge is None else asdict(self.charge)}


def spool_replayer(spool: SettlementSpool, usage: UsageStore,
                   call: Callable[..., Awaitable[Any]]) -> Callable[[], Awaitable[int]]:
    """The hold keeper's replay round: spooled settlements into the usage table (poison entries set aside), or
    nothing at once while the spool is empty."""
    async def replay() -> int:
        if not spool.pending():
            return 0
        return int(await call(spool.replay, lambda entry: replay_entry(usage, entry), is_poison))
    return replay


def replay_entry(usage: UsageStore, entry: dict[str, Any]) -> bool:
    """Settle a spooled or dead-lettered settlement (idempotent: keyed by its row id)."""
    charge = entry.get("charge")
    return usage.settle(entry["row"], None if charge is None else Charge(**charge))


class _Queue:
    def __init__(self) -> None:
        self.pending: dict[str, Settlement] = {}
        self.flusher: asyncio.Task[None] | None = None


class SettlementWriter:
    """Batches per event loop: a future is only ever resolved on its own loop (the local edge's lambda mode
    runs one loop per sandbox thread, all sharing this writer).

    When the store cannot take a batch, a long-running process appends it to the local spool (replayed by the
    edge's HoldKeeper); under Lambda, where no local file outlives the sandbox, the batch is retried within the
    invoke and then sent to the dead-letter queue (``ISTHMUS_SETTLEMENT_DLQ_URL``) whose consumer replays it.
    Either way the waiters return normally: the answer was delivered, its settlement is kept."""

    def __init__(self, usage: UsageStore, users: UserStore, call: Callable[..., Awaitable[Any]],
                 delay_s: float | None = None, spool: SettlementSpool | None = None,
                 dead_letter: Callable[[list[dict[str, Any]]], None] | None = None,
                 usage_delay_s: float | None = None) -> None:
        self.usage, self.users, self.call = usage, users, call
        self.delay_s = default_delay_s() if delay_s is None else delay_s
        self.usage_delay_s = default_usage_delay_s(self.delay_s) if usage_delay_s is None else usage_delay_s
        self._closing = False
        self.in_lambda = settings.in_lambda()
        self.spool = spool if spool is not None or self.in_lambda else default_spool()
        self.dead_letter = dead_letter  # under Lambda: isthmus.wiring.settlement_dead_letter
        self._queues: dict[asyncio.AbstractEventLoop, _Queue] = {}

    def _queue(self) -> _Queue:
        return per_loop(self._queues, _Queue)

    async def write(self, s: Settlement) -> None:
        """Queue ``s`` and return once its batch is written (the store's error, if it could not be kept)."""
        queued = self._enqueue(s, waited=True)
        if queued.done is None:  # the same row queued earlier by submit: this caller waits for its batch
            queued.done = asyncio.get_running_loop().create_future()
        await asyncio.shield(queued.done)

    def submit(self, s: Settlement) -> None:
        """Queue ``s`` for the next batch, without waiting for it (no future, no task per settlement): the
        long-running edge settles off the answer's path. A batch the store cannot take is spooled as ever; any
        other failure is logged with the rows' ids (nobody waits to be told)."""
        self._enqueue(s, waited=False)

    def _enqueue(self, s: Settlement, *, waited: bool) -> Settlement:
        q = self._queue()
        row_id = str(s.row["id"])
        queued = q.pending.get(row_id)
        if queued is None:
            if waited:
                s.done = asyncio.get_running_loop().create_future()
            q.pending[row_id] = queued = s
            if q.flusher is None or q.flusher.done():
                q.flusher = asyncio.ensure_future(self._flush_loop(q))
        return queued

    async def close(self) -> None:
        """Shutdown: whatever is queued on this loop is written now."""
        self._closing = True  # rows without a charge stop waiting for company
        q = self._queue()
        while q.flusher is not None and not q.flusher.done():
            await asyncio.gather(q.flusher, return_exceptions=True)

    async def _flush_loop(self, q: _Queue) -> None:
        while q.pending:
            if self.delay_s > 0 and not _full(q.pending):
                await asyncio.sleep(self.delay_s)
                waited = self.delay_s
                while (waited < self.usage_delay_s and not self._closing and not _full(q.pending)
                       and all(s.charge is None for s in q.pending.values())):
                    step = min(self.delay_s, self.usage_delay_s - waited)
                    await asyncio.sleep(step)
                    waited += step
            await self._write_batch(_take(q.pending))

    async def _store(self, batch: list[Settlement]) -> None:
        charges = [s.charge for s in batch if s.charge is not None]
        if len(batch) == 1 or not await self.call(self.usage.settle_many, [s.row for s in batch], charges):
            for s in batch:  # one at a time: an already-settled row is skipped, a gone user keeps its row
                await self.call(self.usage.settle, s.row, s.charge)

    async def _write_batch(self, batch: list[Settlement]) -> None:
        try:
            try:
                await self._store(batch)
            except ApiError as exc:
                # only what the store could not take (503: unreachable, throttled, refused) is kept for later;
                # anything else is a bug, which a replay would only repeat
                if exc.status != 503 or not await self._keep(batch):
                    raise
        except BaseException as exc:  # every waiter gets the store's error
            unwaited = [str(s.row.get("id")) for s in batch if s.done is None]
            for s in batch:
                if s.done is not None and not s.done.done():
                    s.done.set_exception(exc)
            if unwaited:
                log.error("settlements not written", extra={"error": type(exc).__name__, "rows": unwaited[:100],
                                                            "count": len(unwaited)})
            if not isinstance(exc, Exception):
                raise
            return
        for s in batch:
            if s.done is not None and not s.done.done():
                s.done.set_result(None)

    async def _keep(self, batch: list[Settlement]) -> bool:
        """The store refused or could not be reached: keep the batch for later (False: nowhere to keep it)."""
        entries = [s.entry() for s in batch]
        if self.spool is not None:
            await run_in_threadpool(self.spool.append, entries)
            return True
        for pause in LAMBDA_RETRY_PAUSES_S:
            await asyncio.sleep(pause)
            try:
                await self._store(batch)
                return True
            except ApiError as exc:
                if exc.status != 503:
                    raise
        if self.dead_letter is None:
            return False
        await run_in_threadpool(self.dead_letter, entries)
        log.warning("settlements sent to the dead-letter queue", extra={"count": len(entries)})
        return True
