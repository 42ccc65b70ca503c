"""A client that walks away mid-stream, over real HTTP through the edge: the generation stops, the usage
row is still written (status cancelled) and the budget hold is released into spend."""

from __future__ import annotations

import uuid
from collections.abc import Iterator

import httpx
import pytest

from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.agents import AgentProcess
from tests.support.waiting import poll

pytestmark = pytest.mark.e2e
MASTER = "sk-disconnect-master"




@pytest.fixture(scope="module")
def keyed_edge(ddb_tables: str, tiny_agent: AgentProcess) -> Iterator[httpx.Client]:
    proc, base = start_edge("asgi", env={"ISTHMUS_MASTER_KEY": MASTER, "ISTHMUS_DEFAULT_AGENT_URL": tiny_agent.base})
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {MASTER}"}, timeout=60) as admin:
            yield admin
    finally:
        stop(proc)


def test_walking_away_mid_stream_writes_the_row_and_releases_the_hold(keyed_edge: httpx.Client,
                                                                       tiny_agent: AgentProcess) -> None:
    # given a priced model and a key on a user with a budget
    model = tiny_agent.status()["model"]
    keyed_edge.post("/v1/pricing", json={"model_key": model, "input_price_per_million": 1,
                                         "output_price_per_million": 2}).raise_for_status()
    budget = keyed_edge.post("/v1/budgets", json={"max_budget": 10, "budget_duration_sec": 86400}).json()
    user_id = f"walker-{uuid.uuid4().hex[:6]}"
    keyed_edge.post("/v1/users", json={"user_id": user_id, "budget_id": budget["budget_id"]}).raise_for_status()
    key = keyed_edge.post("/v1/keys", json={"user_id": user_id}).json()["key"]
    body = {"model": "default", "stream": True, "max_tokens": 100_000,
            "messages": [{"role": "user", "content": "never ending"}], "metadata": {"loop_guard": False}}
    # when the client reads a few chunks of a never-ending stream and hangs up
    with httpx.Client(base_url=str(keyed_edge.base_url), timeout=60) as client, \
            client.stream("POST", "/v1/chat/completions", json=body,
                          headers={"Authorization": f"Bearer {key}"}) as resp:
        assert resp.status_code == 200
        request_id = resp.headers["x-request-id"]
        chunks = 0
        for line in resp.iter_lines():
            chunks += line.startswith("data:")
            if chunks >= 5:
                break
        # while it streams, the user's budget holds the worst case
        assert keyed_edge.get(f"/v1/users/{user_id}").json()["reserved"] > 0
    # then the agent stops generating (its slot frees up)
    tiny_agent.wait_for(lambda s: s["active"] == 0, timeout=30)
    # and the usage row says cancelled, and the hold went back: nothing reserved, the real cost spent
    rows = poll(lambda: [r for r in keyed_edge.get("/v1/usage", params={"user_id": user_id}).json()
                         if r.get("request_id") == request_id])
    assert rows[0]["status"] == "cancelled"
    user = poll(lambda: (u := keyed_edge.get(f"/v1/users/{user_id}").json())["reserved"] == 0 and u)
    assert 0 < user["spend"] < 10
