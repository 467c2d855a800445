"""OpenAI Responses API (`POST /v1/responses`) ⇄ canonical, for models that are not OpenAI's.

OpenAI models get the request forwarded untouched; this module is only for Claude, OpenRouter and local
models, so everything that depends on OpenAI-side state or tools is refused with a `TranslationError` that
names the parameter: `previous_response_id`, `conversation`, `background`, stored `prompt`s, `item_reference`
items, `file_id` images and files, and every built-in tool (web search, file search, code interpreter,
computer use, …).

- `decode_request`: a Responses request body → canonical `Request`.
- `encode_response`: a canonical `Response` → a Responses `response` object.
- `StreamEncoder`: canonical stream events → Responses SSE events (`response.created` … `response.completed`).

Thinking is not round-tripped: `reasoning` input items are dropped and thinking blocks are omitted from the
output. A reasoning item is only worth sending if it can come back intact in the next request (Anthropic needs
the signed block), and the canonical Request has no way to carry one yet.
"""

from __future__ import annotations

import time
import uuid
from typing import Any, Literal

import msgspec

from adapters import allowed_tools, documents, unhonoured
from adapters.base import (
    BlockStop,
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
    token_count,
    token_limit,
)

__all__ = ["StreamEncoder", "decode_request", "encode_response"]

# ---- request -----------------------------------------------------------------------------------------------


def decode_request(body: dict[str, Any]) -> Request:
    """Translate a Responses API request body into a canonical `Request`.

    Raises `TranslationError` (with `param` set to the offending field, e.g. `input[3].type`) for shapes the
    Responses API would reject and for features that only exist on OpenAI's side.
    """
    if not isinstance(body, dict):
        raise TranslationError("The request body must be a JSON object.", None)
    model = body.get("model")
    if not isinstance(model, str) or not model:
        raise TranslationError("`model` must be a non-empty string.", "model")
    if body.get("previous_response_id") is not None:
        raise TranslationError(
            "`previous_response_id` is not supported for this model: conversation state is only stored for "
            "OpenAI models. Send the full conversation in `input` instead.",
            "previous_response_id",
        )
    if body.get("conversation") is not None:
        raise TranslationError(
            "`conversation` is not supported for this model: conversation state is only stored for OpenAI "
            "models. Send the full conversation in `input` instead.",
            "conversation",
        )
    if body.get("background") not in (None, False):
        raise TranslationError(
            "`background` is not supported for this model: background responses are run and stored only by "
            "OpenAI, so one on this model could be neither polled nor cancelled. Leave it out to get the "
            "response when it is done, or use an OpenAI model.",
            "background",
        )
    if body.get("prompt") is not None:
        raise TranslationError(
            "`prompt` (a stored prompt template) is not supported for this model: send the text in "
            "`instructions` and `input` instead.",
            "prompt",
        )

    unhonoured.check_responses(body)

    system: list[Text] = []
    instructions = body.get("instructions")
    if instructions is not None:
        if not isinstance(instructions, str):
            raise TranslationError("`instructions` must be a string.", "instructions")
        if instructions:
            system.append(Text(instructions))
    messages = _decode_input(body.get("input"), system)

    tools = _decode_tools(body.get("tools"))
    choice = body.get("tool_choice")
    tool_choice: ToolChoice | None
    if isinstance(choice, dict) and choice.get("type") == "allowed_tools":
        tools, tool_choice = allowed_tools.restrict(choice, "tool_choice", tools, chat=False)
    else:
        tool_choice = _decode_tool_choice(choice)
    stream = _optional(body, "stream", bool, "a boolean")
    return Request(
        model=model,
        messages=messages,
        system=system,
        tools=tools,
        tool_choice=tool_choice,
        parallel_tool_calls=_optional(body, "parallel_tool_calls", bool, "a boolean"),
        max_tokens=token_limit(_optional_int(body, "max_output_tokens"), "max_output_tokens"),
        temperature=_optional_number(body, "temperature"),
        top_p=_optional_number(body, "top_p"),
        response_format=_decode_text_format(body.get("text")),
        format_field="text.format",
        stream=bool(stream),
        user=_optional(body, "user", str, "a string"),
        metadata=_optional(body, "metadata", dict, "an object"),
    )


def _optional(body: dict[str, Any], key: str, kind: type[Any], what: str) -> Any:
    value = body.get(key)
    # bool is an int subclass: `True` must not pass as a token count, nor 1 as a boolean.
    if value is not None and (not isinstance(value, kind) or (kind is not bool and isinstance(value, bool))):
        raise TranslationError(f"`{key}` must be {what}.", key)
    return value


def _optional_int(body: dict[str, Any], key: str) -> int | None:
    value: int | None = _optional(body, key, int, "an integer")
    return value


