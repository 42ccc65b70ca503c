"""Runs batches: validates the input, dispatches lines at low priority, and finalizes into output files.

Any number of runners (edge processes, worker Lambdas) may run the same batch at once or one after another:
each line is claimed with a lease before it runs and recorded once (isthmus.ports.batches), so a runner that
died leaves nothing half-done: its leases run out and the lines are run again, a finished line never is.

Low priority: at most ``ISTHMUS_BATCH_CONCURRENCY`` lines per pool run at once in a process, and before each line
the runner waits while this process has interactive requests in flight or the pool's agents report a queue (up to
``ISTHMUS_BATCH_YIELD_SECONDS`` a line, so a batch still moves under steady traffic).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

from isthmus.observability import get_logger, inflight
from isthmus.ports.batches import BatchStore
from isthmus.ports.files import FileAccess, FileNotFound
from isthmus.ports.provider_batches import ProviderBatchApi
from isthmus.services.batches.heads import BatchHeads
from isthmus.services.batches.intake import parse_input
from isthmus.services.batches.lines import LineRunner, Outcome
from isthmus.services.batches.model import Batch, failure_line, line_error, output_line
from isthmus.services.batches.provider_batches import ProviderBatches, RunLocally
from isthmus.services.tenancy.credentials import call
from isthmus.settings import env_number, env_positive_int

log = get_logger("batches")
HEAD_FRESH_S = 0.25  # the dispatcher reads the head (cancelled? expired?) at least this often
RETRY_BACKOFF_S = 1.0


def worker_id() -> str:
    return f"{socket.gethostname()}:{os.getpid()}:{uuid.uuid4().hex[:6]}"


Pools = Callable[[str], Awaitable[tuple[str, bool]]]  # model -> (its pool, requests waiting in its agents' queues)


async def _model_is_its_pool(model: str) -> tuple[str, bool]:
    return model, False


class Priority:
    """A concurrency cap per pool for batch lines, and interactive requests first: a line waits while this
    process has inference requests in flight or the pool's agents report requests queued (any gateway's), for at
    most ``yield_s``."""

    def __init__(self, per_model: int | None = None, busy: Callable[[], bool] = lambda: inflight.inference_busy,
                 pools: Pools = _model_is_its_pool) -> None:
        self.per_pool = per_model or env_positive_int("ISTHMUS_BATCH_CONCURRENCY", 2)
        self.busy = busy
        self.pools = pools
        self.yield_s = env_number("ISTHMUS_BATCH_YIELD_SECONDS", 2.0)
        self._slots: dict[str, asyncio.Semaphore] = {}

    def slot(self, pool: str) -> asyncio.Semaphore:
        if pool not in self._slots:
            self._slots[pool] = asyncio.Semaphore(self.per_pool)
        return self._slots[pool]

    async def turn(self, model: str) -> asyncio.Semaphore:
        """Waits for the line's turn and takes a slot of its pool (the caller releases it)."""
        waited = 0.0
        pool, queued = await self.pools(model)
        while (self.busy() or queued) and waited < self.yield_s:
            await asyncio.sleep(0.05)
            waited += 0.05
            pool, queued = await self.pools(model)
        slot = self.slot(pool)
        await slot.acquire()
        return slot


