"""Failover before the first byte: try the ordered candidate nodes until one connects.

``attempt(target)`` opens the backend call (connect, send, read the status / first line) and returns
whatever the caller streams from. A connection failure (refused, reset, connect timeout, agent
unreachable) moves on to the next node; any other error propagates unchanged. Once ``attempt`` has
returned, bytes may have reached the client, so mid-stream failures are the caller's to report (the
inference handler renders the in-band error event and writes the usage row).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Sequence
from typing import TypeVar

from isthmus.adapters.agent_client import AgentUnreachable
from isthmus.errors import ApiError
from isthmus.routing.affinity import NodeTracker, tracker
from isthmus.routing.resolver import NodeTarget

T = TypeVar("T")
_CONNECT_ERRORS = {"ConnectError", "ConnectTimeout", "PoolTimeout", "RemoteProtocolError"}


def is_connect_failure(exc: BaseException) -> bool:
    if isinstance(exc, AgentUnreachable | ConnectionError):
        return True
    return any(cls.__name__ in _CONNECT_ERRORS for cls in type(exc).__mro__)


RETRY_AFTER_S = "2"
LOADING_RETRY_AFTER_S = "5"


class NoNodeAvailable(ApiError):
    """503 + Retry-After when no candidate took the request; ``model_loading`` when every one of them said it
    is still loading its model (the client should come back, not give up on the model)."""

    def __init__(self, failures: list[tuple[str, str]], *, loading: bool = False) -> None:
        tried = "; ".join(f"{node}: {why}" for node, why in failures) or "no candidate nodes"
        if loading:
            super().__init__(503, f"The model is loading; retry shortly ({tried}).", code="model_loading",
                             headers={"Retry-After": LOADING_RETRY_AFTER_S})
        else:
            super().__init__(503, f"No node of the pool accepted the request ({tried}).", code="no_node_available",
                             headers={"Retry-After": RETRY_AFTER_S})
        self.failures = failures


async def first_connecting(candidates: Sequence[NodeTarget], attempt: Callable[[NodeTarget], Awaitable[T]], *,
                           nodes: NodeTracker = tracker) -> tuple[NodeTarget, T]:
    """The first candidate whose ``attempt`` connects, with its result; 503 when none does."""
    failures: list[tuple[str, str]] = []
    loading = 0
    for target in candidates:
        try:
            result = await attempt(target)
        except Exception as exc:
            if not is_connect_failure(exc):
                raise
            nodes.mark_failed(target.node_id)
            failures.append((target.node_id, getattr(exc, "message", None) or type(exc).__name__))
            loading += getattr(exc, "agent_code", None) == "model_loading"
            continue
        nodes.mark_ok(target.node_id)
        return target, result
    raise NoNodeAvailable(failures, loading=bool(failures) and loading == len(failures))
