"""Upstreams that misbehave, on every path (chat, Responses and Messages clients; OpenAI and Anthropic
upstreams; streaming and not): what the client sees, what the usage event says, and that nothing is logged as
an unhandled error.

The client must get an error in its own format (OpenAI's on OpenAI routes, Anthropic's on `/v1/messages`;
for a stream, an error event and the end of the stream) with a sensible status, and the usage event must end
final, with no negative or absurd counts.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import MASTER_KEY, GatewaySetup, with_key
from tests.fakes.upstream import FakeUpstream, Reply, fixture_bytes, split_sse
from tests.harness import InProcessWorker
from tests.test_usage import HTTP, wait_final
from worker.appkeys import GATEWAY

# name → (client route, model, upstream path, upstream wire)
PATHS: dict[str, tuple[str, str, str, str]] = {
    "chat>openai": ("/v1/chat/completions", "gpt-4o-mini", "/v1/chat/completions", "chat"),
    "chat>anthropic": ("/v1/chat/completions", "claude-sonnet-4-6", "/v1/messages", "messages"),
    "responses>openai": ("/v1/responses", "gpt-4o-mini", "/v1/responses", "responses"),
    "responses>anthropic": ("/v1/responses", "claude-sonnet-4-6", "/v1/messages", "messages"),
    "messages>anthropic": ("/v1/messages", "claude-sonnet-4-6", "/v1/messages", "messages"),
    "messages>openai": ("/v1/messages", "gpt-4o-mini", "/v1/chat/completions", "chat"),
}
TO_ANTHROPIC = [p for p in PATHS if PATHS[p][3] == "messages"]
JSON_FIXTURES = {
    "chat": "openai/chat_text.json",
    "messages": "anthropic/message_text.json",
    "responses": "openai/responses_text.json",
}
SSE_FIXTURES = {
    "chat": "openai/chat_text.sse",
    "messages": "anthropic/message_text.sse",
    "responses": "openai/responses_text.sse",
}
OFF = {"optimize": {"mode": "off"}}


@pytest.fixture
def setup(make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream) -> Iterator[GatewaySetup]:
    """A worker that does not retry (each test's one reply is the whole story), with short timeouts."""
    worker = make_worker(
        {"UPSTREAM_RETRIES": 0, "UPSTREAM_IDLE_TIMEOUT": 1, "UPSTREAM_FIRST_BYTE_TIMEOUT": 2},
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
    )
    setup_ = with_key(worker, fake_upstream, "misbehaving")
    yield setup_
    setup_.close()


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.ERROR)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)


@pytest.fixture
def errors_logged() -> Iterator[list[logging.LogRecord]]:
    """What the worker logs at ERROR (an unhandled error, a traceback), on its own loggers."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("trex", "aiohttp")]
    for logger in loggers:
        logger.addHandler(handler)
    yield handler.records
    for logger in loggers:
        logger.removeHandler(handler)


def body_for(path: str, stream: bool = False) -> dict[str, Any]:
    route, model, _, _ = PATHS[path]
    body: dict[str, Any] = {"model": model, "stream": stream, "trex": OFF}
    if route == "/v1/responses":
        body["input"] = "Say hello."
    else:
        body["messages"] = [{"role": "user", "content": "Say hello."}]
    if route == "/v1/messages":
        body["max_tokens"] = 64
    return body


def answer(wire: str) -> dict[str, Any]:
    """The upstream's standard non-streaming answer in its wire format."""
    doc: dict[str, Any] = json.loads(fixture_bytes(JSON_FIXTURES[wire]))
    return doc


def events(wire: str) -> list[bytes]:
    """The upstream's standard stream in its wire format, one SSE event per item."""
    return split_sse(fixture_bytes(SSE_FIXTURES[wire]))


def sdk_create(setup: GatewaySetup, path: str, stream: bool = False) -> Any:
    """The request through the client's official SDK (chat, Responses or Messages)."""
    body = body_for(path, stream)
    body.pop("stream")
    extra = {"extra_body": {"trex": body.pop("trex")}}
    route = PATHS[path][0]
    if route == "/v1/chat/completions":
        return setup.openai().chat.completions.create(**body, **extra, stream=stream)
    if route == "/v1/responses":
        return setup.openai().responses.create(**body, **extra, stream=stream)
    return setup.anthropic().messages.create(**body, **extra, stream=stream)


def post(setup: GatewaySetup, path: str, body: dict[str, Any]) -> Any:
    route = PATHS[path][0]
    return HTTP.post(setup.worker.url + route, body, headers={"Authorization": f"Bearer {setup.key}"})


def assert_error_shape(path: str, doc: Any) -> str:
    """The error body is in the client's format; returns its message."""
    if PATHS[path][0] == "/v1/messages":
        assert doc["type"] == "error" and set(doc["error"]) == {"type", "message"}, doc
        return str(doc["error"]["message"])
    # The upstream's own error body, same format, as it came (OpenRouter's has `code` and no `type`).
    assert doc.get("type") != "error" and isinstance(doc["error"]["message"], str), doc
    return str(doc["error"]["message"])


