"""A huge upstream answer (tens of MB: a provider or local server gone wrong) does not stall the instance: its
translation runs on a worker thread while the event loop goes on serving other requests.

The worker runs as a `trex dev` subprocess here, so that its interpreter lock is its own: an in-process worker
would share this test's, and the test's clients would stall with it.
"""

from __future__ import annotations

import http.client
import json
import threading
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import msgspec
from aiohttp import web

from tests.fakes.threaded import ThreadedServer
from tests.harness import WorkerProcess, write_config
from tests.test_cli import trex

CALLS = 120_000
"""Tool calls in the huge answer: about 30 MB of JSON, seconds of translation into a Messages answer."""


def _huge_answer() -> bytes:
    """Built as text, and the worker's answer read into structs without garbage-collector tracking: 120k dicts
    would set off collections in this process, and with them the finalizers of whatever an earlier test left
    unclosed, reported as this test's failure."""
    note = "x" * 160
    call = (
        '{"id": "call_%d", "type": "function", "function": {"name": "lookup", "arguments": '
        + json.dumps('{"row": %d, "note": "' + note + '"}')
        + "}}"
    )
    calls = ", ".join(call % (i, i) for i in range(CALLS))
    return (
        '{"id": "chatcmpl-huge", "object": "chat.completion", "created": 1, "model": "big", "choices": [{"index": '
        '0, "message": {"role": "assistant", "content": null, "tool_calls": ['
        + calls
        + ']}, "finish_reason": '
        '"tool_calls"}], "usage": {"prompt_tokens": 5, "completion_tokens": 7, "total_tokens": 12}}'
    ).encode()


class _Input(msgspec.Struct, gc=False):
    row: int
    note: str


class _ToolUse(msgspec.Struct, gc=False):
    type: str
    id: str
    name: str
    input: _Input


class _Message(msgspec.Struct, gc=False):
    content: list[_ToolUse]
    stop_reason: str


def test_a_huge_answer_is_translated_while_other_requests_are_served(
    tmp_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    """A local model's ~30 MB chat answer, asked for in the Messages format, is translated on a thread: health
    probes sent one after another once the upstream has sent it all are answered before the big response
    begins (on the event loop, the first probe at most got in, while the answer's last bytes were read, and
    every other waited until the translation was done), and the big answer still arrives whole."""
    body = _huge_answer()
    assert len(body) > 25_000_000
    sent = threading.Event()

    async def local_chat(request: web.Request) -> web.StreamResponse:
        await request.read()
        resp = web.StreamResponse(headers={"Content-Type": "application/json"})
        resp.content_length = len(body)
        await resp.prepare(request)
        await resp.write(body)
        await resp.write_eof()
        sent.set()  # all of it handed to the socket: the worker holds the rest in its buffers
        return resp

    async def factory() -> web.Application:
        app = web.Application()
        app.router.add_post("/local/v1/chat/completions", local_chat)
        return app

    upstream = ThreadedServer(factory).start()
    try:
        cfg = write_config(
            tmp_path, {"LOCAL_BASE_URL": upstream.url + "/local/v1"}, dev_vars={"TREX_MASTER_KEY": "h" * 40}
        )
        created = json.loads(trex("keys", "create", "--config", str(cfg), "--name", "h", "--json").stdout)
        wp = spawn_worker(cfg)
        answered = threading.Event()

        host, port = wp.url.removeprefix("http://").split(":")

        def ask_big() -> _Message:
            conn = http.client.HTTPConnection(host, int(port), timeout=300)
            try:
                request = {
                    "model": "local/big",
                    "max_tokens": 100,
                    "messages": [{"role": "user", "content": "list everything"}],
                }
                headers = {"x-api-key": created["key"], "anthropic-version": "2023-06-01"}
                conn.request("POST", "/v1/messages", json.dumps(request), headers)
                resp = conn.getresponse()
                answered.set()  # its status and headers are here: the translation is done
                assert resp.status == 200
                return msgspec.json.decode(resp.read(), type=_Message)
            finally:
                conn.close()

        with ThreadPoolExecutor(1) as pool:
            big = pool.submit(ask_big)
            assert sent.wait(120)
            before = 0
            probe = http.client.HTTPConnection(host, int(port), timeout=60)
            try:
                while not answered.is_set():
                    probe.request("GET", "/health")
                    health = probe.getresponse()
                    health.read()
                    if not answered.is_set():
                        assert health.status == 200
                        before += 1
            finally:
                probe.close()
            message = big.result(300)
        assert before >= 3, f"only {before} health probes were answered while the answer was translated"
        assert len(message.content) == CALLS and message.stop_reason == "tool_use"
        assert message.content[0] == _ToolUse("tool_use", "call_0", "lookup", _Input(0, "x" * 160))
        last = message.content[-1]
        assert last.id == f"call_{CALLS - 1}" and last.input.row == CALLS - 1 and last.type == "tool_use"
    finally:
        upstream.stop()
