"""The wire of a batch handed to its provider, both ways, as pure functions: our lines as the provider's input
(OpenAI's JSONL with the upstream model; Anthropic's ``requests`` of ``custom_id`` + ``params``), the provider's
result lines as ours (OpenAI's output-line format, the model named as the caller asked, chat completions
translated back from Anthropic messages), each with the usage it is settled by; and the lines' budget holds
packed small enough for the batch's head (what every line shares is written once)."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

from isthmus.dialects import anthropic_messages, openai_chat
from isthmus.errors import Dialect, error_body
from isthmus.services.batches.model import failure_line, output_line
from isthmus_contracts.internal import InternalResponse, Usage

if TYPE_CHECKING:
    from isthmus.services.tenancy.gate import Admission

ResultLine = tuple[dict[str, Any], bool, Usage]  # (our output/error line, ok, the usage it is billed)
NO_USAGE = Usage()


# ---- our lines -> the provider's input -------------------------------------------------------------------------
def openai_input_line(custom_id: str, endpoint: str, body: dict[str, Any], upstream_model: str,
                      max_tokens: int | None) -> dict[str, Any]:
    """The line as the caller wrote it, with the upstream model; an output bound when the caller gave none (the
    budget hold covers the default output length only if the provider stops there too)."""
    out = {k: v for k, v in body.items() if k not in ("stream", "stream_options")}
    out["model"] = upstream_model
    if max_tokens is not None and "max_tokens" not in out and "max_completion_tokens" not in out:
        out["max_completion_tokens"] = max_tokens
    return {"custom_id": custom_id, "method": "POST", "url": endpoint, "body": out}


def anthropic_request(custom_id: str, endpoint: str, body: dict[str, Any], translated: dict[str, Any],
                      upstream_model: str) -> dict[str, Any]:
    """A Message Batches request: a /v1/messages line as written (upstream model), a chat completion line as
    the cloud adapter translates a single request (``translated``)."""
    if endpoint == "/v1/messages":
        params = {k: v for k, v in body.items() if k != "stream"}
        params["model"] = upstream_model
    else:
        params = {k: v for k, v in translated.items() if k != "stream"}
    return {"custom_id": custom_id, "params": params}


# ---- the provider's results -> our lines -----------------------------------------------------------------------
def _dict(value: Any) -> dict[str, Any]:
    return value if isinstance(value, dict) else {}


def from_openai(row: dict[str, Any], alias: str, request_id: str) -> ResultLine:
    """One line of the provider's output or error file."""
    custom_id = str(row.get("custom_id") or "")
    response = row.get("response")
    if not isinstance(response, dict):
        error = _dict(row.get("error"))
        return (failure_line(custom_id, str(error.get("code") or "upstream_error"),
                             str(error.get("message") or "The provider returned no response.")), False, NO_USAGE)
    status = int(response.get("status_code") or 500)
    body = response.get("body")
    usage = NO_USAGE
    if isinstance(body, dict):
        if "model" in body:
            body = {**body, "model": alias}
        usage = openai_chat.usage_from_json(body.get("usage"))
    return output_line(custom_id, request_id, status, body), 200 <= status < 300, usage


_ERROR_STATUS = {"invalid_request_error": 400, "authentication_error": 401, "permission_error": 403,
                 "not_found_error": 404, "request_too_large": 413, "rate_limit_error": 429, "api_error": 500,
                 "overloaded_error": 529}


def from_anthropic(row: dict[str, Any], alias: str, endpoint: str, request_id: str,
                   to_response: Callable[[dict[str, Any], str], InternalResponse] | None = None) -> ResultLine:
    """One line of a Message Batch's results: succeeded -> the answer (a chat completion when the line was one),
    errored -> its error in the caller's dialect, canceled / expired -> a line that never ran."""
    custom_id = str(row.get("custom_id") or "")
    result = _dict(row.get("result"))
    kind = result.get("type")
    if kind == "succeeded" and isinstance(result.get("message"), dict):
        message = result["message"]
        usage = anthropic_messages.usage_from_json(message.get("usage"))
        if endpoint == "/v1/messages" or to_response is None:
            body: dict[str, Any] = {**message, "model": alias}
        else:  # the cloud adapter's mapping of a single answer (ProviderBatchApi.anthropic_answer)
            body = openai_chat.to_chat_completion(to_response(message, alias))
        return output_line(custom_id, request_id, 200, body), True, usage
    if kind == "errored":
        outer = _dict(result.get("error"))
        inner = _dict(outer.get("error")) or outer
        status = _ERROR_STATUS.get(str(inner.get("type")), 500)
        dialect = Dialect.ANTHROPIC if endpoint == "/v1/messages" else Dialect.OPENAI
        message_text = str(inner.get("message") or "The provider could not answer this request.")
        return output_line(custom_id, request_id, status, error_body(dialect, status, message_text)), False, NO_USAGE
    if kind == "expired":
        return failure_line(custom_id, "batch_expired", "The batch expired before this request ran."), False, NO_USAGE
    return failure_line(custom_id, "batch_cancelled", "The batch was cancelled before this request ran."), False, \
        NO_USAGE


def jsonl_rows(raw: bytes) -> list[dict[str, Any]]:
    rows = []
    for text in raw.decode("utf-8", errors="replace").splitlines():
        try:
            row = json.loads(text) if text.strip() else None
        except ValueError:
            continue
        if isinstance(row, dict):
            rows.append(row)
    return rows


# ---- budget holds on the head ----------------------------------------------------------------------------------
_SHARED = ("principal", "model", "endpoint", "price", "counts_toward_budget", "admitted_at")
_OWN = ("id", "hold", "reserved", "leased", "hold_record", "tokens_held", "tokens_bound")


def pack_holds(admissions: dict[int, Admission]) -> str | None:
    """The lines' admissions as one JSON string: the fields every line shares once, each line's own as a row."""
    if not admissions:
        return None
    dumped = {n: a.model_dump(mode="json") for n, a in admissions.items()}
    first = next(iter(dumped.values()))
    return json.dumps({"shared": {k: first[k] for k in _SHARED},
                       "lines": {str(n): [d[k] for k in _OWN] for n, d in dumped.items()}})


def unpack_hold(packed: str | None, n: int) -> Admission | None:
    if not packed:
        return None
    from isthmus.services.tenancy.gate import Admission

    data = json.loads(packed)
    own = data["lines"].get(str(n))
    return None if own is None else Admission.model_validate({**data["shared"], **dict(zip(_OWN, own, strict=True))})