class BatchRunner(BatchHeads):
    def __init__(self, store: BatchStore, lines: LineRunner, files: Callable[[], FileAccess] | None,
                 priority: Priority | None = None, worker: str | None = None,
                 provider_api: ProviderBatchApi | None = None) -> None:
        self.store = store
        self.line_runner = lines
        self.files = files
        self.priority = priority or Priority()
        self.worker = worker or worker_id()
        self.lease_s = env_number("ISTHMUS_BATCH_LEASE_SECONDS", 120.0, floor=1.0)
        self.attempts = env_positive_int("ISTHMUS_BATCH_LINE_ATTEMPTS", 3)
        self.max_input = env_positive_int("ISTHMUS_BATCH_MAX_INPUT_BYTES", 200 * 1024 * 1024)
        # batches for a cloud alias handed to its provider's batch API (provider_batches.py); None: always here
        self.provider = (ProviderBatches(store, provider_api, lines.inference, lines.owners, self.worker)
                         if provider_api is not None else None)
        self.requeue_delay_s = 0  # after a run that returned False: when to come again (the SQS worker's delay)

    async def run(self, batch_id: str, deadline: float | None = None) -> bool:
        """Takes the batch as far as it goes; False when ``deadline`` (time.monotonic) came first."""
        batch = await self._head(batch_id)
        if batch is not None and batch.status == "validating":
            batch = await self._validate(batch) or await self._head(batch_id)
        if batch is not None and batch.status in ("in_progress", "cancelling") and batch.upstream_batch_id:
            assert self.provider is not None, "a handed-off batch needs the provider batch API"
            batch = await self.provider.advance(batch)
            if batch is None:  # the provider is not done: polled again next round
                self.requeue_delay_s = int(self.provider.poll_s)
                return False
        if batch is not None and batch.status in ("in_progress", "cancelling"):
            batch = await self._dispatch(batch, deadline)
            if batch is None:
                return False
        if batch is not None and batch.status == "finalizing":
            await self._finalize(batch)
        return True

    # ---- validating -----------------------------------------------------------------------------------------
    async def _validate(self, batch: Batch) -> Batch | None:
        now = int(time.time())
        if batch.shape == "openai":
            errors: list[dict[str, Any]] = []
            lines: list[dict[str, Any]] = []
            if self.files is None:
                errors = [line_error("files_unavailable", "File storage is not configured on this gateway.")]
            else:
                try:
                    _, raw = await self.files().read_all(batch.input_file_id or "", owner_id=None,
                                                         max_bytes=self.max_input)
                    lines, errors = parse_input(raw, batch.endpoint)
                except FileNotFound:
                    errors = [line_error("file_not_found", f"Input file {batch.input_file_id} no longer exists.")]
                except ValueError as exc:  # FileTooLarge
                    errors = [line_error("file_too_large", str(exc))]
            if errors:
                return await self._move(batch, ("validating",), status="failed", failed_at=now, errors=errors)
            await call(self.store.put_lines, batch.batch_id, lines)
            batch.total = len(lines)
        if self.provider is not None:
            if batch.shape == "otari":
                lines = await call(self.store.lines, batch.batch_id, batch.total, results=False)
            target = await self.provider.target(batch, lines)
            if target is not None:
                with contextlib.suppress(RunLocally):
                    return await self.provider.hand_off(batch, lines, target)
        return await self._move(batch, ("validating",), status="in_progress", in_progress_at=now, total=batch.total)

    # ---- in_progress / cancelling ---------------------------------------------------------------------------
    async def _dispatch(self, batch: Batch, deadline: float | None) -> Batch | None:
        """Runs the batch's lines until every one is done, it is cancelled (then the running ones finish) or
        expired; the batch in ``finalizing`` then, or None when the deadline came first."""
        running: set[asyncio.Task[None]] = set()
        try:
            while True:
                lines = await call(self.store.lines, batch.batch_id, batch.total, results=False)
                pending = [line for line in lines if not line["done"]]
                checked = time.monotonic()
                for line in pending:
                    if time.monotonic() - checked > HEAD_FRESH_S:
                        batch = await self._head(batch.batch_id) or batch
                        checked = time.monotonic()
                    if batch.status != "in_progress" or time.time() >= batch.expires_at:
                        break
                    if deadline is not None and time.monotonic() >= deadline:
                        break
                    slot = await self.priority.turn(str(line["body"].get("model") or batch.model or ""))
                    batch = await self._head(batch.batch_id) or batch  # cancelled at any time until now: stop
                    checked = time.monotonic()
                    if batch.status != "in_progress" or (deadline is not None and time.monotonic() >= deadline):
                        slot.release()  # cancelled, or out of time, while waiting for the slot
                        break
                    claimed = await call(self.store.claim_line, batch.batch_id, line["n"], self.worker,
                                         time.time() + self.lease_s, time.time())
                    if claimed is None:  # done by another runner, or leased by one: looked at again next round
                        slot.release()
                        continue
                    task = asyncio.create_task(self._line(batch, claimed, slot))
                    running.add(task)
                    task.add_done_callback(running.discard)
                if running:
                    await asyncio.wait(set(running))
                batch = await self._head(batch.batch_id) or batch
                done = batch.completed + batch.failed >= batch.total
                if batch.status == "in_progress" and time.time() >= batch.expires_at and not done:
                    moved = await self._move(batch, ("in_progress",), status="finalizing", finishing_as="expired",
                                             finalizing_at=int(time.time()))
                    return moved or await self._head(batch.batch_id)
                if batch.status == "cancelling":
                    moved = await self._move(batch, ("cancelling",), status="finalizing", finishing_as="cancelled",
                                             finalizing_at=int(time.time()))
                    return moved or await self._head(batch.batch_id)
                if batch.status != "in_progress":
                    return batch
                if done:
                    moved = await self._move(batch, ("in_progress",), status="finalizing", finishing_as="completed",
                                             finalizing_at=int(time.time()))
                    return moved or await self._head(batch.batch_id)
                if deadline is not None and time.monotonic() >= deadline:
                    return None
                await asyncio.sleep(min(1.0, self.lease_s / 4))  # lines leased elsewhere: theirs, or expiring
        finally:
            for task in running:
                task.cancel()

    async def _line(self, batch: Batch, line: dict[str, Any], slot: asyncio.Semaphore) -> None:
        request_id = f"{batch.batch_id}#{line['n']}"
        renewing = asyncio.create_task(self._keep_lease(batch.batch_id, line["n"]))
        released = False
        try:
            outcome = await self._attempts(batch, line, request_id)
            slot.release()  # the pool's share is free once the answer is in (and billed); recording it is ours
            released = True
            ok = 200 <= outcome.status_code < 300
            if outcome.status_code == 0:
                result = failure_line(line["custom_id"], "too_many_attempts", str(outcome.body))
            else:
                result = output_line(line["custom_id"], request_id, outcome.status_code, outcome.body)
            if not await call(self.store.finish_line, batch.batch_id, line["n"], self.worker, result, ok=ok):
                log.warning("batch line finished elsewhere first",
                            extra={"batch_id": batch.batch_id, "line": line["n"]})
        except Exception:
            log.exception("batch line failed to record", extra={"batch_id": batch.batch_id, "line": line["n"]})
        finally:
            renewing.cancel()
            if not released:
                slot.release()

    async def _attempts(self, batch: Batch, line: dict[str, Any], request_id: str) -> Outcome:
        if line["attempts"] > self.attempts * 2:  # claimed again and again: every runner died on it
            return Outcome(0, "the line was interrupted too many times")
        outcome = Outcome(500, {"error": {"message": "not run", "type": "server_error"}})
        for attempt in range(self.attempts):
            try:
                outcome = await self.line_runner.run(batch, line["body"], request_id)
            except Exception as exc:  # a bug or a store failure mid-line: worth another try, never the batch
                log.exception("batch line raised", extra={"batch_id": batch.batch_id, "line": line["n"]})
                outcome = Outcome(500, {"error": {"message": f"internal error: {type(exc).__name__}",
                                                  "type": "server_error"}}, retryable=True)
            if not outcome.retryable or attempt + 1 == self.attempts:
                break
            await asyncio.sleep(RETRY_BACKOFF_S * 2 ** attempt)
        return outcome

    async def _keep_lease(self, batch_id: str, n: int) -> None:
        while True:
            await asyncio.sleep(self.lease_s / 3)
            with contextlib.suppress(Exception):
                await call(self.store.renew_lease, batch_id, n, self.worker, time.time() + self.lease_s)

    # ---- finalizing -----------------------------------------------------------------------------------------
    async def _finalize(self, batch: Batch) -> None:
        lines = await call(self.store.lines, batch.batch_id, batch.total)
        ok = [line["result"] for line in lines if line["done"] and line["ok"]]
        bad = [line["result"] for line in lines if line["done"] and not line["ok"]]
        finishing = batch.finishing_as or "completed"
        if finishing == "expired":
            bad += [failure_line(line["custom_id"], "batch_expired", "The batch expired before this request ran.")
                    for line in lines if not line["done"]]
        fields: dict[str, Any] = {"status": finishing, f"{finishing}_at": int(time.time())}
        if self.files is not None:
            if ok:
                fields["output_file_id"] = await self._write(batch, "output", ok)
            if bad:
                fields["error_file_id"] = await self._write(batch, "error", bad)
        await self._move(batch, ("finalizing",), **fields)

    async def _write(self, batch: Batch, kind: str, rows: list[dict[str, Any]]) -> str:
        assert self.files is not None

        async def chunks() -> AsyncIterator[bytes]:
            for start in range(0, len(rows), 200):
                yield "".join(json.dumps(row) + "\n" for row in rows[start:start + 200]).encode()

        record = await self.files().create(owner_id=batch.owner_id, filename=f"{batch.batch_id}_{kind}.jsonl",
                                           purpose="batch_output", content_type="application/jsonl",
                                           chunks=chunks())
        return record.file_id
