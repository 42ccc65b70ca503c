"""A cloud stream cut mid-answer is billed for what it delivered (DynamoDB Local): the prompt the provider
reported (Anthropic's message_start), else the estimate the hold was taken with (OpenAI reports usage only at
the end), and for the output the UTF-8 bytes delivered, an upper bound of its tokens."""

from __future__ import annotations

import asyncio
from decimal import Decimal
from typing import Any

import pytest

from isthmus import wiring
from isthmus.errors import ApiError
from isthmus.services.inference.inference import InferenceService, input_estimate
from isthmus_contracts.internal import InternalRequest, StartEvent, TextDelta
from tests.integration.cloud.test_backends import ask, backend
from tests.integration.test_gate_money import tenant, usage_rows
from tests.support.fake_providers import FakeProviders

pytestmark = pytest.mark.integration


class OneBackend:
    """A resolver that sends every request to one backend."""

    def __init__(self, serving: Any) -> None:
        self.serving = serving

    async def resolve(self, request: InternalRequest, *, endpoint: str,
                      axis_header: str | None = None) -> tuple[Any, InternalRequest]:
        return self.serving, request


@pytest.mark.parametrize("protocol", ["openai", "anthropic"])
def test_a_cut_cloud_stream_bills_the_reported_prompt_and_the_delivered_bytes(
        ddb_tables: str, fake: FakeProviders, protocol: str) -> None:
    # given a priced model served by a provider that drops the connection after two deltas
    model, user_id, secret = tenant(Decimal(10))
    gate = wiring.new_gate(leases=False)
    service = InferenceService(OneBackend(backend(fake, protocol, f"bill-{protocol}-cut")), gate)
    request = ask("one two three four", stream=True).model_copy(update={"model": model})
    got: list[Any] = []

    async def scenario() -> None:
        principal = await gate.authenticate({"x-api-key": secret})
        call = await service.begin(principal, request, endpoint="/v1/chat/completions", request_id=f"cut-{protocol}")
        # when the stream is relayed until it breaks
        with pytest.raises(ApiError):
            async for event in await service.open_stream(call):
                got.append(event)

    asyncio.run(scenario())
    delivered = "".join(e.text for e in got if isinstance(e, TextDelta))
    assert delivered == "echo: one"
    # then one usage row: an error, the delivered text's UTF-8 bytes as completion tokens, and the prompt the
    # provider reported at the start (Anthropic) or the hold's estimate (OpenAI says nothing before the end)
    (row,) = usage_rows(user_id)
    assert (row["status"], int(row["status_code"])) == ("error", 502)
    assert int(row["completion_tokens"]) == len(delivered.encode()) == 9
    start = got[0]
    assert isinstance(start, StartEvent)
    prompt = start.prompt_tokens if protocol == "anthropic" else input_estimate(request)
    assert prompt > 0 and int(row["prompt_tokens"]) == prompt
    # and it is billed at the price (1 USD per million in, 2 per million out)
    assert row["cost"] == (Decimal(prompt) + 2 * Decimal(9)) / Decimal(1_000_000)
