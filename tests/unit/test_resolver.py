"""Model resolution over a snapshot (pure): telemak ids, cloud aliases, cluster/alias/path, fallback,
claude tiers, 404 listing ready models, nodes down after missed heartbeats."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from isthmus.control.models import Cluster, GlobalSettings, Node, Pool, Snapshot
from isthmus.errors import ApiError
from isthmus.routing.resolver import ready_ids, resolve

NOW = datetime(2026, 11, 23, 12, 0, tzinfo=UTC)


def node(node_id: str, cluster: str = "argo", age_s: float = 1.0) -> Node:
    return Node(node_id=node_id, cluster_id=cluster, base_url=f"http://{node_id}:8100",
                last_seen=NOW - timedelta(seconds=age_s))


def pool(alias: str, model: str, *nodes: str) -> Pool:
    return Pool(alias=alias, model=model, nodes=list(nodes), loaded_at=NOW)


def snapshot(**kw: object) -> Snapshot:
    clusters = [
        Cluster(cluster_id="argo", default_alias="chat", fallback="telecode",
                pools={"chat": pool("chat", "mlx-community/Qwen3-4B-4bit", "m1", "m2"),
                       "coder": pool("coder", "/models/Qwen2.5-Coder-7B", "m3")}),
        Cluster(cluster_id="telecode", kind="telemak", url="http://studio:9000", models=["qwen3-32b"]),
        Cluster(cluster_id="multi", kind="telemak", url="http://mini:9000", models=["a-model", "b-model"]),
    ]
    base = {"clusters": clusters, "nodes": [node("m1"), node("m2"), node("m3")], "now": NOW, "stale_seconds": 15,
            "cloud_aliases": ["or:claude-haiku"]}
    base.update(kw)
    return Snapshot.model_validate(base)


@pytest.mark.parametrize(("asked", "model", "via"), [
    ("argo", "mlx-community/Qwen3-4B-4bit", "cluster"),
    ("ARGO", "mlx-community/Qwen3-4B-4bit", "cluster"),
    ("chat", "mlx-community/Qwen3-4B-4bit", "alias"),
    ("Coder", "/models/Qwen2.5-Coder-7B", "alias"),
    ("mlx-community/qwen3-4b-4bit", "mlx-community/Qwen3-4B-4bit", "model"),
    ("qwen2.5-coder-7b", "/models/Qwen2.5-Coder-7B", "model"),
])
def test_local_pool_by_cluster_alias_or_path(asked: str, model: str, via: str) -> None:
    # given clusters with loaded pools; when a request names one; then it routes to the pool's nodes
    route = resolve(snapshot(), asked)
    assert (route.backend, route.model, route.via, route.cluster) == ("mlx", model, via, "argo")
    assert route.nodes and all(n.base_url.startswith("http://m") for n in route.nodes)


def test_telemak_by_id_and_cluster_model() -> None:
    snap = snapshot()
    route = resolve(snap, "telecode")
    assert (route.backend, route.model, route.upstream_url) == ("telemak", "qwen3-32b", "http://studio:9000")
    assert resolve(snap, "multi:b-model").model == "b-model"


def test_ambiguous_bare_telemak_id_is_400() -> None:
    with pytest.raises(ApiError) as err:
        resolve(snapshot(), "multi")
    assert err.value.status == 400 and err.value.code == "ambiguous_model"


def test_cloud_alias_exact() -> None:
    route = resolve(snapshot(), "or:claude-haiku")
    assert (route.backend, route.model) == ("cloud", "or:claude-haiku")


def test_cloud_alias_names_its_provider() -> None:
    route = resolve(snapshot(cloud_owners={"or:claude-haiku": "openrouter"}), "or:claude-haiku")
    assert (route.backend, route.provider, route.alias) == ("cloud", "openrouter", "or:claude-haiku")


def test_nodes_past_the_stale_window_are_down_and_the_fallback_serves() -> None:
    # given every node of the chat pool missed its heartbeats
    snap = snapshot(nodes=[node("m1", age_s=40), node("m2", age_s=16), node("m3")])
    # when the cluster's pool is asked for; then the cluster's fallback alias answers
    route = resolve(snap, "chat")
    assert (route.backend, route.cluster, route.via, route.requested) == ("telemak", "telecode", "fallback", "chat")


def test_one_node_down_leaves_the_other() -> None:
    route = resolve(snapshot(nodes=[node("m1", age_s=30), node("m2"), node("m3")]), "chat")
    assert [n.node_id for n in route.nodes] == ["m2"]


def test_unknown_model_is_404_listing_ready_models() -> None:
    snap = snapshot()
    with pytest.raises(ApiError) as err:
        resolve(snap, "llama-70b")
    assert err.value.status == 404 and err.value.code == "model_not_loaded"
    assert "chat" in err.value.message and "telecode" in err.value.message
    assert set(ready_ids(snap)) >= {"chat", "coder", "telecode", "multi:a-model", "or:claude-haiku"}


def test_claude_names_map_by_tier_on_messages_only() -> None:
    snap = snapshot(settings=GlobalSettings(claude_sonnet_alias="chat", claude_haiku_alias="coder"))
    assert resolve(snap, "claude-sonnet-4-5", dialect="anthropic").alias == "chat"
    assert resolve(snap, "claude-3-5-haiku-latest", dialect="anthropic").alias == "coder"
    with pytest.raises(ApiError):
        resolve(snap, "claude-sonnet-4-5", dialect="openai")


def test_exact_alias_wins_over_claude_tier() -> None:
    snap = snapshot(settings=GlobalSettings(claude_sonnet_alias="chat"))
    snap.clusters[0].pools["claude-sonnet-4-5"] = pool("claude-sonnet-4-5", "special", "m3")
    assert resolve(snap, "claude-sonnet-4-5", dialect="anthropic").model == "special"


def test_a_node_that_reports_nothing_loaded_after_the_load_is_skipped() -> None:
    from isthmus_contracts.control import NodeLoad

    restarted = node("m1").model_copy(update={"last_seen": NOW + timedelta(seconds=10), "load": NodeLoad()})
    raced = node("m2").model_copy(update={"last_seen": NOW + timedelta(seconds=1), "load": NodeLoad()})
    snap = snapshot(nodes=[restarted, raced, node("m3")], now=NOW + timedelta(seconds=11))
    assert [n.node_id for n in resolve(snap, "chat").nodes] == ["m2"]


def _solo_cluster_snapshot(*nodes: Node) -> Snapshot:
    """One pool served by m1 and m2, no fallback: what a cluster looks like while its nodes restart."""
    cluster = Cluster(cluster_id="argo", pools={"chat": pool("chat", "mlx-community/Qwen3-4B-4bit", "m1", "m2")})
    return Snapshot(clusters=[cluster], nodes=list(nodes), now=NOW + timedelta(seconds=30), stale_seconds=15)


def test_a_pool_whose_up_nodes_are_loading_is_503_model_loading_with_retry_after() -> None:
    from isthmus_contracts.control import NodeLoad

    # given a pool whose nodes restarted: one heartbeats "loading the pool's model", the other is down
    loading = node("m1").model_copy(update={"last_seen": NOW + timedelta(seconds=29),
                                            "load": NodeLoad(loading_model="mlx-community/Qwen3-4B-4bit")})
    down = node("m2").model_copy(update={"last_seen": NOW})
    # when the pool is asked for; then it is a 503 model_loading with Retry-After, naming the loading node
    with pytest.raises(ApiError) as err:
        resolve(_solo_cluster_snapshot(loading, down), "chat")
    assert (err.value.status, err.value.code) == (503, "model_loading")
    assert int(err.value.headers["Retry-After"]) >= 1 and "m1" in err.value.message
    # while a "loading" heartbeat sent just as the pool's own load ran is not taken for a restart: still a target
    raced = loading.model_copy(update={"last_seen": NOW + timedelta(seconds=1)})
    snap = _solo_cluster_snapshot(raced).model_copy(update={"now": NOW + timedelta(seconds=2)})
    assert [n.node_id for n in resolve(snap, "chat").nodes] == ["m1"]


def test_a_pool_with_no_node_up_is_503_no_ready_nodes_with_retry_after() -> None:
    # given a pool whose every node missed its heartbeats (none loading)
    snap = _solo_cluster_snapshot(node("m1").model_copy(update={"last_seen": NOW}),
                                  node("m2").model_copy(update={"last_seen": NOW}))
    # when the pool is asked for; then a 503 no_ready_nodes that still says when to come back
    with pytest.raises(ApiError) as err:
        resolve(snap, "chat")
    assert (err.value.status, err.value.code) == (503, "no_ready_nodes")
    assert int(err.value.headers["Retry-After"]) >= 1
