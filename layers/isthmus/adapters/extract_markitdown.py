"""TextExtractor over markitdown (MIT): PDF, DOCX, XLSX, PPTX, HTML, CSV, JSON and plain text to Markdown.

markitdown is an optional dependency (the ``files`` extra): without it (the cloud deployment, see
extract_fallback), plain-text formats (text/*, JSON, CSV, XML) are still decoded as UTF-8, PDF, DOCX, XLSX, PPTX
and HTML are read by the libraries markitdown itself uses (extract_fallback) where they are installed, and every
other format comes back empty with a detail saying why. One converter
per process, built on first use under a lock: building one loads magika's ONNX model and starts its thread pool
(Otari measured the memory of one per call never coming back).
"""

from __future__ import annotations

import io
import mimetypes
import threading
from pathlib import PurePath
from typing import Any

from isthmus.adapters import extract_fallback
from isthmus.observability import get_logger
from isthmus.ports.extraction import ExtractedText

logger = get_logger("files")

# markitdown picks its converter from the extension; the media type fills in when the name has none.
_EXTENSIONS = {
    "application/pdf": ".pdf",
    "application/vnd.openxmlformats-officedocument.wordprocessingml.document": ".docx",
    "application/vnd.openxmlformats-officedocument.presentationml.presentation": ".pptx",
    "application/vnd.openxmlformats-officedocument.spreadsheetml.sheet": ".xlsx",
    "text/csv": ".csv",
    "text/markdown": ".md",
    "text/plain": ".txt",
    "text/html": ".html",
    "application/json": ".json",
    "application/xml": ".xml",
    "text/xml": ".xml",
}
_PLAIN = {".txt", ".md", ".csv", ".json", ".jsonl", ".xml", ".yaml", ".yml", ".log", ".tsv"}

_converter: Any | None = None
_converter_lock = threading.Lock()


def extension_for(media_type: str, filename: str) -> str:
    suffix = PurePath(filename).suffix.lower() if filename else ""
    if suffix:
        return suffix
    mime = media_type.split(";", 1)[0].strip().lower()
    return _EXTENSIONS.get(mime) or mimetypes.guess_extension(mime) or ".bin"


def _markitdown() -> Any | None:
    """The shared converter; None when markitdown is not installed or cannot start (its ONNX model, say)."""
    global _converter
    with _converter_lock:
        if _converter is None:
            try:
                from markitdown import MarkItDown

                _converter = MarkItDown(enable_plugins=False)
            except ImportError:
                return None
            except Exception as exc:  # an extractor that cannot start reads plain text only, never a 500
                logger.warning("markitdown unavailable", extra={"error": type(exc).__name__})
                return None
    return _converter


def _plain(data: bytes) -> ExtractedText:
    text = data.decode("utf-8", errors="replace").strip()
    return ExtractedText(text, "" if text else "the file is empty")


def _unreadable(extension: str, exc: Exception, data: bytes) -> ExtractedText:
    """A broken or unsupported file is an empty text with its reason, never a 500."""
    logger.warning("text extraction failed", extra={"extension": extension, "error": type(exc).__name__})
    if extension in _PLAIN:
        return _plain(data)
    return ExtractedText("", f"its {extension} content could not be read ({type(exc).__name__})")


def _extracted(text: str, extension: str) -> ExtractedText:
    text = text.strip()
    if text:
        return ExtractedText(text)
    if extension == ".pdf":
        return ExtractedText("", "the PDF has no text layer (a scanned or image-only PDF); no text could be "
                                 "extracted from it")
    return ExtractedText("", "no text could be extracted from it")


def _without_markitdown(data: bytes, *, media_type: str, extension: str) -> ExtractedText:
    if extension in _PLAIN or (media_type.startswith("text/") and extension not in (".html", ".htm")):
        return _plain(data)
    reader = extract_fallback.reader_for(extension)
    if reader is None:
        return ExtractedText("", f"no extractor for {extension} files is installed on this gateway")
    try:
        text = reader(data)
    except Exception as exc:
        return _unreadable(extension, exc, data)
    return _extracted(text, extension)


class MarkitdownExtractor:
    def extract(self, data: bytes, *, media_type: str, filename: str) -> ExtractedText:
        extension = extension_for(media_type, filename)
        converter = _markitdown()
        if converter is None:
            return _without_markitdown(data, media_type=media_type, extension=extension)
        try:
            from markitdown import StreamInfo

            result = converter.convert_stream(io.BytesIO(data), stream_info=StreamInfo(
                extension=extension, mimetype=media_type or None, filename=filename or None))
        except Exception as exc:
            return _unreadable(extension, exc, data)
        return _extracted(result.text_content or "", extension)
