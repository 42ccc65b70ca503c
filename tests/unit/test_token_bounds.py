"""Token bounds of a budget hold (isthmus.services.inference.token_bounds) and the money rules around them
(isthmus.services.tenancy.money.worst_case, capped): fast, no store, no model."""

from __future__ import annotations

import asyncio
import itertools
from decimal import Decimal
from typing import Any

import pytest

from isthmus.services.inference import token_bounds as tb
from isthmus.services.tenancy import money as m
from isthmus_contracts.agent import TokenizeRequest, TokenizeResponse
from isthmus_contracts.internal import InternalRequest


def chat(text: str, **extra: Any) -> InternalRequest:
    return InternalRequest.model_validate(
        {"model": "m", "messages": [{"role": "user", "content": [{"type": "text", "text": text}]}], **extra})


class CountingBackend:
    """An agent-protocol backend whose tokenizer counts one token per character, and counts its calls."""

    name = "agent:test"

    def __init__(self, context_length: int | None = 100, default_max_tokens: int | None = 512) -> None:
        self.calls = 0
        self.context_length, self.default_max_tokens = context_length, default_max_tokens

    async def prompt_count(self, request: TokenizeRequest) -> TokenizeResponse:
        self.calls += 1
        await asyncio.sleep(0.01)  # a round trip: concurrent callers find the count in flight
        chars = sum(len(text) for msg in request.messages for p in msg.content
                    if isinstance(text := getattr(p, "text", None), str))
        return TokenizeResponse(prompt_tokens=chars + 20, model="m", context_length=self.context_length,
                                default_max_tokens=self.default_max_tokens)


@pytest.fixture(autouse=True)
def fresh_counts() -> None:
    tb.counts.clear()


def test_worst_case_covers_every_usage_up_to_the_bound() -> None:
    # given a price whose lower tier is dearer, with a cache-read rate above the input rate
    price = {"input_price_per_million": Decimal(3), "output_price_per_million": Decimal(5),
             "cache_read_price_per_million": Decimal(4),
             "pricing_tiers": [{"min_input_tokens": 10, "input_price_per_million": Decimal(1),
                                "output_price_per_million": Decimal(2)},
                               {"min_input_tokens": 1000, "input_price_per_million": Decimal(9)}]}
    # when the hold is taken for 50 prompt and 20 output tokens
    hold = m.worst_case(price, input_tokens=50, max_output_tokens=20)
    # then no usage within those counts costs more, however many prompt tokens are cached
    for prompt, completion in itertools.product(range(51), range(21)):
        for cached in (0, prompt // 2, prompt):
            assert m.cost(price, prompt_tokens=prompt, completion_tokens=completion, cached_tokens=cached) <= hold
    # and the tier that starts above the bound plays no part
    assert hold == (50 * Decimal(4) + 20 * Decimal(5)) / m.MILLION


def test_capped_charges_at_most_the_hold() -> None:
    assert m.capped(Decimal("0.5"), Decimal("0.7")) == (Decimal("0.5"), Decimal(0))
    assert m.capped(Decimal("0.9"), Decimal("0.7")) == (Decimal("0.7"), Decimal("0.2"))


def test_needs_token_count_only_for_token_prices_above_zero() -> None:
    assert not m.needs_token_count(None)
    assert not m.needs_token_count({"unit": "requests", "input_price_per_million": 5})
    assert not m.needs_token_count({"input_price_per_million": 0, "output_price_per_million": 0})
    assert m.needs_token_count({"input_price_per_million": 0, "output_price_per_million": 1})


def test_byte_bound_counts_utf8_bytes_and_allowances() -> None:
    ascii_bound, cjk_bound = tb.byte_bound(chat("hello")), tb.byte_bound(chat("日本語"))
    assert ascii_bound == tb.PER_REQUEST_TOKENS + tb.PER_MESSAGE_TOKENS + len("user") + 5
    assert cjk_bound == ascii_bound - 5 + 9  # three characters of three bytes each
    image = InternalRequest.model_validate({"model": "m", "messages": [{"role": "user", "content": [
        {"type": "image", "media_type": "image/png", "data": "A" * 100_000}]}]})
    # an image is held at its allowance, not at its encoding's size
    assert tb.byte_bound(image) == tb.PER_REQUEST_TOKENS + tb.PER_MESSAGE_TOKENS + len("user") + tb.PER_IMAGE_TOKENS
    tools = chat("hi", tools=[{"name": "f", "description": "d"}])
    assert tb.byte_bound(tools) > tb.byte_bound(chat("hi")) + tb.TOOLS_PREAMBLE_TOKENS


def test_passthrough_bound_covers_token_arrays_and_media() -> None:
    ids = list(range(1000, 1500))
    assert tb.passthrough_bound({"model": "e", "input": [ids]}) >= len(ids)
    text = tb.passthrough_bound({"model": "e", "input": "ab"})
    with_image = tb.passthrough_bound({"model": "e", "input": [
        {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "A" * 50_000}}]})
    assert tb.PER_IMAGE_TOKENS < with_image < 3 * tb.PER_IMAGE_TOKENS
    assert text < tb.PER_REQUEST_TOKENS + 32
    assert tb.passthrough_bound({"model": "e", "input": "ab", "schema": {"type": ["string", "null"]}}) > text


