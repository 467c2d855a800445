"""The OpenAI Chat Completions translator, against recorded transcripts and the official openai SDK."""

from __future__ import annotations

import copy
import json
from collections.abc import Callable
from pathlib import Path
from typing import Any

import httpx2 as httpx
import openai
import pytest
from openai.lib.streaming.chat import ChatCompletionStreamState
from openai.types.chat import ChatCompletion, ChatCompletionChunk

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
from adapters.openai_chat import (
    StreamDecoder,
    StreamEncoder,
    decode_request,
    decode_response,
    encode_request,
    encode_response,
    usage_from_body,
    usage_from_chunk,
)
from adapters.sse import SSEParser

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"
EPHEMERAL = {"type": "ephemeral"}
PNG_B64 = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mP8z8BQDwAEhQGAhKmMIQAAAABJRU5ErkJggg=="
# Deliberately not what a JSON encoder would produce: spacing and escapes must survive untouched.
ODD_ARGS = '{ "city" : "Z\\u00fcrich",\n  "days":3 }'


def fixture_json(name: str) -> dict[str, Any]:
    body: dict[str, Any] = json.loads((FIXTURES / name).read_text())
    return body


def sse_payloads(raw: bytes) -> list[str]:
    return [event.data for event in SSEParser().feed(raw)]


def decode_stream(name: str) -> list[StreamEvent]:
    decoder = StreamDecoder()
    events: list[StreamEvent] = []
    for data in sse_payloads((FIXTURES / name).read_bytes()):
        events += decoder.feed(data)
    assert decoder.done
    return events


def fixture_text(name: str) -> str:
    """The text a fixture stream carries, read straight from its JSON chunks."""
    text = ""
    for data in sse_payloads((FIXTURES / name).read_bytes()):
        if data != "[DONE]":
            for choice in json.loads(data)["choices"]:
                text += choice["delta"].get("content") or ""
    return text


def kinds(events: list[StreamEvent]) -> list[str]:
    return [type(e).__name__ for e in events]


def chat(messages: list[dict[str, Any]], **extra: Any) -> dict[str, Any]:
    return {"model": "gpt-4o-mini", "messages": messages, **extra}


WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Weather for a city.",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
        "strict": True,
    },
}


# ---- decode_request --------------------------------------------------------------------------------------


def test_system_and_developer_messages_anywhere_become_system_text_in_order() -> None:
    req = decode_request(
        chat(
            [
                {"role": "system", "content": "You are terse."},
                {"role": "user", "content": "Hi"},
                {"role": "developer", "content": [{"type": "text", "text": "Answer in French."}]},
                {"role": "assistant", "content": "Bonjour"},
                {"role": "system", "content": "Never apologize."},
            ]
        )
    )
    assert [t.text for t in req.system] == ["You are terse.", "Answer in French.", "Never apologize."]
    assert [(m.role, m.content) for m in req.messages] == [
        ("user", [Text(text="Hi")]),
        ("assistant", [Text(text="Bonjour")]),
    ]


def test_user_images_by_url_and_base64() -> None:
    req = decode_request(
        chat(
            [
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "Compare these."},
                        {
                            "type": "image_url",
                            "image_url": {"url": "https://example.com/a.jpg", "detail": "low"},
                        },
                        {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                        {"type": "image_url", "image_url": {"url": "data:image/svg+xml,%3Csvg%2F%3E"}},
                    ],
                }
            ]
        )
    )
    assert req.messages[0].content == [
        Text(text="Compare these."),
        Image(url="https://example.com/a.jpg", detail="low", where="messages[0].content[1].image_url.url"),
        Image(media_type="image/png", data=PNG_B64, where="messages[0].content[2].image_url.url"),
        # Not base64: there are no bytes to extract, so the URL is passed on as it is.
        Image(url="data:image/svg+xml,%3Csvg%2F%3E", where="messages[0].content[3].image_url.url"),
    ]


def test_parallel_tool_calls_and_their_results_pair_up_by_id() -> None:
    req = decode_request(
        chat(
            [
                {"role": "user", "content": "Weather in Zurich and Oslo?"},
                {
                    "role": "assistant",
                    "content": "",
                    "tool_calls": [
                        {
                            "id": "call_a",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": ODD_ARGS},
                        },
                        {
                            "id": "call_b",
                            "type": "function",
                            "function": {"name": "get_weather", "arguments": '{"city":"Oslo"}'},
                        },
                    ],
                },
                {"role": "tool", "tool_call_id": "call_a", "content": "12°C"},
                {"role": "tool", "tool_call_id": "call_b", "content": [{"type": "text", "text": "3°C"}]},
                {"role": "user", "content": "Thanks"},
            ],
            tools=[WEATHER_TOOL],
        )
    )
    assistant, results = req.messages[1], req.messages[2]
    # The empty text beside the calls carries nothing and is not kept.
    assert assistant.content == [
        ToolCall(
            id="call_a",
            name="get_weather",
            arguments=ODD_ARGS,
            where="messages[1].tool_calls[0].function.arguments",
        ),
        ToolCall(
            id="call_b",
            name="get_weather",
            arguments='{"city":"Oslo"}',
            where="messages[1].tool_calls[1].function.arguments",
        ),
    ]
    # Consecutive tool messages become one user turn with both results, in order.
    assert results.role == "user"
    assert results.content == [
        ToolResult(tool_call_id="call_a", content=[Text(text="12°C")]),
        ToolResult(tool_call_id="call_b", content=[Text(text="3°C")]),
    ]
    assert req.messages[3].content == [Text(text="Thanks")]
    assert len(req.messages) == 4
    call_ids = {p.id for p in assistant.content if isinstance(p, ToolCall)}
    assert {p.tool_call_id for p in results.content if isinstance(p, ToolResult)} == call_ids


def test_assistant_refusal_parts_are_text() -> None:
    req = decode_request(
        chat(
            [
                {"role": "user", "content": "x"},
                {"role": "assistant", "content": [{"type": "refusal", "refusal": "I can't help with that."}]},
            ]
        )
    )
    assert req.messages[1].content == [Text(text="I can't help with that.")]


