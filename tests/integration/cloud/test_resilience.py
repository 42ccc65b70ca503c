"""Retries, timeouts, error mapping and alias fallbacks against scripted faults of the fake providers."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest

from isthmus.adapters.cloud.openai_provider import OpenAIProviderBackend
from isthmus.backends.cloud import FallbackBackend
from isthmus.errors import ApiError
from isthmus.ports.providers import ProviderTarget
from isthmus_contracts.internal import FinishEvent, TextDelta, TextPart
from local_runtime.ddb import free_port
from tests.integration.cloud.test_backends import ask, backend, collect
from tests.support.fake_providers import FakeProviders

pytestmark = pytest.mark.integration
PROTOCOLS = ["openai", "anthropic"]


def fails(coro: Any) -> ApiError:
    with pytest.raises(ApiError) as info:
        asyncio.run(coro)
    return info.value


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("streamed", [False, True])
def test_429_retried_honouring_retry_after(fake: FakeProviders, sleeps: list[float], protocol: str,
                                           streamed: bool) -> None:
    # given an upstream that rate-limits twice with Retry-After: 3
    model = f"r429-{protocol}-{streamed}-e429x2-ra3"
    b = backend(fake, protocol, model, max_retries=2)
    # when called
    if streamed:
        events = asyncio.run(collect(b, ask()))
        assert isinstance(events[-1], FinishEvent)
    else:
        assert asyncio.run(b.generate(ask())).content
    # then it was retried twice, each time after the delay the upstream asked for
    assert fake.count(model) == 3
    assert sleeps == [3.0, 3.0]


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_500_retried_with_jittered_backoff(fake: FakeProviders, sleeps: list[float], protocol: str) -> None:
    # given an upstream that fails once with 500
    model = f"r500-{protocol}-e500x1"
    # when called
    resp = asyncio.run(backend(fake, protocol, model).generate(ask()))
    # then one retry after a short jittered backoff, and the answer
    assert resp.content and fake.count(model) == 2
    assert len(sleeps) == 1 and 0 < sleeps[0] < 1


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_retries_exhausted(fake: FakeProviders, sleeps: list[float], protocol: str) -> None:
    # given upstreams that keep failing
    down, limited = f"x500-{protocol}-e500x99", f"x429-{protocol}-e429x99-ra7"
    # when called with two retries
    error = fails(backend(fake, protocol, down, max_retries=2).generate(ask()))
    limit = fails(backend(fake, protocol, limited, max_retries=1).generate(ask()))
    # then 1 + retries attempts each; 5xx is a 502, 429 stays a 429 carrying Retry-After
    assert fake.count(down) == 3 and error.status == 502
    assert fake.count(limited) == 2 and limit.status == 429 and limit.headers["Retry-After"] == "7"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize(("status", "expected"), [(400, 400), (401, 502), (404, 404)])
def test_client_errors_mapped_without_retry(fake: FakeProviders, sleeps: list[float], protocol: str, status: int,
                                            expected: int) -> None:
    # given an upstream answering a 4xx
    model = f"m{status}-{protocol}-e{status}x9"
    # when called
    error = fails(backend(fake, protocol, model).generate(ask()))
    # then no retry, and the caller's status: 400 keeps the upstream message, a refused key is a 502
    assert fake.count(model) == 1 and sleeps == []
    assert error.status == expected
    if status == 400:
        assert error.message == f"scripted 400 for {model}"


def test_connection_refused_retried_then_502(sleeps: list[float]) -> None:
    # given a provider address nothing listens on
    b = OpenAIProviderBackend(ProviderTarget(provider_id="gone", protocol="openai",
                                             api_base=f"http://127.0.0.1:{free_port()}/v1", alias="g",
                                             upstream_model="g", api_key="sk-x", max_retries=2))
    # when called
    error = fails(b.generate(ask()))
    # then retried (connection errors are before the first byte) and reported as a 502
    assert len(sleeps) == 2 and error.status == 502 and error.code == "upstream_unavailable"


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("streamed", [False, True])
def test_slow_first_byte_times_out_504_without_retry(fake: FakeProviders, sleeps: list[float], protocol: str,
                                                     streamed: bool) -> None:
    # given an upstream slower to its first byte than the provider's first-byte timeout
    model = f"slow-{protocol}-{streamed}-slow2"
    b = backend(fake, protocol, model, first_byte_timeout=0.3, whole_timeout=0.3)
    # when called
    error = fails(collect(b, ask()) if streamed else b.generate(ask()))
    # then a 504, tried once
    assert error.status == 504 and fake.count(model) == 1 and sleeps == []


def deltas_until_it_fails(fake: FakeProviders, protocol: str, model: str, text: str,
                          **options: Any) -> tuple[list[str], ApiError]:
    """Streams ``text`` from ``model`` until the stream fails: the text deltas that came first, and the error."""
    got: list[Any] = []

    async def run() -> None:
        async for event in backend(fake, protocol, model, **options).stream(ask(text)):
            got.append(event)

    error = fails(run())
    return [e.text for e in got if isinstance(e, TextDelta)], error


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_cut_mid_stream_is_not_retried(fake: FakeProviders, sleeps: list[float], protocol: str) -> None:
    # given an upstream that drops the connection after two deltas
    model = f"cut-{protocol}-cut"
    # when streamed
    deltas, error = deltas_until_it_fails(fake, protocol, model, "one two three four")
    # then the deltas before the cut arrived, then a 502 (the relay renders it in-band), and no retry
    assert deltas == ["echo:", " one"]
    assert error.status == 502 and fake.count(model) == 1 and sleeps == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_an_event_that_never_ends_is_a_502_not_a_growing_buffer(fake: FakeProviders, sleeps: list[float],
                                                                 protocol: str) -> None:
    # given an upstream that, after two deltas, sends 20 MiB of data lines and never the blank line ending them
    model = f"flood-{protocol}-flood"
    # when streamed
    deltas, error = deltas_until_it_fails(fake, protocol, model, "one two three")
    # then the deltas so far, then a 502 naming the bound (the parser stopped at 16 MiB), and no retry
    assert deltas == ["echo:", " one"]
    assert error.status == 502 and "over 16777216 bytes" in error.message
    assert fake.count(model) == 1 and sleeps == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
def test_idle_stream_times_out_504_without_retry(fake: FakeProviders, sleeps: list[float], protocol: str) -> None:
    # given an upstream that goes quiet mid-stream for longer than the idle timeout
    model = f"stall-{protocol}-stall2"
    # when streamed
    deltas, error = deltas_until_it_fails(fake, protocol, model, "one two three", idle_timeout=0.3)
    # then the deltas so far, then a 504, and no retry
    assert deltas == ["echo:", " one"]
    assert error.status == 504 and fake.count(model) == 1 and sleeps == []


@pytest.mark.parametrize("protocol", PROTOCOLS)
@pytest.mark.parametrize("fault", ["e500x99", "slow2", "e429x99"])
def test_fallback_alias_serves_when_the_first_fails_before_the_first_byte(
        fake: FakeProviders, sleeps: list[float], protocol: str, fault: str) -> None:
    # given an alias whose upstream fails (after its retries) and a fallback alias on the other protocol
    other = "anthropic" if protocol == "openai" else "openai"
    first = backend(fake, protocol, f"fb-{protocol}-{fault}", max_retries=1, first_byte_timeout=0.3,
                    whole_timeout=0.3)
    ok = f"fb-ok-{protocol}-{fault}x"  # no scripted fault: the token is not a whole dash-separated word
    second = backend(fake, other, ok)
    chain = FallbackBackend([first, second])
    # when answered whole and streamed
    whole = asyncio.run(chain.generate(ask()))
    events = asyncio.run(collect(FallbackBackend([first, second]), ask()))
    # then the fallback answered both
    assert whole.content == [TextPart(text="echo: hello there world")]
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "echo: hello there world"
    assert fake.count(ok) == 2


def test_no_fallback_on_a_client_error(fake: FakeProviders, sleeps: list[float]) -> None:
    # given an alias whose upstream rejects the request as invalid
    chain = FallbackBackend([backend(fake, "openai", "nofb-e400x9"), backend(fake, "openai", "nofb-ok")])
    # when called
    error = fails(chain.generate(ask()))
    # then the 400 is the caller's, and the fallback was never asked
    assert error.status == 400 and fake.count("nofb-ok") == 0


def test_no_fallback_after_the_first_byte(fake: FakeProviders, sleeps: list[float]) -> None:
    # given a streaming alias that breaks mid-stream, with a fallback
    chain = FallbackBackend([backend(fake, "anthropic", "late-cut"), backend(fake, "openai", "late-ok")])
    # when streamed
    error = fails(collect(chain, ask("one two three")))
    # then the break is reported and the fallback was never asked
    assert error.status == 502 and fake.count("late-ok") == 0
