"""Builds the aiohttp application. The route table lives here: every (method, path) → handler in one place.

One middleware (`edge`) does what every request needs — request id, body-size gate, error shaping, access
log — in a single layer, because each aiohttp middleware layer costs a coroutine frame per request.
"""

from __future__ import annotations

import asyncio
import functools
import itertools
import logging
import re
import secrets
import sys
import time
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from typing import TextIO

from aiohttp import web
from aiohttp.abc import AbstractStreamWriter
from aiohttp.typedefs import Middleware
from aiohttp.web_urldispatcher import _default_expect_handler  # the 100-continue it sends otherwise

from kv import KVNamespace, KVUnavailableError, open_kv

from .accesslog import AccessLog
from .appkeys import CONFIG, CTX, ENV, GATEWAY, STOPPING, TASKS, RequestContext, abandoned, stamp
from .config import Config
from .context import Env, TaskRegistry
from .errors import (
    GatewayError,
    InternalError,
    MethodNotAllowedError,
    PayloadTooLargeError,
    ServiceUnavailableError,
    UnknownRouteError,
    error_format_for,
    unknown_route,
)
from .gateway import Gateway, build_gateway
from .handlers import admin, compress, health, models, payloads, stored, usage
from .headernames import X_REQUEST_ID
from .logs import elapsed_ms, redact_headers

Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

error_log = logging.getLogger("trex.error")

_REQUEST_ID_RE = re.compile(r"[A-Za-z0-9._:\-]{1,128}")
_LAST_WRITE_SECONDS = 1.0
"""The least time the shutdown gives the last usage write, past the grace period if need be."""


@dataclass(frozen=True, slots=True)
class Route:
    """One entry of the route table."""

    method: str
    path: str
    handler: Handler

    @property
    def completes(self) -> bool:
        """Whether the handler runs to the end when its client hangs up (see `runs_to_completion`): every
        route that changes state, except the model calls, which a hang-up is meant to stop."""
        return self.method not in ("GET", "HEAD") and self.path not in _MODEL_CALLS


_MODEL_CALLS = frozenset(
    {
        "/v1/chat/completions",
        "/v1/responses",
        "/v1/responses/input_tokens",
        "/v1/messages",
        "/v1/messages/count_tokens",
        "/v1/embeddings",
    }
)


def runs_to_completion(handler: Handler) -> Handler:
    """`handler`, finished even if its client hangs up meanwhile. Handlers are cancelled on a hang-up so a
    model call stops at once (`server.make_runner`); a change half made (a key deleted but not its
    bindings, a payload claimed revoked but still stored) would be worse than an answer nobody reads."""

    @functools.wraps(handler)
    async def run(request: web.Request) -> web.StreamResponse:
        task = asyncio.ensure_future(handler(request))
        try:
            return await asyncio.shield(task)
        except asyncio.CancelledError:
            task.add_done_callback(functools.partial(_log_failure, request))
            raise

    return run


def _log_failure(request: web.Request, task: asyncio.Future[web.StreamResponse]) -> None:
    """A handler that went on after its client left: its failure has nobody else to report it."""
    if task.cancelled():
        return
    exc = task.exception()
    if exc is not None and not isinstance(exc, GatewayError | web.HTTPException):
        error_log.error(
            "unhandled error in %s %s after its client left",
            request.method,
            request.path,
            exc_info=exc,
            extra={"request_id": _request_id(request)},
        )


def _request_id(request: web.Request) -> str | None:
    ctx = request.get(CTX)
    return ctx.request_id if ctx is not None else None


