"""The worker's connections as a raw-socket client sees them: requests aiohttp cannot parse are refused in
JSON, in the format of the route they were calling, and the connection is closed; a request head that does not
arrive within `[local] header_timeout_seconds` is a 408, and a connection that sends nothing is closed; a body
that goes `body_idle_timeout_seconds` without a byte is a 408 too."""

from __future__ import annotations

import asyncio
import contextlib
import json
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from typing import Any

import openai
import pytest
from aiohttp import web

from tests.conftest import MASTER_KEY, GatewaySetup, with_key
from tests.fakes.upstream import FakeUpstream
from tests.fakes.upstream import Reply as UpstreamReply
from tests.harness import InProcessWorker
from worker.jsonio import json_response, read_body

TOKEN = "trex_" + "Q" * 43


@dataclass
class Reply:
    """One response read off a raw connection, and whether the server then closed it."""

    status: int
    headers: dict[str, str]
    body: bytes
    closed: bool

    def json(self) -> Any:
        assert self.headers["content-type"].startswith("application/json"), self.headers
        return json.loads(self.body)


async def exchange(url: str, *parts: bytes, pause: float = 0.2, wait: float = 5.0) -> Reply:
    """Send `parts` on one connection, `pause` seconds apart; read one response and wait up to `wait` seconds
    for the server to close the connection."""
    reader, writer = await connect(url)
    try:
        return await send_and_read(reader, writer, *parts, pause=pause, wait=wait)
    finally:
        await close(writer)


async def close(writer: asyncio.StreamWriter) -> None:
    """Close a test connection and wait until it is closed: a socket whose close was only scheduled when the
    test's event loop ends stays open until garbage collection, which reports it in whatever test runs then."""
    writer.close()
    with contextlib.suppress(Exception):
        await writer.wait_closed()


async def connect(url: str) -> tuple[asyncio.StreamReader, asyncio.StreamWriter]:
    host, port = url.removeprefix("http://").split(":")
    return await asyncio.open_connection(host, int(port))


async def send_and_read(
    reader: asyncio.StreamReader,
    writer: asyncio.StreamWriter,
    *parts: bytes,
    pause: float = 0.2,
    wait: float = 5.0,
    until_closed: bool = True,
) -> Reply:
    """Send `parts` `pause` seconds apart, stopping early if a response begins; read one response and, with
    `until_closed`, wait up to `wait` seconds for the server to close the connection."""
    head_read = asyncio.ensure_future(reader.readuntil(b"\r\n\r\n"))
    for i, part in enumerate(parts):
        if i:
            await asyncio.wait([head_read], timeout=pause)
        if head_read.done():
            break
        writer.write(part)
        await writer.drain()
    head = await asyncio.wait_for(head_read, wait)
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in lines[1:] if ln)}
    body = await asyncio.wait_for(reader.readexactly(int(headers.get("content-length", "0"))), wait)
    closed = False
    if until_closed:
        with contextlib.suppress(TimeoutError):
            closed = await asyncio.wait_for(reader.read(1), wait) == b""
    return Reply(int(lines[0].split()[1]), headers, body, closed)


def _openai_error(reply: Reply, status: int, code: str) -> str:
    assert reply.status == status, reply
    error = reply.json()["error"]
    assert set(error) == {"message", "type", "code", "param"}
    assert error["type"] == "invalid_request_error" and error["param"] is None and error["code"] == code
    return str(error["message"])


def _anthropic_error(reply: Reply, status: int) -> str:
    assert reply.status == status, reply
    doc = reply.json()
    assert doc["type"] == "error" and doc["error"]["type"] in ("invalid_request_error", "request_too_large")
    return str(doc["error"]["message"])


HOST = b"Host: x\r\n"


