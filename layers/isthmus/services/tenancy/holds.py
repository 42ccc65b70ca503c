"""No stuck holds: every hold and lease has an owner and an expiry, and a sweeper gives back those of a process
that died (records: isthmus.adapters.holds_ddb).

A long-running process (the edge) runs a :class:`HoldKeeper`: it writes its owner heartbeat every third of
``ISTHMUS_HOLD_EXPIRY_S`` (one write per process, however many holds and leases it has: the records point at
their owner, so the heartbeat extends them all), sweeps every ``ISTHMUS_HOLD_SWEEP_S``, and replays the
settlement spool (isthmus.services.tenancy.spool) while it has entries. A record is reclaimed once its own expiry has
passed and its owner's heartbeat is stale (or it has no owner): so at most ``ISTHMUS_HOLD_EXPIRY_S`` plus
one sweep after its process died. A process that cannot heartbeat (a Lambda sandbox, frozen between invokes)
writes records with no owner that expire after ``ISTHMUS_HOLD_MAX_S``, longer than any invoke can run; the
template's scheduled HoldsSweeperFunction (functions/holds_sweeper/sweeper.py) sweeps there.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import socket
import time
import uuid
from collections.abc import Awaitable, Callable
from decimal import Decimal
from typing import Any

from isthmus.observability import get_logger
from isthmus.ports.tenancy import HoldStore, HoldTag

log = get_logger("holds")

_owner: str | None = None  # this process's owner id while its heartbeat runs


def expiry_s() -> float:
    return float(os.environ.get("ISTHMUS_HOLD_EXPIRY_S", "60"))


def max_hold_s() -> float:
    return float(os.environ.get("ISTHMUS_HOLD_MAX_S", "960"))  # Lambda's longest invoke (900 s) and a margin


def sweep_s() -> float:
    return float(os.environ.get("ISTHMUS_HOLD_SWEEP_S", "15"))


def owner() -> str | None:
    return _owner


def _expires_at() -> Decimal:
    ttl = expiry_s() if _owner is not None else max_hold_s()
    return Decimal(str(round(time.time() + ttl, 3)))


def hold_tag(admission_id: str) -> HoldTag:
    """The record of one exact hold."""
    return HoldTag(f"hold#{admission_id}", _owner, _expires_at())


def lease_tag(user_id: str, record_id: str | None = None) -> HoldTag:
    """A lease record of this process for the user: a new one (``record_id`` None) or an existing one."""
    return HoldTag(record_id or f"lease#{_owner or 'sandbox'}#{user_id}#{uuid.uuid4().hex[:8]}", _owner,
                   _expires_at())


def sweep_once(store: HoldStore, now: float | None = None, *, alive_owner: str | None = None) -> int:
    """Reclaim every expired record of a dead (or no) owner; returns how many were given back. ``alive_owner``:
    the sweeping process's own id, alive whatever its last heartbeat says (a heartbeat that took long while
    the store was slow must not get its own leases reclaimed under it)."""
    at = Decimal(str(round(time.time() if now is None else now, 3)))
    records = store.records()
    beats = {str(r["owner"]): Decimal(r["expires_at"]) for r in records if r.get("kind") == "owner"}
    reclaimed, owners_in_use = 0, set()
    for record in records:
        if record.get("kind") == "owner":
            continue
        who = record.get("owner")
        alive = who is not None and (who == alive_owner or beats.get(str(who), Decimal(0)) >= at)
        if Decimal(record.get("expires_at", 0)) >= at or alive:
            owners_in_use.add(str(who))
            continue
        if store.reclaim(record, at):
            reclaimed += 1
            log.info("hold reclaimed", extra={"user_id": record.get("user_id"), "kind": record.get("kind"),
                                              "amount": str(record.get("amount", 0))})
        else:
            owners_in_use.add(str(who))
    for who, beat in beats.items():
        if beat < at and who not in owners_in_use and who != alive_owner:
            store.forget_owner(who, beat)
    return reclaimed


Caller = Callable[..., Awaitable[Any]]
WARN_EVERY_S = 60.0


class HoldKeeper:
    """The long-running process's background task: heartbeat, sweep, spool replay."""

    def __init__(self, store: HoldStore, call: Caller, *, heartbeat: bool,
                 replay: Callable[[], Awaitable[int]] | None = None) -> None:
        self.store, self.call, self.heartbeat, self.replay = store, call, heartbeat, replay
        self._task: asyncio.Task[None] | None = None
        self._last_warning = -WARN_EVERY_S

    def start(self) -> None:
        global _owner
        if self.heartbeat and _owner is None:
            _owner = f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:8]}"
        self._task = asyncio.ensure_future(self._run())

    async def close(self) -> None:
        global _owner
        if self._task is not None:
            self._task.cancel()
            with contextlib.suppress(BaseException):
                await self._task
        _owner = None

    async def beat(self) -> None:
        if _owner is not None:
            await self.call(self.store.heartbeat, _owner, Decimal(str(round(time.time() + expiry_s(), 3))))

    async def _run(self) -> None:
        next_beat = next_sweep = 0.0
        while True:
            now = time.monotonic()
            try:
                if now >= next_beat:
                    await self.beat()
                    next_beat = now + max(0.2, expiry_s() / 3)
                if self.replay is not None:
                    await self.replay()
                if now >= next_sweep:
                    next_sweep = now + sweep_s()
                    await self.call(sweep_once, self.store, alive_owner=_owner)
            except asyncio.CancelledError:
                raise
            except Exception as exc:  # the store is away: the next round tries again
                if time.monotonic() - self._last_warning >= WARN_EVERY_S:  # one line a minute, not one a second
                    self._last_warning = time.monotonic()
                    log.warning("hold keeper round failed", extra={"error": type(exc).__name__})
            await asyncio.sleep(min(1.0, max(0.2, expiry_s() / 3)))
