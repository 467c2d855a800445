"""Cross-format traffic through the worker with the official SDKs: chat → Anthropic, Responses → Anthropic,
Messages → OpenAI, Responses → OpenRouter/local, each non-streaming and streaming, with tools, usage mapping
(cached tokens both ways), errors and mid-stream failures translated into the client's format."""

from __future__ import annotations

import json

import anthropic
import openai
import pytest

from adapters.sse import SSEParser
from tests.conftest import UPSTREAM_KEYS, GatewaySetup
from tests.fakes.upstream import Reply, fixture_bytes, fixture_json
from tests.test_usage import wait_final

CLAUDE = "claude-sonnet-4-6"
WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Current weather for a city",
        "parameters": {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]},
    },
}


def _sse_events(fixture: str) -> list[tuple[str | None, dict]]:
    return [
        (e.event, json.loads(e.data)) for e in SSEParser().feed(fixture_bytes(fixture)) if e.data != "[DONE]"
    ]


def _text(content: str | list[dict]) -> str:
    """Anthropic content as text, whether sent as a string or as text blocks (both are valid)."""
    return content if isinstance(content, str) else "".join(b["text"] for b in content if b["type"] == "text")


def _anthropic_stream_text(fixture: str) -> str:
    return "".join(
        d["delta"].get("text", "") for ev, d in _sse_events(fixture) if ev == "content_block_delta"
    )


# ---- chat → Anthropic ------


def test_chat_to_anthropic_non_streaming(gateway: GatewaySetup) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model=CLAUDE,
        messages=[
            {"role": "system", "content": "Be brief."},
            {"role": "developer", "content": "Answer in English."},
            {"role": "user", "content": "Explain prompt caching."},
        ],
        temperature=1.5,
        stop=["END"],
    )
    completion = raw.parse()
    expected = fixture_json("anthropic/message_text.json")
    assert completion.choices[0].message.content == expected["content"][0]["text"]
    assert completion.choices[0].finish_reason == "stop"
    u = expected["usage"]
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert (
        completion.usage.prompt_tokens
        == u["input_tokens"] + u["cache_read_input_tokens"] + u["cache_creation_input_tokens"]
    )
    assert completion.usage.prompt_tokens_details.cached_tokens == u["cache_read_input_tokens"]
    assert completion.usage.completion_tokens == u["output_tokens"]
    assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"

    sent = gateway.fake.last()
    assert sent.path == "/v1/messages" and sent.headers["x-api-key"] == UPSTREAM_KEYS["anthropic"]
    body = sent.json
    assert body["model"] == CLAUDE and body["max_tokens"] == 4096  # Anthropic requires one: defaulted
    assert "Be brief." in json.dumps(body["system"]) and "Answer in English." in json.dumps(body["system"])
    assert [(m["role"], _text(m["content"])) for m in body["messages"]] == [
        ("user", "Explain prompt caching.")
    ]
    assert body["temperature"] == 1.0 and body["stop_sequences"] == ["END"]


def test_chat_to_anthropic_tool_round_trip_with_cache_control_and_images(gateway: GatewaySetup) -> None:
    gateway.openai().chat.completions.create(
        model=CLAUDE,
        max_completion_tokens=300,
        tools=[WEATHER_TOOL],
        tool_choice="required",
        parallel_tool_calls=False,
        messages=[
            {
                "role": "system",
                "content": [
                    {"type": "text", "text": "Long stable prefix", "cache_control": {"type": "ephemeral"}}
                ],
            },
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Weather where this photo was taken?"},
                    {"type": "image_url", "image_url": {"url": "https://example.com/paris.jpg"}},
                    {"type": "image_url", "image_url": {"url": "data:image/png;base64,iVBORw0KGgo="}},
                ],
            },
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {
                        "id": "call_A1",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Paris"}'},
                    },
                    {
                        "id": "call_B2",
                        "type": "function",
                        "function": {"name": "get_weather", "arguments": '{"city":"Lyon"}'},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "call_A1", "content": "18C sunny"},
            {"role": "tool", "tool_call_id": "call_B2", "content": "15C rain"},
        ],
    )
    body = gateway.fake.last().json
    assert body["max_tokens"] == 300
    assert body["system"] == [
        {"type": "text", "text": "Long stable prefix", "cache_control": {"type": "ephemeral"}}
    ]
    assert body["tool_choice"] == {"type": "any", "disable_parallel_tool_use": True}
    assert body["tools"][0]["input_schema"] == WEATHER_TOOL["function"]["parameters"]  # type: ignore[index]
    user, assistant, results = body["messages"]
    assert [b["type"] for b in user["content"]] == ["text", "image", "image"]
    assert user["content"][1]["source"] == {"type": "url", "url": "https://example.com/paris.jpg"}
    assert user["content"][2]["source"] == {
        "type": "base64",
        "media_type": "image/png",
        "data": "iVBORw0KGgo=",
    }
    assert [(b["id"], b["input"]) for b in assistant["content"]] == [
        ("call_A1", {"city": "Paris"}),
        ("call_B2", {"city": "Lyon"}),
    ]
    # Both results for that assistant turn in ONE user message, paired by id.
    assert results["role"] == "user"
    assert [(b["type"], b["tool_use_id"]) for b in results["content"]] == [
        ("tool_result", "call_A1"),
        ("tool_result", "call_B2"),
    ]


