"""Decider over a node agent: asks the decider model (``/agent/v1/generate``, not streamed) which axis fits."""

from __future__ import annotations

from isthmus_contracts.internal import InternalRequest, InternalResponse, Message, Sampling, TextPart

from isthmus.adapters.agent_client import AgentClient
from isthmus.errors import ApiError
from isthmus.routing.failover import first_connecting
from isthmus.routing.resolver import NodeTarget


class AgentDecider:
    def __init__(self, agents: AgentClient, max_tokens: int = 24) -> None:
        self.agents = agents
        self.max_tokens = max_tokens

    async def decide(self, base_urls: list[str], model: str, prompt: str) -> str:
        request = InternalRequest(model=model, messages=[Message(role="user", content=[TextPart(text=prompt)])],
                                  sampling=Sampling(max_tokens=self.max_tokens, temperature=0),
                                  enable_thinking=False)
        body = request.model_dump(mode="json")

        async def attempt(target: NodeTarget) -> InternalResponse:
            status, data = await self.agents.request("POST", target.base_url, "/agent/v1/generate", body)
            if status >= 400:
                raise ApiError(502, f"decider answered {status}", code="agent_error")
            return InternalResponse.model_validate(data)

        targets = [NodeTarget(node_id=url, base_url=url) for url in base_urls]
        _, response = await first_connecting(targets, attempt)
        return "".join(getattr(p, "text", "") for p in response.content if p.type == "text")
