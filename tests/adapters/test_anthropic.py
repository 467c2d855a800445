"""The Anthropic Messages translator, checked the way a client sees it: against the recorded transcripts and
the official SDK's own models, stream accumulator and stream reader."""

from __future__ import annotations

import copy
import json
from pathlib import Path
from typing import Any

import anthropic
import httpx2
import pydantic
import pytest
from anthropic.lib.streaming._messages import accumulate_event
from anthropic.types import Message as SDKMessage
from anthropic.types import RawMessageStreamEvent

from adapters.anthropic import (
    REDACTED_PREFIX,
    StreamDecoder,
    StreamEncoder,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
)
from adapters.base import (
    BlockStop,
    Image,
    Message,
    Request,
    Response,
    ResponseFormat,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamFinish,
    StreamStart,
    StreamUsage,
    Text,
    TextDelta,
    TextStart,
    Thinking,
    ThinkingDelta,
    ThinkingStart,
    Tool,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    ToolChoice,
    ToolResult,
    TranslationError,
    Usage,
)
from adapters.sse import SSEParser

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "anthropic"
EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)
EPHEMERAL = {"type": "ephemeral"}
EPHEMERAL_1H = {"type": "ephemeral", "ttl": "1h"}


def fixture_json(name: str) -> dict[str, Any]:
    data: dict[str, Any] = json.loads((FIXTURES / name).read_text(encoding="utf-8"))
    return data


def sse_events(raw: bytes) -> list[tuple[str | None, str]]:
    return [(e.event, e.data) for e in SSEParser().feed(raw)]


def fixture_events(name: str) -> list[tuple[str | None, str]]:
    return sse_events((FIXTURES / name).read_bytes())


def decode_stream(name: str) -> list[StreamEvent]:
    decoder = StreamDecoder()
    out: list[StreamEvent] = []
    for event, data in fixture_events(name):
        out += decoder.feed(event, data)
    assert decoder.done
    return out


def encode_stream(events: list[StreamEvent], **kwargs: Any) -> bytes:
    encoder = StreamEncoder(model=kwargs.pop("model", "claude-client-name"), **kwargs)
    return b"".join(encoder.encode(ev) for ev in events)


def accumulate(raw: bytes) -> SDKMessage:
    """Parse every event with the SDK's strict event model and fold them with the SDK's own accumulator."""
    snapshot: Any = None
    json_bufs: dict[int, bytes] = {}
    for name, data in sse_events(raw):
        if name == "ping":
            continue
        assert name != "error", data
        event = EVENTS.validate_json(data)
        assert event.type == name  # the SSE event name always repeats the payload's type
        snapshot = accumulate_event(event=event, current_snapshot=snapshot, json_bufs=json_bufs)
    assert snapshot is not None
    return SDKMessage.model_validate(snapshot.model_dump())