@pytest.mark.parametrize(
    ("request_bytes", "status", "code", "needle"),
    [
        (b"G@T /v1/models HTTP/1.1\r\n" + HOST + b"\r\n", 400, "malformed_request", "method"),
        (b"\x16\x03\x01\x02\x00\x01\x00\x01\xfc\x03\x03", 400, "malformed_request", "HTTPS"),
        (b"GET /v1/models HTTP/9.9\r\n" + HOST + b"\r\n", 400, "malformed_request", "HTTP version"),
        (b"GET /v1/models HTTP/1.1\r\n\r\n", 400, "malformed_request", "Host"),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\n" + HOST + b"Content-Length: abc\r\n\r\n",
            400,
            "malformed_request",
            "Content-Length",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\n"
            + HOST
            + b"Content-Length: 1\r\nContent-Length: 2\r\n\r\n",
            400,
            "malformed_request",
            "Duplicate",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\n" + HOST + b"Transfer-Encoding: chunked\r\n\r\nzz\r\n",
            400,
            "malformed_request",
            "chunk size",
        ),
        (
            b"POST /v1/chat/completions HTTP/1.1\r\n"
            + HOST
            + b"Content-Length: 99999999999999999999999\r\n\r\n",
            413,
            "request_too_large",
            "overflow",
        ),
        (
            b"GET /v1/models HTTP/1.1\r\n" + HOST + b"X-Big: " + b"a" * 9000 + b"\r\n\r\n",
            431,
            "request_headers_too_large",
            "8190",
        ),
        (
            b"GET /v1/models HTTP/1.1\r\n"
            + HOST
            + b"".join(b"X-%d: a\r\n" % i for i in range(200))
            + b"\r\n",
            431,
            "request_headers_too_large",
            "Too many headers",
        ),
        (b"GET /v1/" + b"a" * 9000 + b" HTTP/1.1\r\n" + HOST + b"\r\n", 414, "uri_too_long", "request line"),
        (b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n", 400, "malformed_request", "HTTP/2"),
    ],
)
async def test_a_request_aiohttp_cannot_parse_is_refused_in_json_and_the_connection_closed(
    worker: InProcessWorker, request_bytes: bytes, status: int, code: str, needle: str
) -> None:
    """aiohttp answered these with a plain-text 400 (its parser's message, quoting the request's bytes)."""
    reply = await exchange(worker.url, request_bytes)
    assert needle in _openai_error(reply, status, code)
    assert reply.closed and reply.headers.get("connection", "close").lower() == "close"


