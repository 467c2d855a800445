"""Checks that the recorded-style upstream transcripts in tests/fixtures are well formed.

Every JSON body is validated with the installed provider SDK models, and every .sse stream is
framed with a small spec-compliant SSE parser (WHATWG "event stream interpretation") before each
event is validated with the SDK's stream-event types. Fields the SDK does not model are reported,
except for a short allow-list of fields the real APIs send that the SDK types omit.
"""

from __future__ import annotations

import json
from collections import defaultdict
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pydantic
import pytest
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from openai.types import CreateEmbeddingResponse, Model
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.shared import ErrorObject

FIXTURES = Path(__file__).parent / "fixtures"

RESPONSE_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
ANTHROPIC_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


# --------------------------------------------------------------------------- SSE framing


@dataclass
class SSEEvent:
    event: str
    data: str
    id: str | None
    retry: int | None


def parse_sse(raw: bytes) -> list[SSEEvent]:
    """Spec-compliant framing: CRLF/CR/LF line ends, ':' comments, multi-line data joined by '\\n'."""
    text = raw.decode("utf-8")
    if text.startswith("\ufeff"):
        text = text[1:]
    lines = text.replace("\r\n", "\n").replace("\r", "\n").split("\n")
    events: list[SSEEvent] = []
    event_type = ""
    data: list[str] = []
    last_id: str | None = None
    retry: int | None = None
    for line in lines:
        if line == "":
            if data:
                events.append(SSEEvent(event_type or "message", "\n".join(data), last_id, retry))
            event_type, data = "", []
            continue
        if line.startswith(":"):
            continue
        field, sep, value = line.partition(":")
        if sep and value.startswith(" "):
            value = value[1:]
        if field == "event":
            event_type = value
        elif field == "data":
            data.append(value)
        elif field == "id":
            if "\0" not in value:
                last_id = value
        elif field == "retry" and value.isdigit():
            retry = int(value)
    # A trailing event without its terminating blank line is discarded, as the spec requires.
    assert not data, "stream ends with an event that is not terminated by a blank line"
    return events


def test_sse_parser_follows_the_spec() -> None:
    raw = b": comment\r\n\r\nevent: e\r\ndata: a\r\ndata:b\r\nid: 7\r\n\r\ndata: c\rretry: 50\r\r"
    events = parse_sse(raw)
    assert [(e.event, e.data, e.id) for e in events] == [("e", "a\nb", "7"), ("message", "c", "7")]
    assert events[1].retry == 50


# --------------------------------------------------------------------------- helpers


def fixture_files(suffix: str) -> list[Path]:
    return sorted(FIXTURES.rglob(f"*{suffix}"))


def rel(path: Path) -> str:
    return path.relative_to(FIXTURES).as_posix()


def load_json(path: str) -> Any:
    return json.loads((FIXTURES / path).read_text(encoding="utf-8"))


def load_sse(path: str) -> list[SSEEvent]:
    return parse_sse((FIXTURES / path).read_bytes())


def unknown_fields(obj: Any, where: str = "$") -> list[str]:
    """Paths of fields present in the payload that the SDK model does not declare."""
    found: list[str] = []
    if isinstance(obj, pydantic.BaseModel):
        for key in obj.model_extra or {}:
            found.append(f"{where}.{key}")
        for name in type(obj).model_fields:
            found += unknown_fields(getattr(obj, name), f"{where}.{name}")
    elif isinstance(obj, list):
        for i, item in enumerate(obj):
            found += unknown_fields(item, f"{where}[{i}]")
    return found


def assert_known_fields(model: Any, allowed: frozenset[str] = frozenset()) -> None:
    extra = [p for p in unknown_fields(model) if p.rsplit(".", 1)[-1] not in allowed]
    assert not extra, f"fields not modelled by the SDK: {extra}"


