"""Document text extraction: what file understanding needs to show a text-only model an attached file."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


@dataclass(frozen=True)
class ExtractedText:
    """A file's text (Markdown where the format has structure). ``text`` is empty when none could be read;
    ``detail`` then says why (a scanned PDF, an unsupported format), in words fit for the prompt."""

    text: str
    detail: str = ""


class TextExtractor(Protocol):
    def extract(self, data: bytes, *, media_type: str, filename: str) -> ExtractedText:
        """Blocking, CPU-bound: callers run it off the event loop. Never raises for a bad or unreadable file
        (that is an empty text with its ``detail``)."""
        ...
