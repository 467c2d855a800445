"""Server-sent events, parsed per the WHATWG spec and framed for writing.

The parser is incremental: feed it bytes as they arrive (any split, even mid-line or mid-UTF-8 sequence) and
it returns the complete events so far. It handles `\\n`, `\\r\\n` and `\\r` line ends, comment lines (`: …`,
e.g. OpenRouter's `: OPENROUTER PROCESSING`), multi-line `data:` (joined with `\\n`), `event:`, `id:` and
`retry:`, and one optional space after the colon. An event is dispatched on a blank line; a block with no
`data:` line dispatches nothing (spec), and a stream that ends mid-event drops that partial event (spec).
"""

from __future__ import annotations

from typing import NamedTuple

COMMENT: str = ":comment"
"""The `event` of a comment-only block, from a parser made with `comments=True` (keep-alives such as
OpenRouter's `: OPENROUTER PROCESSING`, to be passed on when they arrive rather than with the next event)."""


class SSEEvent(NamedTuple):
    """One dispatched event. `raw` is the exact bytes it was parsed from, comments included."""

    event: str | None
    data: str
    id: str | None
    raw: bytes


class SSEParser:
    """Incremental SSE parser; one per stream.

    Lines are split on bytes: CR and LF never occur inside a UTF-8 multi-byte sequence, so every complete line
    decodes on its own, and the exact raw bytes of each event are known without re-encoding anything.
    """

    __slots__ = (
        "_buf",
        "_comment",
        "_comments",
        "_data",
        "_event",
        "_event_start",
        "_has_data",
        "_last_id",
        "_pos",
        "retry",
    )

    def __init__(self, comments: bool = False) -> None:
        """`comments`: a block of comment lines is an event of its own (`event` is `COMMENT`, `data` empty);
        otherwise comments are skipped and stay in the next event's raw bytes."""
        self._comments = comments
        self._comment = False  # the current block has a comment line
        self._buf = bytearray()
        self._pos = 0  # how far into _buf lines have been consumed
        self._event_start = 0  # where the current event's raw bytes begin in _buf
        self._data: list[str] = []
        self._event: str | None = None
        self._has_data = False
        self._last_id: str | None = None
        self.retry: int | None = None

    def feed(self, chunk: bytes) -> list[SSEEvent]:
        """Parse `chunk`; return the events it completed."""
        buf = self._buf
        buf += chunk
        events: list[SSEEvent] = []
        pos = self._pos
        n = len(buf)
        if b"\r" not in buf:
            pos = self._feed_lf(buf, pos, events)
        while pos < n:
            lf = buf.find(b"\n", pos)
            cr = buf.find(b"\r", pos, lf if lf != -1 else n)
            if cr != -1:
                if cr + 1 == n:
                    break  # a lone CR at the end may be the first half of CRLF: wait for more
                end, nxt = cr, (cr + 2 if buf[cr + 1] == 0x0A else cr + 1)
            elif lf != -1:
                end, nxt = lf, lf + 1
            else:
                break
            line = buf[pos:end].decode("utf-8", "replace")
            pos = nxt
            if not line:
                event = self._dispatch(bytes(buf[self._event_start : pos]))
                if event is not None:
                    # A block without data (comments, keep-alives) stays in the next event's raw bytes.
                    self._event_start = pos
                    events.append(event)
            else:
                self._field(line)
        # Drop what was consumed so the buffer never grows with the stream.
        if self._event_start:
            del buf[: self._event_start]
            pos -= self._event_start
            self._event_start = 0
        self._pos = pos
        return events

    def _feed_lf(self, buf: bytearray, pos: int, events: list[SSEEvent]) -> int:
        """The common case, LF line ends only: find whole blocks with one search each instead of per line.

        `pos` is always at the start of a line; returns the position of the first unconsumed line.
        """
        n = len(buf)
        while pos < n:
            if buf[pos] == 0x0A:  # a blank line right here: the block it ends was already read
                end = pos + 1
            else:
                blank = buf.find(b"\n\n", pos)
                if blank == -1:
                    return pos  # the block is incomplete; wait for more
                for line in bytes(buf[pos:blank]).split(b"\n"):
                    self._field(line.decode("utf-8", "replace"))
                end = blank + 2
            event = self._dispatch(bytes(buf[self._event_start : end]))
            if event is not None:
                self._event_start = end
                events.append(event)
            pos = end
        return pos

    def _field(self, line: str) -> None:
        if line[0] == ":":
            self._comment = True
            return
        name, sep, value = line.partition(":")
        if sep and value[:1] == " ":
            value = value[1:]
        if name == "data":
            self._data.append(value)
            self._has_data = True
        elif name == "event":
            self._event = value
        elif name == "id":
            if "\0" not in value:
                self._last_id = value
        elif name == "retry" and value.isdigit():
            self.retry = int(value)

    def _dispatch(self, raw: bytes) -> SSEEvent | None:
        comment, self._comment = self._comment, False
        if not self._has_data:
            self._event = None
            return SSEEvent(COMMENT, "", None, raw) if comment and self._comments else None
        event = SSEEvent(self._event, "\n".join(self._data), self._last_id, raw)
        self._data = []
        self._event = None
        self._has_data = False
        return event


def frame(data: str | bytes, event: str | None = None) -> bytes:
    """One SSE event as bytes: optional `event:` line, `data:` line(s), blank line."""
    text = data.decode() if isinstance(data, bytes) else data
    head = f"event: {event}\n" if event else ""
    body = "".join(f"data: {line}\n" for line in text.split("\n"))
    return (head + body + "\n").encode()