def assert_split_mid_json(fragments: list[str]) -> None:
    """No proper prefix of the fragments is a JSON document; all of them together are an object."""
    for end in range(1, len(fragments)):
        with pytest.raises(json.JSONDecodeError):
            json.loads("".join(fragments[:end]))
    assert isinstance(json.loads("".join(fragments)), dict)


# Sent by the live Responses API but absent from the installed SDK's models:
# `store` (echo of the request flag) and `obfuscation` (stream padding on delta events).
RESPONSES_ALLOWED = frozenset({"store", "obfuscation"})
# OpenRouter adds these on top of the OpenAI chat schema.
OPENROUTER_ALLOWED = frozenset(
    {
        "provider",
        "native_finish_reason",
        "reasoning",
        "cost",
        "is_byok",
        "cost_details",
        "image_tokens",
    }
)


# --------------------------------------------------------------------------- JSON bodies

JSON_VALIDATORS: dict[str, Any] = {
    "openai/chat_text.json": ChatCompletion,
    "openai/chat_tool_calls.json": ChatCompletion,
    "openai/responses_text.json": Response,
    "openai/responses_function_call.json": Response,
    "openai/embeddings.json": CreateEmbeddingResponse,
    "anthropic/message_text.json": Message,
    "anthropic/message_tool_use.json": Message,
    "openrouter/chat_text.json": ChatCompletion,
}


def test_every_fixture_is_covered() -> None:
    json_files = {rel(p) for p in fixture_files(".json")}
    special = {
        "openai/models.json",
        "openai/error_rate_limit.json",
        "openai/error_invalid_request.json",
        "anthropic/error_overloaded.json",
        "anthropic/error_rate_limit.json",
        "anthropic/error_invalid_request.json",
    }
    assert json_files == set(JSON_VALIDATORS) | special
    assert {rel(p) for p in fixture_files(".sse")} == set(SSE_CHECKS)
    readme = (FIXTURES / "README.md").read_text(encoding="utf-8")
    for path in json_files | set(SSE_CHECKS):
        assert f"`{path}`" in readme, f"{path} is not described in tests/fixtures/README.md"


@pytest.mark.parametrize("path", sorted(JSON_VALIDATORS))
def test_json_body_validates(path: str) -> None:
    model = JSON_VALIDATORS[path].model_validate(load_json(path))
    if path.startswith("openrouter/"):
        assert_known_fields(model, OPENROUTER_ALLOWED)
        assert load_json(path)["provider"]
    elif "/responses_" in path:
        assert_known_fields(model, RESPONSES_ALLOWED)
    else:
        assert_known_fields(model)


def test_openai_chat_bodies() -> None:
    text = ChatCompletion.model_validate(load_json("openai/chat_text.json"))
    assert text.choices[0].finish_reason == "stop"
    assert text.choices[0].message.content
    assert text.usage is not None and text.usage.prompt_tokens_details is not None
    assert text.usage.completion_tokens_details is not None
    cached = text.usage.prompt_tokens_details.cached_tokens
    assert cached is not None and 0 < cached < text.usage.prompt_tokens
    assert text.usage.total_tokens == text.usage.prompt_tokens + text.usage.completion_tokens

    tools = ChatCompletion.model_validate(load_json("openai/chat_tool_calls.json"))
    choice = tools.choices[0]
    assert choice.finish_reason == "tool_calls"
    assert choice.message.content is None
    calls = choice.message.tool_calls or []
    assert len(calls) == 2
    assert len({c.id for c in calls}) == 2
    for call in calls:
        assert call.type == "function"
        assert call.id.startswith("call_")
        assert isinstance(json.loads(call.function.arguments), dict)


