"""Translation edge cases found by an audit against the providers' stream formats and the official SDKs.

- A Claude tool call without parameters streams to a chat client as arguments `{}` (never ``""``).
- An OpenAI-compatible stream whose tool call has no id still gives every client format an id.
- A tool call OpenAI answers with finish_reason `stop` (a call forced by name) reaches an Anthropic client
  with stop_reason `tool_use`, streaming or not.
- Structured outputs (a JSON schema, strict tools) cross between the OpenAI and Anthropic formats.
- Parallel tool calls whose fragments arrive interleaved reach Anthropic and Responses clients whole.
- So does a tool call with text or reasoning between its argument fragments.
- Parallel tool calls streamed one after another reach an Anthropic client live, not held to the end.
- An upstream stream a translator cannot take ends with the client's error event, never a second response.
"""

from __future__ import annotations

import dataclasses
import json
import logging
import threading
from typing import Any

import anthropic
import openai
import pydantic
import pytest

from tests.conftest import UPSTREAM_KEYS, GatewaySetup
from tests.fakes.upstream import Reply, fixture_json
from worker.errors import UpstreamError

WEATHER_TOOLS = [
    {"name": "get_weather", "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}}}
]
CALL = {
    "id": "call_A",
    "type": "function",
    "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
}


def _anthropic_stream(events: list[dict[str, Any]]) -> Reply:
    return Reply.stream(b"".join(f"event: {e['type']}\ndata: {json.dumps(e)}\n\n".encode() for e in events))


def _chat_stream(chunks: list[dict[str, Any]]) -> Reply:
    return Reply.stream(b"".join(f"data: {json.dumps(c)}\n\n".encode() for c in chunks) + b"data: [DONE]\n\n")


def _chunk(delta: dict[str, Any] | None = None, finish: str | None = None) -> dict[str, Any]:
    choice = {"index": 0, "delta": delta or {}, "logprobs": None, "finish_reason": finish}
    return {
        "id": "chatcmpl-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [choice],
    }


def _streamed_to_anthropic_client(gateway: GatewaySetup, model: str) -> Any:
    """The final message an Anthropic SDK client accumulates from a streamed weather question to `model`."""
    with gateway.anthropic().messages.stream(
        model=model,
        max_tokens=100,
        messages=[{"role": "user", "content": "weather?"}],
        tools=WEATHER_TOOLS,  # type: ignore[arg-type]
    ) as stream:
        return stream.get_final_message()


def _no_argument_tool_stream() -> Reply:
    """What Anthropic streams for a tool without parameters: `input: {}` and one empty JSON delta."""
    usage = {"input_tokens": 10, "output_tokens": 1}
    message = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": [],
    }
    block = {"type": "tool_use", "id": "toolu_01A", "name": "GetTime", "input": {}}
    return _anthropic_stream(
        [
            {"type": "message_start", "message": {**message, "stop_reason": None, "usage": usage}},
            {"type": "content_block_start", "index": 0, "content_block": block},
            {
                "type": "content_block_delta",
                "index": 0,
                "delta": {"type": "input_json_delta", "partial_json": ""},
            },
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "tool_use"}, "usage": {"output_tokens": 5}},
            {"type": "message_stop"},
        ]
    )


class GetTime(pydantic.BaseModel):
    """Current time."""


def test_a_claude_tool_call_without_parameters_streams_as_an_empty_json_object(gateway: GatewaySetup) -> None:
    gateway.fake.set("/v1/messages", _no_argument_tool_stream())
    tools: Any = [{"type": "function", "function": {"name": "GetTime", "parameters": {"type": "object"}}}]
    chunks = list(
        gateway.openai().chat.completions.create(
            model="claude-sonnet-4-6",
            messages=[{"role": "user", "content": "time?"}],
            stream=True,
            tools=tools,
        )
    )
    calls = [tc for c in chunks if c.choices for tc in (c.choices[0].delta.tool_calls or [])]
    assert json.loads("".join(tc.function.arguments or "" for tc in calls if tc.function)) == {}
    # The SDK's own stream helper parses the arguments into the tool's model.
    gateway.fake.set("/v1/messages", _no_argument_tool_stream())
    with gateway.openai().chat.completions.stream(
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "time?"}],
        tools=[openai.pydantic_function_tool(GetTime)],
    ) as stream:
        final = stream.get_final_completion()
    call = (final.choices[0].message.tool_calls or [])[0]
    assert call.function.parsed_arguments == GetTime()  # type: ignore[union-attr]


def _tool_call_without_id() -> Reply:
    fragment = {
        "index": 0,
        "type": "function",
        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
    }
    return _chat_stream(
        [
            _chunk({"role": "assistant", "content": None}),
            _chunk({"tool_calls": [fragment]}),
            _chunk(finish="tool_calls"),
        ]
    )


