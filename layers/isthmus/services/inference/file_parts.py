"""File understanding: the documents a request attaches, made fit for the backend that will answer it.

Otari's behaviour (docs/files.md of mozilla-ai/otari): per attached file,

- a backend that reads documents natively (a cloud alias whose published capabilities name ``documents``) gets
  the file block forwarded; a ``file_id`` of *our* store becomes inline base64 data (the provider cannot see our
  store), inline data goes on as it came;
- a text-only backend (local pools, the default agent, a single Mac, CoeOS picks that land on them) gets the
  file's extracted text instead, in a wrapper naming the file. A file with no extractable text (a scanned PDF)
  is not dropped in silence: the wrapper says that no text could be read from it, so the model can tell its
  user (Otari never fails a chat because one attachment is unreadable; it has no OCR here to fall back to).

Runs in the inference service before the budget hold's token bound is computed, so the hold counts the text the
model will see. Extraction is CPU work: it runs in a thread, and its result is cached per file (an in-process
LRU bounded by bytes), so a conversation that re-sends a file_id each turn extracts it once per process.
"""

from __future__ import annotations

import asyncio
import base64
import binascii
import hashlib
import mimetypes
import threading
from collections import OrderedDict
from collections.abc import Callable
from typing import TYPE_CHECKING

from isthmus import settings
from isthmus.background import per_loop
from isthmus.errors import ApiError
from isthmus.ports.extraction import ExtractedText, TextExtractor
from isthmus.ports.files import FileAccess, FileNotFound, FileTooLarge
from isthmus.services.files.wire import owner_of
from isthmus_contracts.internal import FilePart, InternalRequest, Message, Part, TextPart

if TYPE_CHECKING:
    from isthmus.services.tenancy.gate import Principal

DEFAULT_MAX_FILE_BYTES = 32 * 1024 * 1024  # one attached file, read whole to extract or inline it
DEFAULT_CACHE_BYTES = 64 * 1024 * 1024  # extracted texts kept per process
DOCUMENT_CAPABILITIES = frozenset({"documents", "files"})


def has_files(request: InternalRequest) -> bool:
    return any(isinstance(part, FilePart) for message in request.messages for part in message.content)


def reads_documents(backend: object) -> bool:
    """The backend takes file blocks as they are (set on cloud alias backends from their capabilities)."""
    return bool(getattr(backend, "reads_documents", False))


def file_owner(principal: Principal | None) -> str | None:
    """Whose files a request may attach: those the caller sees on /v1/files (its user's, a user-less key's own;
    every file for the master key and in open mode)."""
    return None if principal is None else owner_of(principal)[1]


def wrapped(filename: str, extracted: ExtractedText) -> str:
    """The text a text-only model sees in place of a file."""
    if extracted.text:
        return f"[Attached file: {filename}]\n{extracted.text}\n[End of {filename}]"
    return (f"[Attached file: {filename}. No text could be extracted from it: {extracted.detail}. "
            "Its content is not available to the model.]")


class ExtractionCache:
    """Extracted texts by key (a file id, or the digest of inline bytes), least recently used out first once
    their UTF-8 size passes ``max_bytes``. Thread-safe (one process serves many loops under the edge)."""

    def __init__(self, max_bytes: int) -> None:
        self.max_bytes = max_bytes
        self.size = 0
        self._items: OrderedDict[str, tuple[ExtractedText, int]] = OrderedDict()
        self._lock = threading.Lock()

    def get(self, key: str) -> ExtractedText | None:
        with self._lock:
            found = self._items.get(key)
            if found is None:
                return None
            self._items.move_to_end(key)
            return found[0]

    def put(self, key: str, value: ExtractedText) -> None:
        cost = len(value.text.encode("utf-8")) + len(value.detail) + len(key)
        if cost > self.max_bytes:
            return  # one text larger than the whole cache would only evict everything else
        with self._lock:
            old = self._items.pop(key, None)
            if old is not None:
                self.size -= old[1]
            self._items[key] = (value, cost)
            self.size += cost
            while self.size > self.max_bytes:
                _, (_, dropped) = self._items.popitem(last=False)
                self.size -= dropped

    def __len__(self) -> int:
        return len(self._items)


class _Resolved:
    """One attached file's bytes and how to name it."""

    def __init__(self, data: bytes, media_type: str, filename: str, cache_key: str, b64: str | None = None) -> None:
        self.data, self.media_type, self.filename, self.cache_key = data, media_type, filename, cache_key
        self._b64 = b64

    @property
    def b64(self) -> str:
        if self._b64 is None:
            self._b64 = base64.b64encode(self.data).decode("ascii")
        return self._b64


def _media_type(given: str | None, filename: str) -> str:
    return given or mimetypes.guess_type(filename)[0] or "application/octet-stream"


