"""InferenceBackend over the node agents of a pool (one agent is a pool of one): failover before the
first byte, in-flight counting per node while it streams, and a hook once a node has taken the request
(session pinning). A node failing after the first byte is a 502 the relay turns into an in-band error."""

from __future__ import annotations

from collections.abc import AsyncIterator, Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any

from isthmus.adapters import agent_stream
from isthmus.adapters.agent_stream import AgentStreamBroken
from isthmus.backends.first_byte import first_connecting
from isthmus.errors import ApiError
from isthmus.routing.affinity import tracker
from isthmus.routing.resolver import NodeTarget
from isthmus.services.inference.accumulate import StreamAccumulator, fold
from isthmus_contracts.agent import TokenizeRequest, TokenizeResponse
from isthmus_contracts.internal import InternalRequest, InternalResponse, StreamEvent

Served = Callable[[NodeTarget], Awaitable[None]]
RAW_TIMEOUT_S = 600.0  # a whole embeddings answer: 300k tokens (OpenAI's cap) on a CPU node take minutes


@dataclass
class RawAnswer:
    """An agent's whole JSON answer in the shape the raw passthrough reads (as an httpx response)."""

    status_code: int
    headers: dict[str, str]
    content: bytes

    async def aread(self) -> bytes:
        return self.content

    async def aclose(self) -> None:
        return None


class PoolBackend:
    def __init__(self, targets: Sequence[NodeTarget], *, name: str, on_served: Served | None = None) -> None:
        if not targets:
            raise ApiError(503, f"{name}: no node is up to serve this model.", code="no_node_available")
        self.targets = list(targets)
        self.name = name
        self.on_served = on_served
        self.served_by: str | None = None

    async def _served(self, target: NodeTarget) -> None:
        self.served_by = target.node_id
        if self.on_served is not None:
            await self.on_served(target)

    # A whole answer is the agent's stream folded here, never the agent's own non-streamed answer: the running
    # token counts on its events tell the gateway what was generated when the call is abandoned midway (the
    # inference service folds stream() itself for that reason), and dropping the stream stops the agent.
    whole_from_stream = True

    async def generate(self, request: InternalRequest) -> InternalResponse:
        return await fold(self.stream(request), StreamAccumulator(request.model))

    async def stream(self, request: InternalRequest) -> AsyncIterator[StreamEvent]:
        target, opened = await first_connecting(
            self.targets, lambda t: agent_stream.open_stream(t.base_url, request, api_key=t.api_key))
        await self._served(target)
        with tracker.track(target.node_id):
            try:
                async for event in opened.events():
                    yield event
            except AgentStreamBroken as exc:
                tracker.mark_failed(target.node_id)  # broken or silent past the idle bound: others first for a while
                raise ApiError(502, f"node {target.node_id} failed mid-answer: {exc}",
                               code="backend_stream_broken") from None
            finally:
                await opened.aclose()

    async def raw(self, path: str, body: dict[str, Any]) -> RawAnswer:
        """An OpenAI raw call the agents serve themselves (``/embeddings``) at ``/agent/v1{path}``, from the first
        node that connects; the body goes as given (its model already the pool's concrete one)."""
        target, resp = await first_connecting(
            self.targets,
            lambda t: agent_stream.call_json(t.base_url, path, body, RAW_TIMEOUT_S, api_key=t.api_key))
        await self._served(target)
        return RawAnswer(resp.status, {"content-type": resp.headers.get("content-type", "application/json")},
                         resp.body)

    async def count_tokens(self, request: TokenizeRequest) -> int | None:
        _, count = await first_connecting(
            self.targets, lambda t: agent_stream.tokenize(t.base_url, request, api_key=t.api_key))
        return count

    async def prompt_count(self, request: TokenizeRequest) -> TokenizeResponse:
        """The exact prompt tokens and the output bounds the node reports (the budget hold's count)."""
        _, counted = await first_connecting(
            self.targets, lambda t: agent_stream.tokenize_response(t.base_url, request, api_key=t.api_key))
        return counted


def single_agent(base_url: str, api_key: str | None = None) -> PoolBackend:
    return PoolBackend([NodeTarget(node_id=base_url, base_url=base_url, api_key=api_key)], name=f"agent:{base_url}")