def test_a_streamed_tool_call_without_an_id_gets_one_in_every_client_format(gateway: GatewaySetup) -> None:
    gateway.fake.set("/local/v1/chat/completions", _tool_call_without_id())
    tool: Any = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    with gateway.openai().responses.stream(model="local/qwen3", input="weather?", tools=[tool]) as stream:
        output = stream.get_final_response().output
    call_ids = [o.call_id for o in output if o.type == "function_call"]
    assert len(call_ids) == 1 and call_ids[0].startswith("call_") and len(call_ids[0]) > len("call_")

    gateway.fake.set("/local/v1/chat/completions", _tool_call_without_id())
    message = _streamed_to_anthropic_client(gateway, "local/qwen3")
    tool_use = [b for b in message.content if b.type == "tool_use"]
    assert len(tool_use) == 1 and tool_use[0].id.startswith("call_")


def test_a_tool_call_ending_with_stop_is_a_tool_use_turn_for_an_anthropic_client(
    gateway: GatewaySetup,
) -> None:
    body = {
        "id": "chatcmpl-1",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "tool_calls": [CALL]},
                "logprobs": None,
                "finish_reason": "stop",  # what OpenAI answers a call forced by name with
            }
        ],
        "usage": {"prompt_tokens": 10, "completion_tokens": 5, "total_tokens": 15},
    }
    gateway.fake.set("/v1/chat/completions", Reply.json(body))
    client = gateway.anthropic()
    forced: Any = {"type": "tool", "name": "get_weather"}
    message = client.messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        tools=WEATHER_TOOLS,  # type: ignore[arg-type]
        tool_choice=forced,
        messages=[{"role": "user", "content": "weather?"}],
    )
    assert [b.type for b in message.content] == ["tool_use"] and message.stop_reason == "tool_use"

    start = {**CALL, "index": 0, "function": {"name": "get_weather", "arguments": ""}}
    rest = {"index": 0, "function": {"arguments": '{"city":"Paris"}'}}
    gateway.fake.set(
        "/v1/chat/completions",
        _chat_stream(
            [
                _chunk({"role": "assistant", "content": None, "tool_calls": [start]}),
                _chunk({"tool_calls": [rest]}),
                _chunk(finish="stop"),
            ]
        ),
    )
    with client.messages.stream(
        model="gpt-4o-mini",
        max_tokens=50,
        tools=WEATHER_TOOLS,  # type: ignore[arg-type]
        tool_choice=forced,
        messages=[{"role": "user", "content": "weather?"}],
    ) as stream:
        streamed = stream.get_final_message()
    assert streamed.stop_reason == "tool_use"
    assert [b.input for b in streamed.content if b.type == "tool_use"] == [{"city": "Paris"}]


SCHEMA = {
    "type": "object",
    "properties": {"city": {"type": "string"}},
    "required": ["city"],
    "additionalProperties": False,
}


def _claude_reply(text: str) -> Reply:
    return Reply.json(
        {
            "id": "msg_1",
            "type": "message",
            "role": "assistant",
            "model": "claude-sonnet-4-6",
            "content": [{"type": "text", "text": text}],
            "stop_reason": "end_turn",
            "stop_sequence": None,
            "usage": {"input_tokens": 10, "output_tokens": 5},
        }
    )


def test_structured_outputs_cross_between_openai_and_anthropic(gateway: GatewaySetup) -> None:
    """A JSON schema the client asks the reply to follow reaches the upstream in its own format."""
    wanted = {"format": {"type": "json_schema", "schema": SCHEMA}}
    gateway.fake.set("/v1/messages", _claude_reply('{"city":"Paris"}'))
    completion = gateway.openai().chat.completions.create(
        model="claude-sonnet-4-6",
        messages=[{"role": "user", "content": "Where?"}],
        response_format={
            "type": "json_schema",
            "json_schema": {"name": "place", "schema": SCHEMA, "strict": True},
        },
    )
    assert json.loads(completion.choices[0].message.content or "") == {"city": "Paris"}
    assert gateway.fake.last().json["output_config"] == wanted

    gateway.fake.set("/v1/messages", _claude_reply('{"city":"Paris"}'))
    text: Any = {"format": {"type": "json_schema", "name": "place", "schema": SCHEMA, "strict": True}}
    gateway.openai().responses.create(model="claude-sonnet-4-6", input="Where?", text=text)
    assert gateway.fake.last().json["output_config"] == wanted

    # A strict tool stays strict.
    tool: Any = {"type": "function", "function": {"name": "find", "parameters": SCHEMA, "strict": True}}
    gateway.fake.set("/v1/messages", _claude_reply("ok"))
    gateway.openai().chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "Where?"}], tools=[tool]
    )
    assert gateway.fake.last().json["tools"][0]["strict"] is True

    # The other way: an Anthropic client's output_config.format reaches OpenAI as a strict json_schema.
    client = gateway.anthropic()
    config: Any = wanted
    client.messages.create(
        model="gpt-4o-mini",
        max_tokens=50,
        messages=[{"role": "user", "content": "Where?"}],
        output_config=config,
    )
    assert gateway.fake.last().json["response_format"] == {
        "type": "json_schema",
        "json_schema": {"name": "response", "schema": SCHEMA, "strict": True},
    }
    bad: Any = {"format": {"type": "json_schema", "schema": "not an object"}}
    try:
        client.messages.create(
            model="gpt-4o-mini",
            max_tokens=50,
            messages=[{"role": "user", "content": "Where?"}],
            output_config=bad,
        )
    except anthropic.BadRequestError as exc:
        assert "output_config.format.schema" in str(exc)
    else:
        raise AssertionError("a malformed output_config was accepted")


