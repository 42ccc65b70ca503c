"""Real node-agent subprocesses on free loopback ports, and helpers to talk to them (no mocks of mlx)."""

from __future__ import annotations

import json
import socket
import subprocess
import time
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import httpx

from local_runtime.agent.launcher import agent_command, agent_env
from tests.support.waiting import poll


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


class AgentProcess:
    """One `isthmus agent` subprocess and an httpx client for it."""

    def __init__(self, model: str, *extra: str, log_dir: Path, env: dict[str, str] | None = None) -> None:
        self.port = free_port()
        self.base = f"http://127.0.0.1:{self.port}"
        self.log = (log_dir / f"agent-{self.port}.log").open("w")
        self.proc = subprocess.Popen(agent_command(model, port=self.port, extra=extra), env=agent_env() | (env or {}),
                                     stdout=self.log, stderr=subprocess.STDOUT)
        self.client = httpx.Client(base_url=self.base, timeout=120)
        self._wait_ready()

    def _wait_ready(self, timeout: float = 120) -> None:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            if self.proc.poll() is not None:
                raise RuntimeError(f"agent exited with {self.proc.returncode}; see {self.log.name}")
            try:
                if self.client.get("/health").status_code == 200:
                    return
            except httpx.TransportError:
                pass
            time.sleep(0.2)
        raise TimeoutError(f"agent on {self.base} not ready")

    def generate(self, **body: Any) -> httpx.Response:
        return self.client.post("/agent/v1/generate", json=request_body(**body))

    def stream(self, **body: Any) -> list[dict[str, Any]]:
        with self.client.stream("POST", "/agent/v1/generate", json=request_body(stream=True, **body)) as r:
            assert r.status_code == 200, r.read()
            assert r.headers["content-type"].startswith("application/x-ndjson")
            return [json.loads(line) for line in r.iter_lines() if line]

    def status(self) -> dict[str, Any]:
        return dict(self.client.get("/agent/v1/status").json())

    def wait_for(self, predicate: Any, timeout: float = 60) -> dict[str, Any]:
        """Poll status until ``predicate(status)``; a wait, not a timing assertion."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            status = self.status()
            if predicate(status):
                return status
            time.sleep(0.02)
        raise TimeoutError(f"status never matched; last: {self.status()}")

    def stop(self) -> None:
        self.client.close()
        self.proc.terminate()
        try:
            self.proc.wait(timeout=15)
        except subprocess.TimeoutExpired:
            self.proc.kill()
        self.log.close()


def enrolled_agent(edge: str, cluster: str, node: str, *extra: str, log_dir: Path) -> AgentProcess:
    """A real agent started empty that enrolls with ``edge``'s control plane as ``node`` of ``cluster`` (the
    agent reads both from its environment at start)."""
    env = {"ISTHMUS_CONTROL_URL": edge, "ISTHMUS_CLUSTER_ID": cluster, "ISTHMUS_NODE_ID": node}
    return AgentProcess("", *extra, log_dir=log_dir, env=env)


def nodes_up(edge: str, cluster: str) -> set[str]:
    """The node ids the edge's control plane sees up in ``cluster`` (none while the cluster is unknown)."""
    r = httpx.get(f"{edge}/admin/clusters/{cluster}/status", timeout=10)
    return {n["node_id"] for n in r.json()["nodes"] if n["up"]} if r.status_code == 200 else set()


@contextmanager
def enrolled_agents(edge: str, cluster: str, nodes: Sequence[str], *extra: str, log_dir: Path,
                    timeout: float = 60) -> Iterator[dict[str, AgentProcess]]:
    """``enrolled_agent`` for each of ``nodes``, yielded (by node id) once the control plane sees them all up;
    every agent in the dict at the end (a test may replace one it killed) is stopped."""
    agents: dict[str, AgentProcess] = {}
    try:
        for node in nodes:
            agents[node] = enrolled_agent(edge, cluster, node, *extra, log_dir=log_dir)
        poll(lambda: nodes_up(edge, cluster) == set(nodes), timeout=timeout)
        yield agents
    finally:
        for agent in agents.values():
            agent.stop()


def user(text: str) -> dict[str, Any]:
    return {"role": "user", "content": [{"type": "text", "text": text}]}


def request_body(text: str = "hi", *, messages: list[dict[str, Any]] | None = None, max_tokens: int = 8,
                 stop: list[str] | None = None, **extra: Any) -> dict[str, Any]:
    body: dict[str, Any] = {"model": "test", "messages": messages or [user(text)],
                            "sampling": {"max_tokens": max_tokens, "stop": stop or []}}
    body.update(extra)
    return body


def text_of(events: list[dict[str, Any]], kind: str = "text") -> str:
    return "".join(e["text"] for e in events if e["type"] == kind)