def sdk_client(body: bytes, content_type: str = "text/event-stream") -> anthropic.Anthropic:
    """A real SDK client whose HTTP transport answers every request with `body`."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": content_type})

    return anthropic.Anthropic(
        api_key="sk-test",
        base_url="http://gateway.test",
        max_retries=0,
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
    )


def sdk_stream_final(raw: bytes) -> SDKMessage:
    """The final message as `client.messages.stream()` builds it from our bytes."""
    with (
        sdk_client(raw) as client,
        client.messages.stream(
            model="claude-client-name", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        ) as stream,
    ):
        final = stream.get_final_message()
    return SDKMessage.model_validate(final.model_dump())


def assert_well_formed(events: list[StreamEvent]) -> None:
    """Canonical stream rules of adapters.base: sequential blocks, deltas after their start, proper ending."""
    assert isinstance(events[0], StreamStart)
    open_index: int | None = None
    kinds = {TextDelta: TextStart, ToolCallDelta: ToolCallStart, ThinkingDelta: ThinkingStart}
    open_kind: type | None = None
    for ev in events[1:-1]:
        if isinstance(ev, TextStart | ToolCallStart | ThinkingStart):
            assert open_index is None, "a block started before the previous one stopped"
            open_index, open_kind = ev.index, type(ev)
        elif isinstance(ev, TextDelta | ToolCallDelta | ThinkingDelta):
            assert ev.index == open_index and kinds[type(ev)] is open_kind
        elif isinstance(ev, BlockStop):
            assert ev.index == open_index
            open_index = None
        else:
            assert isinstance(ev, StreamFinish | StreamUsage)
    last = events[-1]
    assert isinstance(last, StreamEnd | StreamError)
    if isinstance(last, StreamEnd):
        assert open_index is None
        assert [type(e) for e in events[-3:]] == [StreamFinish, StreamUsage, StreamEnd]


def assert_anthropic_stream_shape(raw: bytes) -> list[dict[str, Any]]:
    """message_start first; blocks 0, 1, 2 … each started, then stopped; message_delta, message_stop last."""
    events = [(name, json.loads(data)) for name, data in sse_events(raw) if name != "ping"]
    names = [name for name, _ in events]
    assert names[0] == "message_start"
    assert names[-2:] == ["message_delta", "message_stop"]
    expected_index = 0
    open_index: int | None = None
    for name, payload in events[1:-2]:
        if name == "content_block_start":
            assert open_index is None and payload["index"] == expected_index
            open_index = expected_index
            expected_index += 1
        elif name == "content_block_delta":
            assert payload["index"] == open_index
        else:
            assert name == "content_block_stop" and payload["index"] == open_index
            open_index = None
    assert open_index is None
    return [payload for _, payload in events]


# ---- decode_request ------------------------------------------------------------------------------------

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="

RICH_BODY: dict[str, Any] = {
    "model": "claude-sonnet-4-20250514",
    "max_tokens": 1024,
    "system": [
        {"type": "text", "text": "You are a weather bot."},
        {"type": "text", "text": "Long cached instructions.", "cache_control": EPHEMERAL_1H},
    ],
    "messages": [
        {
            "role": "user",
            "content": [
                {"type": "text", "text": "Compare these two.", "cache_control": EPHEMERAL},
                {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
                {
                    "type": "image",
                    "source": {"type": "url", "url": "https://example.com/b.jpg"},
                    "cache_control": EPHEMERAL,
                },
            ],
        },
        {
            "role": "assistant",
            "content": [
                {"type": "thinking", "thinking": "Need the weather.", "signature": "EqQBCkYIBxgCKkBsig=="},
                {
                    "type": "redacted_thinking",
                    "data": "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8=",
                },
                {"type": "text", "text": "Checking both cities."},
                {
                    "type": "tool_use",
                    "id": "toolu_01A",
                    "name": "get_weather",
                    # Key order deliberately not sorted: it must survive as the client wrote it.
                    "input": {"unit": "celsius", "location": "Paris, France", "days": [1, 2]},
                },
                {
                    "type": "tool_use",
                    "id": "toolu_01B",
                    "name": "get_weather",
                    "input": {"location": "Tōkyō"},
                    "cache_control": EPHEMERAL,
                },
            ],
        },
        {
            "role": "user",
            "content": [
                {"type": "tool_result", "tool_use_id": "toolu_01A", "content": "18°C, cloudy"},
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_01B",
                    "content": [
                        {"type": "text", "text": "service unavailable"},
                        {
                            "type": "image",
                            "source": {"type": "base64", "media_type": "image/png", "data": PNG},
                        },
                    ],
                    "is_error": True,
                    "cache_control": EPHEMERAL,
                },
                {"type": "text", "text": "Thanks, and tomorrow?"},
            ],
        },
    ],
    "tools": [
        {
            "name": "get_weather",
            "description": "Current weather for a location.",
            "input_schema": {
                "type": "object",
                "properties": {"location": {"type": "string"}, "unit": {"type": "string"}},
                "required": ["location"],
            },
            "cache_control": EPHEMERAL,
        }
    ],
    "tool_choice": {"type": "any", "disable_parallel_tool_use": True},
    "stop_sequences": ["END"],
    "temperature": 0.5,
    "top_p": 0.9,
    "top_k": 40,
    "metadata": {"user_id": "user-42"},
    "stream": True,
}


def test_decode_rich_request() -> None:
    req = decode_request(copy.deepcopy(RICH_BODY))

    assert req.model == "claude-sonnet-4-20250514"
    assert req.system == [
        Text("You are a weather bot."),
        Text("Long cached instructions.", cache_control=EPHEMERAL_1H),
    ]
    user, assistant, results = req.messages
    assert user == Message(
        "user",
        [
            Text("Compare these two.", cache_control=EPHEMERAL),
            Image(media_type="image/png", data=PNG),
            Image(url="https://example.com/b.jpg", cache_control=EPHEMERAL),
        ],
    )
    assert assistant.role == "assistant"
    assert assistant.content[0] == Thinking("Need the weather.", "EqQBCkYIBxgCKkBsig==")
    redacted = assistant.content[1]
    assert isinstance(redacted, Thinking) and redacted.text == ""
    assert (
        redacted.signature == REDACTED_PREFIX + "EmwKAhgBEgy3va3pzix/LafPsn4aDFIT2Xlxh0L5L8rLVyIwxtE3rAFBa8="
    )
    assert assistant.content[2] == Text("Checking both cities.")
    call_a, call_b = assistant.content[3], assistant.content[4]
    assert call_a == ToolCall(
        "toolu_01A", "get_weather", '{"unit":"celsius","location":"Paris, France","days":[1,2]}'
    )
    assert isinstance(call_b, ToolCall) and call_b.cache_control == EPHEMERAL
    assert json.loads(call_b.arguments) == {"location": "Tōkyō"}

    assert results.role == "user"
    result_a, result_b, text = results.content
    # Results pair with the calls by id.
    assert isinstance(result_a, ToolResult) and result_a.tool_call_id == call_a.id
    assert result_a.content == [Text("18°C, cloudy")] and not result_a.is_error
    assert result_b == ToolResult(
        "toolu_01B",
        [Text("service unavailable"), Image(media_type="image/png", data=PNG)],
        is_error=True,
        cache_control=EPHEMERAL,
    )
    assert text == Text("Thanks, and tomorrow?")

    assert req.tools == [
        Tool(
            "get_weather",
            RICH_BODY["tools"][0]["input_schema"],
            description="Current weather for a location.",
            cache_control=EPHEMERAL,
        )
    ]
    assert req.tool_choice == ToolChoice("required")
    assert req.parallel_tool_calls is False
    assert req.max_tokens == 1024
    assert req.stop == ["END"]
    assert (req.temperature, req.top_p, req.top_k) == (0.5, 0.9, 40)
    assert req.user == "user-42" and req.metadata == {"user_id": "user-42"}
    assert req.stream is True


def test_decode_minimal_request_with_string_content() -> None:
    req = decode_request(
        {"model": "m", "system": "Be brief.", "messages": [{"role": "user", "content": "Hi"}]}
    )
    assert req.system == [Text("Be brief.")]
    assert req.messages == [Message("user", [Text("Hi")])]
    # max_tokens is required by Anthropic but a gateway can fill it in: missing means "not given".
    assert req.max_tokens is None
    assert req.tools == [] and req.tool_choice is None and req.parallel_tool_calls is None
    assert req.stream is False and req.user is None


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ({"type": "auto"}, ToolChoice("auto")),
        ({"type": "any"}, ToolChoice("required")),
        ({"type": "none"}, ToolChoice("none")),
        ({"type": "tool", "name": "get_weather"}, ToolChoice("tool", "get_weather")),
    ],
)
def test_decode_tool_choice(choice: dict[str, Any], expected: ToolChoice) -> None:
    body = {"model": "m", "messages": [{"role": "user", "content": "Hi"}], "tool_choice": choice}
    req = decode_request(body)
    assert req.tool_choice == expected
    assert req.parallel_tool_calls is None


def _body(**overrides: Any) -> dict[str, Any]:
    return {"model": "m", "max_tokens": 10, "messages": [{"role": "user", "content": "Hi"}], **overrides}


def _msgs(*content: Any) -> dict[str, Any]:
    """A body whose messages are [user text, assistant text, user <content>…]."""
    return _body(
        messages=[
            {"role": "user", "content": "Hi"},
            {"role": "assistant", "content": "Hello"},
            {"role": "user", "content": [{"type": "text", "text": "see"}, *content]},
        ]
    )


@pytest.mark.parametrize(
    ("body", "param"),
    [
        ({"messages": [{"role": "user", "content": "Hi"}]}, "model"),
        (_body(messages=None), "messages"),
        (_body(messages=[]), "messages"),
        (_body(messages="Hi"), "messages"),
        (_body(messages=["Hi"]), "messages[0]"),
        (_body(messages=[{"role": "system", "content": "Hi"}]), "messages[0].role"),
        (_body(messages=[{"role": "user", "content": 7}]), "messages[0].content"),
        (_body(messages=[{"role": "user"}]), "messages[0].content"),
        (
            _msgs({"type": "document", "source": {"type": "file", "file_id": "file_011"}}),
            "messages[2].content[1].source.file_id",
        ),
        (
            _msgs({"type": "search_result", "source": "s", "title": "t", "content": []}),
            "messages[2].content[1].type",
        ),
        (
            _msgs({"type": "server_tool_use", "id": "srvtoolu_1", "name": "web_search", "input": {}}),
            "messages[2].content[1].type",
        ),
        (_msgs({"text": "no type"}), "messages[2].content[1].type"),
        (_msgs("bare string"), "messages[2].content[1]"),
        (_msgs({"type": "text", "text": 5}), "messages[2].content[1].text"),
        (
            _msgs({"type": "text", "text": "x", "cache_control": "yes"}),
            "messages[2].content[1].cache_control",
        ),
        (
            _msgs({"type": "image", "source": {"type": "file", "file_id": "f"}}),
            "messages[2].content[1].source.file_id",
        ),
        (_msgs({"type": "image"}), "messages[2].content[1].source"),
        (
            _msgs({"type": "image", "source": {"type": "base64", "data": PNG}}),
            "messages[2].content[1].source.media_type",
        ),
        (_msgs({"type": "tool_use", "id": "t", "name": "f", "input": "{}"}), "messages[2].content[1].input"),
        (_msgs({"type": "tool_use", "name": "f", "input": {}}), "messages[2].content[1].id"),
        (_msgs({"type": "tool_result", "content": "x"}), "messages[2].content[1].tool_use_id"),
        (
            _msgs(
                {
                    "type": "tool_result",
                    "tool_use_id": "t",
                    "content": [{"type": "text", "text": "ok"}, {"type": "search_result", "source": "s"}],
                }
            ),
            "messages[2].content[1].content[1].type",
        ),
        (_msgs({"type": "tool_result", "tool_use_id": "t", "content": 3}), "messages[2].content[1].content"),
        (
            _msgs({"type": "tool_result", "tool_use_id": "t", "is_error": "yes"}),
            "messages[2].content[1].is_error",
        ),
        (_msgs({"type": "thinking", "thinking": "hmm"}), "messages[2].content[1].signature"),
        (_body(system=7), "system"),
        (_body(system=[{"type": "image", "source": {}}]), "system[0].type"),
        (_body(tools={"name": "f"}), "tools"),
        (
            _body(
                tools=[
                    {"name": "f", "input_schema": {"type": "object"}},
                    {"type": "web_search_20250305", "name": "web_search"},
                ]
            ),
            "tools[1].type",
        ),
        (_body(tools=[{"name": "f"}]), "tools[0].input_schema"),
        (_body(tools=[{"input_schema": {"type": "object"}}]), "tools[0].name"),
        (_body(tool_choice={"type": "required"}), "tool_choice.type"),
        (_body(tool_choice={"type": "tool"}), "tool_choice.name"),
        (_body(tool_choice="auto"), "tool_choice"),
        (
            _body(tool_choice={"type": "auto", "disable_parallel_tool_use": "yes"}),
            "tool_choice.disable_parallel_tool_use",
        ),
        (_body(max_tokens="10"), "max_tokens"),
        (_body(max_tokens=True), "max_tokens"),
        (_body(temperature="hot"), "temperature"),
        (_body(top_p=[1]), "top_p"),
        (_body(top_k=1.5), "top_k"),
        (_body(stop_sequences="END"), "stop_sequences"),
        (_body(stop_sequences=["END", 3]), "stop_sequences"),
        (_body(metadata="u"), "metadata"),
        (_body(metadata={"user_id": 42}), "metadata.user_id"),
        (_body(stream="yes"), "stream"),
    ],
)
def test_decode_request_errors_name_their_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as info:
        decode_request(body)
    assert info.value.param == param
    assert str(info.value)


# ---- encode_request ------------------------------------------------------------------------------------


def _req(*messages: Message, **fields: Any) -> Request:
    return Request(model="client-model", messages=list(messages), **fields)


def test_encode_merges_roles_and_puts_tool_results_first() -> None:
    req = _req(
        Message("user", [Text("Weather in Paris and Tokyo?")]),
        Message("assistant", [Text("Checking.")]),
        Message("assistant", [ToolCall("call_1", "get_weather", '{"location":"Paris"}')]),
        Message("assistant", [ToolCall("call_2", "get_weather", '{"location":"Tokyo"}')]),
        # An OpenAI client sends one tool message per result, with the user's words possibly between them.
        Message("user", [ToolResult("call_1", [Text("18C")])]),
        Message("user", [Text("Also: umbrella?")]),
        Message("user", [ToolResult("call_2", [Text("25C")])]),
    )
    body = encode_request(req, upstream_model="claude-sonnet-4-20250514")
    assert body["model"] == "claude-sonnet-4-20250514"
    assert [m["role"] for m in body["messages"]] == ["user", "assistant", "user"]
    assert body["messages"][1]["content"] == [
        {"type": "text", "text": "Checking."},
        {"type": "tool_use", "id": "call_1", "name": "get_weather", "input": {"location": "Paris"}},
        {"type": "tool_use", "id": "call_2", "name": "get_weather", "input": {"location": "Tokyo"}},
    ]
    assert body["messages"][2]["content"] == [
        {"type": "tool_result", "tool_use_id": "call_1", "content": "18C"},
        {"type": "tool_result", "tool_use_id": "call_2", "content": "25C"},
        {"type": "text", "text": "Also: umbrella?"},
    ]


def test_encode_maps_tool_ids_anthropic_would_reject() -> None:
    req = _req(
        Message("user", [Text("Hi")]),
        Message("assistant", [ToolCall("functions.get_weather:0", "get_weather", "{}")]),
        Message("user", [ToolResult("functions.get_weather:0", [Text("sunny")])]),
    )
    _, assistant, results = encode_request(req, upstream_model="m")["messages"]
    assert assistant["content"][0]["id"] == "functions_get_weather_0"
    assert results["content"][0]["tool_use_id"] == "functions_get_weather_0"


def test_encode_drops_empty_blocks_and_messages() -> None:
    req = _req(
        Message("user", [Text("Hi")]),
        Message("assistant", [Text(""), Thinking("unsigned reasoning from another provider")]),
        Message("user", [Text(""), Text("Still there?")]),
    )
    body = encode_request(req, upstream_model="m")
    # The empty assistant turn is gone, and the two user turns around it become one message.
    assert body["messages"] == [
        {
            "role": "user",
            "content": [{"type": "text", "text": "Hi"}, {"type": "text", "text": "Still there?"}],
        }
    ]


def test_encode_cache_control_on_every_block_type() -> None:
    cc = EPHEMERAL
    req = _req(
        Message(
            "user",
            [Text("doc", cache_control=cc), Image(url="https://example.com/a.png", cache_control=cc)],
        ),
        Message("assistant", [ToolCall("toolu_1", "f", '{"a":1}', cache_control=cc)]),
        Message(
            "user",
            [ToolResult("toolu_1", [Text("r", cache_control=cc)], cache_control=cc)],
        ),
        system=[Text("sys", cache_control=cc)],
        tools=[Tool("f", {"type": "object", "properties": {}}, "does f", cache_control=cc)],
    )
    body = encode_request(req, upstream_model="m")
    assert body["system"] == [{"type": "text", "text": "sys", "cache_control": cc}]
    assert body["tools"] == [
        {
            "name": "f",
            "description": "does f",
            "input_schema": {"type": "object", "properties": {}},
            "cache_control": cc,
        }
    ]
    user, assistant, results = body["messages"]
    assert user["content"] == [
        {"type": "text", "text": "doc", "cache_control": cc},
        {"type": "image", "source": {"type": "url", "url": "https://example.com/a.png"}, "cache_control": cc},
    ]
    assert assistant["content"][0]["cache_control"] == cc
    # A text with cache_control inside a tool_result keeps its block form (a plain string cannot carry it).
    assert results["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": [{"type": "text", "text": "r", "cache_control": cc}],
            "cache_control": cc,
        }
    ]


def test_encode_system_forms() -> None:
    msg = Message("user", [Text("Hi")])
    assert encode_request(_req(msg, system=[Text("Be brief.")]), upstream_model="m")["system"] == "Be brief."
    assert "system" not in encode_request(_req(msg), upstream_model="m")
    assert "system" not in encode_request(_req(msg, system=[Text("")]), upstream_model="m")
    assert encode_request(_req(msg, system=[Text("a"), Text("b")]), upstream_model="m")["system"] == [
        {"type": "text", "text": "a"},
        {"type": "text", "text": "b"},
    ]


def test_encode_images_tool_results_and_thinking() -> None:
    req = _req(
        Message(
            "user",
            [
                Image(url=f"data:image/png;base64,{PNG}", detail="high"),
                Image(media_type="image/jpeg", data="/9j/4AAQ"),
            ],
        ),
        Message(
            "assistant",
            [
                Thinking("Let me think.", "sig-abc"),
                Thinking("", REDACTED_PREFIX + "opaque=="),
                ToolCall("toolu_1", "noargs", ""),
            ],
        ),
        Message(
            "user",
            [
                ToolResult(
                    "toolu_1", [Text("partial"), Image(url="https://example.com/x.png")], is_error=True
                ),
            ],
        ),
    )
    user, assistant, results = encode_request(req, upstream_model="m")["messages"]
    assert user["content"] == [
        {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        {"type": "image", "source": {"type": "base64", "media_type": "image/jpeg", "data": "/9j/4AAQ"}},
    ]
    assert assistant["content"] == [
        {"type": "thinking", "thinking": "Let me think.", "signature": "sig-abc"},
        {"type": "redacted_thinking", "data": "opaque=="},
        {"type": "tool_use", "id": "toolu_1", "name": "noargs", "input": {}},
    ]
    assert results["content"] == [
        {
            "type": "tool_result",
            "tool_use_id": "toolu_1",
            "content": [
                {"type": "text", "text": "partial"},
                {"type": "image", "source": {"type": "url", "url": "https://example.com/x.png"}},
            ],
            "is_error": True,
        }
    ]


def test_encode_max_tokens_sampling_and_misc() -> None:
    msg = Message("user", [Text("Hi")])
    assert encode_request(_req(msg), upstream_model="m")["max_tokens"] == 4096
    assert encode_request(_req(msg), upstream_model="m", default_max_tokens=8192)["max_tokens"] == 8192
    assert encode_request(_req(msg, max_tokens=100), upstream_model="m")["max_tokens"] == 100

    for given, sent in [(1.7, 1.0), (2.0, 1.0), (-0.5, 0.0), (0.3, 0.3), (0.0, 0.0)]:
        assert encode_request(_req(msg, temperature=given), upstream_model="m")["temperature"] == sent

    body = encode_request(
        _req(
            msg,
            top_p=0.8,
            top_k=5,
            stop=["END", "", "  STOP  "],
            user="user-7",
            response_format=ResponseFormat("text"),
            stream=True,
        ),
        upstream_model="m",
    )
    assert body["top_p"] == 0.8 and body["top_k"] == 5
    # Anthropic rejects empty stop sequences, and whitespace-only ones (below).
    assert body["stop_sequences"] == ["END", "  STOP  "]
    assert body["metadata"] == {"user_id": "user-7"}
    assert body["stream"] is True
    assert "response_format" not in body and "output_config" not in body

    plain = encode_request(_req(msg), upstream_model="m")
    assert set(plain) == {"model", "max_tokens", "messages"}
    # Without the whitespace-only sequence the client asking for one line would get several: refused.
    with pytest.raises(TranslationError) as info:
        encode_request(_req(msg, stop=["END", "\n"]), upstream_model="m")
    assert info.value.param == "stop"
    # Claude answers in JSON only to a schema: JSON mode without one is refused, naming the client's field.
    with pytest.raises(TranslationError) as info:
        encode_request(_req(msg, response_format=ResponseFormat("json_object")), upstream_model="m")
    assert info.value.param == "response_format"


TOOLS = [Tool("get_weather", {"type": "object", "properties": {"location": {"type": "string"}}})]


@pytest.mark.parametrize(
    ("choice", "parallel", "expected"),
    [
        (None, None, None),
        (None, True, None),
        (None, False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("auto"), None, {"type": "auto"}),
        (ToolChoice("required"), None, {"type": "any"}),
        (ToolChoice("none"), None, {"type": "none"}),
        (ToolChoice("tool", "get_weather"), None, {"type": "tool", "name": "get_weather"}),
        (ToolChoice("auto"), False, {"type": "auto", "disable_parallel_tool_use": True}),
        (ToolChoice("required"), False, {"type": "any", "disable_parallel_tool_use": True}),
        (
            ToolChoice("tool", "get_weather"),
            False,
            {"type": "tool", "name": "get_weather", "disable_parallel_tool_use": True},
        ),
        (ToolChoice("none"), False, {"type": "none"}),
    ],
)
def test_encode_tool_choice(
    choice: ToolChoice | None, parallel: bool | None, expected: dict[str, Any] | None
) -> None:
    req = _req(Message("user", [Text("Hi")]), tools=TOOLS, tool_choice=choice, parallel_tool_calls=parallel)
    body = encode_request(req, upstream_model="m")
    assert body.get("tool_choice") == expected


def test_encode_tools_without_schema_type_and_without_tools() -> None:
    req = _req(
        Message("user", [Text("Hi")]),
        tools=[Tool("ping", {}), Tool("echo", {"properties": {"x": {"type": "string"}}})],
        tool_choice=ToolChoice("auto"),
    )
    tools = encode_request(req, upstream_model="m")["tools"]
    assert tools[0]["input_schema"] == {"type": "object", "properties": {}}
    assert tools[1]["input_schema"] == {"type": "object", "properties": {"x": {"type": "string"}}}
    # Anthropic refuses a tool_choice without tools.
    no_tools = encode_request(
        _req(Message("user", [Text("Hi")]), tool_choice=ToolChoice("none")), upstream_model="m"
    )
    assert "tool_choice" not in no_tools and "tools" not in no_tools


@pytest.mark.parametrize("arguments", ['["Paris"]', '"Paris"', "42", "null", '{"location": "Par'])
def test_encode_rejects_arguments_that_are_not_an_object(arguments: str) -> None:
    req = _req(
        Message("user", [Text("Hi")]),
        Message("assistant", [Text("ok"), ToolCall("call_1", "get_weather", arguments)]),
    )
    with pytest.raises(TranslationError, match="get_weather") as info:
        encode_request(req, upstream_model="m")
    assert info.value.param == "messages[1].content[1].arguments"


def test_encode_rejects_images_anthropic_cannot_take() -> None:
    for img in [Image(data=PNG), Image(url="data:image/png,rawbytes"), Image()]:
        with pytest.raises(TranslationError) as info:
            encode_request(_req(Message("user", [img])), upstream_model="m")
        assert info.value.param is not None and info.value.param.startswith("messages[0].content[0]")


def test_anthropic_body_survives_decode_then_encode() -> None:
    body = copy.deepcopy(RICH_BODY)
    again = encode_request(decode_request(body), upstream_model=body["model"])
    expected = copy.deepcopy(RICH_BODY)
    # tool_result's one-text content comes back as the equivalent short string form; all else is identical.
    assert again["messages"][2]["content"][0]["content"] == "18°C, cloudy"
    assert again == expected


# ---- decode_response -----------------------------------------------------------------------------------


def test_decode_response_text_with_cache_usage() -> None:
    resp = decode_response(fixture_json("message_text.json"))
    assert resp.id == "msg_01EHkuKvArNdV7jqJ7sQzdWS"
    assert resp.model == "claude-sonnet-4-20250514"
    assert len(resp.content) == 1 and isinstance(resp.content[0], Text)
    assert resp.content[0].text.startswith("A gateway sits between your application")
    assert resp.stop_reason == "stop" and resp.stop_sequence is None
    # Anthropic's 24 uncached + 1536 read from cache + 2048 written to it.
    assert resp.usage == Usage(
        input_tokens=24 + 1536 + 2048,
        output_tokens=58,
        cached_input_tokens=1536,
        cache_creation_input_tokens=2048,
    )
    assert resp.usage.total_tokens == 3608 + 58


def test_decode_response_tool_use() -> None:
    resp = decode_response(fixture_json("message_tool_use.json"))
    text, call = resp.content
    assert text == Text("I'll look up the current weather in San Francisco for you.")
    assert call == ToolCall(
        "toolu_01EnnNtkiwRfHRYspD3bvtDj",
        "get_weather",
        '{"location":"San Francisco, CA","unit":"fahrenheit"}',
    )
    assert resp.stop_reason == "tool_calls"
    assert resp.usage == Usage(input_tokens=412, output_tokens=83)


@pytest.mark.parametrize(
    ("anthropic_reason", "reason"),
    [
        ("end_turn", "stop"),
        ("max_tokens", "length"),
        ("tool_use", "tool_calls"),
        ("stop_sequence", "stop_sequence"),
        ("refusal", "content_filter"),
        ("pause_turn", "stop"),
        ("model_context_window_exceeded", "length"),
    ],
)
def test_decode_response_stop_reasons(anthropic_reason: str, reason: str) -> None:
    body = fixture_json("message_text.json")
    body["stop_reason"] = anthropic_reason
    if anthropic_reason == "stop_sequence":
        body["stop_sequence"] = "###"
    resp = decode_response(body)
    assert resp.stop_reason == reason
    assert resp.stop_sequence == ("###" if anthropic_reason == "stop_sequence" else None)


def test_decode_response_thinking() -> None:
    body = fixture_json("message_text.json")
    body["content"] = [
        {"type": "thinking", "thinking": "Reasoning.", "signature": "sig=="},
        {"type": "redacted_thinking", "data": "opaque=="},
        *body["content"],
    ]
    body["usage"]["output_tokens_details"] = {"thinking_tokens": 40}
    resp = decode_response(body)
    assert resp.content[:2] == [Thinking("Reasoning.", "sig=="), Thinking("", REDACTED_PREFIX + "opaque==")]
    assert resp.usage.reasoning_tokens == 40
    # …and the client gets both blocks back exactly.
    assert encode_response(resp, model="m")["content"][:2] == body["content"][:2]


# ---- encode_response -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["message_text.json", "message_tool_use.json"])
def test_encode_response_round_trips_fixture(name: str) -> None:
    original = fixture_json(name)
    body = encode_response(decode_response(original), model=original["model"])
    message = SDKMessage.model_validate(body)
    assert message.id == original["id"]
    assert message.stop_reason == original["stop_reason"]
    assert [b.model_dump(exclude_none=True) for b in message.content] == original["content"]
    for key in ("input_tokens", "output_tokens", "cache_creation_input_tokens", "cache_read_input_tokens"):
        assert getattr(message.usage, key) == original["usage"][key], key


def test_encode_response_from_another_provider() -> None:
    resp = Response(
        id="chatcmpl-abc123",
        model="gpt-4o",
        content=[
            Thinking("Reasoning without a signature."),
            Text("Calling two tools."),
            ToolCall("call_1", "get_weather", '{"location":"Paris","unit":"c"}'),
            ToolCall("call_2", "truncated", '{"location":"To'),
        ],
        stop_reason="tool_calls",
        usage=Usage(input_tokens=1300, output_tokens=40, cached_input_tokens=1024, reasoning_tokens=12),
    )
    body = encode_response(resp, model="claude-alias")
    message = SDKMessage.model_validate(body)
    assert message.id == "msg_chatcmpl-abc123"
    assert message.model == "claude-alias"
    assert message.stop_reason == "tool_use"
    thinking, text, call, broken = message.content
    assert thinking.type == "thinking" and thinking.signature == ""
    assert text.type == "text" and text.text == "Calling two tools."
    assert call.type == "tool_use" and call.input == {"location": "Paris", "unit": "c"}
    assert list(call.input) == ["location", "unit"]
    # A model's truncated arguments must not fail a reply the client already paid for.
    assert broken.type == "tool_use" and broken.input == {}
    assert message.usage.input_tokens == 1300 - 1024
    assert message.usage.cache_read_input_tokens == 1024
    assert message.usage.cache_creation_input_tokens == 0
    assert message.usage.output_tokens == 40
    assert message.usage.output_tokens_details is not None
    assert message.usage.output_tokens_details.thinking_tokens == 12
    # Round trip back to canonical keeps the counts exactly.
    assert decode_response(body).usage == resp.usage


@pytest.mark.parametrize(
    ("reason", "anthropic_reason"),
    [
        ("stop", "end_turn"),
        ("length", "max_tokens"),
        ("tool_calls", "tool_use"),
        ("stop_sequence", "stop_sequence"),
        ("content_filter", "refusal"),
        ("error", "end_turn"),
        (None, "end_turn"),
    ],
)
def test_encode_response_stop_reasons(reason: Any, anthropic_reason: str) -> None:
    resp = Response("msg_1", "m", [Text("x")], reason, Usage(), stop_sequence="###" if reason else None)
    body = encode_response(resp, model="m")
    assert SDKMessage.model_validate(body).stop_reason == anthropic_reason


def test_encode_response_is_what_the_sdk_client_returns() -> None:
    resp = decode_response(fixture_json("message_tool_use.json"))
    raw = json.dumps(encode_response(resp, model="claude-alias")).encode()
    with sdk_client(raw, "application/json") as client:
        message = client.messages.create(
            model="claude-alias", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
        )
    assert message.content[1].type == "tool_use"
    assert message.content[1].input == {"location": "San Francisco, CA", "unit": "fahrenheit"}


# ---- StreamDecoder -------------------------------------------------------------------------------------


def _fixture_deltas(name: str, key: str) -> dict[int, str]:
    """Per block index, the concatenation of the fixture's `delta[key]` fragments."""
    out: dict[int, str] = {}
    for _, data in fixture_events(name):
        payload = json.loads(data)
        if payload["type"] == "content_block_delta" and key in payload["delta"]:
            out[payload["index"]] = out.get(payload["index"], "") + payload["delta"][key]
    return out