def _interleaved_tool_calls() -> Reply:
    """Two parallel calls whose argument fragments alternate by index (legal: chat clients merge by index)."""

    def fragment(index: int, arguments: str, call_id: str | None = None) -> dict[str, Any]:
        call: dict[str, Any] = {"index": index, "function": {"arguments": arguments}}
        if call_id:  # the call's first chunk: id, type and name
            call.update(id=call_id, type="function", function={"name": "get_weather", "arguments": arguments})
        return _chunk({"tool_calls": [call]})

    return _chat_stream(
        [
            _chunk({"role": "assistant", "content": None}),
            fragment(0, "", "call_A"),
            fragment(1, "", "call_B"),
            fragment(0, '{"city":'),
            fragment(1, '{"city":'),
            fragment(0, '"Paris"}'),
            fragment(1, '"Lyon"}'),
            _chunk(finish="tool_calls"),
        ]
    )


def test_interleaved_tool_call_fragments_all_reach_clients_of_sequential_formats(
    gateway: GatewaySetup,
) -> None:
    gateway.fake.set("/v1/chat/completions", _interleaved_tool_calls())
    message = _streamed_to_anthropic_client(gateway, "gpt-4o-mini")
    assert [(b.id, b.input) for b in message.content if b.type == "tool_use"] == [
        ("call_A", {"city": "Paris"}),
        ("call_B", {"city": "Lyon"}),
    ]

    gateway.fake.set("/local/v1/chat/completions", _interleaved_tool_calls())
    tool: Any = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
    with gateway.openai().responses.stream(model="local/qwen3", input="weather?", tools=[tool]) as rstream:
        output = rstream.get_final_response().output
    calls = [(o.call_id, json.loads(o.arguments)) for o in output if o.type == "function_call"]
    assert calls == [("call_A", {"city": "Paris"}), ("call_B", {"city": "Lyon"})]


def _tool_call_with_other_content_between_its_fragments(between: dict[str, Any]) -> Reply:
    """A call whose argument fragments have text or reasoning between them, the first one in the same chunk
    (legal: a delta has both fields, and chat clients merge a call's fragments by index)."""

    def fragment(arguments: str, **fields: Any) -> dict[str, Any]:
        return {"tool_calls": [{"index": 0, "function": {"arguments": arguments}}], **fields}

    start = {
        "index": 0,
        "id": "call_A",
        "type": "function",
        "function": {"name": "get_weather", "arguments": ""},
    }
    return _chat_stream(
        [
            _chunk({"role": "assistant", "content": "", "tool_calls": [start]}),
            _chunk(fragment('{"city":', **between)),
            _chunk(between),
            _chunk(fragment('"Paris"}')),
            _chunk(finish="tool_calls"),
        ]
    )


def test_text_or_reasoning_between_a_tool_calls_fragments_does_not_cut_its_arguments(
    gateway: GatewaySetup,
) -> None:
    gateway.fake.set(
        "/v1/chat/completions", _tool_call_with_other_content_between_its_fragments({"content": "Checking."})
    )
    message = _streamed_to_anthropic_client(gateway, "gpt-4o-mini")
    assert [(b.type, b.input if b.type == "tool_use" else b.text) for b in message.content] == [
        ("tool_use", {"city": "Paris"}),
        ("text", "Checking.Checking."),  # what came between, written once the call is whole
    ]

    gateway.fake.set(
        "/api/v1/chat/completions", _tool_call_with_other_content_between_its_fragments({"reasoning": "Hm."})
    )
    message = _streamed_to_anthropic_client(gateway, "deepseek/deepseek-v3")
    assert [(b.type, b.input if b.type == "tool_use" else b.thinking) for b in message.content] == [
        ("tool_use", {"city": "Paris"}),
        ("thinking", "Hm.Hm."),
    ]

    for between in ({"content": "Checking."}, {"reasoning": "Hm."}):
        gateway.fake.set(
            "/local/v1/chat/completions", _tool_call_with_other_content_between_its_fragments(between)
        )
        tool: Any = {"type": "function", "name": "get_weather", "parameters": {"type": "object"}}
        with gateway.openai().responses.stream(model="local/qwen3", input="weather?", tools=[tool]) as stream:
            output = stream.get_final_response().output
        assert [(o.call_id, json.loads(o.arguments)) for o in output if o.type == "function_call"] == [
            ("call_A", {"city": "Paris"})
        ]


