"""Batches for a cloud alias handed to the provider's own batch API: the openai SDK against the local edge
(DynamoDB Local, the in-process batch worker), the fake providers on loopback speaking OpenAI's files + batches
and Anthropic's Message Batches. The provider sees one uploaded file and one batch (or one Message Batch), never
a chat call per line; the results come back as our output and error files with the caller's custom_ids and the
alias as the model; each line is one usage row of the batch's user, settled from the provider's usage; a cancel
goes through to the provider; a refused batch, or a line the budget cannot hold, fails at validation; a provider
kind without a batch API (OpenRouter) runs the lines one by one."""

from __future__ import annotations

import io
import json
import uuid
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import openai
import pytest
from openai.types.chat import ChatCompletion

from local_runtime.process import stop
from tests.conftest import start_edge
from tests.support.batch_edge import MASTER, usage_rows
from tests.support.fake_providers import FakeProviders
from tests.support.waiting import poll

pytestmark = pytest.mark.e2e
KEY = "sk-batchapi-" + uuid.uuid4().hex
ALIASES = {"gpt": "gpt-up", "gpt-hold": "gpt-up-hold", "gpt-refused": "gpt-up-nobatch", "claude": "claude-up",
           "claude-hold": "claude-up-hold"}


@pytest.fixture(scope="module")
def gateway(ddb_tables: str, fake: FakeProviders, tmp_path_factory: pytest.TempPathFactory) -> Iterator[httpx.Client]:
    tmp: Path = tmp_path_factory.mktemp("provider-batches")
    proc, base = start_edge("asgi", env={
        "ISTHMUS_MASTER_KEY": MASTER, "ISTHMUS_FILES_DIR": str(tmp / "files"),
        "ISTHMUS_LOCAL_KEY_FILE": str(tmp / "provider.key"), "ISTHMUS_CLOUD_CATALOG_SECONDS": "0",
        "ISTHMUS_ROUTING_CACHE_SECONDS": "0", "ISTHMUS_BATCH_POLL_SECONDS": "0.2",
        "ISTHMUS_BATCH_PROVIDER_POLL_SECONDS": "0"})
    tag = uuid.uuid4().hex[:6]
    try:
        with httpx.Client(base_url=base, headers={"Authorization": f"Bearer {MASTER}"}, timeout=60) as admin:
            def published(*names: str) -> list[dict[str, str]]:
                return [{"alias": f"{tag}:{n}", "upstream_model": ALIASES[n]} for n in names]

            providers = {
                f"gpt-{tag}": {"template": "openai", "api_base": fake.openai_base, "api_key": KEY, "max_retries": 0,
                               "published": published("gpt", "gpt-hold", "gpt-refused")},
                f"claude-{tag}": {"template": "anthropic", "api_base": fake.anthropic_base, "api_key": KEY,
                                  "published": published("claude", "claude-hold")},
                f"router-{tag}": {"template": "openrouter", "api_base": fake.openai_base, "api_key": KEY,
                                  "published": [{"alias": f"{tag}:routed", "upstream_model": "routed-up"}]},
            }
            for provider_id, body in providers.items():
                resp = admin.put(f"/admin/providers/{provider_id}", json=body)
                assert resp.status_code == 200, resp.text
            admin.headers["x-test-tag"] = tag
            yield admin
    finally:
        stop(proc)


def alias(gateway: httpx.Client, name: str) -> str:
    return f"{gateway.headers['x-test-tag']}:{name}"


def user_on(gateway: httpx.Client, models: list[str], max_budget: float = 10) -> tuple[str, openai.OpenAI]:
    """A user with a budget and a key; each of ``models`` at 1 USD per million input and 2 per million output."""
    for model in models:
        gateway.post("/v1/pricing", json={"model_key": model, "input_price_per_million": 1,
                                          "output_price_per_million": 2}).raise_for_status()
    budget = gateway.post("/v1/budgets", json={"max_budget": max_budget, "budget_duration_sec": 86400}).json()
    user_id = f"pb-{uuid.uuid4().hex[:6]}"
    gateway.post("/v1/users", json={"user_id": user_id, "budget_id": budget["budget_id"]}).raise_for_status()
    key = gateway.post("/v1/keys", json={"user_id": user_id}).json()["key"]
    return user_id, openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0, timeout=60)


