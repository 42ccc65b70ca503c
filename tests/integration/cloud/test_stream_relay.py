"""The cloud stream relay's transport: a stream read to its protocol's last event keeps its pooled connection."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from isthmus_contracts.internal import FinishEvent
from tests.integration.cloud.test_backends import ask, backend
from tests.support.fake_providers import FakeProviders

pytestmark = pytest.mark.integration


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_streams_in_turn_share_one_connection(fake: FakeProviders, protocol: str) -> None:
    # given a provider backend
    model = f"reuse-{protocol}"
    b = backend(fake, protocol, model)

    async def three_streams() -> list[list[Any]]:
        return [[e async for e in b.stream(ask())] for _ in range(3)]

    # when three streams run one after the other on one event loop
    runs = asyncio.run(three_streams())
    # then each ended with its finish
    assert all(isinstance(events[-1], FinishEvent) for events in runs)
    # and all three came over the same upstream connection (a stream closed before its body's end would have
    # dropped it, and each next call would have connected anew)
    peers = {r["peer"] for r in fake.requests if r["body"].get("model") == model}
    assert len(peers) == 1, peers


def test_a_provider_that_lingers_after_its_last_event_does_not_hold_the_stream(fake: FakeProviders) -> None:
    # given an OpenAI-protocol provider that keeps the response open for 10 s after [DONE]
    b = backend(fake, "openai", "linger10")

    async def timed_stream() -> tuple[list[Any], float]:
        loop = asyncio.get_running_loop()
        started = loop.time()
        events = [e async for e in b.stream(ask())]
        return events, loop.time() - started

    # when streamed
    events, took = asyncio.run(timed_stream())
    # then the stream ends with its finish, long before the provider closes the response (the body's end is
    # waited for a bounded moment only)
    assert isinstance(events[-1], FinishEvent)
    assert took < 8
