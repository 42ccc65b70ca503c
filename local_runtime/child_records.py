"""What `isthmus dev` started, written down in its data dir (``DATA_DIR/dev.children.json``), so that the next
start on that data dir can stop children a killed `isthmus dev` left running.

On Linux the children die with their parent (``prctl(PR_SET_PDEATHSIG)``, see
:func:`local_runtime.process.die_with_parent`); macOS has no such thing, so a `isthmus dev` that was SIGKILLed
leaves DynamoDB Local, the agent and the edge running, holding the ports the next start wants. The record keeps
each child's pid and the time the system says it started: a pid is only killed when a process with that pid
*and* that start time still exists (so it is the very process we started, not a later one that reused the pid).
The file is only read and written while the data dir's lock (``dev.lock``) is held.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
from collections.abc import Callable
from pathlib import Path

import psutil

RECORD_NAME = "dev.children.json"
GONE_WITHIN_S = 10.0


class ChildRecords:
    def __init__(self, data_dir: Path) -> None:
        self.path = data_dir / RECORD_NAME
        self._written: dict[str, int] = {}

    def write(self, pids: dict[str, int]) -> None:
        """Record the running children (name -> pid); rewritten only when they changed (atomic rename)."""
        if pids == self._written:
            return
        entries = []
        for name, pid in pids.items():
            with contextlib.suppress(psutil.Error):
                entries.append({"name": name, "pid": pid, "started": psutil.Process(pid).create_time()})
        tmp = self.path.with_suffix(".tmp")
        tmp.write_text(json.dumps(entries))
        os.replace(tmp, self.path)
        self._written = dict(pids)

    def clear(self) -> None:
        with contextlib.suppress(FileNotFoundError):
            self.path.unlink()
        self._written = {}

    def stop_stale(self, say: Callable[[str], None]) -> list[int]:
        """Kill (SIGKILL, its whole process group) every recorded child that is still the process we started;
        returns their pids. Called with the lock held, i.e. when no `isthmus dev` runs on this data dir."""
        try:
            entries = json.loads(self.path.read_text())
        except (OSError, ValueError):
            return []
        stopped: list[psutil.Process] = []
        for entry in entries if isinstance(entries, list) else []:
            try:
                proc = psutil.Process(int(entry["pid"]))
                if abs(proc.create_time() - float(entry["started"])) > 0.01:
                    continue  # the pid was reused by another process: not ours
                # Children are session leaders (their pid is their group): the group takes a JVM's helpers too.
                if os.getpgid(proc.pid) == proc.pid:
                    os.killpg(proc.pid, signal.SIGKILL)
                else:
                    proc.kill()
            except (psutil.Error, OSError, KeyError, TypeError, ValueError):
                continue
            say(f"stopped {entry['name']} (pid {proc.pid}) left running by a previous `isthmus dev` on this "
                "data dir")
            stopped.append(proc)
        psutil.wait_procs(stopped, timeout=GONE_WITHIN_S)
        self.clear()
        return [p.pid for p in stopped]