def test_stream_decoder_text() -> None:
    events = decode_stream("message_text.sse")
    assert_well_formed(events)
    assert [type(e) for e in events] == [
        StreamStart,
        TextStart,
        *[TextDelta] * 8,
        BlockStop,
        StreamFinish,
        StreamUsage,
        StreamEnd,
    ]
    start = events[0]
    assert isinstance(start, StreamStart)
    assert (start.id, start.model) == ("msg_01W3USbMsEnqUmgEakJyA3eR", "claude-sonnet-4-20250514")
    assert start.usage == Usage(input_tokens=21 + 1536, output_tokens=1, cached_input_tokens=1536)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == _fixture_deltas("message_text.sse", "text")[0]
    assert text == "Hello! I'm Claude, an AI assistant made by Anthropic. How can I help today?"
    assert events[-3] == StreamFinish("stop", None)
    assert events[-2] == StreamUsage(Usage(input_tokens=1557, output_tokens=19, cached_input_tokens=1536))


def test_stream_decoder_parallel_tool_use() -> None:
    decoder = StreamDecoder()
    events: list[StreamEvent] = []
    for event, data in fixture_events("message_tool_use.sse"):
        events += decoder.feed(event, data)
    assert_well_formed(events)
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert starts == [
        ToolCallStart(1, "toolu_01eGHmAFVTWLdM79CPsXmhzN", "get_weather"),
        ToolCallStart(2, "toolu_01Ey9f3DTYo9TUZyjDnvYAg3", "get_weather"),
    ]
    deltas = [e for e in events if isinstance(e, ToolCallDelta)]
    assert all(d.arguments for d in deltas), "empty partial_json fragments are skipped"
    expected = _fixture_deltas("message_tool_use.sse", "partial_json")
    for index in (1, 2):
        args = "".join(d.arguments for d in deltas if d.index == index)
        assert args == expected[index]
    assert json.loads(expected[1]) == {"location": "Paris, France", "unit": "celsius"}
    assert json.loads(expected[2]) == {"location": "Tokyo, Japan", "unit": "celsius"}
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "I'll check the weather in both cities at the same time."
    assert events[-3] == StreamFinish("tool_calls")
    # message_delta carried only output_tokens: input counts come from message_start.
    assert decoder.usage == Usage(input_tokens=486, output_tokens=134)
    assert events[-2] == StreamUsage(decoder.usage)


