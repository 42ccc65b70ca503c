"""Batches for a cloud alias, handed to the provider's own batch API instead of run line by line.

When every line names one published cloud alias whose provider offers a batch API (``ISTHMUS_BATCH_HANDOFF``:
``auto``, the default, hands off for the ``openai`` and ``anthropic`` provider kinds, ``off`` never, or a comma
list of provider ids / kinds), validation does the hand-off: every line is admitted by the same gate as an
interactive request (a line refused fails the batch, its message in ``errors``, the holds taken given back; a
429 of the key's rate limit runs the batch line by line instead, at the key's pace),
the lines go to the provider (OpenAI: the input JSONL uploaded to ``/files``, then ``/batches``; Anthropic:
``/messages/batches``), and the head moves to ``in_progress`` with the provider's batch id and the holds. Two
runners validating at once both may hand off: the one whose move loses cancels its provider batch and gives
its holds back, so one provider batch stays.

The runner then calls :meth:`ProviderBatches.advance` every round (at most every
``ISTHMUS_BATCH_PROVIDER_POLL_SECONDS``): the provider's status and counts are mapped onto ours, a cancel is
passed through, and once the provider is done each result is recorded as the line's result (claimed and
finished once, as a local line is), the line's hold settled from the provider's usage (one usage row,
request_id ``<batch>#<line>``); the runner's finalizing writes our output and error files from them.
"""

from __future__ import annotations

import asyncio
import os
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isthmus.dialects import anthropic_messages, openai_chat
from isthmus.errors import ApiError
from isthmus.observability import get_logger
from isthmus.ports.batches import BatchStore
from isthmus.ports.provider_batches import ProviderBatchApi
from isthmus.services.batches import provider_results as wire
from isthmus.services.batches.heads import BatchHeads
from isthmus.services.batches.lines import Owners
from isthmus.services.batches.model import Batch, line_error
from isthmus.services.tenancy.credentials import call
from isthmus.settings import env_number, env_positive_int
from isthmus_contracts.internal import Usage

if TYPE_CHECKING:
    from isthmus.ports.providers import ProviderTarget
    from isthmus.services.inference.inference import InferenceService
    from isthmus.services.tenancy.gate import Admission, Principal

log = get_logger("batches")
ENDPOINTS = {"openai": ("/v1/chat/completions",), "anthropic": ("/v1/chat/completions", "/v1/messages")}
AUTO_KINDS = ("openai", "anthropic")  # OpenAI-protocol gateways (OpenRouter, ...) offer no batch API
OPENAI_DONE = ("completed", "failed", "expired", "cancelled")
PARALLEL = 16  # lines admitted, or recorded from the results, at once
RETRY_BASE_S, RETRY_MAX_S = 0.5, 8.0  # a provider's 5xx / 429 on submit, tried again this soon


class RunLocally(Exception):
    """The hand-off was called off before anything reached the provider: the batch runs line by line."""