def jsonl(model: str, texts: list[str], max_tokens: int = 16) -> io.BytesIO:
    rows = [{"custom_id": f"line-{i}", "method": "POST", "url": "/v1/chat/completions",
             "body": {"model": model, "max_tokens": max_tokens, "messages": [{"role": "user", "content": text}]}}
            for i, text in enumerate(texts)]
    return io.BytesIO("".join(json.dumps(r) + "\n" for r in rows).encode())


def start(sdk: openai.OpenAI, model: str, texts: list[str], max_tokens: int = 16) -> Any:
    upload = sdk.files.create(file=("in.jsonl", jsonl(model, texts, max_tokens)), purpose="batch")
    return sdk.batches.create(input_file_id=upload.id, endpoint="/v1/chat/completions", completion_window="24h")


def finished(sdk: openai.OpenAI, batch_id: str) -> Any:
    return poll(lambda: (b := sdk.batches.retrieve(batch_id)).status in ("completed", "failed", "cancelled") and b,
                timeout=60)


def file_lines(sdk: openai.OpenAI, file_id: str | None) -> list[dict[str, Any]]:
    assert file_id is not None
    return [json.loads(line) for line in sdk.files.content(file_id).text.splitlines() if line.strip()]


def calls_to(fake: FakeProviders, path: str, model: str | None = None) -> list[dict[str, Any]]:
    return [r for r in fake.requests if r["path"] == path and (model is None or r["body"].get("model") == model)]


def settled(gateway: httpx.Client, user_id: str, lines: int) -> tuple[list[dict[str, Any]], float]:
    rows = poll(lambda: len(r := usage_rows(gateway, user_id)) >= lines and r)
    spend = poll(lambda: (u := gateway.get(f"/v1/users/{user_id}").json())["reserved"] == 0 and u)["spend"]
    return rows, float(spend)


