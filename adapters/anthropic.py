"""Anthropic Messages wire format ⇄ the canonical types of `adapters.base`.

Four directions, each used when the client and the upstream speak different formats:

- `decode_request`: an inbound `/v1/messages` body → `Request` (an Anthropic client, another upstream).
- `encode_request`: `Request` → an Anthropic body (any client, an Anthropic upstream).
- `decode_response` / `StreamDecoder`: an Anthropic upstream's Message or SSE stream → canonical.
- `encode_response` / `StreamEncoder`: canonical → what an Anthropic client SDK accepts.

Usage: Anthropic's `input_tokens` excludes `cache_read_input_tokens` and `cache_creation_input_tokens`;
canonical `Usage.input_tokens` includes both. Every conversion below adds or subtracts them.

Redacted thinking: a `redacted_thinking` block carries only opaque `data` that must be sent back unchanged.
The canonical `Thinking` has no field for it, and an empty `text` with a signature cannot mark it (a normal
thinking block with `display: "omitted"` looks exactly like that). It is therefore kept as
`Thinking(text="", signature=REDACTED_PREFIX + data)`: the prefix contains `_` and `:`, which never occur
in the base64 of a real signature, so the two cannot be confused, and every encoder here turns it back into
a `redacted_thinking` block. Other formats drop `Thinking` blocks, so the marker never reaches them.
"""

from __future__ import annotations

import re
import uuid
from typing import Any, Final, Literal, NoReturn

import msgspec

from . import documents
from .base import (
    BlockStop,
    CacheControl,
    Document,
    Image,
    Message,
    Part,
    Request,
    Response,
    ResponseFormat,
    StopReason,
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
    parse_data_url,
    token_limit,
)
from .jsondecode import JsonDecoder

__all__ = [
    "REDACTED_PREFIX",
    "StreamDecoder",
    "StreamEncoder",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "fit_sampling",
]

REDACTED_PREFIX: Final = "redacted_thinking:"
"""Prefix of a canonical `Thinking.signature` that stands for a `redacted_thinking` block (module doc)."""

_json_encode = msgspec.json.encode
_json_decode = JsonDecoder().decode

_STOP_FROM_ANTHROPIC: Final[dict[str, StopReason]] = {
    "end_turn": "stop",
    "max_tokens": "length",
    "tool_use": "tool_calls",
    "stop_sequence": "stop_sequence",
    "refusal": "content_filter",
    # A paused server-tool turn is complete as far as a client of another format can tell.
    "pause_turn": "stop",
    # Running out of context window is a length limit, whichever limit it was.
    "model_context_window_exceeded": "length",
}

_SERVER_SIDE_FIELDS: Final = ("mcp_servers", "container")
"""Request fields for what Anthropic runs on its side (MCP connectors, the code-execution container)."""

_ERROR_TYPES: Final = frozenset(
    {
        "invalid_request_error",
        "authentication_error",
        "billing_error",
        "permission_error",
        "not_found_error",
        "request_too_large",
        "rate_limit_error",
        "api_error",
        "timeout_error",
        "overloaded_error",
    }
)
"""Anthropic's error types: another format's (OpenAI's `server_error`) is named by the nearest of them."""

_STOP_TO_ANTHROPIC: Final[dict[str, str]] = {
    "stop": "end_turn",
    "length": "max_tokens",
    "tool_calls": "tool_use",
    "stop_sequence": "stop_sequence",
    "content_filter": "refusal",
    # Anthropic has no error stop reason; an upstream error that still produced a message ended its turn.
    "error": "end_turn",
}

_TOOL_CHOICE_FROM_ANTHROPIC: Final[dict[str, Literal["auto", "required", "none"]]] = {
    "auto": "auto",
    "any": "required",
    "none": "none",
}

_TOOL_CHOICE_TO_ANTHROPIC: Final[dict[str, str]] = {
    "auto": "auto",
    "required": "any",
    "none": "none",
    "tool": "tool",
}


# Anthropic's pattern for tool_use ids.
_TOOL_ID_OK: Final = re.compile(r"[A-Za-z0-9_-]+").fullmatch
_TOOL_ID_BAD: Final = re.compile(r"[^A-Za-z0-9_-]")


def _fail(message: str, param: str) -> NoReturn:
    raise TranslationError(message, param)


# ---- usage ---------------------------------------------------------------------------------------------


def _int(value: Any) -> int:
    """An Anthropic usage count; absent, null and negative counts are 0 (as `token_count` reads OpenAI's)."""
    return value if type(value) is int and value >= 0 else 0


def _usage_from_anthropic(u: dict[str, Any]) -> Usage:
    cache_read = _int(u.get("cache_read_input_tokens"))
    cache_write = _int(u.get("cache_creation_input_tokens"))
    details = u.get("output_tokens_details")
    return Usage(
        input_tokens=_int(u.get("input_tokens")) + cache_read + cache_write,
        output_tokens=_int(u.get("output_tokens")),
        cached_input_tokens=cache_read,
        cache_creation_input_tokens=cache_write,
        reasoning_tokens=_int(details.get("thinking_tokens")) if isinstance(details, dict) else 0,
        cache_creation_1h_input_tokens=_one_hour_writes(u, cache_write),
    )


def _one_hour_writes(u: dict[str, Any], cache_write: int) -> int:
    """Cache writes with a 1-hour TTL: `cache_creation.ephemeral_1h_input_tokens` (priced 2x input, not the
    5-minute 1.25x), at most all of the writes."""
    split = u.get("cache_creation")
    return min(_int(split.get("ephemeral_1h_input_tokens")), cache_write) if isinstance(split, dict) else 0


def _usage_to_anthropic(u: Usage) -> dict[str, Any]:
    out: dict[str, Any] = {
        # Clamped: a source that reports cache counts larger than its prompt must not yield a negative count.
        "input_tokens": max(0, u.input_tokens - u.cached_input_tokens - u.cache_creation_input_tokens),
        "output_tokens": u.output_tokens,
        "cache_creation_input_tokens": u.cache_creation_input_tokens,
        "cache_read_input_tokens": u.cached_input_tokens,
    }
    if u.reasoning_tokens:
        out["output_tokens_details"] = {"thinking_tokens": u.reasoning_tokens}
    return out