def test_cache_control_is_kept_wherever_the_client_put_it() -> None:
    req = decode_request(
        chat(
            [
                {"role": "system", "content": "Long instructions", "cache_control": EPHEMERAL},
                {
                    "role": "user",
                    "content": [
                        {"type": "text", "text": "doc", "cache_control": {"type": "ephemeral", "ttl": "1h"}},
                        {"type": "text", "text": "question"},
                    ],
                },
                {"role": "user", "content": [{"type": "text", "text": "a"}], "cache_control": EPHEMERAL},
                {
                    "role": "assistant",
                    "tool_calls": [
                        {"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}
                    ],
                    "cache_control": EPHEMERAL,
                },
                {"role": "tool", "tool_call_id": "c1", "content": "out", "cache_control": EPHEMERAL},
            ],
            tools=[{**WEATHER_TOOL, "cache_control": EPHEMERAL}],
        )
    )
    assert req.system == [Text(text="Long instructions", cache_control=EPHEMERAL)]
    assert req.messages[0].content == [
        Text(text="doc", cache_control={"type": "ephemeral", "ttl": "1h"}),
        Text(text="question"),
    ]
    assert req.messages[1].content == [Text(text="a", cache_control=EPHEMERAL)]
    assert req.messages[2].content == [
        ToolCall(
            id="c1",
            name="f",
            arguments="{}",
            cache_control=EPHEMERAL,
            where="messages[3].tool_calls[0].function.arguments",
        )
    ]
    assert req.messages[3].content == [
        ToolResult(tool_call_id="c1", content=[Text(text="out")], cache_control=EPHEMERAL)
    ]
    assert req.tools[0].cache_control == EPHEMERAL


def test_parameters() -> None:
    req = decode_request(
        chat(
            [{"role": "user", "content": "hi"}],
            tools=[WEATHER_TOOL, {"type": "function", "function": {"name": "noop"}}],
            tool_choice={"type": "function", "function": {"name": "get_weather"}},
            parallel_tool_calls=False,
            max_completion_tokens=300,
            max_tokens=999,
            temperature=0,
            top_p=0.5,
            stop="END",
            response_format={
                "type": "json_schema",
                "json_schema": {"name": "x", "schema": {"type": "object"}},
            },
            stream=True,
            stream_options={"include_usage": True},
            user="u-1",
            metadata={"trace": "t1"},
            n=1,
            some_future_field={"ignored": True},
        )
    )
    assert req.model == "gpt-4o-mini"
    assert req.tools == [
        Tool(
            name="get_weather",
            description="Weather for a city.",
            parameters=WEATHER_TOOL["function"]["parameters"],  # type: ignore[index]
            strict=True,
        ),
        Tool(name="noop", parameters={"type": "object", "properties": {}}),
    ]
    assert req.tool_choice == ToolChoice(type="tool", name="get_weather")
    assert req.parallel_tool_calls is False
    assert req.max_tokens == 300  # max_completion_tokens wins over the deprecated max_tokens
    assert req.temperature == 0.0 and req.top_p == 0.5
    assert req.stop == ["END"]
    assert req.response_format is not None and req.response_format.type == "json_schema"
    assert req.response_format.json_schema == {"name": "x", "schema": {"type": "object"}}
    assert req.stream is True and req.user == "u-1" and req.metadata == {"trace": "t1"}


@pytest.mark.parametrize(
    ("choice", "expected"),
    [
        ("auto", ToolChoice(type="auto")),
        ("none", ToolChoice(type="none")),
        ("required", ToolChoice(type="required")),
        ({"type": "function", "function": {"name": "f"}}, ToolChoice(type="tool", name="f")),
    ],
)
def test_tool_choice(choice: Any, expected: ToolChoice) -> None:
    req = decode_request(
        chat([{"role": "user", "content": "x"}], tool_choice=choice, max_tokens=5, stop=["a", "b"])
    )
    assert req.tool_choice == expected
    assert req.max_tokens == 5 and req.stop == ["a", "b"]


def _set(path: str, value: Any) -> Callable[[dict[str, Any]], None]:
    def apply(body: dict[str, Any]) -> None:
        target: Any = body
        keys = [int(k) if k.isdigit() else k for k in path.split(".")]
        for key in keys[:-1]:
            target = target[key]
        target[keys[-1]] = value

    return apply


def _delete(key: str) -> Callable[[dict[str, Any]], None]:
    return lambda body: body.pop(key)


VALID = chat(
    [
        {"role": "system", "content": "s"},
        {"role": "user", "content": "u"},
        {
            "role": "assistant",
            "tool_calls": [{"id": "c", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c", "content": "r"},
    ],
    tools=[WEATHER_TOOL],
)


@pytest.mark.parametrize(
    ("mutate", "param"),
    [
        (_delete("messages"), "messages"),
        (_set("messages", "hi"), "messages"),
        (_set("messages", []), "messages"),
        (_delete("model"), "model"),
        (_set("messages.1", "hello"), "messages[1]"),
        (_set("messages.1.role", "robot"), "messages[1].role"),
        (_set("messages.0.role", None), "messages[0].role"),
        (_set("messages.1.content", 42), "messages[1].content"),
        (_set("messages.1.content", None), "messages[1].content"),
        (_set("messages.1.content", []), "messages[1].content"),
        (_set("messages.3.content", {"text": "r"}), "messages[3].content"),
        (
            _set("messages.1.content", [{"type": "input_audio", "input_audio": {}}]),
            "messages[1].content[0].type",
        ),
        (
            _set("messages.1.content", [{"type": "text", "text": "a"}, {"type": "file", "file": {}}]),
            "messages[1].content[1].file.file_data",
        ),
        (_set("messages.1.content", [{"type": "text", "text": 5}]), "messages[1].content[0].text"),
        (
            _set("messages.1.content", [{"type": "image_url", "image_url": {}}]),
            "messages[1].content[0].image_url.url",
        ),
        (
            _set("messages.0.content", [{"type": "image_url", "image_url": {"url": "https://x/y.png"}}]),
            "messages[0].content[0].type",
        ),
        (_set("messages.3.tool_call_id", None), "messages[3].tool_call_id"),
        (_set("messages.2.tool_calls", {}), "messages[2].tool_calls"),
        (_set("messages.2.tool_calls.0.function.name", None), "messages[2].tool_calls[0].function.name"),
        (_set("messages.2.tool_calls.0.id", None), "messages[2].tool_calls[0].id"),
        (_set("messages.2.tool_calls.0.type", "custom"), "messages[2].tool_calls[0].type"),
        (_set("tools.0.type", "web_search"), "tools[0].type"),
        (_set("tools", [WEATHER_TOOL, {"type": "custom", "custom": {"name": "x"}}]), "tools[1].type"),
        (_set("tools.0.function.name", ""), "tools[0].function.name"),
        (_set("tools.0.function.parameters", "schema"), "tools[0].function.parameters"),
        (_set("tool_choice", "sometimes"), "tool_choice"),
        (
            _set("tool_choice", {"type": "allowed_tools", "allowed_tools": {}}),
            "tool_choice.allowed_tools.mode",
        ),
        (_set("tool_choice", {"type": "sometimes"}), "tool_choice"),
        (_set("n", 2), "n"),
        (_set("max_tokens", "100"), "max_tokens"),
        (_set("max_completion_tokens", 1.5), "max_completion_tokens"),
        (_set("temperature", "hot"), "temperature"),
        (_set("stop", 7), "stop"),
        (_set("stream", "yes"), "stream"),
        (_set("response_format", {"type": "xml"}), "response_format.type"),
        (_set("response_format", {"type": "json_schema"}), "response_format.json_schema"),
    ],
)
def test_invalid_requests_name_the_field(mutate: Callable[[dict[str, Any]], None], param: str) -> None:
    decode_request(VALID)  # the base body is valid
    body = copy.deepcopy(VALID)
    mutate(body)
    with pytest.raises(TranslationError) as exc:
        decode_request(body)
    assert exc.value.param == param
    assert str(exc.value)


# ---- encode_request --------------------------------------------------------------------------------------


def sample_request(**overrides: Any) -> Request:
    fields: dict[str, Any] = {
        "model": "claude-sonnet",
        "system": [Text(text="Be brief.", cache_control=EPHEMERAL), Text(text="Use metric units.")],
        "messages": [
            Message(role="user", content=[Text(text="Weather in Zurich?", cache_control=EPHEMERAL)]),
            Message(
                role="assistant",
                content=[
                    Thinking(text="I should call the tool.", signature="sig"),
                    ToolCall(id="toolu_1", name="get_weather", arguments=ODD_ARGS),
                ],
            ),
            Message(
                role="user",
                content=[
                    ToolResult(
                        tool_call_id="toolu_1",
                        content=[Text(text="12°C, cloudy"), Image(media_type="image/png", data=PNG_B64)],
                    ),
                    Text(text="And tomorrow?"),
                ],
            ),
        ],
        "tools": [Tool(name="get_weather", parameters={"type": "object"}, description="Weather.")],
        "tool_choice": ToolChoice(type="auto"),
        "parallel_tool_calls": True,
        "max_tokens": 512,
        "temperature": 0.2,
        "top_p": 0.9,
        "top_k": 40,
        "stop": ["\n\nHuman:"],
        "stream": True,
        "user": "u-7",
    }
    fields.update(overrides)
    return Request(**fields)


def test_encode_request_for_openai() -> None:
    body = encode_request(sample_request(), upstream_model="gpt-4o", flavor="openai")
    assert body["model"] == "gpt-4o"
    assert body["messages"] == [
        {"role": "system", "content": "Be brief.\n\nUse metric units."},
        {"role": "user", "content": "Weather in Zurich?"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {
                    "id": "toolu_1",
                    "type": "function",
                    "function": {"name": "get_weather", "arguments": ODD_ARGS},
                }
            ],
        },
        {"role": "tool", "tool_call_id": "toolu_1", "content": "12°C, cloudy"},
        # The tool result's image cannot ride in the tool message: it follows in a user message.
        {
            "role": "user",
            "content": [
                {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG_B64}"}},
                {"type": "text", "text": "And tomorrow?"},
            ],
        },
    ]
    assert body["max_completion_tokens"] == 512 and "max_tokens" not in body
    assert "top_k" not in body
    assert body["stream"] is True and body["stream_options"] == {"include_usage": True}
    assert body["tools"] == [
        {
            "type": "function",
            "function": {"name": "get_weather", "description": "Weather.", "parameters": {"type": "object"}},
        }
    ]
    assert body["tool_choice"] == "auto" and body["parallel_tool_calls"] is True
    assert body["temperature"] == 0.2 and body["top_p"] == 0.9
    assert body["stop"] == ["\n\nHuman:"] and body["user"] == "u-7"
    assert "cache_control" not in json.dumps(body)


def test_encode_request_for_openrouter_keeps_cache_control_on_text() -> None:
    req = sample_request()
    req.messages[2].content[0].cache_control = EPHEMERAL  # type: ignore[union-attr]
    body = encode_request(req, upstream_model="anthropic/claude-sonnet-4", flavor="openrouter")
    messages = body["messages"]
    assert messages[0] == {
        "role": "system",
        "content": [
            {"type": "text", "text": "Be brief.", "cache_control": EPHEMERAL},
            {"type": "text", "text": "Use metric units."},
        ],
    }
    assert messages[1] == {
        "role": "user",
        "content": [{"type": "text", "text": "Weather in Zurich?", "cache_control": EPHEMERAL}],
    }
    # A breakpoint on the whole tool result lands on its text.
    assert messages[3] == {
        "role": "tool",
        "tool_call_id": "toolu_1",
        "content": [{"type": "text", "text": "12°C, cloudy", "cache_control": EPHEMERAL}],
    }
    assert body["max_tokens"] == 512 and "max_completion_tokens" not in body
    assert body["top_k"] == 40


def test_encode_request_for_local_servers() -> None:
    body = encode_request(sample_request(stream=False), upstream_model="llama3", flavor="local")
    assert body["max_tokens"] == 512 and body["top_k"] == 40
    assert "stream" not in body and "stream_options" not in body
    assert body["messages"][0]["content"] == "Be brief.\n\nUse metric units."
    assert "cache_control" not in json.dumps(body)


def test_encode_request_minimal_and_structured_output() -> None:
    req = Request(
        model="m",
        messages=[
            Message(role="user", content=[Text(text="List three colors.")]),
            Message(role="assistant", content=[Thinking(text="hmm")]),  # nothing chat can carry: dropped
            Message(role="user", content=[Image(url="https://example.com/c.png", detail="high")]),
        ],
        tool_choice=ToolChoice(type="required"),  # without tools, OpenAI would reject it
        parallel_tool_calls=False,
        response_format=ResponseFormat(
            type="json_schema", json_schema={"name": "colors", "schema": {"type": "array"}}
        ),
    )
    body = encode_request(req, upstream_model="gpt-4o-mini", flavor="openai")
    assert body == {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": "List three colors."},
            {
                "role": "user",
                "content": [
                    {"type": "image_url", "image_url": {"url": "https://example.com/c.png", "detail": "high"}}
                ],
            },
        ],
        "response_format": {
            "type": "json_schema",
            "json_schema": {"name": "colors", "schema": {"type": "array"}},
        },
    }


def test_named_tool_choice_and_tool_call_alongside_text() -> None:
    req = Request(
        model="m",
        messages=[
            Message(role="user", content=[Text(text="go")]),
            Message(
                role="assistant",
                content=[Text(text="Checking."), ToolCall(id="c1", name="f", arguments="{}")],
            ),
            Message(
                role="user", content=[ToolResult(tool_call_id="c1", content=[Text(text="a"), Text(text="b")])]
            ),
        ],
        tools=[Tool(name="f", parameters={"type": "object"}, strict=True)],
        tool_choice=ToolChoice(type="tool", name="f"),
    )
    body = encode_request(req, upstream_model="m", flavor="openai")
    assert body["tool_choice"] == {"type": "function", "function": {"name": "f"}}
    assert body["tools"][0]["function"]["strict"] is True
    assert body["messages"][1] == {
        "role": "assistant",
        "content": "Checking.",
        "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "f", "arguments": "{}"}}],
    }
    assert body["messages"][2] == {"role": "tool", "tool_call_id": "c1", "content": "a\n\nb"}
    assert len(body["messages"]) == 3


def test_chat_request_survives_a_round_trip_through_canonical() -> None:
    original = chat(
        [
            {"role": "system", "content": "sys"},
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "look"},
                    {"type": "image_url", "image_url": {"url": "https://x/y.png"}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "c",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": ODD_ARGS},
                    }
                ],
            },
            {"role": "tool", "tool_call_id": "c", "content": "sunny"},
        ],
        tools=[WEATHER_TOOL],
        tool_choice="required",
        max_completion_tokens=64,
        temperature=0.7,
        stop=["x"],
        response_format={"type": "json_object"},
    )
    body = encode_request(decode_request(original), upstream_model="gpt-4o-mini", flavor="openai")
    assert body == original


