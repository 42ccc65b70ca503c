"""The storage contract of uploaded files, on real parts: every BlobStore (the data dir; S3 on a loopback
S3-protocol server) passes the same cases, and the files service over each with the DynamoDB ``files`` table on
DynamoDB Local (owners, listing pages, expiry, delete, the size limit with nothing kept)."""

from __future__ import annotations

import asyncio
import hashlib
import os
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest

from isthmus.adapters.blob_local import LocalBlobStore
from isthmus.adapters.blob_s3 import S3BlobStore, s3_client
from isthmus.adapters.files_table import DynamoFileMetaStore
from isthmus.ports.files import BlobStore, FileNotFound, FileTooLarge
from isthmus.services.files import FileService
from local_runtime.s3local import S3Local
from tests.support.files_memory import chunks_of

pytestmark = pytest.mark.integration

@pytest.fixture(params=["local", "s3"])
def blobs(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[BlobStore]:
    if request.param == "local":
        yield LocalBlobStore(tmp_path / "files")
    else:
        s3: S3Local = request.getfixturevalue("s3_endpoint")
        yield S3BlobStore(s3.bucket, prefix=f"t-{os.urandom(4).hex()}/")


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


def test_s3_objects_are_encrypted_and_a_failed_multipart_upload_is_aborted(s3_endpoint: S3Local) -> None:
    store = S3BlobStore(s3_endpoint.bucket, prefix=f"t-{os.urandom(4).hex()}/")
    client = s3_client()
    sent: list[tuple[str, str | None]] = []  # (operation, its server-side-encryption header) as they go out

    def record(request: Any, event_name: str, **_: Any) -> None:
        sse = request.headers.get("x-amz-server-side-encryption")
        sent.append((event_name.rsplit(".", 1)[-1], sse.decode() if isinstance(sse, bytes) else sse))

    client.meta.events.register("before-send.s3", record)

    async def broken() -> AsyncIterator[bytes]:
        yield os.urandom(9 * 1024 * 1024)  # one whole part goes out, then the client's stream breaks
        raise ConnectionResetError("client went away")

    async def run() -> None:
        # when a small and a multipart body are stored, then each write asked S3 to encrypt it (AES256)
        await store.put("enc", chunks_of(b"secret"), content_type="text/plain", max_bytes=100)
        await store.put("enc-big", chunks_of(os.urandom(9 * 1024 * 1024)), content_type="text/plain",
                        max_bytes=1 << 30)
        creates = {op: sse for op, sse in sent if op in ("PutObject", "CreateMultipartUpload")}
        assert creates == {"PutObject": "AES256", "CreateMultipartUpload": "AES256"}
        assert client.head_object(Bucket=store.bucket, Key=store.prefix + "enc")["ContentType"] == "text/plain"
        # when the client's stream breaks after a part went out, then the upload is aborted and no object is made
        sent.clear()
        with pytest.raises(ConnectionResetError):
            await store.put("broken", broken(), content_type="text/plain", max_bytes=1 << 30)
        assert [op for op, _ in sent] == ["CreateMultipartUpload", "UploadPart", "AbortMultipartUpload"]
        keys = [o["Key"] for o in client.list_objects_v2(Bucket=store.bucket, Prefix=store.prefix)["Contents"]]
        assert sorted(keys) == [store.prefix + "enc", store.prefix + "enc-big"]

    try:
        asyncio.run(run())
    finally:
        client.meta.events.unregister("before-send.s3", record)


def test_the_scheduled_sweeper_removes_expired_rows_and_bytes(ddb_tables: str, tmp_path: Path,
                                                              monkeypatch: pytest.MonkeyPatch) -> None:
    from functions.files import sweeper
    from isthmus import wiring

    monkeypatch.setenv("ISTHMUS_FILES_DIR", str(tmp_path / "swept"))
    monkeypatch.delenv("ISTHMUS_FILES_BUCKET", raising=False)
    wiring.reset()
    service = wiring.file_access()
    owner = f"u-{os.urandom(4).hex()}"

    async def upload(name: str, seconds: int | None) -> Any:
        return await service.create(owner_id=owner, filename=name, purpose="user_data", content_type="text/plain",
                                    chunks=chunks_of(name.encode()), expires_after_seconds=seconds)

    # given a file that expired an hour ago (nobody read it since) and one that lives on
    service.clock = lambda: time.time() - 7200
    old = asyncio.run(upload("old.txt", 3600))
    service.clock = time.time
    kept = asyncio.run(upload("kept.txt", 3600))
    # when the scheduled sweeper runs, then the expired file's row and bytes are gone, the other untouched
    assert sweeper.handler({}, None)["swept"] >= 1
    assert asyncio.run(service.meta.get(old.file_id)) is None
    assert sorted(p.name for p in (tmp_path / "swept").iterdir()) == [kept.file_id]
    wiring.reset()
