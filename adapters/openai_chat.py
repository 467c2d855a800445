"""The OpenAI Chat Completions wire format (OpenAI, OpenRouter, local OpenAI-compatible servers) ↔ canonical.

Inbound: `decode_request` turns a client's chat body into a canonical `Request`; `encode_response` and
`StreamEncoder` turn canonical results back into what the client's SDK expects. Upstream: `encode_request`
builds the body for an OpenAI-compatible provider; `decode_response` and `StreamDecoder` read its answers.

Everything here runs per request or per stream chunk, so the hot paths (stream chunks) avoid per-call setup:
JSON codecs are built once at import, the stream encoder pre-renders the constant part of every chunk, and
only the variable part (a text fragment, arguments) is serialized per event.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, Final, Literal, cast

import msgspec

from . import allowed_tools, documents, unhonoured
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
    "StreamDecoder",
    "StreamEncoder",
    "decode_request",
    "decode_response",
    "encode_request",
    "encode_response",
    "fit_reasoning_model",
    "usage_from_body",
    "usage_from_chunk",
]

Flavor = Literal["openai", "openrouter", "local"]

# Stateless codecs, built once: constructing them per call is measurable on the per-chunk path.
_json_decode: Final = JsonDecoder().decode
_json_encode: Final = msgspec.json.Encoder().encode

# Read-only lookup tables (MappingProxyType so nothing can mutate them at runtime).
_FINISH_IN: Final[Mapping[str, StopReason]] = MappingProxyType(
    {
        "stop": "stop",
        "length": "length",
        "tool_calls": "tool_calls",
        "function_call": "tool_calls",
        "content_filter": "content_filter",
        # OpenRouter reports a provider failure as finish_reason "error".
        "error": "error",
    }
)
_FINISH_OUT: Final[Mapping[str, str]] = MappingProxyType(
    {
        "stop": "stop",
        "length": "length",
        "tool_calls": "tool_calls",
        "content_filter": "content_filter",
        # Chat has no way to say which stop sequence matched, nor a finish reason for errors.
        "stop_sequence": "stop",
        "error": "stop",
    }
)
_SIMPLE_TOOL_CHOICES: Final = frozenset(("auto", "none", "required"))
_RESPONSE_FORMATS: Final = frozenset(("text", "json_object", "json_schema"))
_STREAM_ERROR_MESSAGE: Final = "An error occurred during streaming"


# ---- request: client → canonical -------------------------------------------------------------------------


def decode_request(body: dict[str, Any]) -> Request:
    """Translate an inbound Chat Completions request body into a canonical `Request`.

    Raises `TranslationError` with `param` naming the offending field (OpenAI's `param` convention, e.g.
    `messages[3].content`) when the body is not a valid chat request or uses something canonical cannot
    carry (audio/file parts, non-function tools, `n` > 1) or a field the answer depends on that no other
    provider honours (`adapters.unhonoured`). Other unknown top-level fields are ignored.
    """
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise TranslationError("'model' is required and must be a string.", "model")
    n = body.get("n")
    if n is not None and n != 1:
        raise TranslationError("Only n=1 is supported.", "n")
    unhonoured.check_chat(body)

    system, messages = _decode_messages(body.get("messages"))

    max_tokens = token_limit(_opt_int(body, "max_completion_tokens"), "max_completion_tokens")
    if max_tokens is None:
        max_tokens = token_limit(_opt_int(body, "max_tokens"), "max_tokens")

    metadata = body.get("metadata")
    if metadata is not None and not isinstance(metadata, dict):
        raise TranslationError("'metadata' must be an object.", "metadata")

    tools = _decode_tools(body.get("tools"))
    choice = body.get("tool_choice")
    tool_choice: ToolChoice | None
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        where = "tool_choice.allowed_tools"
        tools, tool_choice = allowed_tools.restrict(choice.get("allowed_tools"), where, tools, chat=True)
    else:
        tool_choice = _decode_tool_choice(choice)

    return Request(
        model=model,
        messages=messages,
        system=system,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=_opt_bool(body, "parallel_tool_calls"),
        max_tokens=max_tokens,
        temperature=_opt_float(body, "temperature"),
        top_p=_opt_float(body, "top_p"),
        # Not an OpenAI parameter, but OpenRouter and local servers accept it and clients send it to them.
        top_k=_opt_int(body, "top_k"),
        stop=_decode_stop(body.get("stop")),
        response_format=_decode_response_format(body.get("response_format")),
        stream=bool(_opt_bool(body, "stream")),
        user=_opt_str(body, "user"),
        metadata=metadata,
    )


def _decode_messages(raw: Any) -> tuple[list[Text], list[Message]]:
    if not isinstance(raw, list):
        raise TranslationError("'messages' is required and must be an array.", "messages")
    if not raw:
        raise TranslationError("'messages' must contain at least one message.", "messages")
    system: list[Text] = []
    messages: list[Message] = []
    # The user message that collects consecutive tool results, so they reach Anthropic as one turn.
    tool_turn: Message | None = None
    for i, msg in enumerate(raw):
        where = f"messages[{i}]"
        if not isinstance(msg, dict):
            raise TranslationError(f"Invalid type for '{where}': expected an object.", where)
        role = msg.get("role")
        cc = _cache_control(msg)
        if role == "tool":
            result = _decode_tool_message(msg, where, cc)
            if tool_turn is None:
                tool_turn = Message(role="user", content=[result])
                messages.append(tool_turn)
            else:
                tool_turn.content.append(result)
            continue
        tool_turn = None
        if role == "user":
            content = msg.get("content")
            if isinstance(content, list) and not content:
                raise TranslationError(f"Invalid '{where}.content': empty array.", f"{where}.content")
            parts = _decode_parts(content, f"{where}.content", cc, media=True)
            if all(isinstance(p, Text) and (not p.text or p.text.isspace()) for p in parts):
                # Claude refuses empty or whitespace-only text, and the turn dropped on the way would leave
                # it a conversation that is not the one sent (none at all, or one ending with its answer).
                raise TranslationError(
                    f"Invalid '{where}.content': a user turn must not be empty or only whitespace.",
                    f"{where}.content",
                )
            messages.append(Message(role="user", content=cast("list[Part]", parts)))
        elif role == "assistant":
            messages.append(_decode_assistant(msg, where, cc))
        elif role in ("system", "developer"):
            content = msg.get("content")
            if isinstance(content, list) and not content:
                raise TranslationError(f"Invalid '{where}.content': empty array.", f"{where}.content")
            for part in _decode_parts(content, f"{where}.content", cc):
                assert isinstance(part, Text)  # media=False admits text parts only
                system.append(part)
        else:
            raise TranslationError(
                f"Invalid value for '{where}.role': expected system, developer, user, assistant or tool.",
                f"{where}.role",
            )
    return system, messages


def _decode_assistant(msg: dict[str, Any], where: str, cc: CacheControl | None) -> Message:
    content: list[Part] = []
    raw = msg.get("content")
    if raw is not None:
        for part in _decode_parts(raw, f"{where}.content", None, refusal=True):
            # An empty text beside tool calls (a common client habit) carries nothing; Anthropic rejects it.
            if not isinstance(part, Text) or part.text:
                content.append(part)
    tool_calls = msg.get("tool_calls")
    if tool_calls is not None:
        if not isinstance(tool_calls, list):
            raise TranslationError(
                f"Invalid type for '{where}.tool_calls': expected an array.", f"{where}.tool_calls"
            )
        for j, call in enumerate(tool_calls):
            content.append(_decode_tool_call(call, f"{where}.tool_calls[{j}]"))
    if cc is not None and content:
        last = content[-1]
        if not isinstance(last, Thinking) and last.cache_control is None:
            last.cache_control = cc
    return Message(role="assistant", content=content)


def _decode_tool_call(call: Any, where: str) -> ToolCall:
    if not isinstance(call, dict):
        raise TranslationError(f"Invalid type for '{where}': expected an object.", where)
    ctype = call.get("type", "function")
    if ctype != "function":
        raise TranslationError(
            f"Unsupported tool call type {ctype!r}; only 'function' is supported.", f"{where}.type"
        )
    call_id = call.get("id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError(f"'{where}.id' is required and must be a string.", f"{where}.id")
    fn = call.get("function")
    if not isinstance(fn, dict):
        raise TranslationError(f"'{where}.function' is required and must be an object.", f"{where}.function")
    name = fn.get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError(f"'{where}.function.name' is required.", f"{where}.function.name")
    args = fn.get("arguments", "")
    if not isinstance(args, str):
        # Some clients send the arguments as an object; there is no original text to keep, so serialize it.
        if not isinstance(args, dict):
            raise TranslationError(
                f"Invalid type for '{where}.function.arguments': expected a string.",
                f"{where}.function.arguments",
            )
        args = _json_encode(args).decode()
    return ToolCall(
        id=call_id,
        name=name,
        arguments=args,
        cache_control=_cache_control(call),
        where=f"{where}.function.arguments",
    )


def _decode_tool_message(msg: dict[str, Any], where: str, cc: CacheControl | None) -> ToolResult:
    call_id = msg.get("tool_call_id")
    if not isinstance(call_id, str) or not call_id:
        raise TranslationError(
            f"'{where}.tool_call_id' is required for tool messages.", f"{where}.tool_call_id"
        )
    content = msg.get("content")
    # A message-level cache_control marks the whole result: that is the tool_result block for Anthropic.
    parts = _decode_parts(content, f"{where}.content", None, media=True)
    return ToolResult(tool_call_id=call_id, content=parts, cache_control=cc)


def _decode_parts(
    content: Any, where: str, cc: CacheControl | None, *, media: bool = False, refusal: bool = False
) -> list[Text | Image | Document]:
    """Content (string or parts) → Text parts, and with `media` Image and Document (file) parts too; a
    message-level cache_control lands on the last part."""
    if isinstance(content, str):
        return [Text(text=content, cache_control=cc)]
    if not isinstance(content, list):
        raise TranslationError(
            f"Invalid type for '{where}': expected a string or an array of content parts.", where
        )
    parts: list[Text | Image | Document] = []
    for j, part in enumerate(content):
        pwhere = f"{where}[{j}]"
        if not isinstance(part, dict):
            raise TranslationError(f"Invalid type for '{pwhere}': expected an object.", pwhere)
        ptype = part.get("type")
        if ptype == "text" or (refusal and ptype == "refusal"):
            key = "text" if ptype == "text" else "refusal"
            text = part.get(key)
            if not isinstance(text, str):
                raise TranslationError(f"'{pwhere}.{key}' must be a string.", f"{pwhere}.{key}")
            parts.append(Text(text=text, cache_control=_cache_control(part)))
        elif media and ptype == "image_url":
            parts.append(_decode_image(part, pwhere))
        elif media and ptype == "file":
            spec = part.get("file")
            if not isinstance(spec, dict):
                raise TranslationError(f"'{pwhere}.file' must be an object.", f"{pwhere}.file")
            parts.append(documents.from_openai(spec, f"{pwhere}.file", _cache_control(part), responses=False))
        else:
            raise TranslationError(f"Unsupported content part type {ptype!r} in '{where}'.", f"{pwhere}.type")
    if cc is not None and parts and parts[-1].cache_control is None:
        parts[-1].cache_control = cc
    return parts


def _decode_image(part: dict[str, Any], where: str) -> Image:
    spec = part.get("image_url")
    detail: Any = None
    if isinstance(spec, dict):
        url = spec.get("url")
        detail = spec.get("detail")
    else:
        url = spec  # some clients send the URL string directly
    if not isinstance(url, str) or not url:
        raise TranslationError(f"'{where}.image_url.url' is required.", f"{where}.image_url.url")
    if detail is not None and not isinstance(detail, str):
        raise TranslationError(f"'{where}.image_url.detail' must be a string.", f"{where}.image_url.detail")
    cc = _cache_control(part)
    inline = parse_data_url(url)
    at = f"{where}.image_url.url"
    if inline is not None:
        return Image(media_type=inline[0], data=inline[1], detail=detail, cache_control=cc, where=at)
    # Non-base64 data URLs stay URLs: there are no raw bytes to carry without decoding them.
    return Image(url=url, detail=detail, cache_control=cc, where=at)


def _decode_tools(raw: Any) -> list[Tool]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TranslationError("Invalid type for 'tools': expected an array.", "tools")
    tools: list[Tool] = []
    for i, tool in enumerate(raw):
        where = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise TranslationError(f"Invalid type for '{where}': expected an object.", where)
        ttype = tool.get("type")
        if ttype != "function":
            raise TranslationError(
                f"Unsupported tool type {ttype!r}; only 'function' tools are supported.", f"{where}.type"
            )
        fn = tool.get("function")
        if not isinstance(fn, dict):
            raise TranslationError(
                f"'{where}.function' is required and must be an object.", f"{where}.function"
            )
        name = fn.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError(f"'{where}.function.name' is required.", f"{where}.function.name")
        params = fn.get("parameters")
        if params is None:
            params = {"type": "object", "properties": {}}  # OpenAI: omitted parameters mean "no arguments"
        elif not isinstance(params, dict):
            raise TranslationError(
                f"'{where}.function.parameters' must be an object.", f"{where}.function.parameters"
            )
        description = fn.get("description")
        if description is not None and not isinstance(description, str):
            raise TranslationError(
                f"'{where}.function.description' must be a string.", f"{where}.function.description"
            )
        strict = fn.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise TranslationError(
                f"'{where}.function.strict' must be a boolean.", f"{where}.function.strict"
            )
        tools.append(
            Tool(
                name=name,
                parameters=params,
                description=description,
                strict=strict,
                cache_control=_cache_control(tool) or _cache_control(fn),
            )
        )
    return tools


def _decode_tool_choice(raw: Any) -> ToolChoice | None:
    if raw is None:
        return None
    if isinstance(raw, str):
        if raw in _SIMPLE_TOOL_CHOICES:
            return ToolChoice(type=cast('Literal["auto", "none", "required"]', raw))
    elif isinstance(raw, dict) and raw.get("type") == "function":
        fn = raw.get("function")
        name = fn.get("name") if isinstance(fn, dict) else None
        if isinstance(name, str) and name:
            return ToolChoice(type="tool", name=name)
        raise TranslationError("'tool_choice.function.name' is required.", "tool_choice.function.name")
    raise TranslationError(
        "Invalid 'tool_choice': expected 'auto', 'none', 'required', a function choice or allowed_tools.",
        "tool_choice",
    )


def _decode_stop(raw: Any) -> list[str]:
    if raw is None:
        return []
    if isinstance(raw, str):
        return [raw]
    if isinstance(raw, list) and all(isinstance(s, str) for s in raw):
        return raw
    raise TranslationError("Invalid 'stop': expected a string or an array of strings.", "stop")


def _decode_response_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TranslationError("Invalid type for 'response_format': expected an object.", "response_format")
    rtype = raw.get("type")
    if not isinstance(rtype, str) or rtype not in _RESPONSE_FORMATS:
        raise TranslationError(
            "Invalid 'response_format.type': expected text, json_object or json_schema.",
            "response_format.type",
        )
    schema = raw.get("json_schema")
    if rtype == "json_schema" and not isinstance(schema, dict):
        raise TranslationError(
            "'response_format.json_schema' is required for type json_schema.", "response_format.json_schema"
        )
    kind = cast('Literal["text", "json_object", "json_schema"]', rtype)
    return ResponseFormat(type=kind, json_schema=schema if rtype == "json_schema" else None)


def _cache_control(obj: dict[str, Any]) -> CacheControl | None:
    cc = obj.get("cache_control")
    return cc if isinstance(cc, dict) else None


def _opt_int(body: dict[str, Any], key: str) -> int | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int):
        raise TranslationError(f"Invalid type for '{key}': expected an integer.", key)
    return value


def _opt_float(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError(f"Invalid type for '{key}': expected a number.", key)
    return float(value)


def _opt_bool(body: dict[str, Any], key: str) -> bool | None:
    value = body.get(key)
    if value is None or isinstance(value, bool):
        return value
    raise TranslationError(f"Invalid type for '{key}': expected a boolean.", key)


def _opt_str(body: dict[str, Any], key: str) -> str | None:
    value = body.get(key)
    if value is None or isinstance(value, str):
        return value
    raise TranslationError(f"Invalid type for '{key}': expected a string.", key)


# ---- request: canonical → upstream -----------------------------------------------------------------------


def encode_request(req: Request, *, upstream_model: str, flavor: Flavor) -> dict[str, Any]:
    """Build an upstream Chat Completions body from a canonical `Request`.

    `flavor` picks the dialect: OpenAI wants `max_completion_tokens` and has no `top_k`; OpenRouter and
    local servers take `max_tokens` and `top_k`, and OpenRouter forwards `cache_control` on text parts to
    Anthropic, so only that flavor keeps it. Thinking parts are dropped (chat cannot carry them back).
    """
    keep_cc = flavor == "openrouter"
    messages: list[dict[str, Any]] = []
    if req.system:
        messages.append({"role": "system", "content": _text_content(req.system, keep_cc)})
    for i, msg in enumerate(req.messages):
        if msg.role == "assistant":
            _encode_assistant(msg, messages, keep_cc)
        else:
            _encode_user(msg, messages, flavor, f"messages[{i}]")

    body: dict[str, Any] = {"model": upstream_model, "messages": messages}
    if req.tools:
        body["tools"] = [_encode_tool(t) for t in req.tools]
        # OpenAI rejects tool_choice / parallel_tool_calls without tools, so they only go along with tools.
        if req.tool_choice is not None:
            choice = req.tool_choice
            body["tool_choice"] = (
                {"type": "function", "function": {"name": choice.name}}
                if choice.type == "tool"
                else choice.type
            )
        if req.parallel_tool_calls is not None:
            body["parallel_tool_calls"] = req.parallel_tool_calls
    if req.max_tokens is not None:
        body["max_completion_tokens" if flavor == "openai" else "max_tokens"] = req.max_tokens
    reasoning = flavor == "openai" and upstream_model.startswith(REASONING_MODELS)
    if req.temperature is not None:
        body["temperature"] = req.temperature
    if req.top_p is not None:
        body["top_p"] = req.top_p
    if req.top_k is not None and flavor != "openai":
        body["top_k"] = req.top_k
    if req.stop:
        if flavor == "openai" and not reasoning and len(req.stop) > _OPENAI_MAX_STOP:
            raise TranslationError(
                f"'{req.stop_field}' may have at most {_OPENAI_MAX_STOP} sequences for this model "
                f"(OpenAI's limit), got {len(req.stop)}.",
                req.stop_field,
            )
        body["stop"] = req.stop
    if req.response_format is not None:
        fmt = req.response_format
        body["response_format"] = (
            {"type": "json_schema", "json_schema": fmt.json_schema}
            if fmt.type == "json_schema"
            else {"type": fmt.type}
        )
    if req.reasoning_budget is not None:
        if flavor == "openrouter":  # OpenRouter takes a token budget for any model that reasons
            body["reasoning"] = {"max_tokens": req.reasoning_budget}
        elif reasoning:
            # OpenAI reasoning models take an effort level (other models refuse the parameter).
            budget = req.reasoning_budget
            body["reasoning_effort"] = "low" if budget < 4096 else "medium" if budget < 16384 else "high"
    if req.user is not None:
        body["user"] = req.user
    if req.stream:
        body["stream"] = True
        # Without this OpenAI sends no usage at all in streams, and usage is what we bill and reconcile.
        body["stream_options"] = {"include_usage": True}
    if reasoning:  # what OpenAI's reasoning models refuse: the same rule as for a body smart-auto routes
        fit_reasoning_model(body)
    return body


def _text_content(texts: list[Text], keep_cc: bool) -> str | list[dict[str, Any]]:
    if keep_cc and any(t.cache_control is not None for t in texts):
        return [_text_part(t, keep_cc) for t in texts]
    if len(texts) == 1:
        return texts[0].text
    return "\n\n".join(t.text for t in texts)


def _text_part(text: Text, keep_cc: bool) -> dict[str, Any]:
    part: dict[str, Any] = {"type": "text", "text": text.text}
    if keep_cc and text.cache_control is not None:
        part["cache_control"] = text.cache_control
    return part


def _image_part(image: Image) -> dict[str, Any] | None:
    if image.url is not None:
        url = image.url
    elif image.data is not None:
        url = f"data:{image.media_type or 'image/png'};base64,{image.data}"
    else:
        return None
    spec: dict[str, Any] = {"url": url}
    if image.detail is not None:
        spec["detail"] = image.detail
    return {"type": "image_url", "image_url": spec}


def _encode_user(msg: Message, out: list[dict[str, Any]], flavor: Flavor, where: str) -> None:
    keep_cc = flavor == "openrouter"
    parts: list[Text | Image | Document] = []
    tool_media: list[Image | Document] = []
    for part in msg.content:
        if isinstance(part, Text | Image | Document):
            parts.append(part)
        elif isinstance(part, ToolResult):
            # Tool messages must directly follow the assistant's tool calls, so they go out first.
            texts: list[Text] = []
            for item in part.content:
                if isinstance(item, Text):
                    texts.append(item)
                else:
                    tool_media.append(item)  # tool messages carry text only: a user message follows
            if part.is_error:
                # Chat has no error flag on a tool message: the model reads that the call failed instead.
                first = texts[0] if texts else Text("")
                texts[:1] = [msgspec.structs.replace(first, text=_TOOL_ERROR_PREFIX + first.text)]
            out.append(
                {
                    "role": "tool",
                    "tool_call_id": part.tool_call_id,
                    "content": _tool_content(part, texts, keep_cc),
                }
            )
        # Thinking and tool calls have no place in a chat user message.
    if tool_media:
        parts = [*tool_media, *parts]
    if not parts:
        return
    if all(isinstance(p, Text) for p in parts):
        content: str | list[dict[str, Any]] = _text_content(cast("list[Text]", parts), keep_cc)
    else:
        content = []
        for p in parts:
            if isinstance(p, Text):
                encoded: dict[str, Any] | None = _text_part(p, keep_cc)
            elif isinstance(p, Image):
                encoded = _image_part(p)
            else:
                encoded = documents.to_chat(p, flavor, where)
            if encoded is not None:
                content.append(encoded)
    out.append({"role": "user", "content": content})


REASONING_MODELS = ("o1", "o3", "o4", "gpt-5")
"""OpenAI reasoning models (name prefixes): they take `reasoning_effort`, and `max_completion_tokens` only."""
_OPENAI_MAX_STOP: Final = 4
"""Stop sequences an OpenAI chat model takes."""
_REASONING_REFUSED: Final = ("stop", "presence_penalty", "frequency_penalty", "logprobs", "top_logprobs")
"""Chat parameters OpenAI's reasoning models refuse whatever their value."""