def test_exact_count_is_cached_and_shared_by_concurrent_requests() -> None:
    backend = CountingBackend()

    async def scenario() -> list[tb.TokenBound]:
        # when 20 requests with one prompt ask for their bound at once, and then one more
        bounds = await asyncio.gather(*(tb.bound_for(backend, chat("hello", sampling={"max_tokens": 5}))
                                        for _ in range(20)))
        bounds.append(await tb.bound_for(backend, chat("hello", sampling={"max_tokens": 5})))
        # and another prompt, or the same prompt with another tool choice, is asked for
        bounds.append(await tb.bound_for(backend, chat("hello!", sampling={"max_tokens": 5})))
        bounds.append(await tb.bound_for(backend, chat("hello", tools=[{"name": "f"}],
                                                       tool_choice={"mode": "tool", "name": "f"})))
        return bounds

    bounds = asyncio.run(scenario())
    # then the backend counted each distinct prompt once
    assert backend.calls == 3
    assert {(b.input_tokens, b.output_tokens, b.exact) for b in bounds[:21]} == {(25, 5, True)}
    assert bounds[21].input_tokens == 26


def test_no_max_tokens_holds_the_agents_default_within_its_context_and_sends_it() -> None:
    async def bounded(backend: Any, request: InternalRequest) -> tuple[tb.TokenBound, InternalRequest]:
        tb.counts.clear()  # counts are cached per model and prompt: each case is another agent's answer
        bound = tb.RequestBound(backend, request)
        return await bound(), bound.bounded_request()

    # given an agent with a 100-token context and a 512-token default: 25 prompt tokens leave 75
    held, sent = asyncio.run(bounded(CountingBackend(), chat("hello")))
    assert (held.output_tokens, held.output_defaulted) == (75, True)
    assert sent.sampling.max_tokens == 75
    # given a long context, the agent's own default bounds it
    held, sent = asyncio.run(bounded(CountingBackend(context_length=100_000), chat("hello")))
    assert held.output_tokens == sent.sampling.max_tokens == 512
    # given a max named by the caller, it is the bound and the request is sent unchanged
    named = chat("hello", sampling={"max_tokens": 7})
    held, sent = asyncio.run(bounded(CountingBackend(), named))
    assert held.output_tokens == 7 and not held.output_defaulted and sent is named


def test_backend_without_a_tokenizer_gets_the_byte_bound_and_the_configured_max(
        monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_DEFAULT_MAX_OUTPUT_TOKENS", "300")

    class Cloud:
        name = "openai"

    bound = tb.RequestBound(Cloud(), chat("hello"))
    held = asyncio.run(bound())
    assert held == tb.TokenBound(tb.byte_bound(chat("hello")), 300, output_defaulted=True, exact=False)
    assert bound.bounded_request().sampling.max_tokens == 300


def test_a_failed_count_is_not_cached() -> None:
    class Flaky(CountingBackend):
        async def prompt_count(self, request: TokenizeRequest) -> TokenizeResponse:
            self.calls += 1
            if self.calls == 1:
                raise RuntimeError("agent went away")
            return await super().prompt_count(request)

    backend = Flaky()
    with pytest.raises(RuntimeError):
        asyncio.run(tb.bound_for(backend, chat("hello")))
    assert asyncio.run(tb.bound_for(backend, chat("hello"))).input_tokens == 25
