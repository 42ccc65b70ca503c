"""Failover before the first byte, and node order: session pin first, then least loaded."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime

import pytest

from isthmus.backends.first_byte import first_connecting
from isthmus.control.models import Node, Snapshot
from isthmus.errors import AgentUnreachable, ApiError
from isthmus.routing.affinity import NodeTracker, order_candidates
from isthmus.routing.failover import NoNodeAvailable
from isthmus.routing.resolver import NodeTarget
from isthmus_contracts.control import NodeLoad

NOW = datetime.now(UTC)
A, B, C = (NodeTarget(node_id=n, base_url=f"http://{n}") for n in "abc")


def test_refused_node_is_skipped_and_the_next_answers() -> None:
    tracker, tried = NodeTracker(), []

    async def attempt(t: NodeTarget) -> str:
        tried.append(t.node_id)
        if t.node_id == "a":
            raise ConnectionRefusedError("refused")
        return f"ok from {t.node_id}"

    target, result = asyncio.run(first_connecting([A, B, C], attempt, nodes=tracker))
    assert (target.node_id, result, tried) == ("b", "ok from b", ["a", "b"])
    assert tracker.suspected("a") and not tracker.suspected("b")


def test_unreachable_agent_error_fails_over_too() -> None:
    async def attempt(t: NodeTarget) -> str:
        if t.node_id != "c":
            raise AgentUnreachable(t.base_url, "ConnectError")
        return "c"

    assert asyncio.run(first_connecting([A, B, C], attempt, nodes=NodeTracker()))[1] == "c"


def test_all_refused_is_503_naming_each_node() -> None:
    async def attempt(t: NodeTarget) -> str:
        raise ConnectionRefusedError()

    with pytest.raises(NoNodeAvailable) as err:
        asyncio.run(first_connecting([A, B], attempt, nodes=NodeTracker()))
    assert err.value.status == 503 and "a:" in err.value.message and "b:" in err.value.message


def test_non_connect_errors_propagate_without_retry() -> None:
    tried = []

    async def attempt(t: NodeTarget) -> str:
        tried.append(t.node_id)
        raise ApiError(400, "bad request from the backend")

    with pytest.raises(ApiError):
        asyncio.run(first_connecting([A, B], attempt, nodes=NodeTracker()))
    assert tried == ["a"]


def snap(loads: dict[str, int]) -> Snapshot:
    return Snapshot(nodes=[Node(node_id=n, cluster_id="x", base_url=f"http://{n}", last_seen=NOW,
                                load=NodeLoad(active=v)) for n, v in loads.items()], now=NOW)


def test_least_loaded_first_counting_heartbeats_and_inflight() -> None:
    tracker = NodeTracker()
    s = snap({"a": 2, "b": 0, "c": 1})
    assert [t.node_id for t in order_candidates(s, [A, B, C], nodes=tracker)] == ["b", "c", "a"]
    with tracker.track("b"), tracker.track("b"):
        assert order_candidates(s, [A, B, C], nodes=tracker)[0].node_id == "c"


def test_session_node_first_even_when_busier_unless_it_just_failed() -> None:
    tracker = NodeTracker()
    s = snap({"a": 5, "b": 0, "c": 0})
    assert order_candidates(s, [A, B, C], session_node="a", nodes=tracker)[0].node_id == "a"
    tracker.mark_failed("a")
    assert order_candidates(s, [A, B, C], session_node="a", nodes=tracker)[-1].node_id == "a"