ROUTES: tuple[Route, ...] = (
    Route("GET", "/health", health.health),
    Route("GET", "/v1/health", health.health),
    Route("POST", "/v1/chat/completions", models.chat_completions),
    Route("POST", "/v1/responses", models.responses),
    # What OpenAI stores (background and stored responses, stored chat completions): passed through to it.
    Route("GET", "/v1/responses/{id}", stored.forward),  # ?stream=true&starting_after=N resumes a stream
    Route("DELETE", "/v1/responses/{id}", stored.forward),
    Route("POST", "/v1/responses/{id}/cancel", stored.forward),
    Route("GET", "/v1/responses/{id}/input_items", stored.forward),
    Route("POST", "/v1/responses/input_tokens", stored.forward),
    Route("GET", "/v1/chat/completions", stored.forward),
    Route("GET", "/v1/chat/completions/{id}", stored.forward),
    Route("POST", "/v1/chat/completions/{id}", stored.forward),
    Route("DELETE", "/v1/chat/completions/{id}", stored.forward),
    Route("GET", "/v1/chat/completions/{id}/messages", stored.forward),
    Route("POST", "/v1/messages", models.messages),
    Route("POST", "/v1/messages/count_tokens", models.count_tokens),
    Route("POST", "/v1/embeddings", models.embeddings),
    Route("GET", "/v1/models", models.list_models),
    Route("GET", "/v1/models/{id:.+}", models.get_model),
    Route("POST", "/v1/compress", compress.compress),
    Route("POST", "/v1/payloads", payloads.push),
    Route("GET", "/v1/payloads/{trex_id}", payloads.get),
    Route("HEAD", "/v1/payloads/{trex_id}", payloads.head),
    Route("DELETE", "/v1/payloads/{trex_id}", payloads.delete),
    Route("GET", "/v1/payloads/{trex_id}/expand", payloads.expand),
    Route("GET", "/v1/usage", usage.usage_totals),
    Route("GET", "/v1/usage/events/{id}", usage.usage_event),
    Route("GET", "/v1/logs", usage.request_logs),
    Route("POST", "/admin/v1/keys", admin.create_key),
    Route("GET", "/admin/v1/keys", admin.list_keys),
    Route("GET", "/admin/v1/keys/{id}", admin.get_key),
    Route("PATCH", "/admin/v1/keys/{id}", admin.update_key),
    Route("DELETE", "/admin/v1/keys/{id}", admin.delete_key),
    Route("GET", "/admin/v1/keys/{id}/bindings", admin.list_bindings),
    Route("PUT", "/admin/v1/keys/{id}/bindings/{provider}", admin.put_binding),
    Route("DELETE", "/admin/v1/keys/{id}/bindings/{provider}", admin.delete_binding),
    Route("GET", "/admin/v1/plans", admin.list_plans),
    Route("GET", "/admin/v1/keys/{id}/credits", admin.credits),
    Route("POST", "/admin/v1/keys/{id}/credits", admin.credits),
    Route("POST", "/admin/v1/agents", admin.create_agent),
    Route("GET", "/admin/v1/agents", admin.list_agents),
    Route("GET", "/admin/v1/agents/{id}", admin.get_agent),
    Route("PATCH", "/admin/v1/agents/{id}", admin.update_agent),
    Route("DELETE", "/admin/v1/agents/{id}", admin.delete_agent),
)


def request_ids() -> Callable[[web.Request], str]:
    """Request ids: a random per-process prefix plus a counter — unique across processes, and far cheaper
    than a uuid4 per request. A closure, not an object with `__call__`: calling an instance costs a few
    hundred instructions more (a method lookup through the type's slot), once per request."""
    prefix = "req_" + secrets.token_hex(6)
    counter = itertools.count(1)

    def request_id(request: web.Request) -> str:
        incoming = request.headers.get(X_REQUEST_ID)
        if incoming and _REQUEST_ID_RE.fullmatch(incoming):
            return incoming
        return "%s%08x" % (prefix, next(counter))  # noqa: UP031 - cheaper than an f-string int format

    return request_id


def error_response(request: web.Request, exc: GatewayError) -> web.Response:
    """Render `exc` in the client's format (OpenAI or Anthropic by route)."""
    fmt = error_format_for(request.path, request.headers, unknown_route=isinstance(exc, UnknownRouteError))
    resp = web.Response(
        body=exc.body(fmt, _request_id(request)),
        status=exc.status,
        headers=exc.headers,
        content_type="application/json",
    )
    if isinstance(exc, PayloadTooLargeError):
        # The rest of the body is never read; don't keep the connection for it.
        resp.force_close()
    return resp


def _expect_handler(max_body: int) -> Callable[[web.Request], Awaitable[None]]:
    """`Expect: 100-continue`: no "100 Continue" for a body over the limit (the edge answers 413 from its
    Content-Length, and the client never sends the body); aiohttp's own handler invited every body first."""

    async def expect(request: web.Request) -> None:
        length = request.content_length
        if length is None or length <= max_body:
            await _default_expect_handler(request)

    return expect


