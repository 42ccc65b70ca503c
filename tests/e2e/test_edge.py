"""The edge as a real subprocess over real HTTP, in both modes."""

from __future__ import annotations

import httpx
import pytest

from tests.conftest import SharedEdges

pytestmark = pytest.mark.e2e


@pytest.fixture(scope="module", params=["asgi", "lambda"])
def edge(request: pytest.FixtureRequest, shared_edges: SharedEdges) -> str:
    return shared_edges.get(request.param)  # the plain edge (its asgi one serves test_load_jobs too)


def test_health_and_readiness(edge: str) -> None:
    r = httpx.get(f"{edge}/health")
    assert r.status_code == 200
    assert r.json()["status"] in {"idle", "busy"}
    assert "version" in r.json()
    assert r.headers["x-request-id"]
    ready = httpx.get(f"{edge}/health/readiness")
    assert ready.status_code == 200, ready.text


@pytest.mark.parametrize(
    ("method", "path", "shape"),
    [
        ("GET", "/nope", "detail"),
        ("GET", "/v1/chat/nope", "openai"),
        ("DELETE", "/v1/messages/nope", "anthropic"),
        ("GET", "/api/v1/messages/nope", "anthropic"),
    ],
)
def test_unknown_routes_404_in_the_callers_dialect(edge: str, method: str, path: str, shape: str) -> None:
    r = httpx.request(method, f"{edge}{path}")
    assert r.status_code == 404
    body = r.json()
    if shape == "detail":
        assert body == {"detail": f"No route for {method} {path}"}
    elif shape == "openai":
        assert body["error"]["code"] == "not_found" and path in body["error"]["message"]
    else:
        assert body["type"] == "error" and body["error"]["type"] == "not_found_error"