def test_parallel_tool_calls_streamed_one_after_another_reach_an_anthropic_client_live(
    gateway: GatewaySetup,
) -> None:
    """OpenAI streams parallel calls one after another (call 0 whole, then call 1): call 1 goes out as it
    arrives, not held until the upstream finishes."""

    def start(index: int, call_id: str) -> dict[str, Any]:
        fn = {"name": "get_weather", "arguments": ""}
        return _chunk({"tool_calls": [{"index": index, "id": call_id, "type": "function", "function": fn}]})

    def fragment(index: int, arguments: str) -> dict[str, Any]:
        return _chunk({"tool_calls": [{"index": index, "function": {"arguments": arguments}}]})

    chunks = [
        _chunk({"role": "assistant", "content": None}),
        start(0, "call_A"),
        fragment(0, '{"city":'),
        fragment(0, '"Paris"}'),
        start(1, "call_B"),
        fragment(1, '{"city":'),  # the upstream pauses after this one until the client has seen call 1
        fragment(1, '"Lyon"}'),
        _chunk(finish="tool_calls"),
    ]
    resume = threading.Event()
    reply = dataclasses.replace(_chat_stream(chunks), pause_after=6, resume=resume)
    gateway.fake.set("/v1/chat/completions", reply)
    seen: list[tuple[str, int | None]] = []
    while_paused: list[tuple[str, int | None]] = []
    arguments: dict[int, str] = {}
    with gateway.anthropic().messages.create(
        model="gpt-4o-mini",
        max_tokens=100,
        messages=[{"role": "user", "content": "weather?"}],
        tools=WEATHER_TOOLS,  # type: ignore[arg-type]
        stream=True,
    ) as stream:
        for event in stream:
            seen.append((event.type, getattr(event, "index", None)))
            if event.type == "content_block_delta" and event.delta.type == "input_json_delta":
                arguments[event.index] = arguments.get(event.index, "") + event.delta.partial_json
                if event.index == 1 and not resume.is_set():
                    while_paused = list(seen)
                    resume.set()
    assert while_paused[-4:] == [
        ("content_block_delta", 0),
        ("content_block_stop", 0),
        ("content_block_start", 1),
        ("content_block_delta", 1),
    ]
    assert {i: json.loads(a) for i, a in arguments.items()} == {0: {"city": "Paris"}, 1: {"city": "Lyon"}}
    assert seen[-2:] == [("message_delta", None), ("message_stop", None)]


