"""The Files API with the openai SDK against the local edge in keyed mode (asgi and lambda): create, list (pages),
retrieve, content, delete; another user's file is 404; expiry is honoured; 413 over the limit. Then, on the asgi
edge only (API Gateway caps a payload at 10 MB, so big uploads are a long-running edge's matter), a 200 MB upload
and download while the edge's RSS is sampled: the rise stays under 64 MB."""

from __future__ import annotations

import hashlib
import os
import secrets
import threading
import time
from collections.abc import Iterator
from pathlib import Path

import httpx
import openai
import psutil
import pytest

from local_runtime.process import stop
from tests.conftest import start_edge

pytestmark = pytest.mark.e2e

SMALL_LIMIT = 4 * 1024 * 1024
MIB = 1024 * 1024


class Edge:
    def __init__(self, base: str, master: str, pid: int) -> None:
        self.base, self.master, self.pid = base, master, pid

    def sdk(self, key: str) -> openai.OpenAI:
        return openai.OpenAI(base_url=f"{self.base}/v1", api_key=key, max_retries=0, timeout=120)

    def new_key(self) -> str:
        admin = {"Authorization": f"Bearer {self.master}"}
        user_id = f"u-{secrets.token_hex(4)}"
        httpx.post(f"{self.base}/v1/users", json={"user_id": user_id}, headers=admin, timeout=30).raise_for_status()
        answer = httpx.post(f"{self.base}/v1/keys", json={"user_id": user_id}, headers=admin, timeout=30)
        answer.raise_for_status()
        return str(answer.json()["key"])


def _edge(mode: str, tmp: Path, limit: int) -> Iterator[Edge]:
    master = "sk-master-" + secrets.token_urlsafe(16)
    proc, base = start_edge(mode, env={"ISTHMUS_MASTER_KEY": master, "ISTHMUS_FILES_DIR": str(tmp / "files"),
                                       "ISTHMUS_MAX_FILE_BYTES": str(limit)})
    try:
        yield Edge(base, master, proc.pid)
    finally:
        stop(proc)


