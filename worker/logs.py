"""Logging: text or JSON lines, one access line per request, and redaction of anything secret.

Redaction is applied twice: headers are redacted by name before they are ever formatted
(`redact_headers`), and every formatted line — message, fields and traceback — is scrubbed of strings that
look like credentials (`scrub`), so a secret that slips into an exception message still never reaches the log.

A serving process writes its lines from a thread of their own (`LineWriter`): a write to stderr blocks while
the pipe is full (a log shipper that stopped reading), and done on the event loop that stalled every request,
and a SIGTERM's shutdown at its first log line.
"""

from __future__ import annotations

import logging
import re
import select
import sys
import threading
import time
import weakref
from collections.abc import Iterable, Iterator, Mapping
from contextlib import contextmanager
from typing import Any, TextIO

import msgspec
from aiohttp.http_exceptions import HttpProcessingError

REDACTED = "[REDACTED]"
_SENSITIVE_HEADER_RE = re.compile(
    r"(^authorization$|^proxy-authorization$|^cookie$|^set-cookie$|-key$|^x-api-key$)", re.I
)
# Bearer tokens, OpenAI/Anthropic/OpenRouter keys, our proxy keys and agent secrets.
_SECRET_VALUE_RE = re.compile(
    r"(Bearer\s+)[A-Za-z0-9._~+/:=-]{8,}|\b(?:sk|trex|tsk|rk|pk)[-_][A-Za-z0-9_-]{12,}",
)
_encoder = msgspec.json.Encoder(enc_hook=str)
_PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # the largest write to a pipe that is never interleaved

CLOSE_WAIT_SECONDS = 5.0
"""How long closing a `LineWriter` waits for its last lines to be written."""

_stuck: weakref.WeakSet[Any] = weakref.WeakSet()
"""Streams a `LineWriter`'s close found not draining in its wait: another writer's close on the same stream
(the access log's and the serving logs' both write to stderr) does not wait for it a second time. The mark
goes when the writer that set it has written its last lines."""

CONTROL_ESCAPES = {c: f"\\x{c:02x}" for c in (*range(32), 127)}
"""Control characters, written as `\\xNN` escapes in text lines."""


def elapsed_ms(since: float) -> float:
    """Milliseconds from the `time.perf_counter()` reading `since` to now, to two decimals (as latencies are
    logged and recorded). Rounded with integer arithmetic: `round(x, 2)` costs several times as much (it
    goes through a decimal conversion), and runs several times per request."""
    return int((time.perf_counter() - since) * 100_000 + 0.5) / 100


# Attributes every LogRecord has; anything else passed via `extra=` is a structured field.
_RESERVED = frozenset(vars(logging.LogRecord("", 0, "", 0, "", None, None))) | {"message", "asctime"}


def redact_headers(headers: Iterable[tuple[str, str]] | Mapping[str, str]) -> dict[str, str]:
    """Headers with credentials replaced by a marker, safe to log."""
    items = headers.items() if isinstance(headers, Mapping) else headers
    return {k: (REDACTED if _SENSITIVE_HEADER_RE.search(k) else v) for k, v in items}