def _optional_number(body: dict[str, Any], key: str) -> float | None:
    value = body.get(key)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int | float):
        raise TranslationError(f"`{key}` must be a number.", key)
    return float(value)


def _decode_input(raw: Any, system: list[Text]) -> list[Message]:
    if raw is None:
        raise TranslationError("`input` is required: send the whole conversation as input items.", "input")
    if isinstance(raw, str):
        if not raw or raw.isspace():
            raise TranslationError("`input` must not be empty or only whitespace.", "input")
        return [Message(role="user", content=[Text(raw)])]
    if not isinstance(raw, list):
        raise TranslationError("`input` must be a string or an array of input items.", "input")

    messages: list[Message] = []
    # Whether messages[-1] holds function_call_output results, so the next output joins it.
    last_is_output = False
    call_ids: set[str] = set()
    for i, item in enumerate(raw):
        param = f"input[{i}]"
        if not isinstance(item, dict):
            raise TranslationError(f"`{param}` must be an object.", param)
        kind = item.get("type")
        if kind is None or kind == "message":
            role = item.get("role")
            if role == "system" or role == "developer":
                # Anthropic has one system prompt; system/developer turns join it in the order given.
                system.extend(p for p in _text_only(_decode_content(item, param), param, role) if p.text)
                continue
            if role != "user" and role != "assistant":
                raise TranslationError(
                    f"`{param}.role` must be one of user, assistant, system or developer.", f"{param}.role"
                )
            content = _decode_content(item, param)
            if role == "assistant":
                # Anthropic rejects empty text blocks, and an empty assistant turn carries nothing.
                content = [p for p in _text_only(content, param, role) if p.text]
                if not content:
                    continue
            elif all(isinstance(p, Text) and (not p.text or p.text.isspace()) for p in content):
                # An empty user turn would be dropped on the way (Claude refuses empty and whitespace-only
                # text), leaving the upstream a conversation that is not the one sent.
                raise TranslationError(
                    f"`{param}.content` must not be empty or only whitespace.", f"{param}.content"
                )
            parts: list[Part] = [*content]
            messages.append(Message(role=role, content=parts))
            last_is_output = False
        elif kind == "function_call":
            call = _decode_function_call(item, param)
            call_ids.add(call.id)
            # Parallel calls, and the text the model wrote before them, are one assistant turn.
            if messages and messages[-1].role == "assistant":
                messages[-1].content.append(call)
            else:
                messages.append(Message(role="assistant", content=[call]))
            last_is_output = False
        elif kind == "function_call_output":
            result = _decode_function_call_output(item, param)
            if result.tool_call_id not in call_ids:
                # Both upstream formats reject an orphan result; say which item is wrong instead.
                raise TranslationError(
                    f"No function_call item with call_id {result.tool_call_id!r} precedes `{param}`; "
                    "send the function_call item before its output.",
                    f"{param}.call_id",
                )
            if last_is_output:
                messages[-1].content.append(result)
            else:
                messages.append(Message(role="user", content=[result]))
                last_is_output = True
        elif kind == "reasoning":
            continue
        elif kind == "item_reference":
            raise TranslationError(
                f"`{param}`: item_reference is not supported for this model: items are only stored for "
                "OpenAI models. Send the full item instead.",
                f"{param}.type",
            )
        else:
            raise TranslationError(
                f"`{param}`: input items of type {kind!r} are not supported for this model.", f"{param}.type"
            )
    if not messages:
        raise TranslationError("`input` must contain at least one user, assistant or tool item.", "input")
    return messages


def _cache_control(obj: dict[str, Any], param: str) -> dict[str, Any] | None:
    value = obj.get("cache_control")
    if value is not None and not isinstance(value, dict):
        raise TranslationError(f"`{param}.cache_control` must be an object.", f"{param}.cache_control")
    return value


def _decode_content(item: dict[str, Any], param: str) -> list[Text | Image | Document]:
    content = item.get("content")
    item_cache = _cache_control(item, param)
    parts: list[Text | Image | Document]
    if isinstance(content, str):
        parts = [Text(content)]
    elif isinstance(content, list):
        parts = _decode_parts(content, f"{param}.content", allow_output=True)
    else:
        raise TranslationError(
            f"`{param}.content` must be a string or an array of content parts.", f"{param}.content"
        )
    # Anthropic marks cache breakpoints on blocks, so an item-level mark belongs on its last block.
    if item_cache is not None and parts and parts[-1].cache_control is None:
        parts[-1].cache_control = item_cache
    return parts