# ---- decode_request ------------------------------------------------------------------------------------


def _cache_control(block: dict[str, Any], param: str) -> CacheControl | None:
    cc = block.get("cache_control")
    if cc is None or type(cc) is dict:
        return cc
    _fail("`cache_control` must be an object", f"{param}.cache_control")


def _string(block: dict[str, Any], key: str, param: str) -> str:
    value = block.get(key)
    if type(value) is str:
        return value
    _fail(f"`{key}` must be a string", f"{param}.{key}")


def _decode_image(block: dict[str, Any], param: str) -> Image:
    source = block.get("source")
    if type(source) is not dict:
        _fail("`source` must be an object", f"{param}.source")
    kind = source.get("type")
    cc = _cache_control(block, param)
    if kind == "base64":
        return Image(
            media_type=_string(source, "media_type", f"{param}.source"),
            data=_string(source, "data", f"{param}.source"),
            cache_control=cc,
        )
    if kind == "url":
        return Image(url=_string(source, "url", f"{param}.source"), cache_control=cc)
    if kind == "file":
        raise documents.file_id_refused(f"{param}.source.file_id", "send the image inline or by URL instead")
    _fail(f"image source type {kind!r} is not supported; use 'base64' or 'url'", f"{param}.source.type")


def _decode_text(block: dict[str, Any], param: str) -> Text:
    # Citations have no canonical form and are dropped; the text itself is what the model needs.
    return Text(_string(block, "text", param), _cache_control(block, param))


def _decode_tool_result(block: dict[str, Any], param: str) -> ToolResult:
    content = block.get("content")
    parts: list[Text | Image | Document]
    if content is None:
        parts = []
    elif type(content) is str:
        parts = [Text(content)] if content else []
    elif type(content) is list:
        parts = []
        for k, item in enumerate(content):
            if type(item) is not dict:
                _fail("tool_result content blocks must be objects", f"{param}.content[{k}]")
            kind = item.get("type")
            if kind == "text":
                parts.append(_decode_text(item, f"{param}.content[{k}]"))
            elif kind == "image":
                parts.append(_decode_image(item, f"{param}.content[{k}]"))
            elif kind == "document":
                parts.extend(_decode_document(item, f"{param}.content[{k}]"))
            else:
                _fail(
                    f"tool_result content of type {kind!r} cannot be translated for this model's provider",
                    f"{param}.content[{k}].type",
                )
    else:
        _fail("`content` must be a string or a list of blocks", f"{param}.content")
    is_error = block.get("is_error", False)
    if type(is_error) is not bool:
        _fail("`is_error` must be a boolean", f"{param}.is_error")
    return ToolResult(_string(block, "tool_use_id", param), parts, is_error, _cache_control(block, param))


def _decode_document(block: dict[str, Any], param: str) -> list[Text | Image | Document]:
    return documents.from_anthropic(block, param, _cache_control(block, param))


def _decode_blocks(block: Any, param: str) -> list[Part]:
    """The parts one content block stands for: itself, or a document's (its context, its text)."""
    if type(block) is dict and block.get("type") == "document":
        return [*_decode_document(block, param)]
    return [_decode_block(block, param)]


def _decode_block(block: Any, param: str) -> Part:
    if type(block) is not dict:
        _fail("content blocks must be objects", param)
    kind = block.get("type")
    if kind == "text":
        return _decode_text(block, param)
    if kind == "tool_result":
        return _decode_tool_result(block, param)
    if kind == "tool_use":
        args = block.get("input")
        if type(args) is not dict:
            _fail("`input` must be an object", f"{param}.input")
        return ToolCall(
            _string(block, "id", param),
            _string(block, "name", param),
            # msgspec keeps the client's key order: the upstream sees the arguments as the client wrote them.
            _json_encode(args).decode(),
            _cache_control(block, param),
        )
    if kind == "image":
        return _decode_image(block, param)
    if kind == "thinking":
        return Thinking(_string(block, "thinking", param), _string(block, "signature", param))
    if kind == "redacted_thinking":
        return Thinking("", REDACTED_PREFIX + _string(block, "data", param))
    if kind is None:
        _fail("content block has no `type`", f"{param}.type")
    # search_result, server tool blocks, …: no canonical form, and silently dropping them would
    # change what the model is asked.
    _fail(f"content blocks of type {kind!r} cannot be translated for this model's provider", f"{param}.type")


def _decode_messages(raw: Any) -> list[Message]:
    if type(raw) is not list or not raw:
        _fail("`messages` must be a non-empty list", "messages")
    messages: list[Message] = []
    for i, m in enumerate(raw):
        if type(m) is not dict:
            _fail("each message must be an object", f"messages[{i}]")
        role = m.get("role")
        if role != "user" and role != "assistant":
            _fail("`role` must be 'user' or 'assistant'", f"messages[{i}].role")
        content = m.get("content")
        if type(content) is str:
            parts: list[Part] = [Text(content)]
        elif type(content) is list:
            prefix = f"messages[{i}].content"
            parts = [p for j, b in enumerate(content) for p in _decode_blocks(b, f"{prefix}[{j}]")]
        else:
            _fail("`content` must be a string or a list of blocks", f"messages[{i}].content")
        messages.append(Message(role, parts))
    return messages


def _decode_system(raw: Any) -> list[Text]:
    if raw is None:
        return []
    if type(raw) is str:
        return [Text(raw)] if raw else []
    if type(raw) is not list:
        _fail("`system` must be a string or a list of text blocks", "system")
    system: list[Text] = []
    for k, block in enumerate(raw):
        if type(block) is not dict:
            _fail("system blocks must be objects", f"system[{k}]")
        if block.get("type") != "text":
            _fail("system blocks must be of type 'text'", f"system[{k}].type")
        system.append(_decode_text(block, f"system[{k}]"))
    return system