def _from_http_exception(request: web.Request, exc: web.HTTPException) -> GatewayError:
    admin_off = request.path.startswith("/admin/") and not request.app[CONFIG].secret(admin.ADMIN_TOKEN_NAME)
    if isinstance(exc, web.HTTPNotFound) or admin_off:  # no admin API: no hint that its routes exist
        return unknown_route(request.method, request.path, request.headers)
    if isinstance(exc, web.HTTPMethodNotAllowed):
        allowed = ", ".join(sorted(exc.allowed_methods))
        return MethodNotAllowedError(
            f"Method {exc.method} is not allowed here; allowed: {allowed}.", headers={"Allow": allowed}
        )
    if isinstance(exc, web.HTTPRequestEntityTooLarge):
        return PayloadTooLargeError("Request body is too large.")
    return GatewayError(exc.reason, status=exc.status, code=exc.reason.lower().replace(" ", "_"))


def _as_gateway_error(request: web.Request, exc: Exception, rid: str) -> GatewayError:
    """The error a handler's failure is answered with; an unexpected one is logged, never shown."""
    if isinstance(exc, GatewayError):
        return exc
    if isinstance(exc, web.HTTPException):
        return _from_http_exception(request, exc)
    if isinstance(exc, KVUnavailableError):
        # The KV is down or overloaded: a known outage, answered as one (no traceback per request).
        error_log.warning("KV unavailable in %s %s: %s", request.method, request.path, exc)
        return ServiceUnavailableError(
            "The gateway's state store is unavailable; retry shortly.",
            code="kv_unavailable",
            headers={"Retry-After": "1"},
        )
    error_log.error(
        "unhandled error in %s %s",
        request.method,
        request.path,
        exc_info=exc,
        extra={"request_id": rid, "headers": redact_headers(request.headers.items())},
    )
    return InternalError(f"Internal error (request id {rid}). The failure has been logged.")


class _CutShort(web.StreamResponse):
    """What the edge returns for a handler that failed after its response began: aiohttp writes nothing of
    it and closes the connection (no keep-alive), so the client sees that response cut short (an incomplete
    body, as aiohttp itself would leave it), never a second response after it."""

    def __init__(self) -> None:
        super().__init__(status=500)
        self.force_close()

    async def prepare(self, request: web.BaseRequest) -> AbstractStreamWriter | None:
        return None

    async def write_eof(self, data: bytes = b"") -> None:
        return None


def _fail_usage(request: web.Request, status: int) -> None:
    """A request that failed after its usage event began (a KV error between attempts, say): the event ends
    as failed, nothing billed, rather than staying pending in memory and in the KV for good. One the handler
    completed already is left as it is."""
    ctx = request.get(CTX)
    begun = ctx.usage_event if ctx is not None else None
    usage = request.app[GATEWAY].usage
    if begun is not None and usage is not None:
        usage.complete(begun, http_status=status, outcome="upstream_failed")


def make_edge_middleware(
    config: Config, access: AccessLog | None, tasks: TaskRegistry, gateway: Gateway
) -> Middleware:
    """The outermost middleware, closed over what it needs so nothing is looked up per request."""
    max_body = config.max_body_bytes
    request_id = request_ids()
    limits, recorder = gateway.limits, gateway.recorder

    @web.middleware
    async def edge(request: web.Request, handler: Handler) -> web.StreamResponse:
        started = time.perf_counter()
        rid = request_id(request)
        ctx = request[CTX] = RequestContext(tasks, rid, started)
        status = 500
        try:
            length = request.content_length
            if length is not None and length > max_body:
                raise PayloadTooLargeError(
                    f"Request body of {length} bytes exceeds the limit of {max_body} bytes."
                )
            resp = await handler(request)
            if not resp.prepared:  # a stream the handler prepared was stamped before it started
                stamp(request, resp, ctx)
            status = resp.status
            return resp
        except asyncio.CancelledError:
            status = 499  # client went away (or shutdown cut it off); nothing to send
            begun = ctx.usage_event
            usage = gateway.usage
            if begun is not None and usage is not None:
                # Cancelled before any upstream call it made could have been billed (a backoff, a check):
                # nothing is charged. Where an upstream was already working, the handler recorded it first.
                usage.complete(begun, http_status=499, outcome=abandoned(request))
            raise
        except Exception as exc:  # noqa: BLE001 - the last line of defence: log the cause, never leak it.
            if request.writer.output_size:
                # The handler had begun its response (a stream): no second one may follow its bytes.
                error_log.error(
                    "unhandled error in %s %s after its response began",
                    request.method,
                    request.path,
                    exc_info=exc,
                    extra={"request_id": rid, "headers": redact_headers(request.headers.items())},
                )
                status = 500
                _fail_usage(request, status)
                return _CutShort()
            err = _as_gateway_error(request, exc, rid)
            status = err.status
            _fail_usage(request, status)
            resp = error_response(request, err)
            stamp(request, resp, ctx)
            return resp
        finally:
            latency = elapsed_ms(started)
            if access is not None:
                access.log(rid, request.method, request.path, status, latency)
            admitted = ctx.rate
            if admitted is not None:
                limits.release(admitted)
            key_id = ctx.key_id
            if key_id is not None:  # an authenticated request: it goes in its key's request log
                recorder.log(rid, key_id, request.method, request.path, status, latency, ctx.usage_event)

    return edge