def fit_reasoning_model(body: dict[str, Any], *, responses: bool = False) -> None:
    """Leave out of a chat (or, `responses`, a Responses) body what OpenAI's reasoning models refuse:
    `temperature` and `top_p` other than 1, and in chat stop sequences, penalties and log probabilities."""
    for key in ("temperature", "top_p"):
        if key in body and body[key] != 1:
            del body[key]
    if not responses:
        for key in _REASONING_REFUSED:
            body.pop(key, None)


_PARAGRAPH = "\n\n"
"""Between texts a tool call or thinking separated (chat has one content string)."""
_TOOL_ERROR_PREFIX = "Error: "
"""Starts a failed tool call's result (Anthropic `is_error`) for a chat upstream."""


def _tool_content(result: ToolResult, texts: list[Text], keep_cc: bool) -> str | list[dict[str, Any]]:
    if keep_cc and result.cache_control is not None:
        # The result-level breakpoint goes on its last text part: OpenRouter reads cache_control there only.
        texts = texts or [Text(text="")]  # the caller built this list for us alone
        last = texts[-1]
        if last.cache_control is None:
            texts[-1] = Text(text=last.text, cache_control=result.cache_control)
    if not texts:
        return ""
    return _text_content(texts, keep_cc)


def _encode_assistant(msg: Message, out: list[dict[str, Any]], keep_cc: bool) -> None:
    texts: list[Text] = []
    calls: list[dict[str, Any]] = []
    for part in msg.content:
        if isinstance(part, Text):
            texts.append(part)
        elif isinstance(part, ToolCall):
            calls.append(
                {
                    "id": part.id,
                    "type": "function",
                    "function": {"name": part.name, "arguments": part.arguments},
                }
            )
        # Thinking is dropped; images cannot appear in chat assistant messages.
    if not texts and not calls:
        return  # a thinking-only turn has nothing chat can carry
    message: dict[str, Any] = {
        "role": "assistant",
        "content": _text_content(texts, keep_cc) if texts else None,
    }
    if calls:
        message["tool_calls"] = calls
    out.append(message)