# ---- decode_response / encode_response -------------------------------------------------------------------


def test_decode_text_response_with_cached_tokens() -> None:
    body = fixture_json("openai/chat_text.json")
    resp = decode_response(body)
    assert resp.id == "chatcmpl-178ilLaSYMhmtK0b0iNVB4pCvPfCT"
    assert resp.model == "gpt-4o-mini-2024-07-18"
    assert resp.created == 1752583712
    assert resp.content == [Text(text=body["choices"][0]["message"]["content"])]
    assert resp.stop_reason == "stop"
    # input_tokens includes the cached ones (OpenAI's prompt_tokens semantics).
    assert resp.usage == Usage(input_tokens=1300, output_tokens=46, cached_input_tokens=1024)
    assert resp.usage.total_tokens == 1346


def test_decode_tool_calls_response() -> None:
    body = fixture_json("openai/chat_tool_calls.json")
    resp = decode_response(body)
    expected = [
        ToolCall(id=c["id"], name=c["function"]["name"], arguments=c["function"]["arguments"])
        for c in body["choices"][0]["message"]["tool_calls"]
    ]
    assert resp.content == expected
    assert [c.arguments for c in expected] == [
        '{"location":"Paris, France","unit":"celsius"}',
        '{"location":"Tokyo, Japan","unit":"celsius"}',
    ]
    assert resp.stop_reason == "tool_calls"
    assert resp.usage == Usage(input_tokens=112, output_tokens=58)