def test_openai_responses_bodies() -> None:
    text = Response.model_validate(load_json("openai/responses_text.json"))
    assert text.status == "completed" and text.object == "response"
    assert text.output_text
    item = text.output[0]
    assert item.type == "message" and item.id.startswith("msg_")
    assert item.content[0].type == "output_text" and item.content[0].annotations == []
    assert text.usage is not None
    assert text.usage.input_tokens_details.cached_tokens > 0
    assert text.usage.total_tokens == text.usage.input_tokens + text.usage.output_tokens

    call = Response.model_validate(load_json("openai/responses_function_call.json"))
    fc = call.output[0]
    assert fc.type == "function_call"
    assert fc.id is not None and fc.id.startswith("fc_") and fc.call_id.startswith("call_")
    assert fc.status == "completed"
    assert isinstance(json.loads(fc.arguments), dict)


def test_openai_embeddings_and_models() -> None:
    emb = CreateEmbeddingResponse.model_validate(load_json("openai/embeddings.json"))
    assert [d.index for d in emb.data] == [0, 1]
    assert {len(d.embedding) for d in emb.data} == {8}
    assert emb.usage.total_tokens >= emb.usage.prompt_tokens

    body = load_json("openai/models.json")
    assert set(body) == {"object", "data"} and body["object"] == "list"
    models = [Model.model_validate(m) for m in body["data"]]
    assert len(models) >= 3
    for m in models:
        assert_known_fields(m)


@pytest.mark.parametrize(
    ("path", "error_type", "code"),
    [
        ("openai/error_rate_limit.json", "requests", "rate_limit_exceeded"),
        ("openai/error_invalid_request.json", "invalid_request_error", "context_length_exceeded"),
    ],
)
def test_openai_error_bodies(path: str, error_type: str, code: str) -> None:
    body = load_json(path)
    assert set(body) == {"error"}
    assert set(body["error"]) == {"message", "type", "param", "code"}
    err = ErrorObject.model_validate(body["error"])
    assert_known_fields(err)
    assert (err.type, err.code) == (error_type, code)
    assert err.message


@pytest.mark.parametrize(
    ("path", "error_type"),
    [
        ("anthropic/error_overloaded.json", "overloaded_error"),
        ("anthropic/error_rate_limit.json", "rate_limit_error"),
        ("anthropic/error_invalid_request.json", "invalid_request_error"),
    ],
)
def test_anthropic_error_bodies(path: str, error_type: str) -> None:
    err = ErrorResponse.model_validate(load_json(path))
    assert_known_fields(err)
    assert err.type == "error" and err.error.type == error_type
    assert err.request_id is not None and err.request_id.startswith("req_")


def test_anthropic_message_bodies() -> None:
    text = Message.model_validate(load_json("anthropic/message_text.json"))
    assert text.stop_reason == "end_turn" and text.stop_sequence is None
    assert text.id.startswith("msg_01")
    u = text.usage
    assert u.cache_creation_input_tokens and u.cache_read_input_tokens
    assert u.cache_creation is not None
    cc = u.cache_creation
    assert cc.ephemeral_5m_input_tokens + cc.ephemeral_1h_input_tokens == u.cache_creation_input_tokens

    tool = Message.model_validate(load_json("anthropic/message_tool_use.json"))
    assert tool.stop_reason == "tool_use"
    assert [b.type for b in tool.content] == ["text", "tool_use"]
    block = tool.content[1]
    assert block.type == "tool_use" and block.id.startswith("toolu_01") and block.input


# --------------------------------------------------------------------------- OpenAI chat streams


def check_chat_stream(path: str, *, openrouter: bool = False) -> list[ChatCompletionChunk]:
    events = load_sse(path)
    assert events[-1].data == "[DONE]"
    assert all(e.event == "message" for e in events)
    chunks = []
    for e in events[:-1]:
        raw = json.loads(e.data)
        chunk = ChatCompletionChunk.model_validate(raw)
        assert_known_fields(chunk, OPENROUTER_ALLOWED if openrouter else frozenset())
        chunks.append((raw, chunk))
    assert len({(c.id, c.created, c.model) for _, c in chunks}) == 1, "id/created/model must not change"
    *body, (_, usage_chunk) = chunks
    # include_usage: the last chunk carries usage and no choices.
    assert usage_chunk.choices == [] and usage_chunk.usage is not None
    u = usage_chunk.usage
    assert u.total_tokens == u.prompt_tokens + u.completion_tokens
    for raw, chunk in body:
        assert len(chunk.choices) == 1
        if openrouter:
            assert raw["provider"] and "usage" not in raw
        else:
            assert "usage" in raw and raw["usage"] is None
    finishes = [c.choices[0].finish_reason for _, c in body]
    assert all(f is None for f in finishes[:-1]) and finishes[-1] is not None
    assert body[0][1].choices[0].delta.role == "assistant"
    return [c for _, c in chunks]


