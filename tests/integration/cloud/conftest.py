"""Cloud provider tests: the fake OpenAI / Anthropic server on loopback, and recorded retry delays."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from isthmus.adapters.cloud import transport
from tests.support.fake_providers import FakeProviders


@pytest.fixture(scope="session")
def fake() -> Iterator[FakeProviders]:
    server = FakeProviders().start()
    yield server
    server.stop()


@pytest.fixture()
def sleeps(monkeypatch: pytest.MonkeyPatch) -> list[float]:
    """Retry delays the transport asked for (recorded instead of waited)."""
    delays: list[float] = []

    async def record(delay: float) -> None:
        delays.append(delay)

    monkeypatch.setattr(transport, "sleep", record)
    return delays
