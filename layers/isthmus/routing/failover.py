"""Failover before the first byte, the pure part: which failures move on to the next node, and the 503 when
no node took the request. The loop that tries the nodes is :func:`isthmus.backends.first_byte.first_connecting`.

A connection failure (refused, reset, connect timeout, agent unreachable) moves on to the next node; any other
error propagates unchanged. Once a node has answered, bytes may have reached the client, so mid-stream failures
are the caller's to report (the inference service renders the in-band error event and writes the usage row).
"""

from __future__ import annotations

from isthmus.errors import AgentUnreachable, ApiError

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


def no_node_available(failures: list[tuple[str, BaseException]]) -> NoNodeAvailable:
    """The 503 for these (node id, failure) pairs: ``model_loading`` when every node said it is loading."""
    loading = bool(failures) and all(getattr(exc, "agent_code", None) == "model_loading" for _, exc in failures)
    return NoNodeAvailable([(node, getattr(exc, "message", None) or type(exc).__name__) for node, exc in failures],
                           loading=loading)