def test_decode_openrouter_response() -> None:
    resp = decode_response(fixture_json("openrouter/chat_text.json"))
    assert resp.content == [Text(text="Paris is the capital of France.")]
    assert resp.stop_reason == "stop"
    assert resp.model == "openai/gpt-4o-mini"
    assert resp.usage == Usage(input_tokens=14, output_tokens=7)


@pytest.mark.parametrize(
    ("finish", "expected"),
    [
        ("stop", "stop"),
        ("length", "length"),
        ("tool_calls", "tool_calls"),
        ("function_call", "tool_calls"),
        ("content_filter", "content_filter"),
        (None, None),
    ],
)
def test_decode_response_finish_reasons(finish: str | None, expected: str | None) -> None:
    body = {
        "id": "x",
        "model": "m",
        "created": 1,
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "hi"}, "finish_reason": finish}],
    }
    resp = decode_response(body)
    assert resp.stop_reason == expected
    assert resp.usage == Usage()  # no usage reported: zeros, not an error


def test_decode_response_reasoning_and_null_usage_details() -> None:
    body = {
        "id": "gen-1",
        "model": "deepseek/deepseek-r1",
        "created": 5,
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": "42", "reasoning": "Think first."},
                "finish_reason": "stop",
            }
        ],
        "usage": {
            "prompt_tokens": 10,
            "completion_tokens": 20,
            "total_tokens": 30,
            "prompt_tokens_details": None,
            "completion_tokens_details": {"reasoning_tokens": 15},
        },
    }
    resp = decode_response(body)
    assert resp.content == [Thinking(text="Think first."), Text(text="42")]
    assert resp.usage == Usage(input_tokens=10, output_tokens=20, reasoning_tokens=15)