def _decode_tools(raw: Any) -> list[Tool]:
    if raw is None:
        return []
    if type(raw) is not list:
        _fail("`tools` must be a list", "tools")
    tools: list[Tool] = []
    for k, t in enumerate(raw):
        param = f"tools[{k}]"
        if type(t) is not dict:
            _fail("each tool must be an object", param)
        kind = t.get("type")
        if kind is not None and kind != "custom":
            # Server tools (web search, bash, code execution, …) run inside Anthropic's API only.
            _fail(
                f"Anthropic server tool {kind!r} is not available with this model's provider", f"{param}.type"
            )
        schema = t.get("input_schema")
        if type(schema) is not dict:
            _fail("`input_schema` must be an object", f"{param}.input_schema")
        description = t.get("description")
        if description is not None and type(description) is not str:
            _fail("`description` must be a string", f"{param}.description")
        strict = t.get("strict")
        if strict is not None and type(strict) is not bool:
            _fail("`strict` must be a boolean", f"{param}.strict")
        tools.append(Tool(_string(t, "name", param), schema, description, strict, _cache_control(t, param)))
    return tools


def _decode_tool_choice(raw: Any) -> tuple[ToolChoice | None, bool | None]:
    """(tool_choice, parallel_tool_calls)."""
    if raw is None:
        return None, None
    if type(raw) is not dict:
        _fail("`tool_choice` must be an object", "tool_choice")
    kind = raw.get("type")
    if kind == "tool":
        choice = ToolChoice("tool", _string(raw, "name", "tool_choice"))
    else:
        simple = _TOOL_CHOICE_FROM_ANTHROPIC.get(kind) if type(kind) is str else None
        if simple is None:
            _fail("`tool_choice.type` must be 'auto', 'any', 'tool' or 'none'", "tool_choice.type")
        choice = ToolChoice(simple)
    disable = raw.get("disable_parallel_tool_use")
    if disable is not None and type(disable) is not bool:
        _fail("`disable_parallel_tool_use` must be a boolean", "tool_choice.disable_parallel_tool_use")
    # Only an explicit opt-out is forwarded; "parallel allowed" is every provider's default anyway.
    return choice, (False if disable else None)


def _number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if type(value) is float or type(value) is int:
        return float(value)
    _fail(f"`{key}` must be a number", key)


