"""A fake LLM upstream: a real aiohttp server replaying provider-format JSON bodies and SSE transcripts.

One server answers every provider's paths, so a worker can point all its `*_BASE_URL` vars at it:

    OPENAI_BASE_URL      = <url>/v1           (chat/completions, responses, embeddings, models)
    ANTHROPIC_BASE_URL   = <url>              (/v1/messages)
    OPENROUTER_BASE_URL  = <url>/api/v1       (chat/completions)
    LOCAL_BASE_URL       = <url>/local/v1     (chat/completions, models)

By default each endpoint replays the standard transcript in `tests/fixtures/` (SSE when the request body has
`"stream": true`). Tests change that with `set()` (sticky) or `enqueue()` (one-shot, first in first out), and
read what arrived in `received`. Knobs per reply: status, headers, latency before the response, delay between
SSE events, dropping the connection after N events, and pausing after N events until the test says go on.
"""

from __future__ import annotations

import asyncio
import json
import threading
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from aiohttp import web

from .threaded import ThreadedServer

FIXTURES = Path(__file__).resolve().parent.parent / "fixtures"


def fixture_bytes(name: str) -> bytes:
    """The raw bytes of `tests/fixtures/<name>`."""
    return (FIXTURES / name).read_bytes()


def fixture_json(name: str) -> Any:
    """A JSON fixture, decoded."""
    return json.loads(fixture_bytes(name))


def split_sse(raw: bytes) -> list[bytes]:
    """Split an SSE transcript into events, each keeping its terminating blank line (comments included)."""
    text = raw.replace(b"\r\n", b"\n")
    events = [chunk + b"\n\n" for chunk in text.split(b"\n\n") if chunk.strip()]
    return events


@dataclass
class Reply:
    """What the fake sends back for one request."""

    status: int = 200
    body: bytes | None = None
    sse: list[bytes] | None = None
    headers: dict[str, str] = field(default_factory=dict)
    latency: float = 0.0
    chunk_delay: float = 0.0
    drop_after: int | None = None
    """Abort the TCP connection after this many SSE events (a stream cut off mid-way)."""
    pause_after: int | None = None
    """Stop after this many SSE events until `resume` is set. If the test has not set it within 5 s (it was
    waiting for something that never reached it), the connection is aborted, so the test fails at once."""
    resume: threading.Event | None = None
    content_type: str | None = None
    """The Content-Type sent instead of the usual one (`application/json`, or `text/event-stream` for `sse`)."""
    cut_after: int | None = None
    """Send the head (announcing the whole body's length) and this many bytes of `body`, then reset the
    connection: a body cut off mid-way."""
    hang_up: bool = False
    """Close the connection without answering: no status line, no headers."""

    @classmethod
    def json(cls, obj_or_fixture: Any, status: int = 200, **kw: Any) -> Reply:
        data = (
            fixture_bytes(obj_or_fixture)
            if isinstance(obj_or_fixture, str)
            else json.dumps(obj_or_fixture).encode()
        )
        return cls(status=status, body=data, **kw)

    @classmethod
    def stream(cls, fixture: str | bytes, **kw: Any) -> Reply:
        raw = fixture_bytes(fixture) if isinstance(fixture, str) else fixture
        return cls(sse=split_sse(raw), **kw)

    @classmethod
    def unterminated(cls, fixture: str, **kw: Any) -> Reply:
        """A stream transcript up to its finish signal and usage, its terminator (`data: [DONE]`, Anthropic's
        message_stop) left out: the stream just ends after them."""
        events = split_sse(fixture_bytes(fixture))
        assert b"[DONE]" in events[-1] or b"message_stop" in events[-1], fixture
        return cls(sse=events[:-1], **kw)


@dataclass
class Received:
    """One request as the fake saw it."""

    method: str
    path: str
    headers: dict[str, str]
    body: bytes
    query: str = ""
    """The query string exactly as it arrived (still percent-encoded)."""

    @property
    def json(self) -> Any:
        return json.loads(self.body) if self.body else None


# endpoint → (non-stream fixture, stream fixture)
DEFAULTS: dict[str, tuple[str, str | None]] = {
    "/v1/chat/completions": ("openai/chat_text.json", "openai/chat_text.sse"),
    "/v1/responses": ("openai/responses_text.json", "openai/responses_text.sse"),
    "/v1/embeddings": ("openai/embeddings.json", None),
    "/v1/models": ("openai/models.json", None),
    "/v1/messages": ("anthropic/message_text.json", "anthropic/message_text.sse"),
    "/api/v1/chat/completions": ("openrouter/chat_text.json", "openrouter/chat_text.sse"),
    "/api/v1/models": ("openai/models.json", None),
    "/local/v1/chat/completions": ("openai/chat_text.json", "openai/chat_text.sse"),
    "/local/v1/models": ("openai/models.json", None),
}


