"""Strict checks of what the worker sends a client, against the official SDKs' own types.

The SDKs build their response models without validation (`construct()`), so a body missing a required field
or carrying one of the wrong type reads fine through them and breaks stricter clients (typed Go, TypeScript and
Java clients, the Vercel AI SDK). These helpers validate every body and every stream event with
`model_validate(..., strict=True)` and check the order rules of each stream format. They also build the
upstream answers the conformance tests replay (Anthropic Messages and OpenAI chat, plain and streamed), and
talk to the worker in raw HTTP, as a client that is not an SDK does.
"""

from __future__ import annotations

import json
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any

import pydantic
from anthropic.types import Message, RawMessageStreamEvent
from anthropic.types.shared import ErrorResponse
from openai.types.chat import ChatCompletion, ChatCompletionChunk
from openai.types.responses import Response, ResponseStreamEvent
from openai.types.shared import ErrorObject

from tests.test_fixtures_wellformed import SSEEvent, parse_sse

RESPONSE_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(ResponseStreamEvent)
MESSAGE_EVENTS: pydantic.TypeAdapter[Any] = pydantic.TypeAdapter(RawMessageStreamEvent)


def strict(model: Any, doc: Any) -> Any:
    """`doc` validated as the SDK type `model` (a class or a TypeAdapter) the way it travels, as JSON, strictly:
    no coercion (a float for an int, a number for a string) beyond JSON's own (an RFC 3339 string for a
    datetime)."""
    raw = json.dumps(doc)
    if isinstance(model, pydantic.TypeAdapter):
        return model.validate_json(raw, strict=True)
    return model.model_validate_json(raw, strict=True)


# ---- raw HTTP ------


@dataclass
class Got:
    """An HTTP response as the client got it."""

    status_code: int
    content: bytes

    @property
    def text(self) -> str:
        return self.content.decode("utf-8", "replace")

    def json(self) -> Any:
        return json.loads(self.content)


@dataclass
class Http:
    """Raw HTTP to the worker: what a client that is not an SDK sees, status and bytes."""

    base: str

    def request(
        self,
        method: str,
        path: str,
        headers: Mapping[str, str],
        content: bytes | None = None,
        params: Mapping[str, Any] | None = None,
    ) -> Got:
        url = self.base + path + ("?" + urllib.parse.urlencode(params) if params else "")
        req = urllib.request.Request(
            url, data=content, method=method, headers={"Content-Type": "application/json", **headers}
        )
        try:
            with urllib.request.urlopen(req, timeout=30) as r:
                return Got(r.status, r.read())
        except urllib.error.HTTPError as err:
            with err:
                return Got(err.code, err.read())

    def get(self, path: str, headers: Mapping[str, str], params: Mapping[str, Any] | None = None) -> Got:
        return self.request("GET", path, headers, params=params)

    def post(
        self, path: str, headers: Mapping[str, str], content: bytes | None = None, body: Any = None
    ) -> Got:
        return self.request("POST", path, headers, content if body is None else json.dumps(body).encode())


# ---- upstream answers ------


@dataclass
class Answer:
    """What the model answered, to be written in an upstream's format: text, tool calls, reasoning."""

    text: str = ""
    calls: Sequence[tuple[str, str, dict[str, Any]]] = ()
    thinking: str = ""
    stop: str = "stop"
    """The canonical reason: stop, length, tool_calls, stop_sequence."""
    stop_sequence: str | None = None
    cached: int = 0
    reasoning_tokens: int = 0
    bare: bool = False
    """Written as sparsely as an OpenAI-compatible server may (no `created`, `object`, `usage`; Anthropic's
    usage without its cache counts)."""


_CLAUDE_STOP = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
    "content_filter": "refusal",
}
_CHAT_STOP = {
    "stop": "stop",
    "length": "length",
    "tool_calls": "tool_calls",
    "stop_sequence": "stop",
    "content_filter": "content_filter",
}


def _claude_blocks(answer: Answer) -> list[dict[str, Any]]:
    blocks: list[dict[str, Any]] = []
    if answer.thinking:
        blocks.append({"type": "thinking", "thinking": answer.thinking, "signature": "c2lnbmF0dXJl"})
    if answer.text:
        blocks.append({"type": "text", "text": answer.text})
    blocks += [{"type": "tool_use", "id": i, "name": n, "input": args} for i, n, args in answer.calls]
    return blocks


def _claude_usage(answer: Answer) -> dict[str, Any]:
    if answer.bare:
        return {"input_tokens": 20, "output_tokens": 12}
    return {
        "input_tokens": 20,
        "cache_creation_input_tokens": 0,
        "cache_read_input_tokens": answer.cached,
        "output_tokens": 12,
    }


