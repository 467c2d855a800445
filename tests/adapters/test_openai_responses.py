"""The OpenAI Responses translator, checked against the recorded wire format and the official SDK.

Requests are decoded into canonical form and compared field by field. Responses and streams are encoded
from canonical values and then read the way a client reads them: validated with the SDK's pydantic models,
compared with the recorded OpenAI transcripts (ids and timestamps aside), and consumed through
`client.responses.create` and `client.responses.stream` over a mock transport, so the SDK's own accumulator
rebuilds the final response.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import httpx2
import openai
import pydantic
import pytest
from openai._types import omit
from openai.lib.streaming.responses._responses import ResponseStreamState
from openai.types.responses import Response as SDKResponse
from openai.types.responses import ResponseStreamEvent

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
from adapters.openai_responses import StreamEncoder, decode_request, encode_response
from adapters.sse import SSEParser

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures" / "openai"
STREAM_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
MODEL = "claude-sonnet-4-5"

WEATHER_TOOL: dict[str, Any] = {
    "type": "function",
    "name": "get_weather",
    "description": "Get the current weather for a location.",
    "parameters": {
        "type": "object",
        "properties": {"location": {"type": "string"}},
        "required": ["location"],
        "additionalProperties": False,
    },
    "strict": True,
}

PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="


# --------------------------------------------------------------------------- helpers


def sse_events(raw: bytes) -> list[dict[str, Any]]:
    """Parse an SSE body and check the framing rules every Responses stream follows."""
    events = SSEParser().feed(raw)
    assert b"".join(e.raw for e in events) == raw, "bytes outside complete events"
    out = []
    for i, event in enumerate(events):
        data = json.loads(event.data)
        assert event.event == data["type"]
        assert data["sequence_number"] == i
        out.append(data)
    return out


def encode_stream(
    events: Sequence[StreamEvent], request: dict[str, Any] | None = None, model: str = MODEL
) -> tuple[bytes, list[dict[str, Any]]]:
    """Encode canonical events; every resulting event must validate as an SDK stream event."""
    encoder = StreamEncoder(model=model, request=request or {})
    raw = b"".join(encoder.encode(e) for e in events)
    assert encoder.encode(StreamEnd()) == b"", "the encoder must stay silent after the end"
    parsed = sse_events(raw)
    for data in parsed:
        STREAM_EVENTS.validate_python(data)
    return raw, parsed


def accumulate(parsed: list[dict[str, Any]]) -> Any:
    """Feed validated events to the SDK's stream state; return its completed response (or None)."""
    state: ResponseStreamState[Any] = ResponseStreamState(input_tools=omit, text_format=omit)
    for data in parsed:
        state.handle_event(STREAM_EVENTS.validate_python(data))
    return state._completed_response


def sdk_client(body: bytes, content_type: str) -> openai.OpenAI:
    """A real SDK client whose every request gets `body` back, validated strictly."""

    def handler(request: httpx2.Request) -> httpx2.Response:
        return httpx2.Response(200, content=body, headers={"content-type": content_type})

    return openai.OpenAI(
        api_key="test",
        base_url="http://gateway.test/v1",
        http_client=httpx2.Client(transport=httpx2.MockTransport(handler)),
        max_retries=0,
        _strict_response_validation=True,
    )


def types(parsed: list[dict[str, Any]]) -> list[str]:
    """Event types with runs of the same delta type collapsed, to compare shapes independent of chunking."""
    out: list[str] = []
    for data in parsed:
        if not (out and data["type"] == out[-1] and data["type"].endswith(".delta")):
            out.append(data["type"])
    return out


def normalize(obj: Any) -> Any:
    """Blank out what legitimately differs from a recording: ids, timestamps, tier, storage, obfuscation."""
    if isinstance(obj, dict):
        out = {}
        for key, value in obj.items():
            if key == "obfuscation":
                continue
            if key in ("id", "item_id") and isinstance(value, str):
                value = value.split("_", 1)[0] + "_…"
            elif key in ("created_at", "completed_at") and value is not None:
                value = "<time>"
            elif key in ("service_tier", "store"):
                value = "<server>"
            else:
                value = normalize(value)
            out[key] = value
        return out
    if isinstance(obj, list):
        return [normalize(v) for v in obj]
    return obj


def fixture_events(name: str) -> list[dict[str, Any]]:
    return sse_events((FIXTURES / name).read_bytes())


# --------------------------------------------------------------------------- decode_request


def test_string_input_with_instructions_and_settings() -> None:
    req = decode_request(
        {
            "model": MODEL,
            "instructions": "Be brief.",
            "input": "Tell me a fact.",
            "max_output_tokens": 256,
            "temperature": 0,
            "top_p": 0.9,
            "stream": True,
            "metadata": {"trace": "abc"},
            "user": "u-1",
            "store": True,
            "reasoning": {"effort": "low"},
            "truncation": "disabled",
        }
    )
    assert req == Request(
        model=MODEL,
        messages=[Message(role="user", content=[Text("Tell me a fact.")])],
        system=[Text("Be brief.")],
        max_tokens=256,
        temperature=0.0,
        top_p=0.9,
        format_field="text.format",
        stream=True,
        metadata={"trace": "abc"},
        user="u-1",
    )


