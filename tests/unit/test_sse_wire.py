"""Server-sent events parsed from a provider's body bytes, however the bytes are cut (given / when / then)."""

from __future__ import annotations

import pytest

from isthmus.adapters.cloud.sse_wire import MAX_EVENT_BYTES, EventTooLarge, SseEvent, SseParser

ANTHROPIC = ('event: message_start\ndata: {"type":"message_start"}\n\n'
             ': a comment line\n\n'
             'event: content_block_delta\ndata: {"text":"東京は日本の首都です"}\n\n'
             'event: ping\ndata: {"type": "ping"}\n\n'
             'data: first line\ndata:second line\n\n'
             'event: no data\n\n'
             'event: message_stop\ndata: {}\n\n').encode()
EXPECTED: list[SseEvent] = [("message_start", '{"type":"message_start"}'),
                            ("content_block_delta", '{"text":"東京は日本の首都です"}'),
                            ("ping", '{"type": "ping"}'), (None, "first line\nsecond line"), ("message_stop", "{}")]


def parse(chunks: list[bytes]) -> list[SseEvent]:
    parser = SseParser()
    out = [event for chunk in chunks for event in parser.feed(chunk)]
    return out + parser.end()


def cut(body: bytes, every: int) -> list[bytes]:
    return [body[i:i + every] for i in range(0, len(body), every)]


@pytest.mark.parametrize("every", [1, 2, 3, 7, 64, 100_000])
def test_events_come_out_whole_however_the_body_is_cut(every: int) -> None:
    # given a stream with CJK text (multi-byte UTF-8 cut mid-character when every byte is its own chunk),
    # a comment, multi-line data and an event without data
    # when it arrives cut into chunks of ``every`` bytes, then the same events come out
    assert parse(cut(ANTHROPIC, every)) == EXPECTED


@pytest.mark.parametrize("every", [1, 5, 100_000])
@pytest.mark.parametrize("newline", [b"\r\n", b"\r"])
def test_crlf_and_cr_line_ends_frame_the_same_events(newline: bytes, every: int) -> None:
    # given the same stream with CRLF or CR line ends (a CRLF may be cut between two chunks)
    body = ANTHROPIC.replace(b"\n", newline)
    # then it parses as with LF
    assert parse(cut(body, every)) == EXPECTED


def test_an_event_the_body_ends_without_its_blank_line_still_counts() -> None:
    # given a body whose last event has no blank line after it
    parser = SseParser()
    # when it ends, then the event is there, once
    assert parser.feed(b'data: {"a": 1}\n\ndata: [DONE]\n') == [(None, '{"a": 1}')]
    assert parser.end() == [(None, "[DONE]")]
    assert parser.end() == []


def test_blank_lines_between_events_are_not_events() -> None:
    assert parse([b"\n\n\n\ndata: x\n\n\n\n\ndata: y\n\n"]) == [(None, "x"), (None, "y")]


def test_an_event_that_never_ends_is_refused_once_it_passes_the_bound() -> None:
    # given an upstream that sends data lines and never the blank line that ends an event
    parser = SseParser()
    line = b"data: " + b"x" * 65530 + b"\n"
    fed = 0
    # when it passes the bound, then the parser refuses it instead of holding it all
    with pytest.raises(EventTooLarge):
        while fed <= MAX_EVENT_BYTES:
            assert parser.feed(line) == []
            fed += len(line)
    assert fed > MAX_EVENT_BYTES - len(line)
    # and a parser holding a large but bounded event still yields it whole
    body = b"data: " + "東".encode() * (2**20) + b"\n\n"
    assert parse(cut(body, 65536)) == [(None, "東" * (2**20))]
