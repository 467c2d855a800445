"""What the upstream billed, read from its response: a JSON body or the raw bytes of an SSE stream.

This runs after the response has gone out (in `wait_until`), never on the streaming path: the proxy only
keeps references to the upstream chunks it forwarded, and they are parsed here with the same decoders the
translators use. When a stream ends without a usage report (client disconnect, upstream cut), the output is
counted from the text that was streamed and marked as an estimate.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Annotated, Any, Literal

import msgspec

from adapters import anthropic, openai_chat, openai_responses
from adapters.base import StreamUsage, TextDelta, ThinkingDelta, ToolCall, ToolCallDelta, Usage
from adapters.base import token_count as _count
from adapters.jsondecode import JsonDecoder
from adapters.sse import SSEParser

from .pricing import Billed

Wire = Literal["chat", "responses", "messages", "embeddings"]
_decoder = JsonDecoder()


@dataclass(slots=True)
class Observed:
    """Billed usage as reported (None if the upstream never said) and the output text that was produced."""

    billed: Billed | None
    output_text: str = ""
    input_side: Billed | None = None
    """Without `billed`: the input side the upstream reported before the output was cut off (Anthropic's
    `message_start` carries the input and its cache split); the output is then estimated from the text."""


MAX_TOKENS = 100_000_000
"""More tokens than one request has (the largest context windows hold a few million): a count above it is an
upstream's error, not usage, and would price a request at millions of dollars."""


_COUNTS: dict[str, tuple[tuple[str, ...], ...]] = {
    "chat": (
        ("prompt_tokens",),
        ("completion_tokens",),
        ("prompt_tokens_details", "cached_tokens"),
        ("prompt_tokens_details", "cache_write_tokens"),
    ),
    "responses": (
        ("input_tokens",),
        ("output_tokens",),
        ("input_tokens_details", "cached_tokens"),
        ("output_tokens_details", "reasoning_tokens"),
    ),
    "messages": (
        ("input_tokens",),
        ("output_tokens",),
        ("cache_read_input_tokens",),
        ("cache_creation_input_tokens",),
        ("cache_creation", "ephemeral_1h_input_tokens"),
        ("output_tokens_details", "thinking_tokens"),
    ),
}
"""The counts billing reads from each wire's usage report, as paths into it."""


def usable(wire: Wire, u: dict[str, Any]) -> bool:
    """Whether every count billing reads from a usage report is absent, null or a whole number from 0 to
    MAX_TOKENS. One that is not (negative, a string, a float, absurdly large) makes the whole report unusable:
    the request is then counted as one without usage (its output estimated from its text), never billed a
    negative, zero or absurd number of tokens on the upstream's word."""
    for path in _COUNTS.get(wire, ()):
        value: Any = u
        for key in path:
            value = value.get(key) if isinstance(value, dict) else None
        if value is not None and (type(value) is not int or not 0 <= value <= MAX_TOKENS):
            return False
    return True


def billed_from_usage(u: Usage) -> Billed:
    """A canonical (translated) usage as billed tokens."""
    return Billed(
        input_tokens=u.input_tokens,
        output_tokens=u.output_tokens,
        cached_input_tokens=u.cached_input_tokens,
        cache_write_tokens=u.cache_creation_input_tokens,
        cache_write_1h_tokens=u.cache_creation_1h_input_tokens,
    )


def _responses_usage(u: Any) -> Billed | None:
    usage = openai_responses.usage_from_doc(u) if isinstance(u, dict) and usable("responses", u) else None
    return billed_from_usage(usage) if usage is not None else None


class _UsageOnly(msgspec.Struct):
    """A response body as far as accounting reads it: msgspec skips the rest (the answer's text, tool
    calls …) without building Python objects for it."""

    usage: dict[str, Any] | None = None


_usage_decoder = JsonDecoder(_UsageOnly)

_Count = Annotated[int, msgspec.Meta(ge=0, le=MAX_TOKENS)]


class _PromptDetails(msgspec.Struct):
    cached_tokens: _Count = 0
    cache_write_tokens: _Count = 0
    """Prompt-cache writes, as OpenRouter reports them (for Anthropic models, among others)."""


class _ChatUsage(msgspec.Struct):
    prompt_tokens: _Count = 0
    completion_tokens: _Count = 0
    prompt_tokens_details: _PromptDetails | None = None
    cost: Annotated[float, msgspec.Meta(ge=0)] | None = None
    """USD, as OpenRouter reports it."""