def test_stream_decoder_error() -> None:
    events = decode_stream("stream_error.sse")
    assert_well_formed(events)
    assert events[-1] == StreamError("overloaded_error", "Overloaded")
    assert not any(isinstance(e, StreamEnd | StreamFinish | BlockStop) for e in events)
    text = "".join(e.text for e in events if isinstance(e, TextDelta))
    assert text == "Here is the first part of a long answer that"


def test_stream_decoder_merges_usage_and_handles_thinking() -> None:
    decoder = StreamDecoder()

    def feed(payload: dict[str, Any]) -> list[StreamEvent]:
        return decoder.feed(payload["type"], json.dumps(payload))

    start = feed(
        {
            "type": "message_start",
            "message": {
                "id": "msg_1",
                "type": "message",
                "role": "assistant",
                "model": "claude",
                "content": [],
                "stop_reason": None,
                "stop_sequence": None,
                "usage": {"input_tokens": 10, "cache_creation_input_tokens": 100, "output_tokens": 1},
            },
        }
    )
    assert start == [StreamStart("msg_1", "claude", Usage(110, 1, 0, 100))]
    assert decoder.feed("ping", '{"type": "ping"}') == []
    events = feed(
        {
            "type": "content_block_start",
            "index": 0,
            "content_block": {"type": "thinking", "thinking": "", "signature": ""},
        }
    )
    events += feed(
        {"type": "content_block_delta", "index": 0, "delta": {"type": "thinking_delta", "thinking": "Hmm."}}
    )
    events += feed(
        {
            "type": "content_block_delta",
            "index": 0,
            "delta": {"type": "signature_delta", "signature": "sig=="},
        }
    )
    events += feed({"type": "content_block_stop", "index": 0})
    events += feed(
        {
            "type": "content_block_start",
            "index": 1,
            "content_block": {"type": "redacted_thinking", "data": "xyz"},
        }
    )
    events += feed({"type": "content_block_stop", "index": 1})
    # A server tool block has no canonical form: it is skipped with its deltas.
    events += feed(
        {
            "type": "content_block_start",
            "index": 2,
            "content_block": {
                "type": "server_tool_use",
                "id": "srvtoolu_1",
                "name": "web_search",
                "input": {},
            },
        }
    )
    events += feed(
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "input_json_delta", "partial_json": "{}"},
        }
    )
    events += feed({"type": "content_block_stop", "index": 2})
    assert events == [
        ThinkingStart(0),
        ThinkingDelta(0, "Hmm."),
        ThinkingDelta(0, signature="sig=="),
        BlockStop(0),
        ThinkingStart(1),
        ThinkingDelta(1, signature=REDACTED_PREFIX + "xyz"),
        BlockStop(1),
    ]
    # The current API repeats the input and cache counts in message_delta; they replace the earlier ones.
    tail = feed(
        {
            "type": "message_delta",
            "delta": {"stop_reason": "stop_sequence", "stop_sequence": "###"},
            "usage": {
                "input_tokens": 12,
                "cache_creation_input_tokens": 100,
                "cache_read_input_tokens": 5,
                "output_tokens": 30,
                "output_tokens_details": {"thinking_tokens": 20},
            },
        }
    )
    assert tail == [
        StreamFinish("stop_sequence", "###"),
        StreamUsage(
            Usage(
                input_tokens=117,
                output_tokens=30,
                cached_input_tokens=5,
                cache_creation_input_tokens=100,
                reasoning_tokens=20,
            )
        ),
    ]
    assert not decoder.done
    assert feed({"type": "message_stop"}) == [StreamEnd()]
    assert decoder.done