def final_event(setup: GatewaySetup, headers: Any) -> dict[str, Any]:
    event_id = headers["X-Trex-Usage-Event-Id"]
    return wait_final(setup, event_id)


# ---- non-streaming answers of the wrong shape ------


@pytest.mark.parametrize("path", ["chat>anthropic", "responses>anthropic"])
@pytest.mark.parametrize(
    "body",
    [{}, {"content": "Hello"}, {"content": None}, {"type": "message", "content": {"text": "Hello"}}],
    ids=["empty-object", "content-a-string", "content-null", "content-an-object"],
)
def test_a_claude_answer_without_a_content_list_is_a_502_in_the_clients_format(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str, body: dict[str, Any]
) -> None:
    setup.fake.enqueue(PATHS[path][2], Reply.json(body))
    r = post(setup, path, body_for(path))
    assert r.status_code == 502, r.text
    message = assert_error_shape(path, r.json())
    assert "no content" in message
    if PATHS[path][0] != "/v1/messages":
        assert r.json()["error"]["code"] == "bad_upstream_response"
    assert errors_logged == []


SAME_FORMAT = ["chat>openai", "responses>openai", "messages>anthropic"]
ANSWER_FIELD = {"chat": "choices", "messages": "content", "responses": "output"}


@pytest.mark.parametrize("path", SAME_FORMAT)
@pytest.mark.parametrize("shape", ["empty-object", "field-null", "field-a-string", "an-error-field-null"])
def test_a_same_format_answer_without_its_answer_list_is_a_502_not_an_empty_object_for_the_sdk(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str, shape: str
) -> None:
    """Forwarded as it came, the SDK would build an answer object without its answer (reading `choices`
    raises AttributeError): the client gets a 502 naming what is missing, in its format, and its SDK raises
    an APIStatusError."""
    wire = PATHS[path][3]
    field = ANSWER_FIELD[wire]
    doc = {k: v for k, v in answer(wire).items() if k != field}
    if shape == "field-null":
        doc[field] = None
    elif shape == "field-a-string":
        doc[field] = "Hello"
    elif shape == "empty-object":
        doc = {}
    else:
        doc["error"] = None
    setup.fake.enqueue(PATHS[path][2], Reply.json(doc))
    r = post(setup, path, body_for(path))
    assert r.status_code == 502, r.text
    assert f"without its `{field}` list" in assert_error_shape(path, r.json())
    assert final_event(setup, r.headers)["outcome"] == "upstream_failed"
    setup.fake.enqueue(PATHS[path][2], Reply.json(doc))
    error = anthropic.APIStatusError if PATHS[path][0] == "/v1/messages" else openai.APIStatusError
    with pytest.raises(error) as err:
        sdk_create(setup, path)
    assert err.value.status_code == 502
    assert errors_logged == []


@pytest.mark.parametrize("path", ["chat>anthropic", "responses>anthropic", "messages>openai"])
@pytest.mark.parametrize(
    "change",
    [
        {"content": [None, {"type": "text", "text": "Hello"}]},
        {"content": [{"type": "text", "text": 123}, {"type": "text", "text": "Hello"}]},
        {"content": [{"type": "text", "text": "Hello"}], "usage": "lots", "id": 5, "model": None},
        {"content": [{"type": "text", "text": "Hello"}], "stop_sequence": 7},
        {"content": [{"type": "text", "text": "Hello"}, {"type": "thinking", "thinking": 1, "signature": 2}]},
        {"content": [{"type": "text", "text": "Hello"}, {"type": "redacted_thinking", "data": None}]},
        {"content": [{"type": "text", "text": "Hello"}, {"type": "tool_use", "id": 1, "name": None}]},
    ],
    ids=[
        "a-null-block",
        "text-a-number",
        "usage-id-model-wrong",
        "stop-sequence-a-number",
        "thinking-numbers",
        "redacted-null",
        "tool-use-numbers",
    ],
)
def test_fields_of_the_wrong_type_in_a_translated_answer_read_as_empty_not_as_a_500(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str, change: dict[str, Any]
) -> None:
    """A field of the wrong type reads as empty, as the chat decoder reads its bodies: the rest of the
    answer reaches the client, through its SDK."""
    wire = PATHS[path][3]
    if wire == "chat":  # the same misreadings in OpenAI's shape
        doc = answer("chat")
        doc["choices"][0]["message"] = {"role": "assistant", "content": "Hello", "refusal": 5}
        doc["usage"], doc["id"], doc["model"] = "lots", 5, None
    else:
        doc = {**answer("messages"), **change}
    setup.fake.enqueue(PATHS[path][2], Reply.json(doc))
    route = PATHS[path][0]
    got = sdk_create(setup, path)
    if route == "/v1/chat/completions":
        assert got.choices[0].message.content == "Hello"
    elif route == "/v1/responses":
        assert got.output_text == "Hello"
    else:
        assert [b.text for b in got.content if b.type == "text"] == ["Hello"]
    assert errors_logged == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    "reply",
    [
        Reply(body=b"<html><body>Service temporarily unavailable</body></html>", content_type="text/html"),
        Reply(body=b'{"id": "chatcmpl-1", "choices": [{"message": {"content": "Hel'),
        Reply(body=b""),
        Reply(body=b"[1, 2, 3]"),
        Reply(body=fixture_bytes("openai/chat_text.sse"), content_type="text/plain"),
    ],
    ids=["html", "truncated-json", "empty", "a-json-list", "sse-as-text-plain"],
)
def test_a_200_that_is_not_a_json_object_is_a_502_with_the_usual_headers(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str, stream: bool, reply: Reply
) -> None:
    """Every path answers it alike: a 502 `bad_upstream_response` in the client's format, carrying the usage
    event's id and the upstream's name as any answer does, and the event is final, nothing billed."""
    setup.fake.enqueue(PATHS[path][2], reply)
    r = post(setup, path, body_for(path, stream))
    assert r.status_code == 502, r.text
    assert "not a JSON object" in assert_error_shape(path, r.json())
    assert r.headers["X-Trex-Upstream-Provider"] == (
        "anthropic" if PATHS[path][3] == "messages" else "openai"
    )
    event = final_event(setup, r.headers)
    assert event["outcome"] == "upstream_failed" and event["http_status"] == 502
    assert event["billed"]["input_tokens"] == 0 and event["billed"]["output_tokens"] == 0
    assert errors_logged == []


