"""BlobStore in a directory (the local edge's data dir: ``ISTHMUS_FILES_DIR``, default ``.isthmus/files``).

An upload is streamed chunk by chunk into a temp file beside its final name, fsynced, then renamed into place (and
the directory fsynced), so a reader never sees half a file and a crash leaves at most a temp file that the next
start clears. Over the size limit or on a broken stream the temp file is removed: nothing of the body is kept.
File I/O runs in worker threads so a 200 MB upload never blocks the event loop.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
import time
from collections.abc import AsyncIterable, AsyncIterator
from pathlib import Path
from typing import BinaryIO

from anyio import to_thread

from isthmus.ports.files import FileNotFound, FileTooLarge

READ_CHUNK = 1024 * 1024
_SAFE_KEY = re.compile(r"^[A-Za-z0-9][A-Za-z0-9._-]{0,200}$")
_TEMP_PREFIX = ".part-"
STALE_TEMP_SECONDS = 24 * 3600  # a temp file this old belongs to no live upload


def files_dir() -> Path:
    return Path(os.environ.get("ISTHMUS_FILES_DIR") or Path(".isthmus") / "files")


class LocalBlobStore:
    def __init__(self, root: Path | None = None) -> None:
        self.root = root or files_dir()
        self.root.mkdir(parents=True, exist_ok=True)
        self._clear_stale_temps()

    def _path(self, key: str) -> Path:
        if not _SAFE_KEY.match(key):  # keys are ours (file ids), but never let one name a path outside root
            raise ValueError(f"bad blob key {key!r}")
        return self.root / key

    async def put(self, key: str, chunks: AsyncIterable[bytes], *, content_type: str,
                  max_bytes: int) -> tuple[int, str]:
        final = self._path(key)
        temp = self.root / f"{_TEMP_PREFIX}{key}-{secrets.token_hex(4)}"
        digest = hashlib.sha256()
        size = 0
        out: BinaryIO = await to_thread.run_sync(open, temp, "xb")
        try:
            async for chunk in chunks:
                if not chunk:
                    continue
                size += len(chunk)
                if size > max_bytes:
                    raise FileTooLarge(max_bytes)
                digest.update(chunk)
                await to_thread.run_sync(out.write, chunk)
            await to_thread.run_sync(_flush_and_close, out)
            await to_thread.run_sync(os.replace, temp, final)
            await to_thread.run_sync(_fsync_dir, self.root)
        except BaseException:
            out.close()
            temp.unlink(missing_ok=True)
            raise
        return size, digest.hexdigest()

    async def get(self, key: str) -> AsyncIterator[bytes]:
        path = self._path(key)
        try:
            handle: BinaryIO = await to_thread.run_sync(open, path, "rb")
        except FileNotFoundError:
            raise FileNotFound(key) from None
        try:
            while chunk := await to_thread.run_sync(handle.read, READ_CHUNK):
                yield chunk
        finally:
            handle.close()

    async def delete(self, key: str) -> None:
        await to_thread.run_sync(lambda: self._path(key).unlink(missing_ok=True))

    def _clear_stale_temps(self) -> None:
        cutoff = time.time() - STALE_TEMP_SECONDS
        for temp in self.root.glob(f"{_TEMP_PREFIX}*"):
            try:
                if temp.stat().st_mtime < cutoff:
                    temp.unlink()
            except OSError:
                continue


def _flush_and_close(out: BinaryIO) -> None:
    out.flush()
    os.fsync(out.fileno())
    out.close()


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)
