"""The Python ceiling: a minimal aiohttp pass-through proxy (no auth, no parsing, one pooled session).

Run: python -m bench.proxy_overhead.passthrough PORT UPSTREAM_BASE_URL
"""

from __future__ import annotations

import sys

import aiohttp
import uvloop
from aiohttp import web

SESSION = web.AppKey("session", aiohttp.ClientSession)


async def forward(request: web.Request) -> web.StreamResponse:
    body = await request.read()
    upstream = request.app[SESSION]
    async with upstream.post(
        request.app["base"] + "/chat/completions", data=body, headers={"Content-Type": "application/json"}
    ) as r:
        if r.content_type != "text/event-stream":
            return web.Response(body=await r.read(), status=r.status, content_type="application/json")
        resp = web.StreamResponse(headers={"Content-Type": "text/event-stream"})
        await resp.prepare(request)
        async for chunk in r.content.iter_any():
            await resp.write(chunk)
        await resp.write_eof()
        return resp


async def make_app(base: str) -> web.Application:
    app = web.Application()
    app["base"] = base
    app.router.add_post("/v1/chat/completions", forward)

    async def session_ctx(app: web.Application):  # type: ignore[no-untyped-def]
        app[SESSION] = aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0))
        yield
        await app[SESSION].close()

    app.cleanup_ctx.append(session_ctx)
    return app


def main() -> None:
    port, base = int(sys.argv[1]), sys.argv[2].rstrip("/")
    web.run_app(
        make_app(base), host="127.0.0.1", port=port, access_log=None, print=None, loop=uvloop.new_event_loop()
    )


if __name__ == "__main__":
    main()