# ---- usage of odd values ------

ODD_USAGE: dict[str, Any] = {
    "negative": {
        "prompt_tokens": -5,
        "completion_tokens": -7,
        "input_tokens": -5,
        "output_tokens": -7,
        "cache_read_input_tokens": -1,
    },
    "huge": {
        "prompt_tokens": 10**18,
        "completion_tokens": 10**18,
        "input_tokens": 10**18,
        "output_tokens": 10**18,
    },
    "strings": {"prompt_tokens": "12", "completion_tokens": "x", "input_tokens": "12", "output_tokens": "x"},
    "floats": {"prompt_tokens": 1.5, "completion_tokens": 2e300, "input_tokens": 1.5, "output_tokens": 2e300},
    "null": None,
    "a-string": "lots",
}


def with_usage_in_body(wire: str, usage: Any) -> Reply:
    return Reply.json({**answer(wire), "usage": usage})


def with_usage_in_stream(wire: str, usage: Any) -> Reply:
    """The standard stream with `usage` wherever the wire reports usage (Anthropic: in both events)."""
    out = []
    for raw in events(wire):
        name, _, data = raw.rstrip(b"\n").rpartition(b"data: ")
        if not data.startswith(b"{"):  # [DONE]
            out.append(raw)
            continue
        doc = json.loads(data)
        if wire == "chat" and isinstance(doc.get("usage"), dict):
            doc["usage"] = usage
        elif wire == "messages" and doc["type"] == "message_start":
            doc["message"]["usage"] = usage
        elif wire == "messages" and doc["type"] == "message_delta":
            doc["usage"] = usage
        elif wire == "responses" and doc["type"] == "response.completed":
            doc["response"]["usage"] = usage
        out.append(name + b"data: " + json.dumps(doc).encode() + b"\n\n")
    return Reply(sse=out)


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("odd", list(ODD_USAGE))
def test_usage_of_odd_values_is_estimated_never_billed_negative_or_absurd(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str, stream: bool, odd: str
) -> None:
    """The answer reaches the client; the event is billed as one without usage: the input as counted, the
    output estimated from the text (a few tokens here), not the upstream's negative, zero or 10^18 tokens."""
    wire = PATHS[path][3]
    make = with_usage_in_stream if stream else with_usage_in_body
    setup.fake.enqueue(PATHS[path][2], make(wire, ODD_USAGE[odd]))
    r = post(setup, path, body_for(path, stream))
    assert r.status_code == 200, r.text
    if stream:
        assert "event: error" not in r.text and 'data: {"error"' not in r.text, r.text
    event = final_event(setup, r.headers)
    assert event["outcome"] == "completed", event
    assert event["usage_source"] == "estimated", event
    billed = event["billed"]
    assert 0 < billed["input_tokens"] < 100 and 0 < billed["output_tokens"] < 100, event
    assert 0 <= event["actual_cost_usd"] < 0.01, event
    assert errors_logged == []


# ---- upstream errors ------

