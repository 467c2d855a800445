"""A fast fake OpenAI upstream for benchmarks: fixed chat completion JSON, or a 12-event SSE stream.

Run: python -m bench.proxy_overhead.upstream PORT
"""

from __future__ import annotations

import json
import sys

import uvloop
from aiohttp import web

COMPLETION = json.dumps(
    {
        "id": "chatcmpl-bench",
        "object": "chat.completion",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [
            {
                "index": 0,
                "message": {
                    "role": "assistant",
                    "content": "Hello! This is a benchmark reply.",
                    "refusal": None,
                },
                "logprobs": None,
                "finish_reason": "stop",
            }
        ],
        "usage": {"prompt_tokens": 12, "completion_tokens": 8, "total_tokens": 20},
        "system_fingerprint": "fp_bench",
    }
).encode()


def _chunk(delta: dict[str, object], finish: str | None = None) -> bytes:
    doc = {
        "id": "chatcmpl-bench",
        "object": "chat.completion.chunk",
        "created": 1700000000,
        "model": "gpt-4o-mini-2024-07-18",
        "choices": [{"index": 0, "delta": delta, "logprobs": None, "finish_reason": finish}],
        "usage": None,
    }
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


WORDS = ["Hello", "!", " This", " is", " a", " streamed", " benchmark", " reply", "."]
STREAM = (
    _chunk({"role": "assistant", "content": ""})
    + b"".join(_chunk({"content": w}) for w in WORDS)
    + _chunk({}, "stop")
    + b'data: {"id":"chatcmpl-bench","object":"chat.completion.chunk","created":1700000000,'
    b'"model":"gpt-4o-mini-2024-07-18","choices":[],"usage":{"prompt_tokens":12,"completion_tokens":9,'
    b'"total_tokens":21}}\n\n' + b"data: [DONE]\n\n"
)
EVENTS = [e + b"\n\n" for e in STREAM.split(b"\n\n") if e]


async def chat(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    if b'"stream":true' not in body.replace(b" ", b""):
        return web.Response(body=COMPLETION, content_type="application/json")
    resp = web.StreamResponse(headers={"Content-Type": "text/event-stream", "Cache-Control": "no-cache"})
    await resp.prepare(request)
    for event in EVENTS:  # written one by one, as a real upstream streams them
        await resp.write(event)
    await resp.write_eof()
    return resp


def main() -> None:
    app = web.Application()
    app.router.add_post("/v1/chat/completions", chat)
    web.run_app(
        app,
        host="127.0.0.1",
        port=int(sys.argv[1]),
        access_log=None,
        print=None,
        loop=uvloop.new_event_loop(),
    )


if __name__ == "__main__":
    main()