async def test_on_the_messages_api_the_refusal_is_anthropic_shaped_and_quotes_no_credential(
    worker: InProcessWorker,
) -> None:
    bad_header = f"POST /v1/messages HTTP/1.1\r\nHost: x\r\nx-api-key: {TOKEN}\x01\r\n\r\n".encode()
    reply = await exchange(worker.url, bad_header)
    assert "header" in _anthropic_error(reply, 400)
    assert TOKEN.encode() not in reply.body and b"QQQQ" not in reply.body and reply.closed
    # The route is known from a request line that came in an earlier packet than the header aiohttp refused.
    reply = await exchange(worker.url, b"POST /v1/messages HTTP/1.1\r\nHost: x\r\n", b"X-A: a\x7f\r\n\r\n")
    _anthropic_error(reply, 400)
    too_many = b"".join(b"X-%d: a\r\n" % i for i in range(200))
    reply = await exchange(
        worker.url, b"POST /v1/messages/count_tokens HTTP/1.1\r\n" + HOST + too_many + b"\r\n"
    )
    _anthropic_error(reply, 431)
    reply = await exchange(
        worker.url, b"POST /v1/messages HTTP/1.1\r\n" + HOST + b"Content-Length: 1e3\r\n\r\n"
    )
    _anthropic_error(reply, 400)
    # The worker serves the next connection as usual.
    reply = await exchange(worker.url, b"GET /health HTTP/1.1\r\n" + HOST + b"\r\n", wait=0.5)
    assert reply.status == 200 and reply.json()["status"] == "ok" and not reply.closed


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_body_whose_chunked_framing_breaks_midway_is_a_json_400_not_a_hang(
    gateway: GatewaySetup, path: str
) -> None:
    """The head was fine and the handler was reading the body when a broken chunk size arrived: aiohttp's
    parser stopped, the handler waited for the rest of the body until the client gave up."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {gateway.key}\r\n"
        "Content-Type: application/json\r\nTransfer-Encoding: chunked\r\n\r\n"
    ).encode()
    before = len(gateway.fake.received)
    reply = await exchange(gateway.worker.url, head, b'8\r\n{"model"\r\n', b"zz\r\n", wait=3)
    message = (
        _anthropic_error(reply, 400)
        if path == "/v1/messages"
        else _openai_error(reply, 400, "malformed_request")
    )
    assert "chunk size" in message
    assert reply.closed and reply.headers["x-request-id"].startswith("req_")
    assert len(gateway.fake.received) == before  # nothing was forwarded


async def _keep_sending(writer: asyncio.StreamWriter, seconds: float) -> None:
    """What a client still uploading does after the worker has answered and closed: it keeps sending."""
    for _ in range(10):
        writer.write(b"x" * 4096)
        await writer.drain()
        await asyncio.sleep(seconds / 10)


async def _read_refusal(reader: asyncio.StreamReader) -> Reply:
    """The answer that is waiting, read only now, and whether the worker then ended the stream (a FIN, not a
    reset: a reset fails the read, as it loses an answer not yet read)."""
    head = (await asyncio.wait_for(reader.readuntil(b"\r\n\r\n"), 5)).decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, v in (ln.split(":", 1) for ln in head[1:] if ln)}
    body = await asyncio.wait_for(reader.readexactly(int(headers["content-length"])), 5)
    closed = await asyncio.wait_for(reader.read(1), 5) == b""
    return Reply(int(head[0].split()[1]), headers, body, closed)


@pytest.mark.parametrize("refused", ["malformed head", "broken body"])
async def test_a_client_still_sending_when_it_is_refused_reads_its_answer_whole(
    gateway: GatewaySetup, refused: str
) -> None:
    """The worker closed a refused connection at once: a socket closed with bytes unread is reset, and the
    client lost the answer to "connection reset". Now it sends the answer and a FIN, and discards what the
    client still sends until the client closes (or `lingering_time` passes)."""
    reader, writer = await connect(gateway.worker.url)
    try:
        if refused == "malformed head":
            writer.write(b"G@T /v1/models HTTP/1.1\r\n" + HOST + b"\r\n")
        else:
            writer.write(
                b"POST /v1/chat/completions HTTP/1.1\r\n"
                + HOST
                + f"Authorization: Bearer {gateway.key}\r\nTransfer-Encoding: chunked\r\n\r\n".encode()
                + b'8\r\n{"model"\r\n'
            )
            await writer.drain()
            await asyncio.sleep(0.2)  # the handler is reading the body
            writer.write(b"zz\r\n")
        await writer.drain()
        await asyncio.sleep(0.1)  # answered and closed by now
        await _keep_sending(writer, 0.3)  # well within the worker's lingering time (1 s)
        reply = await _read_refusal(reader)
    finally:
        await close(writer)
    _openai_error(reply, 400, "malformed_request")
    assert reply.closed


@pytest.fixture
def quick(make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream) -> Iterator[GatewaySetup]:
    """A worker that waits one second for a request head and for each piece of a body, with a proxy key."""
    local = {"header_timeout_seconds": 1, "body_idle_timeout_seconds": 1}
    worker = make_worker(local=local, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    setup = with_key(worker, fake_upstream)
    yield setup
    setup.close()


def _trickle(first: bytes, piece: bytes, count: int) -> list[bytes]:
    return [first, *([piece] * count)]


async def test_a_connection_that_sends_nothing_is_closed_after_the_header_timeout(
    quick: GatewaySetup,
) -> None:
    """It was kept for aiohttp's keep-alive timeout (an hour), holding a socket per idle connection."""
    started = time.monotonic()
    reader, writer = await connect(quick.worker.url)
    try:
        assert await asyncio.wait_for(reader.read(), 5) == b""  # closed, with nothing to answer
    finally:
        await close(writer)
    assert 0.9 <= time.monotonic() - started < 4


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_head_sent_too_slowly_is_a_408_in_the_route_format(quick: GatewaySetup, path: str) -> None:
    """A client that keeps adding header lines, one at a time, never finishing its head: aiohttp read it as
    long as it kept coming."""
    started = time.monotonic()
    parts = _trickle(f"POST {path} HTTP/1.1\r\nHost: x\r\n".encode(), b"X-Slow: 1\r\n", 20)
    reply = await exchange(quick.worker.url, *parts, pause=0.25)
    elapsed = time.monotonic() - started
    assert 0.9 <= elapsed < 4 and reply.status == 408 and reply.closed
    if path == "/v1/messages":
        assert "not received within 1 seconds" in _anthropic_error(reply, 408)
    else:
        assert "not received within 1 seconds" in _openai_error(reply, 408, "request_timeout")


