"""The access log: one line per request, formatted cheaply and written off the event loop.

The generic `logging` path (LogRecord, handler locks, a synchronous write to stderr) cost about a fifth of
the worker's CPU under load and blocked the loop on every write. Here a line is one f-string (text) or one
msgspec encode (JSON) handed to a `LineWriter`, whose daemon thread writes them out in batches, at most
`flush_interval` seconds after the first line of each. `close()` has the thread write what is left, so a
graceful shutdown loses no line; it waits for that a bounded time, so a stream that does not drain (a full
pipe nobody reads) cannot hold the shutdown.

The line format is the one `worker.logs` uses for every other logger, with the logger name `trex.access`.
"""

from __future__ import annotations

import time
from typing import TextIO

import msgspec

from .logs import CLOSE_WAIT_SECONDS, CONTROL_ESCAPES, LineWriter, scrub

_encoder = msgspec.json.Encoder()


class _Clock:
    """Timestamps for log lines; the strftime part is computed once per second, not per line."""

    def __init__(self, json: bool) -> None:
        self._json = json
        self._second = -1
        self._prefix = ""

    def now(self) -> str:
        t = time.time()
        second = int(t)
        if second != self._second:
            self._second = second
            self._prefix = (
                time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(t))
                if self._json
                else time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(t))
            )
        ms = int((t - second) * 1000)
        return f"{self._prefix}.{ms:03d}Z" if self._json else f"{self._prefix},{ms:03d}"


class AccessLog:
    """Buffered access lines, flushed by a background thread."""

    def __init__(self, fmt: str, stream: TextIO, flush_interval: float = 0.2) -> None:
        self._json = fmt == "json"
        self._clock = _Clock(self._json)
        self._writer = LineWriter(stream, name="trex-access-log", batch_seconds=flush_interval)

    def log(self, request_id: str, method: str, path: str, status: int, latency_ms: float) -> None:
        """Record one request (cheap: no I/O here)."""
        stamp = self._clock.now()
        if not request_id.startswith("req_"):
            request_id = scrub(request_id)  # client-chosen ids are echoed, but never a credential
        if "_" in path or "-" in path:
            path = scrub(path)  # a credential pasted into a URL path must not reach the log
        if not path.isprintable():  # a decoded %0A must not start a forged line of its own
            path = path.translate(CONTROL_ESCAPES)
        if self._json:
            line = _encoder.encode(
                {
                    "time": stamp,
                    "level": "info",
                    "logger": "trex.access",
                    "message": f"{method} {path} {status} {latency_ms:.2f}ms",
                    "request_id": request_id,
                    "method": method,
                    "path": path,
                    "status": status,
                    "latency_ms": latency_ms,
                }
            ).decode()
        else:
            line = (
                f"{stamp} INFO trex.access {method} {path} {status} {latency_ms:.2f}ms "
                f"request_id={request_id} method={method} path={path} status={status} latency_ms={latency_ms}"
            )
        self._writer.add(line)

    def close(self, wait: float = CLOSE_WAIT_SECONDS) -> None:
        """Have the writer's thread write what is left, waiting for it `wait` seconds at most (see
        `LineWriter.close`; the worker calls it on a thread of its own)."""
        self._writer.close(wait)
