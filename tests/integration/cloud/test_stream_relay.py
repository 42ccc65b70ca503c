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
