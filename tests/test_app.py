"""The worker's edge behaviour as a client sees it: health, request ids, error shapes, body limits, logs."""

from __future__ import annotations

import asyncio
import io
import json
import logging
import socket
import threading
import time
from collections.abc import Callable, Iterator

import aiohttp
import anthropic
import openai
import pytest
from aiohttp import web

from tests.harness import InProcessWorker
from worker.app import ROUTES, runs_to_completion
from worker.appkeys import CTX, ENV
from worker.handlers.health import VERSION
from worker.jsonio import json_response, read_json_object
from worker.logs import LineWriter, setup_logging


async def echo(request: web.Request) -> web.StreamResponse:
    return json_response(await read_json_object(request))


async def boom(request: web.Request) -> web.StreamResponse:
    raise RuntimeError("db password hunter2 and key sk-live-abcdefghijklmnopqrstuvwxyz")


TEST_ROUTES = [
    ("POST", "/_test/echo", echo),
    ("GET", "/_test/boom", boom),
    ("POST", "/v1/messages/_test/echo", echo),
    ("GET", "/v1/messages/_test/boom", boom),
]


@pytest.fixture
def w(make_worker: Callable[..., InProcessWorker]) -> InProcessWorker:
    return make_worker(variables={"MAX_BODY_BYTES": 4096}, extra_routes=TEST_ROUTES)


