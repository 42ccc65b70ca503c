"""The dashboard's static files: served with their content types, a strict CSP and ETags, nothing outside
static/, every page module using text-only DOM building, and all of it under 300 KB gzipped."""

from __future__ import annotations

import asyncio
import base64
import gzip
import re
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from functions.dashboard.routes import STATIC, app, handler
from local_runtime.edge.lambda_bridge import LambdaContext, build_event

client = TestClient(app)


@pytest.mark.parametrize(("path", "kind"), [("/dashboard/", "text/html"), ("/dashboard/app.css", "text/css"),
                                            ("/dashboard/js/app.js", "text/javascript"),
                                            ("/dashboard/js/pages/usage.js", "text/javascript"),
                                            ("/dashboard/icon.svg", "image/svg+xml")])
def test_each_file_has_its_type_and_the_security_headers(path: str, kind: str) -> None:
    r = client.get(path)
    assert r.status_code == 200 and r.headers["content-type"].startswith(kind)
    csp = r.headers["content-security-policy"]
    assert "default-src 'self'" in csp and "script-src 'self';" in csp and "unsafe" not in csp
    assert r.headers["x-frame-options"] == "DENY" and r.headers["x-content-type-options"] == "nosniff"
    assert r.headers["cache-control"] == "no-cache"
    assert client.get(path, headers={"if-none-match": r.headers["etag"]}).status_code == 304


@pytest.mark.parametrize("path", ["/dashboard/../routes.py", "/dashboard/%2e%2e/routes.py", "/dashboard/js",
                                  "/dashboard/nope.js", "/dashboard/js/../../routes.py", "/dashboard/.hidden.js"])
def test_nothing_outside_the_static_files_is_served(path: str) -> None:
    r = client.get(path)
    assert r.status_code == 404 and "detail" in r.json()


def test_the_bare_path_redirects_to_the_folder_so_relative_assets_resolve() -> None:
    r = client.get("/dashboard", follow_redirects=False)
    assert r.status_code == 308 and r.headers["location"] == "/dashboard/"


def test_the_lambda_path_serves_the_same_page() -> None:
    event = build_event(method="GET", path="/dashboard/js/api.js", raw_query="", headers=[], body=b"",
                        route_key="GET /dashboard/{proxy+}", path_params={"proxy": "js/api.js"},
                        source_ip="203.0.113.7", request_id="dash-1")
    asyncio.set_event_loop(asyncio.new_event_loop())
    result = handler(event, LambdaContext(function_name="DashboardFunction", aws_request_id="dash-1"))
    body = base64.b64decode(result["body"]) if result.get("isBase64Encoded") else result["body"].encode()
    assert result["statusCode"] == 200 and body == (STATIC / "js/api.js").read_bytes()
    assert "default-src 'self'" in result["headers"]["content-security-policy"]


def test_no_page_builds_html_from_strings() -> None:
    # user strings go in as text: no innerHTML/outerHTML/insertAdjacentHTML/document.write anywhere, no inline script
    sources = {p: p.read_text() for p in STATIC.rglob("*") if p.suffix in (".js", ".html")}
    for path, text in sources.items():
        assert not re.search(r"innerHTML|outerHTML|insertAdjacentHTML|document\.write|eval\(|new Function", text), path
    assert not re.search(r"<script(?![^>]*\bsrc=)", sources[STATIC / "index.html"])
    assert not re.search(r"\son[a-z]+\s*=", sources[STATIC / "index.html"])  # no inline event handlers


def test_the_assets_stay_under_300_kb_gzipped() -> None:
    total = sum(len(gzip.compress(p.read_bytes(), 9)) for p in STATIC.rglob("*") if p.is_file())
    print(f"\ndashboard assets: {total / 1024:.1f} KB gzipped")
    assert total < 300 * 1024


def test_every_page_module_exists_for_the_nav() -> None:
    app_js = (STATIC / "js/app.js").read_text()
    pages = re.findall(r"\['([a-z]+)', '[^']+'\]", app_js)
    assert pages and all((STATIC / "js/pages" / f"{p}.js").is_file() for p in pages)
    assert Path(STATIC / "index.html").read_text().count("js/app.js") == 1
