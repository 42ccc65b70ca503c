"""Issue 14: hostile input answers 4xx in the caller's dialect, never 500, never library text.

The probe's requests replayed against the ASGI apps (the parsing path every function and the agent share).
"""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel
from starlette.requests import Request
from starlette.responses import Response
from starlette.testclient import TestClient
from starlette.types import Message, Scope

from isthmus.adapters.cloud.protocols import ProtocolRegistry
from isthmus.dialects import anthropic_messages, openai_chat, openai_responses
from isthmus.errors import ApiError, Dialect, allowed_methods
from isthmus.services.cloud.providers import ProviderService
from isthmus.services.control.clusters import ClusterConfig, LoadBody
from isthmus.services.tenancy.budgets import CreateBudget
from isthmus.services.tenancy.keys import CreateKey, UpdateKey
from isthmus.services.tenancy.pricing import SetPricing
from isthmus.services.tenancy.users import CreateUser
from isthmus.validation import validate
from isthmus.web import create_app, json_response, parse_body, read_json, versioned
from local_runtime.template import functions_with_routes, load_template

CHAT = {"model": "m", "messages": [{"role": "user", "content": "hi"}]}


class Anything(BaseModel):
    model: str = ""


async def echo(request: Request) -> Response:
    return json_response({"ok": isinstance(await read_json(request), dict)})


async def typed(request: Request) -> Response:
    return json_response((await parse_body(request, Anything)).model_dump())


def client() -> TestClient:
    routes = [*versioned("/chat/completions", echo, ["POST"]), *versioned("/messages", echo, ["POST"]),
              *versioned("/keys", echo, ["POST"]), *versioned("/responses", typed, ["POST"])]
    return TestClient(create_app(routes, service="test"), raise_server_exceptions=False)


def raw_post(path: str, body: bytes) -> Any:
    return client().post(path, content=body, headers={"content-type": "application/json"})


def assert_shape(path: str, r: Any, status: int) -> None:
    assert r.status_code == status, r.text
    body = r.json()
    if "/messages" in path:
        assert body["type"] == "error" and body["error"]["message"]
    elif "/keys" in path:
        assert isinstance(body["detail"], str | list)
    else:
        assert body["error"]["message"] and body["error"]["type"] == "invalid_request_error"
    assert "Traceback" not in r.text and "pybind" not in r.text and "decimal." not in r.text


# ---- class 2: what used to be a 500 -------------------------------------------------------------------------

@pytest.mark.parametrize("path", ["/v1/chat/completions", "/api/v1/messages", "/v1/keys"])
@pytest.mark.parametrize(("name", "body"), [
    ("nested 10,000 deep", b"[" * 10_000 + b"]" * 10_000),
    ("nested 100,000 deep", b'{"a":' * 100_000 + b"1" + b"}" * 100_000),
    ("5000-digit integer", b'{"model": 1' + b"0" * 5000 + b"}"),
    ("seed 10**30", b'{"seed": 1' + b"0" * 30 + b"}"),
    ("lone surrogate", b'{"key_name": "\\ud800"}'),
    ("lone surrogate in a key", b'{"\\udfff": 1}'),
    ("infinity", b'{"price": 1e999}'),
    ("NaN", b'{"price": NaN}'),
    ("not UTF-8", b'{"a": "\xff"}'),
])
def test_malformed_json_is_a_400_in_the_dialect(path: str, name: str, body: bytes) -> None:
    # given one of the probe's bodies, when posted, then a 400 naming the problem in the caller's dialect
    assert_shape(path, raw_post(path, body), 400)


def test_bounded_json_still_parses() -> None:
    # given the largest shapes still allowed: 64 levels, a 19-digit integer, astral-plane text
    ok = b'{"a":' + b"[" * 62 + b"9223372036854775807" + b"]" * 62 + b', "t": "\\ud83d\\ude00 \xe2\x82\xac"}'
    assert raw_post("/v1/chat/completions", ok).json() == {"ok": True}