OPENAI_SHAPED = b'{"error": {"message": "Slow down.", "type": "rate_limit_error", "code": "rate_limited"}}'
ANTHROPIC_SHAPED = b'{"type": "error", "error": {"type": "rate_limit_error", "message": "Slow down."}}'
LIMITS = {
    "Retry-After": "7",
    "x-ratelimit-remaining-requests": "0",
    "anthropic-ratelimit-requests-remaining": "0",
}


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("body", [OPENAI_SHAPED, ANTHROPIC_SHAPED], ids=["openai-shaped", "anthropic-shaped"])
def test_a_429_reaches_every_client_in_its_own_error_shape_with_the_rate_limit_headers(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str, body: bytes
) -> None:
    """Whatever the shape of the upstream's error body (a provider-compatible server may use the other
    format's), the client's SDK gets its own format's error, the upstream's status and its rate-limit state."""
    setup.fake.enqueue(PATHS[path][2], Reply(status=429, body=body, headers=LIMITS))
    r = post(setup, path, body_for(path))
    assert r.status_code == 429, r.text
    assert assert_error_shape(path, r.json()) == "Slow down."
    assert r.headers["Retry-After"] == "7"
    assert r.headers["x-ratelimit-remaining-requests"] == "0"
    assert r.headers["anthropic-ratelimit-requests-remaining"] == "0"
    event = final_event(setup, r.headers)
    assert event["outcome"] == "upstream_error" and event["http_status"] == 429
    assert errors_logged == []
    setup.fake.enqueue(PATHS[path][2], Reply(status=429, body=body, headers=LIMITS))
    if PATHS[path][0] == "/v1/messages":
        with pytest.raises(anthropic.RateLimitError) as aerr:
            sdk_create(setup, path)
        assert "Slow down." in aerr.value.message and aerr.value.body["error"]["type"] == "rate_limit_error"
    else:
        with pytest.raises(openai.RateLimitError) as oerr:
            sdk_create(setup, path)
        assert "Slow down." in oerr.value.message


# ---- malformed streams ------


def stream_errors(path: str, text: str) -> list[str]:
    """The error events in a streamed response body, in the client's format (asserting the format)."""
    found = []
    for block in text.split("\n\n"):
        lines = block.split("\n")
        data = "\n".join(line[6:] for line in lines if line.startswith("data: "))
        name = next((line[7:] for line in lines if line.startswith("event: ")), None)
        if not data or data == "[DONE]":
            continue
        doc = json.loads(data)
        route = PATHS[path][0]
        if route == "/v1/chat/completions" and "error" in doc:
            assert name is None and {"message", "type"} <= set(doc["error"]), block
            found.append(doc["error"]["message"])
        elif route == "/v1/messages" and name == "error":
            assert doc["type"] == "error" and set(doc["error"]) == {"type", "message"}, block
            found.append(doc["error"]["message"])
        elif route == "/v1/responses" and name in ("error", "response.failed"):
            found.append(doc["message"] if name == "error" else doc["response"]["error"]["message"])
    return found


def assert_ends_with_one_error(path: str, text: str, says: str) -> None:
    """The stream ends with one error event (in the client's format) saying `says`, then nothing but the end."""
    errors = stream_errors(path, text)
    # Responses: an `error` event and the `response.failed` after it are the one failure.
    assert len(errors) == 1 + (len(errors) == 2 and errors[0] == errors[1]), text[-1500:]
    assert says in errors[0], text[-1500:]
    if PATHS[path][0] == "/v1/responses":  # the last event is the error or the failed response
        assert text.rstrip().rsplit("\n\n", 1)[-1].split("\n")[0] in (
            "event: error",
            "event: response.failed",
        )
    else:
        assert text.rstrip().endswith("}"), text[-300:]  # no [DONE] or message_stop after it


def malformed_line(wire: str) -> Reply:
    raw = events(wire)
    name = {
        "chat": b"",
        "messages": b"event: content_block_delta\n",
        "responses": b"event: response.output_text.delta\n",
    }
    return Reply(
        sse=[
            *raw[:3],
            name[wire] + b'data: {"type": "content_block_delta", "index": 0, "delta": {"te\n\n',
            *raw[3:],
        ]
    )


@pytest.mark.parametrize("path", list(PATHS))
def test_an_event_that_is_not_json_ends_the_stream_with_the_clients_error_event(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str
) -> None:
    """On every path, same format or not: the SDK gets the error event of its format (an error it raises
    with the message), never the broken line its JSON parser would fail on."""
    wire = PATHS[path][3]
    setup.fake.enqueue(PATHS[path][2], malformed_line(wire))
    r = post(setup, path, body_for(path, stream=True))
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/event-stream"
    assert '"te\n' not in r.text and '{"te' not in r.text
    assert_ends_with_one_error(path, r.text, "malformed")
    event = final_event(setup, r.headers)
    assert event["outcome"] == "upstream_failed" and event["billed"]["output_tokens"] >= 0
    assert errors_logged == []
    setup.fake.enqueue(PATHS[path][2], malformed_line(wire))
    if PATHS[path][0] == "/v1/messages":
        with pytest.raises(anthropic.APIStatusError) as aerr:
            list(sdk_create(setup, path, stream=True))
        assert "malformed" in str(aerr.value)
    elif PATHS[path][0] == "/v1/chat/completions":
        with pytest.raises(openai.APIError) as oerr:
            list(sdk_create(setup, path, stream=True))
        assert "malformed" in str(oerr.value)
    else:  # the Responses SDK hands over the error event; it does not raise
        kinds = [ev.type for ev in sdk_create(setup, path, stream=True)]
        assert kinds[-1] in ("error", "response.failed"), kinds