def test_stream_decoder_malformed_event() -> None:
    decoder = StreamDecoder()
    events = decoder.feed("content_block_delta", '{"type": "content_block_del')
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert decoder.done


# ---- StreamEncoder -------------------------------------------------------------------------------------


def _comparable(message: SDKMessage) -> dict[str, Any]:
    usage = message.usage
    return {
        "content": [b.model_dump(exclude_none=True) for b in message.content],
        "stop_reason": message.stop_reason,
        "stop_sequence": message.stop_sequence,
        "usage": (
            usage.input_tokens,
            usage.output_tokens,
            usage.cache_creation_input_tokens or 0,
            usage.cache_read_input_tokens or 0,
        ),
    }


@pytest.mark.parametrize("name", ["message_text.sse", "message_tool_use.sse"])
def test_stream_encoder_round_trips_fixture(name: str) -> None:
    raw_fixture = (FIXTURES / name).read_bytes()
    expected = accumulate(raw_fixture)  # what the SDK makes of the real Anthropic stream

    raw = encode_stream(decode_stream(name))
    assert_anthropic_stream_shape(raw)
    got = accumulate(raw)
    assert _comparable(got) == _comparable(expected)
    assert got.id == expected.id
    assert got.model == expected.model  # the model the upstream named, over the encoder's own
    # And through the SDK's public streaming API end to end.
    assert _comparable(sdk_stream_final(raw)) == _comparable(expected)


