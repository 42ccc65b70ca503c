"""A keyed edge for batch tests: the master key, a priced model, a user with a budget and a key, the smol agent."""

from __future__ import annotations

import json
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.agents import AgentProcess

MASTER = "sk-batches-master"


def batch_env(agent: AgentProcess, files_dir: Path, **extra: str) -> dict[str, str]:
    return {"ISTHMUS_MASTER_KEY": MASTER, "ISTHMUS_DEFAULT_AGENT_URL": agent.base,
            "ISTHMUS_FILES_DIR": str(files_dir), "ISTHMUS_BATCH_POLL_SECONDS": "0.2",
            "ISTHMUS_BATCH_CONCURRENCY": "4", **extra}


@contextmanager
def edge(mode: str, env: dict[str, str]) -> Iterator[httpx.Client]:
    """The edge and a master-key client on it."""
    proc, base = start_edge(mode, env=env)
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {MASTER}"}, timeout=60) as admin:
            yield admin
    finally:
        stop(proc)


def priced_user(admin: httpx.Client, model: str, name: str = "batcher") -> tuple[str, str]:
    """``model`` at 1 USD per million input and 2 per million output tokens; a user (``name`` and a random tail)
    with a 10 USD budget and a key: (user_id, key)."""
    admin.post("/v1/pricing", json={"model_key": model, "input_price_per_million": 1,
                                    "output_price_per_million": 2}).raise_for_status()
    budget = admin.post("/v1/budgets", json={"max_budget": 10, "budget_duration_sec": 86400}).json()
    user_id = f"{name}-{uuid.uuid4().hex[:6]}"
    admin.post("/v1/users", json={"user_id": user_id, "budget_id": budget["budget_id"]}).raise_for_status()
    return user_id, admin.post("/v1/keys", json={"user_id": user_id}).json()["key"]


def chat_jsonl(count: int, max_tokens: int, prefix: str = "req") -> bytes:
    lines = [{"custom_id": f"{prefix}-{i}", "method": "POST", "url": "/v1/chat/completions",
              "body": {"model": "default", "max_tokens": max_tokens,
                       "messages": [{"role": "user", "content": f"Say a word about the number {i}."}]}}
             for i in range(count)]
    return "".join(json.dumps(line) + "\n" for line in lines).encode()


def usage_rows(admin: httpx.Client, user_id: str) -> list[dict[str, Any]]:
    return list(admin.get("/v1/usage", params={"user_id": user_id, "limit": 1000}).json())
