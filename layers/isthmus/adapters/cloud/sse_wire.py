"""Server-sent events from a provider's body bytes: (event name, data) per event, as the SSE spec frames them
(lines end in LF, CRLF or CR; a blank line ends an event; ``data`` lines join with LF; comments and other
fields are skipped). Parsed from bytes in whole events, not line by line through httpx's text decoding: that
costs a content-type charset parse (the ``email`` package) per response and a call per line, and SSE is UTF-8 by
definition. A newline byte never sits inside a UTF-8 sequence, so an event's bytes always decode whole."""

from __future__ import annotations

SseEvent = tuple[str | None, str]
MAX_EVENT_BYTES = 16 * 2**20  # far above any provider's event (a delta, a tool call's arguments); a bound on memory


class EventTooLarge(ValueError):
    """An event grew past MAX_EVENT_BYTES without ending: the upstream is not speaking SSE as it should."""


class SseParser:
    """Feed body chunks as they come; each call returns the events they completed."""

    def __init__(self) -> None:
        self.buf = bytearray()  # the unfinished event; appended to and searched only past what was searched
        self.cr = False  # the last chunk ended in CR: a LF opening the next one belongs to it

    def feed(self, chunk: bytes) -> list[SseEvent]:
        if self.cr or b"\r" in chunk:
            chunk = self._lf_only(chunk)
        searched = max(0, len(self.buf) - 1)  # an event's blank line may straddle the two chunks
        buf = self.buf
        buf += chunk
        events: list[SseEvent] = []
        start = 0
        while (end := buf.find(b"\n\n", max(start, searched))) >= 0:
            event = _event(buf[start:end])
            if event is not None:
                events.append(event)
            start = end + 2
        del buf[:start]
        if len(buf) > MAX_EVENT_BYTES:
            raise EventTooLarge(f"an event over {MAX_EVENT_BYTES} bytes")
        return events

    def end(self) -> list[SseEvent]:
        """The body ended: an event it left without its blank line still counts."""
        event = _event(self.buf.rstrip(b"\n"))
        self.buf.clear()
        return [] if event is None else [event]

    def _lf_only(self, chunk: bytes) -> bytes:
        if self.cr:
            chunk = b"\r" + chunk
        self.cr = chunk.endswith(b"\r")
        if self.cr:
            chunk = chunk[:-1]
        return chunk.replace(b"\r\n", b"\n").replace(b"\r", b"\n")


def _event(block: bytes | bytearray) -> SseEvent | None:
    """One event's lines (no blank line among them) -> (name, data); None when it has no data (comments only)."""
    name: str | None = None
    data: list[str] = []
    for line in block.decode("utf-8", "replace").split("\n"):
        if line.startswith("data:"):
            data.append(line[5:].lstrip())
        elif line.startswith("event:"):
            name = line[6:].strip()
    return (name, "\n".join(data)) if data else None