@pytest.fixture
def captured_logs() -> Iterator[io.StringIO]:
    """Route the `trex` loggers through the real formatter into a buffer, then restore."""
    loggers = [logging.getLogger("trex"), logging.getLogger("aiohttp")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    buf = io.StringIO()
    setup_logging("json", stream=buf)
    yield buf
    for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
        logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate


async def test_health_without_auth(w: InProcessWorker) -> None:
    async with aiohttp.ClientSession() as s:
        for path in ("/health", "/v1/health"):
            async with s.get(w.url + path) as r:
                assert r.status == 200
                assert await r.json() == {"status": "ok", "version": VERSION, "kv": "ok"}
                assert r.headers["X-Request-Id"].startswith("req_")


async def test_request_id_echoed_when_valid_and_replaced_when_not(w: InProcessWorker) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(w.url + "/health", headers={"X-Request-Id": "abc-123.x:y"}) as r:
            assert r.headers["X-Request-Id"] == "abc-123.x:y"
        async with s.get(w.url + "/health", headers={"X-Request-Id": "bad id\twith spaces"}) as r:
            assert r.headers["X-Request-Id"].startswith("req_")
        async with s.get(w.url + "/nope", headers={"X-Request-Id": "on-errors-too"}) as r:
            assert r.headers["X-Request-Id"] == "on-errors-too"
        ids = set()
        for _ in range(3):
            async with s.get(w.url + "/health") as r:
                ids.add(r.headers["X-Request-Id"])
        assert len(ids) == 3


async def test_unknown_route_404_openai_shape(w: InProcessWorker) -> None:
    async with aiohttp.ClientSession() as s, s.get(w.url + "/v1/nothing-here") as r:
        assert r.status == 404
        body = await r.json()
        assert set(body["error"]) == {"message", "type", "code", "param"}
        assert body["error"]["code"] == "not_found"
        assert "/v1/nothing-here" in body["error"]["message"]


def test_the_anthropic_sdk_gets_an_anthropic_404_naming_the_api_it_called(w: InProcessWorker) -> None:
    """`client.beta.files.list()` and other APIs the gateway does not serve: the SDK (it sends
    `anthropic-version`) reads an Anthropic error that says what it asked for and what is served."""
    with anthropic.Anthropic(api_key="trex_anything", base_url=w.url, max_retries=0) as client:
        for call, api in (
            (lambda: client.beta.files.list(), "Files API"),
            (lambda: client.messages.batches.list(), "Message Batches API"),
            (lambda: client.get("/v1/agents", cast_to=object), "this API"),
        ):
            with pytest.raises(anthropic.NotFoundError) as err:
                call()
            body = err.value.body
            assert isinstance(body, dict) and body["type"] == "error", body
            assert body["error"]["type"] == "not_found_error" and body["request_id"]
            assert api in body["error"]["message"] and "POST /v1/messages" in body["error"]["message"]
    # Without it, the OpenAI shape (OpenAI's SDK has a Files API of its own at that path).
    with openai.OpenAI(api_key="trex_anything", base_url=w.url + "/v1", max_retries=0) as oai:
        with pytest.raises(openai.NotFoundError) as nf:
            oai.files.list()
        assert nf.value.code == "not_found" and nf.value.body == {
            "message": "Unknown route: GET /v1/files",
            "type": "invalid_request_error",
            "code": "not_found",
            "param": None,
        }


async def test_wrong_method_405_with_allow(w: InProcessWorker) -> None:
    async with aiohttp.ClientSession() as s, s.post(w.url + "/health", data=b"{}") as r:
        assert r.status == 405
        assert "GET" in r.headers["Allow"]
        assert (await r.json())["error"]["code"] == "method_not_allowed"


async def test_messages_routes_use_anthropic_error_shape(w: InProcessWorker) -> None:
    async with aiohttp.ClientSession() as s:
        async with s.get(w.url + "/v1/messages/unknown") as r:
            assert r.status == 404
            body = await r.json()
            assert body["type"] == "error"
            assert body["error"]["type"] == "not_found_error"
            assert body["request_id"] == r.headers["X-Request-Id"]
        async with s.post(w.url + "/v1/messages/_test/echo", data=b"{oops") as r:
            assert r.status == 400
            assert (await r.json())["error"]["type"] == "invalid_request_error"


async def test_malformed_and_non_object_json_400(w: InProcessWorker) -> None:
    async with aiohttp.ClientSession() as s:
        for payload, needle in ((b"{not json", "Malformed JSON"), (b"", "empty"), (b"[1,2]", "JSON object")):
            async with s.post(w.url + "/_test/echo", data=payload) as r:
                assert r.status == 400
                err = (await r.json())["error"]
                assert err["type"] == "invalid_request_error" and err["code"] == "invalid_json"
                assert needle in err["message"]
        async with s.post(w.url + "/_test/echo", json={"ok": [1, "two"]}) as r:
            assert r.status == 200 and await r.json() == {"ok": [1, "two"]}


async def test_body_over_limit_413_by_content_length(w: InProcessWorker) -> None:
    async with aiohttp.ClientSession() as s, s.post(w.url + "/_test/echo", data=b"x" * 5000) as r:
        assert r.status == 413
        err = (await r.json())["error"]
        assert err["code"] == "request_too_large" and "4096" in err["message"]


def test_413_is_sent_before_the_body_is_read(w: InProcessWorker) -> None:
    """Announce 50 MB, send none of it: the answer must come without the worker waiting for the body."""
    with socket.create_connection(("127.0.0.1", int(w.url.rsplit(":", 1)[1])), timeout=5) as sock:
        sock.sendall(
            b"POST /_test/echo HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
            b'Content-Length: 52428800\r\n\r\n{"a":'
        )
        data = b""
        while b"\r\n\r\n" not in data:
            chunk = sock.recv(65536)
            assert chunk, "connection closed without a response"
            data += chunk
        assert data.startswith(b"HTTP/1.1 413")


async def test_chunked_body_over_limit_413(w: InProcessWorker) -> None:
    async def gen():  # type: ignore[no-untyped-def]
        for _ in range(10):
            yield b"y" * 1000

    async with aiohttp.ClientSession() as s, s.post(w.url + "/_test/echo", data=gen()) as r:
        assert r.status == 413
        assert (await r.json())["error"]["code"] == "request_too_large"


async def test_unexpected_exception_500_with_request_id_and_no_internals(
    w: InProcessWorker, captured_logs: io.StringIO
) -> None:
    headers = {
        "X-Request-Id": "trace-500",
        "Authorization": "Bearer trex_supersecretvalue1234567890",
        "X-API-Key": "plainsecretvalue",
        "X-Upstream-Api-Key": "sk-upstreamsecret123456789",
    }
    async with aiohttp.ClientSession() as s, s.get(w.url + "/_test/boom", headers=headers) as r:
        assert r.status == 500
        text = await r.text()
        err = json.loads(text)["error"]
        assert err["type"] == "server_error"
        assert "trace-500" in err["message"]
        for leak in ("Traceback", "RuntimeError", "hunter2", "sk-live", "boom"):
            assert leak not in text
    async with aiohttp.ClientSession() as s, s.get(w.url + "/v1/messages/_test/boom") as r:
        body = await r.json()
        assert r.status == 500 and body["type"] == "error" and body["error"]["type"] == "api_error"
    logs = captured_logs.getvalue()
    # The traceback is logged, with the request id, but no credential from headers or the message.
    assert "trace-500" in logs and "RuntimeError" in logs
    for secret in (
        "trex_supersecretvalue1234567890",
        "plainsecretvalue",
        "sk-upstreamsecret123456789",
        "sk-live-abcdefghijklmnopqrstuvwxyz",
    ):
        assert secret not in logs
    assert "[REDACTED]" in logs


async def test_access_log_line_per_request(make_worker: Callable[..., InProcessWorker]) -> None:
    stream = io.StringIO()
    w = make_worker(access_stream=stream, local={"log_format": "json"})
    async with aiohttp.ClientSession() as s:
        async with s.get(w.url + "/health", headers={"X-Request-Id": "acc-1"}) as r:
            assert r.status == 200
        async with s.get(w.url + "/missing", headers={"X-Request-Id": "acc-2"}) as r:
            assert r.status == 404
    w.stop()  # a graceful stop flushes every buffered line
    lines = [json.loads(ln) for ln in stream.getvalue().splitlines()]
    access = {ln["request_id"]: ln for ln in lines if ln["logger"] == "trex.access"}
    assert access["acc-1"]["status"] == 200 and access["acc-1"]["path"] == "/health"
    assert access["acc-1"]["method"] == "GET" and isinstance(access["acc-1"]["latency_ms"], float)
    assert access["acc-2"]["status"] == 404


class _StuckPipe(io.StringIO):
    """stderr piped to a reader that stopped reading: every write blocks until `drained` is set."""

    def __init__(self, drained: threading.Event) -> None:
        super().__init__()
        self._drained = drained

    def write(self, text: str) -> int:
        self._drained.wait()
        return super().write(text)


async def test_an_access_log_stream_that_does_not_drain_cannot_hold_the_shutdown(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    """stderr piped to a reader that stopped reading: every write blocks. The shutdown waits a bounded time
    for the last lines, off the event loop, and the lines still reach the stream if it drains later."""
    drained = threading.Event()
    stream = _StuckPipe(drained)
    w = make_worker(access_stream=stream)
    async with aiohttp.ClientSession() as s:
        for rid in ("stuck-1", "stuck-2"):  # the first blocks the writer; the second waits in the buffer
            async with s.get(w.url + "/health", headers={"X-Request-Id": rid}) as r:
                assert r.status == 200
            await asyncio.sleep(0.5)
    w.stop()  # returns: nothing on the loop waits on the stuck stream
    drained.set()
    for _ in range(100):
        if "stuck-2" in stream.getvalue():
            break
        await asyncio.sleep(0.05)
    assert "request_id=stuck-1" in stream.getvalue() and "request_id=stuck-2" in stream.getvalue()


def test_a_stream_found_stuck_is_not_waited_for_again_by_another_writer() -> None:
    """The access log and the serving logs each have a writer on stderr: a stop with stderr stuck waited the
    whole bound for the first and then again for the second. A writer closed after another one found the
    stream stuck goes at once; its lines are still written should the stream drain."""
    drained = threading.Event()
    stream = _StuckPipe(drained)
    access, serving = LineWriter(stream, "t-access"), LineWriter(stream, "t-serving")
    access.add("access line")
    access.close(wait=0.2)  # stuck: its thread is still blocked in the write
    serving.add("stopped")
    closing = threading.Thread(target=serving.close, kwargs={"wait": 3600.0})
    closing.start()
    closing.join(20)
    assert not closing.is_alive()  # it did not wait its hour for a stream known to be stuck
    drained.set()
    for _ in range(200):
        if stream.getvalue().count("\n") == 2:
            break
        time.sleep(0.05)
    assert sorted(stream.getvalue().splitlines()) == ["access line", "stopped"]
    # Drained: once the stuck writer is done, a writer closed now waits for its lines, as on any stream.
    access._thread.join(20)
    later = LineWriter(stream, "t-later", batch_seconds=0.3)
    later.add("later line")
    later.close()
    assert stream.getvalue().splitlines()[-1] == "later line"


def test_env_binding_exposes_kv(w: InProcessWorker) -> None:
    kv = w.app[ENV].kv

    async def roundtrip() -> bytes | None:
        await kv.put("probe", b"v")
        return await kv.get("probe")

    assert w.call(roundtrip()) == b"v"
    assert CTX is not None


def test_an_unreachable_kv_is_a_503_to_retry_not_an_internal_error(
    make_worker: Callable[..., InProcessWorker], caplog: pytest.LogCaptureFixture
) -> None:
    """The KV going away is a known outage: each request gets a 503 in its client's format with
    Retry-After, and the log a one-line warning (not a traceback per request)."""
    worker = make_worker(local={"kv_url": "redis://127.0.0.1:1/0"})
    headers = {"Authorization": "Bearer trex_" + "a" * 43, "Content-Type": "application/json"}
    body = json.dumps(
        {"model": "gpt-4o-mini", "max_tokens": 5, "messages": [{"role": "user", "content": "hi"}]}
    )

    async def post(path: str) -> tuple[int, dict[str, str], dict[str, object]]:
        async with aiohttp.ClientSession() as s, s.post(worker.url + path, data=body, headers=headers) as r:
            return r.status, dict(r.headers), await r.json()

    with caplog.at_level(logging.WARNING):
        for path, shape in (("/v1/chat/completions", "openai"), ("/v1/messages", "anthropic")):
            status, got_headers, doc = asyncio.run(post(path))
            assert status == 503 and got_headers["Retry-After"] == "1"
            error = doc["error"]
            assert isinstance(error, dict)
            if shape == "anthropic":
                assert doc["type"] == "error" and error["type"] == "overloaded_error"
            else:
                assert error["code"] == "kv_unavailable"
    assert not any(r.exc_info for r in caplog.records)


def test_a_change_started_is_finished_when_its_client_hangs_up(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    """Handlers are cancelled when their client hangs up (a model call stops at once), but a handler that
    changes state runs to its end: every state-changing route except the model calls is registered that way."""
    finished = threading.Event()

    async def slow_change(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        finished.set()
        return json_response({"done": True})

    async def slow_read(request: web.Request) -> web.StreamResponse:
        await asyncio.sleep(0.5)
        finished.set()
        return json_response({"done": True})

    worker = make_worker(
        extra_routes=[
            ("POST", "/test/change", runs_to_completion(slow_change)),
            ("GET", "/test/read", slow_read),
        ]
    )
    host, port = worker.url.removeprefix("http://").split(":")
    for method, path, expected in (("GET", "/test/read", False), ("POST", "/test/change", True)):
        finished.clear()
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(f"{method} {path} HTTP/1.1\r\nHost: x\r\nContent-Length: 0\r\n\r\n".encode())
            time.sleep(0.1)  # the handler has started
        assert finished.wait(1.5) is expected, path
    completing = {(r.method, r.path) for r in ROUTES if r.completes}
    assert ("DELETE", "/admin/v1/keys/{id}") in completing and (
        "DELETE",
        "/v1/payloads/{trex_id}",
    ) in completing
    assert ("POST", "/v1/compress") in completing and ("POST", "/v1/chat/completions") not in completing
    assert not any(method in ("GET", "HEAD") for method, _ in completing)


def test_a_request_aiohttp_cannot_parse_is_one_scrubbed_json_line(
    w: InProcessWorker, captured_logs: io.StringIO
) -> None:
    """aiohttp refuses a header with a control byte; it logged the raw request (the proxy key in it) as a
    bare traceback. Now: one JSON warning line, no credential."""
    token = "trex_" + "Q" * 43
    host, port = w.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(
            f"GET /v1/models HTTP/1.1\r\nHost: x\r\nAuthorization: Bearer {token}\x01\r\n\r\n".encode()
        )
        assert conn.recv(100).startswith(b"HTTP/1.")
    time.sleep(0.1)
    logged = captured_logs.getvalue()
    assert token not in logged and "Q" * 20 not in logged
    lines = [json.loads(line) for line in logged.splitlines() if "unparsable" in line]
    assert len(lines) == 1 and lines[0]["level"] == "warning"


async def fails_mid_stream(request: web.Request) -> web.StreamResponse:
    out = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
    await out.prepare(request)
    await out.write(b'data: {"partial": true}\n\n')
    raise RuntimeError("failed after the first event, key sk-live-abcdefghijklmnopqrstuvwxyz")


def _raw_exchange(url: str, request: bytes) -> tuple[bytes, bool]:
    """What the server sends for one request within 3 s, and whether it then closed the connection."""
    host, port = url.removeprefix("http://").split(":")
    received = b""
    with socket.create_connection((host, int(port)), timeout=3) as conn:
        conn.sendall(request)
        try:
            while chunk := conn.recv(65536):
                received += chunk
        except TimeoutError:
            return received, False
    return received, True


def test_a_handler_failing_after_its_response_began_gets_no_second_response(
    make_worker: Callable[..., InProcessWorker], captured_logs: io.StringIO
) -> None:
    """A failure after a stream's head and first bytes were sent is logged once; the client sees that one
    response cut short (the connection closed without the body's last chunk), not a 500 written into it."""
    worker = make_worker(extra_routes=[("GET", "/_test/fails-mid-stream", fails_mid_stream)])
    received, closed = _raw_exchange(
        worker.url, b"GET /_test/fails-mid-stream HTTP/1.1\r\nHost: x\r\nX-Request-Id: mid-stream-1\r\n\r\n"
    )
    assert received.startswith(b"HTTP/1.1 200 OK\r\n") and received.count(b"HTTP/1.1") == 1
    assert b'data: {"partial": true}' in received and not received.endswith(b"0\r\n\r\n")
    assert closed
    time.sleep(0.1)  # the access line is written after the connection closes
    logged = [json.loads(line) for line in captured_logs.getvalue().splitlines()]
    failures = [line for line in logged if line.get("exc")]
    assert len(failures) == 1 and failures[0]["request_id"] == "mid-stream-1"
    assert (
        "RuntimeError" in failures[0]["exc"]
        and "sk-live-abcdefghijklmnopqrstuvwxyz" not in failures[0]["exc"]
    )


async def test_a_newline_in_a_path_cannot_forge_an_access_line(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    stream = io.StringIO()
    worker = make_worker(access_stream=stream)
    forged = "2026-12-06 13:00:00,000 INFO trex.access POST /admin/v1/keys 201 1.00ms"
    async with aiohttp.ClientSession() as s:
        async with s.get(worker.url + "/v1/nope%0A" + forged.replace(" ", "%20")) as r:
            assert r.status == 404
        async with s.head(worker.url + "/health") as r:  # HEAD on every GET route (load-balancer probes)
            assert r.status == 200 and await r.read() == b""
    worker.stop()
    lines = stream.getvalue().splitlines()
    assert not any(line.startswith("2026-12-06 13:00:00,000") for line in lines)
    assert any("/v1/nope\\x0a2026-12-06" in line for line in lines)


def test_a_body_over_the_limit_is_refused_before_the_client_is_invited_to_send_it(w: InProcessWorker) -> None:
    """With `Expect: 100-continue` the answer to an oversized body is the 413 itself, not "100 Continue"
    followed by a 413 once megabytes were uploaded; a body within the limit is still invited."""
    host, port = w.url.removeprefix("http://").split(":")
    for length, first_line in ((10_000_000, b"HTTP/1.1 413"), (10, b"HTTP/1.1 100 Continue")):
        with socket.create_connection((host, int(port))) as conn:
            conn.sendall(
                f"POST /v1/chat/completions HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n"
                f"Expect: 100-continue\r\nContent-Length: {length}\r\n\r\n".encode()
            )
            conn.settimeout(5)
            assert conn.recv(200).startswith(first_line)


def test_access_lines_reach_a_shared_pipe_in_writes_no_other_process_can_split() -> None:
    """With `--workers` every process writes its access lines to one pipe: a write of at most PIPE_BUF bytes
    of whole lines is never interleaved with another's, a longer one can be (lines were spliced together)."""
    import io
    import select

    from worker.accesslog import AccessLog

    class Pipe(io.StringIO):
        """What reaches the pipe: each flush is one write."""

        def __init__(self) -> None:
            super().__init__()
            self.writes: list[str] = []
            self._pending = ""

        def write(self, text: str) -> int:
            self._pending += text
            return len(text)

        def flush(self) -> None:
            if self._pending:
                self.writes.append(self._pending)
                self._pending = ""

    pipe = Pipe()
    log = AccessLog("json", pipe, flush_interval=3600)
    for i in range(500):
        log.log(f"req_{i:06d}", "POST", "/v1/chat/completions", 200, 1.25)
    log.close()
    assert all(len(w.encode()) <= select.PIPE_BUF and w.endswith("\n") for w in pipe.writes)
    lines = "".join(pipe.writes).splitlines()
    assert [json.loads(line)["request_id"] for line in lines] == [f"req_{i:06d}" for i in range(500)]


def test_serving_logs_reach_stderr_before_an_error_escaping_the_server_is_reported(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A serving process's lines are written by a thread: when an exception ends the serving, what was logged
    is written before the error message that follows (the thread is waited for, a bounded time)."""
    import sys

    from worker.logs import serving_logs

    class SlowStderr(io.StringIO):
        """A stderr that takes a while to take each write (a busy log shipper)."""

        def write(self, text: str) -> int:
            time.sleep(0.3)
            return super().write(text)

    stderr = SlowStderr()
    monkeypatch.setattr(sys, "stderr", stderr)
    loggers = [logging.getLogger("trex"), logging.getLogger("aiohttp")]
    saved = [(logger.handlers[:], logger.level, logger.propagate) for logger in loggers]
    try:
        with pytest.raises(RuntimeError), serving_logs("text"):
            logging.getLogger("trex.server").warning("first")
            logging.getLogger("aiohttp.server").error("second")
            raise RuntimeError("serving failed")
        written = stderr.getvalue()  # when the error is reported (as `run()` prints it)
    finally:
        for logger, (handlers, level, propagate) in zip(loggers, saved, strict=True):
            logger.handlers[:], logger.level, logger.propagate = handlers, level, propagate
    lines = written.splitlines()
    assert [line.split(" ", 3)[-1] for line in lines] == ["trex.server first", "aiohttp.server second"]
