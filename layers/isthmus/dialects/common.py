"""Helpers shared by the dialect modules: ids, time, request parsing, JSON arguments, SSE framing."""

from __future__ import annotations

import hashlib
import json
import time
import uuid
from typing import Any, TypeVar

from pydantic import BaseModel, ConfigDict

from isthmus.errors import ApiError, bad_request
from isthmus.validation import validate as parse_request  # noqa: F401 - the dialects' name for it
from isthmus_contracts.internal import Tool

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
