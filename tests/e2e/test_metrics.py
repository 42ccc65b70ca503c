"""Metrics you can scrape: the edge's and a node agent's ``/metrics`` after a chat, and the same names as EMF lines
on the Lambda path (an edge in lambda mode whose sink is EMF, its stdout captured)."""

from __future__ import annotations

import json
import os
import re
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from isthmus import metrics
from local_runtime.ddb import free_port
from local_runtime.process import stop, wait_http
from tests.conftest import ROOT, start_edge
from tests.support.agents import AgentProcess

pytestmark = pytest.mark.e2e
CHAT = {"messages": [{"role": "user", "content": "Count to three."}], "max_tokens": 5}


def samples(text: str, name: str) -> list[tuple[dict[str, str], float]]:
    """Every sample of ``name`` in a Prometheus exposition, as (labels, value)."""
    found = []
    for line in text.splitlines():
        m = re.fullmatch(rf"{name}(?:\{{(.*)\}})? (\S+)", line)
        if m:
            labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(1) or ""))
            found.append((labels, float(m.group(2))))
    return found


def chat(base: str, model: str) -> dict[str, Any]:
    r = httpx.post(f"{base}/v1/chat/completions", json={"model": model, **CHAT}, timeout=60)
    assert r.status_code == 200, r.text
    body: dict[str, Any] = r.json()
    return body


@pytest.fixture(scope="module")
def open_edge(tiny_agent: AgentProcess, ddb_tables: str) -> Iterator[str]:
    proc, base = start_edge("asgi", env={"ISTHMUS_DEFAULT_AGENT_URL": tiny_agent.base, "ISTHMUS_MASTER_KEY": ""})
    try:
        yield base
    finally:
        stop(proc)


def test_the_edge_and_the_agent_count_a_chat(open_edge: str, tiny_agent: AgentProcess) -> None:
    # given the agent's counters before
    model = tiny_agent.client.get("/agent/v1/status").json()["model"]
    agent_before = httpx.get(f"{tiny_agent.base}/metrics").text
    generated_before = sum(v for _, v in samples(agent_before, "isthmus_agent_generated_tokens_total"))

    # when a chat goes through the edge
    answer = chat(open_edge, model)

    # then the edge counted the request by route, model, backend and status, its latency and its tokens
    edge = httpx.get(f"{open_edge}/metrics")
    assert edge.status_code == 200 and edge.headers["content-type"].startswith("text/plain")
    requests = [labels for labels, value in samples(edge.text, "isthmus_requests_total") if value >= 1]
    chat_rows = [labels for labels in requests if labels["route"] == "/v1/chat/completions"]
    assert chat_rows and chat_rows[0]["model"] == model and chat_rows[0]["status"] == "200"
    assert chat_rows[0]["backend"], chat_rows
    assert any(labels["route"] == "/v1/chat/completions" and value >= 1
               for labels, value in samples(edge.text, "isthmus_request_duration_seconds_count"))
    tokens = {labels["direction"]: value for labels, value in samples(edge.text, "isthmus_tokens_total")
              if labels["model"] == model}
    assert tokens["out"] >= answer["usage"]["completion_tokens"] > 0
    assert tokens["in"] >= answer["usage"]["prompt_tokens"] > 0
    # and the agent counted the generation and reports its load
    agent_after = httpx.get(f"{tiny_agent.base}/metrics").text
    generated_after = sum(v for _, v in samples(agent_after, "isthmus_agent_generated_tokens_total"))
    assert generated_after - generated_before >= answer["usage"]["completion_tokens"]
    assert samples(agent_after, "isthmus_agent_loaded_models") == [({}, 1.0)]
    assert samples(agent_after, "isthmus_agent_queue_depth") == [({}, 0.0)]
    assert any(labels["model"] == model and value > 0
               for labels, value in samples(agent_after, "isthmus_agent_decode_tokens_per_second"))
    assert any(labels["route"] == "/agent/v1/generate" and labels["status"] == "200"
               for labels, _ in samples(agent_after, "isthmus_requests_total"))


def test_the_lambda_path_writes_the_same_names_as_emf(tiny_agent: AgentProcess, ddb_tables: str,
                                                      tmp_path: Path) -> None:
    # given an edge in lambda mode (each request through the functions' Mangum handlers) whose sink is EMF
    port = free_port()
    out = tmp_path / "edge.out"
    env = {**os.environ, "ISTHMUS_DEFAULT_AGENT_URL": tiny_agent.base, "ISTHMUS_MASTER_KEY": "",
           "ISTHMUS_METRICS": "emf"}
    with out.open("wb") as sink:
        proc = subprocess.Popen([sys.executable, "-m", "local_runtime.cli", "edge", "--port", str(port), "--mode",
                                 "lambda"], cwd=ROOT, env=env, stdout=sink, start_new_session=True)
    base = f"http://127.0.0.1:{port}"
    try:
        assert wait_http(f"{base}/health/liveness", 30, alive=lambda: proc.poll() is None)
        model = tiny_agent.client.get("/agent/v1/status").json()["model"]

        # when a chat goes through it
        chat(base, model)
    finally:
        stop(proc)

    # then its stdout carries EMF lines under the names /metrics uses, with the labels as dimensions
    # (each EMF object is decoded where it starts: the lambda-mode edge runs its sandboxes in one process, so another
    # thread's log line can land on the same stdout line right after an EMF object)
    text, decoder = out.read_text(), json.JSONDecoder()
    blobs = [decoder.raw_decode(text, m.start())[0] for m in re.finditer(r'\{"_aws"', text)]
    emitted: dict[str, dict[str, Any]] = {}
    for blob in blobs:
        for definition in blob["_aws"]["CloudWatchMetrics"]:
            for metric in definition["Metrics"]:
                emitted[metric["Name"]] = blob
    assert {"isthmus_requests_total", "isthmus_request_duration_seconds", "isthmus_tokens_total"} <= set(emitted)
    assert {name for name in emitted if name.startswith("isthmus")} <= set(metrics.FAMILIES)  # not Powertools' own
    request_line = emitted["isthmus_requests_total"]
    assert request_line["route"] == "/v1/chat/completions" and request_line["model"] == model
    assert request_line["status"] == "200" and request_line["isthmus_requests_total"] in (1, [1])
