"""Every delivered token is billed, over real HTTP through the edge against a real agent (tiny random model)
and DynamoDB Local: a client that walks away mid-stream, an agent killed mid-stream and a client that gives up
on a non-streamed answer each leave one usage row with the prompt and the tokens generated, at the model's
price; the generation stops, and the budget hold goes back into spend."""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.agents import AgentProcess
from tests.support.batch_edge import priced_user
from tests.support.waiting import poll

pytestmark = pytest.mark.e2e
MASTER = "sk-disconnect-master"
NEVER_ENDING = {"model": "default", "max_tokens": 100_000, "messages": [{"role": "user", "content": "never ending"}],
                "metadata": {"loop_guard": False}}


@pytest.fixture(scope="module")
def keyed_edge(ddb_tables: str, tiny_agent: AgentProcess) -> Iterator[httpx.Client]:
    proc, base = start_edge("asgi", env={"ISTHMUS_MASTER_KEY": MASTER, "ISTHMUS_DEFAULT_AGENT_URL": tiny_agent.base})
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {MASTER}"}, timeout=60) as admin:
            yield admin
    finally:
        stop(proc)


def the_row(admin: httpx.Client, user_id: str) -> dict[str, Any]:
    """The user's one usage row, once it is written (settlements are batched off the request path)."""
    rows = poll(lambda: admin.get("/v1/usage", params={"user_id": user_id}).json())
    assert len(rows) == 1, rows
    return dict(rows[0])


def assert_billed_at_price(row: dict[str, Any]) -> None:
    assert row["prompt_tokens"] > 0  # the request started: its prompt was processed
    expected = (row["prompt_tokens"] * 1 + row["completion_tokens"] * 2) / 1_000_000
    assert float(row["cost"]) == pytest.approx(expected, rel=1e-9)


def assert_hold_went_back(admin: httpx.Client, user_id: str, row: dict[str, Any]) -> None:
    user = poll(lambda: (u := admin.get(f"/v1/users/{user_id}").json())["reserved"] == 0 and u)
    assert float(user["spend"]) == pytest.approx(float(row["cost"]), rel=1e-9)


def output_deltas(line: str) -> int:
    """1 for an SSE chunk that carries generated text (each came from at least one token), else 0."""
    if not line.startswith("data:") or line == "data: [DONE]":
        return 0
    chunk = json.loads(line[5:])
    delta = (chunk.get("choices") or [{}])[0].get("delta") or {}
    return int(bool(delta.get("content") or delta.get("reasoning_content")))


def test_walking_away_mid_stream_bills_what_was_generated(keyed_edge: httpx.Client,
                                                          tiny_agent: AgentProcess) -> None:
    # given a priced model and a key on a user with a budget
    user_id, key = priced_user(keyed_edge, tiny_agent.status()["model"], "walker")
    # when the client reads a few chunks of a never-ending stream and hangs up
    with httpx.Client(base_url=str(keyed_edge.base_url), timeout=60) as client, \
            client.stream("POST", "/v1/chat/completions", json={**NEVER_ENDING, "stream": True},
                          headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status_code == 200
        request_id = resp.headers["x-request-id"]
        received = 0
        for line in resp.iter_lines():
            received += output_deltas(line)
            if received >= 10:
                break
        # while it streams, the user's budget holds the worst case
        assert keyed_edge.get(f"/v1/users/{user_id}").json()["reserved"] > 0
    # then the agent stops generating (its slot frees up)
    tiny_agent.wait_for(lambda s: s["active"] == 0, timeout=30)
    # and the one usage row says cancelled, with at least the tokens the client received, at the price
    row = the_row(keyed_edge, user_id)
    assert row["request_id"] == request_id
    assert (row["status"], row["status_code"]) == ("cancelled", 499)
    assert row["completion_tokens"] >= received
    assert_billed_at_price(row)
    # and the hold went back: nothing reserved, the real cost spent
    assert_hold_went_back(keyed_edge, user_id, row)


def test_giving_up_on_a_whole_answer_stops_the_agent_and_bills_what_was_generated(
        keyed_edge: httpx.Client, tiny_agent: AgentProcess) -> None:
    # given a priced model and a key on a user with a budget
    user_id, key = priced_user(keyed_edge, tiny_agent.status()["model"], "quitter")
    # a quarter of a million tokens: minutes of decoding for the agent (~1k tokens/s here), far beyond the waits
    body = {**NEVER_ENDING, "max_tokens": 250_000}
    # when a non-streamed request's client gives up after 2 s and hangs up
    with httpx.Client(base_url=str(keyed_edge.base_url), timeout=httpx.Timeout(60, read=2)) as client, \
            pytest.raises(httpx.ReadTimeout):
        client.post("/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"})
    # then the agent stops that generation (no sequence is left running, long before it could have ended)
    tiny_agent.wait_for(lambda s: s["active"] == 0, timeout=30)
    # and the one usage row says cancelled (499), with the tokens generated until then, at the price
    row = the_row(keyed_edge, user_id)
    assert (row["status"], row["status_code"]) == ("cancelled", 499)
    assert 0 < row["completion_tokens"] < body["max_tokens"]
    assert_billed_at_price(row)
    assert_hold_went_back(keyed_edge, user_id, row)


@pytest.fixture()
def doomed(ddb_tables: str, tiny_model: Path, agent_logs: Path) -> Iterator[tuple[AgentProcess, httpx.Client]]:
    """An agent of its own (it gets killed) behind an edge of its own."""
    agent = AgentProcess(str(tiny_model), "--no-loop-guard", log_dir=agent_logs)
    proc, base = start_edge("asgi", env={"ISTHMUS_MASTER_KEY": MASTER, "ISTHMUS_DEFAULT_AGENT_URL": agent.base})
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {MASTER}"}, timeout=60) as admin:
            yield agent, admin
    finally:
        stop(proc)
        agent.stop()


def test_an_agent_killed_mid_stream_bills_what_was_generated(doomed: tuple[AgentProcess, httpx.Client]) -> None:
    agent, admin = doomed
    # given a priced model and a key on a user with a budget
    user_id, key = priced_user(admin, agent.status()["model"], "orphan")
    # when the agent is killed while it streams a never-ending answer
    lines: list[str] = []
    with httpx.Client(base_url=str(admin.base_url), timeout=60) as client, \
            client.stream("POST", "/v1/chat/completions", json={**NEVER_ENDING, "stream": True},
                          headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status_code == 200
        for line in resp.iter_lines():
            lines.append(line)
            if sum(map(output_deltas, lines)) == 10:
                agent.proc.kill()
    # then the client got what was generated until then and an in-band error, not a clean end
    received = sum(map(output_deltas, lines))
    assert received >= 10
    assert "data: [DONE]" not in lines and any('"error"' in line for line in lines)
    # and the one usage row says error (502), with at least the tokens the client received, at the price
    row = the_row(admin, user_id)
    assert (row["status"], row["status_code"]) == ("error", 502)
    assert row["completion_tokens"] >= received
    assert_billed_at_price(row)
    assert_hold_went_back(admin, user_id, row)