def _encode_tool(tool: Tool) -> dict[str, Any]:
    fn: dict[str, Any] = {"name": tool.name}
    if tool.description is not None:
        fn["description"] = tool.description
    fn["parameters"] = tool.parameters
    if tool.strict is not None:
        fn["strict"] = tool.strict
    return {"type": "function", "function": fn}


# ---- response: upstream → canonical ----------------------------------------------------------------------


def usage_from_body(obj: dict[str, Any]) -> Usage | None:
    """Canonical usage from a chat.completion body's `usage` (None when it has none)."""
    return _usage(obj.get("usage"))


def usage_from_chunk(obj: dict[str, Any]) -> Usage | None:
    """Canonical usage from a chat.completion.chunk's `usage` (None on the usual `"usage": null` chunks)."""
    return _usage(obj.get("usage"))


def _usage(raw: Any) -> Usage | None:
    if not isinstance(raw, dict):
        return None
    prompt = raw.get("prompt_tokens_details")
    completion = raw.get("completion_tokens_details")
    cached = written = reasoning = 0
    if isinstance(prompt, dict):
        cached = _int(prompt.get("cached_tokens"))
        # OpenRouter (and the OpenAI SDK's model) report prompt-cache writes, e.g. for Anthropic models.
        written = _int(prompt.get("cache_write_tokens"))
    if isinstance(completion, dict):
        reasoning = _int(completion.get("reasoning_tokens"))
    # prompt_tokens already includes cached and written tokens: the canonical convention, no adjustment.
    return Usage(
        input_tokens=_int(raw.get("prompt_tokens")),
        output_tokens=_int(raw.get("completion_tokens")),
        cached_input_tokens=cached,
        cache_creation_input_tokens=written,
        reasoning_tokens=reasoning,
    )


