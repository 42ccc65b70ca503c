"""Batch intake and the batch object, without a store: the input file checked line by line into OpenAI's errors
shape, Otari's inline requests, completion windows, the wire object, and the dispatcher's interactive-first wait."""

from __future__ import annotations

import asyncio
import json

from isthmus.services.batches.intake import CreateOtariBatch, inline_lines, parse_input
from isthmus.services.batches.model import Batch, window_seconds
from isthmus.services.batches.runner import Priority

CHAT = "/v1/chat/completions"


def line(custom_id: str, **over: object) -> str:
    return json.dumps({"custom_id": custom_id, "method": "POST", "url": CHAT,
                       "body": {"model": "m", "messages": [{"role": "user", "content": "hi"}]}, **over})


def test_a_good_file_becomes_numbered_lines_and_blank_lines_are_skipped() -> None:
    lines, errors = parse_input(f"{line('a')}\n\n{line('b')}\n".encode(), CHAT)
    assert errors == []
    assert [(x["n"], x["custom_id"]) for x in lines] == [(0, "a"), (1, "b")]


def test_every_bad_line_is_named_with_its_number_and_code() -> None:
    raw = "\n".join([line("a"), "{not json", line("a"), line("c", method="GET"), line("d", url="/v1/embeddings"),
                     json.dumps({"custom_id": "e", "method": "POST", "url": CHAT, "body": "text"}),
                     line("f", body={"stream": True}), json.dumps([1]), line("")]).encode()
    _, errors = parse_input(raw, CHAT)
    assert [(e["line"], e["code"]) for e in errors] == [
        (2, "invalid_json_line"), (3, "duplicate_custom_id"), (4, "invalid_method"), (5, "mismatched_endpoint"),
        (6, "missing_required_parameter"), (7, "invalid_value"), (8, "invalid_json_line"),
        (9, "missing_required_parameter")]


def test_an_empty_or_binary_file_fails_as_a_whole() -> None:
    assert [e["code"] for e in parse_input(b"\n\n", CHAT)[1]] == ["empty_file"]
    assert [e["code"] for e in parse_input(b"\xff\xfe", CHAT)[1]] == ["invalid_file_format"]


def test_otari_inline_requests_refuse_a_repeated_custom_id() -> None:
    body = CreateOtariBatch.model_validate({"model": "m", "requests": [
        {"custom_id": "x", "body": {"messages": []}}, {"custom_id": "x", "body": {"messages": []}}]})
    lines, problem = inline_lines(body)
    assert lines == [] and problem is not None and "'x'" in problem


def test_completion_windows_are_whole_hours_up_to_a_week() -> None:
    assert window_seconds("24h") == 86400 and window_seconds("1h") == 3600 and window_seconds("168h") == 604800
    assert [window_seconds(w) for w in ("0h", "169h", "24", "1d", "h", "024h")] == [None] * 6


def test_the_wire_object_is_openais_with_otaris_extras_only_when_set() -> None:
    batch = Batch(batch_id="batch_1", owner_id="u", endpoint=CHAT, input_file_id="file-1", expires_at=9,
                  total=3, completed=1, failed=1, errors=[{"code": "x", "message": "m", "param": None, "line": 1}])
    body = batch.to_openai()
    assert body["object"] == "batch" and body["request_counts"] == {"total": 3, "completed": 1, "failed": 1}
    assert body["errors"] == {"object": "list", "data": batch.errors}
    assert "model" not in body and "provider" not in body and "owner_id" not in body
    otari = batch.model_copy(update={"model": "m", "provider": "p"}).to_openai()
    assert (otari["model"], otari["provider"]) == ("m", "p")


def test_a_line_waits_while_interactive_requests_are_in_flight() -> None:
    # given a process busy with interactive requests for the next three checks
    checks: list[bool] = [True, True, True]
    priority = Priority(per_model=1, busy=lambda: checks.pop() if checks else False)
    # when a batch line asks for its turn
    slot = asyncio.run(priority.turn("m"))
    # then it went only once the process was idle, holding a slot of its pool
    assert checks == [] and slot.locked()


def test_the_wait_for_interactive_requests_is_bounded() -> None:
    # given a process that is never idle and a short bound
    priority = Priority(per_model=1, busy=lambda: True)
    priority.yield_s = 0.1
    # when a batch line asks for its turn, it still gets it (a batch moves under steady traffic)
    asyncio.run(asyncio.wait_for(priority.turn("m"), 10))


def test_lines_wait_while_their_pool_has_requests_queued_and_share_its_cap() -> None:
    # given a pool whose agents report a queue for the next two looks, and two models on that one pool
    queued = [True, True]

    async def pools(model: str) -> tuple[str, bool]:
        return "mlx:cluster-a", bool(queued and queued.pop())

    priority = Priority(per_model=2, busy=lambda: False, pools=pools)

    async def two_turns() -> tuple[asyncio.Semaphore, asyncio.Semaphore]:
        return await priority.turn("alias"), await priority.turn("concrete/model")

    first, second = asyncio.run(two_turns())
    # then the first went once the queue was empty, and both hold slots of the same pool (now full)
    assert queued == [] and first is second and first.locked()
