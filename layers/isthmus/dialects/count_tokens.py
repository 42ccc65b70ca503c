"""``/v1/messages/count_tokens``: request parsing, the estimator for non-local backends, the response."""

from __future__ import annotations

import math
from typing import Any

from isthmus.dialects.anthropic_messages import to_internal_messages, to_internal_tools
from isthmus.dialects.anthropic_models import CountTokensRequest
from isthmus.dialects.common import dump_json, parse_request
from isthmus.errors import Dialect
from isthmus_contracts.internal import Message, Tool


def parse(body: Any) -> CountTokensRequest:
    return parse_request(CountTokensRequest, body, Dialect.ANTHROPIC)


def to_internal(req: CountTokensRequest) -> tuple[list[Message], list[Tool]]:
    """The internal messages (system first) and tools, for a backend that can tokenize them."""
    return to_internal_messages(req), to_internal_tools(req)


def estimate(req: CountTokensRequest) -> int:
    """``ceil(chars / 4)`` (at least 1) over the JSON of system, messages and tools, as sent."""
    fields = req.model_dump(include={"system", "messages", "tools"}, exclude_none=True, by_alias=True)
    chars = sum(len(dump_json(fields[name])) for name in ("system", "messages", "tools") if name in fields)
    return max(1, math.ceil(chars / 4))


def response(input_tokens: int) -> dict[str, Any]:
    return {"input_tokens": input_tokens}
