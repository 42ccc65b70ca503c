"""The admin answers the document describes by hand (isthmus.openapi_shapes), held to real ones: the fuzzer's edge
has no node that can load, so here a real node agent (tiny random model) enrolls through an edge and is loaded as a
job (202, then its progress until done), blocking (200), and reaped; each answer must match its operation's schema
in /openapi.json, and the 202's link must lead to the job."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from jsonschema import Draft202012Validator

from isthmus import openapi
from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.agents import AgentProcess
from tests.support.waiting import poll

pytestmark = [pytest.mark.integration]
CLUSTER = "shapes"
NODE = "shapes-node"


@pytest.fixture(scope="module")
def edge(ddb_tables: str, agent_logs: Path) -> Iterator[str]:
    proc, base = start_edge("asgi")
    agent = AgentProcess("", log_dir=agent_logs,  # starts empty: loaded through the admin API
                         env={"ISTHMUS_CONTROL_URL": base, "ISTHMUS_CLUSTER_ID": CLUSTER, "ISTHMUS_NODE_ID": NODE})
    try:
        def up() -> bool:
            r = httpx.get(f"{base}/admin/clusters/{CLUSTER}/status", timeout=10)
            return r.status_code == 200 and r.json()["nodes_up"] == [NODE]
        poll(up, timeout=60)
        yield base
    finally:
        agent.stop()
        stop(proc)


def answer_schema(method: str, path: str, status: int) -> dict[str, Any]:
    schema: dict[str, Any] = (openapi.document()["paths"][path][method]["responses"][str(status)]
                              ["content"]["application/json"]["schema"])
    return schema


def conforms(response: httpx.Response, method: str, path: str) -> dict[str, Any]:
    body: dict[str, Any] = response.json()
    errors = [e.message for e in Draft202012Validator(answer_schema(method, path, response.status_code))
              .iter_errors(body)]
    assert not errors, (method, path, errors, body)
    return body


def test_load_job_blocking_load_and_reap_answers_match_the_document(edge: str, tiny_model: Path) -> None:
    load_path = "/admin/clusters/{cluster_id}/load"
    job_path = "/admin/clusters/{cluster_id}/loads/{job_id}"
    # when a model is loaded without waiting, then the 202 is a load job as documented
    r = httpx.post(f"{edge}/admin/clusters/{CLUSTER}/load", json={"model": str(tiny_model), "alias": "sj",
                                                                  "wait": False}, timeout=30)
    assert r.status_code == 202, r.text
    job = conforms(r, "post", load_path)
    # and its link names the job's operation with the job's id: every read of it is documented, to the end
    link = openapi.document()["paths"][load_path]["post"]["responses"]["202"]["links"]
    assert link["get_admin_clusters_cluster_id_loads_job_id"]["parameters"]["job_id"] == "$response.body#/id"

    def finished() -> dict[str, Any] | None:
        read = httpx.get(f"{edge}/admin/clusters/{CLUSTER}/loads/{job['id']}", timeout=10)
        assert read.status_code == 200, read.text
        body = conforms(read, "get", job_path)
        return body if body["state"] in ("done", "failed") else None

    assert poll(finished, timeout=60)["state"] == "done"
    conforms(httpx.get(f"{edge}/admin/clusters/{CLUSTER}/loads", timeout=10), "get",
             "/admin/clusters/{cluster_id}/loads")
    # when it is loaded again, blocking, under another alias, then the 200 is as documented too
    r = httpx.post(f"{edge}/admin/clusters/{CLUSTER}/load", json={"model": str(tiny_model), "alias": "sb",
                                                                  "force": True, "ttl_seconds": 1}, timeout=60)
    assert r.status_code == 200, r.text
    assert conforms(r, "post", load_path)["nodes"] == [NODE]
    # when idle pools are reaped once the 1 s TTL has passed, then the answer names the pool, as documented

    def reaped() -> list[dict[str, Any]] | None:
        answer = conforms(httpx.post(f"{edge}/admin/pools/reap", timeout=30), "post", "/admin/pools/reap")
        return [p for p in answer["reaped"] if p["alias"] == "sb"] or None

    assert poll(reaped, timeout=30, interval=0.5)[0]["cluster"] == CLUSTER
