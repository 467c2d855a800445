"""Views over the three request wire formats: every text block, where it sits, and whether it may change.

The optimizer edits the client's own body in place through these views instead of round-tripping it through
the canonical types, so everything it does not touch — unknown fields, ordering, ids — stays exactly as the
client sent it, and same-format traffic is still forwarded byte-faithfully apart from the optimized text.

A `Segment` is one text block: its kind (`tool_result`, `user`, `assistant`), the conversation turn it is
in (0-based message index, system entries excluded), and a setter. Never exposed as segments at all:
system prompts and instructions, tool definitions, tool-call arguments, images, thinking blocks. A block
carrying `cache_control` (or inside a message or tool result that carries it) is marked `pinned`.

A tool result also carries the name of the tool whose call it answers (`Segment.tool`) and that call's
arguments (`Segment.args`, read only: the JSON text of a function call, the `input` object of a `tool_use`
or the `action` of a hosted shell call), found through the call id: `tool_call_id` →
`tool_calls[].function` (chat), `tool_use_id` → the `tool_use` block (messages), `call_id` → the
`function_call`/`custom_tool_call` item (responses; the hosted shell tools' `local_shell_call` and
`shell_call` items are named after their tool). Coding-agent profiles (`profiles`) use the name to know
what kind of output a result is, and the arguments tell which shell command printed it (`commands`). A
`shell_call_output`'s text is the `stdout` and `stderr` of each of its chunks.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

Format = Literal["chat", "responses", "messages"]
SegmentKind = Literal["tool_result", "user", "assistant"]


@dataclass(slots=True)
class Segment:
    """One text block of a request."""

    kind: SegmentKind
    turn: int
    text: str
    pinned: bool
    where: str
    """A JSON-path-like location for the report, e.g. `messages[4].content[0].text`."""
    _container: Any
    _key: Any
    tool: str | None = None
    """For a tool result: the name of the tool that produced it, when the call is in the request."""
    args: Any = None
    """For a tool result: the arguments of the call it answers, as the request carries them (read only)."""

    @property
    def item(self) -> int:
        """The index of the conversation-list entry (`messages[i]` / `input[i]`) this block is in."""
        start = self.where.find("[")
        return int(self.where[start + 1 : self.where.index("]", start)]) if start >= 0 else 0

    def set(self, text: str) -> None:
        """Replace the block's text in the request body."""
        self._container[self._key] = text
        self.text = text


class _Collector:
    def __init__(self) -> None:
        self.segments: list[Segment] = []
        self.turns = 0
        self.tool_names: dict[str, str] = {}
        """Call id → tool name, for the calls seen so far (a call always precedes its result)."""
        self.tool_args: dict[str, Any] = {}
        """Call id → the call's arguments."""
        self.tool: str | None = None
        """The tool whose result is being collected (set around `_text_parts` of a tool result)."""
        self.args: Any = None
        """The arguments of that tool's call."""

    def add(self, kind: SegmentKind, turn: int, container: Any, key: Any, where: str, pinned: bool) -> None:
        try:
            value = container[key]
        except (KeyError, IndexError, TypeError):  # malformed (a text block without `text`): not content
            return
        if isinstance(value, str) and value:
            tool, args = (self.tool, self.args) if kind == "tool_result" else (None, None)
            pinned = pinned or (kind == "user" and instructions(value))
            self.segments.append(Segment(kind, turn, value, pinned, where, container, key, tool, args))

    def call(self, call_id: Any, name: Any, args: Any = None) -> None:
        """Remember the tool name and the arguments of a call."""
        if isinstance(call_id, str) and isinstance(name, str):
            self.tool_names[call_id] = name
            self.tool_args[call_id] = args

    def answering(self, call_id: Any) -> None:
        """The tool results collected next answer the call `call_id`."""
        self.tool = self.tool_names.get(call_id) if isinstance(call_id, str) else None
        self.args = self.tool_args.get(call_id) if isinstance(call_id, str) else None