def test_inference_fields_are_bounded_before_they_reach_a_backend_or_the_store() -> None:
    for body, param in (({**CHAT, "seed": 2 ** 63}, None), ({**CHAT, "seed": -1}, "seed"),
                        ({**CHAT, "model": "m" * 1_000_000}, "model"), ({**CHAT, "stream": "yes"}, "stream"),
                        ({**CHAT, "session_id": "s" * 100_000}, "session_id")):
        with pytest.raises(ApiError) as err:
            openai_chat.parse(body)
        assert err.value.status == 400 and (param is None or err.value.param == param)
    with pytest.raises(ApiError) as err:
        openai_responses.parse({"model": "m", "input": "hi", "previous_response_id": "r" * 100_000})
    assert err.value.param == "previous_response_id"
    with pytest.raises(ApiError) as err:
        anthropic_messages.parse({**CHAT, "max_tokens": 5, "stream": "yes"})
    assert err.value.param == "stream"


def test_records_are_bounded_by_dynamodb_and_http_rules() -> None:
    deep: dict[str, Any] = {}
    node = deep
    for _ in range(40):
        node["a"] = {}
        node = node["a"]
    refused: list[tuple[type[BaseModel], dict[str, Any]]] = [
        (CreateKey, {"key_name": "k" * 1_000_000}), (CreateKey, {"key_name": "a\x00b"}),
        (CreateKey, {"expires_at": -1}), (CreateKey, {"expires_at": "2001-01-01T00:00:00Z"}),
        (CreateKey, {"metadata": deep}), (CreateKey, {"metadata": {"blob": "x" * 20_000}}),
        (CreateKey, {"user_id": "../../x"}), (CreateKey, {"allowed_models": ["m"] * 1000}),
        (UpdateKey, {"is_active": "yes"}), (CreateUser, {"user_id": "../../x"}),
        (CreateUser, {"user_id": "u", "alias": "a" * 100_000}), (CreateUser, {"user_id": "a\x00"}),
        (CreateBudget, {"budget_id": "../b"}), (CreateBudget, {"max_budget": 1e308}),
        (SetPricing, {"model_key": "m", "input_price_per_million": 1e308, "output_price_per_million": 1}),
        (SetPricing, {"model_key": "m" * 1_000_000, "input_price_per_million": 1, "output_price_per_million": 1}),
        (SetPricing, {"model_key": "m", "input_price_per_million": "NaN", "output_price_per_million": 1}),
        (SetPricing, {"model_key": "m", "input_price_per_million": 1e-300, "output_price_per_million": 1}),
        (LoadBody, {"model": "m", "alias": "../../x"}), (LoadBody, {"model": "m", "alias": "a/./b"}),
        (ClusterConfig, {"api_key": "sk\r\nX-Injected: 1"}), (ClusterConfig, {"url": "http://x\r\n"}),
    ]
    accepted: list[tuple[type[BaseModel], dict[str, Any]]] = [
        (CreateUser, {"user_id": "ada+ci@example.com"}), (LoadBody, {"model": "m", "alias": "or:org/m-1"}),
        (SetPricing, {"model_key": "m", "input_price_per_million": 1 / 3, "output_price_per_million": 0.1})]
    for model, body in accepted:
        validate(model, body, Dialect.CONTROL)
    for model, body in refused:
        with pytest.raises(ApiError) as err:
            validate(model, body, Dialect.CONTROL)
        assert err.value.status == 422, (model, body)
        assert isinstance(err.value.detail, list)


@pytest.mark.parametrize("body", [
    {"protocol": "openai", "api_base": "http://x", "headers": {"X-A": "v\r\nInjected: 1"}},
    {"protocol": "openai", "api_base": "http://x", "headers": {"X-A": "v" * 500_000}},
    {"protocol": "openai", "api_base": "http://x", "headers": {"Bad Name": "v"}},
    {"protocol": "openai", "api_base": "http://x", "api_key": "sk\r\nX: y"},
    {"protocol": "openai", "api_base": "http://x", "published": [{"alias": "../../x", "upstream_model": "m"}]},
    {"protocol": "openai", "api_base": "http://x\r\n", "published": []},
    ["not", "an", "object"],
])
def test_provider_headers_and_aliases_are_refused_before_anything_is_stored(body: Any) -> None:
    # given a service whose store would fail the test if reached
    service = ProviderService(store=None, sealer=None, protocols=ProtocolRegistry())  # type: ignore[arg-type]
    # when the PUT body breaks HTTP's rules or the alias charset, then a 400 and no store call
    with pytest.raises(ApiError) as err:
        asyncio.run(service.put("p1", body))
    assert err.value.status == 400


# ---- class 4: body size -------------------------------------------------------------------------------------