class _ChatUsageOnly(msgspec.Struct):
    """A Chat Completions body whose usage holds only well-formed counts: decoded straight into them."""

    usage: _ChatUsage | None = None


_chat_usage_decoder = JsonDecoder(_ChatUsageOnly)


def from_body(wire: Wire, data: bytes) -> Billed | None:
    """Usage from a non-streaming response body; None if it has none (or is not a JSON object)."""
    if wire == "chat":
        # The common case, without building the usage as dicts. A count that is missing reads as 0; one
        # that is not a whole number up to MAX_TOKENS (null, negative, a float, a string) fails here and is
        # read below, where a null one counts as 0 and any other makes the report unusable.
        try:
            typed = _chat_usage_decoder.decode(data).usage
        except msgspec.DecodeError:
            pass
        else:
            if typed is None:
                return None
            details = typed.prompt_tokens_details
            return Billed(
                input_tokens=typed.prompt_tokens,
                output_tokens=typed.completion_tokens,
                cached_input_tokens=details.cached_tokens if details is not None else 0,
                cache_write_tokens=details.cache_write_tokens if details is not None else 0,
                reported_cost_usd=typed.cost,
            )
    try:
        found = _usage_decoder.decode(data).usage  # not an object, or `usage` not one: ValidationError
    except msgspec.DecodeError:  # also msgspec.ValidationError, its subclass
        return None
    if found is None:
        return None
    return from_doc(wire, {"usage": found})


def from_doc(wire: Wire, doc: dict[str, Any]) -> Billed | None:
    """Usage from a decoded response document (or the chat stream's usage chunk)."""
    u = doc.get("usage")
    if not isinstance(u, dict) or not usable(wire, u):
        return None
    if wire == "responses":
        return _responses_usage(u)
    if wire == "embeddings":
        return Billed(input_tokens=_count(u.get("prompt_tokens") or u.get("input_tokens")))
    if wire == "messages":
        return billed_from_usage(anthropic._usage_from_anthropic(u))
    details = u.get("prompt_tokens_details")
    if not isinstance(details, dict):
        details = {}
    reported = u.get("cost")
    return Billed(
        input_tokens=_count(u.get("prompt_tokens")),
        output_tokens=_count(u.get("completion_tokens")),
        cached_input_tokens=_count(details.get("cached_tokens")),
        cache_write_tokens=_count(details.get("cache_write_tokens")),
        reported_cost_usd=float(reported)
        if isinstance(reported, int | float) and not isinstance(reported, bool) and 0 <= reported < 1e9
        else None,
    )


def _data_line(raw: bytes, marker: bytes, last: bool = True) -> Any:
    """The JSON of the single-line `data:` field holding `marker` (its last or first occurrence), or None."""
    pos = raw.rfind(marker) if last else raw.find(marker)
    if pos < 0:
        return None
    start = raw.rfind(b"data:", 0, pos)
    end = raw.find(b"\n", pos)
    if start < 0 or raw.find(b"\n", start, pos) >= 0:  # the marker is not on that data line
        return None
    line = raw[start + 5 : end if end >= 0 else len(raw)].strip()
    try:
        return _decoder.decode(line)
    except msgspec.DecodeError:
        return None


def usage_at_the_end(wire: Wire, raw: bytes) -> Billed | None:
    """Usage read straight from the event that carries it, without decoding the whole stream."""
    if wire == "chat":
        doc = _data_line(raw, b'"usage":{')
        if isinstance(doc, dict) and isinstance(doc.get("usage"), dict):
            return from_doc("chat", doc)
        return None
    if wire == "responses":
        for kind in (b'"response.completed"', b'"response.incomplete"', b'"response.failed"'):
            doc = _data_line(raw, b'"type":' + kind)
            resp = doc.get("response") if isinstance(doc, dict) else None
            if isinstance(resp, dict):
                return _responses_usage(resp.get("usage"))
        return None
    start = _data_line(raw, b'"type":"message_start"', last=False)
    delta = _data_line(raw, b'"type":"message_delta"')
    if not isinstance(start, dict) or not isinstance(delta, dict):
        return None
    message = start.get("message")
    first = message.get("usage") if isinstance(message, dict) else None
    final = delta.get("usage")
    if (
        not isinstance(first, dict)
        or not isinstance(final, dict)
        or not (usable("messages", first) and usable("messages", final))
    ):
        return None
    merged = {**first, **{k: v for k, v in final.items() if v is not None}}
    return billed_from_usage(anthropic._usage_from_anthropic(merged))