class ProviderBatches(BatchHeads):
    def __init__(self, store: BatchStore, api: ProviderBatchApi, inference: Callable[[], InferenceService],
                 owners: Owners, worker: str) -> None:
        self.store = store
        self.api = api
        self.inference = inference
        self.owners = owners
        self.worker = worker
        self.poll_s = env_number("ISTHMUS_BATCH_PROVIDER_POLL_SECONDS", 30.0, floor=0.0)
        # the holds ride on the batch's head (one store item): bigger batches run line by line
        self.max_lines = env_positive_int("ISTHMUS_BATCH_HANDOFF_MAX_LINES", 1000)
        self.lease_s = env_number("ISTHMUS_BATCH_LEASE_SECONDS", 120.0, floor=1.0)

    # ---- the decision --------------------------------------------------------------------------------------
    async def _chain_head(self, alias: str) -> ProviderTarget | None:
        resolver = self.inference().resolver
        find = getattr(resolver, "backend", None)  # a CloudResolver: the alias's fallback chain, or None
        if find is None:
            return None
        try:
            backend = await find(alias)
        except Exception:
            return None
        chain = getattr(backend, "backends", None) or []
        return getattr(chain[0], "target", None) if chain else None

    def _wanted(self, target: ProviderTarget) -> bool:
        setting = os.environ.get("ISTHMUS_BATCH_HANDOFF", "auto").strip().lower()
        if setting == "off":
            return False
        catalog = getattr(self.inference().resolver, "catalog", None)
        kind_of = getattr(catalog, "provider_kind", None)
        kind = (kind_of(target.provider_id) if kind_of is not None else None) or target.protocol
        if setting == "auto":
            return kind in AUTO_KINDS
        return bool({target.provider_id.lower(), kind} & {s.strip() for s in setting.split(",")})

    async def target(self, batch: Batch, lines: list[dict[str, Any]]) -> ProviderTarget | None:
        """The provider to hand ``batch`` to, or None: run its lines here."""
        if not lines or len(lines) > self.max_lines:
            return None
        models = {str(line["body"].get("model") or batch.model or "").strip() for line in lines}
        if len(models) != 1:
            return None
        target = await self._chain_head(models.pop())
        if target is None or batch.endpoint not in ENDPOINTS.get(target.protocol, ()):
            return None
        return target if self._wanted(target) else None

    # ---- the hand-off (validating -> in_progress, or failed) -----------------------------------------------
    async def hand_off(self, batch: Batch, lines: list[dict[str, Any]], target: ProviderTarget) -> Batch | None:
        """The head after the hand-off: in_progress with the provider's batch, or failed (a line refused by the
        gate, the provider refusing the batch); None when another runner moved the batch first. Raises
        :class:`RunLocally` when the key's rate limit refused a line (its holds given back)."""
        admissions: dict[int, Admission] = {}
        inputs: dict[int, dict[str, Any]] = {}
        service = self.inference()
        number = 0

        async def admit(principal: Principal | None, line: dict[str, Any]) -> None:
            body = {**line["body"], "stream": False}
            if batch.model is not None and not body.get("model"):
                body["model"] = batch.model
            internal = (anthropic_messages.to_internal(anthropic_messages.parse(body))
                        if batch.endpoint == "/v1/messages" else openai_chat.to_internal(openai_chat.parse(body)))
            admitted = await service.begin(principal, internal, endpoint=batch.endpoint,
                                           request_id=f"{batch.batch_id}#{line['n']}")
            if admitted.admission is not None:
                admissions[line["n"]] = admitted.admission
            if target.protocol == "openai":
                inputs[line["n"]] = wire.openai_input_line(line["custom_id"], batch.endpoint, body,
                                                           target.upstream_model, admitted.request.sampling.max_tokens)
            else:
                translated = self.api.anthropic_params(admitted.request, target.upstream_model)
                inputs[line["n"]] = wire.anthropic_request(line["custom_id"], batch.endpoint, body, translated,
                                                           target.upstream_model)

        try:
            principal = await self.owners.principal(batch)
            for start in range(0, len(lines), PARALLEL):
                chunk = lines[start:start + PARALLEL]
                outcomes = await asyncio.gather(*(admit(principal, line) for line in chunk), return_exceptions=True)
                for line, outcome in zip(chunk, outcomes, strict=True):
                    if isinstance(outcome, BaseException):  # the first refused line names the batch's failure
                        number = line["n"] + 1
                        raise outcome
            remote_id = await self._create(batch, target, [inputs[n] for n in sorted(inputs)])
        except Exception as exc:
            await self._give_back(batch, admissions, exc.status if isinstance(exc, ApiError) else 500)
            if not isinstance(exc, ApiError):
                raise
            if exc.status == 429 and exc.code != "upstream_batch_refused":
                raise RunLocally from None  # the key's rate limit: its lines go at its pace, one by one
            where = number if number and exc.code != "upstream_batch_refused" else None
            return await self._move(batch, ("validating",), status="failed", failed_at=int(time.time()),
                                    errors=[line_error(exc.code or "invalid_request", exc.message, where)])
        moved = await self._move(batch, ("validating",), status="in_progress", in_progress_at=int(time.time()),
                                 total=len(lines), upstream=target.protocol, upstream_provider=target.provider_id,
                                 upstream_alias=target.alias, upstream_batch_id=remote_id,
                                 upstream_status="submitted", upstream_polled_at=int(time.time()),
                                 upstream_holds=wire.pack_holds(admissions))
        if moved is None:  # another runner handed it off (or it was cancelled) meanwhile: ours goes back
            await self._cancel_remote(target, remote_id)
            await self._give_back(batch, admissions, 409)
        return moved

    async def _create(self, batch: Batch, target: ProviderTarget, inputs: list[dict[str, Any]]) -> str:
        """The provider's batch id; ApiError ``upstream_batch_refused`` once it refused (4xx) or kept failing."""
        for attempt in range(target.max_retries + 1):
            try:
                return await self.api.submit(target, batch.endpoint, batch.batch_id, inputs)
            except ApiError as exc:
                retry = (exc.status >= 500 or exc.status == 429) and exc.code != "upstream_auth_failed"
                if not retry or attempt >= target.max_retries:
                    raise ApiError(exc.status, f"provider '{target.provider_id}' refused the batch: {exc.message}",
                                   code="upstream_batch_refused") from None
                await asyncio.sleep(min(RETRY_MAX_S, RETRY_BASE_S * 2 ** attempt))
        raise AssertionError("unreachable")

    async def _cancel_remote(self, target: ProviderTarget, remote_id: str) -> bool:
        """True once the provider took the cancel, or refused it for good (a 4xx: the batch is already done)."""
        try:
            await self.api.cancel(target, remote_id)
        except ApiError as exc:
            log.warning("provider batch not cancelled", extra={"provider": target.provider_id, "status": exc.status})
            return 400 <= exc.status < 500 and exc.status != 429
        return True

    # ---- polling (in_progress / cancelling) ----------------------------------------------------------------
    async def advance(self, batch: Batch) -> Batch | None:
        """The head once the batch is finalizing (or failed); None: the provider is not done, come again."""
        now = int(time.time())
        cancel_due = batch.status == "cancelling" and not batch.upstream_cancel_sent
        if not cancel_due and batch.upstream_status != "collecting" and now - (batch.upstream_polled_at or 0) < \
                self.poll_s:
            return None
        target = await self._chain_head(batch.upstream_alias or "")
        remote_id = batch.upstream_batch_id
        if target is None or target.provider_id != batch.upstream_provider or remote_id is None:
            log.warning("the provider of a handed-off batch is no longer published; polled again later",
                        extra={"batch_id": batch.batch_id, "provider": batch.upstream_provider})
            return None
        if cancel_due and await self._cancel_remote(target, remote_id):  # else asked again next round
            batch = await self._move(batch, ("cancelling",), upstream_cancel_sent=True) or batch
        try:
            remote = await self.api.status(target, remote_id)
        except ApiError as exc:  # a 5xx or a timeout: the next round asks again
            log.warning("provider batch status unavailable", extra={"batch_id": batch.batch_id, "status": exc.status})
            await self._move(batch, ("in_progress", "cancelling"), upstream_polled_at=now)
            return None
        status, completed, failed = _remote_state(batch, remote)
        if status not in OPENAI_DONE and status != "ended":
            if batch.upstream_status != "collecting":
                await self._move(batch, ("in_progress", "cancelling"), completed=completed, failed=failed,
                                 upstream_status=status, upstream_polled_at=now)
            return None
        if status == "failed":  # the provider's validation refused the input
            errors = ((remote.get("errors") or {}).get("data") or [])[:100]
            await self._give_back(batch, {n: a for n in range(batch.total)
                                          if (a := wire.unpack_hold(batch.upstream_holds, n)) is not None}, 400)
            return await self._move(batch, ("in_progress", "cancelling"), status="failed", failed_at=now,
                                    errors=errors or [line_error("upstream_failed", "The provider failed the batch.")])
        return await self._collect(batch, target, remote, status)

    async def _collect(self, batch: Batch, target: ProviderTarget, remote: dict[str, Any], status: str) -> Batch | None:
        if batch.upstream_status != "collecting":  # finish_line counts each line on the head from here on
            moved = await self._move(batch, ("in_progress", "cancelling"), completed=0, failed=0,
                                     upstream_status="collecting", upstream_polled_at=int(time.time()))
            if moved is None:
                return await self._head(batch.batch_id)
            batch = moved
        try:
            rows = wire.jsonl_rows(await self.api.results(target, remote))
        except ApiError as exc:
            log.warning("provider batch results unavailable", extra={"batch_id": batch.batch_id, "status": exc.status})
            return None
        by_id = {str(row.get("custom_id")): row for row in rows}
        cancelled = batch.status == "cancelling" or status == "cancelled" or bool(remote.get("cancel_initiated_at"))

        async def record(line: dict[str, Any]) -> bool:
            """Records one line's result and settles it; False when another runner holds the line."""
            claimed = await call(self.store.claim_line, batch.batch_id, line["n"], self.worker,
                                 time.time() + self.lease_s, time.time())
            if claimed is None:
                return False
            request_id = f"{batch.batch_id}#{line['n']}"
            row = by_id.get(line["custom_id"])
            if row is None:  # never ran there (cancelled or expired first)
                row = {"custom_id": line["custom_id"], "result": {"type": "canceled" if cancelled else "expired"}}
                result, ok, usage = wire.from_anthropic(row, "", batch.endpoint, request_id)
            elif batch.upstream == "openai":
                result, ok, usage = wire.from_openai(row, batch.upstream_alias or "", request_id)
            else:
                result, ok, usage = wire.from_anthropic(row, batch.upstream_alias or "", batch.endpoint, request_id,
                                                        self.api.anthropic_answer)
            if await call(self.store.finish_line, batch.batch_id, line["n"], self.worker, result, ok=ok):
                code = int((result.get("response") or {}).get("status_code") or 0)
                await self._settle(batch, line["n"], usage, status="success" if ok else "error", status_code=code)
            return True

        pending = [line for line in await call(self.store.lines, batch.batch_id, batch.total, results=False)
                   if not line["done"]]
        busy = False
        for start in range(0, len(pending), PARALLEL):
            recorded = await asyncio.gather(*(record(line) for line in pending[start:start + PARALLEL]))
            busy = busy or not all(recorded)
        if busy:
            return None
        finishing = "cancelled" if cancelled else "expired" if status == "expired" else "completed"
        moved = await self._move(batch, ("in_progress", "cancelling"), status="finalizing", finishing_as=finishing,
                                 finalizing_at=int(time.time()))
        return moved or await self._head(batch.batch_id)

    # ---- money ---------------------------------------------------------------------------------------------
    async def _settle(self, batch: Batch, n: int, usage: Usage, *, status: str, status_code: int) -> None:
        admission = wire.unpack_hold(batch.upstream_holds, n)
        gate = self.inference().gate
        if admission is None or gate is None:
            return
        started = batch.in_progress_at or int(time.time())
        await gate.settle(admission, prompt_tokens=usage.prompt_tokens, completion_tokens=usage.completion_tokens,
                          cached_tokens=usage.cached_tokens or 0, status=status, status_code=status_code,
                          latency_ms=max(0, int(time.time()) - started) * 1000,
                          backend=f"cloud:{batch.upstream_provider}", request_id=f"{batch.batch_id}#{n}")

    async def _give_back(self, batch: Batch, admissions: dict[int, Admission], status_code: int) -> None:
        """Holds taken for a hand-off that did not happen: settled at nothing (a refused row each)."""
        gate = self.inference().gate
        if gate is None:
            return
        await asyncio.gather(*(gate.settle(a, prompt_tokens=0, completion_tokens=0, cached_tokens=0,
                                           status="refused", status_code=status_code, latency_ms=0,
                                           backend="batch", request_id=f"{batch.batch_id}#{n}")
                               for n, a in admissions.items()))


def _remote_state(batch: Batch, remote: dict[str, Any]) -> tuple[str, int, int]:
    """(the provider's status, completed, failed) in OpenAI's terms."""
    counts = remote.get("request_counts") or {}
    if batch.upstream == "openai":
        return str(remote.get("status") or ""), int(counts.get("completed") or 0), int(counts.get("failed") or 0)
    failed = sum(int(counts.get(k) or 0) for k in ("errored", "canceled", "expired"))
    return str(remote.get("processing_status") or ""), int(counts.get("succeeded") or 0), failed
