"""Model folder sync between two agent processes over real HTTP (local_runtime/model_sync.py routes):
progress reported, sha256s equal, an interrupted sync resumes sending only the missing chunks."""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest

from local_runtime.model_sync import file_sha256
from tests.support.control_agents import AgentSpec, RunningAgent, start_agent

pytestmark = pytest.mark.integration
CHUNK = 16 * 1024


def make_model(folder: Path) -> None:
    (folder / "sub").mkdir(parents=True)
    (folder / "config.json").write_text('{"model_type": "qwen2"}')
    (folder / "sub" / "tokenizer.json").write_text('{"vocab": {}}' * 50)
    (folder / "empty.txt").write_bytes(b"")
    (folder / "weights.bin").write_bytes(bytes((i * 7919) % 251 for i in range(10 * CHUNK + 123)))


@pytest.fixture()
def pair(tmp_path: Path) -> Iterator[tuple[RunningAgent, RunningAgent]]:
    make_model(tmp_path / "a" / "tiny")
    agents: list[RunningAgent] = []
    try:
        for name in ("a", "b"):
            agents.append(start_agent(AgentSpec(node_id=name, models_dir=tmp_path / name, chunk_bytes=CHUNK)))
        yield agents[0], agents[1]
    finally:
        for agent in agents:
            agent.stop()


def wait_job(base: str, job_id: str, timeout: float = 60) -> dict[str, Any]:
    return poll_job(base, job_id, None, timeout)


def poll_job(base: str, job_id: str, headers: dict[str, str] | None, timeout: float = 60) -> dict[str, Any]:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        job: dict[str, Any] = httpx.get(f"{base}/agent/v1/sync/jobs/{job_id}", headers=headers).json()
        if job["state"] != "running":
            return job
        time.sleep(0.1)
    raise AssertionError(f"sync job {job_id} still running")


def push(source: RunningAgent, target: RunningAgent, **extra: Any) -> dict[str, Any]:
    r = httpx.post(f"{source.base_url}/agent/v1/sync/push",
                   json={"model": "tiny", "targets": [{"node_id": "b", "base_url": target.base_url}], **extra})
    assert r.status_code == 200, r.text
    return wait_job(source.base_url, r.json()["id"])


def test_interrupted_sync_resumes_with_only_missing_chunks(pair: tuple[RunningAgent, RunningAgent],
                                                           tmp_path: Path) -> None:
    source, target = pair
    src, dst = tmp_path / "a" / "tiny", tmp_path / "b" / "tiny"
    total_chunks = 1 + 1 + 11  # config, tokenizer, weights (10 full chunks + a tail); the empty file has none
    # given a sync interrupted after 5 chunks
    first = push(source, target, limit_chunks=5)
    assert first["state"] == "partial" and first["chunks_sent"] == 5
    assert 0 < first["bytes_done"] < first["bytes_total"]
    assert not dst.exists()  # nothing is published before every sha256 checks out
    # when it runs again
    second = push(source, target)
    # then only the missing chunks travel, progress is complete, and every file matches its sha256
    assert second["state"] == "done", second
    assert (second["chunks_skipped"], second["chunks_sent"]) == (5, total_chunks - 5)
    assert second["bytes_done"] == second["bytes_total"] == sum(p.stat().st_size for p in src.rglob("*")
                                                                 if p.is_file())
    files = sorted(p.relative_to(src).as_posix() for p in src.rglob("*") if p.is_file())
    assert files == sorted(p.relative_to(dst).as_posix() for p in dst.rglob("*") if p.is_file())
    assert all(file_sha256(src / f) == file_sha256(dst / f) for f in files)
    assert second["per_target"]["b"]["sha256"] == {f: file_sha256(src / f) for f in files}
    # and a third run finds everything in place: nothing is sent
    third = push(source, target)
    assert (third["state"], third["chunks_sent"]) == ("done", 0)


def test_a_corrupted_chunk_is_refused(pair: tuple[RunningAgent, RunningAgent]) -> None:
    source, target = pair
    push(source, target, limit_chunks=1)  # makes an offer on the target
    r = httpx.put(f"{target.base_url}/agent/v1/sync/chunk", content=b"garbage",
                  params={"model": "tiny", "path": "config.json", "index": 0}, headers={"x-chunk-sha256": "0" * 64})
    assert r.status_code == 422
    bad = httpx.post(f"{target.base_url}/agent/v1/sync/offer",
                     json={"model": "../etc", "manifest": {"chunk_size": 1, "files": []}})
    assert bad.status_code == 400


def test_sync_routes_need_the_shared_token_when_set(tmp_path: Path) -> None:
    make_model(tmp_path / "a" / "tiny")
    agents = [start_agent(AgentSpec(node_id=n, models_dir=tmp_path / n, chunk_bytes=CHUNK, token="t0k"))
              for n in ("a", "b")]
    try:
        source, target = agents
        body = {"model": "tiny", "targets": [{"node_id": "b", "base_url": target.base_url}]}
        refused = httpx.post(f"{source.base_url}/agent/v1/sync/push", json=body)
        assert refused.status_code == 401 and refused.headers["www-authenticate"] == "Bearer"
        assert httpx.post(f"{target.base_url}/agent/v1/sync/offer", json={}).status_code == 401
        auth = {"Authorization": "Bearer t0k"}
        r = httpx.post(f"{source.base_url}/agent/v1/sync/push", json=body, headers=auth)
        assert r.status_code == 200, r.text
        job = poll_job(source.base_url, r.json()["id"], auth)
        assert job["state"] == "done", job  # the pusher authenticated to the target with the same token
        weights = ("tiny", "weights.bin")
        assert file_sha256(tmp_path.joinpath("b", *weights)) == file_sha256(tmp_path.joinpath("a", *weights))
    finally:
        for agent in agents:
            agent.stop()


def test_a_changed_file_syncs_without_touching_the_published_copy_until_commit(
        pair: tuple[RunningAgent, RunningAgent], tmp_path: Path) -> None:
    source, target = pair
    assert push(source, target)["state"] == "done"
    published = tmp_path / "b" / "tiny" / "weights.bin"
    before = file_sha256(published)
    # given an offer that staged the unchanged weights (linked to the published file) and sent nothing
    (tmp_path / "a" / "tiny" / "config.json").write_text('{"model_type": "qwen3"}')
    assert push(source, target, limit_chunks=0)["state"] == "partial"
    # and then a new version of the weights, pushed only part-way
    weights = tmp_path / "a" / "tiny" / "weights.bin"
    weights.write_bytes(bytes((i * 31) % 253 for i in range(10 * CHUNK + 123)))
    assert push(source, target, limit_chunks=2)["state"] == "partial"
    # then the published copy is untouched; and once the sync completes it is the new version
    assert file_sha256(published) == before
    assert push(source, target)["state"] == "done"
    assert file_sha256(published) == file_sha256(weights) != before
