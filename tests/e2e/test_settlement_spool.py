"""No lost usage rows: requests answered while DynamoDB is unreachable (served from the edge's caches and budget
lease) keep their settlements in the edge's local spool, and every one of them is in the table once the store
is back: replayed by the same edge, or by a new edge after the first was killed in between; none twice."""

from __future__ import annotations

import os
import signal
import uuid
from collections.abc import Iterator
from decimal import Decimal
from pathlib import Path
from typing import Any

import httpx
import pytest

from isthmus import settings
from isthmus.adapters import dynamodb
from isthmus.adapters.ddb_items import query_all
from isthmus.adapters.tenancy_ddb import DynamoUserStore
from local_runtime.ddb import DynamoLocal, free_port
from local_runtime.process import stop
from local_runtime.tables import create_tables
from tests.conftest import start_edge
from tests.support.agents import AgentProcess
from tests.support.waiting import poll

pytestmark = pytest.mark.e2e
MASTER = "sk-spool-master"


@pytest.fixture()
def own_store(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Iterator[DynamoLocal]:
    """A DynamoDB Local of this test's own (it is stopped and started again), with the template's tables."""
    ddb = DynamoLocal(free_port(), tmp_path / "ddb").start()
    monkeypatch.setenv("ISTHMUS_DYNAMODB_ENDPOINT", ddb.endpoint)
    monkeypatch.setenv("ISTHMUS_TABLE_PREFIX", f"s{uuid.uuid4().hex[:6]}-")
    dynamodb.reset_clients()
    try:
        create_tables(dynamodb.client())
        yield ddb
    finally:
        ddb.stop()
        dynamodb.reset_clients()


def rows(user_id: str) -> list[dict[str, Any]]:
    return list(query_all(dynamodb.client(), settings.table_name("usage"), IndexName="by_user",
                          KeyConditionExpression="user_id = :u", ExpressionAttributeValues={":u": {"S": user_id}}))


def spooled(spool: Path) -> int:
    return sum(len(p.read_text().splitlines()) for p in spool.glob("settlements-*.jsonl")) if spool.is_dir() else 0


def chat(base: str, key: str, n: int) -> None:
    body = {"model": "default", "max_tokens": 4, "messages": [{"role": "user", "content": f"hello {n}"}]}
    resp = httpx.post(f"{base}/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {key}"},
                      timeout=60)
    assert resp.status_code == 200, resp.text


def test_settlements_made_while_the_store_is_down_are_all_written_once_also_across_an_edge_restart(
        own_store: DynamoLocal, tiny_agent: AgentProcess, tmp_path: Path) -> None:
    spool = tmp_path / "spool"
    env = {"ISTHMUS_MASTER_KEY": MASTER, "ISTHMUS_DEFAULT_AGENT_URL": tiny_agent.base,
           "ISTHMUS_SPOOL_DIR": str(spool), "ISTHMUS_HOLD_EXPIRY_S": "3", "ISTHMUS_HOLD_SWEEP_S": "1"}
    edge, base = start_edge("asgi", env=env)
    second: Any = None
    try:
        # given a priced model, a user with a budget and a key, served a few times (key, price and lease warm)
        admin = httpx.Client(base_url=base, headers={"Authorization": f"Bearer {MASTER}"}, timeout=60)
        model = tiny_agent.status()["model"]
        admin.post("/v1/pricing", json={"model_key": model, "input_price_per_million": 1,
                                        "output_price_per_million": 2}).raise_for_status()
        budget = admin.post("/v1/budgets", json={"max_budget": 100, "budget_duration_sec": 86400}).json()
        user_id = f"spool-{uuid.uuid4().hex[:6]}"
        admin.post("/v1/users", json={"user_id": user_id, "budget_id": budget["budget_id"]}).raise_for_status()
        key = admin.post("/v1/keys", json={"user_id": user_id}).json()["key"]
        for n in range(3):
            chat(base, key, n)
        poll(lambda: len(rows(user_id)) == 3)

        # when the store goes away and five requests are answered meanwhile
        own_store.stop()
        for n in range(3, 8):
            chat(base, key, n)
        # then their settlements are on disk, and once the store is back the same edge writes them all
        poll(lambda: spooled(spool) == 5, timeout=60)
        own_store.start()
        poll(lambda: len(rows(user_id)) == 8, timeout=60)
        poll(lambda: spooled(spool) == 0)

        # when (right after a request: its lease is not idle) the store goes away again, four more are answered,
        # and the edge is killed before the store is back
        chat(base, key, 99)
        poll(lambda: len(rows(user_id)) == 9)
        own_store.stop()
        for n in range(8, 12):
            chat(base, key, n)
        poll(lambda: spooled(spool) == 4, timeout=60)
        os.killpg(edge.pid, signal.SIGKILL)
        edge.wait(timeout=10)
        own_store.start()
        # then a new edge on the same spool writes them
        second, _ = start_edge("asgi", env=env)
        written = poll(lambda: len(found := rows(user_id)) == 13 and found, timeout=60)
        poll(lambda: spooled(spool) == 0)
        # and none twice: 13 distinct rows, spend is exactly their costs, 13 requests counted, and the
        # killed edge's lease is reclaimed (nothing left reserved)
        assert len({r["id"] for r in written}) == 13
        user = poll(lambda: (u := DynamoUserStore().get(user_id)) is not None and u["reserved"] == 0 and u,
                    timeout=30)
        assert user["spend"] == sum(Decimal(r["cost"]) for r in written) > 0
        assert user["current_requests"] == 13
        assert user["headroom"] == user["max_budget"] - user["spend"]
        assert not any("unbilled_cost" in r for r in written)
    finally:
        stop(edge)
        stop(second)
