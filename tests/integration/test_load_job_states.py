"""Load jobs over the DynamoDB control store (DynamoDB Local) with a scripted agent port: a job finishes once
however many reads race to finish it (a late read never releases the hold of a load started since), and an
agent that restarted mid-load fails the job and frees the cluster."""

from __future__ import annotations

import asyncio
from datetime import timedelta
from typing import Any

import pytest

from isthmus.adapters.control_tables import DynamoControlStore
from isthmus.control.models import Cluster, Node, utcnow
from isthmus.services.control.clusters import ClusterService, LoadBody
from isthmus.services.control.load_jobs import LoadJobService

pytestmark = pytest.mark.integration


class ScriptedAgents:
    """The agent port, answering each node's status from a script (no network)."""

    def __init__(self) -> None:
        self.statuses: dict[str, dict[str, Any]] = {}
        self.status_calls = 0
        self.gate: asyncio.Event | None = None  # when set, the next status read waits for it (then it is cleared)
        self.paused = asyncio.Event()

    async def request(self, method: str, base_url: str, path: str, body: Any = None, timeout: float | None = None,
                      api_key: str | None = None) -> tuple[int, Any]:
        assert (method, path, body["wait"]) == ("POST", "/agent/v1/load", False)
        self.statuses[base_url] = {"loading": body["model"], "loaded": False, "model": None,
                                   "load_progress": {"model": body["model"], "state": "loading", "layers_done": 0,
                                                     "layers_total": 4, "bytes_done": 0, "bytes_total": 400}}
        return 202, self.statuses[base_url]

    async def status(self, base_url: str) -> dict[str, Any]:
        self.status_calls += 1
        answer = self.statuses[base_url]
        gate, self.gate = self.gate, None
        if gate is not None:
            self.paused.set()
            await gate.wait()
        return answer

    async def load(self, base_url: str, model: str) -> dict[str, Any]:
        raise AssertionError("a load job never blocks on the agent")

    async def unload(self, base_url: str) -> dict[str, Any]:
        return {}


def progress(model: str, state: str, done: int) -> dict[str, Any]:
    return {"model": model, "state": state, "layers_done": done // 100, "layers_total": 4, "bytes_done": done,
            "bytes_total": 400, "load_s": 1.5}


@pytest.fixture()
def lan(ddb_tables: str, monkeypatch: pytest.MonkeyPatch) -> tuple[DynamoControlStore, ScriptedAgents, LoadJobService]:
    monkeypatch.setenv("ISTHMUS_RUNTIME", "lambda")  # no watcher task: the reads below drive the job
    store, agents = DynamoControlStore(), ScriptedAgents()
    return store, agents, LoadJobService(store, agents, ClusterService(store, agents))


def enrol(store: DynamoControlStore, cluster: str) -> str:
    store.put_cluster_config(Cluster(cluster_id=cluster))
    base = f"http://{cluster}-node:1"
    store.put_node(Node(node_id=f"{cluster}-node", cluster_id=cluster, base_url=base, last_seen=utcnow()))
    return base


def test_a_job_finishes_once_and_a_late_read_keeps_the_next_loads_hold(lan: Any) -> None:
    store, agents, jobs = lan
    base = enrol(store, "race-jobs")

    async def scenario() -> None:
        # given a running job at half its bytes
        job = await jobs.start("race-jobs", LoadBody(model="m", alias="a"))
        agents.statuses[base]["load_progress"] = progress("m", "loading", 200)
        assert (await jobs.get("race-jobs", job["id"]))["percent"] == 50.0
        # when the agent is done, and a first read has seen it but not yet finished the job when a second comes
        agents.statuses[base] = {"loading": None, "loaded": True, "model": "m",
                                 "load_progress": progress("m", "done", 400)}
        gate = agents.gate = asyncio.Event()
        first = asyncio.create_task(jobs.get("race-jobs", job["id"]))
        await agents.paused.wait()
        second = asyncio.create_task(jobs.get("race-jobs", job["id"]))
        await asyncio.wait({second}, timeout=3)  # time enough for it to finish the job, were it not held back
        # then the second waits for the first (the job still holds the cluster: no other load can start)
        now = utcnow()
        assert not second.done() and not store.acquire_load("race-jobs", now + timedelta(minutes=5), now)
        gate.set()
        finished = await asyncio.gather(first, second)
        assert {(f["state"], f["percent"]) for f in finished} == {("done", 100.0)}
        cluster = store.get_cluster("race-jobs")
        assert cluster is not None and cluster.pools["a"].nodes == ["race-jobs-node"]
        # and once another load holds the cluster, a late read of the finished job does not release that hold
        assert store.acquire_load("race-jobs", now + timedelta(minutes=5), now)
        await jobs.get("race-jobs", job["id"])
        assert not store.acquire_load("race-jobs", now + timedelta(minutes=5), now)

    asyncio.run(scenario())


def test_an_agent_that_restarted_mid_load_fails_the_job_and_frees_the_cluster(lan: Any) -> None:
    store, agents, jobs = lan
    base = enrol(store, "restart-jobs")

    async def scenario() -> None:
        job = await jobs.start("restart-jobs", LoadBody(model="m", alias="b"))
        # when the agent comes back with nothing loading and no record of the load
        agents.statuses[base] = {"loading": None, "loaded": False, "model": None, "load_progress": None}
        final = await jobs.get("restart-jobs", job["id"])
        # then the job failed and says why, no pool was recorded, and the cluster can be loaded again
        assert final["state"] == "failed" and "restarted" in final["error"]
        cluster = store.get_cluster("restart-jobs")
        assert cluster is not None and "b" not in cluster.pools
        now = utcnow()
        assert store.acquire_load("restart-jobs", now + timedelta(minutes=5), now)

    asyncio.run(scenario())