def _int(value: Any) -> int:
    return value if isinstance(value, int) and not isinstance(value, bool) else 0


def _finish_in(value: Any) -> StopReason | None:
    if value is None:
        return None
    # Unknown reasons (provider-specific ones like "eos") still mean the model stopped by itself.
    return _FINISH_IN.get(value, "stop") if isinstance(value, str) else "stop"


def _text_of(content: Any) -> str:
    """Message/delta content as text: a string, or (Mistral and some local servers) a list of text parts."""
    if isinstance(content, str):
        return content
    if isinstance(content, list):
        return "".join(
            p["text"]
            for p in content
            if isinstance(p, dict) and p.get("type") == "text" and isinstance(p.get("text"), str)
        )
    return ""


def decode_response(body: dict[str, Any]) -> Response:
    """Translate an upstream chat.completion body (its first choice) into a canonical `Response`."""
    choices = body.get("choices")
    if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict):
        raise TranslationError("The upstream response has no choices.", "choices")
    choice = choices[0]
    message = choice.get("message")
    if not isinstance(message, dict):
        message = {}
    content: list[Text | ToolCall | Thinking] = []
    reasoning = message.get("reasoning_content") or message.get("reasoning")
    if isinstance(reasoning, str) and reasoning:
        content.append(Thinking(text=reasoning))
    text = _text_of(message.get("content"))
    refused = False
    if not text:
        refusal = message.get("refusal")
        text = refusal if isinstance(refusal, str) else ""
        refused = bool(text)
    if text:
        content.append(Text(text=text))
    tool_calls = message.get("tool_calls")
    if isinstance(tool_calls, list):
        for call in tool_calls:
            if isinstance(call, dict) and call.get("type", "function") == "function":
                fn = call.get("function")
                if isinstance(fn, dict):
                    content.append(_tool_call_out(call.get("id"), fn))
    legacy = message.get("function_call")
    if isinstance(legacy, dict):
        content.append(_tool_call_out(None, legacy))
    created = body.get("created")
    model = body.get("model")
    return Response(
        id=str(body.get("id") or ""),
        model=model if isinstance(model, str) else "",
        content=content,
        stop_reason=_refused(_with_tools(_finish_in(choice.get("finish_reason")), content), refused),
        usage=usage_from_body(body) or Usage(),
        created=_int(created),
    )