def _claude_stream(message: dict[str, Any]) -> Reply:
    return _anthropic_stream(
        [
            {"type": "message_start", "message": {"type": "message", "role": "assistant", **message}},
            {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
            {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Hi"}},
            {"type": "content_block_stop", "index": 0},
            {"type": "message_delta", "delta": {"stop_reason": "end_turn"}, "usage": {"output_tokens": 3}},
            {"type": "message_stop"},
        ]
    )


def test_a_usage_count_that_is_not_an_integer_does_not_break_a_translated_stream(
    gateway: GatewaySetup,
) -> None:
    message = {"id": "msg_1", "model": "claude-sonnet-4-6", "content": [], "stop_reason": None}
    gateway.fake.set("/v1/messages", _claude_stream({**message, "usage": {"input_tokens": "10"}}))
    chunks = list(
        gateway.openai().chat.completions.create(
            model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == "Hi"
    assert chunks[-1].choices[0].finish_reason == "stop"


def test_a_stream_the_translator_cannot_take_ends_with_the_clients_error_event(
    gateway: GatewaySetup, caplog: pytest.LogCaptureFixture
) -> None:
    """An upstream event of a shape no translator expects (here a numeric message id) fails mid-stream: the
    client gets the error event of its format, once, and the failure is logged once."""
    message = {"model": "claude-sonnet-4-6", "content": [], "usage": {"input_tokens": 10, "output_tokens": 1}}
    with caplog.at_level(logging.ERROR, logger="trex.error"):
        gateway.fake.set("/v1/messages", _claude_stream({**message, "id": 12345}))
        with pytest.raises(openai.APIError, match="could not translate the upstream stream"):
            list(
                gateway.openai().chat.completions.create(
                    model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}], stream=True
                )
            )
        gateway.fake.set("/v1/messages", _claude_stream({**message, "id": 12345}))
        events = list(gateway.openai().responses.create(model="claude-sonnet-4-6", input="hi", stream=True))
        assert [e.type for e in events[-2:]] == ["error", "response.failed"]
        assert "could not translate the upstream stream" in events[-2].message  # type: ignore[union-attr]
    failures = [r for r in caplog.records if r.name == "trex.error"]
    assert len(failures) == 2 and all(r.exc_info for r in failures)


def test_an_html_error_page_upstream_reaches_the_client_as_its_text_not_its_markup(
    gateway: GatewaySetup,
) -> None:
    """A load balancer's error page opens with kilobytes of styles: the message is the page's text."""
    page = (
        "<!DOCTYPE html><html><head><title>example.com | 502: Bad gateway</title><style>"
        + "body{font-family:system-ui;margin:0}.cf-error{color:#b00}" * 60
        + "</style><script>var cfRay='8f1c2a';</script></head><body>\n\n  <h1>Bad gateway</h1>\n"
        "  <p>The web server reported a bad gateway error.</p><p>Ray ID: 8f1c2a9b7e</p></body></html>"
    ).encode()
    gateway.fake.set("/v1/chat/completions", Reply(status=502, body=page, content_type="text/html"))
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    assert caught.value.status_code == 502
    body = caught.value.body
    assert isinstance(body, dict)
    message = str(body.get("message"))
    assert "The web server reported a bad gateway error." in message and "Ray ID: 8f1c2a9b7e" in message
    assert (
        "<" not in message and "font-family" not in message and "cfRay" not in message and "  " not in message
    )


@pytest.mark.timeout(12)
def test_a_malformed_html_error_page_does_not_stall_the_worker(gateway: GatewaySetup) -> None:
    """16 KiB of unclosed tags took `html.parser` 4-16 s, on the event loop: every client of the worker
    waited (four such pages took the old code over 16 s). The error is answered at once, with the page's
    text; an unclosed script hides what follows it."""
    gateway.fake.set(
        "/v1/chat/completions",
        Reply(status=502, body=b"<a></a>Gateway down" + b"<a " * 5455, content_type="text/html"),
    )
    for model in ("gpt-4o-mini", "gpt-4o", "gpt-4.1", "gpt-4.1-mini"):  # one circuit breaker each
        with pytest.raises(openai.APIStatusError) as caught:
            gateway.openai().chat.completions.create(
                model=model, messages=[{"role": "user", "content": "hi"}]
            )
        assert caught.value.status_code == 502 and "Gateway down" in str(caught.value.body)
    gateway.fake.set(
        "/v1/responses",
        Reply(status=503, body=b"<p>Busy</p><script>" + b"<!--" * 4000, content_type="text/html"),
    )
    with pytest.raises(openai.APIStatusError) as caught:
        gateway.openai().responses.create(model="gpt-4o-mini", input="hi")
    assert caught.value.status_code == 503 and "Busy" in str(caught.value.body)
    assert "<!--" not in str(caught.value.body)


def test_an_upstream_error_that_is_not_json_reaches_a_same_format_client_as_a_structured_error(
    gateway: GatewaySetup,
) -> None:
    page = b"<html><body><h1>502 Bad Gateway</h1></body></html>"
    gateway.fake.set("/v1/chat/completions", Reply(status=502, body=page))
    try:
        gateway.openai().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    except openai.APIStatusError as exc:
        assert exc.status_code == 502
        assert isinstance(exc.body, dict) and "502 Bad Gateway" in str(exc.body.get("message"))
    else:
        raise AssertionError("the upstream failure was not reported")
    # A JSON error body of the client's own format still passes through exactly.
    error = {
        "error": {"message": "Rate limit reached", "type": "requests", "param": None, "code": "rate_limit"}
    }
    gateway.fake.set("/v1/chat/completions", Reply.json(error, status=429))
    try:
        gateway.openai().chat.completions.create(
            model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}]
        )
    except openai.RateLimitError as exc:
        assert exc.body == error["error"]
    else:
        raise AssertionError("the upstream 429 was not reported")


def test_a_token_limit_under_one_and_an_empty_input_are_refused_before_the_upstream(
    gateway: GatewaySetup,
) -> None:
    """A limit of 0 was read as "unset" (Claude got 4096) and an empty Responses input became an empty
    conversation upstream; both are 400s naming the field, and nothing is forwarded."""
    responses, chat = gateway.openai().responses, gateway.openai().chat.completions
    cases: list[tuple[Any, dict[str, Any], str]] = [
        (
            responses.create,
            {"model": "claude-sonnet-4-5", "input": "hi", "max_output_tokens": 0},
            "max_output_tokens",
        ),
        (responses.create, {"model": "local/m", "input": "hi", "max_output_tokens": -5}, "max_output_tokens"),
        (
            chat.create,
            {"model": "claude-sonnet-4-5", "messages": [{"role": "user", "content": "hi"}], "max_tokens": 0},
            "max_tokens",
        ),
        (responses.create, {"model": "claude-sonnet-4-5", "input": ""}, "input"),
        (
            responses.create,
            {"model": "claude-sonnet-4-5", "input": [{"role": "user", "content": []}]},
            "input[0].content",
        ),
        (
            responses.create,
            {"model": "local/m", "input": [{"role": "user", "content": ""}]},
            "input[0].content",
        ),
    ]
    for create, body, param in cases:
        try:
            create(**body)
        except openai.BadRequestError as exc:
            assert isinstance(exc.body, dict) and exc.body.get("param") == param, (body, exc.body)
        else:
            raise AssertionError(f"accepted: {body}")
    try:
        gateway.anthropic().messages.create(
            model="gpt-4o-mini", max_tokens=0, messages=[{"role": "user", "content": "hi"}]
        )
    except anthropic.BadRequestError as exc:
        assert isinstance(exc.body, dict) and exc.body["error"]["message"].startswith("`max_tokens`")
    else:
        raise AssertionError("accepted max_tokens 0")
    assert gateway.fake.received == []


