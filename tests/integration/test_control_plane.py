"""The control plane end to end: DynamoDB Local, the edge as a subprocess (real HTTP), and two node agents
on loopback that enroll and heartbeat. The agents are the deterministic test double by default; pass
another command to ``start_agent`` to run the real agent here.

Tests run in file order on one module-scoped setup: enroll -> load -> list -> route -> affinity -> sync ->
CoeOS -> failover (one agent stopped) -> node down -> unload.
"""

from __future__ import annotations

import asyncio
import os
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import pytest

from isthmus import wiring
from isthmus.backends.first_byte import first_connecting
from isthmus.errors import ApiError
from isthmus.routing.affinity import tracker
from isthmus.routing.resolver import NodeTarget, Route
from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.control_agents import AgentSpec, RunningAgent, start_agent
from tests.support.waiting import poll

pytestmark = [pytest.mark.integration, pytest.mark.e2e]
STALE_S = "3"


@dataclass
class Plane:
    edge: str
    agents: dict[str, RunningAgent]
    root: Path




def status(plane: Plane, cluster: str = "lab") -> dict[str, Any]:
    r = httpx.get(f"{plane.edge}/admin/clusters/{cluster}/status")
    assert r.status_code == 200, r.text
    return dict(r.json())


def up_nodes(plane: Plane) -> set[str]:
    return {n["node_id"] for n in status(plane)["nodes"] if n["up"]}


@pytest.fixture(scope="module")
def plane(ddb_tables: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Plane]:
    saved = os.environ.get("ISTHMUS_NODE_STALE_SECONDS")
    os.environ["ISTHMUS_NODE_STALE_SECONDS"] = STALE_S  # this process's resolver reads it too
    root = tmp_path_factory.mktemp("plane")
    for node, models in {"a": {"tiny-a": 2048, "tiny-b": 70_000, "big-model": 300_000}, "b": {"tiny-a": 2048}}.items():
        for name, size in models.items():
            (root / node / name).mkdir(parents=True)
            (root / node / name / "weights.bin").write_bytes(b"w" * size)
    proc, edge = start_edge("asgi")
    agents: dict[str, RunningAgent] = {}
    try:
        httpx.put(f"{edge}/admin/clusters/lab", json={"kind": "mlx", "fallback": None}).raise_for_status()
        for node, ram in (("a", 256 * 1024), ("b", 16 * 2**30)):
            agents[node] = start_agent(AgentSpec(node_id=node, models_dir=root / node, control_url=edge,
                                                 cluster="lab", ram_bytes=ram))
        plane = Plane(edge, agents, root)
        poll(lambda: up_nodes(plane) == {"a", "b"})
        yield plane
    finally:
        for agent in agents.values():
            agent.stop()
        stop(proc)
        if saved is None:
            os.environ.pop("ISTHMUS_NODE_STALE_SECONDS", None)
        else:
            os.environ["ISTHMUS_NODE_STALE_SECONDS"] = saved


def route(model: str, **kw: Any) -> Route:
    return asyncio.run(wiring.new_routing_service().route(model, **kw))