def _decode_parts(raw: list[Any], param: str, *, allow_output: bool) -> list[Text | Image | Document]:
    parts: list[Text | Image | Document] = []
    for j, part in enumerate(raw):
        pparam = f"{param}[{j}]"
        if not isinstance(part, dict):
            raise TranslationError(f"`{pparam}` must be an object.", pparam)
        kind = part.get("type")
        if kind == "input_text" or (allow_output and kind == "output_text"):
            text = part.get("text")
            if not isinstance(text, str):
                raise TranslationError(f"`{pparam}.text` must be a string.", f"{pparam}.text")
            parts.append(Text(text, cache_control=_cache_control(part, pparam)))
        elif allow_output and kind == "refusal":
            refusal = part.get("refusal")
            if not isinstance(refusal, str):
                raise TranslationError(f"`{pparam}.refusal` must be a string.", f"{pparam}.refusal")
            parts.append(Text(refusal, cache_control=_cache_control(part, pparam)))
        elif kind == "input_image":
            parts.append(_decode_image(part, pparam))
        elif kind == "input_file":
            parts.append(documents.from_openai(part, pparam, _cache_control(part, pparam), responses=True))
        else:
            raise TranslationError(
                f"`{pparam}`: content parts of type {kind!r} are not supported for this model.",
                f"{pparam}.type",
            )
    return parts


def _decode_image(part: dict[str, Any], param: str) -> Image:
    url = part.get("image_url")
    if url is None and part.get("file_id") is not None:
        raise documents.file_id_refused(
            f"{param}.file_id", "send `image_url` (an https or base64 data URL) instead"
        )
    if not isinstance(url, str) or not url:
        raise TranslationError(f"`{param}.image_url` must be a non-empty string.", f"{param}.image_url")
    detail = part.get("detail")
    if detail is not None and not isinstance(detail, str):
        raise TranslationError(f"`{param}.detail` must be a string.", f"{param}.detail")
    cache = _cache_control(part, param)
    at = f"{param}.image_url"
    if url[:5].lower() != "data:":
        return Image(url=url, detail=detail, cache_control=cache, where=at)
    inline = parse_data_url(url)
    if inline is None:
        raise TranslationError(
            f"`{param}.image_url` must be an https URL or a base64 data URL (data:image/png;base64,…).", at
        )
    return Image(media_type=inline[0], data=inline[1], detail=detail, cache_control=cache, where=at)


def _text_only(parts: list[Text | Image | Document], param: str, role: str) -> list[Text]:
    texts: list[Text] = []
    for j, part in enumerate(parts):
        if not isinstance(part, Text):
            raise TranslationError(
                f"`{param}.content[{j}]`: {role} messages can only contain text.",
                f"{param}.content[{j}].type",
            )
        texts.append(part)
    return texts


def _required_str(item: dict[str, Any], key: str, param: str) -> str:
    value = item.get(key)
    if not isinstance(value, str) or (not value and key != "arguments"):
        raise TranslationError(f"`{param}.{key}` must be a non-empty string.", f"{param}.{key}")
    return value


def _decode_function_call(item: dict[str, Any], param: str) -> ToolCall:
    return ToolCall(
        id=_required_str(item, "call_id", param),
        name=_required_str(item, "name", param),
        arguments=_required_str(item, "arguments", param),
        cache_control=_cache_control(item, param),
        where=f"{param}.arguments",
    )


def _decode_function_call_output(item: dict[str, Any], param: str) -> ToolResult:
    call_id = _required_str(item, "call_id", param)
    output = item.get("output")
    content: list[Text | Image | Document]
    if isinstance(output, str):
        # An empty tool output is legal; an empty text block is not (Anthropic), so send no block.
        content = [Text(output)] if output else []
    elif isinstance(output, list):
        content = _decode_parts(output, f"{param}.output", allow_output=False)
    else:
        raise TranslationError(
            f"`{param}.output` must be a string or an array of content parts.", f"{param}.output"
        )
    return ToolResult(tool_call_id=call_id, content=content, cache_control=_cache_control(item, param))


def _decode_tools(raw: Any) -> list[Tool]:
    if raw is None:
        return []
    if not isinstance(raw, list):
        raise TranslationError("`tools` must be an array.", "tools")
    tools: list[Tool] = []
    for i, tool in enumerate(raw):
        param = f"tools[{i}]"
        if not isinstance(tool, dict):
            raise TranslationError(f"`{param}` must be an object.", param)
        kind = tool.get("type")
        if kind != "function":
            raise TranslationError(
                f"`{param}`: the built-in tool {kind!r} runs only on OpenAI models and cannot be used with "
                "this model; declare a function tool instead.",
                f"{param}.type",
            )
        parameters = tool.get("parameters")
        if parameters is None:
            parameters = {"type": "object", "properties": {}}
        elif not isinstance(parameters, dict):
            raise TranslationError(f"`{param}.parameters` must be an object.", f"{param}.parameters")
        description = tool.get("description")
        if description is not None and not isinstance(description, str):
            raise TranslationError(f"`{param}.description` must be a string.", f"{param}.description")
        strict = tool.get("strict")
        if strict is not None and not isinstance(strict, bool):
            raise TranslationError(f"`{param}.strict` must be a boolean.", f"{param}.strict")
        tools.append(
            Tool(
                name=_required_str(tool, "name", param),
                parameters=parameters,
                description=description,
                strict=strict,
                cache_control=_cache_control(tool, param),
            )
        )
    return tools


