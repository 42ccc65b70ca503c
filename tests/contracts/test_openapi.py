"""The OpenAPI document: valid OpenAPI 3.1, the same routes and methods as template.yaml and as each function's own
Starlette routes, and served by the edge at /openapi.json (three paths) with /docs rendering it from local assets."""

from __future__ import annotations

import importlib
import re
import shutil
from collections.abc import Iterator
from typing import Any

import httpx
import pytest
from openapi_spec_validator import validate
from starlette.routing import Match, Route

from isthmus import openapi
from local_runtime.docs_assets import ensure_swagger_ui
from local_runtime.edge.routes import RouteTable
from local_runtime.process import stop
from local_runtime.template import FunctionSpec, functions_with_routes, load_template
from tests.conftest import start_edge

METHODS = ("get", "post", "put", "patch", "delete")
CATCH_ALL = ("ANY", "/{proxy+}")  # API Gateway's 404 (health's unknown_route): no operation of its own


def operations(doc: dict[str, Any]) -> list[tuple[str, str]]:
    return [(m.upper(), path) for path, item in doc["paths"].items() for m in METHODS if m in item]


def concrete(path: str) -> str:
    """An OpenAPI path with each parameter filled in, as a request would carry it."""
    return re.sub(r"\{[^}]+\}", "x1", path)


def template_table() -> tuple[RouteTable[FunctionSpec], list[FunctionSpec]]:
    specs = functions_with_routes(load_template())
    table: RouteTable[FunctionSpec] = RouteTable()
    for spec in specs:
        for route in spec.routes:
            table.add(route.method, route.path, spec)
    return table, specs


def test_the_document_is_valid_openapi_3_1_with_the_auth_schemes_and_error_shapes() -> None:
    doc = openapi.document()
    validate(doc)
    assert doc["openapi"] == "3.1.0"
    assert set(doc["components"]["securitySchemes"]) >= {"Bearer", "OtariKey", "XApiKey", "AdminToken"}
    chat = doc["paths"]["/v1/chat/completions"]["post"]
    assert chat["requestBody"]["content"]["application/json"]["schema"]["$ref"].endswith("ChatCompletionRequest")
    assert chat["responses"]["429"]["$ref"].endswith("OpenAIError429")
    assert doc["paths"]["/api/v1/messages"]["post"]["responses"]["400"]["$ref"].endswith("AnthropicError400")
    assert doc["paths"]["/v1/keys"]["post"]["responses"]["422"]["$ref"].endswith("ControlError422")
    assert doc["paths"]["/admin/clusters"]["get"]["security"] == [{"AdminToken": []}, {}]
    assert "messages" in doc["components"]["schemas"]["ChatCompletionRequest"]["properties"]


def prefix(path: str) -> str:
    return next((p for p in ("/api/v1/", "/v1/") if path.startswith(p)), "")


def test_every_link_leads_to_an_operation_under_the_same_prefix_and_fills_its_path_parameters() -> None:
    doc = openapi.document()
    by_id = {op["operationId"]: (path, op) for path, item in doc["paths"].items() for op in item.values()}
    links = [(path, link) for path, item in doc["paths"].items() for op in item.values()
             for answer in op["responses"].values() for link in answer.get("links", {}).values()]
    assert len(links) >= 40
    for path, link in links:
        target_path, target = by_id[link["operationId"]]
        assert prefix(target_path) == prefix(path), (path, target_path)
        wanted = {p["name"] for p in target.get("parameters", []) if p["in"] == "path"}
        assert set(link["parameters"]) == wanted, (path, link)


def test_every_template_route_has_an_operation_and_every_operation_a_template_route() -> None:
    doc = openapi.document()
    ops = operations(doc)
    table, specs = template_table()
    # every operation is routed by the template, to a route of its method (or ANY), never to the catch-all
    for method, path in ops:
        found = table.match(method, concrete(path))
        assert found is not None, f"{method} {path}: no template route"
        assert (found[0].method, found[0].path) != CATCH_ALL, f"{method} {path}: only the catch-all serves it"
    # every template route is documented: an exact route by its operation, a {proxy+} one by an operation under it
    for spec in specs:
        for route in spec.routes:
            if (route.method, route.path) == CATCH_ALL:
                continue
            probe: RouteTable[str] = RouteTable()
            probe.add(route.method, route.path, "")
            assert any(probe.match(method, concrete(path)) for method, path in ops), \
                f"{route.method} {route.path} ({spec.logical_id}) has no operation in isthmus.openapi.OPERATIONS"