def scrub(text: str) -> str:
    """`text` with anything that looks like a credential replaced by a marker."""
    return _SECRET_VALUE_RE.sub(lambda m: (m.group(1) or "") + REDACTED, text)


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message and structured fields."""

    def format(self, record: logging.LogRecord) -> str:
        doc: dict[str, Any] = {
            "time": time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(record.created))
            + f".{int(record.msecs):03d}Z",
            "level": record.levelname.lower(),
            "logger": record.name,
            "message": record.getMessage(),
        }
        for key, value in record.__dict__.items():
            if key not in _RESERVED:
                doc[key] = value
        if record.exc_info:
            doc["exc"] = self.formatException(record.exc_info)
        return scrub(_encoder.encode(doc).decode())


class TextFormatter(logging.Formatter):
    """`time level logger message key=value …`."""

    def __init__(self) -> None:
        super().__init__("%(asctime)s %(levelname)s %(name)s %(message)s")

    def format(self, record: logging.LogRecord) -> str:
        message = record.getMessage()
        if not message.isprintable():  # a request path with a decoded %0A must not forge a line of its own
            record.msg, record.args = message.translate(CONTROL_ESCAPES), None
        line = super().format(record)
        extras = [f"{k}={v}" for k, v in record.__dict__.items() if k not in _RESERVED]
        if extras:
            head, sep, tail = line.partition("\n")
            line = head + " " + " ".join(extras) + sep + tail
        return scrub(line)


class _BadRequestLines(logging.Filter):
    """aiohttp logs a request it cannot parse with a traceback holding the raw request bytes (credentials
    included): one warning line naming the error instead (its text scrubbed like every line)."""

    def filter(self, record: logging.LogRecord) -> bool:
        exc = record.exc_info[1] if record.exc_info else None
        if isinstance(exc, HttpProcessingError):
            record.msg, record.args = "unparsable HTTP request refused: %s", (exc.__class__.__name__,)
            record.exc_info = record.exc_text = None
            record.levelno, record.levelname = logging.WARNING, "WARNING"
        return True


class LineWriter:
    """Lines written to a stream by a daemon thread: whoever adds one (the event loop) never waits on the
    stream.

    The thread wakes when a line arrives; with `batch_seconds` it then waits that long to write the lines that
    came meanwhile in the same writes (the access log: one line per request). `close()` has the thread write
    what is left, so a graceful shutdown loses no line; it waits for that a bounded time, so a stream that
    does not drain (a full pipe nobody reads) cannot hold the shutdown.
    """

    def __init__(self, stream: TextIO, name: str, batch_seconds: float = 0.0) -> None:
        self._stream = stream
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._batch = batch_seconds
        self._wake = threading.Event()
        self._closed = threading.Event()
        self._marked = False
        """Whether its close found the stream stuck (and marked it)."""
        self._thread = threading.Thread(target=self._run, name=name, daemon=True)
        self._thread.start()

    def add(self, line: str) -> None:
        """Queue one line (cheap: no I/O here). Lines are written in the order they were added."""
        with self._lock:
            self._lines.append(line)
            first = len(self._lines) == 1
        if first:  # the thread took everything before: it may be asleep
            self._wake.set()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._batch:
                self._closed.wait(self._batch)
            # Cleared before the lines are taken: a line added after that sets it again.
            self._wake.clear()
            self._flush()
            if self._closed.is_set():
                self._flush()  # what was added before close()
                if self._marked:  # it drained: later closes wait for their lines again
                    _stuck.discard(self._stream)
                return

    def _flush(self) -> None:
        with self._lock:
            lines, self._lines = self._lines, []
        # In pieces of whole lines of at most PIPE_BUF bytes, each written at once: with `--workers` every
        # process writes to the same pipe, and only a write that small is never interleaved with another's
        # (one write of a whole batch had other processes' lines spliced into it).
        chunk: list[str] = []
        size = 0
        for line in lines:
            n = len(line.encode()) + 1
            if chunk and size + n > _PIPE_BUF:
                self._write(chunk)
                chunk, size = [], 0
            chunk.append(line)
            size += n
        if chunk:
            self._write(chunk)

    def _write(self, lines: list[str]) -> None:
        try:
            self._stream.write("\n".join(lines) + "\n")
            self._stream.flush()
        except (OSError, ValueError):  # the stream is gone (closed pipe, closed file): nowhere to write
            pass

    def close(self, wait: float = CLOSE_WAIT_SECONDS) -> None:
        """Stop the thread, which writes what is left, and wait for it `wait` seconds at most.

        Blocks while it waits: not to be called on the event loop. If the stream is stuck, the lines stay with
        the (daemon) thread, written should the stream drain before the process ends; a close of another
        writer on that stream meanwhile does not wait at all.
        """
        self._closed.set()
        self._wake.set()
        if self._stream in _stuck:
            return
        self._thread.join(wait)
        if self._thread.is_alive():
            self._marked = True
            _stuck.add(self._stream)
            if not self._thread.is_alive():  # it ended (and cleared the mark) just before the mark was set
                _stuck.discard(self._stream)


class LineHandler(logging.Handler):
    """A logging handler that formats a record on the caller's thread (formatter, filters and scrubbing as
    usual) and leaves the writing to a `LineWriter`."""

    def __init__(self, writer: LineWriter) -> None:
        super().__init__()
        self._writer = writer

    def emit(self, record: logging.LogRecord) -> None:
        try:
            self._writer.add(self.format(record))
        except Exception:  # noqa: BLE001 - as logging's own handlers do: reported, never raised to the caller
            self.handleError(record)


def setup_logging(
    fmt: str, level: int = logging.INFO, stream: Any = None, writer: LineWriter | None = None
) -> None:
    """Configure the `trex` logger tree once per process, and aiohttp's: its lines go through the same
    formatter (JSON when asked) and the same scrubbing, never Python's bare last-resort handler.

    Lines are written at once to `stream` (stderr), or with `writer` by its thread (`serving_logs`)."""

    def make_handler() -> logging.Handler:
        return LineHandler(writer) if writer is not None else logging.StreamHandler(stream or sys.stderr)

    handler = make_handler()
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("trex")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    server = make_handler()  # the same writer: one stream of lines, in the order they were logged
    server.setFormatter(handler.formatter)
    server.addFilter(_BadRequestLines())
    aiohttp_log = logging.getLogger("aiohttp")
    aiohttp_log.handlers[:] = [server]
    aiohttp_log.setLevel(logging.WARNING)
    aiohttp_log.propagate = False


@contextmanager
def serving_logs(fmt: str) -> Iterator[None]:
    """Logging for a serving process: no write to stderr on the event loop.

    On the way out — a graceful stop or an exception escaping the server — the lines logged are written before
    anything else reaches stderr (an error message, a traceback), waiting for that a bounded time; whatever is
    logged afterwards (nothing serves any more) is written at once again.
    """
    writer = LineWriter(sys.stderr, name="trex-log")
    setup_logging(fmt, writer=writer)
    try:
        yield
    finally:
        writer.close()
        setup_logging(fmt)
