"""count_tokens: request parsing, internal messages, the chars/4 estimator and the response shape."""

from __future__ import annotations

import json
import math

from anthropic.types import MessageTokensCount

from isthmus.dialects import count_tokens
from tests.unit.dialects.golden_support import assert_sdk_valid


def test_request_without_max_tokens_maps_to_internal_messages() -> None:
    # given a count_tokens body (no max_tokens) with a system prompt, a tool result and a tool
    body = {"model": "claude-local", "system": [{"type": "text", "text": "Be brief."}],
            "messages": [{"role": "user", "content": "Weather?"},
                         {"role": "assistant", "content": [
                             {"type": "tool_use", "id": "toolu_a", "name": "w", "input": {"c": "P"}}]},
                         {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_a",
                                                       "content": "18C"}]}],
            "tools": [{"name": "w", "input_schema": {"type": "object", "properties": {"c": {}}}}]}
    # when parsed and mapped
    messages, tools = count_tokens.to_internal(count_tokens.parse(body))
    # then the system prompt leads and the tool result is a tool message
    assert [m.role for m in messages] == ["system", "user", "assistant", "tool"]
    assert messages[0].text() == "Be brief."
    assert [t.name for t in tools] == ["w"]


def test_estimate_is_ceil_chars_over_four_of_system_messages_tools() -> None:
    # given a request with a system prompt, one message and one tool
    messages = [{"role": "user", "content": "hello world"}]
    tools = [{"name": "t", "input_schema": {"type": "object"}}]
    req = count_tokens.parse({"model": "m", "system": "sys", "messages": messages, "tools": tools})
    # when estimated
    n = count_tokens.estimate(req)
    # then it is ceil(chars / 4) over the compact JSON of the three fields
    chars = sum(len(json.dumps(v, separators=(",", ":"))) for v in ("sys", messages, tools))
    assert n == math.ceil(chars / 4)


def test_estimate_is_at_least_one() -> None:
    # given the smallest request; when estimated; then it is still 1 or more
    req = count_tokens.parse({"model": "m", "messages": [{"role": "user", "content": ""}]})
    assert count_tokens.estimate(req) >= 1


def test_response_shape_validates() -> None:
    # given a count; when rendered; then it is the official MessageTokensCount shape
    assert_sdk_valid(MessageTokensCount, count_tokens.response(42))