def test_decode_response_without_choices_is_an_error() -> None:
    with pytest.raises(TranslationError) as exc:
        decode_response({"id": "x", "choices": []})
    assert exc.value.param == "choices"


def test_usage_helpers() -> None:
    chunk = {
        "choices": [],
        "usage": {
            "prompt_tokens": 100,
            "completion_tokens": 5,
            "prompt_tokens_details": {"cached_tokens": 64, "cache_write_tokens": 30},
        },
    }
    assert usage_from_chunk(chunk) == Usage(
        input_tokens=100, output_tokens=5, cached_input_tokens=64, cache_creation_input_tokens=30
    )
    assert usage_from_chunk({"choices": [], "usage": None}) is None
    assert usage_from_body({"choices": []}) is None
    assert usage_from_body({"usage": {"prompt_tokens": None, "completion_tokens": 3}}) == Usage(
        output_tokens=3
    )


def test_encode_response_is_a_valid_chat_completion() -> None:
    resp = Response(
        id="msg_01ABC",
        model="claude-sonnet-4",
        content=[
            Thinking(text="secret", signature="s"),
            Text(text="Let me check "),
            Text(text="both cities."),
            ToolCall(id="toolu_1", name="get_weather", arguments=ODD_ARGS),
            ToolCall(id="toolu_2", name="get_weather", arguments='{"city":"Oslo"}'),
        ],
        stop_reason="tool_calls",
        usage=Usage(input_tokens=2000, output_tokens=80, cached_input_tokens=1500, reasoning_tokens=30),
        created=1752583712,
    )
    body = encode_response(resp, model="my-alias")
    completion = ChatCompletion.model_validate(body)
    assert completion.id == "chatcmpl-msg_01ABC"
    assert completion.model == "my-alias" and completion.created == 1752583712
    message = completion.choices[0].message
    assert message.content == "Let me check both cities."  # thinking is not shown to chat clients
    assert message.tool_calls is not None
    assert [(c.id, c.function.arguments) for c in message.tool_calls] == [  # type: ignore[union-attr]
        ("toolu_1", ODD_ARGS),
        ("toolu_2", '{"city":"Oslo"}'),
    ]
    assert completion.choices[0].finish_reason == "tool_calls"
    assert completion.usage is not None
    assert completion.usage.total_tokens == 2080
    assert completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1500

    back = decode_response(body)
    assert back.content == [
        Text(text="Let me check both cities."),
        ToolCall(id="toolu_1", name="get_weather", arguments=ODD_ARGS),
        ToolCall(id="toolu_2", name="get_weather", arguments='{"city":"Oslo"}'),
    ]
    assert back.usage == resp.usage and back.stop_reason == "tool_calls"


@pytest.mark.parametrize(
    "fixture", ["openai/chat_text.json", "openai/chat_tool_calls.json", "openrouter/chat_text.json"]
)
def test_fixture_responses_round_trip(fixture: str) -> None:
    original = fixture_json(fixture)
    resp = decode_response(original)
    body = encode_response(resp, model=original["model"])
    completion = ChatCompletion.model_validate(body)
    source = ChatCompletion.model_validate(original)
    assert completion.choices[0].message.content == source.choices[0].message.content
    assert completion.choices[0].message.tool_calls == source.choices[0].message.tool_calls
    assert completion.choices[0].finish_reason == source.choices[0].finish_reason
    assert completion.usage is not None and source.usage is not None
    assert (
        completion.usage.prompt_tokens,
        completion.usage.completion_tokens,
        completion.usage.total_tokens,
    ) == (
        source.usage.prompt_tokens,
        source.usage.completion_tokens,
        source.usage.total_tokens,
    )
    assert decode_response(body).usage == resp.usage


@pytest.mark.parametrize(
    ("reason", "expected"),
    [
        ("stop_sequence", "stop"),
        ("error", "stop"),
        (None, "stop"),
        ("length", "length"),
        ("content_filter", "content_filter"),
    ],
)
def test_encode_response_finish_reasons(reason: Any, expected: str) -> None:
    resp = Response(
        id="chatcmpl-keep", model="m", content=[Text(text="x")], stop_reason=reason, usage=Usage()
    )
    body = encode_response(resp, model="m")
    assert ChatCompletion.model_validate(body).choices[0].finish_reason == expected
    assert body["id"] == "chatcmpl-keep"  # already a chat id: kept as is
    assert body["created"] > 1_700_000_000  # no upstream timestamp: now


def test_encode_response_without_text_has_null_content() -> None:
    resp = Response(id="r", model="m", content=[], stop_reason="stop", usage=Usage())
    message = encode_response(resp, model="m")["choices"][0]["message"]
    assert message["content"] is None and "tool_calls" not in message
    assert message["refusal"] is None and message["annotations"] == []


# ---- StreamDecoder ---------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    "fixture", ["openai/chat_text.sse", "openai/chat_multiline_data.sse", "openrouter/chat_text.sse"]
)
def test_decode_text_streams(fixture: str) -> None:
    events = decode_stream(fixture)
    n = len(events) - 6
    assert kinds(events) == [
        "StreamStart",
        "TextStart",
        *["TextDelta"] * n,
        "BlockStop",
        "StreamFinish",
        "StreamUsage",
        "StreamEnd",
    ]
    assert events[1] == TextStart(index=0) and events[-4] == BlockStop(index=0)
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == fixture_text(fixture)
    assert events[-3] == StreamFinish(stop_reason="stop")
    first = sse_payloads((FIXTURES / fixture).read_bytes())[0]
    assert events[0] == StreamStart(id=json.loads(first)["id"], model=json.loads(first)["model"])


def test_decode_text_stream_values() -> None:
    events = decode_stream("openai/chat_text.sse")
    assert "".join(e.text for e in events if isinstance(e, TextDelta)) == "Hello! How can I help you today?"
    assert events[-2] == StreamUsage(usage=Usage(input_tokens=19, output_tokens=10))
    assert decode_stream("openai/chat_multiline_data.sse")[-2] == StreamUsage(
        usage=Usage(input_tokens=14, output_tokens=4)
    )


