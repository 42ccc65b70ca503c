"""The one "try in order until one answers" helper: node failover in a pool, alias fallback in a cloud chain.

``attempt(candidate)`` opens the call (connect, send, read up to the first byte / first event) and returns what
the caller streams from. A failure ``fails_over`` accepts moves on to the next candidate; any other error
propagates unchanged. Once ``attempt`` has returned, bytes may reach the client, so nothing switches after it.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from isthmus import metrics
from isthmus.routing.affinity import NodeTracker, tracker
from isthmus.routing.failover import is_connect_failure, no_node_available
from isthmus.routing.resolver import NodeTarget

C = TypeVar("C")
T = TypeVar("T")


async def first_answering(candidates: Sequence[C], attempt: Callable[[C], Awaitable[T]], *,
                          fails_over: Callable[[Exception], bool],
                          none_answered: Callable[[list[tuple[C, Exception]]], Exception],
                          on_failure: Callable[[C, Exception], None] | None = None,
                          on_answer: Callable[[C], None] | None = None,
                          fallback_kind: str = "alias") -> tuple[C, T]:
    """The first candidate whose ``attempt`` returns, with its result; when every one failed over,
    ``none_answered(failures)`` is raised (failures in order, as (candidate, exception))."""
    failures: list[tuple[C, Exception]] = []
    for candidate in candidates:
        try:
            result = await attempt(candidate)
        except Exception as exc:
            if not fails_over(exc):
                raise
            failures.append((candidate, exc))
            metrics.upstream_fallback(fallback_kind)
            if on_failure is not None:
                on_failure(candidate, exc)
            continue
        if on_answer is not None:
            on_answer(candidate)
        return candidate, result
    raise none_answered(failures)


async def first_connecting(candidates: Sequence[NodeTarget], attempt: Callable[[NodeTarget], Awaitable[T]], *,
                           nodes: NodeTracker = tracker) -> tuple[NodeTarget, T]:
    """The first node whose ``attempt`` connects, with its result; a 503 (isthmus.routing.failover) when none
    does. A node that failed to connect is marked failed (others first for a while), one that took it ok."""
    return await first_answering(
        candidates, attempt, fails_over=is_connect_failure,
        none_answered=lambda failures: no_node_available([(t.node_id, exc) for t, exc in failures]),
        on_failure=lambda target, _: nodes.mark_failed(target.node_id),
        on_answer=lambda target: nodes.mark_ok(target.node_id), fallback_kind="node")
