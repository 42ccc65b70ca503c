"""A FileMetaStore in memory, for fast unit tests of the files service (DynamoDB Local proves the real one)."""

from __future__ import annotations

from collections.abc import AsyncIterator
from typing import Literal

from isthmus.ports.files import FileRecord


class MemoryFileMetaStore:
    def __init__(self, *, fail_puts: bool = False) -> None:
        self.rows: dict[str, FileRecord] = {}
        self.fail_puts = fail_puts

    async def put(self, record: FileRecord) -> None:
        if self.fail_puts:
            raise ConnectionError("store unavailable")
        self.rows[record.file_id] = record

    async def get(self, file_id: str) -> FileRecord | None:
        return self.rows.get(file_id)

    async def list_for_owner(self, owner_id: str | None, *, purpose: str | None, limit: int, after: str | None,
                             order: Literal["asc", "desc"]) -> tuple[list[FileRecord], bool]:
        rows = sorted((r for r in self.rows.values() if owner_id in (None, r.owner_id)
                       and purpose in (None, r.purpose)), key=lambda r: (r.created_at, r.file_id),
                      reverse=order == "desc")
        if after:
            ids = [r.file_id for r in rows]
            rows = rows[ids.index(after) + 1:] if after in ids else []
        return rows[:limit], len(rows) > limit

    async def delete(self, file_id: str) -> bool:
        return self.rows.pop(file_id, None) is not None


async def chunks_of(data: bytes, size: int = 65536) -> AsyncIterator[bytes]:
    for start in range(0, len(data), size):
        yield data[start:start + size]
