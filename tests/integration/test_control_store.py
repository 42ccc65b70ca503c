"""The DynamoDB control store on DynamoDB Local: the load hold is one conditional write, heartbeats only
update enrolled nodes, concurrent first enrollments all land in the pool, session pins expire on read,
documents round-trip."""

from __future__ import annotations

import asyncio
import threading
from concurrent.futures import ThreadPoolExecutor
from datetime import timedelta
from typing import Any

import pytest

from isthmus.adapters.control_tables import DynamoControlStore, DynamoSessionStore
from isthmus.control.models import Cluster, Node, Pool, utcnow
from isthmus.services.control import pool_upkeep, pool_usage
from isthmus.services.control.clusters import ClusterService
from isthmus.services.control.nodes import NodeService
from isthmus_contracts.control import EnrollRequest, NodeLoad

pytestmark = pytest.mark.integration


def test_a_second_load_is_refused_while_the_first_holds_the_cluster(ddb_tables: str) -> None:
    store, now = DynamoControlStore(), utcnow()
    store.put_cluster_config(Cluster(cluster_id="hold"))
    assert store.acquire_load("hold", now + timedelta(minutes=5), now)
    assert not store.acquire_load("hold", now + timedelta(minutes=5), now)
    store.set_pools("hold", {"p": Pool(alias="p", model="m", nodes=["n"], loaded_at=now)}, release=True)
    assert store.acquire_load("hold", now + timedelta(minutes=5), now)
    # an abandoned hold expires
    assert store.acquire_load("hold", now + timedelta(minutes=10), now + timedelta(minutes=6))
    assert not store.acquire_load("missing-cluster", now + timedelta(minutes=5), now)
    # a config update keeps the pools
    store.put_cluster_config(Cluster(cluster_id="hold", description="x"))
    cluster = store.get_cluster("hold")
    assert cluster is not None and list(cluster.pools) == ["p"] and cluster.description == "x"


def test_heartbeat_needs_enrollment_and_updates_last_seen(ddb_tables: str) -> None:
    store, now = DynamoControlStore(), utcnow()
    assert not store.heartbeat("ghost", NodeLoad(), None, now)
    store.put_node(Node(node_id="n-hb", cluster_id="c-hb", base_url="http://x", last_seen=now - timedelta(hours=1)))
    assert store.heartbeat("n-hb", NodeLoad(active=2, loaded_model="m"), None, now)
    node = store.get_node("n-hb")
    assert node is not None and node.last_seen == now and node.load.active == 2
    assert [n.node_id for n in store.list_nodes("c-hb")] == ["n-hb"]


def test_concurrent_first_enrollments_into_one_cluster_all_join_the_pool(ddb_tables: str) -> None:
    # given six nodes with the same model loaded, enrolling into a cluster that does not exist yet, all at once
    service, nodes = NodeService(DynamoControlStore()), [f"race-{i}" for i in range(6)]
    start = threading.Barrier(len(nodes))

    def enroll(node_id: str) -> None:
        start.wait(timeout=30)
        service._enroll(EnrollRequest(node_id=node_id, base_url=f"http://127.0.0.1:1/{node_id}",
                                      cluster_id="race", load=NodeLoad(loaded_model="race-model")))

    # when they enroll concurrently
    with ThreadPoolExecutor(len(nodes)) as pool:
        list(pool.map(enroll, nodes))
    # then one pool serves the model and every node is in it (none replaced the others' write)
    cluster = DynamoControlStore().get_cluster("race")
    assert cluster is not None and list(cluster.pools) == ["race-model"]
    assert sorted(cluster.pools["race-model"].nodes) == nodes
    # and a pools write by a load (set_pools) is not lost to an update that read before it
    store = DynamoControlStore()
    loaded = Pool(alias="other", model="other-model", nodes=["race-0"], loaded_at=utcnow())

    def add_other_first(current: Cluster) -> dict[str, Pool] | None:
        if "other" not in current.pools:  # a write lands between this update's read and its write
            store.set_pools("race", {**current.pools, "other": loaded}, release=False)
        return {**current.pools, "extra": loaded.model_copy(update={"alias": "extra"})}

    written = store.update_pools("race", add_other_first)
    assert written is not None and set(written) == {"race-model", "other", "extra"}
    after = store.get_cluster("race")
    assert after is not None and set(after.pools) == {"race-model", "other", "extra"}


def test_session_pins_expire_on_read(ddb_tables: str) -> None:
    sessions, now = DynamoSessionStore(), utcnow()
    sessions.put("s-exp", "n1", "c1", 60, now)
    assert sessions.get("s-exp", now) == ("n1", "c1")
    assert sessions.get("s-exp", now + timedelta(seconds=61)) is None


def test_documents_round_trip_and_list_by_prefix(ddb_tables: str) -> None:
    store = DynamoControlStore()
    store.put_doc("sync_job#x1", {"id": "x1"})
    store.put_doc("sync_job#x2", {"id": "x2"})
    assert store.get_doc("sync_job#x1") == {"id": "x1"}
    assert {d["id"] for d in store.list_docs("sync_job#")} >= {"x1", "x2"}


class RecordingAgents:
    def __init__(self) -> None:
        self.unloaded: list[str] = []

    async def unload(self, base_url: str) -> dict[str, Any]:
        self.unloaded.append(base_url)
        return {}


def test_idle_pools_are_unloaded_after_their_ttl(ddb_tables: str) -> None:
    store, agents, now = DynamoControlStore(), RecordingAgents(), utcnow()
    hour_ago = now - timedelta(hours=1)
    store.put_cluster_config(Cluster(cluster_id="reap"))
    store.put_node(Node(node_id="rn", cluster_id="reap", base_url="http://rn", last_seen=now))
    store.set_pools("reap", {
        "idle": Pool(alias="idle", model="m1", nodes=["rn"], loaded_at=hour_ago, ttl_seconds=60),
        "used": Pool(alias="used", model="m2", nodes=[], loaded_at=hour_ago, ttl_seconds=60),
        "forever": Pool(alias="forever", model="m3", nodes=[], loaded_at=hour_ago),
    }, release=False)
    asyncio.run(pool_usage.touch(store, "reap", "used"))  # a request was routed to it just now
    service = ClusterService(store, agents)  # type: ignore[arg-type]
    # when the reaper runs half a minute later; then only the idle pool goes, through its agent
    reaped = asyncio.run(pool_upkeep.reap_idle(service, now + timedelta(seconds=30)))
    assert [r["alias"] for r in reaped] == ["idle"] and agents.unloaded == ["http://rn"]
    cluster = store.get_cluster("reap")
    assert cluster is not None and set(cluster.pools) == {"used", "forever"}
    # the settings default covers pools without their own ttl
    saved = store.get_settings()
    try:
        store.put_settings(saved.model_copy(update={"pool_ttl_seconds_default": 600}))
        reaped = asyncio.run(pool_upkeep.reap_idle(service, now + timedelta(seconds=30)))
        assert [r["alias"] for r in reaped] == ["forever"]
    finally:
        store.put_settings(saved)
