"""`isthmus dev`'s supervision and port checks on real processes and sockets (no mocks): a crashing child is
restarted with backoff and given up on after repeated fast crashes; a taken port is seen as taken, and a
listener is attributed to the process that really owns it."""

from __future__ import annotations

import os
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from local_runtime.process import GaveUp, RestartPolicy, Supervised, owns_port, port_free, spawn, stop
from tests.support.waiting import poll

FAST = RestartPolicy(give_up_after=3, fast_seconds=30.0, first_delay=0.05, max_delay=0.1)


@pytest.fixture
def listener() -> Iterator[socket.socket]:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        s.listen()
        yield s


def test_a_child_that_keeps_crashing_is_restarted_then_given_up_on_with_its_log(tmp_path: Path) -> None:
    # given a child that fails at once every time, supervised with a fast policy
    log = tmp_path / "logs" / "crasher.log"
    said: list[str] = []
    child = Supervised("crasher", lambda: spawn([sys.executable, "-c", "import sys; print('bad config'); "
                                                 "sys.exit(3)"], log=log),
                       lambda proc: False, policy=FAST, say=said.append, log=log)
    child.launch()

    # when the supervisor ticks until it gives up
    def gave_up() -> str | None:
        try:
            child.tick()
        except GaveUp as exc:
            return str(exc)
        return None

    message = poll(gave_up, timeout=30, interval=0.02)
    # then it restarted twice, saying so with the exit code and the log's last lines, and then gave up
    assert [line.split(" (")[0] for line in said if "restarted" in line] == ["crasher restarted"] * 2
    restarting = [line for line in said if "restarting in" in line]
    assert len(restarting) == 2 and all("exited with code 3" in line and "bad config" in line for line in restarting)
    assert "crashed 3 times in a row" in message and "giving up" in message and "bad config" in message
    assert log.read_text().count("starting ") == 3


def test_a_killed_child_is_restarted_and_reported_back_when_ready(tmp_path: Path) -> None:
    # given a long-running child that is ready as soon as it runs
    said: list[str] = []
    child = Supervised("sleeper", lambda: spawn([sys.executable, "-c", "import time; time.sleep(60)"],
                                                log=tmp_path / "sleeper.log"),
                       lambda proc: proc.poll() is None, policy=FAST, say=said.append)
    child.launch()
    first = child.proc
    assert first is not None

    def ticked_until(condition: Callable[[], bool]) -> Callable[[], bool]:
        def check() -> bool:
            child.tick()
            return condition()
        return check

    try:
        poll(ticked_until(lambda: child.ready), timeout=10)
        # when it is killed from outside
        first.kill()
        # then it is restarted under a new pid and reported back
        poll(ticked_until(lambda: child.ready and child.pid != first.pid), timeout=10)
        assert any("was killed by SIGKILL" in line and "restarting in 0.1 s" in line for line in said)
        assert said[-1] == f"sleeper is back (pid {child.pid})"
    finally:
        child.stop()
        stop(first)


def test_a_listening_port_is_taken_and_owned_by_its_listener_only(listener: socket.socket) -> None:
    # given a port this test process listens on
    port = int(listener.getsockname()[1])
    # then it is not free, it belongs to this process, and not to another one
    assert not port_free(port)
    assert owns_port(os.getpid(), port) is True
    other = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(30)"])
    try:
        assert owns_port(other.pid, port) is False
    finally:
        other.kill()
        other.wait()


def test_a_closed_port_is_free_and_owned_by_nobody() -> None:
    # given a port nobody listens on any more
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port = int(s.getsockname()[1])
    # then it is free and this process does not own it
    assert port_free(port)
    assert owns_port(os.getpid(), port) is False
