"""CoeOS: axis pick (header, decider, default) and model pick (pin, best score, cheaper tie, references)."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime
from typing import Any

import pytest

from isthmus.control.models import Cluster, GlobalSettings, Node, Pool, Snapshot
from isthmus.errors import ApiError
from isthmus.routing import coeos
from isthmus.services.inference.routing import RoutingService


def config(**kw: Any) -> coeos.CoeosConfig:
    base: dict[str, Any] = {
        "enabled": True, "default_axis": "chat", "decider_model": "small",
        "axes": [{"key": "chat", "label": "Chat"}, {"key": "code", "label": "Code", "thinking": True,
                                                     "reasoning_effort": "high"}],
        "models": [{"id": "big", "cost_per_test": "0.02"}, {"id": "small", "cost_per_test": "0.01"}],
        "score_table": {"schema": "tmb-score-table/1", "models": {
            "big": {"axes": {"chat": {"score": 0.7, "n": 10}, "code": {"score": 0.9, "n": 10}}},
            "small": {"axes": {"chat": {"score": 0.7, "n": 10}, "code": {"score": 0.5, "n": 10}}},
            "gpt-ref": {"axes": {"chat": {"score": 0.99}, "code": {"score": 0.99}}, "reference": True},
        }, "reference": {"opus-ref": {"axes": {"chat": {"score": 1.0}, "code": {"score": 1.0}}}}},
    }
    base.update(kw)
    return coeos.CoeosConfig.model_validate(base)


def everything(_: str) -> bool:
    return True


def test_best_score_wins() -> None:
    cfg = config()
    assert coeos.pick_model(cfg, cfg.axis("code"), everything)[:2] == ("big", "score")  # type: ignore[arg-type]


def test_tie_goes_to_the_cheaper() -> None:
    cfg = config()
    assert coeos.pick_model(cfg, cfg.axis("chat"), everything)[0] == "small"  # type: ignore[arg-type]


def test_reference_rows_are_never_picked() -> None:
    cfg = config()
    picked = {coeos.pick_model(cfg, a, everything)[0] for a in cfg.axes}
    assert picked.isdisjoint({"gpt-ref", "opus-ref"})


def test_operator_pin_wins_over_scores() -> None:
    cfg = config(axes=[{"key": "chat", "model": "pinned"}, {"key": "code"}])
    assert coeos.pick_model(cfg, cfg.axis("chat"), everything)[:2] == ("pinned", "pin")  # type: ignore[arg-type]


def test_unservable_pin_is_503_not_a_fallback() -> None:
    cfg = config(axes=[{"key": "chat", "model": "pinned"}])
    with pytest.raises(ApiError) as err:
        coeos.pick_model(cfg, cfg.axis("chat"), lambda m: m != "pinned")  # type: ignore[arg-type]
    assert err.value.status == 503


def test_no_servable_scored_model_is_503() -> None:
    cfg = config()
    with pytest.raises(ApiError) as err:
        coeos.pick_model(cfg, cfg.axis("code"), lambda m: False)  # type: ignore[arg-type]
    assert err.value.status == 503


def test_parse_axis_reads_the_decider_line() -> None:
    cfg = config()
    assert coeos.parse_axis(cfg, "Sure.\nAXIS: code")
    assert coeos.parse_axis(cfg, "AXIS: nope") is None


# ---- the routing service around it (in-memory ports) ----------------------------------------------------
class MemoryStore:
    def __init__(self, snap: Snapshot, docs: dict[str, Any]) -> None:
        self.snap, self.docs = snap, docs

    def list_clusters(self) -> list[Cluster]:
        return self.snap.clusters

    def list_nodes(self) -> list[Node]:
        return self.snap.nodes

    def get_settings(self) -> GlobalSettings:
        return self.snap.settings

    def get_doc(self, name: str) -> Any:
        return self.docs.get(name)

    def put_doc(self, name: str, value: Any) -> None:
        self.docs[name] = value


class NoSessions:
    def get(self, *_: Any) -> None:
        return None

    def put(self, *_: Any) -> None:
        return None


class ScriptedDecider:
    def __init__(self, answer: str) -> None:
        self.answer = answer
        self.prompts: list[str] = []

    async def decide(self, base_urls: list[str], model: str, prompt: str) -> str:
        self.prompts.append(prompt)
        return self.answer


def service(cfg: coeos.CoeosConfig, decider: ScriptedDecider | None, *, loaded: tuple[str, ...] = ("big", "small")
            ) -> RoutingService:
    now = datetime.now(UTC)
    nodes = [Node(node_id=f"n-{m}", cluster_id="lab", base_url=f"http://{m}:1", last_seen=now) for m in loaded]
    pools = {m: Pool(alias=m, model=f"models/{m}", nodes=[f"n-{m}"], loaded_at=now) for m in loaded}
    snap = Snapshot(clusters=[Cluster(cluster_id="lab", pools=pools)], nodes=nodes)
    store = MemoryStore(snap, {"coeos": cfg.model_dump(mode="json", by_alias=True)})
    return RoutingService(store, NoSessions(), decider)  # type: ignore[arg-type]


def route(svc: RoutingService, **kw: Any) -> Any:
    return asyncio.run(svc.route("coeos", last_user_message="write a quicksort", **kw))


def test_header_forces_the_axis_and_injects_its_thinking() -> None:
    decider = ScriptedDecider("AXIS: chat")
    r = route(service(config(), decider), axis_header="code")
    assert (r.coeos_axis, r.alias, r.enable_thinking, r.reasoning_effort) == ("code", "big", True, "high")
    assert decider.prompts == []  # the header wins without asking the decider


def test_decider_picks_the_axis() -> None:
    decider = ScriptedDecider("AXIS: code")
    r = route(service(config(), decider))
    assert (r.coeos_axis, r.alias, r.requested, r.via) == ("code", "big", "CoeOS", "coeos")
    assert "write a quicksort" in decider.prompts[0] and "- code: Code" in decider.prompts[0]


def test_default_axis_when_the_decider_is_not_servable() -> None:
    decider = ScriptedDecider("AXIS: code")
    r = route(service(config(), decider, loaded=("big",)))
    assert (r.coeos_axis, r.alias) == ("chat", "big")
    assert decider.prompts == []


def test_unservable_pick_is_503_from_the_service() -> None:
    cfg = config(axes=[{"key": "chat", "model": "gone"}], default_axis="chat")
    with pytest.raises(ApiError) as err:
        route(service(cfg, None))
    assert err.value.status == 503


def test_decisions_are_recorded() -> None:
    from isthmus.services.inference.routing import recent_decisions

    svc = service(config(), ScriptedDecider("AXIS: code"))
    route(svc, axis_header="chat")
    assert recent_decisions()[-1]["axis"] == "chat" and recent_decisions()[-1]["axis_source"] == "header"
    assert svc.store.get_doc("coeos_decisions")[-1]["model"] == "small"


def test_score_rows_may_come_as_lists_and_the_schema_is_checked() -> None:
    table = {"schema": "tmb-score-table/1",
             "models": [{"model": "m1", "axes": {"chat": {"score": 0.5, "n": 3}}, "cost_per_test": "0.5"}],
             "reference": [{"model": "ref", "axes": {"chat": {"score": 0.9}}}]}
    cfg = config(score_table=table)
    assert coeos.pick_model(cfg, cfg.axis("chat"), everything)[0] == "m1"  # type: ignore[arg-type]
    with pytest.raises(ValueError):
        config(score_table={**table, "schema": "other/2"})


def test_snapshot_is_reused_within_the_cache_window() -> None:
    svc = service(config(), None)
    calls: list[int] = []
    original = svc.store.list_clusters

    def counted() -> list[Cluster]:
        calls.append(1)
        return original()

    svc.store.list_clusters = counted  # type: ignore[method-assign]
    svc.cache_seconds = 60
    asyncio.run(svc.snapshot())
    asyncio.run(svc.snapshot())
    assert len(calls) == 1
    svc.cache_seconds, svc._cached = 0, None
    asyncio.run(svc.snapshot())
    asyncio.run(svc.snapshot())
    assert len(calls) == 3
