"""Starting node agents for control-plane tests. The command is a parameter: the deterministic fake
(tests/support/fake_agent.py) today; the real agent (``isthmus agent``) can be swapped in by passing
another :data:`AgentCommand` once it lands."""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

from local_runtime.ddb import free_port
from local_runtime.process import stop, wait_http

ROOT = Path(__file__).resolve().parents[2]


@dataclass
class AgentSpec:
    node_id: str
    models_dir: Path
    control_url: str | None = None
    cluster: str = "default"
    model: str | None = None
    token: str | None = None
    port: int = 0
    chunk_bytes: int = 64 * 1024
    ram_bytes: int = 16 * 2**30


AgentCommand = Callable[[AgentSpec], list[str]]


def fake_agent_command(spec: AgentSpec) -> list[str]:
    cmd = [sys.executable, "-m", "tests.support.fake_agent", "--node-id", spec.node_id, "--port", str(spec.port),
           "--models-dir", str(spec.models_dir), "--cluster", spec.cluster, "--chunk-bytes", str(spec.chunk_bytes),
           "--ram-bytes", str(spec.ram_bytes)]
    if spec.control_url:
        cmd += ["--control-url", spec.control_url]
    if spec.model:
        cmd += ["--model", spec.model]
    if spec.token:
        cmd += ["--token", spec.token]
    return cmd


@dataclass
class RunningAgent:
    spec: AgentSpec
    proc: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def stop(self) -> None:
        stop(self.proc)


def start_agent(spec: AgentSpec, command: AgentCommand = fake_agent_command,
                env: dict[str, str] | None = None) -> RunningAgent:
    spec.port = spec.port or free_port()
    proc = subprocess.Popen(command(spec), cwd=ROOT, env=env, start_new_session=True)
    agent = RunningAgent(spec, proc)
    if not wait_http(f"{agent.base_url}/health", 60, alive=lambda: proc.poll() is None):
        agent.stop()
        raise RuntimeError(f"agent {spec.node_id} did not start")
    return agent