def _refused(reason: StopReason | None, refused: bool) -> StopReason | None:
    """A refusal (the model declined: `refusal` instead of content) ends with finish_reason `stop`; other
    formats have a reason for it (Anthropic's `refusal`), which the client reads to know it was declined."""
    return "content_filter" if refused and reason == "stop" else reason


def _with_tools(reason: StopReason | None, content: list[Text | ToolCall | Thinking]) -> StopReason | None:
    """`stop` becomes `tool_calls` when the turn ends in tool calls: OpenAI answers a call forced by name
    (`tool_choice` naming a function) with finish_reason `stop`, but a client in another format reads the
    stop reason (Anthropic's `tool_use`) to know it must run the tools."""
    if reason == "stop" and any(isinstance(c, ToolCall) for c in content):
        return "tool_calls"
    return reason


def _tool_call_out(call_id: Any, fn: dict[str, Any]) -> ToolCall:
    name = fn.get("name")
    args = fn.get("arguments")
    return ToolCall(
        # The legacy function_call has no id; the caller can still pair it by position.
        id=call_id if isinstance(call_id, str) and call_id else f"call_{uuid.uuid4().hex[:24]}",
        name=name if isinstance(name, str) else "",
        arguments=args if isinstance(args, str) else ("" if args is None else _json_encode(args).decode()),
    )


# ---- response: canonical → client ------------------------------------------------------------------------


def _chat_id(raw: str | None) -> str:
    if not raw:
        return f"chatcmpl-{uuid.uuid4().hex}"
    return raw if raw.startswith("chatcmpl-") else f"chatcmpl-{raw}"


