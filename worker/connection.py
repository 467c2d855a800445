"""The worker's HTTP connections: aiohttp's request handler, with what an edge server needs and aiohttp lacks.

A request aiohttp cannot parse — a malformed request line or header, a head past its size limits, a broken
`Content-Length` or chunked encoding — is refused with a JSON error in the format of the route it was
calling (`worker.refusals`), not aiohttp's plain-text 400, and the connection is closed. A request whose body
turns out to be broken after its handler started fails that handler's read of the body (`BodyRefused`, which
`jsonio.read_body` turns into the error) instead of leaving it waiting for bytes that will never be parsed.

A request head must arrive within `header_timeout` seconds, counted from the connection's accept for its
first request and from the head's first byte after that (the wait between requests on a kept-alive
connection is aiohttp's keep-alive timeout, not this). A late head is refused with a JSON 408, like an
unparsable one; a connection on which nothing at all arrived is just closed, since there is no request to
answer, and an unsolicited 408 on it could be read by a pooling client as the answer to the request it sends
next. A body that is still arriving may not go `body_idle` seconds without a byte (however long it takes as
a whole, and not counting time the worker itself stopped reading it): past that its handler's read fails
with a 408 for the handler to answer. Responses, however long, are not timed. It costs one timer per
connection, rearmed only for a head or body that arrives in pieces, and no task.

A connection closed on a refusal is closed the way nginx's lingering close does it: the answer is sent, then
a FIN (the client reads the end of the stream), and what the client still sends is read and discarded until
it closes or `lingering_time` passes. Closed at once, a socket with unread bytes is reset, and a reset can
take the answer with it: the client sees "connection reset" instead of its 400 or 408.

aiohttp has no hook for any of this (aio-libs/aiohttp#3287), so `GatewayProtocol` subclasses its
`RequestHandler` and reads a few of its internals: `_messages` (the queue its parser fills, where a parse
error is queued as an `_ErrInfo`), `_request_count`, `_current_request` and `_waiter` (set while it waits for
the next request). tests/test_connection.py pins the behaviour they give.
"""

from __future__ import annotations

import asyncio
import logging
from dataclasses import dataclass
from typing import Any

from aiohttp import web
from aiohttp.http_exceptions import BadHttpMethod, HttpProcessingError
from aiohttp.streams import EMPTY_PAYLOAD, StreamReader
from aiohttp.web_protocol import RequestPayloadError, _ErrInfo

from .errors import GatewayError, RequestTimeoutError
from .refusals import HeadTimeout, head_format, refusal

log = logging.getLogger("trex.server")

_SLACK = 0.001
"""A deadline this close is taken as passed (timers fire up to the clock's resolution early)."""
_HEAD_KEPT = 16 * 1024
"""How much of a request head is kept while it arrives in pieces: enough for the request line, which is all a
refusal needs of it."""


class _LingeringClose:
    """The transport of a connection being refused: everything passes through to `transport` but the first
    `close()`, which shuts down the sending side only and closes `seconds` later (or when the client
    closes, which makes asyncio close it). A second `close()` (the connection lost, a shutdown) closes now."""

    __slots__ = ("_lingering", "_seconds", "_transport")

    def __init__(self, transport: asyncio.Transport, seconds: float) -> None:
        self._transport = transport
        self._seconds = seconds
        self._lingering = False

    def __getattr__(self, name: str) -> Any:
        return getattr(self._transport, name)

    def close(self) -> None:
        transport = self._transport
        if self._lingering or transport.is_closing() or not transport.can_write_eof() or self._seconds <= 0:
            transport.close()
            return
        self._lingering = True
        transport.write_eof()  # after what is buffered is sent
        asyncio.get_running_loop().call_later(self._seconds, transport.close)


@dataclass(frozen=True, slots=True)
class ReadTimeouts:
    """How long the worker waits for what a client sends (seconds)."""

    header: float
    body_idle: float


class BodyRefused(RequestPayloadError):
    """Raised to a handler reading a request body the connection gave up on; carries the client's answer."""

    def __init__(self, error: GatewayError) -> None:
        super().__init__(error.message)
        self.error = error