def test_openai_chat_text_stream() -> None:
    chunks = check_chat_stream("openai/chat_text.sse")
    first = chunks[0].choices[0].delta
    assert first.role == "assistant" and first.content == ""
    last = chunks[-2].choices[0]
    assert last.finish_reason == "stop"
    assert last.delta.model_dump(exclude_none=True) == {}
    assert (
        "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "Hello! How can I help you today?"
    )


def test_openai_chat_tool_call_stream() -> None:
    chunks = check_chat_stream("openai/chat_tool_calls.sse")
    assert chunks[-2].choices[0].finish_reason == "tool_calls"
    args: dict[int, list[str]] = defaultdict(list)
    heads: dict[int, tuple[str, str]] = {}
    order: list[int] = []
    for c in chunks[:-1]:
        for tc in c.choices[0].delta.tool_calls or []:
            if tc.id is not None:
                # The first delta of each call carries id, type, name and empty arguments.
                assert tc.index not in heads
                assert tc.type == "function" and tc.function is not None
                assert tc.function.name and tc.function.arguments == ""
                heads[tc.index] = (tc.id, tc.function.name)
                order.append(tc.index)
            else:
                assert tc.index in heads, "argument fragment before the call was announced"
                assert tc.function is not None and tc.function.name is None
            args[tc.index].append(tc.function.arguments or "")
    assert order == [0, 1]
    for index, frags in args.items():
        fragments = [f for f in frags if f]
        assert len(fragments) > 3
        assert_split_mid_json(fragments)
        parsed = json.loads("".join(frags))
        assert set(parsed) == {"location", "unit"}, index


def test_openai_multiline_data_stream() -> None:
    raw = (FIXTURES / "openai/chat_multiline_data.sse").read_text(encoding="utf-8")
    assert "\nretry: " in "\n" + raw and "\nid: " in raw and "\ndata:{" in raw
    events = load_sse("openai/chat_multiline_data.sse")
    assert any("\n" in e.data for e in events), "an event's data must span several data: lines"
    assert events[0].retry == 3000 and events[0].id == "0"
    chunks = check_chat_stream("openai/chat_multiline_data.sse")
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "Split lines work."


def test_openrouter_stream() -> None:
    raw = (FIXTURES / "openrouter/chat_text.sse").read_text(encoding="utf-8")
    assert raw.startswith(": OPENROUTER PROCESSING\n\n")
    blocks = raw.split("\n\n")
    first_data = next(i for i, b in enumerate(blocks) if b.startswith("data: "))
    assert any(b == ": OPENROUTER PROCESSING" for b in blocks[first_data:]), "comment between data events"
    chunks = check_chat_stream("openrouter/chat_text.sse", openrouter=True)
    assert chunks[0].model == "openai/gpt-4o-mini"
    assert chunks[0].id.startswith("gen-")
    assert "".join(c.choices[0].delta.content or "" for c in chunks[:-1]) == "Paris is the capital of France."


def test_openrouter_body() -> None:
    body = load_json("openrouter/chat_text.json")
    completion = ChatCompletion.model_validate(body)
    assert body["provider"] == "OpenAI" and completion.model == "openai/gpt-4o-mini"
    assert body["choices"][0]["native_finish_reason"] == "stop"
    assert completion.usage is not None