def _decode_tool_choice(raw: Any) -> ToolChoice | None:
    if raw is None:
        return None
    if raw == "auto" or raw == "none" or raw == "required":
        return ToolChoice(type=raw)
    if isinstance(raw, dict) and raw.get("type") == "function":
        name = raw.get("name")
        if not isinstance(name, str) or not name:
            raise TranslationError("`tool_choice.name` must be a non-empty string.", "tool_choice.name")
        return ToolChoice(type="tool", name=name)
    raise TranslationError(
        '`tool_choice` must be "auto", "none", "required", {"type": "function", "name": …} or allowed_tools '
        "for this model.",
        "tool_choice",
    )


def _decode_text_format(raw: Any) -> ResponseFormat | None:
    if raw is None:
        return None
    if not isinstance(raw, dict):
        raise TranslationError("`text` must be an object.", "text")
    fmt = raw.get("format")
    if fmt is None:
        return None
    if not isinstance(fmt, dict):
        raise TranslationError("`text.format` must be an object.", "text.format")
    kind = fmt.get("type")
    if kind == "text" or kind == "json_object":
        return ResponseFormat(type=kind)
    if kind != "json_schema":
        raise TranslationError(
            "`text.format.type` must be one of text, json_object or json_schema.", "text.format.type"
        )
    name = fmt.get("name")
    if not isinstance(name, str) or not name:
        raise TranslationError("`text.format.name` must be a non-empty string.", "text.format.name")
    schema = fmt.get("schema")
    if not isinstance(schema, dict):
        raise TranslationError("`text.format.schema` must be an object.", "text.format.schema")
    json_schema: dict[str, Any] = {"name": name, "schema": schema}
    strict = fmt.get("strict")
    if strict is not None:
        if not isinstance(strict, bool):
            raise TranslationError("`text.format.strict` must be a boolean.", "text.format.strict")
        json_schema["strict"] = strict
    description = fmt.get("description")
    if isinstance(description, str):
        json_schema["description"] = description
    return ResponseFormat(type="json_schema", json_schema=json_schema)


# ---- response ----------------------------------------------------------------------------------------------

_Status = Literal["completed", "incomplete", "failed"]
_ItemStatus = Literal["completed", "incomplete"]


def usage_from_doc(u: Any) -> Usage | None:
    """A Responses `usage` object in canonical form (None if it is not one); malformed counts read as 0."""
    if not isinstance(u, dict):
        return None
    inputs, outputs = u.get("input_tokens_details"), u.get("output_tokens_details")
    return Usage(
        input_tokens=token_count(u.get("input_tokens")),
        output_tokens=token_count(u.get("output_tokens")),
        cached_input_tokens=token_count(inputs.get("cached_tokens")) if isinstance(inputs, dict) else 0,
        reasoning_tokens=token_count(outputs.get("reasoning_tokens")) if isinstance(outputs, dict) else 0,
    )


def decode_response(doc: dict[str, Any]) -> Response:
    """An upstream Responses object in canonical form: what a stream is rebuilt from when a Responses
    server answers a stream request with one JSON body. Built-in tool items (web search …) are not kept."""
    output = doc.get("output")
    if not isinstance(output, list):
        raise TranslationError("The upstream response has no output.", "output")
    content: list[Text | ToolCall | Thinking] = []
    for item in output:
        if not isinstance(item, dict):
            continue
        kind = item.get("type")
        if kind == "message":
            for part in item.get("content") or []:
                if not isinstance(part, dict):
                    continue
                text = part.get("refusal") if part.get("type") == "refusal" else part.get("text")
                if isinstance(text, str) and text:
                    content.append(Text(text))
        elif kind == "function_call":
            arguments = item.get("arguments")
            content.append(
                ToolCall(
                    id=str(item.get("call_id") or item.get("id") or ""),
                    name=str(item.get("name") or ""),
                    arguments=arguments if isinstance(arguments, str) and arguments else "{}",
                )
            )
        elif kind == "reasoning":
            summary = "".join(
                p["text"]
                for p in item.get("summary") or []
                if isinstance(p, dict) and isinstance(p.get("text"), str)
            )
            if summary:
                content.append(Thinking(text=summary))
    details = doc.get("incomplete_details")
    reason = details.get("reason") if isinstance(details, dict) else None
    stop: StopReason
    if doc.get("status") == "incomplete":
        stop = "content_filter" if reason == "content_filter" else "length"
    else:
        stop = "tool_calls" if any(isinstance(c, ToolCall) for c in content) else "stop"
    usage = usage_from_doc(doc.get("usage")) or Usage()
    created = doc.get("created_at")
    return Response(
        id=str(doc.get("id") or ""),
        model=str(doc.get("model") or ""),
        content=content,
        stop_reason=stop,
        usage=usage,
        created=created if isinstance(created, int) and not isinstance(created, bool) else 0,
    )