async def create_app(
    config: Config, kv: KVNamespace | None = None, access_stream: TextIO | None = None
) -> web.Application:
    """Build the worker application. Opens the configured KV unless one is given; closes what it opened.

    Access lines go to `access_stream` (stderr by default) unless `[local] access_log = false`.
    """
    owns_kv = kv is None
    if kv is None:
        kv = await open_kv(config.kv_url)
    access = AccessLog(config.log_format, access_stream or sys.stderr) if config.access_log else None
    tasks = TaskRegistry(task_timeout=config.wait_until_timeout_seconds)
    try:
        gateway = build_gateway(config, kv)
    except BaseException:
        # A config error found while building (a bad plan, model entry, master key …): close what was opened,
        # or the KV's thread keeps the process alive after the error was reported.
        if owns_kv:
            await kv.close()
        if access is not None:
            await asyncio.to_thread(access.close)
        raise
    app = web.Application(
        middlewares=[make_edge_middleware(config, access, tasks, gateway)],
        client_max_size=config.max_body_bytes,
    )
    app[CONFIG] = config
    app[ENV] = Env(kv=kv, vars=config.vars, secrets=config.secrets, config=config)
    app[TASKS] = tasks
    app[GATEWAY] = gateway
    explicit_head = {r.path for r in ROUTES if r.method == "HEAD"}
    expect = _expect_handler(config.max_body_bytes)
    for route in ROUTES:
        handler = runs_to_completion(route.handler) if route.completes else route.handler
        if route.method == "GET" and route.path not in explicit_head:
            app.router.add_get(route.path, handler)  # and HEAD (load balancers probe `HEAD /health`)
        else:
            app.router.add_route(route.method, route.path, handler, expect_handler=expect)

    stopping_at: list[float] = []

    async def _cleanup(app: web.Application) -> None:
        # Runs after in-flight requests finished, so every wait_until they registered is drained here, in
        # what is left of the grace period (at least a moment: the tasks of the last requests are recent),
        # and the last usage events are written in what is left after that (at least a second, or a drain
        # that used the whole grace would leave them no chance even on a KV that answers at once).
        loop = asyncio.get_running_loop()
        deadline = (stopping_at[0] if stopping_at else loop.time()) + config.shutdown_grace_seconds
        await app[TASKS].drain(max(deadline - loop.time(), 0.5))
        await app[GATEWAY].close(within=max(deadline - loop.time(), _LAST_WRITE_SECONDS))
        if owns_kv:
            await app[ENV].kv.close()
        if access is not None:
            await asyncio.to_thread(access.close)

    async def _startup(app: web.Application) -> None:
        app[GATEWAY].recorder.start()
        app[GATEWAY].sweeper.start()

    async def _shutdown(app: web.Application) -> None:
        app[STOPPING].set()
        stopping_at.append(asyncio.get_running_loop().time())

    app[STOPPING] = asyncio.Event()
    app.on_startup.append(_startup)
    app.on_shutdown.append(_shutdown)
    app.on_cleanup.append(_cleanup)
    return app