def _claude_event(doc: dict[str, Any]) -> bytes:
    return f"event: {doc['type']}\ndata: {json.dumps(doc)}\n\n".encode()


START = {
    "type": "message_start",
    "message": {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [],
        "stop_reason": None,
        "usage": {"input_tokens": 12, "output_tokens": 1},
    },
}
BLOCK0 = {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}}
DELTA0 = {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hello"}}
GHOST = {"type": "content_block_delta", "index": 7, "delta": {"type": "text_delta", "text": "ghost"}}
STOP0 = {"type": "content_block_stop", "index": 0}
FINISH = {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 2}}
END = {"type": "message_stop"}


@pytest.mark.parametrize(
    ("sequence", "says"),
    [
        ([DELTA0, START, BLOCK0, DELTA0, STOP0, FINISH, END], "content_block_delta before message_start"),
        ([START, BLOCK0, DELTA0, GHOST, STOP0, FINISH, END], "content block 7, which it never started"),
        ([START, DELTA0, STOP0, FINISH, END], "content block 0, which it never started"),
    ],
    ids=["delta-before-message-start", "delta-for-a-block-never-started", "no-block-start"],
)
def test_claude_events_out_of_order_end_an_anthropic_clients_stream_with_an_error_event(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], sequence: list[dict[str, Any]], says: str
) -> None:
    """Forwarded as they came, they would fail in the SDK's stream helper ("Unexpected event order", an
    IndexError): the client gets Anthropic's error event instead, and what came before it."""
    setup.fake.enqueue("/v1/messages", Reply(sse=[_claude_event(doc) for doc in sequence]))
    r = post(setup, "messages>anthropic", body_for("messages>anthropic", stream=True))
    assert r.status_code == 200
    assert_ends_with_one_error("messages>anthropic", r.text, says)
    assert "ghost" not in r.text
    assert final_event(setup, r.headers)["outcome"] == "upstream_failed"
    setup.fake.enqueue("/v1/messages", Reply(sse=[_claude_event(doc) for doc in sequence]))
    messages: Any = [{"role": "user", "content": "Say hello."}]
    helper = setup.anthropic().messages.stream(model="claude-sonnet-4-6", max_tokens=64, messages=messages)
    with (
        pytest.raises(anthropic.APIStatusError) as err,
        helper as stream,
    ):  # the error event, as SDKs raise it
        stream.get_final_message()
    assert says in str(err.value)
    assert errors_logged == []


# ---- fallbacks ------


def with_fallback(path: str, stream: bool = False) -> dict[str, Any]:
    """The request with a fallback to the other provider's model."""
    body = body_for(path, stream)
    other = (
        {"provider": "openai", "model": "gpt-4o-mini"}
        if PATHS[path][3] == "messages"
        else {"provider": "anthropic", "model": "claude-sonnet-4-6"}
    )
    body["trex"] = {**OFF, "routing": {"fallbacks": [other]}}
    return body


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    ("reply", "error"),
    [
        (Reply(body=b"<html>Bad gateway</html>", content_type="text/html"), "not a JSON object"),
        (Reply(body=b"{}"), "list"),
        (Reply(body=fixture_bytes("openai/chat_text.json"), cut_after=40), "cut off"),
    ],
    ids=["html", "empty-object", "reset-mid-body"],
)
def test_an_unusable_200_falls_back_before_the_client_sees_a_byte(
    setup: GatewaySetup,
    errors_logged: list[logging.LogRecord],
    path: str,
    stream: bool,
    reply: Reply,
    error: str,
) -> None:
    """An answer no SDK could read, or one cut off, is a bad gateway: the fallback answers instead, and the
    usage event records the failed attempt (502) and is priced as the model that served."""
    first = PATHS[path][2]
    if reply.cut_after is not None and PATHS[path][3] != "chat":
        reply = Reply(body=fixture_bytes(JSON_FIXTURES[PATHS[path][3]]), cut_after=40)
    setup.fake.enqueue(first, reply)
    r = post(setup, path, with_fallback(path, stream))
    assert r.status_code == 200, r.text
    fallback = "openai" if PATHS[path][3] == "messages" else "anthropic"
    assert r.headers["X-Trex-Upstream-Provider"] == fallback
    assert r.headers["X-Trex-Fallback-Attempts"] == "1"
    if stream:
        assert stream_errors(path, r.text) == [], r.text
    event = final_event(setup, r.headers)
    assert event["outcome"] == "completed" and event["provider"] == fallback
    failed, served = event["attempts"]
    assert failed["status"] == 502 and error in failed["error"], failed
    assert served["status"] == 200
    assert errors_logged == []