def _base_id(upstream_id: str) -> str:
    """The upstream id without its provider prefix, so derived ids read `resp_01AB…`, not `resp_msg_01AB…`."""
    for prefix in ("resp_", "msg_", "chatcmpl-", "gen-"):
        if upstream_id.startswith(prefix) and len(upstream_id) > len(prefix):
            return upstream_id[len(prefix) :]
    return upstream_id or uuid.uuid4().hex


def _get(request: dict[str, Any], key: str, default: Any) -> Any:
    value = request.get(key)
    return default if value is None else value


def _echo(request: dict[str, Any]) -> dict[str, Any]:
    """The request settings a Response object repeats back, with OpenAI's defaults where absent."""
    text = request.get("text")
    text = text if isinstance(text, dict) else {}
    return {
        "instructions": request.get("instructions"),
        "max_output_tokens": request.get("max_output_tokens"),
        "max_tool_calls": request.get("max_tool_calls"),
        "parallel_tool_calls": _get(request, "parallel_tool_calls", True),
        "prompt_cache_key": request.get("prompt_cache_key"),
        "safety_identifier": request.get("safety_identifier"),
        "temperature": _get(request, "temperature", 1.0),
        "text": {
            "format": _get(text, "format", {"type": "text"}),
            "verbosity": _get(text, "verbosity", "medium"),
        },
        "tool_choice": _get(request, "tool_choice", "auto"),
        "tools": _get(request, "tools", []),
        "top_logprobs": _get(request, "top_logprobs", 0),
        "top_p": _get(request, "top_p", 1.0),
        "truncation": _get(request, "truncation", "disabled"),
        "user": request.get("user"),
        "metadata": _get(request, "metadata", {}),
    }


def _response_object(
    *,
    resp_id: str,
    created_at: int,
    status: Literal["in_progress", "completed", "incomplete", "failed"],
    model: str,
    output: list[dict[str, Any]],
    usage: dict[str, Any] | None,
    echo: dict[str, Any],
    incomplete_details: dict[str, Any] | None = None,
    error: dict[str, Any] | None = None,
) -> dict[str, Any]:
    # Key order follows OpenAI's own responses (tests/fixtures/openai/responses_text.json).
    return {
        "id": resp_id,
        "object": "response",
        "created_at": created_at,
        "status": status,
        "background": False,
        "completed_at": int(time.time()) if status == "completed" else None,
        "error": error,
        "incomplete_details": incomplete_details,
        "instructions": echo["instructions"],
        "max_output_tokens": echo["max_output_tokens"],
        "max_tool_calls": echo["max_tool_calls"],
        "model": model,
        "output": output,
        "parallel_tool_calls": echo["parallel_tool_calls"],
        "previous_response_id": None,
        "prompt_cache_key": echo["prompt_cache_key"],
        # Reasoning settings are not applied to other providers, so none are reported as applied.
        "reasoning": {"effort": None, "summary": None},
        "safety_identifier": echo["safety_identifier"],
        "service_tier": "default",
        # Nothing is stored: this id cannot be used as a previous_response_id later.
        "store": False,
        "temperature": echo["temperature"],
        "text": echo["text"],
        "tool_choice": echo["tool_choice"],
        "tools": echo["tools"],
        "top_logprobs": echo["top_logprobs"],
        "top_p": echo["top_p"],
        "truncation": echo["truncation"],
        "usage": usage,
        "user": echo["user"],
        "metadata": echo["metadata"],
    }


def _usage(usage: Usage) -> dict[str, Any]:
    return {
        "input_tokens": usage.input_tokens,
        "input_tokens_details": {
            "cache_write_tokens": usage.cache_creation_input_tokens,
            "cached_tokens": usage.cached_input_tokens,
        },
        "output_tokens": usage.output_tokens,
        "output_tokens_details": {"reasoning_tokens": usage.reasoning_tokens},
        "total_tokens": usage.total_tokens,
    }


def _outcome(stop_reason: StopReason | None) -> tuple[_Status, dict[str, Any] | None, dict[str, Any] | None]:
    """(status, incomplete_details, error) for a stop reason."""
    if stop_reason == "length":
        return "incomplete", {"reason": "max_output_tokens"}, None
    if stop_reason == "content_filter":
        return "incomplete", {"reason": "content_filter"}, None
    if stop_reason == "error":
        return "failed", None, {"code": "server_error", "message": "The model stopped because of an error."}
    return "completed", None, None