def _usage_json(usage: Usage) -> dict[str, Any]:
    prompt_details: dict[str, Any] = {"cached_tokens": usage.cached_input_tokens, "audio_tokens": 0}
    if usage.cache_creation_input_tokens:
        # A field of the SDK's PromptTokensDetails; only present when there is something to report.
        prompt_details["cache_write_tokens"] = usage.cache_creation_input_tokens
    return {
        "prompt_tokens": usage.input_tokens,
        "completion_tokens": usage.output_tokens,
        "total_tokens": usage.input_tokens + usage.output_tokens,
        "prompt_tokens_details": prompt_details,
        "completion_tokens_details": {
            "reasoning_tokens": usage.reasoning_tokens,
            "audio_tokens": 0,
            "accepted_prediction_tokens": 0,
            "rejected_prediction_tokens": 0,
        },
    }


def encode_response(resp: Response, *, model: str) -> dict[str, Any]:
    """Build a chat.completion body, as the OpenAI SDK parses it, from a canonical `Response`."""
    texts: list[str] = []
    calls: list[dict[str, Any]] = []
    gap = False  # a tool call or thinking since the last text: the next text is a new paragraph
    for part in resp.content:
        if isinstance(part, Text):
            if gap and texts:
                texts.append(_PARAGRAPH)
            texts.append(part.text)
            gap = False
        else:
            gap = True
        if isinstance(part, ToolCall):
            calls.append(
                {
                    "id": part.id,
                    "type": "function",
                    "function": {"name": part.name, "arguments": part.arguments},
                }
            )
        # Thinking is dropped: chat completions have no field for it.
    message: dict[str, Any] = {
        "role": "assistant",
        # Adjacent text blocks (e.g. Anthropic splitting around citations) are one running text; text on
        # either side of a tool call is two paragraphs, not two sentences run together.
        "content": "".join(texts) if texts else None,
        "refusal": None,
        "annotations": [],
    }
    if calls:
        message["tool_calls"] = calls
    return {
        "id": _chat_id(resp.id),
        "object": "chat.completion",
        "created": resp.created or int(time.time()),
        "model": model,
        "choices": [
            {
                "index": 0,
                "message": message,
                "finish_reason": _FINISH_OUT.get(resp.stop_reason or "stop", "stop"),
                "logprobs": None,
            }
        ],
        "usage": _usage_json(resp.usage),
        "system_fingerprint": None,
    }


# ---- streams: upstream → canonical -----------------------------------------------------------------------

_NONE, _TEXT, _THINKING, _TOOL = 0, 1, 2, 3