# --------------------------------------------------------------------------- Responses streams


def check_responses_stream(path: str) -> list[Any]:
    events = load_sse(path)
    parsed = []
    for e in events:
        raw = json.loads(e.data)
        assert e.event == raw["type"], "SSE event name must equal the payload type"
        ev = RESPONSE_EVENTS.validate_python(raw)
        assert ev.type == raw["type"]
        assert_known_fields(ev, RESPONSES_ALLOWED)
        parsed.append(ev)
    assert [ev.sequence_number for ev in parsed] == list(range(len(parsed)))
    types = [ev.type for ev in parsed]
    assert types[:3] == ["response.created", "response.in_progress", "response.output_item.added"]
    assert types[-2:] == ["response.output_item.done", "response.completed"]
    ids = {ev.response.id for ev in parsed if ev.type.startswith("response.") and hasattr(ev, "response")}
    assert len(ids) == 1
    assert parsed[0].response.status == "in_progress" and parsed[0].response.output == []
    final = parsed[-1].response
    assert final.status == "completed" and final.usage is not None
    assert final.usage.total_tokens == final.usage.input_tokens + final.usage.output_tokens
    return parsed


def test_responses_text_stream() -> None:
    events = check_responses_stream("openai/responses_text.sse")
    types = [ev.type for ev in events]
    assert types[3] == "response.content_part.added"
    assert types[-4:] == [
        "response.output_text.done",
        "response.content_part.done",
        "response.output_item.done",
        "response.completed",
    ]
    deltas = [ev for ev in events if ev.type == "response.output_text.delta"]
    assert len(deltas) > 3 and all(ev.logprobs == [] for ev in deltas)
    item_id = events[2].item.id
    assert all(ev.item_id == item_id for ev in deltas)
    text = "".join(ev.delta for ev in deltas)
    done = next(ev for ev in events if ev.type == "response.output_text.done")
    assert done.text == text
    assert events[-1].response.output_text == text


def test_responses_function_call_stream() -> None:
    events = check_responses_stream("openai/responses_function_call.sse")
    added = events[2]
    assert added.item.type == "function_call" and added.item.arguments == ""
    assert added.item.status == "in_progress"
    deltas = [ev for ev in events if ev.type == "response.function_call_arguments.delta"]
    assert len(deltas) > 3 and all(ev.item_id == added.item.id for ev in deltas)
    assert_split_mid_json([ev.delta for ev in deltas])
    args = "".join(ev.delta for ev in deltas)
    assert isinstance(json.loads(args), dict)
    done = next(ev for ev in events if ev.type == "response.function_call_arguments.done")
    assert done.arguments == args
    final_item = events[-1].response.output[0]
    assert final_item.type == "function_call" and final_item.arguments == args
    assert final_item.call_id == added.item.call_id and final_item.status == "completed"


# --------------------------------------------------------------------------- Anthropic streams


def check_anthropic_stream(path: str) -> tuple[list[Any], list[SSEEvent]]:
    events = load_sse(path)
    parsed: list[Any] = []
    for e in events:
        raw = json.loads(e.data)
        assert e.event == raw["type"], "SSE event name must equal the payload type"
        if e.event == "ping":
            assert raw == {"type": "ping"}
            continue
        if e.event == "error":
            err = ErrorResponse.model_validate(raw)
            assert_known_fields(err)
            parsed.append(err)
            continue
        ev = ANTHROPIC_EVENTS.validate_python(raw)
        assert ev.type == raw["type"]
        assert_known_fields(ev)
        parsed.append(ev)
    assert parsed[0].type == "message_start"
    start = parsed[0].message
    assert start.content == [] and start.stop_reason is None and start.id.startswith("msg_01")
    # content blocks are opened, filled and closed in index order
    open_index: int | None = None
    next_index = 0
    for ev in parsed[1:]:
        if ev.type == "content_block_start":
            assert open_index is None and ev.index == next_index
            open_index = ev.index
            next_index += 1
        elif ev.type == "content_block_delta":
            assert ev.index == open_index
        elif ev.type == "content_block_stop":
            assert ev.index == open_index
            open_index = None
    return parsed, events


