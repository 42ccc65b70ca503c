"""Fixtures shared by every test layer: DynamoDB Local, tables from the template, the edge subprocess."""

from __future__ import annotations

import os
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import pytest

from local_runtime.ddb import DynamoLocal, free_port, use_local_endpoint
from local_runtime.process import stop, wait_http

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
    from isthmus.adapters import dynamodb
    from local_runtime.tables import create_tables

    saved = {k: os.environ.get(k) for k in ("ISTHMUS_DYNAMODB_ENDPOINT", "ISTHMUS_TABLE_PREFIX")}
    os.environ["ISTHMUS_TABLE_PREFIX"] = f"t{uuid.uuid4().hex[:6]}-"
    use_local_endpoint(ddb_local.endpoint)
    create_tables(dynamodb.client())
    yield ddb_local.endpoint
    for key, value in saved.items():
        if value is None:
            os.environ.pop(key, None)
        else:
            os.environ[key] = value
    dynamodb.reset_clients()


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
