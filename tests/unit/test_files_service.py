"""The files service's rules over the data-dir blob store and an in-memory metadata table: owners, expiry, the size
limit with nothing kept, and bytes-before-row."""

from __future__ import annotations

import asyncio
import hashlib
from collections.abc import AsyncIterator
from pathlib import Path
from typing import Any

import pytest

from isthmus.adapters.blob_local import LocalBlobStore
from isthmus.ports.files import FileNotFound, FileTooLarge
from isthmus.services.files import FileService
from tests.support.files_memory import MemoryFileMetaStore, chunks_of


class Clock:
    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


def _service(tmp_path: Path, **kw: Any) -> tuple[FileService, MemoryFileMetaStore, Clock]:
    meta = MemoryFileMetaStore(fail_puts=kw.pop("fail_puts", False))
    clock = Clock()
    return FileService(LocalBlobStore(tmp_path), meta, clock=clock, **kw), meta, clock


async def _read(service: FileService, record: Any) -> bytes:
    return b"".join([c async for c in service.content(record)])


def _blobs(root: Path) -> list[str]:
    return sorted(p.name for p in root.iterdir())


def test_upload_then_read_back_by_owner_and_master(tmp_path: Path) -> None:
    service, _, _ = _service(tmp_path)
    data = bytes(range(256)) * 5000  # 1.28 MB: more than one read chunk

    async def run() -> None:
        # given a file uploaded by alice
        record = await service.create(owner_id="alice", filename="a.bin", purpose="user_data",
                                      content_type="application/octet-stream", chunks=chunks_of(data))
        # then its id, size and digest describe the bytes, and alice and the master read them back
        assert record.file_id.startswith("file-") and record.size == len(data)
        assert record.sha256 == hashlib.sha256(data).hexdigest()
        assert await _read(service, await service.get(record.file_id, owner_id="alice")) == data
        assert (await service.read_all(record.file_id, owner_id=None, max_bytes=len(data)))[1] == data
        # when bob asks for it, it does not exist for him
        with pytest.raises(FileNotFound):
            await service.get(record.file_id, owner_id="bob")
        with pytest.raises(FileNotFound):
            await service.delete(record.file_id, owner_id="bob")
        # and read_all refuses to hold more than its caller's bound
        with pytest.raises(FileTooLarge):
            await service.read_all(record.file_id, owner_id="alice", max_bytes=1000)

    asyncio.run(run())


def test_over_the_limit_keeps_nothing(tmp_path: Path) -> None:
    service, meta, _ = _service(tmp_path, max_bytes=100_000)

    async def run() -> None:
        # when an upload passes the limit, then FileTooLarge, and neither a row nor bytes (nor a temp file) remain
        with pytest.raises(FileTooLarge):
            await service.create(owner_id="alice", filename="big", purpose="batch", content_type="text/plain",
                                 chunks=chunks_of(b"x" * 100_001, 4096))
        assert meta.rows == {} and _blobs(tmp_path) == []

    asyncio.run(run())


def test_a_failed_row_write_leaves_no_orphan_blob(tmp_path: Path) -> None:
    service, _, _ = _service(tmp_path, fail_puts=True)

    async def run() -> None:
        with pytest.raises(ConnectionError):
            await service.create(owner_id="alice", filename="a", purpose="batch", content_type="text/plain",
                                 chunks=chunks_of(b"hello"))
        assert _blobs(tmp_path) == []

    asyncio.run(run())


def test_a_broken_upload_stream_keeps_nothing(tmp_path: Path) -> None:
    service, meta, _ = _service(tmp_path)

    async def broken() -> AsyncIterator[bytes]:
        yield b"first part"
        raise ConnectionResetError("client went away")

    async def run() -> None:
        with pytest.raises(ConnectionResetError):
            await service.create(owner_id="alice", filename="a", purpose="batch", content_type="text/plain",
                                 chunks=broken())
        assert meta.rows == {} and _blobs(tmp_path) == []

    asyncio.run(run())


def test_expiry_hides_and_sweeps_the_file(tmp_path: Path) -> None:
    service, meta, clock = _service(tmp_path)

    async def run() -> None:
        # given a file that expires after an hour, and one that never does
        short = await service.create(owner_id="alice", filename="s", purpose="user_data", content_type="text/plain",
                                     chunks=chunks_of(b"soon gone"), expires_after_seconds=3600)
        keep = await service.create(owner_id="alice", filename="k", purpose="user_data", content_type="text/plain",
                                     chunks=chunks_of(b"kept"))
        assert short.expires_at == short.created_at + 3600 and keep.expires_at is None
        assert await service.get(short.file_id, owner_id="alice")
        # when the hour has passed, then it is gone from get and list, and its row and bytes are swept on read
        clock.now += 3600
        page, more = await service.list_files(owner_id="alice")
        assert [r.file_id for r in page] == [keep.file_id] and not more
        with pytest.raises(FileNotFound):
            await service.get(short.file_id, owner_id="alice")
        assert short.file_id not in meta.rows and _blobs(tmp_path) == [keep.file_id]

    asyncio.run(run())


def test_delete_removes_row_and_bytes(tmp_path: Path) -> None:
    service, meta, _ = _service(tmp_path)

    async def run() -> None:
        record = await service.create(owner_id="alice", filename="a", purpose="batch", content_type="text/plain",
                                      chunks=chunks_of(b"bye"))
        await service.delete(record.file_id, owner_id="alice")
        assert meta.rows == {} and _blobs(tmp_path) == []
        with pytest.raises(FileNotFound):
            await service.delete(record.file_id, owner_id="alice")

    asyncio.run(run())
