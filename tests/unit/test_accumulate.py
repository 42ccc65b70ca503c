"""What a stream is billed for, also when it is cut (pure), and a whole answer abandoned by its client
(the inference service over an in-memory backend and a recording gate)."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any, cast

import pytest

from isthmus.errors import ApiError
from isthmus.services.inference.accumulate import StreamAccumulator, fold
from isthmus.services.inference.inference import Call, ClientGone, InferenceService
from isthmus_contracts.internal import (
    ErrorEvent,
    FinishEvent,
    InternalRequest,
    Message,
    ReasoningDelta,
    StartEvent,
    StreamEvent,
    TextDelta,
    TextPart,
    ToolCallEvent,
    Usage,
    UsageEvent,
)

START = StartEvent(id="gen-1", model="m", created=1, prompt_tokens=12)


def fed(*events: StreamEvent) -> StreamAccumulator:
    acc = StreamAccumulator("m")
    for event in events:
        acc.feed(event)
    return acc


def test_a_cut_agent_stream_bills_its_prompt_and_the_last_running_count() -> None:
    # given an agent stream cut after three deltas that carried running counts (held-back tokens included)
    acc = fed(START, TextDelta(text="Hel", completion_tokens=2), ReasoningDelta(text="hm", completion_tokens=5),
              TextDelta(text="lo", completion_tokens=7))
    # then it is billed the prompt from the start and the last count, not the text's length
    assert (acc.billable().prompt_tokens, acc.billable().completion_tokens) == (12, 7)
    assert acc.started and not acc.usage_reported and not acc.finished


def test_output_without_counts_is_billed_its_utf8_bytes() -> None:
    # given a provider stream that counts nothing before its end, cut after text, reasoning and a tool call
    acc = fed(StartEvent(id="c", model="m", created=1), TextDelta(text="héllo"), ReasoningDelta(text="€"),
              ToolCallEvent(index=0, id="call_1", name="f", arguments='{"a":1}'))
    # then each delivered byte counts as a token (an upper bound for byte-level tokenizers)
    assert acc.billable().completion_tokens == len("héllo".encode()) + len("€".encode()) + len('f{"a":1}') == 17


def test_bytes_after_the_last_count_are_added_to_it() -> None:
    acc = fed(START, TextDelta(text="ab", completion_tokens=4), TextDelta(text="cde"))
    assert acc.billable().completion_tokens == 4 + 3


def test_a_reported_usage_is_what_is_billed() -> None:
    # given a stream whose backend reported usage (at the end, or on its error event)
    done = fed(START, TextDelta(text="abc", completion_tokens=3),
               UsageEvent(usage=Usage(prompt_tokens=12, completion_tokens=4, cached_tokens=2)))
    failed = fed(START, TextDelta(text="abc", completion_tokens=3),
                 ErrorEvent(message="engine error", status=500, usage=Usage(prompt_tokens=12, completion_tokens=5)))
    # then that usage is billed as it is
    assert done.billable() == Usage(prompt_tokens=12, completion_tokens=4, cached_tokens=2)
    assert failed.billable() == Usage(prompt_tokens=12, completion_tokens=5) and failed.error is not None


async def _events(*events: StreamEvent) -> AsyncIterator[StreamEvent]:
    for event in events:
        yield event


def test_fold_makes_the_whole_answer_or_an_api_error() -> None:
    # a finished stream folds into the answer
    acc = StreamAccumulator("m")
    resp = asyncio.run(fold(_events(START, TextDelta(text="hi", completion_tokens=1), UsageEvent(
        usage=Usage(prompt_tokens=12, completion_tokens=1)), FinishEvent(reason="stop")), acc))
    assert resp.content == [TextPart(text="hi")] and resp.usage.completion_tokens == 1 and resp.id == "gen-1"
    # an error event is an ApiError with its status; a stream that stops short is a 502
    with pytest.raises(ApiError) as err:
        asyncio.run(fold(_events(START, ErrorEvent(message="unloaded", status=503)), StreamAccumulator()))
    assert err.value.status == 503
    with pytest.raises(ApiError) as err:
        asyncio.run(fold(_events(START, TextDelta(text="x")), StreamAccumulator()))
    assert err.value.status == 502


class EndlessBackend:
    """Streams a start and ten counted deltas, then nothing more until it is closed."""

    name = "endless"
    whole_from_stream = True

    def __init__(self) -> None:
        self.sent = asyncio.Event()
        self.closed = False

    async def stream(self, request: InternalRequest) -> AsyncIterator[StreamEvent]:
        try:
            yield START
            for n in range(1, 11):
                yield TextDelta(text="x", completion_tokens=n)
            self.sent.set()
            await asyncio.Event().wait()
        finally:
            self.closed = True


class RecordingGate:
    def __init__(self) -> None:
        self.settled: list[dict[str, Any]] = []

    async def settle(self, admission: Any, **fields: Any) -> None:
        self.settled.append(fields)


def test_a_whole_answer_whose_client_hangs_up_is_cancelled_and_billed_for_what_was_generated() -> None:
    backend, gate = EndlessBackend(), RecordingGate()
    service = InferenceService(cast(Any, None), cast(Any, gate))
    request = InternalRequest(model="m", messages=[Message(role="user", content=[TextPart(text="go")])])
    call = Call(cast(Any, backend), request, "/v1/chat/completions", "req-1", admission=cast(Any, object()))

    async def scenario() -> None:
        # given a whole answer in the making, when its client hangs up once ten tokens are generated
        with pytest.raises(ClientGone):
            await service.complete(call, client_gone=backend.sent.wait)
        # then the cancellation used to stop it does not stay on the caller's task
        task = asyncio.current_task()
        assert task is not None and task.cancelling() == 0

    asyncio.run(scenario())
    # then the backend stream was closed (the agent sees its connection drop) and the request was settled once,
    # cancelled with 499, for its prompt and the ten tokens generated
    assert backend.closed
    assert len(gate.settled) == 1
    settled = gate.settled[0]
    assert (settled["status"], settled["status_code"]) == ("cancelled", 499)
    assert (settled["prompt_tokens"], settled["completion_tokens"]) == (12, 10)


def test_an_openai_provider_reporting_usage_on_every_chunk_is_billed_its_count_when_cut() -> None:
    from isthmus.adapters.cloud.openai_provider import _StreamDecoder

    # given a provider that sends usage with every chunk (continuous usage stats), cut after two chunks
    decoder = _StreamDecoder("m")
    acc = StreamAccumulator("m")
    for n, text in enumerate(["Bonjour", " à tous"], start=1):
        for event in decoder.feed({"id": "c1", "choices": [{"index": 0, "delta": {"content": text}}],
                                   "usage": {"prompt_tokens": 30, "completion_tokens": 2 * n}}):
            acc.feed(event)
    # then the bill is the provider's own count, not the byte-length bound (17 bytes)
    assert (acc.billable().prompt_tokens, acc.billable().completion_tokens) == (30, 4)
