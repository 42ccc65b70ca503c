"""`isthmus dev`'s supervision and port checks on real processes and sockets (no mocks): a crashing child is
restarted with backoff and given up on after repeated fast crashes; a hung child (SIGSTOP) is killed and
restarted; a tied child dies with its parent even when the parent is SIGKILLed; recorded children a killed
supervisor left are stopped, but never a process that merely reused a pid; a taken port is seen as taken, and
a listener is attributed to the process that really owns it."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
from collections.abc import Callable, Iterator
from pathlib import Path

import psutil
import pytest

from local_runtime.child_records import ChildRecords
from local_runtime.ddb import free_port
from local_runtime.process import (
    GaveUp,
    Liveness,
    RestartPolicy,
    Supervised,
    http_answers,
    owns_port,
    port_free,
    spawn,
    stop,
)
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


def ticked_until(child: Supervised, condition: Callable[[], bool]) -> Callable[[], bool]:
    """A poll condition that first lets the supervisor look at its child (what `isthmus dev`'s loop does)."""
    def check() -> bool:
        child.tick()
        return condition()
    return check


def test_a_killed_child_is_restarted_and_reported_back_when_ready(tmp_path: Path) -> None:
    # given a long-running child that is ready as soon as it runs
    said: list[str] = []
    child = Supervised("sleeper", lambda: spawn([sys.executable, "-c", "import time; time.sleep(60)"],
                                                log=tmp_path / "sleeper.log"),
                       lambda proc: proc.poll() is None, policy=FAST, say=said.append)
    child.launch()
    first = child.proc
    assert first is not None

    try:
        poll(ticked_until(child, lambda: child.ready), timeout=10)
        # when it is killed from outside
        first.kill()
        # then it is restarted under a new pid and reported back
        poll(ticked_until(child, lambda: child.ready and child.pid != first.pid), timeout=10)
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


SLEEP = [sys.executable, "-c", "import time; time.sleep(60)"]


def gone(pid: int) -> bool:
    """No such process, or only a zombie left (whoever reaps orphans here may take its time)."""
    try:
        return psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return True


def test_a_tied_child_dies_with_its_parent_even_by_sigkill_and_an_untied_one_does_not(tmp_path: Path) -> None:
    # given a parent process that spawns one tied and one untied child, then just waits
    script = ("import sys, time; from local_runtime.process import spawn\n"
              f"tied = spawn({SLEEP!r}, tied=True); free = spawn({SLEEP!r})\n"
              "print(tied.pid, free.pid, flush=True); time.sleep(60)")
    parent = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True)
    assert parent.stdout is not None
    tied, free = (int(p) for p in parent.stdout.readline().split())
    try:
        assert not gone(tied) and not gone(free)
        # when the parent is killed outright (no handler, no cleanup of its own)
        parent.kill()
        parent.wait(timeout=10)
        # then the tied child is gone within seconds, while the untied one lives on (what macOS does to both)
        poll(lambda: gone(tied), timeout=10, interval=0.05)
        assert not gone(free)
    finally:
        for pid in (tied, free):
            if not gone(pid):
                os.kill(pid, signal.SIGKILL)


def test_recorded_children_left_running_are_stopped_but_a_reused_pid_is_left_alone(tmp_path: Path) -> None:
    # given a data dir's record naming a child still running, and one whose pid is now another process
    left = spawn(SLEEP)
    other = subprocess.Popen(SLEEP)
    try:
        records = ChildRecords(tmp_path)
        records.write({"node agent": left.pid, "edge": other.pid})
        entries = json.loads(records.path.read_text())
        entries[1]["started"] -= 100.0  # as if "edge" had been a process that started earlier with this pid
        records.path.write_text(json.dumps(entries))
        # when the next start looks for children a killed `isthmus dev` left
        said: list[str] = []
        stopped = ChildRecords(tmp_path).stop_stale(said.append)
        # then the recorded child is stopped and said so, the other process is untouched, and the record is gone
        assert stopped == [left.pid] and gone(left.pid)
        assert said == [f"stopped node agent (pid {left.pid}) left running by a previous `isthmus dev` on this "
                        "data dir"]
        assert other.poll() is None and not records.path.exists()
    finally:
        for proc in (left, other):
            proc.kill()
            proc.wait()


def test_a_hung_child_is_killed_and_restarted_once_it_misses_its_probes(tmp_path: Path) -> None:
    # given an HTTP server child, probed on its URL once ready
    port = free_port()
    url = f"http://127.0.0.1:{port}/"
    said: list[str] = []
    child = Supervised("server", lambda: spawn([sys.executable, "-m", "http.server", "--bind", "127.0.0.1",
                                                str(port)], log=tmp_path / "server.log"),
                       lambda proc: http_answers(url, 1.0), policy=FAST, say=said.append, alive_url=url,
                       liveness=Liveness(interval=0.2, timeout=0.5, misses=3))
    child.launch()
    first = child.proc
    assert first is not None

    try:
        poll(ticked_until(child, lambda: child.ready), timeout=20)
        # when it hangs without exiting
        os.kill(first.pid, signal.SIGSTOP)
        # then after three unanswered probes it is killed, said so, restarted and serves again
        poll(ticked_until(child, lambda: child.ready and child.pid != first.pid), timeout=30)
        assert first.poll() == -signal.SIGKILL
        assert f"server (pid {first.pid}) did not answer {url} 3 times in a row (0.5 s each): killing it (SIGKILL)" \
            in said
        assert any(line.startswith("server hung after") and "restarting in" in line for line in said)
        assert http_answers(url, 5.0)
    finally:
        child.stop()
        if first.poll() is None:
            os.kill(first.pid, signal.SIGCONT)
            stop(first)
