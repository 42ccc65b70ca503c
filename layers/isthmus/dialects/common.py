"""Helpers shared by the dialect modules: ids, time, request parsing, JSON arguments, tools, SSE framing, the end of
a stream."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from isthmus.errors import ApiError, bad_request
from isthmus.validation import validate as parse_request  # noqa: F401 - the dialects' name for it
from isthmus_contracts.internal import (
    ErrorEvent,
    FilePart,
    FinishEvent,
    StartEvent,
    StreamEvent,
    Tool,
    Usage,
    UsageEvent,
)

M = TypeVar("M", bound=BaseModel)

# Public id prefixes per kind of object.
PREFIXES = {
    "chat": "chatcmpl-",
    "message": "msg_",
    "tool_use": "toolu_",
    "tool_call": "call_",
    "response": "resp_",
    "function_call": "fc_",
    "reasoning": "rs_",
}


class Lenient(BaseModel):
    """Base of every public request model: real clients send many fields we do not model."""

    # defer_build: schemas are built on first use, not at import (a cold start only pays for what it uses).
    model_config = ConfigDict(extra="allow", defer_build=True)


def new_id(kind: str) -> str:
    """A fresh public id of ``kind`` (a key of :data:`PREFIXES`)."""
    return PREFIXES[kind] + uuid.uuid4().hex[:24]


def with_prefix(value: str, kind: str) -> str:
    """``value`` carrying ``kind``'s prefix (kept as is when it already has it); a fresh id when empty."""
    if not value:
        return new_id(kind)
    prefix = PREFIXES[kind]
    return value if value.startswith(prefix) else prefix + value


def bare(value: str) -> str:
    """``value`` without any known public prefix (to derive related ids from one base)."""
    for prefix in PREFIXES.values():
        if value.startswith(prefix):
            return value[len(prefix):]
    return value


def now() -> int:
    return int(time.time())


def require(condition: bool, message: str, param: str) -> None:
    if not condition:
        raise bad_request(message, param=param)


def internal_tool(name: str, description: str | None, schema: dict[str, Any] | None) -> Tool:
    """A function tool as every dialect declares it (no schema: the contract's default, an empty object)."""
    return Tool(name=name, description=description, **({"parameters": schema} if schema else {}))


def refused_tool(index: int, why: str) -> ApiError:
    """The 400 for a tool this gateway cannot run (a server tool, a non-function tool)."""
    return bad_request(f"tools.{index}.type: {why}", param=f"tools.{index}.type")


def dump_json(value: Any) -> str:
    return json.dumps(value, ensure_ascii=False, separators=(",", ":"))


def parse_arguments(arguments: str) -> dict[str, Any]:
    """Tool-call arguments (JSON text) as an object; anything else is kept under ``_raw``."""
    try:
        value = json.loads(arguments) if arguments.strip() else {}
    except ValueError:
        return {"_raw": arguments}
    return value if isinstance(value, dict) else {"_raw": arguments}


def split_data_url(url: str) -> tuple[str, str] | None:
    """``data:<media>;base64,<data>`` as (media type, data); None for other URLs."""
    if not url.startswith("data:") or "," not in url:
        return None
    head, data = url[5:].split(",", 1)
    if not head.endswith(";base64"):
        return None
    return head[: -len(";base64")] or "application/octet-stream", data


def file_part(*, file_id: str | None, file_data: str | None, filename: str | None, param: str) -> FilePart:
    """An OpenAI-style file reference (chat ``file``, Responses ``input_file``): an uploaded ``file_id``, or
    ``file_data`` as a base64 data URL (bare base64 is taken too; its type then comes from the file name)."""
    require(bool(file_id) != bool(file_data), f"{param}: give exactly one of file_id or file_data", param)
    if file_id:
        return FilePart(file_id=file_id, filename=filename)
    assert file_data is not None
    split = split_data_url(file_data)
    require(split is not None or not file_data.startswith("data:"),
            f"{param}.file_data: a data URL must be base64 (data:<media type>;base64,<data>)", f"{param}.file_data")
    media_type, data = split if split else (None, file_data)
    return FilePart(data=data, media_type=media_type, filename=filename)


def thinking_signature(text: str) -> str:
    """A stable, non-empty signature for a thinking block (Isthmus does not verify signatures)."""
    return "isthmus-" + hashlib.sha256(text.encode()).hexdigest()[:32]


def sse_data(payload: dict[str, Any] | str) -> str:
    """One ``data:`` SSE frame (OpenAI chat style)."""
    text = payload if isinstance(payload, str) else dump_json(payload)
    return f"data: {text}\n\n"


def sse_event(payload: dict[str, Any], event: str | None = None) -> str:
    """One ``event:``/``data:`` SSE frame; the event name defaults to the payload's ``type``."""
    return f"event: {event or payload['type']}\ndata: {dump_json(payload)}\n\n"


SSE_DONE = "data: [DONE]\n\n"


def thinking_fields(effort: str | None, enable_thinking: bool | None) -> dict[str, Any]:
    """OpenAI-style ``reasoning_effort`` (incl. ``none``/``xhigh``) as internal thinking fields."""
    if effort == "none":
        return {"enable_thinking": False if enable_thinking is None else enable_thinking,
                "reasoning_effort": None}
    internal = "high" if effort == "xhigh" else effort
    return {"enable_thinking": enable_thinking, "reasoning_effort": internal}


# ---- the end of a stream ------------------------------------------------------------------------------------
# What the Anthropic Messages and OpenAI Responses stream encoders share: their terminal events carry both the
# finish reason and the final usage, and a backend may report the usage before or after the finish; so the ending
# goes out once both are known, close() flushes it when the backend never reported usage, and nothing follows it
# (nor an in-band error).


class EndsAfterUsage:
    """A stream encoder: internal events in, the dialect's event dicts out. Subclasses render the dialect:
    ``_started`` (the opening events, once), ``_error`` (an in-band error, which ends the stream), ``_content``
    (text, reasoning, a tool call), ``_close_open`` (what closes an open block at the finish), ``_ending``."""

    def __init__(self) -> None:
        self.usage = Usage()
        self._finish: FinishEvent | None = None
        self._usage_seen = False
        self._ended = False

    def feed(self, event: StreamEvent) -> list[dict[str, Any]]:
        if self._ended:
            return []
        if isinstance(event, StartEvent):
            self.usage = Usage(prompt_tokens=event.prompt_tokens, cached_tokens=event.cached_tokens)
            self._on_start(event)
            return self._started()
        if isinstance(event, ErrorEvent):
            self._ended = True
            return [self._error(event)]
        if isinstance(event, UsageEvent):
            self.usage, self._usage_seen = event.usage, True
            return self._end() if self._finish else []
        out = self._started()
        if isinstance(event, FinishEvent):
            self._finish = event
            out += self._close_open()
            return out + self._end() if self._usage_seen else out
        return out + self._content(event)

    def close(self) -> list[dict[str, Any]]:
        """Events still owed when the backend stream ends."""
        return self._end() if self._finish and not self._ended else []

    def _end(self) -> list[dict[str, Any]]:
        assert self._finish is not None
        self._ended = True
        return self._ending(self._finish)

    # ---- the dialect's part ----

    def _on_start(self, event: StartEvent) -> None:
        """Take the stream's id and model from its start."""

    def _started(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _error(self, event: ErrorEvent) -> dict[str, Any]:
        raise NotImplementedError

    def _content(self, event: StreamEvent) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _close_open(self) -> list[dict[str, Any]]:
        raise NotImplementedError

    def _ending(self, finish: FinishEvent) -> list[dict[str, Any]]:
        raise NotImplementedError