def test_an_openai_alias_batch_goes_through_the_providers_files_and_batches(gateway: httpx.Client,
                                                                            fake: FakeProviders) -> None:
    model = alias(gateway, "gpt")
    user_id, sdk = user_on(gateway, [model])
    uploads_before = len(calls_to(fake, "/openai/v1/files"))
    chats_before = len(calls_to(fake, "/openai/v1/chat/completions", "gpt-up"))
    # given a batch of three chat requests to an OpenAI-protocol alias, one of which the provider refuses
    batch = start(sdk, model, ["alpha", "beta", "a bad-line here"])
    # when the edge's worker runs it
    done = finished(sdk, batch.id)
    # then it completed through the provider's batch API: one upload (purpose batch, the upstream model in each
    # line, an output bound), one batch, no chat call per line
    assert done.status == "completed", done.errors
    uploads = [r for r in calls_to(fake, "/openai/v1/files") if b"gpt-up" in r["body"]["bytes"]]
    assert len(calls_to(fake, "/openai/v1/files")) == uploads_before + 1 and len(uploads) == 1
    assert uploads[0]["body"]["purpose"] == "batch"
    sent = [json.loads(line) for line in uploads[0]["body"]["bytes"].decode().splitlines()]
    assert [s["custom_id"] for s in sent] == ["line-0", "line-1", "line-2"]
    assert all(s["body"]["model"] == "gpt-up" and s["body"]["max_tokens"] == 16 for s in sent)
    created = [r for r in calls_to(fake, "/openai/v1/batches") if r["body"]["input_file_id"]]
    assert created[-1]["body"]["endpoint"] == "/v1/chat/completions"
    assert len(calls_to(fake, "/openai/v1/chat/completions", "gpt-up")) == chats_before
    # and the counts, the output file (the alias as the model, custom_ids kept) and the error file map back
    assert done.request_counts is not None
    assert (done.request_counts.total, done.request_counts.completed, done.request_counts.failed) == (3, 2, 1)
    output = file_lines(sdk, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == ["line-0", "line-1"]
    for line in output:
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.model == model and completion.choices[0].message.content.startswith("echo: ")
    errors = file_lines(sdk, done.error_file_id)
    assert [(e["custom_id"], e["response"]["status_code"]) for e in errors] == [("line-2", 400)]
    # and each line is one usage row of the user (request_id <batch>#<line>), settled from the provider's usage
    rows, spend = settled(gateway, user_id, 3)
    assert sorted(r["request_id"] for r in rows) == [f"{batch.id}#{n}" for n in range(3)]
    by_line = {r["request_id"]: r for r in rows}
    usage = {line["custom_id"]: line["response"]["body"]["usage"] for line in output}
    assert by_line[f"{batch.id}#0"]["prompt_tokens"] == usage["line-0"]["prompt_tokens"]
    assert by_line[f"{batch.id}#0"]["status"] == "success" and by_line[f"{batch.id}#2"]["status"] == "error"
    assert spend > 0 and spend == pytest.approx(sum(float(r["cost"]) for r in rows), rel=1e-9)


def test_an_anthropic_alias_batch_goes_through_message_batches(gateway: httpx.Client, fake: FakeProviders) -> None:
    model = alias(gateway, "claude")
    user_id, sdk = user_on(gateway, [model])
    # given a batch of two chat completion requests to an Anthropic-protocol alias
    batch = start(sdk, model, ["one", "two"], max_tokens=32)
    # when it runs
    done = finished(sdk, batch.id)
    # then one Message Batch was created, its params translated to Anthropic messages, and no single calls made
    assert done.status == "completed", done.errors
    created = [r for r in calls_to(fake, "/anthropic/v1/messages/batches")
               if r["body"]["requests"][0]["params"]["model"] == "claude-up"]
    assert len(created) == 1
    params = [req["params"] for req in created[0]["body"]["requests"]]
    assert [p["max_tokens"] for p in params] == [32, 32]
    assert params[0]["messages"] == [{"role": "user", "content": [{"type": "text", "text": "one"}]}]
    assert calls_to(fake, "/anthropic/v1/messages", "claude-up") == []
    # and the results came back as chat completions named by the alias
    output = file_lines(sdk, done.output_file_id)
    assert sorted(line["custom_id"] for line in output) == ["line-0", "line-1"]
    for line in output:
        completion = ChatCompletion.model_validate(line["response"]["body"])
        assert completion.model == model and completion.object == "chat.completion"
        assert completion.choices[0].message.content in ("echo: one", "echo: two")
    rows, spend = settled(gateway, user_id, 2)
    assert sorted(r["request_id"] for r in rows) == [f"{batch.id}#0", f"{batch.id}#1"]
    assert all(r["status"] == "success" and r["completion_tokens"] > 0 for r in rows) and spend > 0


@pytest.mark.parametrize(("name", "cancel_path"), [("gpt-hold", "/openai/v1/batches/{}/cancel"),
                                                   ("claude-hold", "/anthropic/v1/messages/batches/{}/cancel")])
def test_a_cancel_goes_through_to_the_provider(gateway: httpx.Client, fake: FakeProviders, name: str,
                                               cancel_path: str) -> None:
    model = alias(gateway, name)
    user_id, sdk = user_on(gateway, [model])
    # given a handed-off batch the provider is still working on
    batch = start(sdk, model, ["first", "second", "third"])
    poll(lambda: sdk.batches.retrieve(batch.id).status == "in_progress", timeout=30)
    upstream = ALIASES[name]
    remote = poll(lambda: [b for b in fake.batch_apis.batches.values()
                           if upstream in json.dumps(b.get("_lines") or b.get("_requests"))], timeout=30)[-1]
    # when the caller cancels it
    assert sdk.batches.cancel(batch.id).status in ("cancelling", "cancelled")
    done = finished(sdk, batch.id)
    # then the cancel reached the provider, and the batch ends cancelled with what finished there
    assert calls_to(fake, cancel_path.format(remote["id"]))
    assert done.status == "cancelled"
    output = file_lines(sdk, done.output_file_id)
    assert [line["custom_id"] for line in output] == ["line-0"]
    never_ran = file_lines(sdk, done.error_file_id)
    assert sorted(e["custom_id"] for e in never_ran) == ["line-1", "line-2"]
    assert all(e["error"]["code"] == "batch_cancelled" for e in never_ran)
    # and the holds of the lines that never ran are given back (nothing stays reserved)
    rows, spend = settled(gateway, user_id, 3)
    assert [r["status"] for r in sorted(rows, key=lambda r: r["request_id"])] == ["success", "error", "error"]
    assert spend == pytest.approx(float(next(r["cost"] for r in rows if r["status"] == "success")), rel=1e-9)


def test_a_batch_the_provider_refuses_fails_with_its_message(gateway: httpx.Client) -> None:
    model = alias(gateway, "gpt-refused")
    user_id, sdk = user_on(gateway, [model])
    # given a batch to an alias whose provider answers 400 to the batch
    batch = start(sdk, model, ["x", "y"])
    # then it fails at validation with the provider's message, and no hold stays taken
    done = finished(sdk, batch.id)
    assert done.status == "failed" and done.errors is not None and done.errors.data
    assert "scripted: no batches" in (done.errors.data[0].message or "")
    assert poll(lambda: gateway.get(f"/v1/users/{user_id}").json()["reserved"] == 0)


def test_a_batch_whose_holds_do_not_all_fit_the_budget_fails_at_validation(gateway: httpx.Client,
                                                                           fake: FakeProviders) -> None:
    model = alias(gateway, "gpt")
    # given a user whose budget holds two lines of 1000 output tokens, not three
    user_id, sdk = user_on(gateway, [model], max_budget=0.005)
    uploads = len(calls_to(fake, "/openai/v1/files"))
    batch = start(sdk, model, ["a", "b", "c"], max_tokens=1000)
    # then the batch fails at validation naming the line refused (lines are admitted 16 at a time), nothing
    # reached the provider, and nothing is held
    done = finished(sdk, batch.id)
    assert done.status == "failed" and done.errors is not None
    assert done.errors.data[0].code == "budget_exceeded" and done.errors.data[0].line in (1, 2, 3)
    assert len(calls_to(fake, "/openai/v1/files")) == uploads
    assert float(poll(lambda: (u := gateway.get(f"/v1/users/{user_id}").json())["reserved"] == 0 and u)["spend"]) == 0


def test_a_provider_without_a_batch_api_runs_the_lines_one_by_one(gateway: httpx.Client, fake: FakeProviders) -> None:
    model = "or:" + alias(gateway, "routed")  # the openrouter template prefixes its aliases
    _, sdk = user_on(gateway, [model])
    # given a batch to an OpenRouter alias (the default hands off for openai and anthropic providers only)
    batch = start(sdk, model, ["r1", "r2"])
    done = finished(sdk, batch.id)
    # then each line was one chat call, and no batch was created there
    assert done.status == "completed", done.errors
    assert done.request_counts is not None and done.request_counts.completed == 2
    assert len(calls_to(fake, "/openai/v1/chat/completions", "routed-up")) == 2
    assert not [r for r in calls_to(fake, "/openai/v1/files") if b"routed-up" in r["body"]["bytes"]]


def test_an_otari_inline_batch_and_a_messages_batch_are_handed_off_too(gateway: httpx.Client,
                                                                       fake: FakeProviders) -> None:
    gpt, claude = alias(gateway, "gpt"), alias(gateway, "claude")
    _, sdk = user_on(gateway, [gpt, claude])
    key = {"Authorization": f"Bearer {sdk.api_key}"}
    uploads = len(calls_to(fake, "/openai/v1/files"))
    # given Otari's inline shape naming the OpenAI alias once for all its requests
    requests = [{"custom_id": f"o-{i}", "body": {"messages": [{"role": "user", "content": f"inline {i}"}],
                                                 "max_tokens": 8}} for i in range(2)]
    created = gateway.post("/api/v1/batches", headers=key, json={"model": gpt, "requests": requests})
    assert created.status_code == 200, created.text
    inline_id = created.json()["id"]
    # and a /v1/messages batch (Anthropic bodies) to the Anthropic alias
    rows = [{"custom_id": "m-0", "method": "POST", "url": "/v1/messages",
             "body": {"model": claude, "max_tokens": 8, "messages": [{"role": "user", "content": "native"}]}}]
    upload = sdk.files.create(file=("m.jsonl", io.BytesIO(json.dumps(rows[0]).encode() + b"\n")), purpose="batch")
    messages = sdk.batches.create(input_file_id=upload.id, endpoint="/v1/messages", completion_window="24h")
    # then the inline batch went through one upload and its results are chat completions named by the alias
    poll(lambda: gateway.get(f"/v1/batches/{inline_id}", headers=key).json()["status"] == "completed", timeout=60)
    assert len(calls_to(fake, "/openai/v1/files")) == uploads + 1
    results = gateway.get(f"/v1/batches/{inline_id}/results", headers=key).json()["results"]
    assert [r["custom_id"] for r in results] == ["o-0", "o-1"]
    assert all(r["error"] is None and r["result"]["model"] == gpt for r in results)
    # and the messages batch came back as Anthropic messages, its params sent as written (upstream model)
    done = finished(sdk, messages.id)
    assert done.status == "completed", done.errors
    sent = [r for r in calls_to(fake, "/anthropic/v1/messages/batches")
            if r["body"]["requests"][0]["custom_id"] == "m-0"][-1]["body"]["requests"][0]["params"]
    assert sent == {"model": "claude-up", "max_tokens": 8, "messages": [{"role": "user", "content": "native"}]}
    [line] = file_lines(sdk, done.output_file_id)
    assert line["response"]["body"]["type"] == "message" and line["response"]["body"]["model"] == claude
    assert line["response"]["body"]["content"][0]["text"] == "echo: native"


def test_a_key_whose_rate_limit_refuses_a_line_runs_its_batch_line_by_line(gateway: httpx.Client,
                                                                           fake: FakeProviders) -> None:
    model = alias(gateway, "gpt")
    user_id, _ = user_on(gateway, [model])
    # given a key allowed 2 requests a minute, and a batch of 3 lines
    key = gateway.post("/v1/keys", json={"user_id": user_id, "rpm_limit": 2}).json()["key"]
    sdk = openai.OpenAI(base_url=f"{gateway.base_url}/v1", api_key=key, max_retries=0, timeout=60)
    batches_before = len(calls_to(fake, "/openai/v1/batches"))
    chats_before = len(calls_to(fake, "/openai/v1/chat/completions", "gpt-up"))
    batch = start(sdk, model, ["p", "q", "r"])
    # then the hand-off was called off before the provider saw it (holds given back), and the lines ran here, one
    # chat call each, at the key's pace (what the limit refused is a 429 line)
    done = finished(sdk, batch.id)
    assert done.status == "completed" and len(calls_to(fake, "/openai/v1/batches")) == batches_before
    counts = done.request_counts
    assert counts is not None and counts.completed + counts.failed == 3 and counts.failed >= 1
    assert len(calls_to(fake, "/openai/v1/chat/completions", "gpt-up")) - chats_before == counts.completed
    assert {e["response"]["status_code"] for e in file_lines(sdk, done.error_file_id)} == {429}
    assert poll(lambda: gateway.get(f"/v1/users/{user_id}").json()["reserved"] == 0)
