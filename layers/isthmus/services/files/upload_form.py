"""A ``multipart/form-data`` upload read as it arrives (python-multipart's streaming parser): the small form fields
are kept (bounded), the one ``file`` part is handed on chunk by chunk and never held whole.

The openai SDK sends ``purpose`` and ``expires_after[...]`` before the file, but curl sends the parts in the order
given; fields after the file are read once the file's bytes are through (see :meth:`UploadForm.file_chunks`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from dataclasses import dataclass, field

from python_multipart.multipart import MultipartParser, parse_options_header

from isthmus.errors import ApiError, bad_request

MAX_FIELD_BYTES = 64 * 1024  # every field but the file together: a purpose and an expiry need a few bytes
MAX_PARTS = 32


@dataclass
class _Part:
    headers: dict[str, str] = field(default_factory=dict)
    name: str = ""
    filename: str | None = None
    content_type: str = ""


class UploadForm:
    """``fields`` holds the text fields read so far; ``filename`` and ``file_content_type`` describe the file part
    once :meth:`find_file` found it."""

    def __init__(self, stream: AsyncIterator[bytes], content_type: str) -> None:
        kind, options = parse_options_header(content_type)
        boundary = options.get(b"boundary")
        if kind != b"multipart/form-data" or not boundary:
            raise bad_request("Expected a multipart/form-data body with a 'file' part and a 'purpose' field.",
                              code="invalid_content_type")
        self.fields: dict[str, str] = {}
        self.filename = ""
        self.file_content_type = ""
        self._stream = stream
        self._events: list[tuple[str, object]] = []
        self._header_name = b""
        self._header_value = b""
        self._field_bytes = 0
        self._parts = 0
        self._ended = False
        self._parser = MultipartParser(boundary, callbacks={
            "on_part_begin": lambda: self._events.append(("begin", None)),
            "on_header_field": self._on_header_field,
            "on_header_value": self._on_header_value,
            "on_header_end": self._on_header_end,
            "on_headers_finished": self._on_headers_finished,
            "on_part_data": lambda data, start, end: self._events.append(("data", bytes(data[start:end]))),
            "on_part_end": lambda: self._events.append(("end", None)),
        })
        self._headers: dict[str, str] = {}
        self._part = _Part()

    def _on_header_field(self, data: bytes, start: int, end: int) -> None:
        self._header_name += data[start:end]

    def _on_header_value(self, data: bytes, start: int, end: int) -> None:
        self._header_value += data[start:end]

    def _on_header_end(self) -> None:
        self._headers[self._header_name.decode("latin-1").lower()] = self._header_value.decode("utf-8", "replace")
        self._header_name = self._header_value = b""

    def _on_headers_finished(self) -> None:
        # the parser runs ahead of the events (a whole request chunk at a time): each part's headers go with it
        self._events.append(("headers", self._headers))
        self._headers = {}

    async def _next_events(self) -> AsyncIterator[tuple[str, object]]:
        """The parser's events, one request chunk at a time (at most one chunk's data is held)."""
        while True:
            while self._events:
                yield self._events.pop(0)
            if self._ended:
                return
            try:
                chunk = await self._stream.__anext__()
            except StopAsyncIteration:
                self._ended = True
                self._parser.finalize()
                continue
            try:
                self._parser.write(chunk)
            except Exception as exc:  # python-multipart's MultipartParseError and kin: the body is malformed
                raise bad_request(f"The multipart body is malformed: {exc}", code="invalid_multipart") from None

    async def find_file(self) -> bool:
        """Read fields until the ``file`` part begins; False when the body ended without one."""
        current: bytearray | None = None
        async for kind, value in self._next_events():
            if kind == "begin":
                self._parts += 1
                if self._parts > MAX_PARTS:
                    raise bad_request(f"The form has more than {MAX_PARTS} parts.", code="invalid_multipart")
                self._part = _Part()
            elif kind == "headers":
                assert isinstance(value, dict)
                self._part.headers = value
                self._describe(self._part)
                if self._part.name == "file":
                    self.filename = self._part.filename or "upload"
                    self.file_content_type = self._part.content_type or "application/octet-stream"
                    return True
                current = bytearray()
            elif kind == "data" and current is not None:
                assert isinstance(value, bytes)
                self._field_bytes += len(value)
                if self._field_bytes > MAX_FIELD_BYTES:
                    raise ApiError(413, f"The form's fields pass {MAX_FIELD_BYTES} bytes.", code="fields_too_large")
                current += value
            elif kind == "end" and current is not None:
                self.fields[self._part.name] = current.decode("utf-8", "replace")
                current = None
        return False

    async def file_chunks(self) -> AsyncIterator[bytes]:
        """The file part's bytes as they arrive; then the fields after it (a second file is refused)."""
        async for kind, value in self._next_events():
            if kind == "data":
                assert isinstance(value, bytes)
                if value:
                    yield value
            elif kind == "end":
                break
        if await self.find_file():
            raise bad_request("The form has more than one 'file' part; upload one file per request.", param="file")

    @staticmethod
    def _describe(part: _Part) -> None:
        # As bytes: python-multipart reads them as latin-1 and gives each option's bytes back, so a UTF-8 field
        # or file name comes through whole (a str with a character beyond latin-1 made it raise: a 500)
        _, options = parse_options_header(part.headers.get("content-disposition", "").encode("utf-8"))
        part.name = options.get(b"name", b"").decode("utf-8", "replace")
        filename = options.get(b"filename")
        part.filename = filename.decode("utf-8", "replace") if filename is not None else None
        part.content_type = part.headers.get("content-type", "").split(";")[0].strip()