def test_decode_tool_call_stream() -> None:
    events = decode_stream("openai/chat_tool_calls.sse")
    starts = [e for e in events if isinstance(e, ToolCallStart)]
    assert starts == [
        ToolCallStart(index=0, id="call_5BKnWY4W9BBfpV01Gjy50vuk", name="get_weather"),
        ToolCallStart(index=1, id="call_nkox6oRIxy6go9rmoRurAUkY", name="get_weather"),
    ]
    args = {
        i: "".join(e.arguments for e in events if isinstance(e, ToolCallDelta) and e.index == i)
        for i in (0, 1)
    }
    assert args == {
        0: '{"location":"Paris, France","unit":"celsius"}',
        1: '{"location":"Tokyo, Japan","unit":"celsius"}',
    }
    # Sequential blocks: the first call is closed before the second starts.
    assert events.index(BlockStop(index=0)) < events.index(starts[1])
    assert kinds(events[-4:]) == ["BlockStop", "StreamFinish", "StreamUsage", "StreamEnd"]
    assert events[-3] == StreamFinish(stop_reason="tool_calls")
    assert not any(isinstance(e, TextStart) for e in events)  # content: null opens no text block


def chunk(delta: dict[str, Any] | None = None, finish: str | None = None, **extra: Any) -> str:
    body: dict[str, Any] = {"id": "chatcmpl-1", "object": "chat.completion.chunk", "created": 1, "model": "m"}
    body["choices"] = [] if delta is None else [{"index": 0, "delta": delta, "finish_reason": finish}]
    body.update(extra)
    return json.dumps(body)


def feed_all(decoder: StreamDecoder, datas: list[str]) -> list[StreamEvent]:
    events: list[StreamEvent] = []
    for data in datas:
        events += decoder.feed(data)
    return events


def test_decode_reasoning_then_text() -> None:
    events = feed_all(
        StreamDecoder(),
        [
            chunk({"role": "assistant", "content": "", "reasoning": "Let me"}),
            chunk({"reasoning_content": " think."}),
            chunk({"content": "Answer", "reasoning": None}),
            chunk({}, "stop"),
            "[DONE]",
        ],
    )
    assert events[1:] == [
        ThinkingStart(index=0),
        ThinkingDelta(index=0, text="Let me"),
        ThinkingDelta(index=0, text=" think."),
        BlockStop(index=0),
        TextStart(index=1),
        TextDelta(index=1, text="Answer"),
        BlockStop(index=1),
        StreamFinish(stop_reason="stop"),
        StreamEnd(),
    ]


def call(k: int, **fields: Any) -> dict[str, Any]:
    return {"tool_calls": [{"index": k, **fields}]}


def test_decode_text_then_tool_call_and_interleaved_fragments() -> None:
    events = feed_all(
        StreamDecoder(),
        [
            chunk({"role": "assistant", "content": "Sure."}),
            chunk(call(0, id="c0", type="function", function={"name": "a", "arguments": '{"x":'})),
            chunk(call(1, id="c1", type="function", function={"name": "b", "arguments": ""})),
            chunk(call(0, function={"arguments": "1}"})),  # back to the first call
            chunk(call(1, function={"arguments": "{}"})),
            chunk({}, "tool_calls"),
            chunk(None, usage={"prompt_tokens": 9, "completion_tokens": 4, "total_tokens": 13}),
            "[DONE]",
        ],
    )
    assert events[1:] == [
        TextStart(index=0),
        TextDelta(index=0, text="Sure."),
        BlockStop(index=0),
        # The first call streams live, fragments after the second one started included; the second is held
        # and written whole once the first closes, so both blocks stay sequential and nothing is lost.
        ToolCallStart(index=1, id="c0", name="a"),
        ToolCallDelta(index=1, arguments='{"x":'),
        ToolCallDelta(index=1, arguments="1}"),
        BlockStop(index=1),
        ToolCallStart(index=2, id="c1", name="b"),
        ToolCallDelta(index=2, arguments="{}"),
        BlockStop(index=2),
        StreamFinish(stop_reason="tool_calls"),
        StreamUsage(usage=Usage(input_tokens=9, output_tokens=4)),
        StreamEnd(),
    ]


def test_decode_calls_one_after_another_and_text_after_them_go_out_as_they_arrive() -> None:
    # A call whose arguments are whole JSON closes when something else begins; the rest is not held.
    decoder = StreamDecoder()
    decoder.feed(chunk({"role": "assistant", "content": None}))
    assert decoder.feed(
        chunk(call(0, id="c0", type="function", function={"name": "a", "arguments": "{}"}))
    ) == [
        ToolCallStart(index=0, id="c0", name="a"),
        ToolCallDelta(index=0, arguments="{}"),
    ]
    assert decoder.feed(
        chunk(call(1, id="c1", type="function", function={"name": "b", "arguments": ""}))
    ) == [
        BlockStop(index=0),
        ToolCallStart(index=1, id="c1", name="b"),
    ]
    assert decoder.feed(chunk(call(1, function={"arguments": '{"k":1}'}))) == [
        ToolCallDelta(index=1, arguments='{"k":1}')
    ]
    assert decoder.feed(chunk({"content": "Done."})) == [
        BlockStop(index=1),
        TextStart(index=2),
        TextDelta(index=2, text="Done."),
    ]


def test_decode_tool_calls_without_index() -> None:
    # Some OpenAI-compatible servers send each complete call without an `index`.
    events = feed_all(
        StreamDecoder(),
        [
            chunk({"tool_calls": [{"id": "a", "function": {"name": "f", "arguments": "{}"}}]}),
            chunk({"tool_calls": [{"id": "b", "function": {"name": "g", "arguments": '{"k":1}'}}]}),
            chunk({}, "tool_calls"),
            "[DONE]",
        ],
    )
    assert [e for e in events if isinstance(e, ToolCallStart | ToolCallDelta)] == [
        ToolCallStart(index=0, id="a", name="f"),
        ToolCallDelta(index=0, arguments="{}"),
        ToolCallStart(index=1, id="b", name="g"),
        ToolCallDelta(index=1, arguments='{"k":1}'),
    ]


