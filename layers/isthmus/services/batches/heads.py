"""A batch's head read and moved (a conditional status transition) through the store: shared by the local
runner and the hand-off to a provider's batch API, which both walk a batch through its states."""

from __future__ import annotations

from typing import Any

from isthmus.ports.batches import BatchStore
from isthmus.services.batches.model import Batch
from isthmus.services.tenancy.credentials import call


class BatchHeads:
    store: BatchStore

    async def _head(self, batch_id: str) -> Batch | None:
        head = await call(self.store.get_batch, batch_id)
        return Batch.model_validate(head) if head else None

    async def _move(self, batch: Batch, from_status: tuple[str, ...], **fields: Any) -> Batch | None:
        """The batch as it is after the move, or None when it was no longer in one of ``from_status``."""
        head = await call(self.store.transition, batch.batch_id, fields, from_status=from_status)
        return Batch.model_validate(head) if head else None