def failing_stream(wire: str, case: str) -> Reply:
    """A stream that fails before its first event of substance, in the upstream's wire format."""
    preamble = events(wire)[:1] if wire == "messages" else []  # message_start
    error = {
        "chat": b'data: {"error": {"message": "The server is overloaded.", "type": "server_error"}}\n\n',
        "messages": b'event: error\ndata: {"type": "error", "error": {"type": "overloaded_error", '
        b'"message": "Overloaded"}}\n\n',
        "responses": b'event: error\ndata: {"type": "error", "code": "server_error", "message": "Overloaded", '
        b'"param": null, "sequence_number": 1}\n\n',
    }[wire]
    if case == "error-first":
        return Reply(sse=[*preamble, error])
    if case == "unreadable-first":  # a proxy's error page where the first event should be
        name = b"" if wire == "chat" else events(wire)[len(preamble)].partition(b"\n")[0] + b"\n"
        return Reply(sse=[*preamble, name + b"data: <html><body>502 Bad Gateway</body></html>\n\n"])
    if case == "unreadable-preamble":  # message_start (Claude), the role chunk (chat), response.created
        raw = events(wire)
        name = b"" if wire == "chat" else raw[0].partition(b"\n")[0] + b"\n"
        return Reply(sse=[name + b'data: {"type": [[[\n\n', *raw[1:]])
    if case == "ends-before-any-event":
        return Reply(sse=preamble)
    if case == "cut-before-any-event":
        return Reply(sse=[*preamble, *events(wire)], drop_after=len(preamble))
    import threading

    return Reply(sse=[*preamble, *events(wire)], pause_after=len(preamble), resume=threading.Event())


@pytest.mark.parametrize(
    ("case", "path"),
    [
        (case, path)
        for case in (
            "error-first",
            "unreadable-first",
            "unreadable-preamble",
            "ends-before-any-event",
            "cut-before-any-event",
            "stalls-before-any-event",
        )
        for path in PATHS
        # The fake stalls only after an event it sent: on the other wires that first event is the one the
        # client is answered with, and a stall after it is a stream failing after its first byte (below).
        if not (case == "stalls-before-any-event" and PATHS[path][3] != "messages")
    ],
)
def test_a_stream_that_fails_before_its_first_event_falls_back(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str, case: str
) -> None:
    """Anthropic's overloaded_error as a stream's first event (after message_start), an error chunk, an event
    that is not JSON (a proxy's error page, a garbled message_start), a stream that ends, is cut or stalls
    before any event: the client has been sent nothing, so the fallback answers,
    and the usage event records the failed attempt with the status it stood for."""
    wire = PATHS[path][3]
    setup.fake.enqueue(PATHS[path][2], failing_stream(wire, case))
    r = post(setup, path, with_fallback(path, stream=True))
    assert r.status_code == 200, r.text
    fallback = "openai" if wire == "messages" else "anthropic"
    assert r.headers["X-Trex-Upstream-Provider"] == fallback
    assert stream_errors(path, r.text) == [], r.text
    event = final_event(setup, r.headers)
    assert event["outcome"] == "completed" and event["provider"] == fallback, event
    failed, served = event["attempts"]
    expected = {"error-first": 529 if wire == "messages" else 502, "stalls-before-any-event": 504}
    assert failed["status"] == expected.get(case, 502), failed
    assert served["status"] == 200
    assert errors_logged == []


@pytest.mark.parametrize("path", list(PATHS))
def test_without_a_fallback_a_stream_failing_at_its_first_event_reaches_the_client_as_an_error_event(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str
) -> None:
    wire = PATHS[path][3]
    setup.fake.enqueue(PATHS[path][2], failing_stream(wire, "error-first"))
    r = post(setup, path, body_for(path, stream=True))
    assert r.status_code == 200 and r.headers["Content-Type"] == "text/event-stream"
    assert_ends_with_one_error(path, r.text, "verloaded")
    event = final_event(setup, r.headers)
    assert event["outcome"] == "upstream_failed" and event["attempts"][0]["status"] in (502, 529)
    assert errors_logged == []


# ---- the rest of the audit: what already behaved, kept so ------


def connections_held(setup: GatewaySetup) -> int:
    """Upstream connections the worker holds (acquired from its pools, not released)."""

    async def count() -> int:
        sessions = setup.worker.app[GATEWAY].upstream._sessions.values()
        return sum(len(s.connector._acquired) for s in sessions if s.connector is not None)

    deadline = time.monotonic() + 3
    while True:
        held: int = setup.worker.call(count())
        if held == 0 or time.monotonic() > deadline:
            return held
        time.sleep(0.05)