def _integer(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None or type(value) is int:
        return value
    _fail(f"`{key}` must be an integer", key)


def _decode_thinking(raw: Any) -> int | None:
    """Extended thinking's budget (`{"type": "enabled", "budget_tokens": N}`), or None (absent, disabled)."""
    if raw is None:
        return None
    if type(raw) is not dict:
        _fail("`thinking` must be an object", "thinking")
    if raw.get("type") != "enabled":
        return None
    budget = raw.get("budget_tokens")
    if type(budget) is not int or budget < 1:
        _fail("`thinking.budget_tokens` must be a positive integer", "thinking.budget_tokens")
    return int(budget)


def decode_request(body: dict[str, Any]) -> Request:
    """Translate an inbound Anthropic `/v1/messages` body into a canonical `Request`.

    Raises `TranslationError` naming the offending field (e.g. `messages[2].content[1].type`) for shapes
    that are invalid, or valid for Anthropic but impossible to express for another provider (search results,
    server tools, documents from the Files API or asking for citations).
    """
    model = body.get("model")
    if type(model) is not str or not model:
        _fail("`model` must be a non-empty string", "model")
    messages = _decode_messages(body.get("messages"))
    tool_choice, parallel = _decode_tool_choice(body.get("tool_choice"))
    for field in _SERVER_SIDE_FIELDS:
        if body.get(field):  # tools Anthropic runs itself: another provider would answer without them
            _fail(f"`{field}` is only available on Claude models", field)

    stop = body.get("stop_sequences")
    if stop is None:
        stop = []
    elif type(stop) is not list or any(type(s) is not str for s in stop):
        _fail("`stop_sequences` must be a list of strings", "stop_sequences")

    metadata = body.get("metadata")
    user = None
    if metadata is not None:
        if type(metadata) is not dict:
            _fail("`metadata` must be an object", "metadata")
        user = metadata.get("user_id")
        if user is not None and type(user) is not str:
            _fail("`user_id` must be a string", "metadata.user_id")

    stream = body.get("stream", False)
    if type(stream) is not bool:
        if stream is not None:
            _fail("`stream` must be a boolean", "stream")
        stream = False

    response_format = _decode_output_format(body.get("output_config"), body.get("output_format"))
    reasoning_budget = _decode_thinking(body.get("thinking"))

    return Request(
        model=model,
        messages=messages,
        system=_decode_system(body.get("system")),
        tools=_decode_tools(body.get("tools")),
        tool_choice=tool_choice,
        parallel_tool_calls=parallel,
        max_tokens=token_limit(_integer(body, "max_tokens"), "max_tokens"),
        temperature=_number(body, "temperature"),
        top_p=_number(body, "top_p"),
        top_k=_integer(body, "top_k"),
        stop=stop,
        stop_field="stop_sequences",
        stream=stream,
        user=user,
        metadata=metadata,
        response_format=response_format,
        reasoning_budget=reasoning_budget,
    )


def _decode_output_format(config: Any, beta: Any) -> ResponseFormat | None:
    """Structured outputs as a JSON-schema response format, or None: `output_config.format`, or the beta's
    top-level `output_format` (`structured-outputs-2025-11-13`, which some SDK versions and pydantic-ai still
    send) with the same shape."""
    if config is not None and type(config) is not dict:
        _fail("`output_config` must be an object", "output_config")
    fmt = config.get("format") if config is not None else None
    if beta is not None:
        if fmt is not None and fmt != beta:
            _fail("give the output format once: `output_config.format` or `output_format`", "output_format")
        return _decode_format(beta, "output_format")
    return None if fmt is None else _decode_format(fmt, "output_config.format")


def _decode_format(fmt: Any, param: str) -> ResponseFormat:
    if type(fmt) is not dict or fmt.get("type") != "json_schema":
        _fail(f"`{param}` must be an object with type `json_schema`", param)
    schema = fmt.get("schema")
    if type(schema) is not dict:
        _fail(f"`{param}.schema` must be an object", f"{param}.schema")
    # Claude follows the schema exactly, as OpenAI does in strict mode (which needs a name; Claude has none).
    return ResponseFormat(
        type="json_schema", json_schema={"name": "response", "schema": schema, "strict": True}
    )


# ---- encode_request ------------------------------------------------------------------------------------


def _with_cache(block: dict[str, Any], cc: CacheControl | None) -> dict[str, Any]:
    if cc is not None:
        block["cache_control"] = cc
    return block


_IMAGE_TYPES: Final = frozenset({"image/jpeg", "image/png", "image/gif", "image/webp"})
"""The media types Anthropic takes for a base64 image."""


def _image_block(img: Image, param: str) -> dict[str, Any]:
    url = img.url
    if url is not None:
        if url[:5].lower() == "data:":
            # OpenAI clients send inline images as data URLs; Anthropic wants them as a base64 source.
            inline = parse_data_url(url)
            if inline is None:
                _fail("image data URLs must be base64 with a media type", img.where or f"{param}.url")
            media_type, data = inline
        else:
            return _with_cache({"type": "image", "source": {"type": "url", "url": url}}, img.cache_control)
    elif img.data is not None:
        if not img.media_type:
            _fail("an inline image needs a media_type", img.where or f"{param}.media_type")
        media_type, data = img.media_type, img.data
    else:
        _fail("an image needs a url or inline data", img.where or param)
    if media_type not in _IMAGE_TYPES:
        _fail(
            f"images of type {media_type!r} cannot be sent to Claude; use image/jpeg, image/png, image/gif "
            "or image/webp",
            img.where or f"{param}.media_type",
        )
    source = {"type": "base64", "media_type": media_type, "data": data}
    return _with_cache({"type": "image", "source": source}, img.cache_control)


def _tool_input(arguments: str, name: str, param: str) -> dict[str, Any]:
    """Tool-call arguments (JSON text) as the object Anthropic's `tool_use.input` must be."""
    if not arguments or arguments.isspace():
        return {}  # OpenAI-style calls without parameters may carry no arguments at all
    try:
        value = _json_decode(arguments)
    except msgspec.DecodeError:  # also JSON nested deeper than the decoder goes
        _fail(f"the arguments of tool call {name!r} are not valid JSON", param)
    if type(value) is not dict:
        _fail(f"the arguments of tool call {name!r} must be a JSON object for Anthropic", param)
    return value


def _tool_id(id: str) -> str:
    """A tool-call id Anthropic accepts. Some providers' ids (e.g. `functions.get_weather:0`) have characters
    outside its pattern; the mapping is deterministic, so a call and its result still pair up."""
    if _TOOL_ID_OK(id):
        return id
    return _TOOL_ID_BAD.sub("_", id) or "toolu_"


def _tool_result_block(part: ToolResult, param: str) -> dict[str, Any]:
    content: list[dict[str, Any]] = []
    for k, item in enumerate(part.content):
        if isinstance(item, Text):
            if item.text:  # Anthropic rejects empty text blocks
                content.append(_with_cache({"type": "text", "text": item.text}, item.cache_control))
        elif isinstance(item, Document):
            content.append(documents.to_anthropic(item, f"{param}.content[{k}]"))
        else:
            content.append(_image_block(item, f"{param}.content[{k}]"))
    block: dict[str, Any] = {"type": "tool_result", "tool_use_id": _tool_id(part.tool_call_id)}
    if len(content) == 1 and content[0]["type"] == "text" and "cache_control" not in content[0]:
        block["content"] = content[0]["text"]
    elif content:
        block["content"] = content
    if part.is_error:
        block["is_error"] = True
    return _with_cache(block, part.cache_control)


def _thinking_block(part: Thinking) -> dict[str, Any] | None:
    sig = part.signature
    if not sig:
        # Unsigned reasoning (another provider's) would be rejected by Anthropic; it is not needed there.
        return None
    if sig.startswith(REDACTED_PREFIX):
        return {"type": "redacted_thinking", "data": sig[len(REDACTED_PREFIX) :]}
    return {"type": "thinking", "thinking": part.text, "signature": sig}


def _encode_part(part: Part, param: str) -> dict[str, Any] | None:
    if isinstance(part, Text):
        if _blank(part.text):
            return None  # Anthropic rejects empty text blocks (see _blank)
        return _with_cache({"type": "text", "text": part.text}, part.cache_control)
    if isinstance(part, ToolResult):
        return _tool_result_block(part, param)
    if isinstance(part, ToolCall):
        block = {
            "type": "tool_use",
            "id": _tool_id(part.id),
            "name": part.name,
            "input": _tool_input(part.arguments, part.name, part.where or f"{param}.arguments"),
        }
        return _with_cache(block, part.cache_control)
    if isinstance(part, Image):
        return _image_block(part, param)
    if isinstance(part, Document):
        return documents.to_anthropic(part, param)
    return _thinking_block(part)


def _blank(text: str) -> bool:
    """Empty or only whitespace: text Anthropic refuses as a block ("text content blocks must be non-empty",
    "… must contain non-whitespace text" when it is all a message or the system prompt has). A chat client
    sends back whatever Claude answered, `"\n\n"` included, so every later turn would be refused too."""
    return not text or text.isspace()


def _encode_messages(messages: list[Message]) -> list[dict[str, Any]]:
    out: list[dict[str, Any]] = []
    for i, msg in enumerate(messages):
        blocks: list[dict[str, Any]] = []
        for j, part in enumerate(msg.content):
            block = _encode_part(part, f"messages[{i}].content[{j}]")
            if block is not None:
                blocks.append(block)
        if not blocks:
            # Anthropic rejects empty messages; dropping one may leave two same-role turns, merged below (as
            # Anthropic would merge them: consecutive turns of one role are one turn).
            continue
        if out and out[-1]["role"] == msg.role:
            # Anthropic wants one message per turn: all results of one assistant turn in ONE user message.
            out[-1]["content"].extend(blocks)
        else:
            out.append({"role": msg.role, "content": blocks})
    for m in out:
        content = m["content"]
        if m["role"] == "user" and len(content) > 1:
            # Anthropic requires a user message's tool_result blocks before any other content.
            results = [b for b in content if b["type"] == "tool_result"]
            if results and len(results) != len(content):
                m["content"] = results + [b for b in content if b["type"] != "tool_result"]
    return out


def _encode_tool(tool: Tool) -> dict[str, Any]:
    schema = tool.parameters
    if "type" not in schema:
        # OpenAI allows omitting parameters (or their type); Anthropic requires an object schema.
        schema = {"type": "object", **schema} if schema else {"type": "object", "properties": {}}
    out: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        out["description"] = tool.description
    out["input_schema"] = schema
    if tool.strict:
        out["strict"] = True  # inputs that follow the schema exactly (structured outputs)
    return _with_cache(out, tool.cache_control)


def _encode_tool_choice(choice: ToolChoice | None, parallel: bool | None) -> dict[str, Any] | None:
    if choice is None:
        return {"type": "auto", "disable_parallel_tool_use": True} if parallel is False else None
    kind = _TOOL_CHOICE_TO_ANTHROPIC[choice.type]
    out: dict[str, Any] = {"type": kind}
    if kind == "tool":
        if not choice.name:
            _fail("tool_choice 'tool' needs a tool name", "tool_choice.name")
        out["name"] = choice.name
    if parallel is False and kind != "none":  # {type: none} takes no other field
        out["disable_parallel_tool_use"] = True
    return out


def encode_request(
    req: Request,
    *,
    upstream_model: str,
    default_max_tokens: int = 4096,
    sampling: Literal["any", "one", "none"] = "any",
) -> dict[str, Any]:
    """Translate a canonical `Request` into an Anthropic `/v1/messages` body for `upstream_model`.

    `sampling`: the sampling parameters the model takes (`worker.catalog.Sampling`): all of them, temperature
    or top_p but not both (temperature is kept), or none (they are left out).

    Raises `TranslationError` for content Anthropic cannot take, e.g. tool-call arguments that are not a
    JSON object or an image without a media type.
    """
    body: dict[str, Any] = {
        "model": upstream_model,
        "max_tokens": default_max_tokens if req.max_tokens is None else req.max_tokens,
    }

    system = [
        _with_cache({"type": "text", "text": t.text}, t.cache_control)
        for t in req.system
        if not _blank(t.text)
    ]
    if len(system) == 1 and "cache_control" not in system[0]:
        body["system"] = system[0]["text"]
    elif system:
        body["system"] = system

    body["messages"] = _encode_messages(req.messages)
    if not body["messages"]:
        _fail("there is no user or assistant message with content to send", "messages")

    if req.tools:
        body["tools"] = [_encode_tool(t) for t in req.tools]
        # Anthropic rejects tool_choice without tools, so it is only sent alongside them.
        tool_choice = _encode_tool_choice(req.tool_choice, req.parallel_tool_calls)
        if tool_choice is not None:
            body["tool_choice"] = tool_choice

    if req.stop:
        for s in req.stop:
            if s.isspace():
                # Anthropic refuses it, and without it the client asking for one line would get several.
                _fail(
                    f"Claude does not take stop sequences of only whitespace (got {s!r}); send one with "
                    "other characters, or none.",
                    req.stop_field,
                )
        stop = [s for s in req.stop if s]  # Anthropic refuses an empty one too: it names nothing to stop at
        if stop:
            body["stop_sequences"] = stop
    if req.temperature is not None:
        # Anthropic's range is [0, 1]; OpenAI's is [0, 2].
        body["temperature"] = min(max(req.temperature, 0.0), 1.0)
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None:
        body["top_k"] = req.top_k
    if sampling != "any":
        fit_sampling(body, sampling)
    if req.user is not None:
        body["metadata"] = {"user_id": req.user}
    fmt = req.response_format
    if fmt is not None and fmt.type != "text":
        # Structured outputs: the reply follows the schema.
        body["output_config"] = {"format": _output_format(fmt, req.format_field)}
    if req.stream:
        body["stream"] = True
    return body


def _output_format(fmt: ResponseFormat, field: str) -> dict[str, Any]:
    """A JSON response format as Claude's `output_config.format`. Claude answers in JSON only to a schema:
    asked for JSON without one, it would answer in prose that the client then fails to parse, so that is
    refused, naming the client's field (`field`: `response_format` or `text.format`)."""
    if fmt.type == "json_object":
        _fail(
            "Claude has no JSON mode without a schema: its structured outputs take only schemas whose "
            "objects list their properties (`additionalProperties` must be false), so 'any JSON object' "
            "cannot be asked for. Send `json_schema` with a schema instead.",
            field,
        )
    schema = fmt.json_schema.get("schema") if fmt.json_schema is not None else None
    if type(schema) is not dict:
        where = f"{field}.json_schema.schema" if field == "response_format" else f"{field}.schema"
        _fail("Claude answers in JSON only to a schema: give the JSON schema its answer must follow", where)
    return {"type": "json_schema", "schema": schema}


def fit_sampling(body: dict[str, Any], sampling: Literal["any", "one", "none"]) -> None:
    """Leave out of a Messages body the sampling parameters its model refuses (`encode_request`'s
    `sampling`): top_p beside temperature for a model that takes one of them, all three for one that takes
    none."""
    if sampling == "none":
        for key in ("temperature", "top_p", "top_k"):
            body.pop(key, None)
    elif sampling == "one" and body.get("temperature") is not None:
        body.pop("top_p", None)


# ---- responses -----------------------------------------------------------------------------------------


def _stop_from_anthropic(reason: Any) -> StopReason | None:
    if reason is None:
        return None
    return _STOP_FROM_ANTHROPIC.get(reason, "stop") if type(reason) is str else "stop"


def decode_response(body: dict[str, Any]) -> Response:
    """Translate an Anthropic Message (a non-streaming `/v1/messages` reply) into a canonical `Response`.

    Read as tolerantly as the chat decoder reads its bodies (a field of the wrong type reads as empty), but a
    body without a `content` list is no Message: a TranslationError, which the proxy answers with a 502."""
    blocks = body.get("content")
    if not isinstance(blocks, list):
        raise TranslationError("The upstream response has no content.", "content")
    content: list[Text | ToolCall | Thinking] = []
    for block in blocks:
        if not isinstance(block, dict):
            continue
        kind = block.get("type")
        if kind == "text":
            content.append(Text(_str(block.get("text"))))
        elif kind == "tool_use":
            args = _json_encode(block.get("input") or {}).decode()
            content.append(ToolCall(_str(block.get("id")), _str(block.get("name")), args))
        elif kind == "thinking":
            signature = block.get("signature")
            content.append(
                Thinking(_str(block.get("thinking")), signature if isinstance(signature, str) else None)
            )
        elif kind == "redacted_thinking":
            content.append(Thinking("", REDACTED_PREFIX + _str(block.get("data"))))
        # Server-tool blocks cannot occur: encode_request never sends server tools.
    usage = body.get("usage")
    stop_sequence = body.get("stop_sequence")
    return Response(
        id=_str(body.get("id")),
        model=_str(body.get("model")),
        content=content,
        stop_reason=_stop_from_anthropic(body.get("stop_reason")),
        usage=_usage_from_anthropic(usage if isinstance(usage, dict) else {}),
        stop_sequence=stop_sequence if isinstance(stop_sequence, str) else None,
    )


def _str(value: Any) -> str:
    """A string field of an upstream body; anything else (absent, null, a number) reads as empty."""
    return value if isinstance(value, str) else ""


def _message_id(id: str) -> str:
    return id if id.startswith("msg_") else "msg_" + id


def _response_input(arguments: str) -> dict[str, Any]:
    """Arguments as `tool_use.input`; a model's malformed arguments become {} instead of failing the reply."""
    if not arguments or arguments.isspace():
        return {}
    try:
        value = _json_decode(arguments)
    except msgspec.DecodeError:
        return {}
    return value if type(value) is dict else {}


def encode_response(resp: Response, *, model: str) -> dict[str, Any]:
    """Translate a canonical `Response` into an Anthropic Message as a client SDK expects it.

    Unsigned thinking (another provider's reasoning) is shown with `signature: ""`, since the SDK requires
    the field; encode_request drops such blocks if the client sends them back. Tool-call arguments that are
    not a JSON object (a model's truncated output) become `input: {}`.
    """
    content: list[dict[str, Any]] = []
    for part in resp.content:
        if isinstance(part, Text):
            content.append({"type": "text", "text": part.text})
        elif isinstance(part, ToolCall):
            content.append(
                {
                    "type": "tool_use",
                    "id": part.id,
                    "name": part.name,
                    "input": _response_input(part.arguments),
                }
            )
        else:
            sig = part.signature or ""
            if sig.startswith(REDACTED_PREFIX):
                content.append({"type": "redacted_thinking", "data": sig[len(REDACTED_PREFIX) :]})
            else:
                content.append({"type": "thinking", "thinking": part.text, "signature": sig})
    return {
        "id": _message_id(resp.id),
        "type": "message",
        "role": "assistant",
        "model": model,
        "content": content,
        # A complete message always has a stop reason on this API.
        "stop_reason": _STOP_TO_ANTHROPIC[resp.stop_reason or "stop"],
        "stop_sequence": resp.stop_sequence,
        "usage": _usage_to_anthropic(resp.usage),
    }


# ---- StreamDecoder -------------------------------------------------------------------------------------


class StreamDecoder:
    """Anthropic SSE events from an upstream → canonical stream events; one per stream.

    Block indices are Anthropic's. Blocks of types with no canonical form (server tools) are skipped with
    their deltas. Usage is cumulative: message_start's counts, overwritten by whatever message_delta reports.
    """

    __slots__ = (
        "_cache_read",
        "_cache_write",
        "_cache_write_1h",
        "_done",
        "_input",
        "_open",
        "_output",
        "_thinking",
        "_usage",
    )

    def __init__(self) -> None:
        self._done = False
        self._open = -1  # index of the open block, -1 when none
        self._input = 0  # Anthropic semantics: excludes the two cache counts
        self._output = 0
        self._cache_read = 0
        self._cache_write = 0
        self._cache_write_1h = 0
        self._thinking = 0
        self._usage: Usage | None = None

    @property
    def done(self) -> bool:
        """True once the stream has ended (message_stop) or failed (error)."""
        return self._done

    @property
    def usage(self) -> Usage | None:
        """The cumulative canonical usage so far; None before message_start."""
        return self._usage

    def _merge_usage(self, u: Any) -> Usage:
        if type(u) is dict:
            # Later counts are cumulative totals: they replace, and an absent one keeps its earlier value.
            # A count that is not an integer counts 0, as in a complete message (`_usage_from_anthropic`).
            if (v := u.get("input_tokens")) is not None:
                self._input = _int(v)
            if (v := u.get("output_tokens")) is not None:
                self._output = _int(v)
            if (v := u.get("cache_read_input_tokens")) is not None:
                self._cache_read = _int(v)
            if (v := u.get("cache_creation_input_tokens")) is not None:
                self._cache_write = _int(v)
            if type(u.get("cache_creation")) is dict:
                self._cache_write_1h = _one_hour_writes(u, self._cache_write)
            if type(details := u.get("output_tokens_details")) is dict:
                self._thinking = _int(details.get("thinking_tokens"))
        usage = Usage(
            self._input + self._cache_read + self._cache_write,
            self._output,
            self._cache_read,
            self._cache_write,
            self._thinking,
            min(self._cache_write_1h, self._cache_write),
        )
        self._usage = usage
        return usage

    def feed(self, event: str | None, data: str) -> list[StreamEvent]:
        """Translate one SSE event (its `event:` name and joined `data:`) into canonical events."""
        if event == "ping" or self._done:
            return []
        try:
            d = _json_decode(data)
        except msgspec.DecodeError:
            self._done = True
            return [StreamError("api_error", "The upstream sent a malformed stream event.")]
        if type(d) is not dict:
            return []
        kind = d.get("type")

        if kind == "content_block_delta":
            index = d.get("index")
            delta = d.get("delta")
            if index != self._open or type(delta) is not dict:
                return []  # a delta of a skipped block
            dk = delta.get("type")
            if dk == "text_delta":
                text = delta.get("text")
                return [TextDelta(index, text)] if text else []
            if dk == "input_json_delta":
                fragment = delta.get("partial_json")
                return [ToolCallDelta(index, fragment)] if fragment else []
            if dk == "thinking_delta":
                text = delta.get("thinking")
                return [ThinkingDelta(index, text)] if text else []
            if dk == "signature_delta":
                sig = delta.get("signature")
                return [ThinkingDelta(index, signature=sig)] if sig else []
            return []  # citations_delta: no canonical form

        if kind == "content_block_start":
            return self._block_start(d.get("index"), d.get("content_block"))

        if kind == "content_block_stop":
            index = d.get("index")
            if index != self._open:
                return []
            self._open = -1
            return [BlockStop(index)]

        if kind == "message_start":
            msg = d.get("message")
            if type(msg) is not dict:
                msg = {}
            return [
                StreamStart(msg.get("id") or "", msg.get("model") or "", self._merge_usage(msg.get("usage")))
            ]

        if kind == "message_delta":
            out: list[StreamEvent] = []
            if self._open != -1:  # Anthropic closes every block first; stay sequential if it did not
                out.append(BlockStop(self._open))
                self._open = -1
            delta = d.get("delta")
            if type(delta) is not dict:
                delta = {}
            reason = _stop_from_anthropic(delta.get("stop_reason")) or "stop"
            out.append(StreamFinish(reason, delta.get("stop_sequence")))
            out.append(StreamUsage(self._merge_usage(d.get("usage"))))
            return out

        if kind == "message_stop":
            self._done = True
            return [StreamEnd()]

        if kind == "error" or event == "error":
            self._done = True
            err = d.get("error")
            if type(err) is not dict:
                err = {}
            return [StreamError(str(err.get("type") or "api_error"), str(err.get("message") or ""))]

        return []  # ping with another event name, or an event type added after this was written

    def _block_start(self, index: Any, block: Any) -> list[StreamEvent]:
        if type(index) is not int or type(block) is not dict:
            return []
        out: list[StreamEvent] = []
        if self._open != -1:
            out.append(BlockStop(self._open))
            self._open = -1
        kind = block.get("type")
        if kind == "text":
            out.append(TextStart(index))
            if text := block.get("text"):
                out.append(TextDelta(index, text))
        elif kind == "tool_use":
            out.append(ToolCallStart(index, block.get("id") or "", block.get("name") or ""))
            # Anthropic opens with `input: {}` and streams the real input as deltas; anything else is real.
            if args := block.get("input"):
                out.append(ToolCallDelta(index, _json_encode(args).decode()))
        elif kind == "thinking":
            out.append(ThinkingStart(index))
            text = block.get("thinking")
            sig = block.get("signature")
            if text or sig:
                out.append(ThinkingDelta(index, text or "", sig or None))
        elif kind == "redacted_thinking":
            out.append(ThinkingStart(index))
            out.append(ThinkingDelta(index, signature=REDACTED_PREFIX + (block.get("data") or "")))
        else:
            return out  # no canonical form: skipped, and so are its deltas and stop
        self._open = index
        return out


# ---- StreamEncoder -------------------------------------------------------------------------------------

# Kinds of the open output block.
_NONE: Final = 0
_TEXT: Final = 1
_TOOL: Final = 2
_THINKING: Final = 3
_THINKING_PENDING: Final = 4  # ThinkingStart seen, content_block_start not yet written (see _open_thinking)
_REDACTED: Final = 5

# Hot-path framing: compact JSON never contains a newline, so one `data:` line is always a whole event.
_TEXT_DELTA: Final = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"text_delta","text":'
)
_JSON_DELTA: Final = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"input_json_delta","partial_json":'
)
_THINKING_DELTA: Final = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"thinking_delta","thinking":'
)
_SIGNATURE_DELTA: Final = (
    b'event: content_block_delta\ndata: {"type":"content_block_delta","index":%d,'
    b'"delta":{"type":"signature_delta","signature":'
)
_DELTA_END: Final = b"}}\n\n"
_BLOCK_STOP: Final = b'event: content_block_stop\ndata: {"type":"content_block_stop","index":%d}\n\n'
_MESSAGE_STOP: Final = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'
_PING: Final = b'event: ping\ndata: {"type":"ping"}\n\n'


