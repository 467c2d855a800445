"""`GET /health`, `GET /v1/health`: liveness without authentication."""

from __future__ import annotations

from importlib.metadata import PackageNotFoundError, version

from aiohttp import web

from ..jsonio import encode


def _version() -> str:
    try:
        return version("trex-worker")
    except PackageNotFoundError:
        return "0.0.0+unknown"


VERSION = _version()
# The body never changes: encode it once at import, not per request.
_BODY = encode({"status": "ok", "version": VERSION})


async def health(request: web.Request) -> web.Response:
    """Always 200 while the worker is serving."""
    return web.Response(body=_BODY, content_type="application/json")