def mid_stream(wire: str, case: str) -> Reply:
    """A stream that fails after content has reached the client."""
    raw = events(wire)
    head = raw[:4]  # past the preamble and into the text
    if case == "error-event":
        error = failing_stream(wire, "error-first").sse
        assert error is not None
        return Reply(sse=[*head, error[-1]])
    if case == "closes-mid-event":
        return Reply(sse=[b"".join(head) + raw[4][: len(raw[4]) // 2]])
    if case == "reset":
        return Reply(sse=raw, drop_after=4)
    if case == "no-terminator-unfinished":
        return Reply(sse=head)
    import threading

    return Reply(sse=raw, pause_after=4, resume=threading.Event())


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    ("case", "says"),
    [
        ("error-event", "verloaded"),
        ("closes-mid-event", "ended before completion"),
        ("reset", "failed mid-stream"),
        ("no-terminator-unfinished", "ended before completion"),
        ("stall", "timed out"),
    ],
)
def test_a_stream_failing_after_its_first_byte_ends_with_one_error_event_and_is_not_retried(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str, case: str, says: str
) -> None:
    wire = PATHS[path][3]
    setup.fake.enqueue(PATHS[path][2], mid_stream(wire, case))
    r = post(setup, path, with_fallback(path, stream=True))
    assert r.status_code == 200
    assert_ends_with_one_error(path, r.text, says)
    event = final_event(setup, r.headers)
    assert event["outcome"] == "upstream_failed" and len(event["attempts"]) == 1, event
    assert event["billed"]["output_tokens"] >= 0 and event["billed"]["input_tokens"] > 0
    assert len(setup.fake.received) == 1  # no fallback after bytes went out
    assert connections_held(setup) == 0
    assert errors_logged == []


@pytest.mark.parametrize("path", list(PATHS))
def test_an_unknown_event_type_is_passed_over(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str
) -> None:
    wire = PATHS[path][3]
    raw = events(wire)
    unknown = b'data: {"object": "chat.completion.chunk.future", "choices": []}\n\n'
    if wire != "chat":
        unknown = b'event: some_future_event\ndata: {"type": "some_future_event"}\n\n'
    setup.fake.enqueue(PATHS[path][2], Reply(sse=[*raw[:3], unknown, *raw[3:]]))
    r = post(setup, path, body_for(path, stream=True))
    assert r.status_code == 200 and stream_errors(path, r.text) == []
    assert final_event(setup, r.headers)["outcome"] == "completed"
    assert errors_logged == []


@pytest.mark.parametrize("stream", [False, True], ids=["json", "stream"])
@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize(
    ("reply", "status", "says"),
    [
        (
            Reply(status=502, body=b"<html><body>502 Bad Gateway</body></html>", content_type="text/html"),
            502,
            "502 Bad Gateway",
        ),
        (
            Reply(
                status=503,
                body=b"upstream connect error",
                content_type="text/plain",
                headers={"Retry-After": "3"},
            ),
            503,
            "upstream connect error",
        ),
        (Reply(status=529, body=fixture_bytes("anthropic/error_overloaded.json")), 529, "Overloaded"),
        (Reply(status=500, body=b""), 500, "HTTP 500"),
        (Reply(hang_up=True), 502, "closed the connection"),
        (Reply(body=fixture_bytes("openai/chat_text.json"), latency=3), 504, "did not respond within 2s"),
        (Reply(body=b'{"error": {"message": "No capacity.", "code": 503}}'), 503, "No capacity."),
    ],
    ids=["html-502", "text-503", "529", "empty-500", "hang-up", "first-byte-timeout", "error-in-a-200"],
)
def test_an_upstream_failure_before_an_answer_reaches_the_client_with_its_status_in_its_format(
    setup: GatewaySetup,
    errors_logged: list[logging.LogRecord],
    path: str,
    stream: bool,
    reply: Reply,
    status: int,
    says: str,
) -> None:
    """The upstream's status (502 when it never answered, 504 when it was too slow), a structured error
    body in the client's format, the upstream's Retry-After; the event final, nothing billed."""
    setup.fake.enqueue(PATHS[path][2], reply)
    r = post(setup, path, body_for(path, stream))
    assert r.status_code == status, r.text
    assert says in assert_error_shape(path, r.json())
    if "Retry-After" in reply.headers:
        assert r.headers["Retry-After"] == reply.headers["Retry-After"]
    if PATHS[path][0] == "/v1/messages":
        kinds = {529: "overloaded_error", 504: "timeout_error"}
        assert r.json()["error"]["type"] == kinds.get(status, r.json()["error"]["type"])
    event = final_event(setup, r.headers)
    assert event["status"] == "final" and event["http_status"] == status
    assert event["billed"] == {
        "input_tokens": 0,
        "output_tokens": 0,
        "cached_input_tokens": 0,
        "cache_write_tokens": 0,
    }
    assert connections_held(setup) == 0
    assert errors_logged == []


@pytest.mark.parametrize("path", list(PATHS))
@pytest.mark.parametrize("case", ["complete", "malformed"])
def test_a_client_hanging_up_after_its_stream_ended_leaves_the_outcome_as_it_was(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord], path: str, case: str
) -> None:
    """The upstream keeps its connection open after the stream's end (or after the event that ended it), so
    the worker is still reading what follows when a client that has read everything closes its connection:
    the stream was complete (or failed) for the client, and its usage event says so, not
    `client_disconnected`."""
    import threading

    wire = PATHS[path][3]
    raw = events(wire) if case == "complete" else (malformed_line(wire).sse or [])
    lingering = Reply(sse=raw, pause_after=len(raw), resume=threading.Event())
    setup.fake.enqueue(PATHS[path][2], lingering)
    r = post(setup, path, body_for(path, stream=True))  # urllib: reads to the end, then closes
    assert r.status_code == 200
    if case == "complete":
        assert stream_errors(path, r.text) == []
    else:
        assert_ends_with_one_error(path, r.text, "malformed")
    event = final_event(setup, r.headers)
    assert event["outcome"] == ("completed" if case == "complete" else "upstream_failed"), event
    assert lingering.resume is not None
    lingering.resume.set()
    assert errors_logged == []


def test_a_claude_stream_with_events_the_anthropic_sdk_skips_is_relayed_whole(
    setup: GatewaySetup, errors_logged: list[logging.LogRecord]
) -> None:
    """Events without a name, or with empty data (keep-alives some proxies add), are skipped by the Anthropic
    SDK: a same-format Messages stream carrying them is relayed to its end, not ended as malformed."""
    raw = events("messages")
    skipped = [
        b"data: \n\n",
        b"event: keepalive\ndata: \n\n",
        b'data: {"note": "no name"}\n\n',
        b"data: ...\n\n",
    ]

    def relayed(sse: list[bytes]) -> tuple[list[str], str]:
        setup.fake.enqueue("/v1/messages", Reply(sse=sse))
        stream = sdk_create(setup, "messages>anthropic", stream=True)
        got = list(stream)
        assert final_event(setup, stream.response.headers)["outcome"] == "completed"
        text = "".join(
            e.delta.text for e in got if e.type == "content_block_delta" and e.delta.type == "text_delta"
        )
        return [e.type for e in got], text

    plain = relayed(raw)
    assert plain[0][-1] == "message_stop" and plain[1]
    assert relayed([raw[0], *skipped, *raw[1:3], *skipped, *raw[3:]]) == plain
    assert errors_logged == []


def streamed_text(wire: str) -> str:
    """The text of the standard stream of `wire` (chat or Messages)."""
    docs = [json.loads(e.split(b"data: ", 1)[1]) for e in events(wire) if b"data: {" in e]
    if wire == "chat":
        return "".join(c["delta"].get("content") or "" for d in docs for c in d.get("choices", []))
    return "".join(d["delta"]["text"] for d in docs if d.get("type") == "content_block_delta")


@pytest.mark.parametrize("path", ["chat>openai", "messages>anthropic"])
def test_a_stream_slow_to_its_first_event_gets_its_headers_after_the_first_event_wait(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream, path: str
) -> None:
    """A reasoning model may send its first chunk only after minutes: past `UPSTREAM_FIRST_EVENT_WAIT` the
    client has its response headers (a proxy in front with a time-to-headers limit does not fail it), then the
    whole stream as it comes. Before, the headers waited for the first event (here, never: the client's
    read timeout ran out first)."""
    worker = make_worker(
        {"UPSTREAM_RETRIES": 0, "UPSTREAM_FIRST_EVENT_WAIT": 0.3, "UPSTREAM_IDLE_TIMEOUT": 10},
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
    )
    setup = with_key(worker, fake_upstream, "slow-thinker")
    try:
        wire = PATHS[path][3]
        first = (
            threading.Event()
        )  # the upstream's first event waits for it: sent after the client has headers
        fake_upstream.enqueue(PATHS[path][2], Reply(sse=[b"", *events(wire)], pause_after=1, resume=first))
        if wire == "chat":
            client: Any = setup.openai(timeout=3).chat.completions
        else:
            client = setup.anthropic(timeout=3).messages
        body = body_for(path)
        body.pop("stream")
        trex = body.pop("trex")
        started = time.monotonic()
        stream = client.create(**body, extra_body={"trex": trex}, stream=True)
        assert not first.is_set() and time.monotonic() - started < 2  # headers, and nothing of the answer yet
        first.set()
        got = list(stream)
        assert got, "no events"
        if wire == "chat":
            text = "".join(c.choices[0].delta.content or "" for c in got if c.choices)
        else:
            text = "".join(
                e.delta.text for e in got if e.type == "content_block_delta" and e.delta.type == "text_delta"
            )
        assert text == streamed_text(wire), text
        assert final_event(setup, stream.response.headers)["outcome"] == "completed"
    finally:
        setup.close()