async def test_a_kept_alive_connection_idles_freely_and_only_its_next_head_is_timed(
    quick: GatewaySetup,
) -> None:
    """Between requests only aiohttp's keep-alive timeout applies; the next head's time starts at its first
    byte."""
    reader, writer = await connect(quick.worker.url)
    try:
        health = b"GET /health HTTP/1.1\r\nHost: x\r\n\r\n"
        first = await send_and_read(reader, writer, health, until_closed=False)
        await asyncio.sleep(1.5)  # longer than the header timeout
        second = await send_and_read(reader, writer, health, until_closed=False)
        assert first.status == second.status == 200
        await asyncio.sleep(1.5)
        started = time.monotonic()
        parts = _trickle(b"GET /v1/models HTTP/1.1\r\n", b"X-Slow: 1\r\n", 20)
        third = await send_and_read(reader, writer, *parts, pause=0.25)
        assert 0.9 <= time.monotonic() - started < 4
        _openai_error(third, 408, "request_timeout")
        assert third.closed
    finally:
        await close(writer)


async def test_a_slow_body_that_keeps_coming_and_a_long_stream_are_not_cut_off(quick: GatewaySetup) -> None:
    """While a head trickled in for longer than the header timeout is refused, a body trickled in over the
    same time, never pausing for the body idle timeout, is read and answered, and a stream that lasts longer
    than both is delivered whole."""
    quick.fake.set("/v1/chat/completions", UpstreamReply.stream("openai/chat_text.sse", chunk_delay=0.2))
    payload = json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hello there"}]})
    body = payload.encode()
    head = (
        f"POST /v1/compress HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {quick.key}\r\n"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode()
    pieces = [body[i : i + 20] for i in range(0, len(body), 20)]  # five pieces, 0.6 s apart

    async def slow_upload() -> Reply:
        reader, writer = await connect(quick.worker.url)
        try:
            return await send_and_read(reader, writer, head, *pieces, pause=0.6, until_closed=False)
        finally:
            await close(writer)

    async def long_stream() -> tuple[str, float]:
        started = time.monotonic()
        client = openai.AsyncOpenAI(api_key=quick.key, base_url=quick.worker.url + "/v1", max_retries=0)
        async with client:
            stream = await client.chat.completions.create(
                model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], stream=True
            )
            text = "".join([c.choices[0].delta.content or "" async for c in stream if c.choices])
        return text, time.monotonic() - started

    slow_head = _trickle(b"POST /v1/compress HTTP/1.1\r\n", b"X-Slow: 1\r\n", 20)
    uploaded, (streamed, stream_time), refused = await asyncio.gather(
        slow_upload(), long_stream(), exchange(quick.worker.url, *slow_head, pause=0.25)
    )
    assert uploaded.status == 200, uploaded
    assert uploaded.json()["messages"][0]["content"] == "hello there"
    assert stream_time > 2 and streamed  # every event, over more than twice the header timeout
    assert refused.status == 408 and refused.closed


@pytest.mark.parametrize("path", ["/v1/chat/completions", "/v1/messages"])
async def test_a_body_that_stops_arriving_is_a_408_from_its_handler(quick: GatewaySetup, path: str) -> None:
    """Content-Length promised 200 bytes and 20 came: the handler waited for the rest until the client left."""
    head = (
        f"POST {path} HTTP/1.1\r\nHost: x\r\nx-api-key: {quick.key}\r\n"
        "Content-Type: application/json\r\nContent-Length: 200\r\n\r\n"
    ).encode()
    before = len(quick.fake.received)
    started = time.monotonic()
    reply = await exchange(quick.worker.url, head, b'{"model":"gpt-4o-mini"', wait=4)
    assert 0.9 <= time.monotonic() - started < 4
    message = (
        _anthropic_error(reply, 408)
        if path == "/v1/messages"
        else _openai_error(reply, 408, "request_timeout")
    )
    assert "request body" in message
    assert reply.closed and reply.headers["x-request-id"].startswith("req_")
    assert len(quick.fake.received) == before


async def reads_late(request: web.Request) -> web.StreamResponse:
    await asyncio.sleep(2)
    return json_response({"bytes": len(await read_body(request))})


async def test_a_body_the_worker_is_not_reading_yet_is_not_counted_as_idle(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    """The client sent its whole body at once; the worker stopped reading it (its buffer full) until the
    handler got to it two seconds later. That silence is the worker's, not the client's."""
    worker = make_worker(
        local={"body_idle_timeout_seconds": 1}, extra_routes=[("POST", "/_test/late", reads_late)]
    )
    body = b"x" * 600_000
    head = f"POST /_test/late HTTP/1.1\r\nHost: x\r\nContent-Length: {len(body)}\r\n\r\n".encode()
    reader, writer = await connect(worker.url)
    try:
        reply = await send_and_read(reader, writer, head + body, until_closed=False)
    finally:
        await close(writer)
    assert reply.status == 200 and reply.json() == {"bytes": len(body)}
