"""Bad requests in every dialect: one 400 ApiError whose message and param name the offending field."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

from isthmus.dialects import anthropic_messages, count_tokens, openai_chat, openai_responses
from isthmus.errors import ApiError, Dialect

USER = [{"role": "user", "content": "hi"}]


def _chat(body: Any) -> object:
    return openai_chat.to_internal(openai_chat.parse(body))


def _messages(body: Any) -> object:
    return anthropic_messages.to_internal(anthropic_messages.parse(body))


def _responses(body: Any) -> object:
    return openai_responses.to_internal(openai_responses.parse(body))


def _count(body: Any) -> object:
    return count_tokens.to_internal(count_tokens.parse(body))


CASES: list[tuple[str, Callable[[Any], object], Any, str]] = [
    ("chat missing model", _chat, {"messages": USER}, "model"),
    ("chat empty model", _chat, {"model": "", "messages": USER}, "model"),
    ("chat missing messages", _chat, {"model": "m"}, "messages"),
    ("chat empty messages", _chat, {"model": "m", "messages": []}, "messages"),
    ("chat messages not a list", _chat, {"model": "m", "messages": "hi"}, "messages"),
    ("chat bad role", _chat, {"model": "m", "messages": [{"role": "robot", "content": "x"}]},
     "messages.0.role"),
    ("chat temperature not a number", _chat, {"model": "m", "messages": USER, "temperature": "hot"},
     "temperature"),
    ("chat max_tokens zero", _chat, {"model": "m", "messages": USER, "max_tokens": 0}, "max_tokens"),
    ("chat n=2", _chat, {"model": "m", "messages": USER, "n": 2}, "n"),
    ("chat tool message without id", _chat, {"model": "m", "messages": [{"role": "tool", "content": "x"}]},
     "messages.0.tool_call_id"),
    ("chat body not an object", _chat, ["model"], ""),
    ("chat unsupported content part", _chat,
     {"model": "m", "messages": [{"role": "user", "content": [{"type": "input_audio"}]}]},
     "messages.0.content.0"),
    ("chat bad tool_choice", _chat, {"model": "m", "messages": USER, "tool_choice": "banana"}, "tool_choice"),
    ("messages missing max_tokens", _messages, {"model": "m", "messages": USER}, "max_tokens"),
    ("messages max_tokens not int", _messages, {"model": "m", "max_tokens": "lots", "messages": USER},
     "max_tokens"),
    ("messages missing model", _messages, {"max_tokens": 5, "messages": USER}, "model"),
    ("messages empty messages", _messages, {"model": "m", "max_tokens": 5, "messages": []}, "messages"),
    ("messages system role", _messages,
     {"model": "m", "max_tokens": 5, "messages": [{"role": "system", "content": "x"}]}, "messages.0.role"),
    ("messages server tool", _messages, {"model": "m", "max_tokens": 5, "messages": USER,
                                         "tools": [{"type": "web_search_20250305", "name": "web_search"}]},
     "tools.0.type"),
    ("messages unsupported block", _messages,
     {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [{"type": "document"}]}]},
     "messages.0.content.0"),
    ("chat file without id or data", _chat,
     {"model": "m", "messages": [{"role": "user", "content": [{"type": "file", "file": {"filename": "a.pdf"}}]}]},
     "messages.0.content.0.file"),
    ("chat file with id and data", _chat, {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_id": "file-1", "file_data": "data:application/pdf;base64,JVBE"}}]}]},
     "messages.0.content.0.file"),
    ("chat file_data not base64", _chat, {"model": "m", "messages": [{"role": "user", "content": [
        {"type": "file", "file": {"file_data": "data:text/plain,hello"}}]}]}, "messages.0.content.0.file.file_data"),
    ("messages document by url", _messages, {"model": "m", "max_tokens": 5, "messages": [{"role": "user", "content": [
        {"type": "document", "source": {"type": "url", "url": "https://example.com/a.pdf"}}]}]},
     "messages.0.content.0.source"),
    ("responses input_file by url", _responses, {"model": "m", "input": [{"role": "user", "content": [
        {"type": "input_file", "file_url": "https://example.com/a.pdf"}]}]}, "input.0.content.0.file_url"),
    ("responses missing input", _responses, {"model": "m"}, "input"),
    ("responses item_reference", _responses, {"model": "m", "input": [{"type": "item_reference", "id": "x"}]},
     "input.0"),
    ("responses empty input", _responses, {"model": "m", "input": []}, "input"),
    ("responses input wrong type", _responses, {"model": "m", "input": 5}, "input"),
    ("responses missing model", _responses, {"input": "hi"}, "model"),
    ("responses only an empty reasoning item", _responses,
     {"model": "m", "input": [{"type": "reasoning", "summary": []}]}, "input"),
    ("responses hosted tool", _responses, {"model": "m", "input": "hi", "tools": [{"type": "web_search"}]},
     "tools.0.type"),
    ("count_tokens missing model", _count, {"messages": USER}, "model"),
    ("count_tokens empty messages", _count, {"model": "m", "messages": []}, "messages"),
]


@pytest.mark.parametrize(("call", "body", "field"), [c[1:] for c in CASES], ids=[c[0] for c in CASES])
def test_bad_request_names_the_field(call: Callable[[Any], object], body: Any, field: str) -> None:
    # given a bad request body
    # when it is parsed and mapped
    with pytest.raises(ApiError) as caught:
        call(body)
    # then it is a 400 whose message starts with (and whose param is) the offending field
    error = caught.value
    assert error.status == 400
    assert error.message.startswith(field)
    if field:
        assert error.param is not None and error.param.startswith(field)


def test_validation_error_renders_in_each_dialect_shape() -> None:
    # given a missing max_tokens
    with pytest.raises(ApiError) as caught:
        anthropic_messages.parse({"model": "m", "messages": USER})
    # when rendered for Anthropic; then it is an invalid_request_error naming the field
    body = caught.value.body(Dialect.ANTHROPIC)
    assert body == {"type": "error", "error": {"type": "invalid_request_error",
                                               "message": "max_tokens: Field required"}}


def test_unknown_fields_and_nulls_are_accepted() -> None:
    # given a request with explicit nulls and fields Isthmus does not model
    body = {"model": "m", "messages": USER, "logit_bias": {"1": 2}, "temperature": None, "tools": None,
            "service_tier": "auto", "prediction": None}
    # when mapped; then it maps like the plain request
    assert _chat(body) == _chat({"model": "m", "messages": USER})
