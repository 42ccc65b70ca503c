"""OpenAI Responses: golden request mapping, Response rendering and stream events, SDK-validated."""

from __future__ import annotations

from pathlib import Path

import pytest
from openai.types.responses import Response, ResponseStreamEvent

from isthmus.dialects import openai_responses
from isthmus.dialects.openai_responses_stream import ResponsesStreamEncoder
from isthmus_contracts.internal import InternalResponse, Message, TextPart
from tests.unit.dialects.golden_support import assert_sdk_valid, cases, encode, expect, internal_json, load

# The live API echoes ``store`` in every Response; this SDK version does not model it.
API_EXTRA = frozenset({"store"})


@pytest.mark.parametrize("path", cases("responses", "req"), ids=lambda p: p.stem)
def test_request_maps_to_internal(path: Path) -> None:
    # given a Responses request body (and maybe an X-Session-Id header value)
    golden = load(path)
    # when it is parsed and mapped
    req = openai_responses.parse(golden["given"])
    internal = openai_responses.to_internal(req, header_session_id=golden.get("header_session_id"))
    # then the internal request is the golden one
    expect(path, "internal", internal_json(internal))


@pytest.mark.parametrize("path", cases("responses", "resp"), ids=lambda p: p.stem)
def test_response_renders_response_object(path: Path) -> None:
    # given the request and the internal response
    golden = load(path)
    req = openai_responses.parse(golden["request"])
    resp = InternalResponse.model_validate(golden["given"])
    # when it is rendered
    body = openai_responses.to_response(resp, req)
    # then it is a valid Response equal to the golden
    assert_sdk_valid(Response, body, allowed_extra=API_EXTRA)
    expect(path, "expected", body)


@pytest.mark.parametrize("path", cases("responses", "stream"), ids=lambda p: p.stem)
def test_stream_encodes_events(path: Path) -> None:
    # given the request and a scripted list of internal stream events
    golden = load(path)
    encoder = ResponsesStreamEncoder(openai_responses.parse(golden["request"]))
    # when every event is fed and the stream is closed
    events = encode(encoder, golden["given"])
    # then each event validates as a ResponseStreamEvent, sequence numbers count up from 0,
    # and the list is the golden one
    for event in events:
        assert_sdk_valid(ResponseStreamEvent, event, allowed_extra=API_EXTRA)
    assert [e["sequence_number"] for e in events] == list(range(len(events)))
    expect(path, "expected", events)


def test_terminal_event_output_matches_non_stream_rendering() -> None:
    # given the reasoning + text + tool calls stream
    golden = load(Path(__file__).parent / "golden/responses/stream_reasoning_tools.json")
    encoder = ResponsesStreamEncoder(openai_responses.parse(golden["request"]))
    events = encode(encoder, golden["given"])
    # when the terminal response's output items are compared with the output_item.done items
    done_items = [e["item"] for e in events if e["type"] == "response.output_item.done"]
    # then they are the same items, in the same order
    assert events[-1]["type"] == "response.completed"
    assert events[-1]["response"]["output"] == done_items
    assert [i["type"] for i in done_items] == ["reasoning", "message", "function_call", "function_call"]


def test_previous_response_is_prepended() -> None:
    # given a stored previous request (with its own instructions) and its output
    previous = [Message(role="system", content=[TextPart(text="old rules")]),
                Message(role="user", content=[TextPart(text="Hi")])]
    output = InternalResponse(id="r1", model="m", created=1, content=[TextPart(text="Hello!")])
    req = openai_responses.parse({"model": "m", "input": "And then?", "instructions": "new rules",
                                  "previous_response_id": "resp_r1"})
    # when the new request continues it
    merged = openai_responses.prepend_previous(openai_responses.to_internal(req), previous, output)
    # then the new instructions lead, the old ones are dropped, and the turns are in order
    assert [(m.role, m.text()) for m in merged.messages] == [
        ("system", "new rules"), ("user", "Hi"), ("assistant", "Hello!"), ("user", "And then?")]
