"""The in-process batch worker of a long-running process (the local edge): every ``ISTHMUS_BATCH_POLL_SECONDS``
it looks for unfinished batches and runs each one not already running here. Batches left unfinished by a
process that crashed are found the same way at start (their lines' leases run out and are run again)."""

from __future__ import annotations

import asyncio
import contextlib

from isthmus.observability import get_logger
from isthmus.ports.batches import BatchStore
from isthmus.services.batches.model import ACTIVE
from isthmus.services.batches.runner import BatchRunner
from isthmus.services.tenancy.credentials import call
from isthmus.settings import env_number

log = get_logger("batches")


class BatchWorker:
    def __init__(self, store: BatchStore, runner: BatchRunner) -> None:
        self.store = store
        self.runner = runner
        self.poll_s = env_number("ISTHMUS_BATCH_POLL_SECONDS", 1.0, floor=0.05)
        self._loop_task: asyncio.Task[None] | None = None
        self._running: dict[str, asyncio.Task[None]] = {}

    def start(self) -> None:
        self._loop_task = asyncio.create_task(self._loop())

    async def _loop(self) -> None:
        while True:
            try:
                for batch_id in await call(self.store.active_batch_ids, ACTIVE):
                    if batch_id not in self._running:
                        self._running[batch_id] = asyncio.create_task(self._run(batch_id))
            except Exception:  # the store is down: try again next round
                log.warning("batch worker could not list batches", exc_info=True)
            await asyncio.sleep(self.poll_s)

    async def _run(self, batch_id: str) -> None:
        try:
            await self.runner.run(batch_id)
        except Exception:
            log.exception("batch run failed; retried next round", extra={"batch_id": batch_id})
            await asyncio.sleep(self.poll_s * 5)
        finally:
            self._running.pop(batch_id, None)

    async def close(self) -> None:
        tasks = [t for t in (self._loop_task, *self._running.values()) if t is not None]
        for task in tasks:
            task.cancel()
        for task in tasks:
            with contextlib.suppress(BaseException):
                await task