def generate(route_: Route, session_id: str | None = None) -> tuple[str, str]:
    """(node id, reply text) from the first node that connects, as the inference handler will do it."""

    async def attempt(target: NodeTarget) -> str:
        async with httpx.AsyncClient(timeout=10) as client:
            body = {"model": route_.model, "session_id": session_id,
                    "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
            r = await client.post(f"{target.base_url}/agent/v1/generate", json=body)
            r.raise_for_status()
            return str(r.json()["content"][0]["text"])

    async def run() -> tuple[str, str]:
        target, text = await first_connecting(route_.nodes, attempt)
        await wiring.new_routing_service().pin_session(session_id, route_, target.node_id)
        return target.node_id, text

    return asyncio.run(run())


def test_agents_enroll_with_inventory_and_heartbeat(plane: Plane) -> None:
    nodes = {n["node_id"]: n for n in status(plane)["nodes"]}
    assert set(nodes) == {"a", "b"}
    assert nodes["a"]["chip"] == "fake" and nodes["a"]["base_url"] == plane.agents["a"].base_url
    assert {m["name"] for m in nodes["a"]["models"]} == {"tiny-a", "tiny-b", "big-model"}
    first = nodes["b"]["last_seen"]
    poll(lambda: {n["node_id"]: n for n in status(plane)["nodes"]}["b"]["last_seen"] != first)


def test_a_forgotten_node_enrolls_again_on_its_next_heartbeat(plane: Plane) -> None:
    assert httpx.delete(f"{plane.edge}/admin/nodes/b").status_code == 204
    poll(lambda: "b" in {n["node_id"] for n in httpx.get(f"{plane.edge}/admin/nodes").json()["nodes"]})
    poll(lambda: up_nodes(plane) == {"a", "b"})


def test_load_errors(plane: Plane) -> None:
    post = lambda path, body: httpx.post(f"{plane.edge}{path}", json=body)  # noqa: E731
    assert post("/admin/nowhere/load", {"model": "tiny-a"}).status_code == 404
    assert post("/admin/lab/load", {"model": "tiny-a", "sharding": "diagonal"}).status_code == 400
    r = post("/admin/lab/load", {"model": "tiny-a", "sharding": "pipeline"})
    assert r.status_code == 502 and "data port" in r.json()["detail"]  # the fake agent cannot shard
    too_big = post("/admin/clusters/lab/load", {"model": "big-model", "nodes": ["a"]})
    assert too_big.status_code == 400 and "does not fit" in too_big.json()["detail"]
    httpx.put(f"{plane.edge}/admin/clusters/other", json={"kind": "mlx"}).raise_for_status()
    assert post("/admin/lab/load", {"model": "tiny-a", "alias": "other"}).status_code == 409
    assert post("/admin/lab/load", {"model": "tiny-a", "alias": "CoeOS"}).status_code == 400
    # a load that fails on one node: the pool follows the node that did load, the failure is named
    partial = post("/admin/lab/load", {"model": "fail-b", "alias": "partial"})
    assert partial.status_code == 200, partial.text
    assert partial.json()["nodes"] == ["a"] and "b" in partial.json()["failed"]
    assert post("/admin/lab/load", {"model": "fail-b", "alias": "partial", "nodes": ["b"]}).status_code == 502
    assert post("/admin/lab/unload", {"alias": "partial"}).json()["nodes"] == ["a"]
    httpx.put(f"{plane.edge}/admin/clusters/lab", json={"kind": "mlx"}).raise_for_status()  # default alias unset


def test_load_through_the_admin_api(plane: Plane) -> None:
    r = httpx.post(f"{plane.edge}/admin/lab/load", json={"model": "tiny-a", "alias": "chat"}, timeout=30)
    assert r.status_code == 200, r.text
    body = r.json()
    assert (body["loaded"], body["cluster"], body["alias"], body["model"]) == (True, "lab", "chat", "tiny-a")
    assert sorted(body["nodes"]) == ["a", "b"] and isinstance(body["load_s"], float)
    for agent in plane.agents.values():
        assert httpx.get(f"{agent.base_url}/agent/v1/status").json()["model"] == "tiny-a"
    clusters = httpx.get(f"{plane.edge}/admin/clusters").json()["clusters"]
    lab = next(c for c in clusters if c["cluster_id"] == "lab")
    assert lab["state"] == "ready" and lab["default_alias"] == "chat"


def test_v1_models_lists_the_pool_with_x_odyssai(plane: Plane) -> None:
    for prefix in ("/v1", "/api/v1"):
        data = httpx.get(f"{plane.edge}{prefix}/models").json()
        assert data["object"] == "list"
        chat = next(m for m in data["data"] if m["id"] == "chat")
        assert (chat["object"], chat["root"], chat["owned_by"]) == ("model", "tiny-a", "isthmus")
        assert isinstance(chat["created"], int)
        x = chat["x_odyssai"]
        assert (x["ready"], x["loaded"], x["backend"], x["pool"], x["alias_for"], x["kind"]) == \
               (True, True, "mlx", "lab", "tiny-a", "alias")
        assert sorted(x["nodes"]) == ["a", "b"] and x["context_length"] == 2048
        assert {"quantization", "supports_tools", "supports_vision", "supports_streaming"} <= set(x)
        assert "big-model" not in {m["id"] for m in data["data"]}
    unloaded = httpx.get(f"{plane.edge}/v1/models", params={"include_unloaded": "true"}).json()["data"]
    big = next(m for m in unloaded if m["id"] == "big-model")
    assert big["x_odyssai"]["ready"] is False and big["x_odyssai"]["nodes"] == ["a"]
    assert httpx.get(f"{plane.edge}/v1/models/chat").json()["root"] == "tiny-a"
    missing = httpx.get(f"{plane.edge}/v1/models/org/nope")
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"


def test_route_by_alias_and_by_cluster_name(plane: Plane) -> None:
    for name in ("chat", "lab", "TINY-A"):
        r = route(name)
        assert (r.backend, r.cluster, r.model, r.alias) == ("mlx", "lab", "tiny-a", "chat")
        assert sorted(n.node_id for n in r.nodes) == ["a", "b"]


def test_session_affinity_keeps_a_session_on_one_node(plane: Plane) -> None:
    node, text = generate(route("chat", session_id="s-1"), "s-1")
    assert text.startswith(f"[{node}]")
    other = "b" if node == "a" else "a"
    # even when the pinned node is the busier one, the session stays there (its prefix cache is warm)
    with tracker.track(node), tracker.track(node):
        for _ in range(3):
            r = route("chat", session_id="s-1")
            assert r.nodes[0].node_id == node
            assert generate(r, "s-1")[0] == node
        # a request without a session goes to the least-loaded node
        assert route("chat").nodes[0].node_id == other


def test_model_sync_through_the_admin_api(plane: Plane) -> None:
    r = httpx.post(f"{plane.edge}/admin/sync/rsync", json={"model": "tiny-b", "source": "a", "targets": ["b"]})
    assert r.status_code == 200, r.text
    job_id = r.json()["id"]
    done = poll(lambda: (j := httpx.get(f"{plane.edge}/admin/sync/jobs/{job_id}").json())["state"] != "running"
                and j)
    assert done["state"] == "done" and done["bytes_done"] == done["bytes_total"] == 70_000
    src, dst = plane.root / "a" / "tiny-b" / "weights.bin", plane.root / "b" / "tiny-b" / "weights.bin"
    assert dst.read_bytes() == src.read_bytes()
    jobs = httpx.get(f"{plane.edge}/admin/sync/jobs").json()["jobs"]
    assert job_id in {j["id"] for j in jobs}
    bad = httpx.post(f"{plane.edge}/admin/sync/rsync", json={"model": "tiny-b", "source": "a", "targets": ["zz"]})
    assert bad.status_code == 400
    gone = httpx.post(f"{plane.edge}/admin/sync/rsync", json={"model": "no-such", "source": "a", "targets": ["b"]})
    assert gone.status_code == 404
    # cancelling a finished job leaves it as it ended
    assert httpx.post(f"{plane.edge}/admin/sync/jobs/{job_id}/cancel").json()["state"] == "done"
    assert httpx.get(f"{plane.edge}/admin/sync/jobs/nope").status_code == 404
    # the target's next heartbeat reports the new model on its disk
    poll(lambda: "tiny-b" in {m["name"] for n in status(plane)["nodes"] if n["node_id"] == "b" for m in n["models"]})


def test_coeos_config_and_routing(plane: Plane) -> None:
    config = {"enabled": True, "default_axis": "chat", "decider_model": "chat",
              "axes": [{"key": "chat", "label": "Chat"},
                       {"key": "code", "label": "Code", "model": "lab", "thinking": True, "reasoning_effort": "low"}],
              "score_table": {"schema": "tmb-score-table/1", "models": {"chat": {"axes": {"chat": {"score": 0.8}}}}}}
    assert httpx.put(f"{plane.edge}/admin/coeos", json=config).status_code == 200
    assert httpx.get(f"{plane.edge}/admin/coeos").json()["axes"][1]["model"] == "lab"
    bad = httpx.put(f"{plane.edge}/admin/coeos", json={**config, "default_axis": "nope"})
    assert bad.status_code == 422
    # the header forces the axis
    r = route("CoeOS", axis_header="chat")
    assert (r.alias, r.coeos_axis, r.requested) == ("chat", "chat", "CoeOS")
    # the decider model (served by the pool; the test agent echoes the prompt) picks the axis
    r = route("coeos", last_user_message="please route me. AXIS: code")
    assert (r.coeos_axis, r.model, r.enable_thinking, r.reasoning_effort) == ("code", "tiny-a", True, "low")
    decisions = httpx.get(f"{plane.edge}/admin/coeos/decisions").json()["decisions"]
    assert (decisions[0]["axis"], decisions[0]["axis_source"], decisions[0]["model"]) == ("code", "decider", "lab")
    assert "CoeOS" in {m["id"] for m in httpx.get(f"{plane.edge}/v1/models").json()["data"]}
    settings = httpx.put(f"{plane.edge}/admin/settings", json={"enable_thinking_default": False}).json()
    assert settings["enable_thinking_default"] is False and "lab/chat" in settings["applied_to_pools"]
    assert route("chat").enable_thinking is False


def test_telemak_cluster_discovers_its_upstream_models(plane: Plane) -> None:
    # given a single-Mac upstream (the a agent stands in: it answers /v1/models with its loaded model)
    r = httpx.put(f"{plane.edge}/admin/clusters/telecode", json={"kind": "telemak", "url": plane.agents["a"].base_url,
                                                                 "api_key": "sk-upstream"})
    assert r.status_code == 200 and r.json()["models"] == ["tiny-a"] and r.json()["has_api_key"] is True
    assert "sk-upstream" not in r.text
    # then it routes by id and is listed as servable
    t = route("telecode")
    assert (t.backend, t.model, t.upstream_url) == ("telemak", "tiny-a", plane.agents["a"].base_url)
    ids = {m["id"] for m in httpx.get(f"{plane.edge}/v1/models").json()["data"]}
    assert {"telecode", "telecode:tiny-a"} <= ids
    nodes = httpx.get(f"{plane.edge}/admin/nodes").json()["nodes"]
    assert {n["node_id"] for n in nodes} >= {"a", "b"}
    assert httpx.delete(f"{plane.edge}/admin/clusters/telecode").status_code == 204


def test_failover_when_an_agent_stops(plane: Plane) -> None:
    # given a session pinned to b, and b's agent stopped (its record may still look fresh)
    asyncio.run(wiring.new_routing_service().pin_session("s-b", route("chat"), "b"))
    plane.agents["b"].stop()
    # when the session's next turn is routed; then the resolver and failover land on a
    node, text = generate(route("chat", session_id="s-b"), "s-b")
    assert node == "a" and text.startswith("[a]")


def test_node_marked_down_after_missed_heartbeats(plane: Plane) -> None:
    poll(lambda: up_nodes(plane) == {"a"})
    assert [n.node_id for n in route("chat").nodes] == ["a"]
    chat = next(m for m in httpx.get(f"{plane.edge}/v1/models").json()["data"] if m["id"] == "chat")
    assert chat["x_odyssai"]["nodes"] == ["a"]


def test_unload_frees_the_pool_then_the_cluster_can_go(plane: Plane) -> None:
    assert httpx.delete(f"{plane.edge}/admin/clusters/lab").status_code == 409  # pools still loaded
    r = httpx.post(f"{plane.edge}/admin/lab/unload")
    assert r.status_code == 200 and r.json()["aliases"] == ["chat"]
    assert httpx.get(f"{plane.agents['a'].base_url}/agent/v1/status").json()["model"] is None
    with pytest.raises(ApiError) as err:  # nothing is servable: 404 listing what is ready
        route("chat")
    assert (err.value.status, err.value.code) == (404, "model_not_loaded")
    assert httpx.delete(f"{plane.edge}/admin/clusters/other").status_code == 204
    assert httpx.get(f"{plane.edge}/admin/clusters/other/status").status_code == 404
    assert "chat" not in {m["id"] for m in httpx.get(f"{plane.edge}/v1/models").json()["data"]}