def test_chat_to_anthropic_streaming_tool_calls(gateway: GatewaySetup) -> None:
    gateway.fake.set("/v1/messages", Reply.stream("anthropic/message_tool_use.sse"))
    chunks = list(
        gateway.openai().chat.completions.create(
            model=CLAUDE,
            messages=[{"role": "user", "content": "weather?"}],
            tools=[WEATHER_TOOL],
            stream=True,
            stream_options={"include_usage": True},
        )
    )
    with gateway.openai().chat.completions.stream(
        model=CLAUDE, messages=[{"role": "user", "content": "weather?"}], tools=[WEATHER_TOOL]
    ) as stream:
        final = stream.get_final_completion()
    expected_inputs = [
        json.loads(json.dumps(b["content_block"]["input"]))
        for ev, b in _sse_events("anthropic/message_tool_use.sse")
        if ev == "content_block_start" and b["content_block"]["type"] == "tool_use"
    ]
    calls = final.choices[0].message.tool_calls or []
    assert len(calls) == len(expected_inputs) == 2
    partials: dict[int, str] = {}
    for ev, d in _sse_events("anthropic/message_tool_use.sse"):
        if ev == "content_block_delta" and d["delta"]["type"] == "input_json_delta":
            partials[d["index"]] = partials.get(d["index"], "") + d["delta"]["partial_json"]
    assert [json.loads(c.function.arguments) for c in calls] == [json.loads(v) for v in partials.values()]
    assert final.choices[0].finish_reason == "tool_calls"
    assert (
        chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.completion_tokens > 0
    )
    assert gateway.fake.last().json["stream"] is True


def test_chat_to_anthropic_stream_text_and_midstream_error(gateway: GatewaySetup) -> None:
    chunks = list(
        gateway.openai().chat.completions.create(
            model=CLAUDE, messages=[{"role": "user", "content": "hi"}], stream=True
        )
    )
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == _anthropic_stream_text(
        "anthropic/message_text.sse"
    )
    gateway.fake.set("/v1/messages", Reply.stream("anthropic/stream_error.sse"))
    with pytest.raises(openai.APIError, match="Overloaded"):
        list(
            gateway.openai().chat.completions.create(
                model=CLAUDE, messages=[{"role": "user", "content": "hi"}], stream=True
            )
        )


def test_chat_to_anthropic_errors_translated(gateway: GatewaySetup) -> None:
    gateway.fake.set(
        "/v1/messages",
        Reply.json("anthropic/error_rate_limit.json", status=429, headers={"retry-after": "12"}),
    )
    with pytest.raises(openai.RateLimitError) as err:
        gateway.openai().chat.completions.create(model=CLAUDE, messages=[{"role": "user", "content": "hi"}])
    assert err.value.status_code == 429
    assert err.value.response.headers["retry-after"] == "12"
    body = err.value.response.json()
    assert set(body["error"]) == {"message", "type", "code", "param"}  # OpenAI shape for an OpenAI client
    assert body["error"]["message"] == fixture_json("anthropic/error_rate_limit.json")["error"]["message"]


# ---- Responses → Anthropic ------