class FileParts:
    """``files`` hands out the file store (None when this gateway runs none: then only inline files work)."""

    def __init__(self, files: Callable[[], FileAccess | None], extractor: TextExtractor,
                 cache: ExtractionCache | None = None, max_file_bytes: int | None = None) -> None:
        self.files = files
        self.extractor = extractor
        self.cache = cache or ExtractionCache(
            settings.env_positive_int("ISTHMUS_EXTRACT_CACHE_BYTES", DEFAULT_CACHE_BYTES))
        self.max_file_bytes = max_file_bytes or settings.env_positive_int(
            "ISTHMUS_ATTACHED_FILE_MAX_BYTES", DEFAULT_MAX_FILE_BYTES)
        # Extractions running, per loop: concurrent requests attaching one file (a batch's lines) share one.
        self._extracting: dict[asyncio.AbstractEventLoop, dict[str, asyncio.Future[ExtractedText]]] = {}

    async def prepare(self, request: InternalRequest, *, owner_id: str | None, native: bool) -> InternalRequest:
        """``request`` with every FilePart made fit for the backend (see the module's docstring). Raises
        ApiError (404 unknown file, 400/413 bad inline data) before anything is held or billed."""
        messages: list[Message] = []
        for i, message in enumerate(request.messages):
            if not any(isinstance(part, FilePart) for part in message.content):
                messages.append(message)
                continue
            content: list[Part] = []
            for j, part in enumerate(message.content):
                if isinstance(part, FilePart):
                    content.append(await self._part(part, f"messages.{i}.content.{j}", owner_id, native))
                else:
                    content.append(part)
            messages.append(message.model_copy(update={"content": content}))
        return request.model_copy(update={"messages": messages})

    async def _part(self, part: FilePart, where: str, owner_id: str | None, native: bool) -> Part:
        if native and part.text is not None:
            return part  # a text document goes on as one
        resolved = await self._resolve(part, where, owner_id)
        if native:
            return FilePart(data=resolved.b64, media_type=resolved.media_type, filename=resolved.filename)
        return TextPart(text=wrapped(resolved.filename, await self._extracted(resolved)))

    async def _extracted(self, resolved: _Resolved) -> ExtractedText:
        key = resolved.cache_key
        cached = self.cache.get(key)
        if cached is not None:
            return cached
        running = per_loop(self._extracting, dict)
        pending = running.get(key)
        if pending is None:
            pending = asyncio.ensure_future(asyncio.to_thread(
                self.extractor.extract, resolved.data, media_type=resolved.media_type, filename=resolved.filename))
            running[key] = pending
            pending.add_done_callback(lambda _: running.pop(key, None))
        # Shielded: a request that goes away leaves the extraction to the others waiting for it.
        extracted = await asyncio.shield(pending)
        self.cache.put(key, extracted)
        return extracted

    async def _resolve(self, part: FilePart, where: str, owner_id: str | None) -> _Resolved:
        if part.file_id:
            return await self._stored(part, where, owner_id)
        if part.text is not None:
            data = part.text.encode("utf-8")
            filename = part.filename or "document.txt"
            self._check_size(len(data), where)
            return _Resolved(data, part.media_type or "text/plain", filename, self._digest_key(data))
        try:
            data = base64.b64decode(part.data or "", validate=True)
        except (binascii.Error, ValueError):
            raise ApiError(400, f"{where}: the file's data is not valid base64.", code="invalid_file",
                           param=where) from None
        self._check_size(len(data), where)
        filename = part.filename or "document"
        return _Resolved(data, _media_type(part.media_type, filename), filename, self._digest_key(data), part.data)

    async def _stored(self, part: FilePart, where: str, owner_id: str | None) -> _Resolved:
        file_id = part.file_id or ""
        files = self.files()
        if files is None:
            raise ApiError(400, f"{where}: file_id references need the files store, which this gateway does not "
                           "run; send the file inline as file_data instead.", code="files_unavailable", param=where)
        try:
            record, data = await files.read_all(file_id, owner_id=owner_id, max_bytes=self.max_file_bytes)
        except FileNotFound:
            # OpenAI's own words, as /v1/files answers them
            raise ApiError(404, f"No such File object: {file_id}", code="file_not_found", param=where) from None
        except FileTooLarge:
            self._check_size(self.max_file_bytes + 1, where)
            raise
        filename = part.filename or record.filename or "document"
        # Keyed by id and content: a file id names one upload, but the digest keeps a re-used id honest.
        key = f"id:{record.file_id}:{record.sha256}" if record.sha256 else f"id:{record.file_id}:{record.size}"
        return _Resolved(data, _media_type(record.content_type if record.content_type not in
                                           ("", "application/octet-stream") else None, filename), filename, key)

    def _check_size(self, size: int, where: str) -> None:
        if size > self.max_file_bytes:
            raise ApiError(413, f"{where}: the attached file is larger than the limit of {self.max_file_bytes} "
                           "bytes (ISTHMUS_ATTACHED_FILE_MAX_BYTES).", code="file_too_large", param=where)

    @staticmethod
    def _digest_key(data: bytes) -> str:
        return "sha256:" + hashlib.sha256(data).hexdigest()
