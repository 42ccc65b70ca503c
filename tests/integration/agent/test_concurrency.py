"""Continuous batching, client disconnects and the queue bound, against real agent processes."""

from __future__ import annotations

import contextlib
import json
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from tests.support.agents import AgentProcess, request_body

pytestmark = [pytest.mark.integration]
LONG = 200_000  # random weights never end: these streams run until the test lets go (tiny context: 262144)


class OpenStream:
    """A streaming generation read on a thread, so several can be open at once."""

    def __init__(self, agent: AgentProcess, **body: Any) -> None:
        self.events: list[dict[str, Any]] = []
        self.after_all_active = 0  # text events received once every stream was in the batch
        self.all_active = threading.Event()
        self.release = threading.Event()
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._read, args=(agent.base, body), daemon=True)
        self._thread.start()

    def _read(self, base: str, body: dict[str, Any]) -> None:
        try:
            with httpx.Client(base_url=base, timeout=60) as client, \
                    client.stream("POST", "/agent/v1/generate", json=request_body(stream=True, **body)) as r:
                for line in r.iter_lines():
                    if line:
                        self.events.append(json.loads(line))
                        if self.all_active.is_set() and self.events[-1]["type"] in ("text", "reasoning"):
                            self.after_all_active += 1
                    if self.release.is_set() or (self.all_active.is_set() and self.after_all_active >= 5):
                        return  # closing the response disconnects the client
        except BaseException as exc:  # surfaced by the test
            self.error = exc

    def join(self) -> None:
        self._thread.join(timeout=60)


def test_four_concurrent_requests_are_generated_together(tiny_agent: AgentProcess) -> None:
    # given four long generations submitted at once
    streams = [OpenStream(tiny_agent, text=f"story {i}", max_tokens=LONG) for i in range(4)]
    # when the agent reports all four as active sequences of one batch
    status = tiny_agent.wait_for(lambda s: s["active"] == 4)
    for s in streams:
        s.all_active.set()
    for s in streams:
        s.join()
    # then each stream kept receiving tokens while the other three were generating
    assert status["busy"] and status["queue_depth"] == 0
    assert all(s.error is None for s in streams), [s.error for s in streams]
    assert all(s.after_all_active >= 5 for s in streams)
    # and the slots are freed once the clients go away
    tiny_agent.wait_for(lambda s: s["active"] == 0 and not s["busy"])


def test_disconnect_stops_generation_and_frees_the_slot(tiny_agent: AgentProcess) -> None:
    # given a stream that would run for a long time
    stream = OpenStream(tiny_agent, text="never ending", max_tokens=LONG)
    tiny_agent.wait_for(lambda s: s["active"] == 1)
    # when the client disconnects
    stream.release.set()
    stream.join()
    # then the agent stops that sequence
    status = tiny_agent.wait_for(lambda s: s["active"] == 0)
    assert status["queue_depth"] == 0
    assert stream.events[0]["type"] == "start"
    assert not [e for e in stream.events if e["type"] == "finish"]


@pytest.fixture()
def one_slot_agent(tiny_model: Path, agent_logs: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess(str(tiny_model), "--max-batch", "1", "--max-queue", "1", "--no-loop-guard",
                         log_dir=agent_logs)
    yield agent
    agent.stop()


def test_full_queue_answers_503_with_retry_after(one_slot_agent: AgentProcess) -> None:
    # given one sequence generating and one waiting
    running = OpenStream(one_slot_agent, text="a", max_tokens=LONG)
    one_slot_agent.wait_for(lambda s: s["active"] == 1)
    waiting = OpenStream(one_slot_agent, text="b", max_tokens=LONG)
    one_slot_agent.wait_for(lambda s: s["queue_depth"] == 1)
    # when a third request arrives
    r = one_slot_agent.generate(text="c", max_tokens=2)
    # then it is turned away politely
    assert r.status_code == 503
    assert r.headers["retry-after"].isdigit()
    assert "capacity" in r.json()["detail"]
    running.release.set()
    waiting.release.set()
    running.join()
    waiting.join()
    one_slot_agent.wait_for(lambda s: s["active"] == 0 and s["queue_depth"] == 0)


@pytest.mark.slow
def test_lone_sequence_joining_the_batch_mid_generation_keeps_its_output(smol_agent: AgentProcess) -> None:
    # given the greedy answer of a request that runs alone (single-sequence fast path)
    story = "Write a short story about a dragon."
    alone = smol_agent.stream(text=story, max_tokens=24)
    # when the same request runs again and a second one arrives after its fifth token
    joined = OpenStream(smol_agent, text=story, max_tokens=24)
    for _ in range(1200):  # wait (up to a minute) for the fifth token
        if len([e for e in joined.events if e["type"] == "text"]) >= 5:
            break
        threading.Event().wait(0.05)
    other = smol_agent.stream(text="Tell me about cats.", max_tokens=8)
    joined.join()  # reads to the end: nothing releases it early
    # then moving into the batch changed nothing: same tokens, same finish
    assert [e["type"] for e in other][-1] == "finish"
    assert "".join(e["text"] for e in joined.events if e["type"] == "text") == \
        "".join(e["text"] for e in alone if e["type"] == "text")


def test_sequences_finished_inside_the_batch_are_cached_for_their_sessions(tiny_agent: AgentProcess) -> None:
    # given two sessions whose first turns are generated together in one batch
    sessions = [f"batch-{i}-{threading.get_ident()}" for i in range(2)]
    firsts: list[dict[str, Any]] = [{}, {}]

    def turn1(i: int) -> None:
        firsts[i] = tiny_agent.generate(text=f"first question {i}", max_tokens=300,
                                        session_id=sessions[i]).json()

    threads = [threading.Thread(target=turn1, args=(i,)) for i in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    # when each session sends its next turn
    for i, session in enumerate(sessions):
        history = [{"role": "user", "content": [{"type": "text", "text": f"first question {i}"}]},
                   {"role": "assistant", "content": [{"type": "text", "text": "ok"}]},
                   {"role": "user", "content": [{"type": "text", "text": "next"}]}]
        usage = tiny_agent.generate(messages=history, max_tokens=2, session_id=session).json()["usage"]
        # then the shared prefix came from that session's cache
        assert usage["cached_tokens"] > 0, (i, usage)


def test_loop_guard_stops_a_repeating_tail(tiny_agent: AgentProcess) -> None:
    # given a random-weight model (it repeats) and the guard switched on for this request
    events = tiny_agent.stream(text="hello", max_tokens=2000, metadata={"loop_guard": True})
    # then generation stops early with the guard flag set
    finish = events[-1]
    assert finish["type"] == "finish" and finish["loop_guard"] is True and finish["reason"] == "stop"
    assert events[-2]["usage"]["completion_tokens"] < 2000


def test_non_streaming_client_that_gives_up_frees_its_slot(tiny_agent: AgentProcess) -> None:
    # given a non-streaming request that would take very long, from a client with a short timeout
    def impatient() -> None:
        with httpx.Client(base_url=tiny_agent.base, timeout=httpx.Timeout(60, read=1.0)) as client, \
                contextlib.suppress(httpx.ReadTimeout):
            client.post("/agent/v1/generate", json=request_body(max_tokens=LONG))

    caller = threading.Thread(target=impatient)
    caller.start()
    tiny_agent.wait_for(lambda s: s["active"] == 1)
    caller.join()
    # when the client has hung up, then the agent notices and stops generating
    tiny_agent.wait_for(lambda s: s["active"] == 0)
