"""The storage contract of uploaded files, on real parts: every BlobStore (the data dir; S3 on a loopback
S3-protocol server) passes the same cases, and the files service over each with the DynamoDB ``files`` table on
DynamoDB Local (owners, listing pages, expiry, delete, the size limit with nothing kept)."""

from __future__ import annotations

import asyncio
import hashlib
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

from isthmus.adapters.blob_local import LocalBlobStore
from isthmus.adapters.files_table import DynamoFileMetaStore
from isthmus.ports.files import BlobStore, FileNotFound, FileTooLarge
from isthmus.services.files import FileService
from tests.support.files_memory import chunks_of

pytestmark = pytest.mark.integration

STORES = ["local"]


@pytest.fixture(params=STORES)
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "files")
    else:
        yield request.getfixturevalue(f"{request.param}_blobs")


async def _read(store: BlobStore, key: str) -> bytes:
    return b"".join([c async for c in store.get(key)])


def test_blob_store_round_trip_limit_and_delete(blobs: BlobStore) -> None:
    big = os.urandom(9 * 1024 * 1024 + 17)  # more than one S3 part (8 MiB), and an odd tail

    async def run() -> None:
        # given bodies of no bytes, a few bytes and more than one part
        for key, data in (("k-empty", b""), ("k-small", b"hello"), ("k-big", big)):
            size, digest = await blobs.put(key, chunks_of(data, 1 << 20), content_type="application/octet-stream",
                                           max_bytes=len(big))
            # then what comes back is what went in, sized and digested
            assert (size, digest) == (len(data), hashlib.sha256(data).hexdigest())
            assert await _read(blobs, key) == data
        # when a body passes the limit (after one whole part went out), then nothing of it is readable
        with pytest.raises(FileTooLarge):
            await blobs.put("k-over", chunks_of(big, 1 << 20), content_type="text/plain", max_bytes=len(big) - 1)
        with pytest.raises(FileNotFound):
            await _read(blobs, "k-over")
        # and a deleted key is gone; deleting it again is fine
        await blobs.delete("k-big")
        await blobs.delete("k-big")
        with pytest.raises(FileNotFound):
            await _read(blobs, "k-big")

    asyncio.run(run())


@pytest.fixture()
def service(ddb_tables: str, blobs: BlobStore) -> FileService:
    return FileService(blobs, DynamoFileMetaStore(), max_bytes=64 * 1024)


def _create(service: FileService, owner: str, name: str, **kw: Any) -> Any:
    return service.create(owner_id=owner, filename=name, purpose=kw.pop("purpose", "user_data"),
                          content_type="text/plain", chunks=chunks_of(name.encode()), **kw)


def test_service_owners_pages_and_delete(service: FileService) -> None:
    owner = f"u-{os.urandom(4).hex()}"

    async def run() -> None:
        # given five files of one user (two of them batch inputs) and one of another user
        mine = [await _create(service, owner, f"f{i}.txt", purpose="batch" if i % 2 else "user_data")
                for i in range(5)]
        theirs = await _create(service, owner + "-other", "theirs.txt")
        # when the user lists 2 at a time, newest first, then the pages walk all five in order, no more
        seen: list[str] = []
        after = None
        while True:
            page, more = await service.list_files(owner_id=owner, limit=2, after=after, order="desc")
            seen += [r.file_id for r in page]
            if not more:
                break
            after = page[-1].file_id
        assert seen == [r.file_id for r in reversed(mine)]
        asc, _ = await service.list_files(owner_id=owner, order="asc")
        assert [r.file_id for r in asc] == [r.file_id for r in mine]
        batch, _ = await service.list_files(owner_id=owner, purpose="batch")
        assert {r.file_id for r in batch} == {mine[1].file_id, mine[3].file_id}
        # and the other user's file is not found for this user, while the master sees both users' files
        with pytest.raises(FileNotFound):
            await service.get(theirs.file_id, owner_id=owner)
        everyone, _ = await service.list_files(owner_id=None)
        assert {theirs.file_id, mine[0].file_id} <= {r.file_id for r in everyone}
        # when one is deleted, then it is gone from get, content and list
        await service.delete(mine[2].file_id, owner_id=owner)
        with pytest.raises(FileNotFound):
            await service.get(mine[2].file_id, owner_id=None)
        left, _ = await service.list_files(owner_id=owner)
        assert mine[2].file_id not in {r.file_id for r in left} and len(left) == 4

    asyncio.run(run())


def test_service_expiry_and_limit(service: FileService) -> None:
    owner = f"u-{os.urandom(4).hex()}"

    async def run() -> None:
        record = await _create(service, owner, "short.txt", expires_after_seconds=3600)
        stored = await service.get(record.file_id, owner_id=owner)
        assert stored.expires_at == record.created_at + 3600
        # when the clock passes the expiry, then the file is gone for everyone
        service.clock = lambda: record.created_at + 3601
        with pytest.raises(FileNotFound):
            await service.get(record.file_id, owner_id=None)
        assert await service.meta.get(record.file_id) is None
        # and an upload over the limit leaves no row
        with pytest.raises(FileTooLarge):
            await service.create(owner_id=owner, filename="big", purpose="batch", content_type="text/plain",
                                 chunks=chunks_of(b"x" * (64 * 1024 + 1)))
        page, _ = await service.list_files(owner_id=owner)
        assert page == []

    asyncio.run(run())
