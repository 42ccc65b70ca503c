"""A telemak cluster's upstream protocol (issue 18, part 3), pure: the route carries it, a record stored before it
existed reads as the agent protocol, and an ``openai`` upstream becomes the cloud OpenAI-protocol client pointed at
``{url}/v1`` with the cluster's key, holding by bytes (no exact prompt count: not our tokenizer)."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from isthmus.adapters.cloud.openai_provider import OpenAIProviderBackend
from isthmus.backends.control_plane import ControlPlaneResolver
from isthmus.backends.pool import PoolBackend
from isthmus.control.models import Cluster, Snapshot
from isthmus.routing.resolver import resolve
from isthmus.services.control.clusters import ClusterConfig

NOW = datetime(2026, 11, 30, 12, 0, tzinfo=UTC)


def snapshot(protocol: str | None) -> Snapshot:
    extra = {"protocol": protocol} if protocol else {}
    cluster = Cluster.model_validate({"cluster_id": "studio", "kind": "telemak", "url": "http://mac:8080",
                                      "api_key": "sk-up", "models": ["qwen3-8b"], **extra})
    return Snapshot(clusters=[cluster], now=NOW)


def test_a_record_without_protocol_is_an_agent_upstream() -> None:
    route = resolve(snapshot(None), "studio")
    assert route.upstream_protocol == "agent"
    backend = ControlPlaneResolver.__new__(ControlPlaneResolver)._backend(route, None)
    assert isinstance(backend, PoolBackend)


def test_an_openai_upstream_gets_the_openai_client_with_the_key() -> None:
    route = resolve(snapshot("openai"), "studio:qwen3-8b")
    backend = ControlPlaneResolver.__new__(ControlPlaneResolver)._backend(route, None)
    assert isinstance(backend, OpenAIProviderBackend) and backend.name == "telemak:studio"
    target = backend.target
    assert (target.api_base, target.upstream_model, target.api_key) == ("http://mac:8080/v1", "qwen3-8b", "sk-up")
    assert backend._headers() == {"Authorization": "Bearer sk-up"}
    assert getattr(backend, "prompt_count", None) is None  # so the hold is the byte bound, as for a cloud alias
    assert "sk-up" not in repr(route) and "sk-up" not in repr(target)


def test_an_unknown_protocol_is_refused() -> None:
    with pytest.raises(ValueError):
        ClusterConfig.model_validate({"kind": "telemak", "url": "http://mac:8080", "protocol": "grpc"})