def test_message_list_with_system_developer_images_and_refusal() -> None:
    req = decode_request(
        {
            "model": MODEL,
            "instructions": "First rule.",
            "input": [
                {"role": "system", "content": "Second rule."},
                {
                    "type": "message",
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "What is in these?"},
                        {
                            "type": "input_image",
                            "image_url": f"data:image/png;base64,{PNG_B64}",
                            "detail": "low",
                        },
                        {"type": "input_image", "image_url": "https://example.com/cat.jpg", "detail": "auto"},
                    ],
                },
                {"role": "developer", "content": [{"type": "input_text", "text": "Third rule."}]},
                {
                    "type": "message",
                    "role": "assistant",
                    "id": "msg_1",
                    "status": "completed",
                    "content": [
                        {"type": "output_text", "text": "A cat.", "annotations": []},
                        {"type": "refusal", "refusal": " I won't say more."},
                    ],
                },
                {"role": "user", "content": "Thanks"},
            ],
        }
    )
    assert req.system == [Text("First rule."), Text("Second rule."), Text("Third rule.")]
    assert req.messages == [
        Message(
            role="user",
            content=[
                Text("What is in these?"),
                Image(
                    media_type="image/png", data=PNG_B64, detail="low", where="input[1].content[1].image_url"
                ),
                Image(
                    url="https://example.com/cat.jpg", detail="auto", where="input[1].content[2].image_url"
                ),
            ],
        ),
        Message(role="assistant", content=[Text("A cat."), Text(" I won't say more.")]),
        Message(role="user", content=[Text("Thanks")]),
    ]


def test_function_calls_and_outputs_are_merged_into_turns() -> None:
    req = decode_request(
        {
            "model": MODEL,
            "tools": [WEATHER_TOOL],
            "input": [
                {"role": "user", "content": "Weather in Paris and Rome?"},
                {"type": "reasoning", "id": "rs_1", "summary": []},
                {"role": "assistant", "content": "Checking both."},
                {
                    "type": "function_call",
                    "call_id": "call_1",
                    "name": "get_weather",
                    "arguments": '{"location":"Paris"}',
                },
                {
                    "type": "function_call",
                    "call_id": "call_2",
                    "name": "get_weather",
                    "arguments": '{"location": "Rome"}',
                },
                {"type": "function_call_output", "call_id": "call_1", "output": "18C"},
                {"type": "function_call_output", "call_id": "call_2", "output": "24C"},
                {"role": "user", "content": "And Oslo?"},
                {
                    "type": "function_call",
                    "call_id": "call_3",
                    "name": "get_weather",
                    "arguments": '{"location":"Oslo"}',
                },
                {"type": "function_call_output", "call_id": "call_3", "output": ""},
            ],
        }
    )
    assert req.messages == [
        Message(role="user", content=[Text("Weather in Paris and Rome?")]),
        Message(
            role="assistant",
            content=[
                Text("Checking both."),
                ToolCall(
                    id="call_1",
                    name="get_weather",
                    arguments='{"location":"Paris"}',
                    where="input[3].arguments",
                ),
                ToolCall(
                    id="call_2",
                    name="get_weather",
                    arguments='{"location": "Rome"}',
                    where="input[4].arguments",
                ),
            ],
        ),
        Message(
            role="user",
            content=[
                ToolResult(tool_call_id="call_1", content=[Text("18C")]),
                ToolResult(tool_call_id="call_2", content=[Text("24C")]),
            ],
        ),
        Message(role="user", content=[Text("And Oslo?")]),
        Message(
            role="assistant",
            content=[
                ToolCall(
                    id="call_3",
                    name="get_weather",
                    arguments='{"location":"Oslo"}',
                    where="input[8].arguments",
                )
            ],
        ),
        # An empty output is an empty result, not an empty text block (which Anthropic rejects).
        Message(role="user", content=[ToolResult(tool_call_id="call_3", content=[])]),
    ]


def test_function_call_output_with_parts() -> None:
    req = decode_request(
        {
            "model": MODEL,
            "input": [
                {"type": "function_call", "call_id": "c", "name": "screenshot", "arguments": "{}"},
                {
                    "type": "function_call_output",
                    "call_id": "c",
                    "output": [
                        {"type": "input_text", "text": "Here it is"},
                        {"type": "input_image", "image_url": "https://example.com/s.png"},
                    ],
                },
            ],
        }
    )
    assert req.messages[1] == Message(
        role="user",
        content=[
            ToolResult(
                tool_call_id="c",
                content=[
                    Text("Here it is"),
                    Image(url="https://example.com/s.png", where="input[1].output[1].image_url"),
                ],
            )
        ],
    )


