"""Generation through the agent adapter with failover before the first byte, against a live agent
process and a dead port on loopback."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import pytest

from isthmus.adapters.agent_stream import generate, open_stream
from isthmus.backends.first_byte import first_connecting
from isthmus.routing.affinity import NodeTracker
from isthmus.routing.failover import NoNodeAvailable
from isthmus.routing.resolver import NodeTarget
from isthmus_contracts.internal import InternalRequest
from local_runtime.ddb import free_port
from tests.support.control_agents import AgentSpec, RunningAgent, start_agent

pytestmark = pytest.mark.integration
REQUEST = InternalRequest.model_validate({"model": "tiny", "session_id": "s",
                                          "messages": [{"role": "user", "content": [{"type": "text", "text": "hey"}]}]})


@pytest.fixture(scope="module")
def agents(tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, RunningAgent]]:
    root = tmp_path_factory.mktemp("stream")
    started = {"live": start_agent(AgentSpec(node_id="live", models_dir=root / "live", model="tiny")),
               "empty": start_agent(AgentSpec(node_id="empty", models_dir=root / "empty"))}
    yield started
    for agent in started.values():
        agent.stop()


def dead() -> NodeTarget:
    return NodeTarget(node_id="dead", base_url=f"http://127.0.0.1:{free_port()}")


def test_stream_fails_over_from_a_dead_node_and_yields_every_event(agents: dict[str, RunningAgent]) -> None:
    live = NodeTarget(node_id="live", base_url=agents["live"].base_url)

    async def run() -> tuple[str, list[Any]]:
        target, stream = await first_connecting([dead(), live],
                                                lambda t: open_stream(t.base_url, REQUEST), nodes=NodeTracker())
        async with stream:
            return target.node_id, [e async for e in stream.events()]

    node, events = asyncio.run(run())
    assert node == "live"
    assert [e.type for e in events] == ["start", "text", "usage", "finish"]
    assert events[1].text == "[live] tiny: hey" and events[2].usage.cached_tokens == 0


def test_whole_generation_fails_over_too(agents: dict[str, RunningAgent]) -> None:
    live = NodeTarget(node_id="live", base_url=agents["live"].base_url)
    target, response = asyncio.run(first_connecting([dead(), live], lambda t: generate(t.base_url, REQUEST),
                                                    nodes=NodeTracker()))
    assert target.node_id == "live" and response.content[0].text == "[live] tiny: hey"  # type: ignore[union-attr]


def test_an_agent_that_is_not_serving_is_skipped(agents: dict[str, RunningAgent]) -> None:
    empty = NodeTarget(node_id="empty", base_url=agents["empty"].base_url)  # up, but nothing loaded: 503
    live = NodeTarget(node_id="live", base_url=agents["live"].base_url)
    target, stream = asyncio.run(first_connecting([empty, live], lambda t: open_stream(t.base_url, REQUEST),
                                                  nodes=NodeTracker()))
    asyncio.run(stream.aclose())
    assert target.node_id == "live"
    with pytest.raises(NoNodeAvailable) as err:
        asyncio.run(first_connecting([empty, dead()], lambda t: generate(t.base_url, REQUEST), nodes=NodeTracker()))
    assert err.value.status == 503 and "empty" in err.value.message and "dead" in err.value.message