class StreamDecoder:
    """Upstream chat.completion.chunk events → canonical stream events; one instance per stream.

    `feed` takes one SSE event's data (the parser has already joined multi-line data). Blocks are kept
    sequential, as every client format needs them. Chat clients merge tool-call fragments by index whatever
    comes between them, so an upstream may send a call's fragments interleaved with another call's, or with
    text or reasoning (even in the same chunk). A tool call streams live; when something else begins, the
    call closes if its arguments are already a whole JSON object (no further fragment could extend them: the
    ordinary sequential stream, which then goes on live), and otherwise stays open until the stream finishes
    while what arrives meanwhile is held in arrival order: calls with their fragments, text and reasoning as
    one block each, all written whole once it closes. No fragment of any call is lost.
    """

    __slots__ = (
        "_call",
        "_done",
        "_finished",
        "_held",
        "_kind",
        "_last_key",
        "_next",
        "_open",
        "_refused",
        "_started",
        "_tools",
        "usage",
    )

    def __init__(self) -> None:
        self._done = False
        self._started = False
        self._finished = False
        self._open: int | None = None  # the open block's index
        self._kind = _NONE  # the open block's kind
        self._next = 0  # index of the next block
        # Upstream tool-call key (its `index`, or its id when a server omits the index) → the call.
        self._tools: dict[object, _Call] = {}
        self._call: _Call | None = None  # the open tool call, when the open block is one
        self._held: list[_Call | _Held] = []  # what arrived while a tool call is open, in order
        self._last_key: object = None
        self._refused = False  # the model declined (`refusal` deltas instead of content)
        self.usage: Usage | None = None

    @property
    def done(self) -> bool:
        """True once the stream has ended (StreamEnd) or failed (StreamError); later input is ignored."""
        return self._done

    def feed(self, data: str) -> list[StreamEvent]:
        """Translate one SSE event's data into canonical events (possibly none)."""
        if self._done:
            return []
        events: list[StreamEvent] = []
        if data.startswith("[DONE]") or data.strip() == "[DONE]":
            self._close(events)
            if not self._finished:
                # Some local servers end without a finish_reason; the stream still ended normally.
                events.append(StreamFinish(stop_reason="stop"))
            events.append(StreamEnd())
            self._done = True
            return events
        try:
            obj = _json_decode(data)
        except msgspec.DecodeError:
            if not data.strip():
                return events  # an empty keep-alive event
            return self._fail(events, "api_error", "The upstream sent a malformed stream chunk.")
        if not isinstance(obj, dict):
            return self._fail(events, "api_error", "The upstream sent a malformed stream chunk.")
        error = obj.get("error")
        if error:
            etype, message = _error_fields(error)
            return self._fail(events, etype, message)
        if not self._started:
            self._started = True
            cid, model = obj.get("id"), obj.get("model")
            events.append(
                StreamStart(
                    id=cid if isinstance(cid, str) else "", model=model if isinstance(model, str) else ""
                )
            )
        choices = obj.get("choices")
        if choices and isinstance(choices, list):
            choice = choices[0]
            if isinstance(choice, dict):
                self._choice(choice, events)
        raw_usage = obj.get("usage")
        if raw_usage is not None:
            usage = _usage(raw_usage)
            if usage is not None:
                self.usage = usage
                events.append(StreamUsage(usage=usage))
        return events

    def _fail(self, events: list[StreamEvent], etype: str, message: str) -> list[StreamEvent]:
        events.append(StreamError(type=etype, message=message))
        self._done = True
        return events

    def _close(self, events: list[StreamEvent]) -> None:
        if self._open is not None:
            events.append(BlockStop(index=self._open))
            self._open = None
            self._kind = _NONE
            self._call = None
        if not self._held:
            return
        for item in self._held:
            index = self._next
            self._next = index + 1
            if isinstance(item, _Call):
                item.index = index
                events.append(ToolCallStart(index=index, id=item.id, name=item.name))
                if item.fragments:
                    events.append(ToolCallDelta(index=index, arguments="".join(item.fragments)))
            elif item.kind == _TEXT:
                events.append(TextStart(index=index))
                events.append(TextDelta(index=index, text="".join(item.parts)))
            else:
                events.append(ThinkingStart(index=index))
                events.append(ThinkingDelta(index=index, text="".join(item.parts)))
            events.append(BlockStop(index=index))
        self._held.clear()

    def _begin(self, kind: int, events: list[StreamEvent]) -> int:
        self._close(events)
        index = self._next
        self._next = index + 1
        self._open = index
        self._kind = kind
        return index

    def _start(self, kind: int, text: str, events: list[StreamEvent]) -> int | None:
        """Open a text or thinking block for `text` and return its index; None if `text` was held instead
        (a tool call is open and more of its fragments may follow)."""
        if self._kind == _TOOL and not self._settled():
            held = self._held[-1] if self._held else None
            if isinstance(held, _Held) and held.kind == kind:
                held.parts.append(text)
            else:
                self._held.append(_Held(kind, text))
            return None
        index = self._begin(kind, events)
        events.append(TextStart(index=index) if kind == _TEXT else ThinkingStart(index=index))
        return index

    def _settled(self) -> bool:
        """Whether the open tool call may close now that something else begins: nothing is held (so it is
        not interleaved with other calls) and its arguments so far are a whole JSON object, which no further
        fragment could extend. Asked once per call at most: a False answer starts holding."""
        call = self._call
        if call is None or self._held:
            return False
        try:
            return type(_json_decode("".join(call.fragments))) is dict
        except msgspec.DecodeError:
            return False

    def _choice(self, choice: dict[str, Any], events: list[StreamEvent]) -> None:
        delta = choice.get("delta")
        if isinstance(delta, dict):
            reasoning = delta.get("reasoning_content") or delta.get("reasoning")
            if reasoning and isinstance(reasoning, str):
                index = self._open if self._kind == _THINKING else self._start(_THINKING, reasoning, events)
                if index is not None:
                    events.append(ThinkingDelta(index=index, text=reasoning))
            content = delta.get("content")
            text = content if isinstance(content, str) else _text_of(content)
            if not text:
                refusal = delta.get("refusal")
                text = refusal if isinstance(refusal, str) else ""
                self._refused = self._refused or bool(text)
            if text:
                index = self._open if self._kind == _TEXT else self._start(_TEXT, text, events)
                if index is not None:
                    events.append(TextDelta(index=index, text=text))
            tool_calls = delta.get("tool_calls")
            if tool_calls and isinstance(tool_calls, list):
                for call in tool_calls:
                    if isinstance(call, dict):
                        self._tool_call(call, events)
        finish = choice.get("finish_reason")
        if finish is not None:
            self._close(events)
            if not self._finished:
                self._finished = True
                reason = _finish_in(finish) or "stop"
                if reason == "stop" and self._tools:
                    reason = "tool_calls"  # a call forced by name ends with `stop` (see `_with_tools`)
                reason = _refused(reason, self._refused) or reason
                events.append(StreamFinish(stop_reason=reason))

    def _tool_call(self, call: dict[str, Any], events: list[StreamEvent]) -> None:
        fn = call.get("function")
        if not isinstance(fn, dict):
            fn = {}
        call_id = call.get("id")
        if not isinstance(call_id, str):
            call_id = ""
        key: object = call.get("index")
        if key is None:
            # Some servers omit `index`: a new id starts a call, a fragment without one continues the last.
            key = call_id or self._last_key
        entry = self._tools.get(key)
        name = fn.get("name")
        # A different id under a known index is a new call (servers that number every call 0).
        if entry is None or (call_id and name and call_id != entry.upstream_id):
            # Some local servers send no id; a client in any format needs one to pair the result with it.
            out_id = call_id or f"call_{uuid.uuid4().hex[:24]}"
            entry = self._tools[key] = _Call(call_id, out_id, name if isinstance(name, str) else "")
            if self._kind == _TOOL and not self._settled():
                self._held.append(entry)  # the open call may still stream: this one waits its turn
            else:
                entry.index = self._begin(_TOOL, events)
                self._call = entry
                events.append(ToolCallStart(index=entry.index, id=out_id, name=entry.name))
        self._last_key = key
        args = fn.get("arguments")
        if args and isinstance(args, str):
            if entry.index is None:
                entry.fragments.append(args)
            elif entry.index == self._open:
                entry.fragments.append(args)
                events.append(ToolCallDelta(index=entry.index, arguments=args))
            # else: it closed with whole JSON arguments (see `_settled`); nothing but whitespace can follow


class _Call:
    """One upstream tool call of a stream."""

    __slots__ = ("fragments", "id", "index", "name", "upstream_id")

    def __init__(self, upstream_id: str, id: str, name: str) -> None:
        self.upstream_id = upstream_id
        self.id = id
        self.name = name
        self.index: int | None = None
        """Its block index once written; None while held."""
        self.fragments: list[str] = []
        """Its argument fragments so far."""


class _Held:
    """Text or reasoning that arrived while a tool call was open, written as one block once it closes."""

    __slots__ = ("kind", "parts")

    def __init__(self, kind: int, text: str) -> None:
        self.kind = kind
        self.parts = [text]


def _error_fields(error: Any) -> tuple[str, str]:
    """(type, message) of an in-stream error object; OpenRouter puts a code where OpenAI puts a type."""
    if isinstance(error, dict):
        etype, code, message = error.get("type"), error.get("code"), error.get("message")
        if not (isinstance(etype, str) and etype):
            etype = code if isinstance(code, str) and code else "api_error"
        return etype, message if isinstance(message, str) and message else _STREAM_ERROR_MESSAGE
    return "api_error", error if isinstance(error, str) else _STREAM_ERROR_MESSAGE


# ---- streams: canonical → client -------------------------------------------------------------------------

# Pre-rendered JSON around the per-event values: a chunk is prefix + choice + suffix.
_ROLE_CHOICE: Final = (
    b'{"index":0,"delta":{"role":"assistant","content":""},"logprobs":null,"finish_reason":null}'
)
_CONTENT_OPEN: Final = b'{"index":0,"delta":{"content":'
_CHOICE_CLOSE: Final = b'},"logprobs":null,"finish_reason":null}'
_TOOL_CALLS_OPEN: Final = b'{"index":0,"delta":{"tool_calls":'
_DONE: Final = b"data: [DONE]\n\n"


