"""The app factory every function uses: request ids, dialect-shaped errors, one log line per crash."""

from __future__ import annotations

import json
import logging

import pytest
from pydantic import BaseModel, Field
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient

from isthmus.web import create_app, json_response, parse_body, versioned


class Body(BaseModel):
    name: str
    count: int = Field(ge=1)


async def echo(request: Request) -> Response:
    body = await parse_body(request, Body)
    return json_response(body.model_dump())


async def boom(request: Request) -> Response:
    raise RuntimeError("secret internals")


def make_client() -> TestClient:
    routes = [*versioned("/keys", echo, ["POST"]), *versioned("/chat/completions", echo, ["POST"]),
              *versioned("/messages", boom, ["POST"])]
    return TestClient(create_app(routes, service="test"), raise_server_exceptions=False)


def test_routes_are_served_under_v1_and_api_v1() -> None:
    client = make_client()
    for prefix in ("/v1", "/api/v1"):
        assert client.post(f"{prefix}/keys", json={"name": "a", "count": 2}).json() == {"name": "a", "count": 2}


def test_a_caller_request_id_is_echoed_and_one_is_made_otherwise() -> None:
    client = make_client()
    given = client.post("/v1/keys", json={"name": "a", "count": 1}, headers={"x-request-id": "req-123"})
    assert given.headers["x-request-id"] == "req-123"
    made = client.post("/v1/keys", json={"name": "a", "count": 1})
    assert len(made.headers["x-request-id"]) == 32


def test_validation_failure_names_the_field_in_each_dialect() -> None:
    client = make_client()
    # control surface: 422 with FastAPI-style detail
    r = client.post("/v1/keys", json={"name": "a", "count": 0})
    assert r.status_code == 422
    assert r.json()["detail"][0]["loc"] == ["body", "count"]
    # OpenAI dialect: 400 with param
    r = client.post("/v1/chat/completions", json={"count": 1})
    assert r.status_code == 400
    assert r.json()["error"]["param"] == "name"


@pytest.mark.parametrize(("body", "expected"), [(b"", "empty"), (b"{nope", "not valid JSON"), (b"[1]", "object")])
def test_bad_json_is_a_400_not_a_500(body: bytes, expected: str) -> None:
    r = make_client().post("/v1/chat/completions", content=body, headers={"content-type": "application/json"})
    assert r.status_code == 400
    assert expected in r.json()["error"]["message"]


def test_unknown_route_and_wrong_method_answer_in_the_dialect() -> None:
    client = make_client()
    assert client.get("/v1/messages/nope").json()["type"] == "error"
    r = client.get("/v1/keys")
    assert r.status_code == 405
    assert "detail" in r.json()


def test_unhandled_exception_is_500_with_request_id_and_logged_once(caplog: pytest.LogCaptureFixture) -> None:
    # given a route that crashes
    client = make_client()
    with caplog.at_level(logging.ERROR):
        r = client.post("/v1/messages", json={}, headers={"x-request-id": "crash-1"})
    # then the caller gets a dialect-shaped 500 naming the request id, without the internals
    assert r.status_code == 500
    body = r.json()
    assert body["type"] == "error" and "crash-1" in body["error"]["message"]
    assert "secret internals" not in json.dumps(body)
    # and exactly one log record carries the traceback, stamped with the request id
    crashes = [rec for rec in caplog.records if rec.exc_info]
    assert len(crashes) == 1
    assert getattr(crashes[0], "request_id", None) == "crash-1"


async def store_down(request: Request) -> Response:
    from botocore.exceptions import ReadTimeoutError

    raise ReadTimeoutError(endpoint_url="http://127.0.0.1:1/")


def test_a_store_error_a_service_did_not_map_is_a_503_with_retry_after_in_the_dialect() -> None:
    # given a control route and an inference route whose service lets the store client's timeout escape
    routes = [*versioned("/keys", store_down, ["POST"]), *versioned("/messages", store_down, ["POST"])]
    client = TestClient(create_app(routes, service="test"), raise_server_exceptions=False)
    # when each is called
    control = client.post("/v1/keys", json={})
    anthropic = client.post("/v1/messages", json={})
    # then both are 503 + Retry-After (try again), not 500 (a bug), each in its caller's shape
    assert control.status_code == anthropic.status_code == 503
    assert control.headers["retry-after"] and anthropic.headers["retry-after"]
    assert "store" in control.json()["detail"]
    assert anthropic.json()["type"] == "error" and anthropic.json()["error"]["type"] == "overloaded_error"
