"""`GET /health`, `GET /v1/health`: whether this worker can serve, without authentication.

200 `{"status": "ok", "kv": "ok"}` while the KV takes writes; 503 `{"status": "unavailable", "kv":
"unavailable"}` with `Retry-After: 1` while it does not (`worker.kvcheck`), when nearly every request would
be a 503 `kv_unavailable` too, so a load balancer sends traffic elsewhere until the store is back.
"""

from __future__ import annotations

from aiohttp import web

from .. import __version__
from ..appkeys import GATEWAY
from ..jsonio import encode

VERSION = __version__

# The bodies never change: encoded once at import, not per request.
_OK = encode({"status": "ok", "version": VERSION, "kv": "ok"})
_DOWN = encode({"status": "unavailable", "version": VERSION, "kv": "unavailable"})


async def health(request: web.Request) -> web.Response:
    """200 while the worker can serve; 503 while its KV takes no writes."""
    if await request.app[GATEWAY].kv_check.ok():
        return web.Response(body=_OK, content_type="application/json")
    return web.Response(body=_DOWN, status=503, headers={"Retry-After": "1"}, content_type="application/json")