def claude_body(answer: Answer) -> dict[str, Any]:
    return {
        "id": "msg_01conform",
        "type": "message",
        "role": "assistant",
        "model": "claude-sonnet-4-6",
        "content": _claude_blocks(answer),
        "stop_reason": _CLAUDE_STOP[answer.stop],
        "stop_sequence": answer.stop_sequence,
        "usage": _claude_usage(answer),
    }


def _event(name: str, doc: dict[str, Any]) -> bytes:
    return f"event: {name}\ndata: {json.dumps(doc)}\n\n".encode()


def claude_sse(answer: Answer) -> bytes:
    start = {**claude_body(answer), "content": [], "stop_reason": None, "stop_sequence": None}
    start["usage"] = {**start["usage"], "output_tokens": 1}
    out = [_event("message_start", {"type": "message_start", "message": start})]
    for index, block in enumerate(_claude_blocks(answer)):
        kind = block["type"]
        if kind == "text":
            opened, deltas = (
                {"type": "text", "text": ""},
                [
                    {"type": "text_delta", "text": block["text"][:4]},
                    {"type": "text_delta", "text": block["text"][4:]},
                ],
            )
        elif kind == "thinking":
            opened = {"type": "thinking", "thinking": "", "signature": ""}
            deltas = [
                {"type": "thinking_delta", "thinking": block["thinking"]},
                {"type": "signature_delta", "signature": block["signature"]},
            ]
        else:
            opened = {**block, "input": {}}
            raw = json.dumps(block["input"])
            deltas = [{"type": "input_json_delta", "partial_json": p} for p in ("", raw[:5], raw[5:])]
        out.append(
            _event(
                "content_block_start",
                {"type": "content_block_start", "index": index, "content_block": opened},
            )
        )
        out += [
            _event("content_block_delta", {"type": "content_block_delta", "index": index, "delta": d})
            for d in deltas
        ]
        out.append(_event("content_block_stop", {"type": "content_block_stop", "index": index}))
    delta = {"stop_reason": _CLAUDE_STOP[answer.stop], "stop_sequence": answer.stop_sequence}
    out.append(
        _event("message_delta", {"type": "message_delta", "delta": delta, "usage": _claude_usage(answer)})
    )
    out.append(_event("message_stop", {"type": "message_stop"}))
    return b"".join(out)


def _chat_usage(answer: Answer) -> dict[str, Any]:
    return {
        "prompt_tokens": 40,
        "completion_tokens": 12,
        "total_tokens": 52,
        "prompt_tokens_details": {"cached_tokens": answer.cached, "audio_tokens": 0},
        "completion_tokens_details": {"reasoning_tokens": answer.reasoning_tokens, "audio_tokens": 0},
    }


def chat_body(answer: Answer) -> dict[str, Any]:
    message: dict[str, Any] = {"role": "assistant", "content": answer.text or None, "refusal": None}
    if answer.thinking:
        message["reasoning_content"] = answer.thinking
    if answer.calls:
        message["tool_calls"] = [
            {"id": i, "type": "function", "function": {"name": n, "arguments": json.dumps(a)}}
            for i, n, a in answer.calls
        ]
    if answer.bare:
        message.pop("refusal")
        choice = {"index": 0, "message": message, "finish_reason": _CHAT_STOP[answer.stop]}
        return {"id": "chatcmpl-conform", "model": "qwen3", "choices": [choice]}
    return {
        "id": "chatcmpl-conform",
        "object": "chat.completion",
        "created": 1752583901,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {"index": 0, "message": message, "logprobs": None, "finish_reason": _CHAT_STOP[answer.stop]}
        ],
        "usage": _chat_usage(answer),
    }


def chat_sse(answer: Answer) -> bytes:
    head: dict[str, Any] = {"id": "chatcmpl-conform", "model": "qwen3"}
    if not answer.bare:
        head = {"id": "chatcmpl-conform", "object": "chat.completion.chunk", "created": 1752583901}
        head["model"] = "gpt-4o-mini-2024-07-18"

    def chunk(delta: dict[str, Any], finish: str | None = None) -> bytes:
        choice = {"index": 0, "delta": delta, "finish_reason": finish}
        if not answer.bare:
            choice["logprobs"] = None
        return b"data: " + json.dumps({**head, "choices": [choice]}).encode() + b"\n\n"

    out = [chunk({"role": "assistant", "content": ""})]
    if answer.thinking:
        out.append(chunk({"reasoning_content": answer.thinking}))
    if answer.text:
        out += [chunk({"content": answer.text[:4]}), chunk({"content": answer.text[4:]})]
    for n, (call_id, name, args) in enumerate(answer.calls):
        raw = json.dumps(args)
        opened = {"index": n, "id": call_id, "type": "function", "function": {"name": name, "arguments": ""}}
        out.append(chunk({"tool_calls": [opened]}))
        out += [
            chunk({"tool_calls": [{"index": n, "function": {"arguments": p}}]}) for p in (raw[:5], raw[5:])
        ]
    out.append(chunk({}, _CHAT_STOP[answer.stop]))
    if not answer.bare:
        usage = {**head, "choices": [], "usage": _chat_usage(answer)}
        out.append(b"data: " + json.dumps(usage).encode() + b"\n\n")
    out.append(b"data: [DONE]\n\n")
    return b"".join(out)


