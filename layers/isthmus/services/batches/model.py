"""The batch object and its state machine.

    validating -> in_progress -> finalizing -> completed
         |             |  \\                 -> expired   (the completion window passed; what finished is kept)
         v             v   -> cancelling -> finalizing -> cancelled (what finished is kept)
       failed    (input file invalid: ``errors`` says why, per line as OpenAI does)

Every transition is one conditional write on the head (the store's ``transition``), so two workers can never both
move a batch on; ``finishing_as`` remembers where a batch in ``finalizing`` is going (a restarted worker
finishes the job). Times are unix seconds (UTC), as the OpenAI batch object has them.
"""

from __future__ import annotations

import re
import time
import uuid
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field

Status = Literal["validating", "in_progress", "finalizing", "completed", "failed", "expired", "cancelling",
                 "cancelled"]
ACTIVE: tuple[Status, ...] = ("validating", "in_progress", "finalizing", "cancelling")
TERMINAL: tuple[Status, ...] = ("completed", "failed", "expired", "cancelled")
ENDPOINTS = ("/v1/chat/completions", "/v1/responses", "/v1/embeddings", "/v1/messages")
MASTER_OWNER = "__master__"  # the master key's own batches (files use the same owner id)
OPEN_OWNER = "__open__"  # open mode (no master key configured): everyone is the same caller
_WINDOW = re.compile(r"^([1-9][0-9]{0,2})h$")


def window_seconds(completion_window: str) -> int | None:
    """``"24h"`` -> seconds; None for a window we do not take (1 to 168 hours)."""
    match = _WINDOW.match(completion_window)
    hours = int(match.group(1)) if match else 0
    return hours * 3600 if 0 < hours <= 168 else None


def new_batch_id() -> str:
    return f"batch_{uuid.uuid4().hex}"


class Batch(BaseModel):
    model_config = ConfigDict(defer_build=True)
    batch_id: str
    owner_id: str
    key_id: str | None = None      # the key that created it: it must still be valid when a line runs
    principal_kind: Literal["key", "master", "anonymous", "none"] = "none"
    shape: Literal["openai", "otari"] = "openai"
    endpoint: str
    model: str | None = None       # Otari's shape: the model every inline request runs on
    provider: str | None = None    # Otari's shape: echoed back
    input_file_id: str | None = None
    completion_window: str = "24h"
    metadata: dict[str, str] | None = None
    status: Status = "validating"
    created_at: int = Field(default_factory=lambda: int(time.time()))
    expires_at: int = 0
    in_progress_at: int | None = None
    finalizing_at: int | None = None
    completed_at: int | None = None
    failed_at: int | None = None
    expired_at: int | None = None
    cancelling_at: int | None = None
    cancelled_at: int | None = None
    finishing_as: Literal["completed", "expired", "cancelled"] | None = None
    total: int = 0
    completed: int = 0
    failed: int = 0
    errors: list[dict[str, Any]] | None = None
    output_file_id: str | None = None
    error_file_id: str | None = None
    # Handed to the cloud alias's provider (services/batches/provider_batches.py): "local" once decided not to
    upstream: Literal["local", "openai", "anthropic"] | None = None
    upstream_provider: str | None = None  # the provider id, and the alias every line named
    upstream_alias: str | None = None
    upstream_batch_id: str | None = None
    upstream_status: str | None = None    # the provider's last status; "collecting" while results are recorded
    upstream_polled_at: int | None = None
    upstream_cancel_sent: bool | None = None
    upstream_holds: str | None = None     # JSON: the lines' budget holds, settled when the results come back

    def to_openai(self) -> dict[str, Any]:
        """OpenAI's batch object (the openai SDK's ``Batch``), plus Otari's ``model``/``provider`` when set."""
        body: dict[str, Any] = {
            "id": self.batch_id, "object": "batch", "endpoint": self.endpoint,
            "errors": {"object": "list", "data": self.errors} if self.errors else None,
            "input_file_id": self.input_file_id or "", "completion_window": self.completion_window,
            "status": self.status, "output_file_id": self.output_file_id, "error_file_id": self.error_file_id,
            "created_at": self.created_at, "in_progress_at": self.in_progress_at, "expires_at": self.expires_at,
            "finalizing_at": self.finalizing_at, "completed_at": self.completed_at, "failed_at": self.failed_at,
            "expired_at": self.expired_at, "cancelling_at": self.cancelling_at, "cancelled_at": self.cancelled_at,
            "request_counts": {"total": self.total, "completed": self.completed, "failed": self.failed},
            "metadata": self.metadata,
        }
        if self.model is not None:
            body["model"] = self.model
        if self.provider is not None:
            body["provider"] = self.provider
        return body


def line_error(code: str, message: str, line: int | None = None, param: str | None = None) -> dict[str, Any]:
    """One entry of a batch's ``errors.data`` (OpenAI's shape; ``line`` counts from 1)."""
    return {"code": code, "message": message, "param": param, "line": line}


def output_line(custom_id: str, request_id: str, status_code: int, body: Any) -> dict[str, Any]:
    """One line of the output (2xx) or error (other) file, in OpenAI's format."""
    return {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id,
            "response": {"status_code": status_code, "request_id": request_id, "body": body}, "error": None}


def failure_line(custom_id: str, code: str, message: str) -> dict[str, Any]:
    """A line that never got an HTTP answer (expired before it ran, retries used up)."""
    return {"id": f"batch_req_{uuid.uuid4().hex}", "custom_id": custom_id, "response": None,
            "error": {"code": code, "message": message}}