_INSTRUCTION_STARTS = (
    "<system-reminder>",  # Claude Code: CLAUDE.md, todo state, reminders
    "# AGENTS.md instructions",  # Codex
    "<user_instructions>",
    "<environment_context>",
    "<user_info>",  # Cursor
    "<rules>",
    "<custom_instructions>",
)


def instructions(text: str) -> bool:
    """A user-role block a coding agent fills with instructions or context for the model (its project file,
    reminders, environment), not text the user typed: never compacted, and not the user's request."""
    return text.lstrip().startswith(_INSTRUCTION_STARTS)


def _pinned(obj: Any) -> bool:
    return isinstance(obj, dict) and obj.get("cache_control") is not None


def _text_parts(
    col: _Collector,
    kind: SegmentKind,
    turn: int,
    content: Any,
    where: str,
    pinned: bool,
    holder: Any = None,
    holder_key: Any = None,
) -> None:
    """A content value that is a string, or a list of parts with `text`."""
    if isinstance(content, str):
        if holder is not None:
            col.add(kind, turn, holder, holder_key, where, pinned)
        return
    if not isinstance(content, list):
        return
    for j, part in enumerate(content):
        if (
            isinstance(part, dict)
            and isinstance(part.get("text"), str)
            and part.get("type")
            in (
                None,
                "text",
                "input_text",
                "output_text",
            )
        ):
            col.add(kind, turn, part, "text", f"{where}[{j}].text", pinned or _pinned(part))


class _Turns:
    """Turn numbers counted the same way in every format: a user message is a turn of its own; the model's
    message with its tool calls (and reasoning) is one turn, and the results of those calls are the next one,
    however many calls there were. (Messages has this shape already: one assistant message holds the calls,
    one user message their results.)"""

    __slots__ = ("_last", "count")

    def __init__(self) -> None:
        self.count = 0
        self._last: SegmentKind | None = None

    def next(self, kind: SegmentKind) -> int:
        """The turn of the next item, of `kind` (`user`, `assistant` or `tool_result`)."""
        if kind == "user" or kind != self._last:
            self.count += 1
            self._last = kind
        return self.count - 1


def _chat(body: dict[str, Any], col: _Collector) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    turns = _Turns()
    for i, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        role = msg.get("role")
        if role in ("system", "developer"):
            continue
        kind: SegmentKind = (
            "tool_result"
            if role in ("tool", "function")
            else ("assistant" if role == "assistant" else "user")
        )
        turn = turns.next(kind)
        calls = msg.get("tool_calls") if role == "assistant" else None
        for call in calls if isinstance(calls, list) else ():
            if isinstance(call, dict) and isinstance(call.get("function"), dict):
                col.call(call.get("id"), call["function"].get("name"), call["function"].get("arguments"))
        # A legacy `function` message names its function itself.
        col.tool, col.args = (msg.get("name") if role == "function" else None), None
        if role == "tool":
            col.answering(msg.get("tool_call_id"))
        _text_parts(
            col, kind, turn, msg.get("content"), f"messages[{i}].content", _pinned(msg), msg, "content"
        )
    col.turns = turns.count


def _messages(body: dict[str, Any], col: _Collector) -> None:
    messages = body.get("messages")
    if not isinstance(messages, list):
        return
    for turn, msg in enumerate(messages):
        if not isinstance(msg, dict):
            continue
        kind: SegmentKind = "assistant" if msg.get("role") == "assistant" else "user"
        content = msg.get("content")
        where = f"messages[{turn}].content"
        if isinstance(content, str):
            col.add(kind, turn, msg, "content", where, False)
            continue
        if not isinstance(content, list):
            continue
        for j, block in enumerate(content):
            if not isinstance(block, dict):
                continue
            btype = block.get("type")
            if btype == "text":
                col.add(kind, turn, block, "text", f"{where}[{j}].text", _pinned(block))
            elif btype == "tool_use":
                col.call(block.get("id"), block.get("name"), block.get("input"))
            elif btype == "tool_result":
                col.answering(block.get("tool_use_id"))
                inner = block.get("content")
                _text_parts(
                    col, "tool_result", turn, inner, f"{where}[{j}].content", _pinned(block), block, "content"
                )
    col.turns = len(messages)