# ---- what the client gets ------


def check_chat_body(doc: Any) -> ChatCompletion:
    return strict(ChatCompletion, doc)


def check_chat_stream(raw: bytes) -> list[ChatCompletionChunk]:
    """Every chunk a valid ChatCompletionChunk with the same id, created and model; `[DONE]` last; one
    finish_reason per choice, nothing for that choice after it; every tool call opened (id, type, name)
    before its argument fragments. A stream that broke ends instead with an error object after the chunks so
    far: `data: {"error": {…}}` as OpenAI sends one mid-stream (OpenRouter's error chunk, a chunk with an
    `error` of OpenRouter's own shape, goes to its clients as it came)."""
    events = parse_sse(raw)
    last = json.loads(events[-1].data) if events and events[-1].data.startswith("{") else None
    broken = isinstance(last, dict) and "error" in last
    if broken:
        assert isinstance(last, dict)
        events.pop()
        if "choices" in last:  # OpenRouter's own shape: a numeric code, no type
            assert isinstance(last["error"].get("message"), str), last
        else:
            check_openai_error(last)
    else:
        assert events and events.pop().data == "[DONE]", [e.data for e in events[-3:]]
    chunks = [strict(ChatCompletionChunk, json.loads(e.data)) for e in events]
    assert len({(c.id, c.created, c.model) for c in chunks}) == 1, {
        (c.id, c.created, c.model) for c in chunks
    }
    finished: set[int] = set()
    opened: set[tuple[int, int]] = set()
    for c in chunks:
        for choice in c.choices:
            assert choice.index not in finished, f"choice {choice.index} goes on after its finish_reason"
            for call in choice.delta.tool_calls or []:
                if (choice.index, call.index) not in opened:
                    assert call.id and call.type == "function" and call.function and call.function.name, call
                    opened.add((choice.index, call.index))
            if choice.finish_reason is not None:
                finished.add(choice.index)
    assert finished or broken, "no chunk carries a finish_reason"
    return chunks


def check_openai_error(doc: Any) -> ErrorObject:
    """`{"error": {"message", "type", "param", "code"}}`, all four present."""
    assert isinstance(doc, dict) and set(doc) == {"error"}, doc
    assert {"message", "type", "param", "code"} <= set(doc["error"]), doc
    return strict(ErrorObject, doc["error"])


def check_anthropic_error(doc: Any) -> ErrorResponse:
    """`{"type": "error", "error": {"type", "message"}}` with an error type the SDK knows."""
    return strict(ErrorResponse, doc)


def check_responses_body(doc: Any) -> Response:
    """A valid Response whose every output item has a `status`: `completed`, except that the last item of an
    incomplete response is `incomplete` (it is what the limit cut off) and so are the items a failure cut."""
    resp = strict(Response, doc)
    statuses = [item.get("status") for item in doc["output"]]
    if doc["status"] == "completed":
        assert all(s == "completed" for s in statuses), statuses
    elif doc["status"] == "incomplete":
        assert all(s == "completed" for s in statuses[:-1]) and statuses[-1:] in ([], ["incomplete"]), (
            statuses
        )
    else:
        assert all(s in ("completed", "incomplete") for s in statuses), statuses
    return resp


@dataclass
class _Item:
    doc: dict[str, Any]
    parts: dict[int, str] = field(default_factory=dict)
    """content_index → the text so far, for a part opened and not yet done."""
    done: bool = False