def test_output_items_of_a_response_can_be_sent_back_as_input() -> None:
    """The usual client loop: append `response.output` to the input, then the function results."""
    resp = Response(
        id="msg_01",
        model=MODEL,
        content=[
            Text("Let me look."),
            ToolCall(id="toolu_1", name="get_weather", arguments='{"location":"Oslo"}'),
        ],
        stop_reason="tool_calls",
        usage=Usage(10, 5),
    )
    output = encode_response(resp, model=MODEL, request={})["output"]
    req = decode_request(
        {
            "model": MODEL,
            "input": [
                {"role": "user", "content": "Weather in Oslo?"},
                *output,
                {"type": "function_call_output", "call_id": "toolu_1", "output": "-3C"},
            ],
        }
    )
    assert req.messages[1:] == [
        Message(
            role="assistant",
            content=[
                Text("Let me look."),
                ToolCall(
                    id="toolu_1",
                    name="get_weather",
                    arguments='{"location":"Oslo"}',
                    where="input[2].arguments",
                ),
            ],
        ),
        Message(role="user", content=[ToolResult(tool_call_id="toolu_1", content=[Text("-3C")])]),
    ]


def test_tools_tool_choice_and_formats() -> None:
    schema = {"type": "object", "properties": {"a": {"type": "integer"}}, "required": ["a"]}
    req = decode_request(
        {
            "model": MODEL,
            "input": "hi",
            "tools": [WEATHER_TOOL, {"type": "function", "name": "noop"}],
            "tool_choice": {"type": "function", "name": "get_weather"},
            "parallel_tool_calls": False,
            "text": {"format": {"type": "json_schema", "name": "answer", "schema": schema, "strict": True}},
        }
    )
    assert req.tools == [
        Tool(
            name="get_weather",
            parameters=WEATHER_TOOL["parameters"],
            description="Get the current weather for a location.",
            strict=True,
        ),
        Tool(name="noop", parameters={"type": "object", "properties": {}}),
    ]
    assert req.tool_choice == ToolChoice(type="tool", name="get_weather")
    assert req.parallel_tool_calls is False
    assert req.response_format == ResponseFormat(
        type="json_schema", json_schema={"name": "answer", "schema": schema, "strict": True}
    )
    for choice in ("auto", "none", "required"):
        assert decode_request(
            {"model": MODEL, "input": "hi", "tool_choice": choice}
        ).tool_choice == ToolChoice(type=choice)
    for kind in ("text", "json_object"):
        fmt = decode_request(
            {"model": MODEL, "input": "hi", "text": {"format": {"type": kind}}}
        ).response_format
        assert fmt == ResponseFormat(type=kind)


def test_cache_control_is_preserved() -> None:
    mark = {"type": "ephemeral"}
    req = decode_request(
        {
            "model": MODEL,
            "tools": [{**WEATHER_TOOL, "cache_control": mark}],
            "input": [
                {"role": "system", "content": "Long rules.", "cache_control": mark},
                {
                    "role": "user",
                    "content": [
                        {"type": "input_text", "text": "a", "cache_control": mark},
                        {"type": "input_text", "text": "b"},
                    ],
                },
                {"role": "user", "content": "c", "cache_control": mark},
                {
                    "type": "function_call",
                    "call_id": "x",
                    "name": "get_weather",
                    "arguments": "{}",
                    "cache_control": mark,
                },
                {"type": "function_call_output", "call_id": "x", "output": "ok", "cache_control": mark},
            ],
        }
    )
    assert req.system == [Text("Long rules.", cache_control=mark)]
    assert req.tools[0].cache_control == mark
    assert req.messages == [
        Message(role="user", content=[Text("a", cache_control=mark), Text("b")]),
        Message(role="user", content=[Text("c", cache_control=mark)]),
        Message(
            role="assistant",
            content=[
                ToolCall(
                    id="x", name="get_weather", arguments="{}", cache_control=mark, where="input[3].arguments"
                )
            ],
        ),
        Message(
            role="user", content=[ToolResult(tool_call_id="x", content=[Text("ok")], cache_control=mark)]
        ),
    ]