class GatewayProtocol(web.RequestHandler):
    """One client connection (see the module docstring)."""

    __slots__ = ("_body", "_head", "_head_since", "_last_read", "_timeouts", "_watcher")

    def __init__(self, manager: web.Server, *, timeouts: ReadTimeouts, **kwargs: Any) -> None:
        super().__init__(manager, **kwargs)
        self._timeouts = timeouts
        self._head = b""
        """What arrived of the request head being read (a refused head is kept for its answer)."""
        self._head_since: float | None = None
        """When the head being read began (None while no head is being read)."""
        self._body: StreamReader | None = None
        """The body of the latest request while it is still arriving."""
        self._last_read = 0.0
        """When the last bytes of that body arrived."""
        self._watcher: asyncio.TimerHandle | None = None
        """The connection's one timer: it fires at the earliest deadline, or later and then looks again."""

    def connection_made(self, transport: asyncio.BaseTransport) -> None:
        super().connection_made(transport)
        self._head_began()

    def connection_lost(self, exc: BaseException | None) -> None:
        super().connection_lost(exc)
        if self._watcher is not None:
            self._watcher.cancel()
            self._watcher = None

    def data_received(self, data: bytes) -> None:
        # Runs for every packet: a request whose head (and body) come in one packet, the usual case, costs a
        # few attribute reads here, and the timer is only touched for what arrives in pieces.
        body = self._body
        if body is not None and not body.is_eof():  # bytes of a body still arriving
            self._last_read = self._loop.time()
        else:  # bytes of a request head
            body = self._body = None
            head = self._head
            if not head:
                self._head = data  # no copy
            elif len(head) < _HEAD_KEPT:
                self._head = head + data[:_HEAD_KEPT]
        count = self._request_count
        # Not super(): per packet, a zero-argument super() costs a third of what this method adds.
        web.RequestHandler.data_received(self, data)
        if self._request_count == count or not self._messages:
            if body is None and data and self._head_since is None:
                self._head_began()  # a head arriving in pieces: timed from its first one
            return
        message, payload = self._messages[-1]  # the parser finished a head (or refused one)
        if isinstance(message, _ErrInfo):
            self._refused(message, body)
            return
        self._head, self._head_since = b"", None
        if payload is not EMPTY_PAYLOAD and not payload.is_eof():  # the body is still to come
            self._body = payload
            self._last_read = self._loop.time()
            self._watch(self._last_read + self._timeouts.body_idle)

    def _refused(self, message: _ErrInfo, body: StreamReader | None) -> None:
        self._head_since = None
        if body is not None and not body.is_eof() and isinstance(message.exc, HttpProcessingError):
            # The error is in the body of a request already passed on: its handler answers it.
            self._messages.pop()
            self._refuse_body(body, refusal(message.exc, in_body=True))
        # A refused head is answered by handle_error, from `_head`.

    def _head_began(self) -> None:
        self._head_since = self._loop.time()
        self._watch(self._head_since + self._timeouts.header)

    def _watch(self, when: float) -> None:
        """Make sure the timer fires by `when`."""
        watcher = self._watcher
        if watcher is None or when < watcher.when():
            if watcher is not None:
                watcher.cancel()
            self._watcher = self._loop.call_at(when, self._deadline_passed)

    def _deadline_passed(self) -> None:
        self._watcher = None
        if self.transport is None or self._force_close or self._close:
            return
        if self._head_since is None:
            self._body_deadline_passed()
            return
        due = self._head_since + self._timeouts.header
        if self._loop.time() < due - _SLACK:  # the timer was set for an earlier deadline
            self._watch(due)
        elif self._waiter is None:
            # The connection is busy with an earlier request (this head came pipelined behind it): the head is
            # read once that request is answered, and its time counts from then.
            self._head_began()
        else:
            self._head_too_slow(self._waiter)

    def _head_too_slow(self, waiter: asyncio.Future[None]) -> None:
        self._head_since = None
        if not self._head:
            log.debug("connection closed: no request within %gs", self._timeouts.header)
            self.force_close()
            return
        # Queued like a head aiohttp refused, so it is answered the same way (`handle_error`).
        timeout = HeadTimeout(self._timeouts.header)
        self._messages.append(
            (_ErrInfo(status=timeout.code, exc=timeout, message=timeout.message), EMPTY_PAYLOAD)
        )
        self._request_count += 1
        if not waiter.done():
            waiter.set_result(None)

    def _body_deadline_passed(self) -> None:
        body = self._body
        if body is None or body.is_eof():
            return
        now = self._loop.time()
        if self._reading_paused or self._buffer_paused:
            # The worker stopped reading (its buffers are full): a silence of its own, not the client's.
            self._last_read = now
        due = self._last_read + self._timeouts.body_idle
        if now < due - _SLACK:
            self._watch(due)
            return
        log.info("request body idle for %gs: refused (408)", self._timeouts.body_idle)
        seconds = f"{self._timeouts.body_idle:g}"
        self._refuse_body(
            body, RequestTimeoutError(f"No bytes of the request body arrived for {seconds} seconds.")
        )

    def _refuse_body(self, body: StreamReader, error: GatewayError) -> None:
        """Give up on a request body: a handler reading it gets `error`; nothing more is read."""
        if self._current_request is not None or any(p is body for _, p in self._messages):
            body.set_exception(BodyRefused(error))
        body.feed_eof()  # what is left of aiohttp's lingering read of an unread body ends at once
        self._body = None
        self.close()  # the rest of the stream cannot be parsed: no further request on this connection
        self._linger()

    def _linger(self) -> None:
        """Have this connection, which is answered and then closed, close lingering (module docstring)."""
        transport = self.transport
        if isinstance(transport, asyncio.Transport):
            transport.resume_reading()  # in case the worker had stopped reading: the rest is to be discarded
            lingering: Any = _LingeringClose(transport, self._lingering_time)
            self.transport = lingering

    def handle_error(
        self,
        request: web.BaseRequest,
        status: int = 500,
        exc: BaseException | None = None,
        message: str | None = None,
    ) -> web.StreamResponse:
        """Answer a request aiohttp refused with a JSON error; other failures (none reach here past the edge
        middleware) are left to aiohttp."""
        if not isinstance(exc, HttpProcessingError):
            return super().handle_error(request, status, exc, message)
        error = refusal(exc, self._head)
        if isinstance(exc, HeadTimeout):
            log.info("request head not received within %gs: refused (408)", self._timeouts.header)
        else:
            # A first request that is not HTTP at all: scanners, TLS on the wrong port (aiohttp's view too).
            noise = self._request_count == 1 and isinstance(exc, BadHttpMethod)
            log.log(
                logging.DEBUG if noise else logging.WARNING,
                "unparsable HTTP request refused: %s (%d)",
                exc.__class__.__name__,
                error.status,
            )
        resp = web.Response(
            body=error.body(head_format(self._head)),
            status=error.status,
            headers=error.headers,
            content_type="application/json",
        )
        resp.force_close()
        self._close = True  # what the client still sends is not parsed
        self._linger()
        return resp


class GatewayServer(web.Server):
    """aiohttp's low-level server, making `GatewayProtocol` connections."""

    def __init__(self, handler: Any, *, timeouts: ReadTimeouts, **kwargs: Any) -> None:
        super().__init__(handler, **kwargs)
        self._timeouts = timeouts

    def __call__(self) -> GatewayProtocol:
        return GatewayProtocol(self, loop=self._loop, timeouts=self._timeouts, **self._kwargs)


class GatewayRunner(web.AppRunner):
    """An `AppRunner` serving the app through `GatewayServer`."""

    __slots__ = ("_timeouts",)

    def __init__(self, app: web.Application, *, timeouts: ReadTimeouts, **kwargs: Any) -> None:
        super().__init__(app, **kwargs)
        self._timeouts = timeouts

    async def _make_server(self) -> web.Server:
        made = await super()._make_server()  # the app's start-up, and the server aiohttp would have used
        return GatewayServer(
            made.request_handler,
            request_factory=made.request_factory,
            timeouts=self._timeouts,
            **self._kwargs,
        )
