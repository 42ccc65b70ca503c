"""A batch survives its worker: the edge running it is killed (SIGKILL) mid-batch and started again; the new
edge's worker finds the unfinished batch, waits out the dead one's line leases, and completes it. No line ran
twice to completion: each line has exactly one successful usage row, and the output each custom_id once."""

from __future__ import annotations

import io
import json
import os
import signal
import uuid
from pathlib import Path

import httpx
import openai
import pytest

from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.agents import AgentProcess
from tests.support.batch_edge import MASTER, batch_env, chat_jsonl, priced_user, usage_rows
from tests.support.waiting import poll

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


def test_killing_the_worker_mid_batch_then_restarting_completes_it_without_rerunning_lines(
        smol_agent: AgentProcess, ddb_tables: str, tmp_path: Path) -> None:
    env = batch_env(smol_agent, tmp_path / "files", ISTHMUS_BATCH_LEASE_SECONDS="4", ISTHMUS_BATCH_CONCURRENCY="2")
    admin_headers = {"Authorization": f"Bearer {MASTER}"}
    # given a batch of 8 requests running on an edge
    first, base = start_edge("asgi", env=env)
    try:
        with httpx.Client(base_url=base, headers=admin_headers, timeout=60) as admin:
            user_id, key = priced_user(admin, smol_agent.status()["model"])
        sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)
        upload = sdk.files.create(file=("r.jsonl", io.BytesIO(chat_jsonl(8, 8, f"k{uuid.uuid4().hex[:4]}"))),
                                  purpose="batch")
        batch = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                                   completion_window="24h")
        poll(lambda: (c := sdk.batches.retrieve(batch.id).request_counts) is not None and c.completed >= 2,
             timeout=120)
        # when the edge is killed mid-batch
        os.kill(first.pid, signal.SIGKILL)
        first.wait(30)
    finally:
        stop(first)
    second, base = start_edge("asgi", env=env)
    try:
        sdk = openai.OpenAI(base_url=f"{base}/v1", api_key=key, max_retries=0, timeout=60)
        cut = sdk.batches.retrieve(batch.id)
        assert cut.status == "in_progress" and cut.request_counts is not None and cut.request_counts.completed < 8
        # then the restarted edge completes it
        done = poll(lambda: (b := sdk.batches.retrieve(batch.id)).status in ("completed", "failed") and b,
                    timeout=240)
        assert done.status == "completed" and done.request_counts is not None
        assert (done.request_counts.completed, done.request_counts.failed) == (8, 0)
        assert done.output_file_id is not None
        lines = [json.loads(x) for x in sdk.files.content(done.output_file_id).text.splitlines() if x.strip()]
        assert len(lines) == 8 and len({line["custom_id"] for line in lines}) == 8
        # and no line ran twice to completion: one successful usage row per line
        with httpx.Client(base_url=base, headers=admin_headers, timeout=60) as admin:
            rows = poll(lambda: [r for r in usage_rows(admin, user_id) if r["status"] == "success"]
                        if len([r for r in usage_rows(admin, user_id) if r["status"] == "success"]) >= 8 else None)
        assert sorted(r["request_id"] for r in rows) == sorted(f"{batch.id}#{n}" for n in range(8))
    finally:
        stop(second)