def test_decode_done_without_finish_reason_still_finishes() -> None:
    decoder = StreamDecoder()
    events = feed_all(decoder, [chunk({"content": "partial"}), "[DONE]"])
    assert events[-3:] == [BlockStop(index=0), StreamFinish(stop_reason="stop"), StreamEnd()]
    assert decoder.done and decoder.feed(chunk({"content": "late"})) == []


def test_decode_mid_stream_error() -> None:
    decoder = StreamDecoder()
    events = feed_all(
        decoder,
        [
            chunk({"content": "Hel"}),
            json.dumps(
                {
                    "id": "gen-1",
                    "object": "chat.completion.chunk",
                    "error": {"code": "server_error", "message": "Provider disconnected"},
                    "choices": [{"index": 0, "delta": {"content": ""}, "finish_reason": "error"}],
                }
            ),
        ],
    )
    assert events[-1] == StreamError(type="server_error", message="Provider disconnected")
    assert decoder.done
    assert decoder.feed("[DONE]") == []
    other = StreamDecoder()
    assert other.feed('{"error":{"message":"Overloaded","type":"overloaded_error"}}') == [
        StreamError(type="overloaded_error", message="Overloaded")
    ]


def test_decode_malformed_chunk_is_a_stream_error() -> None:
    decoder = StreamDecoder()
    events = decoder.feed("{not json")
    assert len(events) == 1 and isinstance(events[0], StreamError)
    assert decoder.done


def test_decoder_keeps_last_usage() -> None:
    decoder = StreamDecoder()
    assert decoder.usage is None
    decode = feed_all(
        decoder,
        [
            chunk(
                {"content": "x"},
                "stop",
                usage={
                    "prompt_tokens": 2048,
                    "completion_tokens": 3,
                    "prompt_tokens_details": {"cached_tokens": 1920},
                    "completion_tokens_details": {"reasoning_tokens": None},
                },
            ),
            "[DONE]",
        ],
    )
    expected = Usage(input_tokens=2048, output_tokens=3, cached_input_tokens=1920)
    assert decoder.usage == expected
    # Usage on the finishing chunk comes after StreamFinish, as the canonical order requires.
    assert kinds(decode[-3:]) == ["StreamFinish", "StreamUsage", "StreamEnd"]


# ---- StreamEncoder ---------------------------------------------------------------------------------------


def encode_all(events: list[StreamEvent], **kwargs: Any) -> bytes:
    encoder = StreamEncoder(**{"model": "my-model", "include_usage": True, **kwargs})
    out = b"".join(encoder.encode(e) for e in events)
    assert encoder.done
    assert encoder.encode(StreamEnd()) == b""  # nothing after the end
    return out


def parse_chunks(raw: bytes) -> tuple[list[dict[str, Any]], list[ChatCompletionChunk]]:
    payloads = sse_payloads(raw)
    assert payloads[-1] == "[DONE]"
    dicts = [json.loads(p) for p in payloads[:-1]]
    return dicts, [ChatCompletionChunk.model_validate(d) for d in dicts]


def accumulate(chunks: list[ChatCompletionChunk]) -> Any:
    state: ChatCompletionStreamState[None] = ChatCompletionStreamState()
    for c in chunks:
        state.handle_chunk(c)
    return state.get_final_completion()


@pytest.mark.parametrize(
    "fixture",
    [
        "openai/chat_text.sse",
        "openai/chat_tool_calls.sse",
        "openai/chat_multiline_data.sse",
        "openrouter/chat_text.sse",
    ],
)
def test_encoder_output_rebuilds_the_upstream_completion_in_the_sdk(fixture: str) -> None:
    raw = (FIXTURES / fixture).read_bytes()
    upstream = accumulate([ChatCompletionChunk.model_validate(json.loads(p)) for p in sse_payloads(raw)[:-1]])
    out = encode_all(decode_stream(fixture), created=1700000000)
    dicts, chunks = parse_chunks(out)
    ours = accumulate(chunks)

    assert len({c.id for c in chunks}) == 1 and chunks[0].id.startswith("chatcmpl-")
    # The model the upstream named in its chunks, over the encoder's own ("my-model").
    assert all(c.model == upstream.model and c.created == 1700000000 for c in chunks)
    assert all(d["object"] == "chat.completion.chunk" and d["system_fingerprint"] is None for d in dicts)
    assert dicts[0]["choices"][0]["delta"] == {"role": "assistant", "content": ""}
    assert all("usage" in d for d in dicts) and all(d["usage"] is None for d in dicts[:-1])
    assert dicts[-1]["choices"] == []

    got, want = ours.choices[0], upstream.choices[0]
    assert (got.message.content or "") == (want.message.content or "")
    assert got.finish_reason == want.finish_reason
    got_calls = [(c.id, c.function.name, c.function.arguments) for c in got.message.tool_calls or []]
    want_calls = [(c.id, c.function.name, c.function.arguments) for c in want.message.tool_calls or []]
    assert got_calls == want_calls
    assert ours.usage is not None and upstream.usage is not None
    assert ours.usage.prompt_tokens == upstream.usage.prompt_tokens
    assert ours.usage.completion_tokens == upstream.usage.completion_tokens
    assert ours.usage.total_tokens == upstream.usage.total_tokens


def test_encoder_reports_cached_tokens() -> None:
    events: list[StreamEvent] = [
        StreamStart(id="msg_1", model="claude"),
        TextStart(index=0),
        TextDelta(index=0, text="hi"),
        BlockStop(index=0),
        StreamFinish(stop_reason="stop_sequence"),
        StreamUsage(
            usage=Usage(
                input_tokens=3000, output_tokens=2, cached_input_tokens=2500, cache_creation_input_tokens=400
            )
        ),
        StreamEnd(),
    ]
    dicts, chunks = parse_chunks(encode_all(events))
    assert chunks[0].id == "chatcmpl-msg_1"
    final = accumulate(chunks)
    assert final.choices[0].finish_reason == "stop"
    assert final.usage.prompt_tokens == 3000 and final.usage.total_tokens == 3002
    assert final.usage.prompt_tokens_details.cached_tokens == 2500
    assert final.usage.prompt_tokens_details.cache_write_tokens == 400
    # What the client sees decodes back to the same canonical usage.
    assert usage_from_chunk(dicts[-1]) == Usage(
        input_tokens=3000, output_tokens=2, cached_input_tokens=2500, cache_creation_input_tokens=400
    )