def test_stream_encoder_text_fixture_usage_keeps_cache_counts() -> None:
    got = accumulate(encode_stream(decode_stream("message_text.sse")))
    assert got.content[0].type == "text"
    assert (
        got.content[0].text == "Hello! I'm Claude, an AI assistant made by Anthropic. How can I help today?"
    )
    assert (got.usage.input_tokens, got.usage.cache_read_input_tokens, got.usage.output_tokens) == (
        21,
        1536,
        19,
    )


def openai_like_events() -> list[StreamEvent]:
    """What an OpenAI chat decoder produces: no usage up front, usage only after the finish."""
    return [
        StreamStart("chatcmpl-9x", "gpt-4o-mini"),
        TextStart(0),
        TextDelta(0, "Checking "),
        TextDelta(0, "both."),
        BlockStop(0),
        ToolCallStart(1, "call_A", "get_weather"),
        ToolCallDelta(1, '{"location":'),
        ToolCallDelta(1, ' "Paris"}'),
        BlockStop(1),
        ToolCallStart(2, "call_B", "get_weather"),
        ToolCallDelta(2, '{"location": "Tok'),
        ToolCallDelta(2, 'yo", "unit": "c"}'),
        BlockStop(2),
        StreamFinish("tool_calls"),
        StreamUsage(Usage(input_tokens=1300, output_tokens=40, cached_input_tokens=1024)),
        StreamEnd(),
    ]


