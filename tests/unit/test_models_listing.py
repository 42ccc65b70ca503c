"""/v1/models entries (pure): servable only by default, telemak + cloud + CoeOS, on-disk with ready:false."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest

from isthmus.control.models import Cluster, Node, Pool, Snapshot
from isthmus.errors import ApiError
from isthmus.routing.coeos import CoeosConfig
from isthmus.routing.resolver import Route
from isthmus.services.inference.models_listing import get_model, list_models
from isthmus.services.inference.routing import apply_route_defaults
from isthmus_contracts.control import ModelOnDisk
from isthmus_contracts.internal import InternalRequest

NOW = datetime.now(UTC)
X_KEYS = {"ready", "loaded", "backend", "pool", "nodes", "alias_for", "kind", "context_length", "quantization",
          "supports_tools", "supports_vision", "supports_streaming"}


def snap(age_s: float = 1) -> Snapshot:
    return Snapshot(
        clusters=[Cluster(cluster_id="argo", pools={"chat": Pool(alias="chat", model="org/Qwen3", nodes=["n1"],
                                                                 loaded_at=NOW)}),
                  Cluster(cluster_id="telecode", kind="telemak", url="http://studio:9000", models=["q32"],
                          api_key="sk-secret")],
        nodes=[Node(node_id="n1", cluster_id="argo", base_url="http://n1", last_seen=NOW - timedelta(seconds=age_s),
                    models=[ModelOnDisk(name="org/Qwen3", size_bytes=10, context_length=32768, quantization="4bit"),
                            ModelOnDisk(name="other", size_bytes=5)])],
        cloud_aliases=["or:claude-haiku"], now=NOW)


def test_servable_entries_with_the_x_odyssai_block() -> None:
    entries = {e["id"]: e for e in list_models(snap(), CoeosConfig(enabled=True))}
    assert set(entries) == {"chat", "org/Qwen3", "telecode", "telecode:q32", "or:claude-haiku", "CoeOS"}
    for e in entries.values():
        assert e["object"] == "model" and isinstance(e["created"], int) and isinstance(e["owned_by"], str)
        assert set(e["x_odyssai"]) >= X_KEYS and e["root"]
    assert entries["chat"]["x_odyssai"]["context_length"] == 32768
    assert entries["chat"]["x_odyssai"]["alias_for"] == "org/Qwen3"
    assert entries["telecode"]["x_odyssai"]["backend"] == "telemak"
    assert "sk-secret" not in repr(entries)


def test_down_pools_and_disabled_coeos_are_not_listed() -> None:
    ids = {e["id"] for e in list_models(snap(age_s=999), CoeosConfig(enabled=False))}
    assert ids == {"telecode", "telecode:q32", "or:claude-haiku"}


def test_include_unloaded_adds_on_disk_models_not_ready() -> None:
    entries = {e["id"]: e for e in list_models(snap(), None, include_unloaded=True)}
    assert entries["other"]["x_odyssai"]["ready"] is False and entries["other"]["x_odyssai"]["nodes"] == ["n1"]
    assert entries["chat"]["x_odyssai"]["ready"] is True


def test_get_model_by_id_with_a_slash_or_404() -> None:
    assert get_model(snap(), None, "org/Qwen3")["root"] == "org/Qwen3"
    with pytest.raises(ApiError) as err:
        get_model(snap(), None, "nope/nope")
    assert err.value.status == 404


def test_route_defaults_never_override_the_client() -> None:
    route = Route(backend="mlx", requested="CoeOS", model="org/Qwen3", enable_thinking=True, reasoning_effort="high")
    base = {"model": "CoeOS", "messages": [{"role": "user", "content": [{"type": "text", "text": "hi"}]}]}
    filled = apply_route_defaults(InternalRequest.model_validate(base), route)
    assert (filled.model, filled.enable_thinking, filled.reasoning_effort) == ("org/Qwen3", True, "high")
    kept = apply_route_defaults(InternalRequest.model_validate({**base, "enable_thinking": False,
                                                                "reasoning_effort": "minimal"}), route)
    assert (kept.enable_thinking, kept.reasoning_effort) == (False, "minimal")