def collect_blocks(parsed: list[Any]) -> dict[int, tuple[Any, str]]:
    blocks: dict[int, tuple[Any, str]] = {}
    for ev in parsed:
        if ev.type == "content_block_start":
            blocks[ev.index] = (ev.content_block, "")
        elif ev.type == "content_block_delta":
            block, acc = blocks[ev.index]
            piece = ev.delta.text if ev.delta.type == "text_delta" else ev.delta.partial_json
            blocks[ev.index] = (block, acc + piece)
    return blocks


def test_anthropic_text_stream() -> None:
    parsed, events = check_anthropic_stream("anthropic/message_text.sse")
    assert [e.event for e in events].count("ping") == 1
    assert [ev.type for ev in parsed][-2:] == ["message_delta", "message_stop"]
    delta = parsed[-2]
    assert delta.delta.stop_reason == "end_turn" and delta.usage.output_tokens > 1
    blocks = collect_blocks(parsed)
    assert list(blocks) == [0]
    block, text = blocks[0]
    assert block.type == "text" and block.text == ""
    assert text == "Hello! I'm Claude, an AI assistant made by Anthropic. How can I help today?"


def test_anthropic_tool_use_stream() -> None:
    parsed, _ = check_anthropic_stream("anthropic/message_tool_use.sse")
    assert [ev.type for ev in parsed][-2:] == ["message_delta", "message_stop"]
    assert parsed[-2].delta.stop_reason == "tool_use"
    blocks = collect_blocks(parsed)
    assert [b.type for b, _ in blocks.values()] == ["text", "tool_use", "tool_use"]
    tool_ids = set()
    for index in (1, 2):
        block, partial = blocks[index]
        assert block.input == {} and block.id.startswith("toolu_01")
        tool_ids.add(block.id)
        fragments = [
            ev.delta.partial_json for ev in parsed if ev.type == "content_block_delta" and ev.index == index
        ]
        assert fragments[0] == "" and len(fragments) > 3
        assert_split_mid_json(fragments[1:])
        assert set(json.loads(partial)) == {"location", "unit"}
    assert len(tool_ids) == 2


def test_anthropic_stream_error() -> None:
    parsed, events = check_anthropic_stream("anthropic/stream_error.sse")
    assert events[-1].event == "error"
    err = parsed[-1]
    assert isinstance(err, ErrorResponse) and err.error.type == "overloaded_error"
    types = [getattr(ev, "type", None) for ev in parsed[:-1]]
    assert "content_block_delta" in types
    assert "message_stop" not in types and "message_delta" not in types


SSE_CHECKS = {
    "openai/chat_text.sse": test_openai_chat_text_stream,
    "openai/chat_tool_calls.sse": test_openai_chat_tool_call_stream,
    "openai/chat_multiline_data.sse": test_openai_multiline_data_stream,
    "openai/responses_text.sse": test_responses_text_stream,
    "openai/responses_function_call.sse": test_responses_function_call_stream,
    "anthropic/message_text.sse": test_anthropic_text_stream,
    "anthropic/message_tool_use.sse": test_anthropic_tool_use_stream,
    "anthropic/stream_error.sse": test_anthropic_stream_error,
    "openrouter/chat_text.sse": test_openrouter_stream,
}


@pytest.mark.parametrize("path", sorted(SSE_CHECKS))
def test_sse_framing(path: str) -> None:
    raw = (FIXTURES / path).read_bytes()
    assert raw.endswith(b"\n\n"), "every event, including the last, ends with a blank line"
    assert b"\r" not in raw
    for event in parse_sse(raw):
        if event.data != "[DONE]":
            json.loads(event.data)
