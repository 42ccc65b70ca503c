"""What a batch is made of: the OpenAI input file (JSONL of ``custom_id``, ``method``, ``url``, ``body``) checked
line by line into OpenAI's ``errors`` shape, and the two create bodies (OpenAI's and Otari's inline one)."""

from __future__ import annotations

import json
from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from isthmus.services.batches.model import line_error

MAX_LINES = 50_000           # OpenAI's limit per batch
MAX_LINE_BYTES = 300_000     # a line is one store item (400 KB) with its result; bigger is refused at intake
MAX_REPORTED_ERRORS = 100


class CreateOpenAIBatch(BaseModel):
    model_config = ConfigDict(extra="ignore", defer_build=True)
    input_file_id: str = Field(min_length=1, max_length=200)
    endpoint: str
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


class InlineRequest(BaseModel):
    model_config = ConfigDict(extra="forbid", defer_build=True)
    custom_id: str = Field(min_length=1, max_length=512)
    body: dict[str, Any]


class CreateOtariBatch(BaseModel):
    """Otari's shape: one ``model`` and the requests inline (chat completion bodies without ``model``)."""

    model_config = ConfigDict(extra="ignore", defer_build=True)
    model: str = Field(min_length=1, max_length=256)
    requests: list[InlineRequest] = Field(min_length=1, max_length=10_000)
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None


def check_metadata(metadata: dict[str, str] | None) -> str | None:
    """OpenAI's bounds on batch metadata: at most 16 pairs, keys up to 64 characters, values up to 512."""
    if metadata is None:
        return None
    if len(metadata) > 16:
        return "metadata has more than 16 keys"
    if any(len(k) > 64 or len(v) > 512 for k, v in metadata.items()):
        return "metadata keys are at most 64 characters and values at most 512"
    return None


def parse_input(raw: bytes, endpoint: str) -> tuple[list[dict[str, Any]], list[dict[str, Any]]]:
    """(lines ``{"n", "custom_id", "body"}``, errors). Any error fails the whole batch (as OpenAI does)."""
    lines: list[dict[str, Any]] = []
    errors: list[dict[str, Any]] = []
    seen: set[str] = set()

    def fail(code: str, message: str, number: int, param: str | None = None) -> None:
        if len(errors) < MAX_REPORTED_ERRORS:
            errors.append(line_error(code, message, number, param))

    try:
        text = raw.decode("utf-8")
    except UnicodeDecodeError:
        return [], [line_error("invalid_file_format", "The input file is not UTF-8 text.")]
    for number, row in enumerate(text.splitlines(), start=1):
        if not row.strip():
            continue
        if len(row.encode()) > MAX_LINE_BYTES:
            fail("line_too_large", f"Line is larger than {MAX_LINE_BYTES} bytes.", number)
            continue
        try:
            item = json.loads(row)
        except ValueError:
            fail("invalid_json_line", "This line is not valid JSON.", number)
            continue
        if not isinstance(item, dict):
            fail("invalid_json_line", "This line is not a JSON object.", number)
            continue
        custom_id, body = item.get("custom_id"), item.get("body")
        if not isinstance(custom_id, str) or not custom_id or len(custom_id) > 512:
            fail("missing_required_parameter", "custom_id must be a non-empty string.", number, "custom_id")
        elif custom_id in seen:
            fail("duplicate_custom_id", f"The custom_id {custom_id!r} is used more than once.", number, "custom_id")
        elif str(item.get("method", "")).upper() != "POST":
            fail("invalid_method", "method must be POST.", number, "method")
        elif item.get("url") != endpoint:
            fail("mismatched_endpoint", f"url must be the batch's endpoint {endpoint}.", number, "url")
        elif not isinstance(body, dict):
            fail("missing_required_parameter", "body must be a JSON object.", number, "body")
        elif body.get("stream"):
            fail("invalid_value", "Batch lines cannot stream.", number, "body.stream")
        else:
            seen.add(custom_id)
            lines.append({"n": len(lines), "custom_id": custom_id, "body": body})
        if len(lines) > MAX_LINES:
            return [], [line_error("too_many_lines", f"The input file has more than {MAX_LINES} requests.")]
    if not lines and not errors:
        errors.append(line_error("empty_file", "The input file has no requests."))
    return lines, errors


def inline_lines(body: CreateOtariBatch) -> tuple[list[dict[str, Any]], str | None]:
    """Otari's inline requests as lines; the problem with them (a repeated custom_id), if any."""
    seen: set[str] = set()
    lines: list[dict[str, Any]] = []
    for request in body.requests:
        if request.custom_id in seen:
            return [], f"custom_id {request.custom_id!r} is used more than once"
        if request.body.get("stream"):
            return [], f"request {request.custom_id!r}: batch requests cannot stream"
        if len(json.dumps(request.body)) > MAX_LINE_BYTES:
            return [], f"request {request.custom_id!r} is larger than {MAX_LINE_BYTES} bytes"
        seen.add(request.custom_id)
        lines.append({"n": len(lines), "custom_id": request.custom_id, "body": request.body})
    return lines, None
