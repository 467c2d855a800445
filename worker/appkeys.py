"""Typed keys for state held on the aiohttp application and request (aiohttp `AppKey`/`RequestKey`)."""

from __future__ import annotations

import asyncio

from aiohttp import web

from .accounting.events import Begun, Outcome
from .config import Config
from .context import Env, ExecutionContext, TaskRegistry
from .gateway import Gateway
from .headernames import REQUEST_ID, X_REQUEST_ID
from .limits import Admitted

CONFIG = web.AppKey("config", Config)
ENV = web.AppKey("env", Env)
TASKS = web.AppKey("tasks", TaskRegistry)
GATEWAY = web.AppKey("gateway", Gateway)
STOPPING = web.AppKey("stopping", asyncio.Event)
"""Set when the worker starts shutting down (before in-flight requests get their grace period)."""


class RequestContext(ExecutionContext):
    """A request's `ctx`: `wait_until`, and what the worker learns about the request while serving it.

    One object per request, read and written as attributes: the request's own mapping costs a Python call
    per access, and its `get` raises and catches a KeyError for every key that was not set (most requests
    have no override, many no rate admission or usage event), several times per request.
    """

    __slots__ = ("key_id", "override_for", "rate", "request_id", "started", "usage_event")

    def __init__(self, registry: TaskRegistry, request_id: str, started: float) -> None:
        # Not super(): once per request, a zero-argument super() costs about as much as the rest of this.
        ExecutionContext.__init__(self, registry)
        self.request_id = request_id
        self.started = started
        """`time.perf_counter()` when the request reached the worker."""
        self.key_id: str | None = None
        """The proxy key's id once the request has authenticated (for the request log)."""
        self.usage_event: Begun | None = None
        """The request's usage event in flight (`accounting.events.Begun`), if it has one."""
        self.override_for: str | None = None
        """The provider an `X-Upstream-Api-Key` override is for (the requested model's)."""
        self.rate: Admitted | None = None
        """How the request was admitted by the rate limits (headers, in-flight slot)."""


CTX = web.RequestKey("ctx", RequestContext)
"""Set by the edge middleware on every request it serves."""


def stamp(request: web.Request, response: web.StreamResponse, ctx: RequestContext | None = None) -> None:
    """Put the request id and, for an admitted request, the rate-limit headers on a response that is not
    prepared yet. The edge middleware stamps what handlers return; a handler that prepares a stream itself
    stamps it first. (`ctx`: the request's, when the caller has it at hand.)"""
    if ctx is None:
        ctx = request.get(CTX)
        if ctx is None:
            return
    rid = ctx.request_id
    response.headers[X_REQUEST_ID] = rid
    if request.path.startswith("/v1/messages") and REQUEST_ID not in response.headers:
        # What the Anthropic SDK reads as `_request_id` (Anthropic's own, passed on, when it answered).
        response.headers[REQUEST_ID] = rid
    admitted = ctx.rate
    if admitted is not None:
        response.headers.update(admitted.headers)


def abandoned(request: web.Request) -> Outcome:
    """Why a request's handler was cancelled: the worker cut it off at shutdown, past the grace period, or
    else its client hung up."""
    return "interrupted" if request.app[STOPPING].is_set() else "client_disconnected"
