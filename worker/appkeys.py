"""Typed keys for state held on the aiohttp application and request (aiohttp `AppKey`/`RequestKey`)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .accounting.events import Begun, Outcome
from .config import Config
from .context import Env, ExecutionContext, TaskRegistry
from .gateway import Gateway
from .limits import Admitted

CONFIG = web.AppKey("config", Config)
ENV = web.AppKey("env", Env)
TASKS = web.AppKey("tasks", TaskRegistry)
GATEWAY = web.AppKey("gateway", Gateway)
STOPPING = web.AppKey("stopping", asyncio.Event)
"""Set when the worker starts shutting down (before in-flight requests get their grace period)."""

REQUEST_ID = web.RequestKey("request_id", str)
CTX = web.RequestKey("ctx", ExecutionContext)
STARTED = web.RequestKey("started", float)
"""`time.perf_counter()` when the request reached the worker."""
KEY_ID = web.RequestKey("key_id", str)
"""The proxy key's id once the request has authenticated (for the request log)."""
USAGE_EVENT = web.RequestKey("usage_event", Begun)
"""The request's usage event in flight (`accounting.events.Begun`), if it has one."""
OVERRIDE_FOR = web.RequestKey("override_for", str)
"""The provider an `X-Upstream-Api-Key` override is for (the requested model's)."""
RATE = web.RequestKey("rate", Admitted)
"""How the request was admitted by the rate limits (headers, in-flight slot)."""


def stamp(request: web.Request, response: web.StreamResponse) -> None:
    """Put the request id and, for an admitted request, the rate-limit headers on a response that is not
    prepared yet. The edge middleware stamps what handlers return; a handler that prepares a stream itself
    stamps it first."""
    rid = request.get(REQUEST_ID)
    if rid is not None:
        response.headers["X-Request-Id"] = rid
        if request.path.startswith("/v1/messages") and "request-id" not in response.headers:
            # What the Anthropic SDK reads as `_request_id` (Anthropic's own, passed on, when it answered).
            response.headers["request-id"] = rid
    admitted = request.get(RATE)
    if admitted is not None:
        response.headers.update(admitted.headers)


def abandoned(request: web.Request) -> Outcome:
    """Why a request's handler was cancelled: the worker cut it off at shutdown, past the grace period, or
    else its client hung up."""
    return "interrupted" if request.app[STOPPING].is_set() else "client_disconnected"