def _body(**fields: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": "hi", **fields}


def _items(*items: Any) -> dict[str, Any]:
    return {"model": MODEL, "input": list(items)}


CALL = {"type": "function_call", "call_id": "c1", "name": "f", "arguments": "{}"}


@pytest.mark.parametrize(
    ("body", "param"),
    [
        pytest.param({"input": "hi"}, "model", id="no-model"),
        pytest.param({"model": MODEL}, "input", id="no-input"),
        pytest.param(_body(input=42), "input", id="input-number"),
        pytest.param(_body(input=[]), "input", id="input-empty"),
        pytest.param(_body(previous_response_id="resp_123"), "previous_response_id", id="previous-response"),
        pytest.param(_body(conversation="conv_1"), "conversation", id="conversation"),
        pytest.param(_body(background=True), "background", id="background"),
        pytest.param(_body(prompt={"id": "pmpt_1"}), "prompt", id="stored-prompt"),
        pytest.param(_body(instructions=["x"]), "instructions", id="instructions-list"),
        pytest.param(_items("hi"), "input[0]", id="item-not-object"),
        pytest.param(_items({"role": "tool", "content": "x"}), "input[0].role", id="bad-role"),
        pytest.param(_items({"role": "user", "content": 3}), "input[0].content", id="content-number"),
        pytest.param(
            _items({"role": "user", "content": "a"}, {"type": "item_reference", "id": "msg_1"}),
            "input[1].type",
            id="item-reference",
        ),
        pytest.param(
            _items({"type": "computer_call_output", "call_id": "c", "output": {}}),
            "input[0].type",
            id="computer-output",
        ),
        pytest.param(
            _items({"type": "file_search_call", "id": "fs", "queries": []}),
            "input[0].type",
            id="file-search-call",
        ),
        pytest.param(
            _items({"type": "input_file", "file_id": "file_1"}), "input[0].type", id="input-file-item"
        ),
        pytest.param(
            _items(
                {
                    "role": "user",
                    "content": [{"type": "input_text", "text": "a"}, {"type": "input_file", "file_id": "f"}],
                }
            ),
            "input[0].content[1].file_id",
            id="input-file-part",
        ),
        pytest.param(
            _items(
                {
                    "role": "user",
                    "content": [{"type": "input_audio", "input_audio": {"data": "", "format": "wav"}}],
                }
            ),
            "input[0].content[0].type",
            id="input-audio-part",
        ),
        pytest.param(
            _items({"role": "user", "content": [{"type": "input_text", "text": 5}]}),
            "input[0].content[0].text",
            id="text-not-string",
        ),
        pytest.param(
            _items(
                {"role": "user", "content": [{"type": "input_image", "file_id": "file_1", "detail": "auto"}]}
            ),
            "input[0].content[0].file_id",
            id="image-file-id",
        ),
        pytest.param(
            _items({"role": "user", "content": [{"type": "input_image", "image_url": "data:image/png,abc"}]}),
            "input[0].content[0].image_url",
            id="image-not-base64",
        ),
        pytest.param(
            _items({"role": "system", "content": [{"type": "input_image", "image_url": "https://x/y.png"}]}),
            "input[0].content[0].type",
            id="image-in-system",
        ),
        pytest.param(_items({**CALL, "call_id": None}), "input[0].call_id", id="call-without-id"),
        pytest.param(_items({**CALL, "arguments": {"a": 1}}), "input[0].arguments", id="arguments-object"),
        pytest.param(
            _items({"type": "function_call_output", "call_id": "nope", "output": "x"}),
            "input[0].call_id",
            id="orphan-output",
        ),
        pytest.param(
            _items(CALL, {"type": "function_call_output", "call_id": "c1", "output": 1}),
            "input[1].output",
            id="output-number",
        ),
        pytest.param(
            _body(tools=[WEATHER_TOOL, {"type": "web_search"}]), "tools[1].type", id="web-search-tool"
        ),
        pytest.param(
            _body(tools=[{"type": "file_search", "vector_store_ids": ["vs"]}]),
            "tools[0].type",
            id="file-search",
        ),
        pytest.param(
            _body(tools=[{"type": "code_interpreter", "container": {"type": "auto"}}]),
            "tools[0].type",
            id="code-interpreter",
        ),
        pytest.param(
            _body(tools=[{"type": "function", "parameters": {}}]), "tools[0].name", id="tool-without-name"
        ),
        pytest.param(_body(tools={"type": "function"}), "tools", id="tools-object"),
        pytest.param(_body(tool_choice="any"), "tool_choice", id="tool-choice-string"),
        pytest.param(_body(tool_choice={"type": "web_search"}), "tool_choice", id="tool-choice-builtin"),
        pytest.param(_body(tool_choice={"type": "function"}), "tool_choice.name", id="tool-choice-no-name"),
        pytest.param(_body(max_output_tokens="100"), "max_output_tokens", id="max-tokens-string"),
        pytest.param(_body(max_output_tokens=True), "max_output_tokens", id="max-tokens-bool"),
        pytest.param(_body(temperature="hot"), "temperature", id="temperature-string"),
        pytest.param(_body(parallel_tool_calls="yes"), "parallel_tool_calls", id="parallel-string"),
        pytest.param(_body(text={"format": {"type": "grammar"}}), "text.format.type", id="format-type"),
        pytest.param(
            _body(text={"format": {"type": "json_schema", "name": "x"}}),
            "text.format.schema",
            id="format-no-schema",
        ),
        pytest.param(
            _body(text={"format": {"type": "json_schema", "schema": {}}}),
            "text.format.name",
            id="format-no-name",
        ),
        pytest.param(_body(metadata=["x"]), "metadata", id="metadata-list"),
    ],
)
def test_translation_errors_name_the_param(body: dict[str, Any], param: str) -> None:
    with pytest.raises(TranslationError) as info:
        decode_request(body)
    assert info.value.param == param
    assert str(info.value)


def test_unsupported_state_errors_tell_the_client_what_to_do() -> None:
    with pytest.raises(TranslationError, match="full conversation"):
        decode_request(_body(previous_response_id="resp_1"))
    with pytest.raises(TranslationError, match="web_search"):
        decode_request(_body(tools=[{"type": "web_search"}]))
    with pytest.raises(TranslationError, match="full item"):
        decode_request(_items({"type": "item_reference", "id": "msg_1"}))


# --------------------------------------------------------------------------- encode_response


def validate(body: dict[str, Any]) -> SDKResponse:
    response = SDKResponse.model_validate(body)
    # What a client actually receives: the JSON over the wire, read by the SDK in strict mode.
    wire = json.dumps(body).encode()
    created = sdk_client(wire, "application/json").responses.create(model=MODEL, input="hi")
    assert created == response
    return response


def test_encode_text_response_matches_the_recorded_shape() -> None:
    recorded = json.loads((FIXTURES / "responses_text.json").read_text())
    resp = Response(
        id="msg_01XYZ",
        model="claude-x",
        content=[Text(recorded["output"][0]["content"][0]["text"])],
        stop_reason="stop",
        usage=Usage(input_tokens=1536, output_tokens=29, cached_input_tokens=1280),
        created=1752584010,
    )
    body = encode_response(resp, model=recorded["model"], request={"model": "gpt", "input": "Tell me"})
    assert normalize(body) == normalize(recorded)
    parsed = validate(body)
    assert parsed.id == "resp_01XYZ"
    assert (parsed.output[0].id or "").startswith("msg_")
    assert parsed.output_text == recorded["output"][0]["content"][0]["text"]
    assert parsed.created_at == 1752584010
    assert body["store"] is False and parsed.previous_response_id is None


def test_encode_tool_calls_after_text() -> None:
    resp = Response(
        id="msg_02",
        model="claude-x",
        content=[
            Thinking("Two cities, two calls.", signature="sig"),
            Text("Checking "),
            Text("both."),
            ToolCall(id="toolu_a", name="get_weather", arguments='{"location":"Paris"}'),
            ToolCall(id="toolu_b", name="get_weather", arguments='{"location": "Rome" }'),
            ToolCall(id="toolu_c", name="ping", arguments=""),
        ],
        stop_reason="tool_calls",
        usage=Usage(50, 40),
    )
    request = {"model": MODEL, "input": "Weather?", "tools": [WEATHER_TOOL], "tool_choice": "required"}
    parsed = validate(encode_response(resp, model=MODEL, request=request))
    assert parsed.status == "completed"
    assert parsed.output_text == "Checking both."
    assert [item.type for item in parsed.output] == [
        "message",
        "function_call",
        "function_call",
        "function_call",
    ]
    calls = parsed.output[1:]
    assert [(c.call_id, c.name, c.arguments, c.status) for c in calls] == [  # type: ignore[union-attr]
        ("toolu_a", "get_weather", '{"location":"Paris"}', "completed"),
        ("toolu_b", "get_weather", '{"location": "Rome" }', "completed"),
        ("toolu_c", "ping", "{}", "completed"),
    ]
    assert len({item.id for item in parsed.output}) == 4
    assert parsed.tool_choice == "required"
    assert parsed.tools[0].name == "get_weather"  # type: ignore[union-attr]


def test_encode_length_is_incomplete() -> None:
    resp = Response(id="m", model="x", content=[Text("Once upon a")], stop_reason="length", usage=Usage(5, 3))
    parsed = validate(encode_response(resp, model=MODEL, request={"max_output_tokens": 3}))
    assert parsed.status == "incomplete"
    assert parsed.incomplete_details is not None and parsed.incomplete_details.reason == "max_output_tokens"
    assert parsed.completed_at is None
    assert parsed.max_output_tokens == 3
    assert parsed.output_text == "Once upon a"


def test_encode_usage_round_trips() -> None:
    usage = Usage(
        input_tokens=2000,
        output_tokens=300,
        cached_input_tokens=1500,
        cache_creation_input_tokens=400,
        reasoning_tokens=120,
    )
    resp = Response(id="m", model="x", content=[Text("ok")], stop_reason="stop", usage=usage)
    parsed = validate(encode_response(resp, model=MODEL, request={}))
    assert parsed.usage is not None
    assert parsed.usage.input_tokens == 2000
    assert parsed.usage.input_tokens_details.cached_tokens == 1500
    assert parsed.usage.input_tokens_details.cache_write_tokens == 400
    assert parsed.usage.output_tokens == 300
    assert parsed.usage.output_tokens_details.reasoning_tokens == 120
    assert parsed.usage.total_tokens == 2300


def test_encode_echoes_request_settings() -> None:
    fmt = {"type": "json_schema", "name": "answer", "schema": {"type": "object"}, "strict": True}
    request = {
        "model": MODEL,
        "input": "hi",
        "instructions": "Be brief.",
        "temperature": 0,
        "top_p": 0.5,
        "parallel_tool_calls": False,
        "metadata": {"k": "v"},
        "user": "u",
        "text": {"format": fmt},
    }
    resp = Response(id="m", model="x", content=[Text("{}")], stop_reason="stop", usage=Usage())
    parsed = validate(encode_response(resp, model=MODEL, request=request))
    assert parsed.instructions == "Be brief."
    assert parsed.temperature == 0 and parsed.top_p == 0.5
    assert parsed.parallel_tool_calls is False
    assert parsed.metadata == {"k": "v"} and parsed.user == "u"
    assert parsed.text is not None and parsed.text.format is not None
    assert parsed.text.format.type == "json_schema"
    assert parsed.model == MODEL


# --------------------------------------------------------------------------- StreamEncoder


def text_stream(deltas: Sequence[str], usage: Usage, model: str = "") -> list[StreamEvent]:
    """A text answer's events; `model`: the one the upstream names (none: the encoder names its own)."""
    return [
        StreamStart(id="chatcmpl-1", model=model),
        TextStart(0),
        *(TextDelta(0, d) for d in deltas),
        BlockStop(0),
        StreamFinish("stop"),
        StreamUsage(usage),
        StreamEnd(),
    ]


def test_text_stream_matches_the_recorded_stream() -> None:
    recorded = fixture_events("responses_text.sse")
    deltas = [e["delta"] for e in recorded if e["type"] == "response.output_text.delta"]
    model = recorded[0]["response"]["model"]
    _, parsed = encode_stream(text_stream(deltas, Usage(18, 13), model=model), model="gpt-4o-mini")
    assert normalize(parsed) == normalize(recorded)  # named as the upstream named it
    _, parsed = encode_stream(text_stream(deltas, Usage(18, 13)), model=model)
    assert normalize(parsed) == normalize(recorded)  # the upstream named none: the encoder's own


def test_function_call_stream_matches_the_recorded_stream() -> None:
    recorded = fixture_events("responses_function_call.sse")
    added = recorded[2]["item"]
    deltas = [e["delta"] for e in recorded if e["type"] == "response.function_call_arguments.delta"]
    events: list[StreamEvent] = [
        StreamStart(id="x", model=recorded[0]["response"]["model"]),
        ToolCallStart(0, id=added["call_id"], name=added["name"]),
        *(ToolCallDelta(0, d) for d in deltas),
        BlockStop(0),
        StreamFinish("tool_calls"),
        StreamUsage(Usage(74, 22)),
        StreamEnd(),
    ]
    request = {"tools": recorded[0]["response"]["tools"]}
    _, parsed = encode_stream(events, request=request, model="an-alias")
    assert normalize(parsed) == normalize(recorded)


def test_text_stream_through_the_sdk() -> None:
    raw, parsed = encode_stream(
        text_stream(["Hel", "lo, ", "", "wörld\n", "!"], Usage(20, 6, cached_input_tokens=8))
    )
    final = accumulate(parsed)
    assert final.output_text == "Hello, wörld\n!"
    assert final.usage.input_tokens == 20 and final.usage.input_tokens_details.cached_tokens == 8
    # The empty delta is not sent.
    assert [e["delta"] for e in parsed if e["type"] == "response.output_text.delta"] == [
        "Hel",
        "lo, ",
        "wörld\n",
        "!",
    ]

    with sdk_client(raw, "text/event-stream").responses.stream(model=MODEL, input="hi") as stream:
        snapshots = [e.snapshot for e in stream if e.type == "response.output_text.delta"]
        response = stream.get_final_response()
    assert snapshots[-1] == "Hello, wörld\n!"
    assert response.output_text == "Hello, wörld\n!"
    assert response.usage is not None and response.usage.total_tokens == 26


def test_text_then_two_tool_calls_with_usage_after_finish() -> None:
    """OpenAI-like upstream: usage arrives in a chunk after the finish reason."""
    events: list[StreamEvent] = [
        StreamStart(id="chatcmpl-9", model="x"),
        TextStart(0),
        TextDelta(0, "Checking "),
        TextDelta(0, "both."),
        BlockStop(0),
        ToolCallStart(1, id="call_a", name="get_weather"),
        ToolCallDelta(1, '{"loca'),
        ToolCallDelta(1, 'tion": "Par'),
        ToolCallDelta(1, 'is"}'),
        BlockStop(1),
        ToolCallStart(2, id="call_b", name="get_weather"),
        ToolCallDelta(2, '{"location":'),
        ToolCallDelta(2, '"Rome"}'),
        BlockStop(2),
        StreamFinish("tool_calls"),
        StreamUsage(Usage(100, 30, cached_input_tokens=64)),
        StreamEnd(),
    ]
    raw, parsed = encode_stream(events, request={"tools": [WEATHER_TOOL]})
    assert types(parsed) == [
        "response.created",
        "response.in_progress",
        "response.output_item.added",
        "response.content_part.added",
        "response.output_text.delta",
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.output_item.added",
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    added = [e for e in parsed if e["type"] == "response.output_item.added"]
    assert [e["output_index"] for e in added] == [0, 1, 2]
    assert all(e["response"]["usage"] is None for e in parsed[:2])

    final = accumulate(parsed)
    assert final.output_text == "Checking both."
    calls = [(o.call_id, o.name, o.arguments) for o in final.output if o.type == "function_call"]
    assert calls == [
        ("call_a", "get_weather", '{"location": "Paris"}'),
        ("call_b", "get_weather", '{"location":"Rome"}'),
    ]
    assert final.usage.input_tokens == 100 and final.usage.input_tokens_details.cached_tokens == 64
    assert final.usage.output_tokens == 30

    with sdk_client(raw, "text/event-stream").responses.stream(
        model=MODEL,
        input="hi",
        tools=[WEATHER_TOOL],  # type: ignore[list-item]
    ) as stream:
        arg_snapshots = [e.snapshot for e in stream if e.type == "response.function_call_arguments.delta"]
        response = stream.get_final_response()
    assert arg_snapshots[2] == '{"location": "Paris"}'
    strict_calls = [o for o in response.output if o.type == "function_call"]
    # The SDK parses strict tools' arguments itself: they must be the exact JSON.
    assert [c.parsed_arguments for c in strict_calls] == [{"location": "Paris"}, {"location": "Rome"}]


def test_usage_at_start_as_from_anthropic() -> None:
    events: list[StreamEvent] = [
        StreamStart(
            id="msg_01A",
            model="x",
            usage=Usage(
                input_tokens=3000, cached_input_tokens=2048, cache_creation_input_tokens=500, output_tokens=1
            ),
        ),
        ThinkingStart(0),
        ThinkingDelta(0, "Let me think."),
        ThinkingDelta(0, signature="sig"),
        BlockStop(0),
        TextStart(1),
        TextDelta(1, "Hi!"),
        BlockStop(1),
        StreamFinish("stop"),
        # Anthropic's minimal message_delta form: output tokens only.
        StreamUsage(Usage(output_tokens=12)),
        StreamEnd(),
    ]
    _, parsed = encode_stream(events)
    assert parsed[0]["response"]["id"] == "resp_01A"
    # The thinking block is not sent; the text is output item 0.
    assert [e["output_index"] for e in parsed if "output_index" in e] == [0] * 6
    final = accumulate(parsed)
    assert final.output_text == "Hi!"
    usage = final.usage
    assert (usage.input_tokens, usage.output_tokens, usage.total_tokens) == (3000, 12, 3012)
    assert usage.input_tokens_details.cached_tokens == 2048
    assert usage.input_tokens_details.cache_write_tokens == 500


def test_length_stop_ends_with_response_incomplete() -> None:
    events: list[StreamEvent] = [
        StreamStart(id="m", model="x"),
        TextStart(0),
        TextDelta(0, "Once upon"),
        BlockStop(0),
        StreamFinish("length"),
        StreamEnd(),
    ]
    raw, parsed = encode_stream(events, request={"max_output_tokens": 2})
    last = parsed[-1]
    assert last["type"] == "response.incomplete"
    assert last["response"]["status"] == "incomplete"
    assert last["response"]["incomplete_details"] == {"reason": "max_output_tokens"}
    assert last["response"]["output"][0]["content"][0]["text"] == "Once upon"
    with sdk_client(raw, "text/event-stream").responses.stream(model=MODEL, input="hi") as stream:
        kinds = [e.type for e in stream]
    assert kinds[-1] == "response.incomplete"


def test_open_block_is_closed_at_the_end() -> None:
    events: list[StreamEvent] = [
        StreamStart(id="m", model="x"),
        ToolCallStart(0, id="call_1", name="ping"),
        StreamFinish("tool_calls"),
        StreamEnd(),
    ]
    _, parsed = encode_stream(events)
    assert types(parsed)[-4:] == [
        "response.function_call_arguments.delta",
        "response.function_call_arguments.done",
        "response.output_item.done",
        "response.completed",
    ]
    final = accumulate(parsed)
    # No argument fragments at all still gives valid JSON, as OpenAI always sends.
    assert final.output[0].arguments == "{}"


def test_stream_error_mid_text() -> None:
    encoder = StreamEncoder(model=MODEL, request={})
    events: list[StreamEvent] = [
        StreamStart(id="msg_1", model="x"),
        TextStart(0),
        TextDelta(0, "Partial"),
        StreamError(type="overloaded_error", message="Overloaded"),
    ]
    raw = b"".join(encoder.encode(e) for e in events)
    assert encoder.encode(TextDelta(0, "more")) == b""
    assert encoder.encode(StreamEnd()) == b""
    parsed = sse_events(raw)
    for data in parsed:
        STREAM_EVENTS.validate_python(data)
    error, failed = parsed[-2:]
    assert error == {
        "type": "error",
        "sequence_number": len(parsed) - 2,
        "code": "overloaded_error",
        "message": "Overloaded",
        "param": None,
    }
    assert failed["type"] == "response.failed"
    assert failed["response"]["status"] == "failed"
    assert failed["response"]["error"] == {"code": "server_error", "message": "Overloaded"}
    item = failed["response"]["output"][0]
    assert item["status"] == "incomplete" and item["content"][0]["text"] == "Partial"
    assert accumulate(parsed) is None  # never completed

    with sdk_client(raw, "text/event-stream").responses.stream(model=MODEL, input="hi") as stream:
        kinds = [e.type for e in stream]
        with pytest.raises(RuntimeError, match=r"response\.completed"):
            stream.get_final_response()
    assert kinds[-2:] == ["error", "response.failed"]


def test_rate_limit_error_maps_to_the_sdk_error_code() -> None:
    _, parsed = encode_stream(
        [StreamStart(id="m", model="x"), StreamError(type="rate_limit_error", message="Slow down")]
    )
    assert parsed[-1]["response"]["error"]["code"] == "rate_limit_exceeded"


@pytest.mark.parametrize(
    ("events", "last"),
    [
        pytest.param([StreamEnd()], "response.completed", id="end"),
        pytest.param([StreamError(type="api_error", message="boom")], "response.failed", id="error"),
        pytest.param([TextStart(0), TextDelta(0, "x"), StreamEnd()], "response.completed", id="text"),
    ],
)
def test_events_before_start_still_open_the_response(events: list[StreamEvent], last: str) -> None:
    _, parsed = encode_stream(events)
    assert [e["type"] for e in parsed[:2]] == ["response.created", "response.in_progress"]
    assert parsed[-1]["type"] == last
    ids = {e["response"]["id"] for e in parsed if "response" in e}
    assert len(ids) == 1 and ids.pop().startswith("resp_")


def test_stream_and_non_stream_agree() -> None:
    content: list[Text | ToolCall | Thinking] = [
        Text("Sure."),
        ToolCall(id="call_z", name="get_weather", arguments='{"location":"Oslo"}'),
    ]
    usage = Usage(40, 9)
    body = encode_response(
        Response(id="msg_77", model="x", content=content, stop_reason="tool_calls", usage=usage),
        model=MODEL,
        request={},
    )
    _, parsed = encode_stream(
        [
            StreamStart(id="msg_77", model="x"),
            TextStart(0),
            TextDelta(0, "Sure."),
            BlockStop(0),
            ToolCallStart(1, id="call_z", name="get_weather"),
            ToolCallDelta(1, '{"location":"Oslo"}'),
            BlockStop(1),
            StreamFinish("tool_calls"),
            StreamUsage(usage),
            StreamEnd(),
        ]
    )
    streamed = parsed[-1]["response"]
    for key in ("id", "output", "usage", "status"):
        assert streamed[key] == body[key]


def iter_chunks(raw: bytes, size: int) -> Iterator[bytes]:
    for i in range(0, len(raw), size):
        yield raw[i : i + size]


def test_stream_bytes_survive_any_chunking() -> None:
    raw, parsed = encode_stream(text_stream(["a\r\nb", "ü", "€"], Usage(1, 1)))
    parser = SSEParser()
    events = [json.loads(e.data) for chunk in iter_chunks(raw, 7) for e in parser.feed(chunk)]
    assert events == parsed


def test_text_after_a_tool_call_is_a_new_message_item() -> None:
    events: list[StreamEvent] = [
        StreamStart(id="msg_5", model="x"),
        TextStart(0),
        TextDelta(0, "Calling. "),
        BlockStop(0),
        ToolCallStart(1, id="toolu_1", name="ping"),
        ToolCallDelta(1, "{}"),
        BlockStop(1),
        TextStart(2),
        TextDelta(2, "Done."),
        BlockStop(2),
        StreamFinish("stop"),
        StreamEnd(),
    ]
    _, parsed = encode_stream(events)
    final = accumulate(parsed)
    assert [o.type for o in final.output] == ["message", "function_call", "message"]
    assert len({o.id for o in final.output}) == 3
    assert final.output_text == "Calling. Done."
    assert final.usage is None  # the upstream reported none; nothing is made up


def test_content_filter_is_incomplete() -> None:
    events: list[StreamEvent] = [StreamStart(id="m", model="x"), StreamFinish("content_filter"), StreamEnd()]
    _, parsed = encode_stream(events)
    assert parsed[-1]["type"] == "response.incomplete"
    assert parsed[-1]["response"]["incomplete_details"] == {"reason": "content_filter"}


def test_data_url_parameters_are_dropped_from_the_media_type() -> None:
    part = {"type": "input_image", "image_url": f"data:image/jpeg;name=a.jpg;base64,{PNG_B64}"}
    req = decode_request(_items({"role": "user", "content": [part]}))
    assert req.messages[0].content == [
        Image(media_type="image/jpeg", data=PNG_B64, where="input[0].content[0].image_url")
    ]
