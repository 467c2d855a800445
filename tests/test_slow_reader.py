"""A client that stops reading a streamed response does not hold it, and the upstream stream behind it, for
good: once its buffers are full, a write that waits longer than `[local] client_read_timeout_seconds` cuts
its connection, and the upstream is let go."""

from __future__ import annotations

import json
import socket
import time
from collections.abc import Callable

from tests.conftest import MASTER_KEY, with_key
from tests.fakes.upstream import FakeUpstream, Reply
from tests.harness import InProcessWorker

EVENTS = 400
PIECE = "x" * 32_000


def _chunk(i: int) -> bytes:
    chunk = {
        "id": "chatcmpl-big",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {"content": PIECE}, "finish_reason": None}],
    }
    return f"data: {json.dumps(chunk)}\n\n".encode()


def _big_stream() -> Reply:
    """About 13 MB of content deltas: more than every socket buffer between the worker and a client."""
    finish = {
        "id": "chatcmpl-big",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "gpt-4o-mini",
        "choices": [{"index": 0, "delta": {}, "finish_reason": "stop"}],
    }
    events = [_chunk(i) for i in range(EVENTS)]
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
