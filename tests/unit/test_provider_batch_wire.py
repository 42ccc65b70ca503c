"""The wire of a batch handed to its provider (services/batches/provider_results.py): our lines as the provider's
input and the provider's result lines back as ours, with the usage each line is settled by; the lines' holds
packed onto the head and read back whole; ``ISTHMUS_BATCH_HANDOFF`` choosing the providers handed batches."""

from __future__ import annotations

from decimal import Decimal
from types import SimpleNamespace
from typing import Any, cast

import pytest

from isthmus.adapters.cloud.batch_api import CloudBatchApi
from isthmus.ports.providers import ProviderTarget
from isthmus.services.batches import provider_results as wire
from isthmus.services.batches.provider_batches import ProviderBatches
from isthmus.services.tenancy.gate import Admission, Principal


def test_an_openai_input_line_names_the_upstream_model_and_gets_an_output_bound_only_when_it_had_none() -> None:
    body = {"model": "team:gpt", "messages": [{"role": "user", "content": "hi"}], "stream": False}
    line = wire.openai_input_line("c1", "/v1/chat/completions", body, "gpt-up", 512)
    assert line == {"custom_id": "c1", "method": "POST", "url": "/v1/chat/completions",
                    "body": {"model": "gpt-up", "messages": body["messages"], "max_completion_tokens": 512}}
    bounded = wire.openai_input_line("c2", "/v1/chat/completions", {**body, "max_tokens": 8}, "gpt-up", 8)
    assert bounded["body"]["max_tokens"] == 8 and "max_completion_tokens" not in bounded["body"]


def test_an_anthropic_request_is_the_translated_chat_line_or_the_messages_line_as_written() -> None:
    translated = {"model": "claude-up", "messages": [{"role": "user", "content": [{"type": "text", "text": "x"}]}],
                  "max_tokens": 16}
    chat = wire.anthropic_request("c1", "/v1/chat/completions", {"model": "a"}, translated, "claude-up")
    assert chat == {"custom_id": "c1", "params": translated}
    native = wire.anthropic_request("c2", "/v1/messages", {"model": "a", "max_tokens": 5, "stream": False,
                                                           "messages": []}, translated, "claude-up")
    assert native == {"custom_id": "c2", "params": {"model": "claude-up", "max_tokens": 5, "messages": []}}


def test_openai_results_keep_the_custom_id_name_the_alias_and_carry_their_usage() -> None:
    row = {"id": "batch_req_1", "custom_id": "c1", "error": None, "response": {
        "status_code": 200, "request_id": "up", "body": {"object": "chat.completion", "model": "gpt-up",
                                                         "usage": {"prompt_tokens": 7, "completion_tokens": 3}}}}
    result, ok, usage = wire.from_openai(row, "team:gpt", "batch_x#0")
    assert ok and (usage.prompt_tokens, usage.completion_tokens) == (7, 3)
    assert result["custom_id"] == "c1" and result["response"]["request_id"] == "batch_x#0"
    assert result["response"]["body"]["model"] == "team:gpt"
    failed, ok, usage = wire.from_openai({"custom_id": "c2", "response": None,
                                          "error": {"code": "batch_expired", "message": "late"}}, "a", "b#1")
    assert not ok and failed["error"] == {"code": "batch_expired", "message": "late"} and usage.prompt_tokens == 0


def test_anthropic_results_become_chat_completions_and_errors_in_the_callers_dialect() -> None:
    message = {"id": "msg_1", "type": "message", "role": "assistant", "model": "claude-up",
               "content": [{"type": "text", "text": "hello"}], "stop_reason": "end_turn",
               "usage": {"input_tokens": 9, "output_tokens": 2}}
    api = CloudBatchApi()
    row = {"custom_id": "c1", "result": {"type": "succeeded", "message": message}}
    result, ok, usage = wire.from_anthropic(row, "team:claude", "/v1/chat/completions", "b#0", api.anthropic_answer)
    body = result["response"]["body"]
    assert ok and body["object"] == "chat.completion" and body["model"] == "team:claude"
    assert body["choices"][0]["message"]["content"] == "hello"
    assert (usage.prompt_tokens, usage.completion_tokens) == (9, 2)
    native, _, _ = wire.from_anthropic(row, "team:claude", "/v1/messages", "b#0", api.anthropic_answer)
    assert native["response"]["body"]["type"] == "message" and native["response"]["body"]["model"] == "team:claude"
    errored = {"custom_id": "c2", "result": {"type": "errored", "error": {"type": "error", "error": {
        "type": "invalid_request_error", "message": "too long"}}}}
    result, ok, _ = wire.from_anthropic(errored, "a", "/v1/chat/completions", "b#1", api.anthropic_answer)
    assert not ok and result["response"]["status_code"] == 400
    assert result["response"]["body"]["error"]["message"] == "too long"
    cancelled, ok, _ = wire.from_anthropic({"custom_id": "c3", "result": {"type": "canceled"}}, "a",
                                           "/v1/chat/completions", "b#2")
    assert not ok and cancelled["error"]["code"] == "batch_cancelled"


def test_holds_packed_on_the_head_read_back_as_the_admissions_they_were() -> None:
    principal = Principal(kind="key", key_id="k1", user_id="u1")
    admissions = {n: Admission(principal=principal, model="team:gpt", endpoint="/v1/chat/completions",
                               hold=Decimal("0.00123") * (n + 1), price={"input_price_per_million": "1"},
                               counts_toward_budget=True, reserved=True, hold_record=f"hold#{n}",
                               tokens_held=100 + n, tokens_bound=100 + n, admitted_at="2026-11-30T00:00:00Z")
                  for n in range(3)}
    packed = wire.pack_holds(admissions)
    for n, admission in admissions.items():
        assert wire.unpack_hold(packed, n) == admission
    assert wire.unpack_hold(packed, 7) is None and wire.pack_holds({}) is None


@pytest.mark.parametrize(("setting", "provider_id", "kind", "handed_off"), [
    ("auto", "gpt", "openai", True), ("auto", "claude", "anthropic", True), ("auto", "router", "openrouter", False),
    ("off", "gpt", "openai", False), ("router,claude", "router", "openrouter", True),
    ("openrouter", "router", "openrouter", True), ("router", "gpt", "openai", False)])
def test_the_hand_off_setting_picks_the_providers_whose_batches_go_to_their_batch_api(
        monkeypatch: pytest.MonkeyPatch, setting: str, provider_id: str, kind: str, handed_off: bool) -> None:
    # given ISTHMUS_BATCH_HANDOFF and a provider of a kind (its template)
    monkeypatch.setenv("ISTHMUS_BATCH_HANDOFF", setting)
    catalog = SimpleNamespace(provider_kind=lambda pid: kind if pid == provider_id else None)
    service: Any = SimpleNamespace(resolver=SimpleNamespace(catalog=catalog))
    engine = ProviderBatches(cast(Any, None), CloudBatchApi(), lambda: service, cast(Any, None), "w")
    target = ProviderTarget(provider_id=provider_id, protocol="openai", api_base="http://x", alias="a",
                            upstream_model="m")
    # then the batch is handed off or runs line by line as the setting says
    assert engine._wanted(target) is handed_off