def test_encoder_without_include_usage_has_no_usage_at_all() -> None:
    out = encode_all(decode_stream("openai/chat_text.sse"), include_usage=False)
    dicts, chunks = parse_chunks(out)
    assert all("usage" not in d for d in dicts)
    assert all(d["choices"] for d in dicts)  # no trailing usage-only chunk
    assert accumulate(chunks).choices[0].message.content == "Hello! How can I help you today?"


def test_encoder_numbers_tool_calls_from_zero_after_a_text_block() -> None:
    events: list[StreamEvent] = [
        StreamStart(id="msg_2", model="claude"),
        TextStart(index=0),
        TextDelta(index=0, text="Checking both."),
        BlockStop(index=0),
        ToolCallStart(index=1, id="toolu_a", name="get_weather"),
        ToolCallDelta(index=1, arguments='{"city":'),
        ToolCallDelta(index=1, arguments='"Zurich"}'),
        BlockStop(index=1),
        ToolCallStart(index=2, id="toolu_b", name="get_weather"),
        ToolCallDelta(index=2, arguments=ODD_ARGS),
        BlockStop(index=2),
        StreamFinish(stop_reason="tool_calls"),
        StreamEnd(),
    ]
    dicts, chunks = parse_chunks(encode_all(events, id="req-9"))
    indices = [tc["index"] for d in dicts for ch in d["choices"] for tc in ch["delta"].get("tool_calls", [])]
    assert indices == [0, 0, 0, 1, 1]
    assert chunks[0].id == "chatcmpl-req-9"
    final = accumulate(chunks)
    message = final.choices[0].message
    assert message.content == "Checking both."
    assert [(c.id, c.function.arguments) for c in message.tool_calls] == [
        ("toolu_a", '{"city":"Zurich"}'),
        ("toolu_b", ODD_ARGS),
    ]
    assert final.choices[0].finish_reason == "tool_calls"
    assert final.usage.total_tokens == 0  # no usage was reported upstream: zeros


def test_encoder_drops_thinking() -> None:
    events: list[StreamEvent] = [
        StreamStart(id="x", model="m"),
        ThinkingStart(index=0),
        ThinkingDelta(index=0, text="private"),
        ThinkingDelta(index=0, signature="sig"),
        BlockStop(index=0),
        TextStart(index=1),
        TextDelta(index=1, text="public"),
        BlockStop(index=1),
        StreamFinish(stop_reason="stop"),
        StreamEnd(),
    ]
    out = encode_all(events)
    assert b"private" not in out
    _, chunks = parse_chunks(out)
    assert accumulate(chunks).choices[0].message.content == "public"


def test_encoder_stream_error_is_final_and_parses_as_error() -> None:
    encoder = StreamEncoder(model="m", include_usage=True)
    out = encoder.encode(StreamStart(id="x", model="m")) + encoder.encode(TextDelta(index=0, text="Hel"))
    error = encoder.encode(StreamError(type="overloaded_error", message="Overloaded"))
    assert error.startswith(b"data: ") and error.endswith(b"\n\n")
    assert json.loads(error[6:]) == {
        "error": {"message": "Overloaded", "type": "overloaded_error", "code": None, "param": None}
    }
    assert encoder.done
    assert encoder.encode(TextDelta(index=0, text="more")) == b""
    assert encoder.encode(StreamEnd()) == b""
    assert b"[DONE]" not in out + error


def test_encoder_ends_cleanly_without_finish() -> None:
    _, chunks = parse_chunks(encode_all([StreamStart(id="x", model="m"), StreamEnd()], include_usage=False))
    assert accumulate(chunks).choices[0].finish_reason == "stop"


# ---- the real openai client over the wire ----------------------------------------------------------------


def client_for(body: bytes) -> openai.OpenAI:
    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, headers={"content-type": "text/event-stream"}, content=body)

    return openai.OpenAI(
        api_key="sk-test",
        base_url="http://gateway.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
        max_retries=0,
    )


def test_openai_client_streams_our_output() -> None:
    out = encode_all(decode_stream("openai/chat_tool_calls.sse"))
    with client_for(out) as client:
        stream = client.chat.completions.create(
            model="my-model", messages=[{"role": "user", "content": "weather?"}], stream=True
        )
        chunks = list(stream)
    final = accumulate(chunks)
    assert [c.function.name for c in final.choices[0].message.tool_calls] == ["get_weather", "get_weather"]
    assert final.usage.total_tokens == 170


def test_openai_client_raises_on_our_stream_error() -> None:
    encoder = StreamEncoder(model="m", include_usage=False)
    events: list[StreamEvent] = [
        StreamStart(id="x", model="m"),
        TextDelta(index=0, text="partial"),
        StreamError(type="overloaded_error", message="Upstream overloaded"),
    ]
    out = b"".join(encoder.encode(e) for e in events)
    with client_for(out) as client:
        stream = client.chat.completions.create(
            model="m", messages=[{"role": "user", "content": "hi"}], stream=True
        )
        received: list[str] = []
        with pytest.raises(openai.APIError, match="Upstream overloaded"):
            for c in stream:
                received.append(c.choices[0].delta.content or "")
    assert "".join(received) == "partial"


def test_encode_response_through_the_openai_client() -> None:
    body = encode_response(decode_response(fixture_json("openai/chat_text.json")), model="alias")

    def handler(request: httpx.Request) -> httpx.Response:
        return httpx.Response(200, json=body)

    with openai.OpenAI(
        api_key="sk-test",
        base_url="http://gateway.test/v1",
        http_client=httpx.Client(transport=httpx.MockTransport(handler)),
    ) as client:
        completion = client.chat.completions.create(
            model="alias", messages=[{"role": "user", "content": "?"}]
        )
    assert completion.choices[0].message.content is not None
    assert completion.choices[0].message.content.startswith("Prompt caching reuses")
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1024
