"""The one handler idiom of functions/ (issue 15): every route is guarded by an ``@authorized`` rule, except
the ones public on purpose, and no handler threads a blocking call or checks credentials itself."""

from __future__ import annotations

import importlib
import re
from pathlib import Path

import pytest
from starlette.routing import Route

from isthmus.auth_http import LISTING_KEY, MASTER
from isthmus.handlers import ADMIN_TOKEN, ENROLL_TOKEN, RULES, ApiKey

ROOT = Path(__file__).resolve().parents[2]
GROUPS = sorted(p.parent.name for p in (ROOT / "functions").glob("*/routes.py"))
# Public on purpose: the health probes and the 404/405 catch-all, the 501 placeholders of groups to come, the
# dashboard's static files (no data: its pages call the guarded APIs with the operator's token) and the API's own
# description (the OpenAPI document and its docs page).
PUBLIC = {"health": {"get_health", "liveness", "readiness", "unknown_route"}, "files": {"endpoint"},
          "dashboard": {"index", "asset"}, "docs": {"spec", "docs", "asset"}}
HAND_ROLLED = re.compile(r"run_in_threadpool|\bcall\(|require_master|require_reader|check_admin|\.authenticate\(")


def routes_of(group: str) -> list[Route]:
    app = importlib.import_module(f"functions.{group}.routes").app
    return [r for r in app.routes if isinstance(r, Route)]


@pytest.mark.parametrize("group", GROUPS)
def test_every_route_is_authorized_or_public_on_purpose(group: str) -> None:
    # given the group's app, when each route's endpoint is looked up in the rules
    unguarded = {r.endpoint.__name__ for r in routes_of(group) if r.endpoint not in RULES}
    # then only the public ones have none
    assert unguarded <= PUBLIC.get(group, set()), f"{group}: {sorted(unguarded)}"


def test_each_surface_has_its_rule() -> None:
    rules = {group: {type(RULES[r.endpoint]) for r in routes_of(group) if r.endpoint in RULES} for group in GROUPS}
    assert rules["keys"] == rules["users"] == rules["budgets"] == rules["usage"] == {type(MASTER)}
    assert rules["admin"] == {type(ADMIN_TOKEN), type(ENROLL_TOKEN)}
    assert rules["models"] == {type(LISTING_KEY)}
    assert rules["inference"] == {ApiKey}
    api_keys = [RULES[r.endpoint] for r in routes_of("inference")]
    billed = {rule.endpoint for rule in api_keys if isinstance(rule, ApiKey)}
    assert {"/v1/chat/completions", "/v1/messages", "/v1/responses", "/v1/embeddings", None} <= billed


@pytest.mark.parametrize("path", sorted((ROOT / "functions").rglob("*.py")), ids=lambda p: str(p.relative_to(ROOT)))
def test_no_handler_threads_calls_or_checks_credentials_itself(path: Path) -> None:
    assert not HAND_ROLLED.findall(path.read_text())