def _error_code(error_type: str) -> str:
    """A `ResponseError.code` (a closed set in the SDK) for an upstream error type."""
    if error_type in ("rate_limit_error", "rate_limit_exceeded"):
        return "rate_limit_exceeded"
    return "server_error"


def _output_text(text: str) -> dict[str, Any]:
    return {"type": "output_text", "annotations": [], "logprobs": [], "text": text}


def _message_item(item_id: str, status: str, content: list[dict[str, Any]]) -> dict[str, Any]:
    return {"id": item_id, "type": "message", "status": status, "content": content, "role": "assistant"}


def _function_call_item(item_id: str, status: str, arguments: str, call_id: str, name: str) -> dict[str, Any]:
    return {
        "id": item_id,
        "type": "function_call",
        "status": status,
        "arguments": arguments,
        "call_id": call_id,
        "name": name,
    }


def _call_item_id(call_id: str, base: str, output_index: int) -> str:
    return f"fc_{call_id}" if call_id else f"fc_{base}_{output_index}"


def encode_response(resp: Response, *, model: str, request: dict[str, Any]) -> dict[str, Any]:
    """Translate a canonical `Response` into a Responses API `response` object.

    `model` is the name reported to the client; `request` is the client's original Responses request body,
    whose settings the response object echoes.
    """
    base = _base_id(resp.id)
    output: list[dict[str, Any]] = []
    text_part: dict[str, Any] | None = None
    for block in resp.content:
        if isinstance(block, Text):
            # Adjacent text blocks read as one answer: one message item, one output_text part.
            if text_part is None:
                text_part = _output_text(block.text)
                output.append(_message_item(f"msg_{base}_{len(output)}", "completed", [text_part]))
            else:
                text_part["text"] += block.text
        elif isinstance(block, ToolCall):
            # OpenAI never sends empty arguments; clients json.loads() them, so send an empty object.
            output.append(
                _function_call_item(
                    _call_item_id(block.id, base, len(output)),
                    "completed",
                    block.arguments or "{}",
                    block.id,
                    block.name,
                )
            )
            text_part = None
    status, incomplete_details, error = _outcome(resp.stop_reason)
    if status == "incomplete" and output and not isinstance(resp.content[-1], Thinking):
        output[-1]["status"] = "incomplete"  # the item the limit cut off, as OpenAI marks it
    return _response_object(
        resp_id=f"resp_{base}",
        created_at=resp.created or int(time.time()),
        status=status,
        model=model,
        output=output,
        usage=_usage(resp.usage),
        echo=_echo(request),
        incomplete_details=incomplete_details,
        error=error,
    )


# ---- stream ------------------------------------------------------------------------------------------------


# Delta events are nearly all of a stream, so they are framed from pre-built bytes around the two values that
# change (sequence number and fragment) instead of encoding a whole dict each time. The JSON matches what
# `_event` produces for the same fields, key order included.
_TEXT_DELTA = (
    b'event: response.output_text.delta\ndata: {"type":"response.output_text.delta","sequence_number":'
)
_ARGS_DELTA = (
    b"event: response.function_call_arguments.delta\n"
    b'data: {"type":"response.function_call_arguments.delta","sequence_number":'
)


class _Block:
    """An open canonical block: its output item (None for thinking, which is not sent) and text so far."""

    __slots__ = ("delta_head", "delta_tail", "item", "item_id", "kind", "output_index", "parts")

    def __init__(self, item: dict[str, Any] | None, output_index: int) -> None:
        self.item = item
        self.kind: str = item["type"] if item is not None else "thinking"
        self.item_id: str = item["id"] if item is not None else ""
        self.output_index = output_index
        self.parts: list[str] = []
        where = b',"item_id":' + msgspec.json.encode(self.item_id) + b',"output_index":%d' % output_index
        if self.kind == "message":
            self.delta_head = where + b',"content_index":0,"delta":'
            self.delta_tail = b',"logprobs":[]}\n\n'
        else:
            self.delta_head = where + b',"delta":'
            self.delta_tail = b"}\n\n"