@pytest.fixture(scope="module", params=["asgi", "lambda"])
def edge(request: pytest.FixtureRequest, ddb_tables: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    yield from _edge(request.param, tmp_path_factory.mktemp("files-edge"), SMALL_LIMIT)


def test_files_crud_with_the_openai_sdk(edge: Edge, tmp_path: Path) -> None:
    alice, bob = edge.sdk(edge.new_key()), edge.sdk(edge.new_key())
    lines = b"".join(b'{"custom_id": "r%d", "method": "POST", "url": "/v1/chat/completions", "body": {}}\n' % i
                     for i in range(50))
    source = tmp_path / "input.jsonl"
    source.write_bytes(lines)
    # when alice uploads a batch input and two notes
    with source.open("rb") as handle:
        batch_file = alice.files.create(file=handle, purpose="batch")
    notes = [alice.files.create(file=(f"note{i}.txt", f"note {i}".encode(), "text/plain"), purpose="user_data")
             for i in range(2)]
    # then the file object is OpenAI's, and retrieve and content give it back byte for byte
    assert batch_file.id.startswith("file-") and batch_file.object == "file"
    assert (batch_file.bytes, batch_file.filename, batch_file.purpose) == (len(lines), "input.jsonl", "batch")
    assert alice.files.retrieve(batch_file.id).bytes == len(lines)
    assert alice.files.content(batch_file.id).content == lines
    raw = httpx.get(f"{edge.base}/v1/files/{notes[0].id}/content",
                    headers={"Authorization": f"Bearer {alice.api_key}"}, timeout=30)
    assert raw.headers["content-type"].startswith("text/plain") and raw.content == b"note 0"
    # and listing walks pages newest first, filters by purpose, and under /api/v1 too
    first = alice.files.list(limit=2)
    assert [f.id for f in first.data] == [notes[1].id, notes[0].id] and first.has_more
    assert [f.id for f in alice.files.list()] == [notes[1].id, notes[0].id, batch_file.id]  # the SDK pages on
    assert [f.id for f in alice.files.list(purpose="batch").data] == [batch_file.id]
    assert [f.id for f in alice.files.list(order="asc", after=batch_file.id).data] == [notes[0].id, notes[1].id]
    api_v1 = httpx.get(f"{edge.base}/api/v1/files", headers={"Authorization": f"Bearer {alice.api_key}"},
                       timeout=30).json()
    assert api_v1["first_id"] == notes[1].id and api_v1["last_id"] == batch_file.id
    # when bob asks for alice's file, then it does not exist for him (404, OpenAI's error), nor in his list
    for call in (bob.files.retrieve, bob.files.content, bob.files.delete):
        with pytest.raises(openai.NotFoundError) as refused:
            call(batch_file.id)
        assert refused.value.body["message"] == f"No such File object: {batch_file.id}"
    assert bob.files.list().data == []
    # and the master sees it
    assert edge.sdk(edge.master).files.retrieve(batch_file.id).id == batch_file.id
    # when alice deletes it, then it is gone
    deleted = alice.files.delete(batch_file.id)
    assert (deleted.id, deleted.deleted) == (batch_file.id, True)
    with pytest.raises(openai.NotFoundError):
        alice.files.retrieve(batch_file.id)


def test_expiry_limit_and_bad_input(edge: Edge) -> None:
    alice = edge.sdk(edge.new_key())
    # given a file that expires one second after it was made
    short = alice.files.create(file=("s.txt", b"short-lived", "text/plain"), purpose="user_data",
                               expires_after={"anchor": "created_at", "seconds": 1})
    assert short.expires_at == short.created_at + 1
    # then once that second is over it is gone (polled: the edge's clock, not ours, decides)
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            alice.files.retrieve(short.id)
        except openai.NotFoundError:
            break
        time.sleep(0.25)
    else:
        pytest.fail("the expired file was still served")
    assert short.id not in {f.id for f in alice.files.list()}
    # when a file passes the limit, then 413 in OpenAI's shape and nothing is listed
    with pytest.raises(openai.APIStatusError) as refused:
        alice.files.create(file=("big.bin", b"x" * (SMALL_LIMIT + 1)), purpose="user_data")
    assert refused.value.status_code == 413 and refused.value.code in ("file_too_large", "request_too_large")
    assert alice.files.list().data == []
    # and bad form fields are 400s naming the field
    with pytest.raises(openai.BadRequestError) as bad:
        alice.files.create(file=("a.txt", b"a"), purpose="nonsense")
    assert bad.value.body["param"] == "purpose"
    no_file = httpx.post(f"{edge.base}/v1/files", data={"purpose": "batch"}, files={"other": ("x", b"x")},
                         headers={"Authorization": f"Bearer {alice.api_key}"}, timeout=30)
    assert no_file.status_code == 400 and no_file.json()["error"]["param"] == "file"
    assert httpx.get(f"{edge.base}/v1/files").status_code == 401  # keyed mode: no key, no files


@pytest.fixture(scope="module")
def big_edge(ddb_tables: str, tmp_path_factory: pytest.TempPathFactory) -> Iterator[Edge]:
    yield from _edge("asgi", tmp_path_factory.mktemp("files-big"), 256 * MIB)


class PeakRss:
    """The edge's peak RSS while the block runs, sampled every 20 ms."""

    def __init__(self, pid: int) -> None:
        self.process = psutil.Process(pid)
        self.peak = 0
        self._done = threading.Event()

    def _sample(self) -> None:
        while not self._done.wait(0.02):
            self.peak = max(self.peak, self.process.memory_info().rss)

    def __enter__(self) -> PeakRss:
        self.base = self.process.memory_info().rss
        self._thread = threading.Thread(target=self._sample, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self._done.set()
        self._thread.join()

    @property
    def rise_mb(self) -> float:
        return (self.peak - self.base) / MIB


def test_a_200_mb_upload_and_download_stream_through_the_edge(big_edge: Edge, tmp_path: Path) -> None:
    alice = big_edge.sdk(big_edge.new_key())
    alice.files.create(file=("warm.txt", b"warm-up"), purpose="user_data")  # imports and clients loaded first
    source = tmp_path / "big.bin"
    block = os.urandom(MIB)
    digest = hashlib.sha256()
    with source.open("wb") as out:
        for i in range(200):
            chunk = block[i:] + block[:i]
            digest.update(chunk)
            out.write(chunk)
    # when 200 MB are uploaded
    with PeakRss(big_edge.pid) as upload, source.open("rb") as handle:
        record = alice.files.create(file=handle, purpose="batch")
    assert record.bytes == 200 * MIB
    # and downloaded again
    got = hashlib.sha256()
    with PeakRss(big_edge.pid) as download, alice.files.with_streaming_response.content(record.id) as answer:
        for chunk in answer.iter_bytes(MIB):
            got.update(chunk)
    print(f"edge RSS rise: upload {upload.rise_mb:.1f} MB, download {download.rise_mb:.1f} MB")
    # then the bytes are the same and the edge never held them: its RSS rose by less than 64 MB each way
    assert got.hexdigest() == digest.hexdigest()
    assert upload.rise_mb < 64 and download.rise_mb < 64
