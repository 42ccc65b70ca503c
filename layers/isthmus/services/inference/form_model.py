"""The ``model`` field of a multipart/form-data body (``/v1/audio/transcriptions``), read and rewritten in the raw
bytes: every other part, the audio file included, is forwarded byte for byte (no re-encoding, no temp files)."""

from __future__ import annotations

import re

from isthmus.errors import ApiError

_BOUNDARY = re.compile(r'boundary="?([^";]+)"?', re.IGNORECASE)
_MODEL_PART = re.compile(rb'content-disposition:\s*form-data;\s*name="?model"?\s*(?:;|\r\n|$)', re.IGNORECASE)


def _boundary(content_type: str) -> bytes:
    found = _BOUNDARY.search(content_type) if content_type.lower().startswith("multipart/form-data") else None
    if found is None:
        raise ApiError(400, "The body must be multipart/form-data with a boundary.", code="invalid_value")
    return found.group(1).encode("latin-1")


def _model_span(raw: bytes, boundary: bytes) -> tuple[int, int]:
    """Where the model part's value sits in ``raw`` (start, end); a 400 when there is none."""
    delimiter = b"--" + boundary
    position = raw.find(delimiter)
    while position != -1:
        head_start = position + len(delimiter) + 2  # past the delimiter's CRLF
        head_end = raw.find(b"\r\n\r\n", head_start)
        following = raw.find(b"\r\n" + delimiter, head_start)
        if head_end == -1 or following == -1:
            break
        if head_end < following and _MODEL_PART.search(raw[head_start:head_end + 2]):
            return head_end + 4, following
        position = following + 2
    raise ApiError(400, "model is required", param="model", code="invalid_value")


def form_model(raw: bytes, content_type: str) -> str:
    start, end = _model_span(raw, _boundary(content_type))
    return raw[start:end].decode("utf-8", errors="replace").strip()


def with_form_model(raw: bytes, content_type: str, model: str) -> bytes:
    start, end = _model_span(raw, _boundary(content_type))
    return raw[:start] + model.encode("utf-8") + raw[end:]
