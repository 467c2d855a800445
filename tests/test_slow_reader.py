"""A client that stops reading a streamed response does not hold it, and the upstream stream behind it, for
good: once its buffers are full, a write that waits longer than `[local] client_read_timeout_seconds` cuts
its connection, and the upstream is let go."""

from __future__ import annotations

import asyncio
import json
import socket
import time
from collections.abc import Awaitable, Callable

from aiohttp import web
from aiohttp.base_protocol import BaseProtocol

from tests.conftest import MASTER_KEY, with_key
from tests.fakes.upstream import FakeUpstream, Reply
from tests.harness import InProcessWorker
from worker.proxy import _Client, _end, _write

EVENTS = 2000
PIECE = "x" * 32_000


def _chunk() -> bytes:
    chunk = {
        "id": "chatcmpl-big",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": PIECE}, "finish_reason": None}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _big_stream() -> Reply:
    """About 64 MB of content deltas: more than every socket buffer between the upstream, the worker and a
    client can take (Linux grows a loopback receive buffer up to `tcp_rmem`'s maximum, 32 MB here; 13 MB once
    fitted and the upstream finished its stream before the worker let it go). One chunk object, repeated."""
    finish = {
        "id": "chatcmpl-big",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    events = [_chunk()] * EVENTS
    return Reply(sse=[*events, f"data: {json.dumps(finish)}\n\n".encode(), b"data: [DONE]\n\n"])


def _read_all(sock: socket.socket, within: float) -> bytes:
    sock.settimeout(within)
    received = bytearray()
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        try:
            data = sock.recv(1 << 20)
        except (TimeoutError, ConnectionResetError):
            break
        if not data:
            break
        received += data
    return bytes(received)


def test_a_client_that_stops_reading_a_stream_is_cut_off_and_the_upstream_let_go(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    worker = make_worker(local={"client_read_timeout_seconds": 1}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    setup = with_key(worker, fake_upstream)
    fake_upstream.set("/v1/chat/completions", _big_stream())
    body = json.dumps(
        {"model": "gpt-4o-mini", "stream": True, "messages": [{"role": "user", "content": "a long answer"}]}
    ).encode()
    host, port = worker.url.removeprefix("http://").split(":")
    sock = socket.socket()
    sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)  # a client that reads nothing fills up fast
    sock.connect((host, int(port)))
    try:
        sock.sendall(
            b"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            + f"Authorization: Bearer {setup.key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        time.sleep(3.0)  # reading nothing, for three times the timeout
        received = _read_all(sock, 5.0)
    finally:
        sock.close()
        setup.close()
    assert received.startswith(b"HTTP/1.1 200")
    assert b"data: [DONE]" not in received  # cut off, not delivered whole once the client read again
    assert received.count(PIECE.encode()) < EVENTS
    deadline = time.monotonic() + 5
    while fake_upstream.active_streams and time.monotonic() < deadline:
        time.sleep(0.05)
    assert fake_upstream.active_streams == 0 and fake_upstream.streams_completed == 0


async def _recv(sock: socket.socket, n: int) -> None:
    loop = asyncio.get_running_loop()
    got = 0
    while got < n:
        data = await loop.sock_recv(sock, min(4096, n - got))
        if not data:
            return
        got += len(data)


async def _served(scenario: Callable[[web.StreamResponse, _Client, socket.socket], Awaitable[str]]) -> str:
    """Run `scenario` in a real aiohttp handler, against a client socket that reads only when told to; its
    result, or 'hung' if it was still waiting 8 s on (the timeout is 1 s)."""
    client_sock = socket.socket()
    client_sock.setsockopt(socket.SOL_SOCKET, socket.SO_RCVBUF, 4096)
    client_sock.setblocking(False)
    outcome: list[str] = []

    async def handler(request: web.Request) -> web.StreamResponse:
        assert request.transport is not None
        request.transport.get_extra_info("socket").setsockopt(socket.SOL_SOCKET, socket.SO_SNDBUF, 4096)
        out = web.StreamResponse()
        await out.prepare(request)
        assert isinstance(request.protocol, BaseProtocol)
        client = _Client(
            request.transport, request.protocol, 1.0, request.transport.get_write_buffer_limits()[1]
        )
        try:
            outcome.append(await asyncio.wait_for(scenario(out, client, client_sock), 8))
        except TimeoutError:
            outcome.append("hung")
        request.transport.abort()
        return out

    app = web.Application()
    app.router.add_get("/", handler)
    runner = web.AppRunner(app)
    await runner.setup()
    site = web.TCPSite(runner, "127.0.0.1", 0)
    await site.start()
    try:
        loop = asyncio.get_running_loop()
        await loop.sock_connect(client_sock, ("127.0.0.1", runner.addresses[0][1]))
        await loop.sock_sendall(client_sock, b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        for _ in range(240):  # the scenario's answer, or 12 s
            if outcome:
                break
            await asyncio.sleep(0.05)
    finally:
        client_sock.close()
        await runner.cleanup()
    return outcome[0] if outcome else "no answer"


async def test_a_client_that_reads_slowly_and_then_stops_is_cut_off_too() -> None:
    """Once writes pause, they stay paused until the buffer drains to its low-water mark: a client that
    reads a little keeps it between the marks, where a small write can still wait on it."""

    async def scenario(out: web.StreamResponse, client: _Client, sock: socket.socket) -> str:
        chunk = b"x" * 1024
        assert client.protocol is not None and out._payload_writer is not None
        while not client.protocol.writing_paused:  # the client reads nothing
            assert await _write(out, chunk, client)
        await _recv(sock, 24 * 1024)  # it reads a little: below the high-water mark, writes still paused
        await asyncio.sleep(0.05)
        # A slow reader: it reads what is written, until aiohttp's own count of bytes written since its last
        # drain is about to make the next write wait for the client.
        while out._payload_writer.buffer_size < 63 * 1024:
            assert await _write(out, chunk, client)
            await _recv(sock, 1024)
        await asyncio.sleep(0.05)
        started = time.monotonic()
        for _ in range(400):  # then it stops for good: the next small write waits on it
            if not await _write(out, chunk, client):
                return f"cut after {time.monotonic() - started:.1f} s"
        return "never cut"

    assert (await _served(scenario)).startswith("cut after")


async def test_the_end_of_a_stream_waits_no_longer_than_a_write() -> None:
    async def scenario(out: web.StreamResponse, client: _Client, sock: socket.socket) -> str:
        chunk = b"x" * 1024
        assert client.protocol is not None
        while not client.protocol.writing_paused:  # the client reads nothing, then the stream ends
            assert await _write(out, chunk, client)
        started = time.monotonic()
        await _end(out, client)
        return f"ended after {time.monotonic() - started:.1f} s"

    assert (await _served(scenario)).startswith("ended after")