# Responses items of the hosted shell tools: call type → the tool name the coding-agent profiles know.
_BUILT_IN_CALLS = {"local_shell_call": "local_shell", "shell_call": "shell"}


def _responses(body: dict[str, Any], col: _Collector) -> None:
    items = body.get("input")
    if isinstance(items, str):
        col.add("user", 0, body, "input", "input", False)
        col.turns = 1
        return
    if not isinstance(items, list):
        return
    turns = _Turns()
    for i, item in enumerate(items):
        if not isinstance(item, dict):
            continue
        itype = item.get("type")
        role = item.get("role")
        if itype == "function_call":
            col.call(item.get("call_id"), item.get("name"), item.get("arguments"))
        elif itype == "custom_tool_call":
            col.call(item.get("call_id"), item.get("name"), item.get("input"))
        elif (
            isinstance(itype, str) and itype in _BUILT_IN_CALLS
        ):  # hosted shell calls: the type names the tool
            col.call(item.get("call_id"), _BUILT_IN_CALLS[itype], item.get("action"))
        if itype in ("function_call_output", "custom_tool_call_output", "local_shell_call_output"):
            turn = turns.next("tool_result")
            # local_shell_call_output names its call by `id` (the SDK's type), Codex sends `call_id`
            col.answering(item.get("call_id", item.get("id")))
            _text_parts(
                col,
                "tool_result",
                turn,
                item.get("output"),
                f"input[{i}].output",
                _pinned(item),
                item,
                "output",
            )
        elif itype == "shell_call_output":  # `output`: the captured stdout and stderr of each command
            turn = turns.next("tool_result")
            col.answering(item.get("call_id"))
            chunks = item.get("output")
            for j, chunk in enumerate(chunks if isinstance(chunks, list) else ()):
                if isinstance(chunk, dict):
                    for stream in ("stdout", "stderr"):
                        col.add(
                            "tool_result",
                            turn,
                            chunk,
                            stream,
                            f"input[{i}].output[{j}].{stream}",
                            _pinned(item),
                        )
        elif itype in (None, "message") and role in ("user", "assistant"):
            kind: SegmentKind = "assistant" if role == "assistant" else "user"
            _text_parts(
                col,
                kind,
                turns.next(kind),
                item.get("content"),
                f"input[{i}].content",
                _pinned(item),
                item,
                "content",
            )
        elif itype in (None, "message") and role in ("system", "developer"):
            continue
        else:
            turns.next("assistant")  # function calls, reasoning: the model's side, with no optimizable text
    col.turns = turns.count


_EXTRACTORS: dict[Format, Callable[[dict[str, Any], _Collector], None]] = {
    "chat": _chat,
    "messages": _messages,
    "responses": _responses,
}


def extract(fmt: Format, body: dict[str, Any]) -> tuple[list[Segment], int]:
    """The text segments of `body` in conversation order, and the number of turns."""
    col = _Collector()
    _EXTRACTORS[fmt](body, col)
    return col.segments, col.turns


def content_fields(fmt: Format) -> tuple[str, ...]:
    """The top-level fields whose size the report measures (what a provider bills as input)."""
    if fmt == "messages":
        return ("system", "messages", "tools")
    if fmt == "responses":
        return ("instructions", "input", "tools")
    return ("messages", "tools")


def detect_format(body: dict[str, Any]) -> Format:
    """The wire format of a payload, as `/v1/compress` documents it: `system` → Messages, `input` →
    Responses, otherwise Chat Completions."""
    if "system" in body:
        return "messages"
    if "input" in body:
        return "responses"
    return "chat"