def _sse(name: bytes, payload: dict[str, Any]) -> bytes:
    return b"event: " + name + b"\ndata: " + _json_encode(payload) + b"\n\n"


class StreamEncoder:
    """Canonical stream events → Anthropic SSE bytes for a client; one per stream.

    Output block indices are 0, 1, 2 … in the order blocks start, whatever the canonical indices were. Every
    stream starts with message_start (written on the first event if StreamStart never came) and ends with
    message_delta + message_stop, or with a single `error` event.
    """

    __slots__ = (
        "_canon",
        "_done",
        "_finish",
        "_id",
        "_kind",
        "_model",
        "_next",
        "_out",
        "_start_usage",
        "_started",
        "_usage",
    )

    def __init__(self, *, model: str, id: str | None = None) -> None:
        self._model = model
        self._id = id  # overrides StreamStart.id when given
        self._started = False
        self._done = False
        self._canon = -1  # canonical index of the open block
        self._out = -1  # output index of the open block
        self._kind = _NONE
        self._next = 0
        self._finish: StreamFinish | None = None
        self._usage: Usage | None = None
        self._start_usage: Usage | None = None

    @property
    def done(self) -> bool:
        """True once message_stop or an error event has been written."""
        return self._done

    def ping(self) -> bytes:
        """A `ping` event, as Anthropic sends for keep-alive; clients ignore it."""
        return _PING

    def encode(self, ev: StreamEvent) -> bytes:
        """The SSE bytes for one canonical event (b"" when it produces none)."""
        if self._done:
            return b""
        # Ordered by frequency: deltas are nearly every event of a stream.
        if isinstance(ev, TextDelta):
            if not ev.text:
                return b""
            head = (
                b"" if ev.index == self._canon and self._kind == _TEXT else self._open_block(ev.index, _TEXT)
            )
            return head + (_TEXT_DELTA % self._out) + _json_encode(ev.text) + _DELTA_END
        if isinstance(ev, ToolCallDelta):
            # A tool call's id and name come only with its start: a stray fragment has nowhere to go.
            if not ev.arguments or ev.index != self._canon or self._kind != _TOOL:
                return b""
            return (_JSON_DELTA % self._out) + _json_encode(ev.arguments) + _DELTA_END
        if isinstance(ev, ThinkingDelta):
            return self._thinking_delta(ev)
        if isinstance(ev, TextStart):
            return self._open_block(ev.index, _TEXT)
        if isinstance(ev, ThinkingStart):
            return self._open_block(ev.index, _THINKING_PENDING)
        if isinstance(ev, ToolCallStart):
            out = self._close() + self._ensure_started()
            self._canon, self._out, self._kind = ev.index, self._next, _TOOL
            self._next += 1
            return out + self._block_start({"type": "tool_use", "id": ev.id, "name": ev.name, "input": {}})
        if isinstance(ev, BlockStop):
            return self._close() if ev.index == self._canon else b""
        if isinstance(ev, StreamStart):
            if self._started:
                return b""
            self._start_usage = ev.usage
            if ev.model:  # the model the upstream named, as a JSON answer gives it
                self._model = ev.model
            return self._message_start(ev.id)
        if isinstance(ev, StreamFinish):
            self._finish = ev
            return b""
        if isinstance(ev, StreamUsage):
            self._usage = ev.usage
            return b""
        if isinstance(ev, StreamEnd):
            return self._end()
        # StreamError. Anthropic's own mid-stream errors are a lone `error` event with nothing after it.
        self._done = True
        kind = (
            ev.type
            if ev.type in _ERROR_TYPES
            else "overloaded_error"
            if "overload" in ev.type
            else "api_error"
        )
        return _sse(b"error", {"type": "error", "error": {"type": kind, "message": ev.message}})

    # -- helpers

    def _message_start(self, id: str | None) -> bytes:
        self._started = True
        given = self._id or id
        msg_id = _message_id(given) if given else "msg_" + uuid.uuid4().hex[:24]
        u = self._start_usage
        # Without upstream counts: zeros, and output 1 as Anthropic reports for the first token.
        usage = _usage_to_anthropic(u) if u is not None else _usage_to_anthropic(Usage(output_tokens=1))
        message: dict[str, Any] = {
            "id": msg_id,
            "type": "message",
            "role": "assistant",
            "model": self._model,
            "content": [],
            "stop_reason": None,
            "stop_sequence": None,
            "usage": usage,
        }
        return _sse(b"message_start", {"type": "message_start", "message": message})

    def _ensure_started(self) -> bytes:
        return b"" if self._started else self._message_start(None)

    def _close(self) -> bytes:
        """Stop the open block, if any."""
        kind = self._kind
        if kind == _NONE:
            return b""
        out = self._open_thinking(None) if kind == _THINKING_PENDING else b""
        self._kind, self._canon = _NONE, -1
        return out + (_BLOCK_STOP % self._out)

    def _block_start(self, block: dict[str, Any]) -> bytes:
        return _sse(
            b"content_block_start",
            {"type": "content_block_start", "index": self._out, "content_block": block},
        )

    def _open_block(self, canon: int, kind: int) -> bytes:
        out = self._close() + self._ensure_started()
        self._canon, self._out, self._kind = canon, self._next, kind
        self._next += 1
        if kind == _TEXT:
            return out + self._block_start({"type": "text", "text": ""})
        return out  # thinking: written by _open_thinking once its first delta shows whether it is redacted

    def _open_thinking(self, redacted_data: str | None) -> bytes:
        """Write the pending thinking block's content_block_start: redacted when given its data."""
        if redacted_data is not None:
            self._kind = _REDACTED
            return self._block_start({"type": "redacted_thinking", "data": redacted_data})
        self._kind = _THINKING
        return self._block_start({"type": "thinking", "thinking": "", "signature": ""})

    def _thinking_delta(self, ev: ThinkingDelta) -> bytes:
        out = b""
        if ev.index != self._canon or self._kind not in (_THINKING, _THINKING_PENDING, _REDACTED):
            out = self._open_block(ev.index, _THINKING_PENDING)
        sig = ev.signature
        if self._kind == _THINKING_PENDING:
            if sig is not None and not ev.text and sig.startswith(REDACTED_PREFIX):
                return out + self._open_thinking(sig[len(REDACTED_PREFIX) :])
            out += self._open_thinking(None)
        if self._kind == _REDACTED:
            return out  # redacted thinking has no deltas
        if ev.text:
            out += (_THINKING_DELTA % self._out) + _json_encode(ev.text) + _DELTA_END
        if sig:
            out += (_SIGNATURE_DELTA % self._out) + _json_encode(sig) + _DELTA_END
        return out

    def _end(self) -> bytes:
        out = self._ensure_started() + self._close()
        self._done = True
        finish = self._finish
        reason = _STOP_TO_ANTHROPIC[finish.stop_reason] if finish is not None else "end_turn"
        usage = self._usage or self._start_usage or Usage()
        delta = {
            "type": "message_delta",
            "delta": {"stop_reason": reason, "stop_sequence": finish.stop_sequence if finish else None},
            "usage": _usage_to_anthropic(usage),
        }
        return out + _sse(b"message_delta", delta) + _MESSAGE_STOP
