"""The Lambda entry (functions/<group>/app.py over isthmus.entry): init imports nothing heavy, the first call
imports the group's routes, and the entry serves them as ASGI and as a Lambda handler."""

from __future__ import annotations

import json
import os
import site
import subprocess
import sys
from pathlib import Path

import pytest
from starlette.testclient import TestClient

from isthmus.entry import LazyRoutes, lazy_entry

ROOT = Path(__file__).resolve().parents[2]
HEAVY = {"starlette", "pydantic", "aws_lambda_powertools", "mangum", "asyncio", "boto3", "botocore", "httpx"}
GROUPS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/app.py"))


@pytest.mark.parametrize("group", GROUPS)
def test_lazy_lambda_init_imports_nothing_heavy(group: str) -> None:
    # given the function imported as Lambda does: its folder, the layers and site-packages on the path
    folder = ROOT / "functions" / group
    path = os.pathsep.join([str(folder), str(ROOT / "layers"), str(ROOT / "shared"), *site.getsitepackages()])
    code = f"import sys, app, json; print(json.dumps(sorted({{m.split('.')[0] for m in sys.modules}} & {HEAVY!r})))"
    env = os.environ | {"PYTHONPATH": path, "ISTHMUS_LAZY_IMPORT": "1"}
    # when the init phase imports app, lazy import on
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=folder, env=env,
                         capture_output=True, text=True, check=True).stdout
    # then none of the request-time stack is loaded yet
    assert json.loads(out) == []


# Deferred to first use by design (isthmus.adapters.dynamodb, agent_http, observability): at init they would
# cost a cold start more than the whole stack. pydantic schemas too: every model is defer_build.
REQUEST_TIME = {"boto3", "botocore.session", "httpx", "aws_xray_sdk"}
BUILT_MODELS = """
from pydantic import BaseModel
def subclasses(cls):
    for sub in cls.__subclasses__():
        yield sub
        yield from subclasses(sub)
built = {f"{m.__module__}.{m.__qualname__}" for m in subclasses(BaseModel)
         if m.__pydantic_complete__ and not m.__module__.startswith("pydantic")}
"""


@pytest.mark.parametrize("group", GROUPS)
def test_default_init_builds_no_schema_and_no_client(group: str) -> None:
    # given the function imported as Lambda does, routes loaded at init (the default)
    folder = ROOT / "functions" / group
    path = os.pathsep.join([str(folder), str(ROOT / "layers"), str(ROOT / "shared"), *site.getsitepackages()])
    code = (f"import sys, json, app\n{BUILT_MODELS}\n"
            f"print(json.dumps(['routes' in sys.modules, sorted(built), sorted(set(sys.modules) & {REQUEST_TIME!r})]))")
    env = {k: v for k, v in os.environ.items() if k != "ISTHMUS_LAZY_IMPORT"} | {"PYTHONPATH": path}
    # when the init phase imports app
    out = subprocess.run([sys.executable, "-S", "-c", code], cwd=folder, env=env,
                         capture_output=True, text=True, check=True).stdout
    routes_loaded, built, loaded = json.loads(out)
    # then the routes are there, but no pydantic schema was built and no client library imported
    assert routes_loaded
    assert (built, loaded) == ([], [])


def test_routes_module_is_the_sibling_of_the_entry(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_LAZY_IMPORT", "1")
    assert lazy_entry("app").module_name == "routes"  # Lambda: the function folder is on the path
    assert lazy_entry("functions.health.app").module_name == "functions.health.routes"


def test_by_default_the_routes_load_at_init(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("ISTHMUS_LAZY_IMPORT", raising=False)
    entry = lazy_entry("functions.health.app")
    assert entry._module is not None and entry._module.__name__ == "functions.health.routes"


def test_the_entry_serves_the_routes_app() -> None:
    # given the health group's lazy entry, not loaded yet
    entry = LazyRoutes("functions.health.routes")
    # when a request goes through it as an ASGI app
    with TestClient(entry) as client:
        response = client.get("/health/liveness")
    # then the routes answer it
    assert response.status_code == 200
    assert response.json() == {"status": "alive"}
