"""Model loads as jobs with progress: a real node agent (tiny random model) enrolled through the edge, loaded
through the admin API with ``wait: false`` and watched until the pool is recorded; a failing load ends as a
failed job and frees the cluster; the blocking load keeps working."""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.conftest import SharedEdges
from tests.support.agents import AgentProcess, enrolled_agents
from tests.support.waiting import poll

pytestmark = [pytest.mark.integration]
CLUSTER = "jobs"


@pytest.fixture(scope="module")
def lan(shared_edges: SharedEdges, agent_logs: Path) -> Iterator[tuple[str, AgentProcess]]:
    edge = shared_edges.get("asgi")  # the plain edge, as test_edge's: a cluster of its own name
    # the agent starts empty: the tests load through the admin API
    with enrolled_agents(edge, CLUSTER, ["job-node"], log_dir=agent_logs) as agents:
        yield edge, agents["job-node"]


def _until_finished(edge: str, job: dict[str, Any]) -> tuple[dict[str, Any], list[float]]:
    seen: list[float] = []

    def finished() -> dict[str, Any] | None:
        r = httpx.get(f"{edge}/admin/clusters/{CLUSTER}/loads/{job['id']}", timeout=10)
        assert r.status_code == 200, r.text
        seen.append(r.json()["percent"])
        return r.json() if r.json()["state"] in ("done", "failed") else None
    return poll(finished, timeout=60), seen


def test_a_load_job_reports_progress_and_records_the_pool(lan: tuple[str, AgentProcess], tiny_model: Path) -> None:
    edge, agent = lan
    # when the operator loads a model without waiting
    r = httpx.post(f"{edge}/admin/clusters/{CLUSTER}/load", json={"model": str(tiny_model), "alias": "tj",
                                                                  "wait": False}, timeout=30)
    # then the answer is a running job at once
    assert r.status_code == 202, r.text
    job = r.json()
    assert job["state"] == "running" and job["alias"] == "tj" and [n["node_id"] for n in job["nodes"]] == ["job-node"]
    # and it ends done at 100 %, every layer and byte of the weights counted, the pool recorded
    final, seen = _until_finished(edge, job)
    assert final["state"] == "done" and final["percent"] == 100.0, final
    assert final["bytes_total"] > 0 and final["bytes_done"] == final["bytes_total"]
    assert final["layers_total"] > 1 and final["layers_done"] == final["layers_total"]
    assert all(a <= b for a, b in itertools.pairwise(seen))  # progress never goes back
    status = httpx.get(f"{edge}/admin/clusters/{CLUSTER}/status", timeout=10).json()
    assert status["pools"]["tj"]["nodes"] == ["job-node"] and status["state"] != "loading"
    assert agent.status()["load_progress"]["state"] == agent.status()["load_progress"]["phase"] == "done"
    listed = httpx.get(f"{edge}/admin/clusters/{CLUSTER}/loads", timeout=10).json()["jobs"]
    assert final["id"] in [j["id"] for j in listed]
    # and another cluster's name cannot read it
    assert httpx.get(f"{edge}/admin/clusters/other/loads/{job['id']}", timeout=10).status_code == 404


def test_a_failing_load_job_ends_failed_and_frees_the_cluster(lan: tuple[str, AgentProcess],
                                                             tiny_model: Path) -> None:
    edge, _ = lan
    # when the model does not exist on the node
    r = httpx.post(f"{edge}/admin/clusters/{CLUSTER}/load", json={"model": "no-such-model", "alias": "nope",
                                                                  "wait": False}, timeout=30)
    assert r.status_code == 202, r.text
    final, _ = _until_finished(edge, r.json())
    # then the job says failed and why, no pool is recorded
    assert final["state"] == "failed" and "no-such-model" in final["error"], final
    assert "nope" not in httpx.get(f"{edge}/admin/clusters/{CLUSTER}/status", timeout=10).json()["pools"]
    # and the cluster is free again: the blocking load (the existing callers' form) works
    r = httpx.post(f"{edge}/admin/clusters/{CLUSTER}/load", json={"model": str(tiny_model), "alias": "tj"},
                   timeout=120)
    assert r.status_code == 200 and r.json()["loaded"] is True, r.text
