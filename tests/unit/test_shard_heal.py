"""Healing a sharded pool that lost a rank when the model does not fit the ranks left: it is unloaded, its record
kept with no nodes and the reason (the loopback test in tests/integration/test_sharding.py covers the reload)."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from datetime import timedelta
from typing import Any

import pytest

from isthmus.adapters.control_tables import DynamoControlStore
from isthmus.control.models import Cluster, Node, Pool, utcnow
from isthmus.errors import AgentUnreachable
from isthmus.services.control import pool_upkeep
from isthmus.services.control.clusters import ClusterService
from isthmus_contracts.control import ModelOnDisk
from tests.support.ddb_tables import moto_tables


@pytest.fixture()
def store(monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoControlStore]:
    with moto_tables(monkeypatch):
        yield DynamoControlStore()


class Agents:
    """The agent port as the control plane sees it; records what it was asked."""

    def __init__(self) -> None:
        self.calls: list[tuple[str, str]] = []

    async def load(self, base_url: str, model: str) -> dict[str, Any]:
        self.calls.append(("load", base_url))
        return {}

    async def unload(self, base_url: str) -> dict[str, Any]:
        self.calls.append(("unload", base_url))
        return {}

    async def status(self, base_url: str) -> dict[str, Any]:
        return {"restarting": False}

    async def request(self, method: str, base_url: str, path: str, body: Any = None, timeout: float | None = None,
                      api_key: str | None = None) -> tuple[int, Any]:
        self.calls.append((path, base_url))
        return 200, {}


def test_a_pool_whose_model_fits_no_remaining_rank_is_unloaded_with_the_reason(store: DynamoControlStore) -> None:
    # given a pipeline pool of a 3 GiB model over a (rank 0, 2 GiB RAM) and b (rank 1), and b gone silent
    now = utcnow()
    model = [ModelOnDisk(name="big", size_bytes=3 * 2**30)]
    store.put_cluster_config(Cluster(cluster_id="lab", kind="mlx"))
    store.put_node(Node(node_id="a", cluster_id="lab", base_url="http://a:1", ram_bytes=2 * 2**30, models=model,
                        last_seen=now))
    store.put_node(Node(node_id="b", cluster_id="lab", base_url="http://b:1", ram_bytes=2 * 2**30, models=model,
                        last_seen=now - timedelta(hours=1)))
    store.set_pools("lab", {"big": Pool(alias="big", model="big", nodes=["a"], ranks=["a", "b"], mode="pipeline",
                                        loaded_at=now)}, release=False)
    agents = Agents()
    service = ClusterService(store, agents)
    # when the control plane heals its pools
    healed = asyncio.run(pool_upkeep.heal_sharded(service))
    # then the model, too big for a alone, is unloaded from a, and the pool says why
    assert [h["alias"] for h in healed] == ["big"]
    assert ("unload", "http://a:1") in agents.calls and not any(c[0] == "load" for c in agents.calls)
    pool = store.get_cluster("lab").pools["big"]  # type: ignore[union-attr]
    assert (pool.nodes, pool.ranks) == ([], [])
    assert pool.note and pool.note.startswith("unloaded after: node 'b' (rank 1) is down; not reloaded:")
    assert "does not fit node 'a'" in pool.note
    status = asyncio.run(service.status("lab"))
    assert status["pools"]["big"]["degraded"] == pool.note and status["pools"]["big"]["ready"] is False
    # and healing again changes nothing (the pool has no ranks left to lose)
    assert asyncio.run(pool_upkeep.heal_sharded(service)) == []


class UnreachableAgents(Agents):
    async def load(self, base_url: str, model: str) -> dict[str, Any]:
        self.calls.append(("load", base_url))
        raise AgentUnreachable(base_url, "ConnectError")


def test_a_pool_whose_remaining_rank_cannot_be_reached_is_unloaded_with_the_reason(store: DynamoControlStore) -> None:
    # given a pipeline pool of a small model over a and b, b gone silent, and a's agent not answering a load
    now = utcnow()
    model = [ModelOnDisk(name="small", size_bytes=2**20)]
    store.put_cluster_config(Cluster(cluster_id="lab", kind="mlx"))
    for node_id, seen in (("a", now), ("b", now - timedelta(hours=1))):
        store.put_node(Node(node_id=node_id, cluster_id="lab", base_url=f"http://{node_id}:1", ram_bytes=2**33,
                            models=model, last_seen=seen))
    store.set_pools("lab", {"small": Pool(alias="small", model="small", nodes=["a"], ranks=["a", "b"],
                                          mode="pipeline", loaded_at=now)}, release=False)
    agents = UnreachableAgents()
    # when the control plane heals its pools
    healed = asyncio.run(pool_upkeep.heal_sharded(ClusterService(store, agents)))
    # then the reload on a was tried and failed (a 409 to an admin, who may retry), so the pool is unloaded and the
    # heal says why, rather than skipping it as if another load held the cluster
    assert ("load", "http://a:1") in agents.calls and ("unload", "http://a:1") in agents.calls
    assert [h["alias"] for h in healed] == ["small"]
    assert "not reloaded: No node of cluster 'lab' could be reached" in healed[0]["note"]
    pool = store.get_cluster("lab").pools.get("small")  # type: ignore[union-attr]
    assert pool is None or (pool.nodes, pool.ranks) == ([], [])
