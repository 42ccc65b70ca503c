"""Batches with the openai SDK (unmodified, base URL only) against the edge, asgi and lambda modes, the real
SmolLM2 agent and DynamoDB Local: a JSONL of 20 chat requests uploaded, run to ``completed`` by the edge's
in-process worker, its output downloaded (20 lines, each custom_id once, chat completions), each line billed to
the batch's user; a batch cancelled mid-way ends ``cancelled`` with what finished; Otari's inline shape answers
409 on its results until it is done, then 200."""

from __future__ import annotations

import io
import json
from collections.abc import Iterator
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from tests.support.agents import AgentProcess
from tests.support.batch_edge import batch_env, chat_jsonl, edge, priced_user, usage_rows
from tests.support.waiting import poll

pytestmark = [pytest.mark.e2e, pytest.mark.slow]


@pytest.fixture(scope="module", params=["asgi", "lambda"])
def gateway(request: pytest.FixtureRequest, smol_agent: AgentProcess, ddb_tables: str,
            tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    env = batch_env(smol_agent, tmp_path_factory.mktemp("files"))
    with edge(request.param, env) as admin:
        yield admin


@pytest.fixture()
def user(gateway: httpx.Client, smol_agent: AgentProcess) -> tuple[str, openai.OpenAI]:
    user_id, key = priced_user(gateway, smol_agent.status()["model"])
    return user_id, openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0, timeout=60)


@pytest.fixture()
def asgi_only(request: pytest.FixtureRequest) -> None:
    """The same handlers answer in both modes: what the main flow proves in lambda mode is not paid for twice."""
    if request.node.callspec.params.get("gateway") == "lambda":
        pytest.skip("proven on the asgi edge; the lambda edge runs the main flow")


def output_lines(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in sdk.files.content(file_id).text.splitlines() if line.strip()]


def test_a_batch_of_20_chat_requests_completes_and_is_billed_to_its_user(user: tuple[str, openai.OpenAI],
                                                                         gateway: httpx.Client) -> None:
    user_id, sdk = user
    # given a JSONL of 20 chat requests uploaded for a batch
    upload = sdk.files.create(file=("requests.jsonl", io.BytesIO(chat_jsonl(20, 4))), purpose="batch")
    # when a batch is created from it and polled
    batch = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h",
                               metadata={"job": "nightly"})
    assert batch.status == "validating" and batch.metadata == {"job": "nightly"}
    done = poll(lambda: (b := sdk.batches.retrieve(batch.id)).status in ("completed", "failed") and b, timeout=240)
    # then it completed, every request counted, with its timestamps in order
    assert done.status == "completed", done.errors
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (20, 20, 0)
    assert done.created_at <= done.in_progress_at <= done.finalizing_at <= done.completed_at
    assert done.error_file_id is None
    # and the output file holds 20 lines, each custom_id once, each a chat completion
    lines = output_lines(sdk, done.output_file_id)
    assert sorted(line["custom_id"] for line in lines) == sorted(f"req-{i}" for i in range(20))
    for line in lines:
        assert line["error"] is None and line["response"]["status_code"] == 200
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.usage is not None and completion.usage.completion_tokens > 0
    # and each line is one successful usage row of the user, carrying the batch id, and the spend adds up
    rows = poll(lambda: len(r := usage_rows(gateway, user_id)) >= 20 and r)
    assert len(rows) == 20 and all(r["status"] == "success" for r in rows)
    assert sorted(r["request_id"] for r in rows) == sorted(f"{batch.id}#{n}" for n in range(20))
    spend = poll(lambda: (u := gateway.get(f"/v1/users/{user_id}").json())["reserved"] == 0 and u)["spend"]
    assert float(spend) == pytest.approx(sum(float(r["cost"]) for r in rows), rel=1e-9) and float(spend) > 0
    # and the batch is in the user's list, not in another user's
    assert batch.id in [b.id for b in sdk.batches.list(limit=5)]
    _, stranger = priced_user(gateway, "unused-model")
    other = openai.OpenAI(base_url=str(sdk.base_url), api_key=stranger, max_retries=0)
    assert batch.id not in [b.id for b in other.batches.list()]
    with pytest.raises(openai.NotFoundError):
        other.batches.retrieve(batch.id)