def from_stream(wire: Wire, chunks: Iterable[bytes]) -> Observed:
    """Usage and output text from the raw bytes of an upstream SSE stream (complete or cut off).

    A stream that reports its usage is read at the one or two events that carry it (microseconds for any
    length); only a stream without usage (cut off, abandoned) is decoded whole, for its output text.
    """
    chunks = list(chunks)
    billed = usage_at_the_end(wire, b"".join(chunks)) if wire != "embeddings" else None
    if billed is not None:
        return Observed(billed)
    return _decode_stream(wire, chunks)


def _decode_stream(wire: Wire, chunks: Iterable[bytes]) -> Observed:
    parser = SSEParser()
    text: list[str] = []
    usage: Usage | None = None
    billed: Billed | None = None
    if wire == "responses":
        for chunk in chunks:
            for event in parser.feed(chunk):
                kind = event.event
                if kind in (
                    "response.output_text.delta",
                    "response.function_call_arguments.delta",
                    "response.reasoning_summary_text.delta",
                ):
                    doc = _safe(event.data)
                    if isinstance(doc, dict) and isinstance(doc.get("delta"), str):
                        text.append(doc["delta"])
                elif kind in ("response.completed", "response.incomplete", "response.failed"):
                    doc = _safe(event.data)
                    resp = doc.get("response") if isinstance(doc, dict) else None
                    if isinstance(resp, dict):
                        billed = _responses_usage(resp.get("usage")) or billed
        return Observed(billed, "".join(text))
    chat = openai_chat.StreamDecoder() if wire == "chat" else None
    messages = anthropic.StreamDecoder() if wire == "messages" else None
    # Anthropic's usage comes in two events: none reported is no usage, and either one unusable spoils both.
    reported = unusable = False
    for chunk in chunks:
        for event in parser.feed(chunk):
            try:
                if chat is not None:
                    if event.data == "[DONE]":
                        continue
                    events = chat.feed(event.data)
                else:
                    assert messages is not None
                    events = messages.feed(event.event, event.data)
                    if event.event in ("message_start", "message_delta"):
                        u = _usage_in(event.data)
                        if u is not None:
                            reported = True
                            unusable = unusable or not usable("messages", u)
            except Exception:  # noqa: BLE001 - a malformed event costs its own content, not the accounting
                continue
            for ev in events:
                if isinstance(ev, TextDelta | ThinkingDelta):
                    text.append(ev.text)
                elif isinstance(ev, ToolCallDelta):
                    text.append(ev.arguments)
                elif isinstance(ev, StreamUsage):
                    if chat is not None:  # read as the usage chunk itself: OpenRouter's cost comes with it
                        doc = _safe(event.data)
                        billed = from_doc("chat", doc) if isinstance(doc, dict) else None
                    else:
                        usage = ev.usage
    if unusable or (messages is not None and not reported):
        return Observed(None, "".join(text))
    if billed is None and usage is not None:
        billed = billed_from_usage(usage)
    started = messages.usage if messages is not None and billed is None else None
    return Observed(billed, "".join(text), billed_from_usage(started) if started is not None else None)


def from_response(wire: Wire, data: bytes) -> Observed:
    """Usage from a non-streaming response body; when it reports none, the answer's text (its text, thinking
    and tool-call arguments) to estimate the output from."""
    billed = from_body(wire, data)
    if billed is not None or wire == "embeddings":
        return Observed(billed)
    doc = _safe(data)
    if not isinstance(doc, dict):
        return Observed(None)
    try:
        if wire == "messages":
            answer = anthropic.decode_response(doc)
        elif wire == "responses":
            answer = openai_responses.decode_response(doc)
        else:
            answer = openai_chat.decode_response(doc)
    except Exception:  # noqa: BLE001 - an answer we cannot read has no text to count, not a failed accounting
        return Observed(None)
    return Observed(None, "".join(p.arguments if isinstance(p, ToolCall) else p.text for p in answer.content))


def _usage_in(data: str) -> dict[str, Any] | None:
    """The usage object of an Anthropic `message_start` or `message_delta` event, if it has one."""
    doc = _safe(data)
    if not isinstance(doc, dict):
        return None
    message = doc.get("message")
    u = message.get("usage") if isinstance(message, dict) else doc.get("usage")
    return u if isinstance(u, dict) else None


def _safe(data: str | bytes) -> Any:
    try:
        return _decoder.decode(data)
    except msgspec.DecodeError:
        return None
