"""The sample API Gateway events in events/ go through the real Mangum handlers (the Lambda path)."""

from __future__ import annotations

import asyncio
import importlib
import json
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_runtime.edge.lambda_bridge import LambdaContext
from local_runtime.edge.routes import RouteTable
from local_runtime.template import functions_with_routes, load_template
from tests.support.ddb_tables import moto_tables

EVENTS = Path(__file__).resolve().parents[2] / "events"

# Expected status per event. Groups whose service has not landed answer an honest 501 (see their issue).
EXPECTED = {
    "health": 200,
    "health_readiness": 200,
    "unknown_route": 404,
    "inference_chat": 401,  # keyed mode (the master key is set) and the sample key does not exist
    "inference_messages": 401,
    "models_list": 401,  # keyed mode is keyed everywhere: the listing needs a valid key too
    "keys_create": 200,
    "users_list": 200,
    "budgets_create": 200,
    "pricing_set": 200,
    "usage_list": 200,
    "files_list": 401,  # keyed mode and the sample key does not exist
    "batches_list": 401,  # keyed mode and the sample key does not exist
    "admin_load": 404,  # no cluster "default" in an empty store: an honest 404
}


@pytest.fixture(name="moto_tables")
def moto_tables_fixture(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    # The control-surface events carry this master key (their source IP is not loopback).
    monkeypatch.setenv("ISTHMUS_MASTER_KEY", "sk-master-EXAMPLE")
    with moto_tables(monkeypatch):
        yield


def route_table() -> RouteTable[str]:
    table: RouteTable[str] = RouteTable()
    for spec in functions_with_routes(load_template()):
        for route in spec.routes:
            table.add(route.method, route.path, spec.module)
    return table


def test_every_event_file_has_an_expectation() -> None:
    assert {p.stem for p in EVENTS.glob("*.json")} == set(EXPECTED)


@pytest.mark.parametrize("name", sorted(EXPECTED))
def test_event_through_its_handler(name: str, moto_tables: None) -> None:
    # given a recorded API Gateway v2 event
    event = json.loads((EVENTS / f"{name}.json").read_text())
    found = route_table().match(event["requestContext"]["http"]["method"], event["rawPath"])
    assert found is not None
    route, _ = found
    assert route.route_key == event["routeKey"]
    handler = importlib.import_module(route.target).handler
    # when the function's Lambda handler gets it (on a thread with its own loop, as in a sandbox)
    asyncio.set_event_loop(asyncio.new_event_loop())
    context = LambdaContext(function_name=route.target, aws_request_id=event["requestContext"]["requestId"])
    result = handler(event, context)
    # then it answers the expected status, JSON, and the request id of the invoke
    assert result["statusCode"] == EXPECTED[name], result["body"]
    assert result["headers"]["content-type"] == "application/json"
    assert result["headers"]["x-request-id"] == event["requestContext"]["requestId"]
    json.loads(result["body"])
