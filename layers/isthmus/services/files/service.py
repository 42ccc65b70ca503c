"""The files service: owner checks, expiry, the size limit, and the order of writes.

Bytes are written first and the metadata row last, so a crash never leaves a row without bytes (at worst an
orphan blob, which no caller can see). A delete removes the row first for the same reason. A file belongs to the
key's user; ``owner_id=None`` is the master key, which sees every file. Another user's file, an expired one and a
missing one are the same :class:`FileNotFound` (404): the API never says that a file id exists elsewhere.
"""

from __future__ import annotations

import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator, Callable
from typing import Literal

from isthmus.observability import get_logger
from isthmus.ports.files import BlobStore, FileMetaStore, FileNotFound, FileRecord, FileTooLarge
from isthmus.settings import env_positive_int

log = get_logger("files")

DEFAULT_MAX_FILE_BYTES = 512 * 1024 * 1024


def max_file_bytes() -> int:
    """``ISTHMUS_MAX_FILE_BYTES`` (512 MiB): OpenAI's own limit per file, and what a batch input needs."""
    return env_positive_int("ISTHMUS_MAX_FILE_BYTES", DEFAULT_MAX_FILE_BYTES)


def new_file_id() -> str:
    # "file-" + 24 url-safe-free chars, as OpenAI's ids look; 120 random bits, never guessable
    return "file-" + secrets.token_hex(12)


def blob_key(file_id: str) -> str:
    return file_id


class FileService:
    """FileAccess over a BlobStore and a FileMetaStore (``clock`` returns unix seconds: tests move time)."""

    def __init__(self, blobs: BlobStore, meta: FileMetaStore, *, max_bytes: int | None = None,
                 clock: Callable[[], float] = time.time) -> None:
        self.blobs = blobs
        self.meta = meta
        self.max_bytes = max_bytes or max_file_bytes()
        self.clock = clock

    async def create(self, *, owner_id: str, filename: str, purpose: str, content_type: str,
                     chunks: AsyncIterable[bytes], expires_after_seconds: int | None = None) -> FileRecord:
        if expires_after_seconds is not None and expires_after_seconds <= 0:
            raise ValueError("expires_after.seconds must be a positive number of seconds")
        return await self.upload(owner_id=owner_id, filename=filename, content_type=content_type, chunks=chunks,
                                 terms=lambda: (purpose, expires_after_seconds))

    async def upload(self, *, owner_id: str, filename: str, content_type: str, chunks: AsyncIterable[bytes],
                     terms: Callable[[], tuple[str, int | None]]) -> FileRecord:
        """:meth:`create` for a body whose purpose and expiry may arrive after its bytes (a form's fields in any
        order): ``terms`` gives (purpose, expires_after_seconds) once the bytes are stored; if it raises (a bad
        or missing field), the bytes are dropped and nothing is kept."""
        file_id = new_file_id()
        now = int(self.clock())
        # The blob store keeps nothing of a body that failed (over the limit, a broken stream): see BlobStore.
        size, digest = await self.blobs.put(blob_key(file_id), chunks, content_type=content_type,
                                            max_bytes=self.max_bytes)
        try:
            purpose, expires_after_seconds = terms()
            record = FileRecord(file_id=file_id, owner_id=owner_id, filename=filename, purpose=purpose,
                                content_type=content_type, size=size, created_at=now, sha256=digest,
                                expires_at=now + expires_after_seconds if expires_after_seconds else None)
            await self.meta.put(record)
        except BaseException:
            await self._forget_blob(file_id)  # no row: the bytes would be an orphan nobody can reach
            raise
        return record

    async def get(self, file_id: str, *, owner_id: str | None) -> FileRecord:
        record = await self.meta.get(file_id) if file_id.startswith("file-") else None
        if record is None or (owner_id is not None and record.owner_id != owner_id):
            raise FileNotFound(file_id)
        if self.expired(record):
            await self._sweep(record)
            raise FileNotFound(file_id)
        return record

    def content(self, record: FileRecord) -> AsyncIterator[bytes]:
        return self.blobs.get(blob_key(record.file_id))

    async def read_all(self, file_id: str, *, owner_id: str | None, max_bytes: int) -> tuple[FileRecord, bytes]:
        record = await self.get(file_id, owner_id=owner_id)
        if record.size > max_bytes:
            raise FileTooLarge(max_bytes)
        parts: list[bytes] = []
        total = 0
        async for chunk in self.content(record):
            total += len(chunk)
            if total > max_bytes:  # the row said less: never trust it for a memory bound
                raise FileTooLarge(max_bytes)
            parts.append(chunk)
        return record, b"".join(parts)

    async def delete(self, file_id: str, *, owner_id: str | None) -> None:
        record = await self.get(file_id, owner_id=owner_id)
        if not await self.meta.delete(record.file_id):
            raise FileNotFound(file_id)  # deleted concurrently
        await self._forget_blob(record.file_id)

    async def list_files(self, *, owner_id: str | None, purpose: str | None = None, limit: int = 10_000,
                   after: str | None = None, order: Literal["asc", "desc"] = "desc") -> tuple[list[FileRecord], bool]:
        """One page of the caller's live files (all files for the master) and whether more follow. ``after`` is a
        file id of the previous page; one the caller cannot see is FileNotFound."""
        if after is not None:
            await self.get(after, owner_id=owner_id)
        page: list[FileRecord] = []
        cursor = after
        while True:  # expired rows linger until the TTL sweep: skip them and read on to fill the page
            rows, more = await self.meta.list_for_owner(owner_id, purpose=purpose, limit=limit - len(page),
                                                        after=cursor, order=order)
            page.extend(r for r in rows if not self.expired(r))
            if not more or len(page) >= limit or not rows:
                return page, more
            cursor = rows[-1].file_id

    def expired(self, record: FileRecord) -> bool:
        return record.expires_at is not None and record.expires_at <= self.clock()

    async def _sweep(self, record: FileRecord) -> None:
        """An expired file found on read goes at once (the table's TTL drops the row some day, never the bytes)."""
        try:
            if await self.meta.delete(record.file_id):
                await self._forget_blob(record.file_id)
        except Exception as exc:  # a read must not fail because the clean-up did
            log.warning("could not sweep expired file %s: %s", record.file_id, type(exc).__name__)

    async def _forget_blob(self, file_id: str) -> None:
        try:
            await self.blobs.delete(blob_key(file_id))
        except Exception as exc:
            log.warning("could not delete the bytes of file %s: %s", file_id, type(exc).__name__)
