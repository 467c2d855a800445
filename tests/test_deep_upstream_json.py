"""Upstream JSON nested deeper than the decoder goes (thousands of levels): msgspec raises RecursionError on
it, not a DecodeError. An upstream, or a local server gone wrong, that answers so must be treated like one
whose answer is unreadable: a 502 `bad_upstream_response` in the client's format (or, in a stream, the
client format's error event), a final usage event, nothing logged as an unhandled error.
"""

from __future__ import annotations

import json
import logging
from typing import Any

import pytest

from tests import test_misbehaving_upstreams
from tests.conftest import GatewaySetup
from tests.fakes.upstream import Reply, fixture_bytes, split_sse
from tests.test_misbehaving_upstreams import (
    PATHS,
    answer,
    assert_ends_with_one_error,
    assert_error_shape,
    body_for,
    events,
    final_event,
    post,
    stream_errors,
    with_fallback,
)

setup = test_misbehaving_upstreams.setup  # its fixtures: a worker that does not retry, and the
errors_logged = test_misbehaving_upstreams.errors_logged  # errors it logs

LEVELS = 5000


def deep() -> str:
    """A JSON array nested LEVELS deep."""
    return "[" * LEVELS + "]" * LEVELS


def with_deep_field(doc: dict[str, Any]) -> bytes:
    """`doc` as JSON with one more field whose value is nested LEVELS deep."""
    return json.dumps({**doc, "extra": "DEEP"}).replace('"DEEP"', deep()).encode()


def deep_event(wire: str) -> Reply:
    """The standard stream, its fourth event carrying a field nested LEVELS deep."""
    raw = events(wire)
    name, _, data = raw[3].rstrip(b"\n").rpartition(b"data: ")
    return Reply(sse=[*raw[:3], name + b"data: " + with_deep_field(json.loads(data)) + b"\n\n", *raw[4:]])


@pytest.mark.parametrize("path", list(PATHS))
def test_an_answer_nested_too_deep_is_a_502_in_the_clients_format(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str
) -> None:
    setup.fake.enqueue(PATHS[path][2], Reply(body=with_deep_field(answer(PATHS[path][3]))))
    r = post(setup, path, body_for(path))
    assert r.status_code == 502, r.text
    assert_error_shape(path, r.json())
    event = final_event(setup, r.headers)
    assert event["outcome"] == "upstream_failed" and event["http_status"] == 502, event
    assert errors_logged == []


@pytest.mark.parametrize("path", list(PATHS))
def test_an_answer_nested_too_deep_falls_back(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str
) -> None:
    """Like any unusable answer it is a bad gateway the fallback answers for (so is a stream whose first event
    is unreadable: tests/test_misbehaving_upstreams.py). A later event nested too deep ends the stream with the
    error event, as tested below."""
    setup.fake.enqueue(PATHS[path][2], Reply(body=with_deep_field(answer(PATHS[path][3]))))
    r = post(setup, path, with_fallback(path))
    assert r.status_code == 200, r.text
    assert r.headers["X-Trex-Fallback-Attempts"] == "1"
    event = final_event(setup, r.headers)
    assert event["outcome"] == "completed", event
    assert event["attempts"][0]["status"] == 502, event
    assert errors_logged == []


@pytest.mark.parametrize("path", list(PATHS))
def test_a_stream_event_nested_too_deep_ends_the_stream_with_the_clients_error_event(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str
) -> None:
    setup.fake.enqueue(PATHS[path][2], deep_event(PATHS[path][3]))
    r = post(setup, path, body_for(path, stream=True))
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/event-stream"
    assert "[[[" not in r.text
    assert_ends_with_one_error(path, r.text, "malformed")
    event = final_event(setup, r.headers)
    assert event["outcome"] == "upstream_failed", event
    assert errors_logged == []