def test_responses_to_anthropic(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    response = client.responses.create(model=CLAUDE, instructions="Be brief.", input="Explain caching.")
    assert response.output_text == fixture_json("anthropic/message_text.json")["content"][0]["text"]
    assert response.usage is not None and response.usage.input_tokens_details.cached_tokens > 0
    sent = gateway.fake.last().json
    assert (
        _text(sent["system"]) == "Be brief." and _text(sent["messages"][0]["content"]) == "Explain caching."
    )

    gateway.fake.set("/v1/messages", Reply.stream("anthropic/message_tool_use.sse"))
    tools = [
        {"type": "function", "name": "get_weather", "parameters": WEATHER_TOOL["function"]["parameters"]}
    ]  # type: ignore[index]
    with client.responses.stream(model=CLAUDE, input="weather?", tools=tools) as stream:  # type: ignore[arg-type]
        final = stream.get_final_response()
    calls = [item for item in final.output if item.type == "function_call"]
    assert len(calls) == 2 and all(json.loads(c.arguments) for c in calls)
    assert final.usage is not None and final.usage.output_tokens > 0


def test_responses_builtin_tool_rejected_for_claude(gateway: GatewaySetup) -> None:
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().responses.create(model=CLAUDE, input="x", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert err.value.body["param"] == "tools[0].type"  # type: ignore[index]
    assert gateway.fake.received == []


# ---- Messages → OpenAI ------


def test_messages_to_openai_non_streaming(gateway: GatewaySetup) -> None:
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="gpt-4o-mini",
        max_tokens=200,
        system=[{"type": "text", "text": "Be brief.", "cache_control": {"type": "ephemeral"}}],
        messages=[{"role": "user", "content": "Explain caching."}],
        stop_sequences=["END"],
    )
    message = raw.parse()
    expected = fixture_json("openai/chat_text.json")
    assert (
        message.content[0].type == "text"
        and message.content[0].text == expected["choices"][0]["message"]["content"]
    )
    assert message.stop_reason == "end_turn"
    usage = expected["usage"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    assert message.usage.cache_read_input_tokens == cached
    assert (
        message.usage.input_tokens == usage["prompt_tokens"] - cached
    )  # Anthropic counts exclude cache reads
    assert raw.headers["X-Trex-Upstream-Provider"] == "openai"
    sent = gateway.fake.last()
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEYS['openai']}"
    assert sent.json["messages"][0] == {"role": "system", "content": "Be brief."}
    assert sent.json["max_completion_tokens"] == 200 and sent.json["stop"] == ["END"]


def test_messages_to_openai_streaming_tool_use(gateway: GatewaySetup) -> None:
    gateway.fake.set("/v1/chat/completions", Reply.stream("openai/chat_tool_calls.sse"))
    with gateway.anthropic().messages.stream(
        model="gpt-4o-mini",
        max_tokens=200,
        tools=[
            {
                "name": "get_weather",
                "input_schema": {"type": "object", "properties": {"city": {"type": "string"}}},
            }
        ],
        messages=[{"role": "user", "content": "weather in two cities?"}],
    ) as stream:
        final = stream.get_final_message()
    tool_uses = [b for b in final.content if b.type == "tool_use"]
    assert len(tool_uses) == 2 and all(isinstance(b.input, dict) and b.input for b in tool_uses)
    assert final.stop_reason == "tool_use" and final.usage.output_tokens > 0
    assert gateway.fake.last().json["stream_options"] == {"include_usage": True}

    gateway.fake.set("/v1/chat/completions", Reply.stream("openai/chat_text.sse"))
    with gateway.anthropic().messages.stream(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        text = "".join(stream.text_stream)
    assert text == "".join(
        d["choices"][0]["delta"].get("content") or ""
        for _e, d in _sse_events("openai/chat_text.sse")
        if d["choices"]
    )


def test_messages_to_openai_errors_in_anthropic_shape(gateway: GatewaySetup) -> None:
    gateway.fake.set("/v1/chat/completions", Reply.json("openai/error_invalid_request.json", status=400))
    with pytest.raises(anthropic.BadRequestError) as err:
        gateway.anthropic().messages.create(
            model="gpt-4o-mini", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    body = err.value.body
    assert body["type"] == "error" and body["error"]["type"] == "invalid_request_error"  # type: ignore[index]
    with pytest.raises(anthropic.BadRequestError) as err:
        gateway.anthropic().messages.create(
            model="gpt-4o-mini",
            max_tokens=5,
            messages=[
                {
                    "role": "user",
                    "content": [
                        {
                            "type": "document",
                            "source": {"type": "file", "file_id": "file_011"},
                        }
                    ],
                }
            ],  # type: ignore[list-item]
        )
    assert "messages[0].content[0].source.file_id" in str(err.value.body)


# ---- Responses → OpenRouter and local ------


@pytest.mark.parametrize(
    ("model", "path"),
    [
        ("anthropic/claude-sonnet-4", "/api/v1/chat/completions"),
        ("local/qwen3", "/local/v1/chat/completions"),
    ],
)
def test_responses_to_chat_upstreams(gateway: GatewaySetup, model: str, path: str) -> None:
    client = gateway.openai()
    response = client.responses.create(model=model, input="hello")
    assert response.output_text
    assert gateway.fake.last().path == path
    with client.responses.stream(model=model, input="hello") as stream:
        final = stream.get_final_response()
    assert final.output_text and final.status == "completed"
    sent = gateway.fake.last().json
    assert sent["stream"] is True and sent["messages"] == [{"role": "user", "content": "hello"}]


def test_a_finished_stream_that_ends_without_its_terminator_is_complete_in_every_client_format(
    gateway: GatewaySetup,
) -> None:
    """A chat stream with its finish_reason and usage but no `[DONE]`, a Claude stream with message_delta but
    no message_stop: the SDKs take them as complete, and so does the worker, whatever the client's format."""
    gateway.fake.set("/v1/chat/completions", Reply.unterminated("openai/chat_text.sse"))
    with gateway.anthropic().messages.stream(
        model="gpt-4o-mini", max_tokens=50, messages=[{"role": "user", "content": "x"}]
    ) as mstream:
        message = mstream.get_final_message()
        event_id = mstream.response.headers["X-Trex-Usage-Event-Id"]
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 10
    assert wait_final(gateway, event_id)["outcome"] == "completed"

    gateway.fake.set("/local/v1/chat/completions", Reply.unterminated("openai/chat_text.sse"))
    with gateway.openai().responses.stream(model="local/qwen3", input="x") as rstream:
        response = rstream.get_final_response()
    assert response.status == "completed" and response.output_text == "Hello! How can I help you today?"

    gateway.fake.set("/v1/messages", Reply.unterminated("anthropic/message_text.sse"))
    stream = gateway.openai().chat.completions.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "x"}], stream=True
    )
    event_id = stream.response.headers["X-Trex-Usage-Event-Id"]
    chunks = list(stream)  # the SDK raises if the stream ends with an error event
    assert "".join(c.choices[0].delta.content or "" for c in chunks) == (
        "Hello! I'm Claude, an AI assistant made by Anthropic. How can I help today?"
    )
    assert chunks[-1].choices[0].finish_reason == "stop"
    event = wait_final(gateway, event_id)
    assert event["outcome"] == "completed" and event["billed"]["output_tokens"] == 19