def test_a_body_over_the_limit_is_refused_on_content_length_without_being_read() -> None:
    # given an app, and a client that declares 50 MB but whose body would fail the test if read
    app = create_app(versioned("/chat/completions", echo, ["POST"]), service="test")
    sent: list[Message] = []
    reads = 0

    async def receive() -> Message:
        nonlocal reads
        reads += 1
        return {"type": "http.request", "body": b"x" * 65536, "more_body": True}

    async def send(message: Message) -> None:
        sent.append(message)

    scope: Scope = {"type": "http", "method": "POST", "path": "/v1/chat/completions", "raw_path": b"",
                    "query_string": b"", "http_version": "1.1", "scheme": "http", "server": ("t", 80),
                    "client": ("127.0.0.1", 1),
                    "headers": [(b"content-length", str(50 * 1024 * 1024).encode()),
                                (b"content-type", b"application/json")]}

    async def run() -> None:
        await app(scope, receive, send)

    asyncio.run(run())
    # then 413 in the OpenAI shape, and not one chunk was read
    assert sent[0]["status"] == 413 and reads == 0
    assert b"request_too_large" in sent[1]["body"]


def test_a_chunked_body_is_cut_off_once_it_passes_the_limit(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_MAX_CONTROL_BODY_BYTES", "1000")

    def chunks() -> Any:
        for _ in range(1000):  # 1000 x 100 bytes, no Content-Length
            yield b" " * 100

    r = client().post("/v1/keys", content=chunks(), headers={"content-type": "application/json"})
    assert r.status_code == 413 and "ISTHMUS_MAX_CONTROL_BODY_BYTES" in r.json()["detail"]
    r = client().post("/v1/messages", content=b"{}" + b" " * 2000)  # inference routes keep their own limit
    assert r.status_code == 200


def test_control_strings_are_bounded_far_below_the_item_limit() -> None:
    assert_shape("/v1/keys", raw_post("/v1/keys", b'{"key_name": "' + b"k" * 100_000 + b'"}'), 400)


def test_a_path_too_long_to_be_a_store_key_is_414() -> None:
    r = client().get("/v1/responses/" + "r" * 10_000)
    assert r.status_code == 414 and r.json()["error"]["code"] == "uri_too_long"


def test_a_megabyte_header_is_431_in_the_dialect() -> None:
    r = client().post("/v1/messages", json={}, headers={"X-Big": "v" * 1024 * 1024})
    assert r.status_code == 431 and r.json()["type"] == "error"
    assert client().post("/v1/messages", json={}, headers={"X-Fine": "v" * 8192}).status_code == 200


# ---- class 8: methods and unknown paths ---------------------------------------------------------------------

@pytest.mark.parametrize(("method", "path", "status", "shape"), [
    ("GET", "/v1/chat/completions", 405, "openai"),
    ("PUT", "/api/v1/responses", 405, "openai"),
    ("GET", "/v1/messages", 405, "anthropic"),
    ("DELETE", "/v1/messages/count_tokens", 405, "anthropic"),
    ("POST", "/v1/responses/resp_1", 405, "openai"),
    ("POST", "/v1/models", 405, "openai"),
    ("GET", "/v1/nope", 404, "openai"),
    ("POST", "/api/v1/assistants/x", 404, "openai"),
    ("GET", "/v1/messages/nope", 404, "anthropic"),
    ("GET", "/v1/keys/a/b/c", 404, "detail"),
    ("GET", "/nope", 404, "detail"),
])
def test_the_catch_all_answers_405_and_404_in_the_dialect(method: str, path: str, status: int, shape: str) -> None:
    from functions.health.routes import app

    r = TestClient(app).request(method, path)
    assert r.status_code == status
    body = r.json()
    if shape == "openai":
        assert body["error"]["code"] == ("method_not_allowed" if status == 405 else "not_found")
    elif shape == "anthropic":
        assert body["type"] == "error" and body["error"]["type"] in {"invalid_request_error", "not_found_error"}
    else:
        assert set(body) == {"detail"}
    if status == 405:
        assert method not in r.headers["allow"]


def test_the_inference_method_table_matches_the_template() -> None:
    # given the inference function's routes in template.yaml, then the catch-all's table allows exactly those
    spec = next(s for s in functions_with_routes(load_template()) if s.logical_id == "InferenceFunction")
    for route in spec.routes:
        concrete = route.path.replace("{response_id}", "resp_1")
        assert route.method in (allowed_methods(concrete) or ()), route.route_key if hasattr(route, "route_key") \
            else route.path