def test_cancelling_mid_way_keeps_what_finished(asgi_only: None, user: tuple[str, openai.OpenAI]) -> None:
    _, sdk = user
    # given a running batch of 20 longer requests
    upload = sdk.files.create(file=("slow.jsonl", io.BytesIO(chat_jsonl(20, 16, "slow"))), purpose="batch")
    batch = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    poll(lambda: completed(sdk, batch.id) >= 1, timeout=120)
    # when it is cancelled
    cancelling = sdk.batches.cancel(batch.id)
    assert cancelling.status in ("cancelling", "cancelled") and cancelling.cancelling_at is not None
    done = poll(lambda: (b := sdk.batches.retrieve(batch.id)).status == "cancelled" and b, timeout=120)
    # then it ends cancelled with part of the work, and the output holds exactly what finished
    assert done.request_counts is not None and 1 <= done.request_counts.completed < 20
    lines = output_lines(sdk, done.output_file_id)
    assert len(lines) == done.request_counts.completed
    assert len({line["custom_id"] for line in lines}) == len(lines)


def completed(sdk: openai.OpenAI, batch_id: str) -> int:
    counts = sdk.batches.retrieve(batch_id).request_counts
    return counts.completed if counts else 0


def test_otari_inline_batch_results_are_409_until_done(asgi_only: None, user: tuple[str, openai.OpenAI],
                                                      gateway: httpx.Client) -> None:
    _, sdk = user
    key = {"Authorization": f"Bearer {sdk.api_key}"}
    # given a batch in Otari's shape: a model and inline requests (on the newer /api/v1 prefix)
    requests = [{"custom_id": f"o-{i}", "body": {"messages": [{"role": "user", "content": f"Count to {i}"}],
                                                 "max_tokens": 4}} for i in range(4)]
    created = gateway.post("/api/v1/batches", params={"provider": "local"}, headers=key,
                           json={"model": "default", "requests": requests})
    assert created.status_code == 200, created.text
    batch = created.json()
    assert (batch["model"], batch["provider"], batch["request_counts"]["total"]) == ("default", "local", 4)
    # when its results are asked for at once: not yet
    early = gateway.get(f"/api/v1/batches/{batch['id']}/results", params={"provider": "local"}, headers=key)
    assert early.status_code == 409 and "not yet complete" in early.json()["error"]["message"]
    # then, once complete, one result per request, each a chat completion
    poll(lambda: gateway.get(f"/v1/batches/{batch['id']}", headers=key).json()["status"] == "completed", timeout=120)
    results = gateway.get(f"/v1/batches/{batch['id']}/results", params={"provider": "local"}, headers=key)
    assert results.status_code == 200
    entries = results.json()["results"]
    assert [e["custom_id"] for e in entries] == [f"o-{i}" for i in range(4)]
    assert all(e["error"] is None and e["result"]["object"] == "chat.completion" for e in entries)


def test_bad_input_is_refused_in_openai_error_shape(asgi_only: None, user: tuple[str, openai.OpenAI]) -> None:
    _, sdk = user
    # an unknown endpoint, a missing file, a bad window: 400/404 with OpenAI error objects
    with pytest.raises(openai.NotFoundError):
        sdk.batches.create(input_file_id="file-nope", endpoint="/v1/chat/completions", completion_window="24h")
    upload = sdk.files.create(file=("bad.jsonl", io.BytesIO(b'{"custom_id": "a"}\nnot json\n')), purpose="batch")
    with pytest.raises(openai.BadRequestError):
        sdk.batches.create(input_file_id=upload.id, endpoint="/v1/completions", completion_window="24h")
    with pytest.raises(openai.BadRequestError):
        sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions",
                           completion_window="2y")
    # and an input file with bad lines fails validation, each bad line named
    batch = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")
    failed = poll(lambda: (b := sdk.batches.retrieve(batch.id)).status == "failed" and b, timeout=60)
    assert failed.errors is not None and failed.failed_at is not None
    assert [(e.line, e.code) for e in failed.errors.data or []] == [(1, "invalid_method"),
                                                                  (2, "invalid_json_line")]
