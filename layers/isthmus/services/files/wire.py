"""The Files API's wire (OpenAI's): who owns what, the upload form's terms, list parameters, the file object."""

from __future__ import annotations

from collections.abc import Mapping
from typing import TYPE_CHECKING, Any, Literal

from isthmus.errors import ApiError, bad_request
from isthmus.ports.files import FileRecord

if TYPE_CHECKING:
    from isthmus.services.tenancy.gate import Principal

# What a client may upload as (OpenAI's list, plus Otari's user_data); *_output and *-results are the gateway's own.
UPLOAD_PURPOSES = ("assistants", "batch", "fine-tune", "vision", "user_data", "evals")
MAX_EXPIRY_SECONDS = 30 * 24 * 3600  # OpenAI's upper bound
MASTER_OWNER = "__master__"
OPEN_OWNER = "__open__"
MAX_LIST_LIMIT = 10_000


def owner_of(principal: Principal) -> tuple[str, str | None]:
    """(owner of what this caller uploads, whose files it sees: None for all).

    A key's files belong to its user, so every key of one user sees the same files; a key with no user owns its
    own. The master key sees every file. Open mode (no master key: a trusted LAN where nobody is told apart) is one
    shared caller who sees every file, as it sees every key on loopback."""
    if principal.kind == "master":
        return MASTER_OWNER, None
    if principal.kind == "key":
        owner = principal.user_id or f"key:{principal.key_id}"
        return owner, owner
    return OPEN_OWNER, None


def no_such_file(file_id: str) -> ApiError:
    # OpenAI's own words, so SDKs and users recognise it (NotFoundError in the openai SDK)
    return ApiError(404, f"No such File object: {file_id}", param="id", code=None)


def too_large(limit: int) -> ApiError:
    return ApiError(413, f"The file is larger than the limit of {limit} bytes (ISTHMUS_MAX_FILE_BYTES).",
                    param="file", code="file_too_large")


def upload_terms(fields: Mapping[str, str]) -> tuple[str, int | None]:
    """(purpose, expires_after seconds) from the form's fields, as the openai SDK sends them (``purpose``,
    ``expires_after[anchor]``, ``expires_after[seconds]``)."""
    purpose = fields.get("purpose", "").strip()
    if not purpose:
        raise bad_request("Missing required field 'purpose'.", param="purpose")
    if purpose not in UPLOAD_PURPOSES:
        raise bad_request(f"Invalid purpose {purpose!r}; expected one of {', '.join(UPLOAD_PURPOSES)}.",
                          param="purpose")
    anchor = fields.get("expires_after[anchor]")
    seconds = fields.get("expires_after[seconds]")
    if anchor is None and seconds is None:
        return purpose, None
    if anchor != "created_at":
        raise bad_request("expires_after[anchor] must be 'created_at'.", param="expires_after.anchor")
    if seconds is None or not seconds.strip().isdigit() or not 1 <= int(seconds) <= MAX_EXPIRY_SECONDS:
        raise bad_request(f"expires_after[seconds] must be a whole number of seconds from 1 to {MAX_EXPIRY_SECONDS}.",
                          param="expires_after.seconds")
    return purpose, int(seconds)


def list_params(query: Mapping[str, str]) -> tuple[str | None, int, str | None, Literal["asc", "desc"]]:
    """(purpose, limit, after, order) of GET /v1/files; OpenAI's defaults (limit 10000, newest first)."""
    raw_limit = query.get("limit", str(MAX_LIST_LIMIT))
    if not raw_limit.isdigit() or not 1 <= int(raw_limit) <= MAX_LIST_LIMIT:
        raise bad_request(f"limit must be a whole number from 1 to {MAX_LIST_LIMIT}.", param="limit")
    order = query.get("order", "desc")
    if order not in ("asc", "desc"):
        raise bad_request("order must be 'asc' or 'desc'.", param="order")
    return query.get("purpose") or None, int(raw_limit), query.get("after") or None, \
        "asc" if order == "asc" else "desc"


def file_object(record: FileRecord) -> dict[str, Any]:
    """OpenAI's file object (``status`` is always ``processed``: a file is visible only once stored whole)."""
    return {"id": record.file_id, "object": "file", "bytes": record.size, "created_at": record.created_at,
            "expires_at": record.expires_at, "filename": record.filename, "purpose": record.purpose,
            "status": "processed", "status_details": None}


def file_list(records: list[FileRecord], has_more: bool) -> dict[str, Any]:
    data = [file_object(r) for r in records]
    return {"object": "list", "data": data, "has_more": has_more,
            "first_id": data[0]["id"] if data else None, "last_id": data[-1]["id"] if data else None}


def content_type_for(filename: str, declared: str) -> str:
    """The part's own content type, or one guessed from the file name when the client sent a generic one."""
    if declared and declared != "application/octet-stream":
        return declared
    if filename.lower().endswith(".jsonl"):
        return "application/jsonl"
    import mimetypes

    return mimetypes.guess_type(filename)[0] or "application/octet-stream"