class StreamEncoder:
    """Canonical stream events → Responses API server-sent events, for one response.

    Each canonical block becomes one output item (text → `message`, tool call → `function_call`), numbered by
    `output_index` in the order they start; thinking blocks are skipped. `encode` returns the bytes to write
    (possibly several events, possibly none); after the stream's final event it returns b"".

    A block's `.done` events wait for the event after its stop: a block the response ends with is reported
    `incomplete` when the response is (the token limit or a content filter cut it off, as OpenAI marks such an
    item), and which it is can only be known from the stop reason that follows the block.
    """

    __slots__ = (
        "_base",
        "_blocks",
        "_created_at",
        "_done",
        "_echo",
        "_held",
        "_id",
        "_model",
        "_output",
        "_seq",
        "_started",
        "_stop_reason",
        "_usage",
    )

    def __init__(self, *, model: str, request: dict[str, Any]) -> None:
        self._model = model
        self._echo = _echo(request)
        self._seq = 0
        self._id = ""
        self._base = ""
        self._created_at = 0
        self._started = False
        self._done = False
        self._blocks: dict[int, _Block] = {}
        self._held: _Block | None = None  # stopped, its `.done` events not yet written
        self._output: list[dict[str, Any]] = []
        self._stop_reason: StopReason | None = None
        self._usage: Usage | None = None

    def encode(self, event: StreamEvent) -> bytes:
        """The SSE bytes for one canonical event."""
        if self._done:
            return b""
        # Deltas are by far the most frequent events, so they are tested first.
        if isinstance(event, TextDelta):
            return self._text_delta(event)
        if isinstance(event, ToolCallDelta):
            return self._tool_delta(event)
        if isinstance(event, ThinkingDelta):
            return b""
        if isinstance(event, StreamStart):
            if event.usage is not None:
                self._merge_usage(event.usage)
            if event.model and not self._started:  # the model the upstream named, as a JSON answer gives it
                self._model = event.model
            # A second start (or one after content already opened the response) adds nothing for the client.
            return b"" if self._started else self._start(event.id)
        out = b"" if self._started else self._start("")
        if isinstance(event, TextStart):
            return out + self._open_text(event.index)
        if isinstance(event, ToolCallStart):
            return out + self._open_tool(event)
        if isinstance(event, ThinkingStart):
            out += self._close_all()
            self._blocks[event.index] = _Block(None, -1)
            return out
        if isinstance(event, BlockStop):
            block = self._blocks.pop(event.index, None)
            if block is None:
                return out
            out += self._close_all()  # blocks are sequential: anything stopped before this one is done
            self._held = block
            return out
        if isinstance(event, StreamFinish):
            self._stop_reason = event.stop_reason
            return out
        if isinstance(event, StreamUsage):
            self._merge_usage(event.usage)
            return out
        if isinstance(event, StreamEnd):
            return out + self._finish()
        if isinstance(event, StreamError):
            return out + self._fail(event)
        return out

    # -- framing

    def _event(self, kind: str, fields: dict[str, Any]) -> bytes:
        payload = {"type": kind, "sequence_number": self._seq}
        payload.update(fields)
        self._seq += 1
        # msgspec escapes control characters, so the JSON is always a single `data:` line; building the bytes
        # directly skips sse.frame()'s decode/split/encode round trip.
        return b"event: " + kind.encode() + b"\ndata: " + msgspec.json.encode(payload) + b"\n\n"

    def _delta(self, prefix: bytes, block: _Block, fragment: str) -> bytes:
        seq = self._seq
        self._seq = seq + 1
        return b"%b%d%b%b%b" % (
            prefix,
            seq,
            block.delta_head,
            msgspec.json.encode(fragment),
            block.delta_tail,
        )

    def _response(
        self,
        status: Literal["in_progress", "completed", "incomplete", "failed"],
        incomplete_details: dict[str, Any] | None = None,
        error: dict[str, Any] | None = None,
    ) -> dict[str, Any]:
        in_progress = status == "in_progress"
        return _response_object(
            resp_id=self._id,
            created_at=self._created_at,
            status=status,
            model=self._model,
            output=[] if in_progress else self._output,
            usage=None if in_progress or self._usage is None else _usage(self._usage),
            echo=self._echo,
            incomplete_details=incomplete_details,
            error=error,
        )

    # -- lifecycle

    def _start(self, upstream_id: str) -> bytes:
        self._started = True
        self._base = _base_id(upstream_id)
        self._id = f"resp_{self._base}"
        self._created_at = int(time.time())
        response = self._response("in_progress")
        return self._event("response.created", {"response": response}) + self._event(
            "response.in_progress", {"response": response}
        )

    def _merge_usage(self, usage: Usage) -> None:
        # Reports are cumulative, so the field-wise maximum equals the latest report; it also keeps the input
        # counts from StreamStart when a later report carries output tokens only (Anthropic's minimal form).
        old = self._usage
        if old is None:
            self._usage = usage
            return
        self._usage = Usage(
            input_tokens=max(old.input_tokens, usage.input_tokens),
            output_tokens=max(old.output_tokens, usage.output_tokens),
            cached_input_tokens=max(old.cached_input_tokens, usage.cached_input_tokens),
            cache_creation_input_tokens=max(
                old.cache_creation_input_tokens, usage.cache_creation_input_tokens
            ),
            reasoning_tokens=max(old.reasoning_tokens, usage.reasoning_tokens),
            cache_creation_1h_input_tokens=max(
                old.cache_creation_1h_input_tokens, usage.cache_creation_1h_input_tokens
            ),
        )

    def _finish(self) -> bytes:
        status, incomplete_details, error = _outcome(self._stop_reason)
        out = self._close_all("incomplete" if status == "incomplete" else "completed")
        self._done = True
        kind = "response.completed" if status == "completed" else f"response.{status}"
        return out + self._event(kind, {"response": self._response(status, incomplete_details, error)})

    def _fail(self, event: StreamError) -> bytes:
        out = self._close_held()  # it was complete before the error came
        self._done = True
        # Items cut off by the error are reported as they stood, marked incomplete.
        for block in self._blocks.values():
            item = block.item
            if item is None:
                continue
            item["status"] = "incomplete"
            if block.kind == "message":
                item["content"] = [_output_text("".join(block.parts))]
            else:
                item["arguments"] = "".join(block.parts)
        self._blocks.clear()
        error = {"code": _error_code(event.type), "message": event.message}
        return (
            out
            + self._event("error", {"code": event.type, "message": event.message, "param": None})
            + self._event("response.failed", {"response": self._response("failed", error=error)})
        )

    # -- blocks

    def _close_held(self) -> bytes:
        block, self._held = self._held, None
        return self._close(block, "completed") if block is not None else b""

    def _close_all(self, last: _ItemStatus = "completed") -> bytes:
        """The `.done` events of the stopped block and of any still open, in order, the last one's item
        `last`."""
        blocks = [self._blocks[index] for index in sorted(self._blocks)]
        if self._held is not None:
            blocks.insert(0, self._held)
            self._held = None
        self._blocks.clear()
        return b"".join(
            self._close(block, last if n == len(blocks) - 1 else "completed")
            for n, block in enumerate(blocks)
        )

    def _open_text(self, index: int) -> bytes:
        out = self._close_all()  # blocks are sequential: a new one means the previous one ended
        output_index = len(self._output)
        item = _message_item(f"msg_{self._base}_{output_index}", "in_progress", [])
        self._output.append(item)
        block = self._blocks[index] = _Block(item, output_index)
        return (
            out
            + self._event("response.output_item.added", {"output_index": output_index, "item": item})
            + self._event(
                "response.content_part.added",
                {
                    "item_id": block.item_id,
                    "output_index": output_index,
                    "content_index": 0,
                    "part": _output_text(""),
                },
            )
        )

    def _open_tool(self, event: ToolCallStart) -> bytes:
        out = self._close_all()
        output_index = len(self._output)
        item_id = _call_item_id(event.id, self._base, output_index)
        item = _function_call_item(item_id, "in_progress", "", event.id, event.name)
        self._output.append(item)
        self._blocks[event.index] = _Block(item, output_index)
        return out + self._event("response.output_item.added", {"output_index": output_index, "item": item})

    def _text_delta(self, event: TextDelta) -> bytes:
        out = b""
        block = self._blocks.get(event.index)
        if block is None:
            # A delta without its start breaks the canonical contract; open the block rather than lose text.
            out = (b"" if self._started else self._start("")) + self._open_text(event.index)
            block = self._blocks[event.index]
        if block.kind != "message" or not event.text:
            return out
        block.parts.append(event.text)
        return out + self._delta(_TEXT_DELTA, block, event.text)

    def _tool_delta(self, event: ToolCallDelta) -> bytes:
        block = self._blocks.get(event.index)
        # Without its start there is no call id or name to report, so a stray fragment cannot be placed.
        if block is None or block.kind != "function_call" or not event.arguments:
            return b""
        block.parts.append(event.arguments)
        return self._delta(_ARGS_DELTA, block, event.arguments)

    def _close(self, block: _Block, status: _ItemStatus) -> bytes:
        item = block.item
        if item is None:
            return b""
        item["status"] = status
        where = {"item_id": block.item_id, "output_index": block.output_index}
        if block.kind == "message":
            text = "".join(block.parts)
            part = _output_text(text)
            item["content"] = [part]
            return (
                self._event(
                    "response.output_text.done", {**where, "content_index": 0, "text": text, "logprobs": []}
                )
                + self._event("response.content_part.done", {**where, "content_index": 0, "part": part})
                + self._event("response.output_item.done", {"output_index": block.output_index, "item": item})
            )
        out = b""
        if not block.parts:
            # OpenAI never sends empty arguments and clients json.loads() them: send an empty object, as a
            # delta too, so that concatenating the deltas still gives the final arguments.
            block.parts.append("{}")
            out = self._delta(_ARGS_DELTA, block, "{}")
        arguments = "".join(block.parts)
        item["arguments"] = arguments
        return (
            out
            + self._event("response.function_call_arguments.done", {**where, "arguments": arguments})
            + self._event("response.output_item.done", {"output_index": block.output_index, "item": item})
        )
