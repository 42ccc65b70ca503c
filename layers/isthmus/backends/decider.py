"""Decider over a node agent: asks the decider model (``/agent/v1/generate``, not streamed) which axis fits."""

from __future__ import annotations

from isthmus.adapters.agent_stream import generate
from isthmus.backends.first_byte import first_connecting
from isthmus.routing.resolver import NodeTarget
from isthmus_contracts.internal import InternalRequest, Message, Sampling, TextPart


class AgentDecider:
    def __init__(self, max_tokens: int = 24) -> None:
        self.max_tokens = max_tokens

    async def decide(self, base_urls: list[str], model: str, prompt: str) -> str:
        request = InternalRequest(model=model, messages=[Message(role="user", content=[TextPart(text=prompt)])],
                                  sampling=Sampling(max_tokens=self.max_tokens, temperature=0),
                                  enable_thinking=False)
        targets = [NodeTarget(node_id=url, base_url=url) for url in base_urls]
        _, response = await first_connecting(targets, lambda t: generate(t.base_url, request))
        return "".join(getattr(p, "text", "") for p in response.content if p.type == "text")
