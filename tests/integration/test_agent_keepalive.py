"""A long prefill on the real agent (SmolLM2-135M on this CPU) is not mistaken for a frozen agent: the agent fills
the silence before the first token with blank keep-alive lines, so the gateway's idle bound can stay a few
seconds while a prefill takes longer than that."""

from __future__ import annotations

import asyncio
import json
import time
import uuid

import pytest

from isthmus.adapters import agent_http, agent_stream
from isthmus_contracts.internal import InternalRequest, Message, Sampling, TextPart
from tests.support.agents import AgentProcess

pytestmark = [pytest.mark.integration]
IDLE_S = 3.0


def long_prompt() -> InternalRequest:
    # ~700 tokens, unique so no prefix cache helps: a prefill of several seconds here (~3 s at 250 tok/s)
    text = f"{uuid.uuid4()} " + " ".join(f"The number {i} is interesting because" for i in range(100))
    return InternalRequest(model="m", messages=[Message(role="user", content=[TextPart(text=text)])],
                           sampling=Sampling(max_tokens=2))


def test_a_prefill_longer_than_the_idle_bound_is_kept_alive(smol_agent: AgentProcess,
                                                            monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("ISTHMUS_AGENT_IDLE_SECONDS", str(IDLE_S))

    async def scenario() -> tuple[int, float, list[str]]:
        # given a stream read under the gateway's idle bound (the reader open_stream uses)
        body = long_prompt().model_dump(mode="json", exclude_none=True) | {"stream": True}
        resp = await agent_http.stream("POST", f"{smol_agent.base}/agent/v1/generate", json_body=body,
                                       first_byte_timeout=agent_stream.first_byte_seconds(),
                                       idle_timeout=agent_stream.idle_seconds())
        blanks, gaps, kinds, last = 0, [], [], time.monotonic()
        try:
            async for line in resp.lines():
                now = time.monotonic()
                gaps.append(now - last)
                last = now
                if line.strip():
                    kinds.append(json.loads(line)["type"])
                else:
                    blanks += 1
        finally:
            await resp.aclose()
        return blanks, max(gaps), kinds

    blanks, widest_gap, kinds = asyncio.run(scenario())
    print(f"\nprefill kept alive: {blanks} keep-alive lines, widest gap {widest_gap:.2f} s (idle bound {IDLE_S} s)")
    # then blank lines came while the first token was computed, never a gap as wide as the bound, and the
    # answer is whole
    assert blanks >= 1 and widest_gap < IDLE_S
    assert kinds[0] == "start" and kinds[-1] == "finish" and "text" in kinds and "error" not in kinds