@pytest.mark.parametrize("path", ["chat>openai", "messages>openai"])
def test_a_usage_chunk_nested_too_deep_is_estimated(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str
) -> None:
    """The chat stream's usage chunk, which reconciliation reads straight from the stream, nested too deep:
    the client's stream ends with its error event, and the usage event is final with its counts estimated."""
    raw = events("chat")
    at = next(i for i, ev in enumerate(raw) if b'"usage":{' in ev)
    doc = json.loads(raw[at].rstrip(b"\n").removeprefix(b"data: "))
    doc["usage"]["extra"] = "DEEP"
    raw[at] = b"data: " + json.dumps(doc).replace('"DEEP"', deep()).encode() + b"\n\n"
    setup.fake.enqueue(PATHS[path][2], Reply(sse=raw))
    r = post(setup, path, body_for(path, stream=True))
    assert r.status_code == 200
    assert "[[[" not in r.text
    assert_ends_with_one_error(path, r.text, "malformed")
    event = final_event(setup, r.headers)
    assert event["usage_source"] == "estimated", event
    assert event["billed"]["output_tokens"] >= 0, event
    assert errors_logged == []


def test_tool_call_arguments_nested_too_deep_do_not_break_a_translated_stream(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord]
) -> None:
    """A chat upstream's tool call whose arguments (a JSON string) are nested too deep, to an Anthropic
    client: the stream goes on and ends as streams do, with no unhandled error."""
    raw = split_sse(fixture_bytes("openai/chat_tool_calls.sse"))
    first = json.loads(raw[0].rstrip(b"\n").removeprefix(b"data: "))
    first["choices"][0]["delta"]["tool_calls"][0]["function"]["arguments"] = '{"a":' + deep() + "}"
    after = next(i for i, ev in enumerate(raw) if b'"index":1,"id"' in ev)
    raw = [b"data: " + json.dumps(first).encode() + b"\n\n", *raw[after:]]
    setup.fake.enqueue("/v1/chat/completions", Reply(sse=raw))
    r = post(setup, "messages>openai", body_for("messages>openai", stream=True))
    assert r.status_code == 200
    assert "event: message_stop" in r.text, r.text[-1500:]
    assert stream_errors("messages>openai", r.text) == []
    event = final_event(setup, r.headers)
    assert event["outcome"] == "completed", event
    assert errors_logged == []


@pytest.mark.parametrize("status", [200, 429, 500])
@pytest.mark.parametrize("path", list(PATHS))
def test_an_error_body_nested_too_deep_reaches_the_client_as_an_error_in_its_format(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str, status: int
) -> None:
    """An upstream's error body (or a 200 that is only an error, as OpenRouter sends) with a field nested
    too deep: the client gets an error in its format, its status the upstream's or 502 for the 200."""
    body = json.dumps({"error": {"message": "Oops.", "type": "server_error", "code": "DEEP"}})
    setup.fake.enqueue(PATHS[path][2], Reply(status=status, body=body.replace('"DEEP"', deep()).encode()))
    r = post(setup, path, body_for(path))
    assert r.status_code == (502 if status == 200 else status), r.text
    doc = r.json()
    if PATHS[path][0] == "/v1/messages":
        assert doc["type"] == "error" and isinstance(doc["error"]["message"], str), doc
    else:
        assert isinstance(doc["error"]["message"], str), doc
    assert errors_logged == []


@pytest.mark.parametrize("path", list(PATHS))
def test_a_stream_error_event_nested_too_deep_reaches_the_client_as_its_error_event(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str
) -> None:
    wire = PATHS[path][3]
    preamble = events(wire)[:1] if wire == "messages" else []
    name = b"" if wire == "chat" else b"event: error\n"
    body = {
        "chat": {"error": {"message": "x", "code": "DEEP"}},
        "messages": {"type": "error", "error": {"type": "overloaded_error", "message": "x", "code": "DEEP"}},
        "responses": {"type": "error", "code": "DEEP", "message": "x", "sequence_number": 1},
    }[wire]
    data = json.dumps(body).replace('"DEEP"', deep()).encode()
    setup.fake.enqueue(PATHS[path][2], Reply(sse=[*preamble, name + b"data: " + data + b"\n\n"]))
    r = post(setup, path, body_for(path, stream=True))
    assert r.status_code in (200, 502), r.text
    assert "[[[" not in r.text
    if r.status_code == 200:
        assert len(stream_errors(path, r.text)) >= 1, r.text[-1500:]
    else:
        assert_error_shape(path, r.json())
    event = final_event(setup, r.headers)
    assert event["outcome"] == "upstream_failed", event
    assert errors_logged == []
