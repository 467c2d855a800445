"""The canonical request, response and stream-event types: the spine every translator goes through.

Three inbound wire formats (OpenAI chat, OpenAI Responses, Anthropic Messages) and two upstream wire formats
(OpenAI-compatible chat, Anthropic Messages) each translate to and from these types once, so N inbound and M
upstream formats cost N + M translators, never N x M. Same-format traffic (chat → OpenAI chat, Messages →
Anthropic, Responses → OpenAI Responses) does not go through here at all: it is forwarded as it came.

Conventions:
- `Usage.input_tokens` counts every prompt token, cached or not (OpenAI's `prompt_tokens` semantics);
  `cached_input_tokens` and `cache_creation_input_tokens` are the parts read from and written to the cache.
  Anthropic's `input_tokens` excludes both, so its translators add or subtract them.
- Tool-call arguments are kept as the JSON *string* the model produced (byte-exact), never re-serialized.
- `cache_control` is an opaque dict carried on every block type and only emitted towards Anthropic.
"""

from __future__ import annotations

from typing import Any, Literal

import msgspec

Role = Literal["user", "assistant"]
StopReason = Literal["stop", "length", "tool_calls", "content_filter", "stop_sequence", "error"]
CacheControl = dict[str, Any]


class Text(msgspec.Struct, tag="text", omit_defaults=True):
    """A text block."""

    text: str
    cache_control: CacheControl | None = None


class Image(msgspec.Struct, tag="image", omit_defaults=True):
    """An image, by URL or inline base64 (`data` with `media_type`)."""

    url: str | None = None
    media_type: str | None = None
    data: str | None = None
    detail: str | None = None
    cache_control: CacheControl | None = None
    where: str | None = None
    """Where the client sent the image (`messages[1].content[0].image_url.url`): what an error names."""


class Document(msgspec.Struct, tag="document", omit_defaults=True):
    """A document for the model to read: a PDF (or plain text) inline as base64 `data` with its `media_type`,
    or a PDF by `url`. `title` is its name (OpenAI `filename`, Anthropic `title`). Files uploaded to a
    provider's Files API have no canonical form: their ids mean nothing to another provider, so the decoders
    refuse them (see `adapters.documents`)."""

    media_type: str | None = None
    data: str | None = None
    url: str | None = None
    title: str | None = None
    cache_control: CacheControl | None = None
    where: str | None = None
    """Where the client sent the document (`messages[1].content[0].file.file_data`): what an error names."""


class ToolCall(msgspec.Struct, tag="tool_call", omit_defaults=True):
    """An assistant's call of a tool. `arguments` is the JSON text exactly as produced."""

    id: str
    name: str
    arguments: str
    cache_control: CacheControl | None = None
    where: str | None = None
    """Where the client sent the arguments (`input[3].arguments`): what an error about them names."""


class ToolResult(msgspec.Struct, tag="tool_result", omit_defaults=True):
    """The result of a tool call, paired to it by `tool_call_id`."""

    tool_call_id: str
    content: list[Text | Image | Document]
    is_error: bool = False
    cache_control: CacheControl | None = None


class Thinking(msgspec.Struct, tag="thinking", omit_defaults=True):
    """Model reasoning text (Anthropic thinking blocks); kept for Anthropic, dropped towards OpenAI."""

    text: str
    signature: str | None = None


Part = Text | Image | Document | ToolCall | ToolResult | Thinking


class Message(msgspec.Struct, omit_defaults=True):
    """One conversational turn. Tool results travel in user messages (Anthropic's model)."""

    role: Role
    content: list[Part]


class Tool(msgspec.Struct, omit_defaults=True):
    """A function tool the model may call."""

    name: str
    parameters: dict[str, Any]
    description: str | None = None
    strict: bool | None = None
    cache_control: CacheControl | None = None


class ToolChoice(msgspec.Struct, omit_defaults=True):
    """`auto`, `none`, `required` (any tool), or `tool` with a `name`."""

    type: Literal["auto", "none", "required", "tool"]
    name: str | None = None


class ResponseFormat(msgspec.Struct, omit_defaults=True):
    """JSON mode: `json_object`, or `json_schema` with a schema."""

    type: Literal["text", "json_object", "json_schema"]
    json_schema: dict[str, Any] | None = None


class Request(msgspec.Struct, omit_defaults=True):
    """A model request in canonical form."""

    model: str
    messages: list[Message]
    system: list[Text] = msgspec.field(default_factory=list)
    tools: list[Tool] = msgspec.field(default_factory=list)
    tool_choice: ToolChoice | None = None
    parallel_tool_calls: bool | None = None
    max_tokens: int | None = None
    temperature: float | None = None
    top_p: float | None = None
    top_k: int | None = None
    stop: list[str] = msgspec.field(default_factory=list)
    stop_field: str = "stop"
    """The client's name for `stop` (Messages: `stop_sequences`): what an error about it names."""
    response_format: ResponseFormat | None = None
    format_field: str = "response_format"
    """The client's name for `response_format` (Responses: `text.format`): what an error about it names."""
    stream: bool = False
    user: str | None = None
    metadata: dict[str, Any] | None = None
    reasoning_budget: int | None = None
    """Tokens the model may think with before answering (Anthropic `thinking.budget_tokens`)."""


