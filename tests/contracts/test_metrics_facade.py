"""The metrics facade on its own (fast, no server): the refusals, store calls and spend reach /metrics under their
names; the EMF sink writes the same names; the Grafana dashboard charts every metric and only known ones; and
the inputs schemathesis found reaching the store are refused first."""

from __future__ import annotations

import json
import re
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path

import boto3
import pytest
from moto import mock_aws
from pydantic import ValidationError

from isthmus import metrics
from isthmus.adapters import aws
from isthmus.services.tenancy.users import CreateUser
from local_runtime.edge.routes import RouteTable

DASHBOARD = Path(__file__).resolve().parents[2] / "local_runtime" / "grafana" / "isthmus-dashboard.json"


@pytest.fixture()
def prometheus(monkeypatch: pytest.MonkeyPatch) -> Iterator[None]:
    monkeypatch.setenv("ISTHMUS_METRICS", "prometheus")
    metrics.reset()
    yield
    metrics.reset()


def value(name: str, **labels: str) -> float:
    text = metrics.render()[0].decode()
    for line in text.splitlines():
        if line.startswith(name + "{") or line.startswith(name + " "):
            found = dict(re.findall(r'(\w+)="([^"]*)"', line))
            if all(found.get(k) == v for k, v in labels.items()):
                return float(line.rsplit(" ", 1)[1])
    return 0.0


def test_refusals_spend_and_fallbacks_are_counted(prometheus: None) -> None:
    metrics.budget_refused("m1")
    metrics.budget_refused("m1")
    metrics.rate_limited("requests")
    metrics.spend("m1", Decimal("0.25"))
    metrics.upstream_retry("openai")
    metrics.upstream_fallback("node")
    assert value("isthmus_budget_refusals_total", model="m1") == 2
    assert value("isthmus_rate_limit_refusals_total", kind="requests") == 1
    assert value("isthmus_spend_usd_total", model="m1") == 0.25
    assert value("isthmus_upstream_retries_total", provider="openai") == 1
    assert value("isthmus_upstream_fallbacks_total", kind="node") == 1


def test_every_store_call_is_timed_by_operation(prometheus: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("AWS_DEFAULT_REGION", "us-east-1")
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", "testing")
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", "testing")
    with mock_aws():
        aws.reset()
        client = aws.client("dynamodb", region_name="us-east-1")
        boto3.client("dynamodb", region_name="us-east-1")  # moto's hooks on this session too
        client.list_tables()
        client.list_tables()
    aws.reset()
    assert value("isthmus_store_call_duration_seconds_count", operation="ListTables") == 2


def test_the_emf_sink_writes_the_same_names(monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture[str]
                                            ) -> None:
    monkeypatch.setenv("ISTHMUS_METRICS", "emf")
    metrics.reset()
    try:
        metrics.budget_refused("m2")
        metrics.tokens("m2", "pool", 7, 3, 0)
    finally:
        metrics.reset()
    lines = [json.loads(line) for line in capsys.readouterr().out.splitlines() if line.startswith("{")]
    names = {m["Name"] for line in lines for d in line["_aws"]["CloudWatchMetrics"] for m in d["Metrics"]}
    assert names == {"isthmus_budget_refusals_total", "isthmus_tokens_total"}
    refusal = next(line for line in lines if "isthmus_budget_refusals_total" in line)
    assert refusal["model"] == "m2" and refusal["_aws"]["CloudWatchMetrics"][0]["Namespace"] == "Isthmus"


def test_the_dashboard_charts_every_metric_and_only_known_ones() -> None:
    dashboard = json.loads(DASHBOARD.read_text())
    exprs = " ".join(t["expr"] for p in dashboard["panels"] for t in p["targets"])
    used = {re.sub(r"_(bucket|count|sum)$", "", n) for n in re.findall(r"\b(isthmus_[a-z_]+)", exprs)}
    assert used == set(metrics.FAMILIES)


@pytest.mark.parametrize("metadata", [{"": 1}, {"a": {"": "x"}}, {"a": 3.0e191}, {"a": [1e-300]}, {"a": 10**40 + 1}])
def test_metadata_a_store_cannot_keep_is_refused_before_the_store(metadata: dict[str, object]) -> None:
    with pytest.raises(ValidationError, match="metadata"):
        CreateUser.model_validate({"user_id": "u1", "metadata": metadata})


def test_ordinary_metadata_still_passes() -> None:
    CreateUser.model_validate({"user_id": "u1", "metadata": {"team": "a", "n": 1.5, "big": 10**20, "neg": -2e100}})


def test_a_path_with_a_newline_still_reaches_a_greedy_route() -> None:
    table: RouteTable[str] = RouteTable()
    table.add("ANY", "/v1/users/{proxy+}", "users")
    table.add("ANY", "/{proxy+}", "catch-all")
    found = table.match("GET", "/v1/users/a\nb")
    assert found is not None and found[0].target == "users" and found[1] == {"proxy": "a\nb"}
    assert table.match("GET", "/x\ny") is not None
