"""`isthmus edge --workers N`: N processes serve one port and die with the edge.

Given an edge started with two workers (tenancy off: no store needed), when requests arrive, then both worker
processes serve them on the one port; and when the edge itself is killed with SIGKILL (no chance to clean up),
then its workers are gone too and the port is free again, as `isthmus dev` expects of a child it restarts. And the
paths bench runs once in its quick mode over one path (a smoke run: it must run to its end; no figure is checked).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import httpx
import psutil
import pytest

from local_runtime.ddb import free_port
from local_runtime.process import port_free, stop, wait_http
from tests.support.waiting import poll

pytestmark = [pytest.mark.e2e]
ROOT = Path(__file__).resolve().parents[2]


def worker_processes(edge_pid: int) -> list[psutil.Process]:
    """The edge's worker processes (multiprocessing also starts a resource tracker beside them)."""
    return [p for p in psutil.Process(edge_pid).children() if "spawn_main" in " ".join(p.cmdline())]


def test_two_workers_share_the_port_and_die_with_the_edge() -> None:
    port = free_port()
    env = {**os.environ, "ISTHMUS_TENANCY": "off"}
    edge = subprocess.Popen([sys.executable, "-m", "local_runtime.cli", "edge", "--port", str(port), "--workers",
                             "2"], cwd=ROOT, env=env, start_new_session=True)
    try:
        base = f"http://127.0.0.1:{port}"
        assert wait_http(f"{base}/health/liveness", 90, alive=lambda: edge.poll() is None)
        workers = poll(lambda: w if len(w := worker_processes(edge.pid)) == 2 else None, timeout=60)
        busy_before = {w.pid: sum(w.cpu_times()[:2]) for w in workers}
        # when many connections arrive at once (each a new connection), both workers take some of them
        for _ in range(200):
            with httpx.Client(timeout=10) as client:
                assert client.get(f"{base}/health/liveness").status_code == 200
        served = [w.pid for w in workers if sum(w.cpu_times()[:2]) > busy_before[w.pid]]
        assert len(served) == 2
        # when the edge is killed outright, its workers follow and the port is free again
        edge.send_signal(signal.SIGKILL)
        edge.wait(10)
        assert poll(lambda: all(not w.is_running() or w.status() == psutil.STATUS_ZOMBIE for w in workers),
                    timeout=10)
        assert poll(lambda: port_free(port), timeout=10)
    finally:
        stop(edge)


@pytest.mark.integration
def test_the_paths_bench_runs_in_quick_mode() -> None:
    command = [sys.executable, str(ROOT / "bench" / "paths.py"), "--quick", "--only", "cloud openai", "--no-workers",
               "--store-nice", "0"]  # a smoke run on a busy host: a niced store could stop answering
    out = subprocess.run(command, cwd=ROOT, env=os.environ.copy(), capture_output=True, text=True, timeout=300)
    assert out.returncode == 0, out.stderr[-3000:]
    assert "cloud openai" in out.stdout and "targets (tenancy on" in out.stdout, out.stdout
