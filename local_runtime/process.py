"""Child processes for `isthmus dev`: each in its own process group, logged to a file, restarted when it
crashes or stops answering its health URL (with backoff, giving up after repeated fast crashes), all stopped on
SIGINT/SIGTERM, and on Linux killed by the kernel when `isthmus dev` itself dies (even by SIGKILL)."""

from __future__ import annotations

import contextlib
import ctypes
import os
import shutil
import signal
import socket
import subprocess
import sys
import threading
import time
import urllib.error
import urllib.request
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path


class ShutdownFlag:
    """Set by SIGINT/SIGTERM; the main thread polls it between checks on its children."""

    def __init__(self) -> None:
        self.event = threading.Event()
        for sig in (signal.SIGINT, signal.SIGTERM):
            signal.signal(sig, self._set)

    def _set(self, signum: int, frame: object) -> None:
        self.event.set()

    def wait(self, timeout: float) -> bool:
        return self.event.wait(timeout)

    def is_set(self) -> bool:
        return self.event.is_set()


def open_log(path: Path, what: str) -> int:
    """A child's log file (appended to across restarts, each start marked); returns a raw fd for Popen."""
    path.parent.mkdir(parents=True, exist_ok=True)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
    os.write(fd, f"==== {datetime.now(UTC).isoformat(timespec='seconds')} starting {what}\n".encode())
    return fd


def log_tail(path: Path | None, lines: int = 6) -> str:
    """The last lines of a log file, for a console message about a crash."""
    if path is None or not path.is_file():
        return ""
    with path.open("rb") as fh:
        fh.seek(max(0, path.stat().st_size - 8192))
        text = fh.read().decode(errors="replace")
    return "\n".join("    " + line for line in text.splitlines()[-lines:])


_PR_SET_PDEATHSIG = 1  # <linux/prctl.h>


def die_with_parent() -> Callable[[], None] | None:
    """A ``preexec_fn`` that makes the child get SIGKILL when this process dies, however it dies (Linux's
    ``prctl(PR_SET_PDEATHSIG)``; it survives the exec, so a JVM or Python started through it is covered). None
    where the system has no such thing (macOS: `isthmus dev` stops what its children record left instead).

    The kernel sends it when the *thread* that forked the child ends: spawn from a thread that lives as long
    as the child should (`isthmus dev` spawns from its main thread)."""
    if not sys.platform.startswith("linux"):
        return None
    try:
        prctl = ctypes.CDLL(None, use_errno=True).prctl  # looked up here: the child only calls it
    except (OSError, AttributeError):
        return None
    parent = os.getpid()

    def preexec() -> None:
        prctl(_PR_SET_PDEATHSIG, int(signal.SIGKILL), 0, 0, 0)
        if os.getppid() != parent:  # the parent died between fork and prctl: nobody would tell us
            os.kill(os.getpid(), signal.SIGKILL)

    return preexec


def spawn(cmd: Sequence[str], env: dict[str, str] | None = None, log: Path | None = None, *,
          tied: bool = False) -> subprocess.Popen[bytes]:
    """A child in its own session, so a terminal's Ctrl-C reaches us once and we stop it in order; its
    stdout and stderr go to ``log`` when given. ``tied``: it dies with this process (:func:`die_with_parent`)."""
    preexec = die_with_parent() if tied else None
    if log is None:
        return subprocess.Popen(list(cmd), env=env, start_new_session=True, preexec_fn=preexec)
    fd = open_log(log, " ".join(cmd))
    try:
        return subprocess.Popen(list(cmd), env=env, start_new_session=True, stdin=subprocess.DEVNULL,
                                stdout=fd, stderr=subprocess.STDOUT, preexec_fn=preexec)
    finally:
        os.close(fd)


def stop(proc: subprocess.Popen[bytes] | None, timeout: float = 10.0) -> None:
    if proc is None or proc.poll() is not None:
        return
    try:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.wait(timeout=timeout)
    except ProcessLookupError:
        pass


