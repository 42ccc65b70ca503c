"""Which node of a pool serves a request: the session's last node while it is up (so its prefix cache
hits), else the least-loaded node (heartbeat load + this process's own in-flight count). Nodes that just
refused a connection are tried last for a few seconds (until heartbeats catch up)."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager

from isthmus.control.models import Snapshot
from isthmus.routing.resolver import NodeTarget

SUSPECT_SECONDS = 10.0


class NodeTracker:
    """In-process counts of requests in flight per node, and nodes that recently failed to connect."""

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._inflight: dict[str, int] = {}
        self._suspect: dict[str, float] = {}

    def inflight(self, node_id: str) -> int:
        return self._inflight.get(node_id, 0)

    @contextmanager
    def track(self, node_id: str) -> Iterator[None]:
        with self._lock:
            self._inflight[node_id] = self._inflight.get(node_id, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._inflight[node_id] = max(0, self._inflight.get(node_id, 1) - 1)

    def mark_failed(self, node_id: str) -> None:
        with self._lock:
            self._suspect[node_id] = time.monotonic() + SUSPECT_SECONDS

    def mark_ok(self, node_id: str) -> None:
        with self._lock:
            self._suspect.pop(node_id, None)

    def suspected(self, node_id: str) -> bool:
        until = self._suspect.get(node_id)
        return until is not None and until > time.monotonic()


tracker = NodeTracker()


def load_score(snapshot: Snapshot, node_id: str, nodes: NodeTracker) -> int:
    node = snapshot.node(node_id)
    reported = (node.load.active + node.load.queue_depth) if node else 0
    return reported + nodes.inflight(node_id)


def order_candidates(snapshot: Snapshot, candidates: list[NodeTarget], *, session_node: str | None = None,
                     nodes: NodeTracker = tracker) -> list[NodeTarget]:
    """Candidates best first: the session's node (when among them), then by load; suspects last."""
    ordered = sorted(candidates, key=lambda t: (nodes.suspected(t.node_id), load_score(snapshot, t.node_id, nodes),
                                                t.node_id))
    if session_node:
        pinned = [t for t in ordered if t.node_id == session_node and not nodes.suspected(t.node_id)]
        ordered = pinned + [t for t in ordered if t.node_id != session_node or not pinned]
    return ordered