def test_a_failed_tool_call_reaches_a_chat_upstream_as_a_failure(gateway: GatewaySetup) -> None:
    """Anthropic marks a failed tool call with `is_error`; chat tool messages have no such flag, so the
    result says it instead of reading like the tool's normal output."""
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": "weather in Paris?"},
        {
            "role": "assistant",
            "content": [
                {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
            ],
        },
        {
            "role": "user",
            "content": [
                {
                    "type": "tool_result",
                    "tool_use_id": "toolu_1",
                    "is_error": True,
                    "content": "service unreachable",
                },
                {"type": "text", "text": "try again?"},
            ],
        },
    ]
    gateway.anthropic().messages.create(
        model="gpt-4o-mini", max_tokens=50, tools=WEATHER_TOOLS, messages=messages
    )  # type: ignore[arg-type]
    tool = [m for m in gateway.fake.last().json["messages"] if m["role"] == "tool"]
    assert tool == [{"role": "tool", "tool_call_id": "toolu_1", "content": "Error: service unreachable"}]
    messages[2]["content"][0]["is_error"] = False
    gateway.anthropic().messages.create(
        model="gpt-4o-mini", max_tokens=50, tools=WEATHER_TOOLS, messages=messages
    )  # type: ignore[arg-type]
    tool = [m for m in gateway.fake.last().json["messages"] if m["role"] == "tool"]
    assert tool[0]["content"] == "service unreachable"


def test_a_responses_stream_answered_with_one_json_body_is_replayed_as_a_stream(
    gateway: GatewaySetup,
) -> None:
    """A Responses server that ignores `stream` answers with the whole object: the client still gets a
    stream the SDK accumulates into that answer (a 502 before), with the usage billed from it."""
    doc = fixture_json("openai/responses_text.json")
    gateway.fake.set("/v1/responses", Reply.json(doc))
    with gateway.openai().responses.stream(model="gpt-4o-mini", input="hi") as stream:
        final = stream.get_final_response()
    assert final.output_text == doc["output"][0]["content"][0]["text"]
    assert final.status == "completed" and final.usage is not None
    assert (final.usage.input_tokens, final.usage.output_tokens) == (1536, 29)
    assert final.usage.input_tokens_details.cached_tokens == 1280
    call = {
        "type": "function_call",
        "id": "fc_1",
        "call_id": "call_9",
        "name": "get_weather",
        "arguments": '{"city":"Rome"}',
        "status": "completed",
    }
    gateway.fake.set("/v1/responses", Reply.json({**doc, "output": [call]}))
    with gateway.openai().responses.stream(model="gpt-4o-mini", input="weather?") as stream:
        final = stream.get_final_response()
    assert [(o.type, getattr(o, "call_id", None), getattr(o, "arguments", None)) for o in final.output] == [
        ("function_call", "call_9", '{"city":"Rome"}')
    ]


def test_an_openai_refusal_reaches_an_anthropic_client_as_a_refusal(gateway: GatewaySetup) -> None:
    """OpenAI puts a declined answer in `refusal` and ends with `stop`; an Anthropic client reads
    stop_reason `refusal` (not `end_turn`) with the refusal text, streaming or not."""
    text = "I'm sorry, I can't help with that."
    body = {
        "id": "chatcmpl-r",
        "object": "chat.completion",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [
            {
                "index": 0,
                "message": {"role": "assistant", "content": None, "refusal": text},
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 5, "completion_tokens": 9, "total_tokens": 14},
    }
    gateway.fake.set("/v1/chat/completions", Reply.json(body))
    client = gateway.anthropic()
    message = client.messages.create(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "x"}]
    )
    assert message.stop_reason == "refusal" and message.content[0].type == "text"
    assert message.content[0].text == text
    chunks = [
        _chunk({"role": "assistant", "content": None, "refusal": ""}),
        _chunk({"refusal": text[:10]}),
        _chunk({"refusal": text[10:]}),
        _chunk(finish="stop"),
    ]
    gateway.fake.set("/v1/chat/completions", _chat_stream(chunks))
    with client.messages.stream(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "x"}]
    ) as s:
        final = s.get_final_message()
    assert (
        final.stop_reason == "refusal" and final.content[0].type == "text" and final.content[0].text == text
    )