def check_responses_stream(raw: bytes) -> list[Any]:
    """Every event a valid ResponseStreamEvent named by its `event:` line; sequence_number 0, 1, 2 …;
    `response.created` first and a terminal event (`response.completed` / `incomplete` / `failed`) last,
    an `error` event only just before `response.failed`; every output item and content part added, then
    deltas for it, then done, at its own output_index and content_index; the final response's output is
    the items as done."""
    events = parse_sse(raw)
    docs = [json.loads(e.data) for e in events]
    parsed = [strict(RESPONSE_EVENTS, d) for d in docs]
    for e, d in zip(events, docs, strict=True):
        assert e.event == d["type"], (e.event, d["type"])
    assert [d["sequence_number"] for d in docs] == list(range(len(docs)))
    assert docs[0]["type"] == "response.created"
    terminal = ("response.completed", "response.incomplete", "response.failed")
    assert docs[-1]["type"] in terminal, docs[-1]["type"]
    assert not any(d["type"] in terminal for d in docs[:-1])
    failed = docs[-1]["type"] == "response.failed"
    items: list[_Item] = []
    for n, d in enumerate(docs[1:-1], start=1):
        kind = d["type"]
        if kind == "response.in_progress":
            continue
        if kind == "error":
            assert failed and n == len(docs) - 2, "an error event comes only just before response.failed"
            continue
        index = d["output_index"]
        if kind == "response.output_item.added":
            assert index == len(items) and all(i.done for i in items), d
            items.append(_Item(d["item"]))
            continue
        item = items[index]
        assert not item.done, f"{kind} after output item {index} is done"
        if "item_id" in d:
            assert d["item_id"] == item.doc["id"], d
        if kind == "response.output_item.done":
            assert not item.parts and d["item"]["id"] == item.doc["id"], d
            item.doc, item.done = d["item"], True
        elif kind == "response.content_part.added":
            assert d["content_index"] not in item.parts and d["content_index"] == len(
                item.doc.get("content", [])
            )
            item.parts[d["content_index"]] = ""
            item.doc.setdefault("content", []).append(d["part"])
        elif kind == "response.output_text.delta":
            item.parts[d["content_index"]] += d["delta"]
        elif kind == "response.output_text.done":
            assert d["text"] == item.parts[d["content_index"]], d
        elif kind == "response.content_part.done":
            assert d["part"].get("text") == item.parts.pop(d["content_index"]), d
        elif kind == "response.function_call_arguments.delta":
            item.parts[-1] = item.parts.get(-1, "") + d["delta"]
        elif kind == "response.function_call_arguments.done":
            assert d["arguments"] == item.parts.pop(-1, ""), d
        else:
            raise AssertionError(f"unexpected event {kind}")
    final = docs[-1]["response"]
    check_responses_body(final)
    if not failed:  # a failed stream stops where it broke, its items as far as they got
        assert all(i.done for i in items), "an output item was added and never done"
        assert final["output"] == [i.doc for i in items]
    return parsed


def check_messages_body(doc: Any) -> Message:
    return strict(Message, doc)


_DELTA_OF = {
    "text": {"text_delta", "citations_delta"},
    "tool_use": {"input_json_delta"},
    "thinking": {"thinking_delta", "signature_delta"},
}


def check_messages_stream(raw: bytes) -> list[Any]:
    """Every event a valid RawMessageStreamEvent (pings aside) named by its `event:` line; message_start
    first; blocks started at 0, 1, 2 …, each with deltas of its own kind and then stopped before the next
    starts; message_delta after the last block, message_stop last. A stream that broke ends instead with an
    `error` event of Anthropic's error shape, after the events so far in that same order."""
    events: list[SSEEvent] = [e for e in parse_sse(raw) if e.event != "ping"]
    docs = [json.loads(e.data) for e in events]
    broken = docs[-1]["type"] == "error"
    if broken:
        check_anthropic_error(docs.pop())
        assert events.pop().event == "error"
    parsed = [strict(MESSAGE_EVENTS, d) for d in docs]
    for e, d in zip(events, docs, strict=True):
        assert e.event == d["type"], (e.event, d["type"])
    kinds = [d["type"] for d in docs]
    assert kinds[0] == "message_start" and kinds.count("message_start") == 1, kinds
    blocks = docs[1:]
    if not broken:
        assert kinds[-2:] == ["message_delta", "message_stop"], kinds
        blocks = docs[1:-2]
    elif kinds[-1] == "message_delta":
        blocks = docs[1:-1]
    open_kind: str | None = None
    next_index = 0
    for d in blocks:
        if d["type"] == "content_block_start":
            assert open_kind is None and d["index"] == next_index, d
            open_kind = d["content_block"]["type"]
        elif d["type"] == "content_block_delta":
            assert open_kind is not None and d["index"] == next_index, d
            assert d["delta"]["type"] in _DELTA_OF[open_kind], (open_kind, d)
        elif d["type"] == "content_block_stop":
            assert open_kind is not None and d["index"] == next_index, d
            open_kind, next_index = None, next_index + 1
        else:
            raise AssertionError(f"unexpected event {d['type']} at {kinds}")
    assert open_kind is None or broken, "a content block was never stopped"
    return parsed