def test_every_function_route_is_documented_and_every_operation_is_served_by_its_function() -> None:
    doc = openapi.document()
    ops = operations(doc)
    table, specs = template_table()
    apps = {spec.logical_id: importlib.import_module(spec.module.rpartition(".")[0] + ".routes").app
            for spec in specs}
    documented = {(m, re.sub(r"\{(\w+)\}", r"{\1}", p)) for m, p in ops}
    for logical_id, app in apps.items():
        for route in app.routes:
            if not isinstance(route, Route) or len((route.methods or set()) - {"HEAD"}) >= len(METHODS):
                continue  # every method: a catch-all (unknown routes, a group not implemented yet, its 501)
            path = re.sub(r"\{(\w+)(:\w+)?\}", r"{\1}", route.path)
            for method in (route.methods or set()) - {"HEAD"}:
                assert (method, path) in documented, f"{method} {route.path} of {logical_id} is not documented"
    for method, path in ops:
        found = table.match(method, concrete(path))
        assert found is not None
        app = apps[found[0].target.logical_id]
        scope = {"type": "http", "method": method, "path": concrete(path)}
        assert any(isinstance(r, Route) and r.matches(scope)[0] is Match.FULL for r in app.routes), \
            f"{method} {path}: the template sends it to {found[0].target.logical_id}, which has no such route"


@pytest.fixture(scope="module")
def edge(ddb_tables: str) -> Iterator[str]:
    ensure_swagger_ui()
    proc, base = start_edge("asgi")
    try:
        yield base
    finally:
        stop(proc)


def test_the_edge_serves_the_document_under_every_prefix_and_docs_renders_it_from_local_assets(edge: str) -> None:
    for path in ("/openapi.json", "/v1/openapi.json", "/api/v1/openapi.json"):
        r = httpx.get(f"{edge}{path}")
        assert r.status_code == 200 and r.headers["content-type"].startswith("application/json")
        assert r.json() == openapi.document()
    page = httpx.get(f"{edge}/docs")
    assert page.status_code == 200 and page.headers["content-type"].startswith("text/html")
    assert "SwaggerUIBundle" in page.text and 'url: "/openapi.json"' in page.text
    # no CDN: every script and stylesheet is one of ours, and each is served
    linked = re.findall(r'(?:src|href)="([^"]+)"', page.text)
    assert linked and all(link.startswith("/docs/") for link in linked), linked
    for link in linked:
        asset = httpx.get(f"{edge}{link}")
        assert asset.status_code == 200 and len(asset.content) > 10_000, link
    assert httpx.get(f"{edge}/docs/swagger-ui-bundle.js").headers["content-type"].startswith("text/javascript")
    assert httpx.get(f"{edge}/docs/../template.yaml").status_code == 404


@pytest.mark.skipif(shutil.which("chromium") is None, reason="Debian's chromium is not installed")
def test_docs_renders_every_group_in_a_browser_without_leaving_the_edge(edge: str) -> None:
    sync_api = pytest.importorskip("playwright.sync_api")
    requested: list[str] = []
    errors: list[str] = []
    with sync_api.sync_playwright() as pw:
        browser = pw.chromium.launch(executable_path=shutil.which("chromium"), args=["--no-sandbox"])
        try:
            tab = browser.new_page()
            tab.on("request", lambda req: requested.append(req.url))
            tab.on("pageerror", lambda exc: errors.append(str(exc)))
            # when /docs is opened and read to its end, then Swagger UI shows the document's title, every group and
            # every operation (from 150 rows on it renders only those in view: each is seen while scrolling)
            tab.goto(f"{edge}/docs")
            tab.wait_for_selector(".opblock-tag", timeout=30_000)
            assert "Isthmus" in tab.inner_text(".info .title")
            tags: set[str] = set()
            shown: set[str] = set()
            for _ in range(400):  # a bound: the page is a few hundred screens at most
                tags |= {t.strip().split("\n")[0] for t in tab.locator(".opblock-tag").all_inner_texts()}
                shown |= {i for i in tab.locator(".opblock").evaluate_all("els => els.map(e => e.id)") if i}
                if tab.evaluate("window.scrollY + window.innerHeight >= document.documentElement.scrollHeight - 2"):
                    break
                tab.mouse.wheel(0, 400)
                tab.wait_for_timeout(50)
            assert {g["name"] for g in openapi.document()["tags"]} <= tags, tags
            assert len(shown) == len(operations(openapi.document())), len(shown)
        finally:
            browser.close()
    assert not errors, errors
    assert requested and all(url.startswith(edge) or url.startswith("data:") for url in requested), requested