def test_claude_text_on_both_sides_of_a_tool_call_is_two_paragraphs_for_a_chat_client(
    gateway: GatewaySetup,
) -> None:
    """Chat has one content string: text before and after a tool call (or thinking) is joined as two
    paragraphs, not run together ("…check.Done"); adjacent text blocks (citations) still join as one."""
    use = {"type": "tool_use", "id": "toolu_1", "name": "get_weather", "input": {"city": "Paris"}}
    body = {
        "id": "msg_1",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-5",
        "content": [
            {"type": "text", "text": "Let me check."},
            use,
            {"type": "text", "text": "Calling it now"},
            {"type": "text", "text": ", with care."},
        ],
        "stop_reason": "tool_use",
        "stop_sequence": None,
        "usage": {"input_tokens": 5, "output_tokens": 9},
    }
    gateway.fake.set("/v1/messages", Reply.json(body))
    chat = gateway.openai().chat.completions
    done = chat.create(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "x"}], tools=[])  # type: ignore[arg-type]
    assert done.choices[0].message.content == "Let me check.\n\nCalling it now, with care."
    events: list[dict[str, Any]] = [
        {"type": "message_start", "message": {**body, "content": [], "stop_reason": None}},
        {"type": "content_block_start", "index": 0, "content_block": {"type": "text", "text": ""}},
        {"type": "content_block_delta", "index": 0, "delta": {"type": "text_delta", "text": "Let me check."}},
        {"type": "content_block_stop", "index": 0},
        {"type": "content_block_start", "index": 1, "content_block": {**use, "input": {}}},
        {
            "type": "content_block_delta",
            "index": 1,
            "delta": {"type": "input_json_delta", "partial_json": '{"city":"Paris"}'},
        },
        {"type": "content_block_stop", "index": 1},
        {"type": "content_block_start", "index": 2, "content_block": {"type": "text", "text": ""}},
        {
            "type": "content_block_delta",
            "index": 2,
            "delta": {"type": "text_delta", "text": "Calling it now"},
        },
        {"type": "content_block_stop", "index": 2},
        {
            "type": "message_delta",
            "delta": {"stop_reason": "tool_use", "stop_sequence": None},
            "usage": {"output_tokens": 9},
        },
        {"type": "message_stop"},
    ]
    gateway.fake.set("/v1/messages", _anthropic_stream(events))
    with chat.stream(model="claude-sonnet-4-5", messages=[{"role": "user", "content": "x"}]) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content == "Let me check.\n\nCalling it now"


def test_anthropic_clients_get_anthropic_error_types_and_request_ids(gateway: GatewaySetup) -> None:
    """Through a translated model an Anthropic client still gets Anthropic's own terms: `prompt is too long`
    (what Claude Code compacts on) for a context overflow, `billing_error` for a 402, an Anthropic type for a
    mid-stream error, a 400 for server-side fields another provider cannot run, and `request-id` (the SDK's
    `_request_id`)."""
    client = gateway.anthropic()
    hi: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
    overflow = {
        "error": {
            "message": "This model's maximum context length is 128000 tokens.",
            "type": "invalid_request_error",
            "code": "context_length_exceeded",
        }
    }
    gateway.fake.enqueue("/v1/chat/completions", Reply.json(overflow, status=400))
    try:
        client.messages.create(model="gpt-4o-mini", max_tokens=50, messages=hi)  # type: ignore[arg-type]
    except anthropic.BadRequestError as exc:
        assert isinstance(exc.body, dict)
        assert exc.body["error"]["message"].startswith(
            "prompt is too long: This model's maximum context length"
        )
    else:
        raise AssertionError("no error")
    gateway.fake.enqueue(
        "/v1/chat/completions", Reply.json({"error": {"message": "no funds", "type": "x"}}, status=402)
    )
    try:
        client.messages.create(model="gpt-4o-mini", max_tokens=50, messages=hi)  # type: ignore[arg-type]
    except anthropic.APIStatusError as exc:
        assert (
            exc.status_code == 402
            and isinstance(exc.body, dict)
            and exc.body["error"]["type"] == "billing_error"
        )
    else:
        raise AssertionError("no error")
    failing = [
        _chunk({"role": "assistant", "content": "par"}),
        {"error": {"message": "Provider disconnected", "code": "server_error"}},
    ]
    gateway.fake.enqueue("/v1/chat/completions", _chat_stream(failing))
    raw = client.messages.with_raw_response.create(
        model="gpt-4o-mini", max_tokens=50, messages=hi, stream=True
    )  # type: ignore[arg-type]
    text = raw.http_response.read().decode()
    assert '"type":"error","error":{"type":"api_error"' in text.replace(" ", "")
    try:
        client.messages.create(
            model="gpt-4o-mini",
            max_tokens=50,
            messages=hi,  # type: ignore[arg-type]
            extra_body={"mcp_servers": [{"type": "url", "url": "https://x.example/mcp", "name": "x"}]},
        )
    except anthropic.BadRequestError as exc:
        assert "mcp_servers" in exc.message
    else:
        raise AssertionError("mcp_servers was dropped")
    done = client.messages.with_raw_response.create(model="gpt-4o-mini", max_tokens=50, messages=hi)  # type: ignore[arg-type]
    assert done.headers["request-id"] == done.headers["X-Request-Id"] and done.parse()._request_id
    assert (
        json.loads(UpstreamError("timed out", status=504).body("anthropic"))["error"]["type"]
        == "timeout_error"
    )