class StreamEncoder:
    """Canonical stream events → chat.completion.chunk SSE bytes for a client; one instance per stream.

    `id` defaults to the upstream id from StreamStart (prefixed "chatcmpl-" as clients expect); `created`
    to now. With `include_usage` (the client's `stream_options.include_usage`) every chunk carries
    `"usage": null` and a final `choices: []` chunk carries the usage, exactly as OpenAI streams do.
    """

    __slots__ = (
        "_created",
        "_done",
        "_finished",
        "_gap",
        "_id",
        "_include_usage",
        "_model",
        "_prefix",
        "_started",
        "_suffix",
        "_tool_numbers",
        "_usage",
        "_with_arguments",
        "_wrote_text",
    )

    def __init__(
        self, *, model: str, include_usage: bool, created: int | None = None, id: str | None = None
    ) -> None:
        self._model = model
        self._include_usage = include_usage
        self._created = int(time.time()) if created is None else created
        self._id = _chat_id(id) if id else None
        self._prefix = b""  # rendered once the id is known (StreamStart or the first event)
        self._suffix = b'],"usage":null}\n\n' if include_usage else b"]}\n\n"
        self._started = False
        self._finished = False
        self._done = False
        self._usage: Usage | None = None
        # Canonical block index → the tool call's position among tool calls, which is what chat clients
        # index by (a text block before them must not shift the numbers).
        self._tool_numbers: dict[int, int] = {}
        self._with_arguments: set[int] = set()  # tool blocks that received argument text
        self._wrote_text = False
        self._gap = False  # a tool call or thinking began since the last text

    @property
    def done(self) -> bool:
        """True after StreamEnd or StreamError: the client stream is complete."""
        return self._done

    def encode(self, event: StreamEvent) -> bytes:
        """The SSE bytes to send the client for `event` (often b"": not every event has a chat equivalent)."""
        if self._done:
            return b""
        if isinstance(event, TextDelta):  # by far the most frequent event: keep it first and lean
            if not event.text:
                return b""
            text = event.text
            if self._gap:  # text after a tool call or thinking: a new paragraph (see `encode_response`)
                self._gap = False
                if self._wrote_text:
                    text = _PARAGRAPH + text
            self._wrote_text = True
            return self._chunk(_CONTENT_OPEN + _json_encode(text) + _CHOICE_CLOSE)
        if isinstance(event, ToolCallDelta):
            number = self._tool_numbers.get(event.index)
            if number is None or not event.arguments:
                return b""
            self._with_arguments.add(event.index)
            return self._arguments(number, event.arguments)
        if isinstance(event, BlockStop) and event.index in self._tool_numbers:
            if event.index in self._with_arguments:
                return b""
            # A call without parameters (Anthropic streams `input: {}` and no JSON): chat clients parse the
            # arguments as JSON, and OpenAI always sends an object.
            return self._arguments(self._tool_numbers[event.index], "{}")
        if isinstance(event, ThinkingStart):
            self._gap = True
        if isinstance(event, ThinkingDelta | ThinkingStart | TextStart | BlockStop):
            # No chat equivalent (thinking is dropped, blocks are implicit); the role chunk still goes out.
            return b"" if self._started else self._chunk(None)
        if isinstance(event, ToolCallStart):
            self._gap = True
            number = len(self._tool_numbers)
            self._tool_numbers[event.index] = number
            call = {
                "index": number,
                "id": event.id,
                "type": "function",
                "function": {"name": event.name, "arguments": ""},
            }
            return self._chunk(_TOOL_CALLS_OPEN + _json_encode([call]) + _CHOICE_CLOSE)
        if isinstance(event, StreamStart):
            if self._id is None:
                self._id = _chat_id(event.id)
            if event.model and not self._started:  # the model the upstream named, as a JSON answer gives it
                self._model = event.model
            if event.usage is not None:
                self._usage = event.usage
            return b"" if self._started else self._chunk(None)
        if isinstance(event, StreamFinish):
            return self._finish(event.stop_reason)
        if isinstance(event, StreamUsage):
            self._usage = event.usage
            return b""
        if isinstance(event, StreamEnd):
            out = b"" if self._finished else self._finish("stop")
            if self._include_usage:
                usage = _json_encode(_usage_json(self._usage or Usage()))
                out += self._head() + b'],"usage":' + usage + b"}\n\n"
            self._done = True
            return out + _DONE
        # StreamError: an `error` payload makes the OpenAI SDK raise APIError; nothing may follow it.
        self._done = True
        error = {"error": {"message": event.message, "type": event.type, "code": None, "param": None}}
        return b"data: " + _json_encode(error) + b"\n\n"

    def _arguments(self, number: int, arguments: str) -> bytes:
        return self._chunk(
            _TOOL_CALLS_OPEN
            + b'[{"index":'
            + str(number).encode()
            + b',"function":{"arguments":'
            + _json_encode(arguments)
            + b"}}]"
            + _CHOICE_CLOSE
        )

    def _finish(self, reason: StopReason) -> bytes:
        if self._finished:
            return b""
        self._finished = True
        finish = _json_encode(_FINISH_OUT.get(reason, "stop"))
        return self._chunk(b'{"index":0,"delta":{},"logprobs":null,"finish_reason":' + finish + b"}")

    def _head(self) -> bytes:
        if not self._prefix:
            if self._id is None:
                self._id = _chat_id(None)
            self._prefix = (
                b'data: {"id":'
                + _json_encode(self._id)
                + b',"object":"chat.completion.chunk","created":'
                + str(self._created).encode()
                + b',"model":'
                + _json_encode(self._model)
                + b',"system_fingerprint":null,"choices":['
            )
        return self._prefix

    def _chunk(self, choice: bytes | None) -> bytes:
        """One chunk for `choice`; the role chunk first if nothing was sent yet (None: just that)."""
        if self._started:
            assert choice is not None
            return self._prefix + choice + self._suffix
        self._started = True
        head = self._head()
        role = head + _ROLE_CHOICE + self._suffix
        return role if choice is None else role + head + choice + self._suffix
