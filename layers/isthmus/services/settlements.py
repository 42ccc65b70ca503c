"""Settlements written in small batches: usage rows and user reconciliations, off the request path.

Why: one transaction per request (usage row + user update) costs the store and this process more than
the request itself on a busy gateway; settling a few requests together writes one transaction for all of
them. Every row still goes in at most once (``attribute_not_exists(id)``) and together with its user's
update: a batch is one transaction, so it lands whole or not at all. When a batch is refused (a row
already settled by another instance, a user deleted meanwhile) its rows are settled one by one, the way
a lone settlement always was. A caller's ``write`` returns once its row is in the table.

``delay_s`` is how long the first settlement of a batch waits for company: a fraction of a second in a
long-running process, 0 under Lambda (whose invocation waits for it).
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from decimal import Decimal
from typing import Any

from isthmus.background import per_loop
from isthmus.ports.tenancy import UsageStore, UserStore

MAX_ROWS = 40  # rows plus distinct users must stay under DynamoDB's 100 items per transaction


def default_delay_s() -> float:
    from isthmus import settings

    if settings.in_lambda():
        return 0.0
    return float(os.environ.get("ISTHMUS_SETTLE_BATCH_MS", "200")) / 1000


@dataclass
class Settlement:
    row: dict[str, Any]
    user_id: str | None = None  # None: nothing to reconcile (free, unpriced or not counted)
    cost: Decimal = Decimal(0)
    hold: Decimal = Decimal(0)
    tokens_held: int = 0
    tokens_used: int = 0
    requests_held: int = 0
    done: asyncio.Future[None] | None = field(default=None, repr=False)


class _Queue:
    def __init__(self) -> None:
        self.pending: dict[str, Settlement] = {}
        self.flusher: asyncio.Task[None] | None = None


class SettlementWriter:
    """Batches per event loop: a future is only ever resolved on its own loop (the local edge's lambda mode
    runs one loop per sandbox thread, all sharing this writer)."""

    def __init__(self, usage: UsageStore, users: UserStore, call: Callable[..., Awaitable[Any]],
                 delay_s: float | None = None) -> None:
        self.usage, self.users, self.call = usage, users, call
        self.delay_s = default_delay_s() if delay_s is None else delay_s
        self._queues: dict[asyncio.AbstractEventLoop, _Queue] = {}

    def _queue(self) -> _Queue:
        return per_loop(self._queues, _Queue)

    async def write(self, s: Settlement) -> None:
        q = self._queue()
        row_id = str(s.row["id"])
        queued = q.pending.get(row_id)
        if queued is None:
            s.done = asyncio.get_running_loop().create_future()
            q.pending[row_id] = queued = s
            if q.flusher is None or q.flusher.done():
                q.flusher = asyncio.ensure_future(self._flush_loop(q))
        assert queued.done is not None
        await asyncio.shield(queued.done)

    async def close(self) -> None:
        """Shutdown: whatever is queued on this loop is written now."""
        q = self._queue()
        while q.flusher is not None and not q.flusher.done():
            await asyncio.gather(q.flusher, return_exceptions=True)

    async def _flush_loop(self, q: _Queue) -> None:
        while q.pending:
            if self.delay_s > 0 and len(q.pending) < MAX_ROWS:
                await asyncio.sleep(self.delay_s)
            batch = [q.pending.pop(k) for k in list(q.pending)[:MAX_ROWS]]
            await self._write_batch(batch)

    async def _write_batch(self, batch: list[Settlement]) -> None:
        try:
            if len(batch) == 1 or not await self.call(self.usage.settle_many, [s.row for s in batch],
                                                      self._user_updates(batch)):
                for s in batch:  # one at a time: an already-settled row is skipped, a gone user keeps its row
                    await self.call(self.usage.settle, s.row, self._user_updates([s])[0] if s.user_id else None)
        except BaseException as exc:  # every waiter gets the store's error
            for s in batch:
                if s.done is not None and not s.done.done():
                    s.done.set_exception(exc)
            if not isinstance(exc, Exception):
                raise
            return
        for s in batch:
            if s.done is not None and not s.done.done():
                s.done.set_result(None)

    def _user_updates(self, batch: list[Settlement]) -> list[dict[str, Any]]:
        """One update per user: the settlements' amounts summed (every field is an ADD)."""
        per_user: dict[str, list[Settlement]] = {}
        for s in batch:
            if s.user_id:
                per_user.setdefault(s.user_id, []).append(s)
        return [self.users.settle_update(
            user_id, cost=sum((s.cost for s in group), Decimal(0)), hold=sum((s.hold for s in group), Decimal(0)),
            tokens_held=sum(s.tokens_held for s in group), tokens_used=sum(s.tokens_used for s in group),
            requests_held=sum(s.requests_held for s in group), requests=len(group))
            for user_id, group in per_user.items()]
