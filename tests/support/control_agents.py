"""Starting node agents for control-plane tests. The command is a parameter: the deterministic fake
(tests/support/fake_agent.py) by default; ``ISTHMUS_TEST_AGENT=real`` runs the real agent (``isthmus agent``),
which enrolls through :meth:`local_runtime.enrollment.Enrollment.from_env` with the environment set here."""

from __future__ import annotations

import os
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
    extra: tuple[str, ...] = ()  # more fake-agent options (--event-delay, --load-seconds)


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
    return cmd + list(spec.extra)


def real_agent_command(spec: AgentSpec) -> list[str]:
    """The real node agent (``isthmus agent``), configured for enrollment through the environment
    (:func:`agent_env`); its models folder is its data dir's. Selected with ``ISTHMUS_TEST_AGENT=real``."""
    return [sys.executable, "-m", "local_runtime.cli", "agent", "--model", spec.model or "tiny-qwen2",
            "--host", "127.0.0.1", "--port", str(spec.port), "--node-id", spec.node_id,
            "--data-dir", str(spec.models_dir)]  # the real agent keeps its models in DATA_DIR/models


def agent_env(spec: AgentSpec) -> dict[str, str]:
    env = dict(os.environ)
    env.update({"ISTHMUS_NODE_ID": spec.node_id, "ISTHMUS_CLUSTER_ID": spec.cluster})
    if spec.control_url:
        env["ISTHMUS_CONTROL_URL"] = spec.control_url
    if spec.token:
        env["ISTHMUS_ENROLL_TOKEN"] = spec.token
    return env


def selected_command() -> AgentCommand:
    return real_agent_command if os.environ.get("ISTHMUS_TEST_AGENT") == "real" else fake_agent_command


@dataclass
class RunningAgent:
    spec: AgentSpec
    proc: subprocess.Popen[bytes]

    @property
    def base_url(self) -> str:
        return f"http://127.0.0.1:{self.spec.port}"

    def stop(self) -> None:
        stop(self.proc)


def start_agent(spec: AgentSpec, command: AgentCommand | None = None,
                env: dict[str, str] | None = None) -> RunningAgent:
    """An agent subprocess on a free loopback port, up once ``/health`` answers (the command defaults to
    :func:`selected_command`: the fake unless ``ISTHMUS_TEST_AGENT=real``)."""
    spec.port = spec.port or free_port()
    proc = subprocess.Popen((command or selected_command())(spec), cwd=ROOT, env=env or agent_env(spec),
                            start_new_session=True)
    agent = RunningAgent(spec, proc)
    if not wait_http(f"{agent.base_url}/health", 300, alive=lambda: proc.poll() is None):
        agent.stop()
        raise RuntimeError(f"agent {spec.node_id} did not start")
    return agent