class FakeUpstream:
    """A provider stand-in. Start with `start()`, point the worker at `url`, stop with `stop()`."""

    def __init__(self) -> None:
        self.received: list[Received] = []
        self._sticky: dict[str, Reply] = {}
        self._queued: dict[str, deque[Reply]] = {}
        self._server = ThreadedServer(self._make_app)
        self.active_streams = 0
        self.streams_completed = 0
        self.streams_aborted = 0
        """Streams whose reader went away before the last event was written (a client disconnect)."""
        self.abandoned = 0
        """Requests whose caller hung up before the reply started (during its latency)."""

    @property
    def url(self) -> str:
        return self._server.url

    def base_urls(self) -> dict[str, str]:
        """The `[vars]` that point a worker's providers at this fake."""
        return {
            "OPENAI_BASE_URL": f"{self.url}/v1",
            "ANTHROPIC_BASE_URL": self.url,
            "OPENROUTER_BASE_URL": f"{self.url}/api/v1",
            "LOCAL_BASE_URL": f"{self.url}/local/v1",
        }

    def start(self) -> FakeUpstream:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()

    def set(self, path: str, reply: Reply) -> None:
        """Answer every request to `path` with `reply` from now on."""
        self._sticky[path] = reply

    def enqueue(self, path: str, *replies: Reply) -> None:
        """Answer the next requests to `path` with these replies, in order, then fall back."""
        self._queued.setdefault(path, deque()).extend(replies)

    def reset(self) -> None:
        self.received.clear()
        self._sticky.clear()
        self._queued.clear()

    def last(self, path: str | None = None) -> Received:
        """The most recent request (to `path`, if given)."""
        for rec in reversed(self.received):
            if path is None or rec.path == path:
                return rec
        raise AssertionError(f"no request received for {path or 'any path'}")

    async def _make_app(self) -> web.Application:
        app = web.Application(client_max_size=64 * 1024 * 1024)
        app.router.add_route("*", "/{tail:.*}", self._handle)
        return app

    def _pick(self, path: str, body: bytes) -> Reply:
        queue = self._queued.get(path)
        if queue:
            return queue.popleft()
        if path in self._sticky:
            return self._sticky[path]
        if path not in DEFAULTS:
            return Reply.json(
                {"error": {"message": f"fake: no route {path}", "type": "invalid_request_error"}}, 404
            )
        plain, streamed = DEFAULTS[path]
        wants_stream = False
        if body:
            try:
                wants_stream = bool(json.loads(body).get("stream"))
            except (ValueError, AttributeError):
                wants_stream = False
        if wants_stream and streamed:
            return Reply.stream(streamed)
        return Reply.json(plain)

    async def _handle(self, request: web.Request) -> web.StreamResponse:
        body = await request.read()
        self.received.append(
            Received(
                request.method, request.path, dict(request.headers), body, request.rel_url.raw_query_string
            )
        )
        reply = self._pick(request.path, body)
        if reply.latency:
            try:
                await asyncio.sleep(reply.latency)
            except asyncio.CancelledError:  # the caller hung up (this server cancels handlers on that)
                self.abandoned += 1
                raise
        if reply.hang_up:
            assert request.transport is not None
            request.transport.abort()
            raise asyncio.CancelledError  # nothing may be written after the abort
        if reply.sse is None and reply.cut_after is not None:
            body = reply.body or b""
            cut = web.StreamResponse(status=reply.status, headers=reply.headers)
            cut.content_type = reply.content_type or "application/json"
            cut.content_length = len(body)
            await cut.prepare(request)
            await cut.write(body[: reply.cut_after])
            await asyncio.sleep(0.05)  # let the bytes go before the reset
            assert request.transport is not None
            request.transport.abort()
            return cut
        if reply.sse is None:
            return web.Response(
                status=reply.status,
                body=reply.body or b"",
                headers=reply.headers,
                content_type=reply.content_type or "application/json",
            )
        resp = web.StreamResponse(status=reply.status, headers=reply.headers)
        resp.content_type = reply.content_type or "text/event-stream"
        resp.headers["Cache-Control"] = "no-cache"
        await resp.prepare(request)
        self.active_streams += 1
        try:
            for i, event in enumerate(reply.sse):
                if reply.drop_after is not None and i >= reply.drop_after:
                    assert request.transport is not None
                    request.transport.abort()
                    return resp
                await resp.write(event)
                if reply.pause_after is not None and i + 1 == reply.pause_after:
                    assert reply.resume is not None and request.transport is not None
                    if not await asyncio.to_thread(reply.resume.wait, 5.0):
                        request.transport.abort()
                        return resp
                if reply.chunk_delay and i + 1 < len(reply.sse):  # between events, not after the last
                    await asyncio.sleep(reply.chunk_delay)
            await resp.write_eof()
            self.streams_completed += 1
        except ConnectionResetError:
            self.streams_aborted += 1
        except asyncio.CancelledError:  # the reader hung up while this waited between events
            self.streams_aborted += 1
            raise
        finally:
            self.active_streams -= 1
        return resp