def test_count_tokens_is_served_for_every_model(gateway: GatewaySetup) -> None:
    """`messages.count_tokens` (Claude Code asks it before long requests): Anthropic's own answer for a Claude
    model, a tiktoken count for any other; free (no usage event); a bad body is an Anthropic-shaped 400."""
    client = gateway.anthropic()
    messages: list[dict[str, Any]] = [{"role": "user", "content": "How many tokens is this sentence?"}]
    gateway.fake.set("/v1/messages/count_tokens", Reply.json({"input_tokens": 42}))
    raw = client.messages.with_raw_response.count_tokens(model="claude-sonnet-4-5", messages=messages)  # type: ignore[arg-type]
    assert raw.parse().input_tokens == 42 and "X-Trex-Usage-Event-Id" not in raw.headers
    sent = gateway.fake.last("/v1/messages/count_tokens")
    assert (
        sent.json["model"] == "claude-sonnet-4-5" and sent.headers["x-api-key"] == UPSTREAM_KEYS["anthropic"]
    )
    counted = client.messages.count_tokens(model="gpt-4o-mini", messages=messages).input_tokens  # type: ignore[arg-type]
    longer = client.messages.count_tokens(model="gpt-4o-mini", messages=messages * 3).input_tokens  # type: ignore[arg-type]
    assert 5 < counted < longer
    try:
        client.messages.count_tokens(model="gpt-4o-mini", messages="nope")  # type: ignore[arg-type]
    except anthropic.BadRequestError as exc:
        assert isinstance(exc.body, dict) and exc.body["type"] == "error"
    else:
        raise AssertionError("accepted")


def test_extended_thinking_reaches_other_providers_as_their_reasoning_setting(gateway: GatewaySetup) -> None:
    """Anthropic's `thinking` budget was dropped for every other model: OpenRouter takes it as
    `reasoning.max_tokens`, an OpenAI reasoning model as an effort level; a model without reasoning gets none."""
    client = gateway.anthropic()
    hi: list[dict[str, Any]] = [{"role": "user", "content": "think first"}]
    thinking = {"type": "enabled", "budget_tokens": 8000}
    client.messages.create(model="openai/gpt-4o-mini", max_tokens=9000, messages=hi, thinking=thinking)  # type: ignore[arg-type]
    assert gateway.fake.last("/api/v1/chat/completions").json["reasoning"] == {"max_tokens": 8000}
    client.messages.create(model="o4-mini", max_tokens=9000, messages=hi, thinking=thinking)  # type: ignore[arg-type]
    assert gateway.fake.last("/v1/chat/completions").json["reasoning_effort"] == "medium"
    client.messages.create(model="gpt-4o-mini", max_tokens=9000, messages=hi, thinking=thinking)  # type: ignore[arg-type]
    assert "reasoning_effort" not in gateway.fake.last("/v1/chat/completions").json


def test_tool_call_arguments_claude_cannot_take_are_a_400_naming_the_clients_field(
    gateway: GatewaySetup,
) -> None:
    """Arguments that are not a JSON object cannot become Claude's `tool_use.input`: the 400 names where the
    client sent them (its own message and item positions, not the gateway's internal ones)."""
    chat = {
        "model": "claude-sonnet-4-6",
        "messages": [
            {"role": "system", "content": "Be brief."},
            {"role": "user", "content": "Sum these."},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "call_1", "type": "function", "function": {"name": "sum", "arguments": "[1, 2]"}}
                ],
            },
            {"role": "tool", "tool_call_id": "call_1", "content": "3"},
        ],
    }
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().chat.completions.create(**chat)
    assert err.value.body["param"] == "messages[2].tool_calls[0].function.arguments"  # type: ignore[index]
    responses = {
        "model": "claude-sonnet-4-6",
        "instructions": "Be brief.",
        "input": [
            {"role": "user", "content": "Sum these."},
            {"type": "reasoning", "id": "rs_1", "summary": []},
            {"type": "function_call", "call_id": "call_1", "name": "sum", "arguments": "[1, 2]"},
            {"type": "function_call_output", "call_id": "call_1", "output": "3"},
        ],
    }
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().responses.create(**responses)
    assert err.value.body["param"] == "input[2].arguments"  # type: ignore[index]
    assert "sum" in err.value.body["message"]  # type: ignore[index]
    assert gateway.fake.received == []
