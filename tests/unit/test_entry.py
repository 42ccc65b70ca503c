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
