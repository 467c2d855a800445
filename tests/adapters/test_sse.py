"""The SSE parser against the spec's edge cases and every recorded transcript, split at every byte."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from adapters.sse import SSEParser, frame

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
SSE_FILES = sorted(p.relative_to(FIXTURES).as_posix() for p in FIXTURES.rglob("*.sse"))


def parse_all(data: bytes, step: int | None = None) -> list[tuple[str | None, str]]:
    parser = SSEParser()
    out = []
    chunks = [data] if step is None else [data[i : i + step] for i in range(0, len(data), step)]
    for chunk in chunks:
        out += [(e.event, e.data) for e in parser.feed(chunk)]
    return out


def test_spec_examples() -> None:
    stream = (
        b": comment\n"
        b"data: first\n\n"
        b"event: custom\ndata:no-space\ndata:  two spaces\n\n"
        b"data\n\n"  # a field with no colon: empty data
        b"id: 7\nretry: 3000\n\n"  # no data: dispatches nothing
        b"data: \xc3\xa9t\xc3\xa9\r\n\r\n"  # CRLF and UTF-8
        b"data: cr-only\r\r"
        b"data: unterminated"
    )
    assert parse_all(stream) == [
        (None, "first"),
        ("custom", "no-space\n two spaces"),
        (None, ""),
        (None, "été"),
        (None, "cr-only"),
    ]


def test_event_id_and_retry_are_tracked() -> None:
    parser = SSEParser()
    events = parser.feed(b"id: abc\nretry: 1500\ndata: x\n\n")
    assert events[0].id == "abc" and parser.retry == 1500


@pytest.mark.parametrize("name", SSE_FILES)
def test_every_split_of_every_transcript_parses_the_same(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    whole = parse_all(data)
    assert whole, name
    for step in (1, 2, 3, 7, 64):
        assert parse_all(data, step) == whole
    for _event, payload in whole:
        if payload != "[DONE]":
            json.loads(payload)  # every data payload of our transcripts is JSON (multi-line joined)


@pytest.mark.parametrize("name", SSE_FILES)
def test_raw_bytes_reassemble_the_stream(name: str) -> None:
    data = (FIXTURES / name).read_bytes()
    parser = SSEParser()
    raws = b""
    for i in range(0, len(data), 5):
        raws += b"".join(e.raw for e in parser.feed(data[i : i + 5]))
    # Every byte up to the last dispatched event is attributed to exactly one event, in order.
    assert data.startswith(raws) and data[len(raws) :].strip() == b""


def test_openrouter_comments_are_skipped() -> None:
    data = (FIXTURES / "openrouter/chat_text.sse").read_bytes()
    assert b": OPENROUTER PROCESSING" in data
    assert all(not d.startswith(":") for _e, d in parse_all(data))


def test_frame_roundtrip() -> None:
    raw = frame('{"a":\n1}', event="message_start")
    assert raw == b'event: message_start\ndata: {"a":\ndata: 1}\n\n'
    assert parse_all(raw) == [("message_start", '{"a":\n1}')]


def test_fast_and_general_paths_agree_across_any_split() -> None:
    """LF-only blocks take the fast path; a CR anywhere switches to the general one mid-stream."""
    stream = (
        b': keep-alive\n\ndata: a\ndata: b\n\nevent: x\ndata: {"k": 1}\n\n'
        b"data: crlf\r\n\r\ndata: lf again\n\nid: 9\ndata: tail\n\n"
    )
    whole = parse_all(stream)
    assert whole == [(None, "a\nb"), ("x", '{"k": 1}'), (None, "crlf"), (None, "lf again"), (None, "tail")]
    for i in range(1, len(stream)):
        for j in range(i, len(stream), 7):
            parser = SSEParser()
            got = []
            for part in (stream[:i], stream[i:j], stream[j:]):
                got += [(e.event, e.data) for e in parser.feed(part)]
            assert got == whole, (i, j)