def test_stream_encoder_names_its_own_model_when_the_upstream_names_none() -> None:
    events = [StreamStart("chatcmpl-9x", ""), *openai_like_events()[1:]]
    assert accumulate(encode_stream(events, model="claude-alias")).model == "claude-alias"


def test_stream_encoder_from_openai_like_source() -> None:
    raw = encode_stream(openai_like_events(), model="claude-alias")
    payloads = assert_anthropic_stream_shape(raw)
    assert payloads[0]["message"]["usage"] == {
        "input_tokens": 0,
        "output_tokens": 1,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 0,
    }
    assert payloads[-2]["usage"] == {
        "input_tokens": 276,
        "output_tokens": 40,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": 1024,
    }
    for final in (accumulate(raw), sdk_stream_final(raw)):
        assert final.id == "msg_chatcmpl-9x"
        assert final.model == "gpt-4o-mini"  # what the upstream named
        assert final.stop_reason == "tool_use"
        text, call_a, call_b = final.content
        assert text.type == "text" and text.text == "Checking both."
        assert call_a.type == "tool_use" and (call_a.id, call_a.name) == ("call_A", "get_weather")
        assert call_a.input == {"location": "Paris"}
        assert call_b.type == "tool_use" and call_b.input == {"location": "Tokyo", "unit": "c"}
        assert final.usage.input_tokens == 276
        assert final.usage.cache_read_input_tokens == 1024
        assert final.usage.cache_creation_input_tokens == 0
        assert final.usage.output_tokens == 40
    # Converting back gives the canonical usage it started from.
    decoder = StreamDecoder()
    for name, data in sse_events(raw):
        decoder.feed(name, data)
    assert decoder.usage == Usage(input_tokens=1300, output_tokens=40, cached_input_tokens=1024)


