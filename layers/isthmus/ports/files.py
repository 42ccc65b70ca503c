"""Uploaded files: what the files API, file understanding and the batch engine need from storage.

One contract, three users: the files endpoints (upload, list, content, delete), file understanding (a chat request
that references ``file_id`` reads its bytes) and batches (read the input JSONL, write the output and error JSONL).
Two layers sit behind it: a blob store for the bytes (S3 in the cloud, the data dir on a local edge) and a metadata
table (DynamoDB ``files``). Adapters implement :class:`BlobStore` and :class:`FileMetaStore`; the service in
``services/files`` implements :class:`FileAccess` over them, and ``wiring.file_access()`` hands it out.
"""

from __future__ import annotations

from collections.abc import AsyncIterable, AsyncIterator
from typing import Literal, Protocol

from pydantic import BaseModel, ConfigDict

# OpenAI's purposes plus Otari's; "batch_output" is what the batch engine writes.
FilePurpose = Literal["assistants", "assistants_output", "batch", "batch_output", "fine-tune", "fine-tune-results",
                      "vision", "user_data", "evals"]


class FileRecord(BaseModel):
    """One stored file's metadata (the OpenAI file object is shaped from it: ``id``=file_id, ``bytes``=size)."""

    model_config = ConfigDict(defer_build=True)
    file_id: str            # "file-..." (OpenAI's prefix: SDKs and users recognise it)
    owner_id: str           # the key's user; "__master__" for the master key's own files
    filename: str
    purpose: str
    content_type: str
    size: int               # bytes
    created_at: int         # unix seconds, UTC
    expires_at: int | None = None  # unix seconds; past it the file is gone (404) and swept
    sha256: str = ""


class FileNotFound(LookupError):
    """No such file for this caller (missing, expired, deleted, or another user's: all look the same, 404)."""


class FileTooLarge(ValueError):
    """The upload passed the size limit (413); nothing of it is kept."""

    def __init__(self, limit: int) -> None:
        super().__init__(f"file larger than the limit of {limit} bytes")
        self.limit = limit


class BlobStore(Protocol):
    """Bytes by key. ``put`` streams (never holds the whole body) and returns (size, sha256 hex)."""

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str,
                  max_bytes: int) -> tuple[int, str]: ...

    def get(self, key: str) -> AsyncIterator[bytes]: ...

    async def delete(self, key: str) -> None: ...


class FileMetaStore(Protocol):
    async def put(self, record: FileRecord) -> None: ...

    async def get(self, file_id: str) -> FileRecord | None: ...

    async def list_for_owner(self, owner_id: str | None, *, purpose: str | None, limit: int, after: str | None,
                             order: Literal["asc", "desc"]) -> tuple[list[FileRecord], bool]: ...  # (page, has_more)

    async def delete(self, file_id: str) -> bool: ...

    async def list_expired(self, now: int, *, limit: int) -> list[FileRecord]: ...  # rows past expires_at


class FileAccess(Protocol):
    """The files service as its other users see it. ``owner_id=None`` is the master key: every file is visible."""

    async def create(self, *, owner_id: str, filename: str, purpose: str, content_type: str,
                     chunks: AsyncIterable[bytes], expires_after_seconds: int | None = None) -> FileRecord: ...

    async def get(self, file_id: str, *, owner_id: str | None) -> FileRecord: ...  # raises FileNotFound

    def content(self, record: FileRecord) -> AsyncIterator[bytes]: ...

    async def read_all(self, file_id: str, *, owner_id: str | None, max_bytes: int) -> tuple[FileRecord, bytes]: ...

    async def delete(self, file_id: str, *, owner_id: str | None) -> None: ...  # raises FileNotFound