def test_a_translated_answer_names_the_model_the_upstream_answered_with_streaming_or_not(
    gateway: GatewaySetup,
) -> None:
    """A JSON answer carries the model the upstream named (a dated snapshot of the alias asked for); a
    stream translated into another format names the same one, not the alias."""
    openai_client, anthropic_client = gateway.openai(), gateway.anthropic()
    claude = fixture_json("anthropic/message_text.json")["model"]
    gpt = fixture_json("openai/chat_text.json")["model"]
    assert claude != CLAUDE and gpt != "gpt-4o-mini"  # else the test could not tell them apart

    ask = [{"role": "user", "content": "hi"}]
    assert openai_client.chat.completions.create(model=CLAUDE, messages=ask).model == claude
    chunks = list(openai_client.chat.completions.create(model=CLAUDE, messages=ask, stream=True))
    assert chunks and {c.model for c in chunks} == {claude}

    assert openai_client.responses.create(model=CLAUDE, input="hi").model == claude
    with openai_client.responses.stream(model=CLAUDE, input="hi") as rstream:
        assert rstream.get_final_response().model == claude

    message = anthropic_client.messages.create(model="gpt-4o-mini", max_tokens=50, messages=ask)
    assert message.model == gpt
    with anthropic_client.messages.stream(model="gpt-4o-mini", max_tokens=50, messages=ask) as mstream:
        assert mstream.get_final_message().model == gpt
