"""`GET /health`, `GET /v1/health`: liveness without authentication."""

from __future__ import annotations

from aiohttp import web

from .. import __version__
from ..jsonio import encode

VERSION = __version__

# The body never changes: encode it once at import, not per request.
_BODY = encode({"status": "ok", "version": VERSION})


async def health(request: web.Request) -> web.Response:
    """Always 200 while the worker is serving."""
    return web.Response(body=_BODY, content_type="application/json")