def wait_http(url: str, timeout: float, alive: Callable[[], bool] = lambda: True) -> bool:
    """Poll ``url`` until it answers 2xx, the timeout passes, or ``alive()`` turns false."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline and alive():
        if http_ok(url):
            return True
        time.sleep(0.2)
    return False


def http_answers(url: str, timeout: float) -> bool:
    """Whether ``url`` gives any HTTP answer within ``timeout`` (a 503 too: a loading agent is alive)."""
    try:
        with urllib.request.urlopen(url, timeout=timeout):
            return True
    except urllib.error.HTTPError:
        return True
    except OSError:
        return False


def http_ok(url: str, timeout: float = 1.0) -> bool:
    try:
        with urllib.request.urlopen(url, timeout=timeout) as resp:
            return 200 <= resp.status < 300
    except OSError:
        return False


# ---- ports: never attach to a server we did not start

def port_free(port: int, host: str = "127.0.0.1") -> bool:
    """True when nothing answers on ``host:port`` and we could listen there ourselves. A connect probe as well
    as a bind: a listener on the wildcard address or another loopback address must count as taken."""
    probe_host = "127.0.0.1" if host in ("0.0.0.0", "", "localhost") else host
    with contextlib.suppress(OSError), socket.create_connection((probe_host, port), timeout=0.3):
        return False
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        # SO_REUSEADDR as the servers set it: a port left in TIME_WAIT by our own crashed child is free.
        s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            s.bind((host, port))
        except OSError:
            return False
    return True


def _listening_inodes(port: int) -> set[str]:
    inodes: set[str] = set()
    for table in ("/proc/net/tcp", "/proc/net/tcp6"):
        try:
            rows = Path(table).read_text().splitlines()[1:]
        except OSError:
            continue
        for row in rows:
            cols = row.split()
            if len(cols) > 9 and cols[3] == "0A" and int(cols[1].rsplit(":", 1)[1], 16) == port:  # 0A: LISTEN
                inodes.add(cols[9])
    return inodes


def owns_port(pid: int, port: int) -> bool | None:
    """Whether process ``pid`` is the one listening on ``port``: True, False, or None when this system cannot
    tell (no /proc and no lsof)."""
    if Path("/proc/net/tcp").exists():
        inodes = _listening_inodes(port)
        if not inodes:
            return False
        fd_dir = Path(f"/proc/{pid}/fd")
        with contextlib.suppress(OSError):
            for fd in fd_dir.iterdir():
                with contextlib.suppress(OSError):
                    link = os.readlink(fd)
                    if link.startswith("socket:[") and link[8:-1] in inodes:
                        return True
        return False
    lsof = shutil.which("lsof")
    if lsof is None:
        return None
    found = subprocess.run([lsof, "-nP", "-a", "-p", str(pid), f"-iTCP:{port}", "-sTCP:LISTEN", "-t"],
                           capture_output=True, text=True, check=False)
    return str(pid) in found.stdout.split()


def free_port_near(avoid: set[int]) -> int:
    """A free loopback port the system picks, never one of ``avoid``."""
    while True:
        with socket.socket() as s:
            s.bind(("127.0.0.1", 0))
            port = int(s.getsockname()[1])
        if port not in avoid:
            return port


class PortTaken(RuntimeError):
    """A port that some other process already listens on."""


# ---- supervision

@dataclass(frozen=True)
class RestartPolicy:
    """Restart a crashed child after ``first_delay`` doubling up to ``max_delay``; a child that crashes
    ``give_up_after`` times in a row, each within ``fast_seconds`` of starting, is not restarted again."""

    give_up_after: int = 5
    fast_seconds: float = 30.0
    first_delay: float = 0.5
    max_delay: float = 8.0

    def delay(self, crashes_in_a_row: int) -> float:
        return float(min(self.max_delay, self.first_delay * 2 ** max(0, crashes_in_a_row - 1)))


@dataclass(frozen=True)
class Liveness:
    """A ready child is probed every ``interval`` seconds (each probe waits at most ``timeout``); ``misses``
    probes in a row without an answer mean it hangs (e.g. SIGSTOP'd, deadlocked): it is killed and restarted."""

    interval: float = 2.0
    timeout: float = 3.0
    misses: int = 3


_STOPPED_FROM_OUTSIDE = {-signal.SIGKILL, -signal.SIGTERM, -signal.SIGINT}


class GaveUp(RuntimeError):
    """A child kept crashing right after starting; the supervisor stopped restarting it."""


def describe_exit(code: int) -> str:
    if code < 0:
        with contextlib.suppress(ValueError):
            return f"was killed by {signal.Signals(-code).name}"
        return f"was killed by signal {-code}"
    return f"exited with code {code}"


class Supervised:
    """One child the supervisor keeps running. ``start`` launches it (and may raise, e.g. PortTaken: that
    counts as a crash); ``ready`` says whether a started child serves; ``say`` prints to the console;
    ``alive_url``, when given, is probed once the child is ready (see :class:`Liveness`)."""

    def __init__(self, name: str, start: Callable[[], subprocess.Popen[bytes]],
                 ready: Callable[[subprocess.Popen[bytes]], bool], *, policy: RestartPolicy,
                 say: Callable[[str], None], log: Path | None = None,
                 stopper: Callable[[subprocess.Popen[bytes]], None] = stop,
                 alive_url: str | None = None, liveness: Liveness = Liveness()) -> None:
        self.name = name
        self._start = start
        self._ready = ready
        self._stop = stopper
        self.policy = policy
        self.say = say
        self.log = log
        self.proc: subprocess.Popen[bytes] | None = None
        self.ready = False
        self.restarts = 0
        self._started_at = 0.0
        self._crashes_in_a_row = 0
        self._restart_at: float | None = None
        self.alive_url = alive_url
        self.liveness = liveness
        self._next_probe = 0.0
        self._misses = 0

    @property
    def pid(self) -> int | None:
        return self.proc.pid if self.proc is not None else None

    def launch(self) -> None:
        """Start the child now; raises what ``start`` raised (OSError, RuntimeError) when it could not."""
        self._restart_at = None
        self._started_at = time.monotonic()
        self.ready = False
        self.proc = self._start()
        verb = "restarted" if self.restarts else "started"
        self.say(f"{self.name} {verb} (pid {self.proc.pid})")

    def tick(self) -> None:
        """One supervision step: notice a crash, restart when the backoff is over, notice readiness. Raises
        GaveUp after repeated fast crashes."""
        if self.proc is None:
            if self._restart_at is not None and time.monotonic() >= self._restart_at:
                self.restarts += 1
                try:
                    self.launch()
                except (OSError, RuntimeError) as exc:  # e.g. its port was taken meanwhile: a crash too
                    self.proc = None
                    self._crashed(f"could not start again ({exc})")
            return
        code = self.proc.poll()
        if code is not None:
            self.proc = None
            self.ready = False
            # A child stopped from outside (SIGKILL, SIGTERM, SIGINT) has nothing in its log about why.
            self._crashed(describe_exit(code), show_log=code not in _STOPPED_FROM_OUTSIDE)
            return
        if not self.ready and self._ready(self.proc):
            self.ready = True
            self._misses, self._next_probe = 0, time.monotonic() + self.liveness.interval
            if self.restarts:
                self.say(f"{self.name} is back (pid {self.proc.pid})")
        elif self.ready and self.alive_url and time.monotonic() >= self._next_probe:
            self._probe(self.proc, self.alive_url)

    def _probe(self, proc: subprocess.Popen[bytes], url: str) -> None:
        """A hung child never exits, so only a probe notices it: after ``misses`` unanswered probes in a row it
        is killed (SIGKILL: a stopped process ignores anything else) and restarted like a crashed one."""
        answered = http_answers(url, self.liveness.timeout)
        self._next_probe = time.monotonic() + self.liveness.interval
        self._misses = 0 if answered else self._misses + 1
        if self._misses < self.liveness.misses:
            return
        self.say(f"{self.name} (pid {proc.pid}) did not answer {url} {self._misses} times in a row "
                 f"({self.liveness.timeout:g} s each): killing it (SIGKILL)")
        with contextlib.suppress(ProcessLookupError):
            os.killpg(proc.pid, signal.SIGKILL)
        with contextlib.suppress(subprocess.TimeoutExpired):
            proc.wait(timeout=10)
        self.proc, self.ready, self._misses = None, False, 0
        self._crashed("hung", show_log=False)

    def _crashed(self, what: str, show_log: bool = True) -> None:
        uptime = time.monotonic() - self._started_at
        self._crashes_in_a_row = self._crashes_in_a_row + 1 if uptime < self.policy.fast_seconds else 1
        tail = log_tail(self.log) if show_log else ""
        where = f"; last lines of {self.log}:\n{tail}" if tail else ""
        if self._crashes_in_a_row >= self.policy.give_up_after:
            raise GaveUp(f"{self.name} {what} after {uptime:.0f} s; it crashed {self._crashes_in_a_row} times in "
                         f"a row within {self.policy.fast_seconds:.0f} s of starting: giving up{where}")
        delay = self.policy.delay(self._crashes_in_a_row)
        self.say(f"{self.name} {what} after {uptime:.0f} s; restarting in {delay:.1f} s{where}")
        self._restart_at = time.monotonic() + delay

    def stop(self) -> None:
        self._restart_at = None
        if self.proc is not None:
            self._stop(self.proc)
