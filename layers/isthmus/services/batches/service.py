"""The batches API as a service: create (OpenAI's input file or Otari's inline requests), get, list, cancel and
Otari's results. Only the owner sees a batch (the master key sees all); another owner's is a 404.

Creating writes the head in ``validating`` (and Otari's lines first, so a head is never seen without them) and
tells the workers (the SQS queue in the cloud; a local edge's in-process worker finds it by itself).
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isthmus.errors import ApiError
from isthmus.ports.batches import BatchStore
from isthmus.ports.files import FileAccess, FileNotFound
from isthmus.services.batches.intake import CreateOpenAIBatch, CreateOtariBatch, check_metadata, inline_lines
from isthmus.services.batches.model import (
    ENDPOINTS,
    MASTER_OWNER,
    OPEN_OWNER,
    TERMINAL,
    Batch,
    new_batch_id,
    window_seconds,
)
from isthmus.services.tenancy.credentials import call

if TYPE_CHECKING:
    from isthmus.services.tenancy.gate import Principal


def owner_of(principal: Principal | None) -> tuple[str, str]:
    """(owner id, principal kind) of a caller: the key's user (or the key itself when it has none)."""
    if principal is None:
        return OPEN_OWNER, "none"
    if principal.kind == "master":
        return MASTER_OWNER, "master"
    if principal.kind == "anonymous":
        return OPEN_OWNER, "anonymous"
    return principal.user_id or f"key:{principal.key_id}", "key"


def _visible_to(principal: Principal | None) -> str | None:
    """The owner id whose batches ``principal`` may see; None: every batch (the master key)."""
    owner, kind = owner_of(principal)
    return None if kind == "master" else owner


def _bad(message: str, param: str | None = None, code: str = "invalid_value") -> ApiError:
    return ApiError(400, message, param=param, code=code)


class BatchService:
    def __init__(self, store: BatchStore, files: Callable[[], FileAccess] | None,
                 notify: Callable[[str], None] | None = None) -> None:
        self.store = store
        self.files = files
        self.notify = notify

    def _new(self, principal: Principal | None, *, completion_window: str,
             metadata: dict[str, str] | None, **fields: Any) -> Batch:
        window = window_seconds(completion_window)
        if window is None:
            raise _bad("completion_window must be a number of hours from 1h to 168h, such as 24h.",
                       "completion_window")
        if problem := check_metadata(metadata):
            raise _bad(problem, "metadata")
        owner, kind = owner_of(principal)
        now = int(time.time())
        return Batch(batch_id=new_batch_id(), owner_id=owner, principal_kind=kind,  # type: ignore[arg-type]
                     key_id=principal.key_id if principal else None, completion_window=completion_window,
                     metadata=metadata, created_at=now, expires_at=now + window, **fields)

    async def _created(self, batch: Batch) -> Batch:
        await call(self.store.put_batch, batch.model_dump())
        if self.notify is not None:
            await call(self.notify, batch.batch_id)
        return batch

    async def create_openai(self, principal: Principal | None, body: CreateOpenAIBatch) -> Batch:
        if body.endpoint not in ENDPOINTS:
            raise _bad(f"endpoint must be one of {', '.join(ENDPOINTS)}.", "endpoint", "invalid_endpoint")
        if self.files is None:
            raise ApiError(501, "File storage is not configured on this gateway.", code="files_unavailable")
        try:
            record = await self.files().get(body.input_file_id, owner_id=_visible_to(principal))
        except FileNotFound:
            raise ApiError(404, f"No such file: {body.input_file_id}", param="input_file_id",
                           code="file_not_found") from None
        if record.purpose != "batch":
            raise _bad(f"File {body.input_file_id} was uploaded with purpose {record.purpose!r}, not 'batch'.",
                       "input_file_id", "invalid_file_purpose")
        batch = self._new(principal, completion_window=body.completion_window, metadata=body.metadata,
                          endpoint=body.endpoint, input_file_id=body.input_file_id)
        return await self._created(batch)

    async def create_otari(self, principal: Principal | None, body: CreateOtariBatch, provider: str | None) -> Batch:
        lines, problem = inline_lines(body)
        if problem:
            raise _bad(problem, "requests")
        batch = self._new(principal, completion_window=body.completion_window, metadata=body.metadata,
                          endpoint="/v1/chat/completions", shape="otari", model=body.model, provider=provider,
                          total=len(lines))
        await call(self.store.put_lines, batch.batch_id, lines)
        return await self._created(batch)

    async def get(self, principal: Principal | None, batch_id: str) -> Batch:
        head = await call(self.store.get_batch, batch_id)
        visible = _visible_to(principal)
        if head is None or (visible is not None and head["owner_id"] != visible):
            raise ApiError(404, f"No batch found with id '{batch_id}'.", code="batch_not_found")
        return Batch.model_validate(head)

    async def list_page(self, principal: Principal | None, *, after: str | None,
                        limit: int) -> tuple[list[Batch], bool]:
        heads, more = await call(self.store.list_batches, _visible_to(principal), after=after, limit=limit)
        return [Batch.model_validate(h) for h in heads], more

    async def cancel(self, principal: Principal | None, batch_id: str) -> Batch:
        batch = await self.get(principal, batch_id)
        if batch.status in ("cancelling", "cancelled"):
            return batch
        moved = await call(self.store.transition, batch_id, {"status": "cancelling", "cancelling_at": int(time.time())},
                           from_status=("validating", "in_progress"))
        if moved is None:
            batch = await self.get(principal, batch_id)
            if batch.status in ("cancelling", "cancelled"):
                return batch
            raise ApiError(409, f"Batch {batch_id} is {batch.status} and can no longer be cancelled.",
                           code="batch_not_cancellable")
        return Batch.model_validate(moved)

    async def results(self, principal: Principal | None, batch_id: str) -> list[dict[str, Any]]:
        """Otari's results: 409 until the batch is finished, then one entry per finished line, in input order."""
        batch = await self.get(principal, batch_id)
        if batch.status not in TERMINAL:
            raise ApiError(409, f"Batch '{batch_id}' is not yet complete (status: {batch.status}). Call GET "
                                f"/v1/batches/{batch_id} to check the current status.", code="batch_not_complete")
        lines = await call(self.store.lines, batch_id, batch.total)
        out: list[dict[str, Any]] = []
        for line in lines:
            if not line["done"]:
                continue
            result = line["result"]
            response = result.get("response") or {}
            if line["ok"]:
                out.append({"custom_id": line["custom_id"], "result": response.get("body"), "error": None})
            else:
                error = result.get("error") or ((response.get("body") or {}).get("error")) or {}
                out.append({"custom_id": line["custom_id"], "result": None,
                            "error": {"code": str(error.get("code") or error.get("type") or "error"),
                                      "message": str(error.get("message") or "")}})
        return out
