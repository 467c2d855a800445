"""The access log: one line per request, formatted cheaply and written off the event loop.

The generic `logging` path (LogRecord, handler locks, a synchronous write to stderr) cost about a fifth of
the worker's CPU under load and blocked the loop on every write. Here a line is one f-string (text) or one
msgspec encode (JSON) appended to a buffer; a daemon thread writes the buffer out in batches every
`flush_interval` seconds. `close()` has the thread write what is left, so a graceful shutdown loses no line;
it waits for that a bounded time, so a stream that does not drain (a full pipe nobody reads) cannot hold the
shutdown.

The line format is the one `worker.logs` uses for every other logger, with the logger name `trex.access`.
"""

from __future__ import annotations

import select
import threading
import time
from typing import TextIO

import msgspec

from .logs import CONTROL_ESCAPES, scrub

_PIPE_BUF = getattr(select, "PIPE_BUF", 512)  # the largest write to a pipe that is never interleaved

_encoder = msgspec.json.Encoder()

CLOSE_WAIT_SECONDS = 5.0
"""How long `close()` waits for the last lines to be written."""


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
        self._stream = stream
        self._lines: list[str] = []
        self._lock = threading.Lock()
        self._interval = flush_interval
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="trex-access-log", daemon=True)
        self._thread.start()

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
        with self._lock:
            self._lines.append(line)

    def _run(self) -> None:
        while not self._stop.wait(self._interval):
            self.flush()
        self.flush()  # what was logged before close()

    def flush(self) -> None:
        """Write out every buffered line (called by the thread, and at close)."""
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
        self._stream.write("\n".join(lines) + "\n")
        self._stream.flush()

    def close(self, wait: float = CLOSE_WAIT_SECONDS) -> None:
        """Stop the thread, which writes what is left, and wait for it `wait` seconds at most.

        Blocks while it waits: the worker calls it on a thread of its own. If the stream is stuck, the lines
        stay with the (daemon) thread, written should the stream drain before the process ends.
        """
        self._stop.set()
        self._thread.join(wait)