def test_stream_encoder_renumbers_and_closes_blocks() -> None:
    # Canonical indices with gaps (a source that skipped a block), a missing BlockStop, and a block still
    # open at the end.
    events: list[StreamEvent] = [
        StreamStart("x", "m", Usage(input_tokens=50, output_tokens=1, cached_input_tokens=20)),
        TextStart(1),
        TextDelta(1, "a"),
        ToolCallStart(3, "call_1", "f"),
        ToolCallDelta(3, "{}"),
        BlockStop(3),
        BlockStop(3),  # duplicate: ignored
        TextStart(7),
        TextDelta(7, "b"),
        StreamFinish("stop"),
        StreamEnd(),
    ]
    raw = encode_stream(events, id="msg_fixed")
    payloads = assert_anthropic_stream_shape(raw)
    assert [p["index"] for p in payloads if p["type"] == "content_block_start"] == [0, 1, 2]
    final = accumulate(raw)
    assert final.id == "msg_fixed"
    assert [b.type for b in final.content] == ["text", "tool_use", "text"]
    # No StreamUsage: message_start's counts stand.
    assert (final.usage.input_tokens, final.usage.cache_read_input_tokens) == (30, 20)


def test_stream_encoder_end_without_start() -> None:
    raw = encode_stream([StreamFinish("length"), StreamEnd()])
    payloads = assert_anthropic_stream_shape(raw)
    assert [p["type"] for p in payloads] == ["message_start", "message_delta", "message_stop"]
    final = accumulate(raw)
    assert final.id.startswith("msg_") and final.content == [] and final.stop_reason == "max_tokens"


def test_stream_encoder_thinking() -> None:
    events: list[StreamEvent] = [
        StreamStart("msg_t", "m"),
        ThinkingStart(0),
        ThinkingDelta(0, "Step one. "),
        ThinkingDelta(0, "Step two."),
        ThinkingDelta(0, signature="sig=="),
        BlockStop(0),
        ThinkingStart(1),
        ThinkingDelta(1, signature=REDACTED_PREFIX + "opaque=="),
        BlockStop(1),
        ThinkingStart(2),  # reasoning from a provider without signatures
        ThinkingDelta(2, "Unsigned."),
        BlockStop(2),
        TextStart(3),
        TextDelta(3, "Done."),
        BlockStop(3),
        StreamFinish("stop"),
        StreamUsage(Usage(input_tokens=10, output_tokens=30, reasoning_tokens=20)),
        StreamEnd(),
    ]
    raw = encode_stream(events)
    assert_anthropic_stream_shape(raw)
    final = sdk_stream_final(raw)
    assert [b.model_dump(exclude_none=True) for b in final.content] == [
        {"type": "thinking", "thinking": "Step one. Step two.", "signature": "sig=="},
        {"type": "redacted_thinking", "data": "opaque=="},
        {"type": "thinking", "thinking": "Unsigned.", "signature": ""},
        {"type": "text", "text": "Done."},
    ]
    assert final.usage.output_tokens_details is not None
    assert final.usage.output_tokens_details.thinking_tokens == 20
    # Decoding our own stream gives the canonical events back.
    decoder = StreamDecoder()
    back: list[StreamEvent] = []
    for name, data in sse_events(raw):
        back += decoder.feed(name, data)
    assert [e for e in back if not isinstance(e, StreamStart)] == [
        e for e in events if not isinstance(e, StreamStart)
    ]


def test_stream_encoder_error() -> None:
    encoder = StreamEncoder(model="m")
    events = decode_stream("stream_error.sse")
    raw = b"".join(encoder.encode(ev) for ev in events)
    parsed = sse_events(raw)
    # The open text block is not closed: the error event is the last thing, as Anthropic sends it.
    assert [name for name, _ in parsed][-2:] == ["content_block_delta", "error"]
    assert json.loads(parsed[-1][1]) == {
        "type": "error",
        "error": {"type": "overloaded_error", "message": "Overloaded"},
    }
    assert encoder.done
    assert encoder.encode(StreamEnd()) == b""
    assert encoder.encode(TextDelta(0, "late")) == b""

    with (
        sdk_client(raw) as client,
        pytest.raises(anthropic.APIStatusError, match="Overloaded"),
        client.messages.create(
            model="m", max_tokens=64, messages=[{"role": "user", "content": "hi"}], stream=True
        ) as stream,
    ):
        for _ in stream:
            pass


def test_stream_encoder_ping_and_framing() -> None:
    encoder = StreamEncoder(model="m")
    ping = encoder.ping()
    assert sse_events(ping) == [("ping", '{"type":"ping"}')]
    raw = (
        encoder.encode(StreamStart("msg_1", "m"))
        + ping
        + encoder.encode(TextDelta(0, 'quote " and\nnewline'))
    )
    raw += encoder.encode(StreamEnd())
    for chunk in raw.split(b"\n\n")[:-1]:
        name_line, data_line = chunk.split(b"\n")
        assert name_line.startswith(b"event: ") and data_line.startswith(b"data: ")
        assert json.loads(data_line[6:])["type"] == name_line[7:].decode()
    assert accumulate(raw).content[0].model_dump(exclude_none=True) == {
        "type": "text",
        "text": 'quote " and\nnewline',
    }


@pytest.mark.parametrize("split", [1, 7, 64])
def test_encoder_output_parses_at_any_split(split: int) -> None:
    raw = encode_stream(openai_like_events())
    parser = SSEParser()
    names: list[str | None] = []
    for i in range(0, len(raw), split):
        names += [e.event for e in parser.feed(raw[i : i + split])]
    assert names == [name for name, _ in sse_events(raw)]
