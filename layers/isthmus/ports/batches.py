"""What the batch engine needs from its store: batch heads and per-line progress with leases.

Blocking calls (boto3); services run them off the event loop (``isthmus.services.tenancy.credentials.call``).
Heads and lines are plain dicts of Python values: the service owns their meaning (services/batches/model.py).
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from typing import Any, Protocol

Item = dict[str, Any]


class BatchStore(Protocol):
    def put_batch(self, head: Mapping[str, Any]) -> None: ...

    def get_batch(self, batch_id: str) -> Item | None: ...

    def transition(self, batch_id: str, fields: Mapping[str, Any], *, from_status: Collection[str]) -> Item | None:
        """Sets ``fields`` only while the batch's status is one of ``from_status``; the new head, or None."""
        ...

    def list_batches(self, owner_id: str | None, *, after: str | None, limit: int) -> tuple[list[Item], bool]:
        """Newest first; ``owner_id=None`` lists every owner's (the master key). (page, has_more)."""
        ...

    def active_batch_ids(self, statuses: Collection[str]) -> list[str]: ...

    def put_lines(self, batch_id: str, lines: Sequence[Mapping[str, Any]]) -> None:
        """Lines ``{"n", "custom_id", "body"}`` (idempotent: a validation run again writes the same items)."""
        ...

    def lines(self, batch_id: str, total: int, *, results: bool = True) -> list[Item]:
        """Every line of the batch, in order (line ``n`` at index ``n``); without the results of finished lines
        when ``results`` is off."""
        ...

    def claim_line(self, batch_id: str, n: int, worker: str, lease_until: float, now: float) -> Item | None:
        """Takes the line if it is not done and nobody holds a live lease on it; the line, or None."""
        ...

    def renew_lease(self, batch_id: str, n: int, worker: str, lease_until: float) -> bool: ...

    def finish_line(self, batch_id: str, n: int, worker: str, result: Mapping[str, Any], *, ok: bool) -> bool:
        """Records the line's result once (never over a finished line, never without the lease) and counts it
        on the head in the same transaction; False when the line was not ours to finish."""
        ...