class Usage(msgspec.Struct, omit_defaults=False):
    """Token usage. `input_tokens` includes cached and cache-written tokens (see module doc)."""

    input_tokens: int = 0
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_creation_input_tokens: int = 0
    reasoning_tokens: int = 0
    cache_creation_1h_input_tokens: int = 0
    """The part of `cache_creation_input_tokens` written with a 1-hour TTL, when the provider says so."""

    @property
    def total_tokens(self) -> int:
        return self.input_tokens + self.output_tokens


class Response(msgspec.Struct, omit_defaults=True):
    """A complete (non-streaming) model response in canonical form."""

    id: str
    model: str
    content: list[Text | ToolCall | Thinking]
    stop_reason: StopReason | None
    usage: Usage
    stop_sequence: str | None = None
    created: int = 0


# ---- stream events ---------------------------------------------------------------------------------------
# Blocks are numbered 0, 1, 2 … in the order they start; a block is text, a tool call, or thinking. Decoders
# keep blocks sequential: they emit BlockStop for the open block before starting the next one. Every delta is
# preceded by the start event of its block. A normal stream ends with StreamFinish, then StreamEnd (usage may
# come between them or before); a broken one ends with StreamError.


class StreamStart(msgspec.Struct, tag="start", tag_field="kind"):
    """The response began. Usage, if the upstream reports input tokens up front (Anthropic does)."""

    id: str
    model: str
    usage: Usage | None = None


class TextStart(msgspec.Struct, tag="text_start", tag_field="kind"):
    """A text block opens at `index`."""

    index: int


class TextDelta(msgspec.Struct, tag="text_delta", tag_field="kind"):
    """More text for the block at `index`."""

    index: int
    text: str


class ThinkingStart(msgspec.Struct, tag="thinking_start", tag_field="kind"):
    """A thinking (reasoning) block opens at `index`."""

    index: int


class ThinkingDelta(msgspec.Struct, tag="thinking_delta", tag_field="kind"):
    """More reasoning text for the thinking block at `index`; `signature` arrives once, at its end."""

    index: int
    text: str = ""
    signature: str | None = None


class ToolCallStart(msgspec.Struct, tag="tool_call_start", tag_field="kind"):
    """A tool call opens at `index`."""

    index: int
    id: str
    name: str


class ToolCallDelta(msgspec.Struct, tag="tool_call_delta", tag_field="kind"):
    """A fragment of the tool call's JSON arguments."""

    index: int
    arguments: str


class BlockStop(msgspec.Struct, tag="block_stop", tag_field="kind"):
    """The block at `index` is complete."""

    index: int


class StreamFinish(msgspec.Struct, tag="finish", tag_field="kind"):
    """The model stopped. Usage may still follow (OpenAI sends it in a later chunk)."""

    stop_reason: StopReason
    stop_sequence: str | None = None


class StreamUsage(msgspec.Struct, tag="usage", tag_field="kind"):
    """Usage so far (cumulative); the last one wins."""

    usage: Usage


class StreamError(msgspec.Struct, tag="error", tag_field="kind"):
    """The upstream reported an error mid-stream, or the stream broke."""

    type: str
    message: str


class StreamEnd(msgspec.Struct, tag="end", tag_field="kind"):
    """The upstream stream ended normally."""


StreamEvent = (
    StreamStart
    | TextStart
    | TextDelta
    | ThinkingStart
    | ThinkingDelta
    | ToolCallStart
    | ToolCallDelta
    | BlockStop
    | StreamFinish
    | StreamUsage
    | StreamError
    | StreamEnd
)


_MEDIA_TYPE_ALIASES = {"image/jpg": "image/jpeg", "image/pjpeg": "image/jpeg", "image/x-png": "image/png"}
"""Names clients give image types that are not their registered names (which is what providers check)."""


def parse_data_url(url: str) -> tuple[str, str] | None:
    """(media type, base64 payload) of a `data:<type>[;param…];base64,<payload>` URL; None for anything else
    (an ordinary URL, or a data URL that is not base64 or has no media type). The media type is given in
    lower case by its registered name (`image/JPG` is `image/jpeg`)."""
    if url[:5].lower() != "data:":
        return None
    header, comma, payload = url[5:].partition(",")
    media_type, _, encoding = header.rpartition(";")
    if not comma or encoding.lower() != "base64" or not media_type:
        return None
    media_type = media_type.split(";", 1)[0].strip().lower()
    return _MEDIA_TYPE_ALIASES.get(media_type, media_type), payload


class TranslationError(ValueError):
    """The inbound request cannot be expressed for the target (named field and reason). `unsupported`: the
    request is valid in its own format, but asks for what the provider it is translated for cannot do."""

    def __init__(self, message: str, param: str | None = None, *, unsupported: bool = False) -> None:
        super().__init__(message)
        self.param = param
        self.unsupported = unsupported


def token_limit(value: int | None, key: str) -> int | None:
    """A request's output-token limit: at least 1 when given (0 must not read as "unset" downstream)."""
    if value is not None and value < 1:
        raise TranslationError(f"`{key}` must be at least 1, got {value}.", key)
    return value


def token_count(value: Any) -> int:
    """A usage count as reported: a non-negative integer, else 0 (absent, null, a float, a string)."""
    return value if isinstance(value, int) and not isinstance(value, bool) and value >= 0 else 0
