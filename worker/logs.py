"""Logging: text or JSON lines, one access line per request, and redaction of anything secret.

Redaction is applied twice: headers are redacted by name before they are ever formatted
(`redact_headers`), and every formatted line — message, fields and traceback — is scrubbed of strings that
look like credentials (`scrub`), so a secret that slips into an exception message still never reaches the log.
"""

from __future__ import annotations

import logging
import re
import sys
import time
from collections.abc import Iterable, Mapping
from typing import Any

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


def setup_logging(fmt: str, level: int = logging.INFO, stream: Any = None) -> None:
    """Configure the `trex` logger tree once per process, and aiohttp's: its lines go through the same
    formatter (JSON when asked) and the same scrubbing, never Python's bare last-resort handler."""
    handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    root = logging.getLogger("trex")
    root.handlers[:] = [handler]
    root.setLevel(level)
    root.propagate = False
    server = logging.StreamHandler(stream or sys.stderr)
    server.setFormatter(handler.formatter)
    server.addFilter(_BadRequestLines())
    aiohttp_log = logging.getLogger("aiohttp")
    aiohttp_log.handlers[:] = [server]
    aiohttp_log.setLevel(logging.WARNING)
    aiohttp_log.propagate = False
