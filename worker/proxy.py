"""The proxy pipeline: inbound body → provider → upstream HTTP → response back in the client's format.

Same-format traffic (chat → an OpenAI-compatible chat upstream, Messages → Anthropic, Responses → OpenAI) is
forwarded as it came, with only the model id and the `trex*` fields changed, and what the provider requires
(Anthropic's `max_tokens`, a reasoning model's `max_completion_tokens`) or a model smart-auto chose refuses.
Cross-format traffic is decoded into the canonical types of `adapters.base` and encoded for the other side.
Streams are translated event by event and every event is written the moment it is translated.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import email.utils
import functools
import html
import logging
import math
import random
import re
import time
from collections.abc import AsyncIterator, Callable, Iterator, Mapping
from typing import Any, Literal, Protocol, cast

import aiohttp
import msgspec
from aiohttp import web
from aiohttp.base_protocol import BaseProtocol
from multidict import istr
from yarl import URL

from adapters import anthropic, openai_chat, openai_responses
from adapters.base import (
    BlockStop,
    Request,
    Response,
    StreamEnd,
    StreamError,
    StreamEvent,
    StreamFinish,
    StreamStart,
    StreamUsage,
    Text,
    TextDelta,
    TextStart,
    ToolCall,
    ToolCallDelta,
    ToolCallStart,
    TranslationError,
)
from adapters.jsondecode import JsonDecoder
from adapters.sse import COMMENT, SSEEvent, SSEParser, frame
from adapters.transport import UpstreamUnavailable

from . import memory, sessions, stored_owners, tokens
from .accounting import claims
from .accounting.events import Begun, Outcome
from .accounting.usage import Observed
from .appkeys import CONFIG, CTX, abandoned, stamp
from .auth import KeyRecord, MissingProviderKeyError, credential_from_headers
from .catalog import SMART_AUTO, needs, sampling_of, smart_auto, usable
from .errors import (
    AuthenticationError,
    GatewayError,
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
    UpstreamError,
    error_format_for,
)
from .gateway import Gateway
from .headernames import (
    ACCEPT,
    ANTHROPIC_VERSION,
    AUTHORIZATION,
    CONTENT_TYPE,
    X_API_KEY,
    X_FORWARDED_FOR,
    X_TREX_COMPRESSION_MODEL,
    X_TREX_FALLBACK_ATTEMPTS,
    X_TREX_GUARANTEE_STATUS,
    X_TREX_ID,
    X_TREX_PROXY_OVERHEAD_MS,
    X_TREX_TOKEN_COUNT,
    X_TREX_UPSTREAM_MODEL,
    X_TREX_UPSTREAM_PROVIDER,
    X_TREX_USAGE_EVENT_ID,
    X_UPSTREAM_API_KEY,
)
from .holds import DEFAULT_HOLD_OUTPUT_TOKENS, Estimate
from .logs import elapsed_ms
from .optimize.pipeline import Report, optimize
from .optimizing import count_tokens, resolve_options, runs_inline, savings_headers, session_id
from .optimizing import run as run_optimizer
from .quotas import Admission, InsufficientBalanceError, ModelNotAllowedError, uses_web_search
from .routing import PROVIDER_NAMES, ModelRoute, Provider, checked_model, checked_stream, resolve

InboundFormat = Literal["chat", "responses", "messages"]
UpstreamWire = Literal["chat", "responses", "messages"]

_decoder = JsonDecoder()
_encoder = msgspec.json.Encoder()
error_log = logging.getLogger("trex.error")
log = logging.getLogger("trex.proxy")

# Upstream response headers worth passing on: rate-limit state and when to retry.
_FORWARD_HEADER_PREFIXES = ("x-ratelimit-", "anthropic-ratelimit-")
_FORWARD_HEADERS = ("retry-after", "retry-after-ms", "request-id")
_FORWARD_INITIALS = frozenset(
    c for name in (*_FORWARD_HEADERS, *_FORWARD_HEADER_PREFIXES) for c in (name[0], name[0].upper())
)
_ERROR_BODY_LIMIT = 1 << 20


class Relay(Protocol):
    """Turns upstream SSE events into client bytes."""

    @property
    def done(self) -> bool: ...

    @property
    def failed(self) -> bool:
        """The upstream ended the stream with an error event of its own (done, but not completed)."""
        ...

    @property
    def finished(self) -> bool:
        """The upstream has sent its finish signal (a finish_reason, Anthropic's message_delta): the answer is
        complete, and an end of the stream without its terminator is a normal end, as the SDKs take it."""
        ...

    def feed(self, event: SSEEvent) -> bytes: ...

    def end(self) -> bytes:
        """The terminator the upstream left out, in the client's format."""
        ...

    def fail(self, message: str) -> bytes: ...


# ---- entry points ------


async def authenticate(request: web.Request, gw: Gateway) -> KeyRecord:
    """The calling key (401 in the client's format otherwise); its last use is recorded after the response."""
    token = credential_from_headers(request.headers)
    key, digest = gw.keys.authenticate_cached(token)
    if key is None:
        key = await gw.keys.authenticate(token, digest)
    ctx = request[CTX]
    ctx.key_id = key.id
    limits = gw.limits
    if limits.enabled:
        ip = limits.client_ip(request.remote, request.headers.get(X_FORWARDED_FOR))
        # 429 over a limit; released when the response is done
        ctx.rate = await limits.admit(key, ip)
    touch = gw.keys.touch(key.id)
    if touch is not None:
        ctx.wait_until(touch)
    return key


def unavailable(provider: str, exc: UpstreamUnavailable, headers: dict[str, str]) -> UpstreamError:
    """What a client is told of an upstream it could not be sent to, or that did not answer in time: a 502
    `upstream_unreachable` or a 504 `upstream_timeout`, whichever route it called."""
    timed_out = exc.kind == "timeout"
    return UpstreamError(
        f"Upstream {provider} unavailable: {exc}",
        status=504 if timed_out else 502,
        code="upstream_timeout" if timed_out else "upstream_unreachable",
        headers=headers,
    )


async def proxy(
    request: web.Request, gw: Gateway, key: KeyRecord, fmt: InboundFormat, body: dict[str, Any], raw: bytes
) -> web.StreamResponse:
    """Serve one model request end to end (`body`: the request's body `raw` decoded)."""
    ctx = request[CTX]
    model = checked_model(body.get("model"))
    stream = checked_stream(body.get("stream"))
    trex = body.pop("trex", None)
    client_claims = claims.parse(body.pop("trex_accounting", None))
    smart = model == SMART_AUTO
    # smart-auto is routed once the optimized size is known; any other model fails fast, before optimizing.
    route = None if smart else resolve(model, gw.models)
    override = _override(request)  # read once: it is needed several times below
    if override is not None:  # the client's own key is for the provider of the model it named
        ctx.override_for = route.provider if route is not None else _override_provider(request)
    api_key = None
    if route is not None:
        known, api_key = _known_provider_key(request, gw, key, route.provider, override)
        if not known:
            api_key = await provider_key(request, gw, key, route.provider)
    # The plan: model allowed, web search allowed, quota left, credits. A key on no plan has nothing to check
    # (admission None), found without a coroutine.
    admission = None
    if gw.quotas.applies(key):
        listed = gw.catalog.get(model)
        admitted = ctx.rate
        admission = await gw.quotas.admit(
            key,
            model,
            # Only a request forwarded as sent can ask for a search: a translation refuses one (a 400 below),
            # and what is refused uses up nothing.
            web_search=uses_web_search(body) if route is None or _wire(fmt, route) == fmt else None,
            tier=listed.info.tier if listed is not None else None,
            in_flight=admitted.in_flight if admitted is not None else 0,
        )
    # Until the request is ready to send, a refusal (a bad TrexID or option, a body too large once expanded,
    # no usable route, no credits for long context) gives back what admission counted: it uses up no quota.
    try:
        encoding, exact = tokens.encoding_for_model(route.upstream_model if route is not None else "gpt-5")
        options = resolve_options(
            trex,
            request.headers,
            gw.optimize_mode,
            gw.protect_recent_turns,
            key_mode=key.optimize_mode,
            profile=request.headers.get(X_TREX_COMPRESSION_MODEL),
            encoding=encoding,
            profile_from="X-Trex-Compression-Model",
        )
        store_ttl = memory.store_option(trex, gw.memory_ttl_seconds)
        session, named = session_id(request.headers)  # 400 for an unusable X-Session-Id
        settings = sessions.settings_of(options)
        # A session matches the messages as the client sent them, references unexpanded: as it sends them
        # again next turn. With optimization off the client's messages go as they are: nothing is replayed.
        hashes: list[str] | None = None
        if not named and gw.implicit_sessions and options.mode != "off":
            anchored = sessions.anchored_id(key.id, fmt, body)
            if anchored is not None:  # a conversation past its first exchange: its session is found by it
                (session, hashes), named = anchored, True
        if named and options.mode != "off":
            replay = await sessions.lookup(
                gw.kv, key.id, session, fmt, body, gw.session_budget_tokens, settings, hashes
            )
        else:  # a generated id is new (nothing stored to replay, so no KV read), or optimization is off
            # Its hashes serve only to remember this turn, which happens below only under a named session or
            # with implicit sessions off.
            replay = sessions.fresh(fmt, body, settings, remembered=named or not gw.implicit_sessions)
        # TrexID references are expanded before anything else reads the messages (404/403 before forwarding),
        # but for the prefix about to be replayed, whose forwarded bytes carry their expansions (and a
        # context_ref already among them is not added again). The body as read, grown by the expansions,
        # which may not take it past the body limit: that size decides what runs off the loop.
        received = size = len(raw)
        if trex is not None or memory.may_refer(raw):  # else nothing in it can be a reference
            size += await memory.expand_refs(
                gw.payloads,
                key.id,
                fmt,
                body,
                trex,
                gw.embeddings,
                size=size,
                limit=gw.max_body_bytes,
                skip=replay.replayed,
                sent=replay.carries if replay.replayed else None,
                placed=replay.keep_before,
            )
        original_text = memory.context_text(fmt, body) if store_ttl is not None else None
        received_tokens: int | None = None
        if replay.replayed:
            # "Original" is counted on what the client sent; the replayed messages are what was forwarded.
            received_tokens = await count_tokens(fmt, body, encoding, size)
            replay.apply(body)
            options = dataclasses.replace(options, frozen_items=replay.replayed)
        report = (
            optimize(fmt, body, options)
            if runs_inline(size)
            else await run_optimizer(fmt, body, options, size)
        )
        if replay.replayed and received_tokens is not None:
            report.original_tokens = max(received_tokens, report.optimized_tokens)
        report.note_session(replay.replayed, replay.reoptimize)
        admission = gw.quotas.long_context(admission, report.optimized_tokens)
        chain = _fallbacks(trex)
        attempts: list[dict[str, Any]] = []
        if route is None:
            # smart-auto's choice, not the client's: one that cannot take the request is skipped like a
            # fallback.
            choices = await _smart_auto(request, gw, key, fmt, body, report.optimized_tokens)
            ranked = iter(choices[: _MAX_FALLBACKS + 1])
            prepared, api_key = await _first_preparable(request, gw, key, fmt, body, stream, ranked, attempts)
            route, chain = prepared.route, [*ranked, *chain]
        else:
            prepared = _prepare(fmt, body, stream, route, gw)
        if admission is not None and admission.credits:  # what it may cost is held before anything is kept
            estimate = _credit_estimate(gw, fmt, prepared, body, report.optimized_tokens)
            admission = await gw.quotas.hold(admission, estimate)
        fallbacks = iter(chain)
        out_headers = savings_headers(report, session)
        if store_ttl is not None and original_text is not None:
            summary = memory.context_text(fmt, body)
            kept = await memory.store(gw.payloads, key.id, summary, original_text, store_ttl, gw.embeddings)
            out_headers[X_TREX_ID] = kept.trex_id
        if not exact:
            out_headers[X_TREX_TOKEN_COUNT] = "estimate"
    except BaseException:
        await gw.quotas.give_back(admission)
        raise
    acct = _begin_usage(
        request,
        gw,
        key,
        route,
        model,
        stream,
        session,
        report,
        encoding,
        exact,
        received,
        prepared.payload,
        client_claims,
    )
    if acct is not None:
        acct.admission = admission
        out_headers[X_TREX_USAGE_EVENT_ID] = acct.event.id
        if gw.usage is not None:  # no await for the many keys whose plan tracks no guarantee
            standing = gw.usage.guarantee_now(key)
            out_headers[X_TREX_GUARANTEE_STATUS] = standing or await gw.usage.guarantee(key)
        else:
            out_headers[X_TREX_GUARANTEE_STATUS] = ""

    # Attempts: the route, retried on retryable failures with jittered backoff (or the upstream's
    # Retry-After) while that fits the deadline, then each `trex.routing.fallbacks` entry the same way.
    # Every attempt happens before any byte reaches the client, so a fallback never duplicates output.
    deadline = time.monotonic() + gw.retry_deadline
    tries = 0
    sent = time.perf_counter()
    while True:
        cand = prepared.route
        out_headers[X_TREX_UPSTREAM_PROVIDER] = cand.provider
        out_headers[X_TREX_UPSTREAM_MODEL] = cand.upstream_model
        allowed = gw.breakers.allowed(cand.provider, cand.upstream_model) if tries == 0 else True
        if allowed is None:
            allowed = await gw.breakers.allow(cand.provider, cand.upstream_model)
        if not allowed:
            attempts.append(
                {
                    "provider": cand.provider,
                    "model": cand.upstream_model,
                    "status": None,
                    "error": "circuit open",
                }
            )
            following = await _next_fallback(
                request, gw, key, fmt, body, stream, fallbacks, attempts, admission, report.optimized_tokens
            )
            if following is None:
                _record_attempts(gw, acct, attempts, cand)
                _finish_usage(gw, acct, 503, "upstream_failed", None)
                if all(a.get("status") is None for a in attempts):  # no upstream was ever sent it
                    # Its credit hold is released with its (failed) usage event.
                    await gw.quotas.give_back(admission, release=acct is None)
                raise UpstreamError(
                    f"Upstream {cand.provider} ({cand.upstream_model}) is failing and paused for a moment; "
                    "retry shortly or add a fallback.",
                    status=503,
                    code="provider_unavailable",
                    headers={
                        **out_headers,
                        "Retry-After": str(gw.breakers.retry_after(cand.provider, cand.upstream_model)),
                    },
                )
            prepared, api_key, admission = following
            if acct is not None:
                acct.admission = admission
            continue
        began = time.perf_counter()
        failure: UpstreamUnavailable | None = None
        resp: aiohttp.ClientResponse | None = None
        answer_body: bytes | None = None
        read_error: TimeoutError | aiohttp.ClientError | None = None
        try:
            resp = await gw.upstream.request(
                cand.provider,
                "POST",
                _upstream_url(gw, cand.provider, prepared.wire),
                prepared.payload,
                _upstream_headers(request, gw, cand.provider, api_key),
            )
        except UpstreamUnavailable as exc:
            failure = exc
        except asyncio.CancelledError:
            # The client hung up (or shutdown cut it off) while the upstream worked on it: the call is dropped
            # and what it used is estimated.
            _finish_usage(gw, acct, 200, abandoned(request), None)
            raise
        except BaseException:
            _finish_usage(gw, acct, 500, "upstream_failed", None)  # never leave an event pending forever
            raise
        status = resp.status if resp is not None else (504 if failure and failure.kind == "timeout" else 502)
        carried = None
        unusable: str | None = None
        head: _Head | None = None
        sse = resp is not None and _is_event_stream(resp)  # read once: asked again below
        if resp is not None and status < 300 and stream and sse:
            # A stream is read up to its first event of substance before the client is answered: one that
            # fails there (Anthropic's overloaded_error as its first event, a stream that ends or stalls
            # before any) has sent the client nothing yet: it is retried and falls back like the status it
            # stands for.
            try:
                head = await _first_event(resp, prepared.wire, gw.first_event_wait)
            except asyncio.CancelledError:
                resp.close()
                _finish_usage(gw, acct, 200, abandoned(request), None)
                raise
            if head.failed is not None:
                status, unusable = head.failed
        if resp is not None and status < 300 and not sse:
            # A JSON answer is read before it is accepted: OpenRouter reports a failure met after it began as
            # HTTP 200 with only an error, which is retried and falls back like the status it carries; an
            # answer cut off, or one no SDK could read (an HTML page from a proxy, `{}`), like a bad gateway.
            try:
                answer_body = await resp.read()  # bounded by the session's total and idle timeouts
            except (TimeoutError, aiohttp.ClientError) as exc:
                read_error = exc  # reported below, as before this answer was read here
            except asyncio.CancelledError:
                resp.close()
                _finish_usage(gw, acct, 200, abandoned(request), None)
                raise
            carried = _error_in_body(answer_body) if answer_body is not None else None
            if carried in _RETRYABLE:
                status = carried
            elif read_error is not None:
                status = 504 if isinstance(read_error, TimeoutError) else 502
                unusable = f"an answer cut off ({read_error.__class__.__name__})"
            elif carried is None and answer_body is not None:
                unusable = _unreadable_answer(prepared.wire, answer_body)
                status = 502 if unusable is not None else status
        elif resp is not None and status < 300 and not stream:
            # An event stream for a request that asked for one JSON answer: no SDK reads it as that answer.
            status, unusable = 502, "an event stream to a request for one answer"
        attempt: dict[str, Any] = {
            "provider": cand.provider,
            "model": cand.upstream_model,
            "status": status,
            "latency_ms": elapsed_ms(began),
        }
        if failure is not None:
            attempt["error"] = str(failure)
        elif carried is not None and answer_body is not None:
            attempt["error"] = _upstream_error_detail(answer_body, carried)[0]
        elif unusable is not None:
            attempt["error"] = f"returned {unusable}"
        attempts.append(attempt)
        if resp is not None and status not in _RETRYABLE:
            closing = gw.breakers.succeeded(cand.provider, cand.upstream_model)  # it answered: it is up
            if closing is not None:
                await closing
            upstream, upstream_sse = resp, sse
            break
        if status != 429:  # a rate limit (often one key's own) is retried, not held against the route
            # A failure with the client's own provider key may be that key's or its account's (its limits,
            # its long generations passing the timeout): it is not held against the route everyone shares.
            await gw.breakers.failed(
                cand.provider, cand.upstream_model, counted=not _uses_own_key(request, cand.provider)
            )
        wait = _retry_wait(gw, tries, deadline, resp)
        again = wait is not None
        following = None
        if not again and time.monotonic() < deadline:  # no fallback starts past the deadline either
            try:
                following = await _next_fallback(
                    request,
                    gw,
                    key,
                    fmt,
                    body,
                    stream,
                    fallbacks,
                    attempts,
                    admission,
                    report.optimized_tokens,
                )
            except BaseException:
                # Its hold's KV round trip failed (a 503) or the client hung up meanwhile: the failed answer,
                # kept in case no fallback took over, is let go rather than left holding its connection.
                if resp is not None:
                    resp.close()
                raise
        if not again and following is None:
            if resp is not None:
                upstream, upstream_sse = resp, sse  # nothing left to try: the client gets this one
                break
            assert failure is not None
            _record_attempts(gw, acct, attempts, cand)
            _finish_usage(gw, acct, status, "upstream_failed", None)
            raise unavailable(cand.provider, failure, out_headers) from failure
        if head is not None and resp is not None:
            resp.close()  # a failed stream is not read to its end
        elif resp is not None:
            await _discard(resp)
        if wait is not None:
            await asyncio.sleep(wait)
            tries += 1
        else:
            assert following is not None
            prepared, api_key, admission = following
            if acct is not None:
                acct.admission = admission
            tries = 0
    answered = time.perf_counter()
    route, wire, wants_usage = prepared.route, prepared.wire, prepared.wants_usage
    _record_attempts(gw, acct, attempts, route)
    out_headers[X_TREX_FALLBACK_ATTEMPTS] = (
        str(sum(1 for a in attempts[:-1] if a.get("status"))) if len(attempts) > 1 else "0"
    )
    out_headers.update(_forwarded_headers(upstream.headers))
    if acct is not None:
        overhead = (sent - acct.started) * 1000
        out_headers[X_TREX_PROXY_OVERHEAD_MS] = f"{overhead + (time.perf_counter() - answered) * 1000:.2f}"
    try:
        if upstream.status >= 400:
            _finish_usage(gw, acct, upstream.status, "upstream_error", None)
            return await _error_response(request, upstream, fmt, wire, out_headers, api_key)
        if upstream.status >= 300:  # redirects are not followed (see adapters.transport)
            raise _redirected(route.provider, upstream.status, out_headers)
        # Remember what was forwarded once the upstream has accepted it, after the response. Under an id the
        # worker generated, only when that id is the one way back to it (implicit sessions off): otherwise
        # the conversation has not had its first exchange, nothing of it would be replayed, and storing it
        # would keep every one-shot request (a system prompt and a question) for SESSION_TTL_SECONDS.
        if replay.field is not None and (named or (replay.hashes and not gw.implicit_sessions)):
            ctx.wait_until(
                sessions.remember(
                    gw.kv,
                    key.id,
                    session,
                    fmt,
                    body,
                    replay,
                    report.optimized_tokens,
                    gw.session_ttl_seconds,
                    # A new session counts against its key's day of stored bytes, whether the client named it
                    # or its opening exchange did; one under an id the worker made up (a conversation before
                    # its first exchange) does not, or ordinary requests would use up the budget of payloads.
                    gw.payloads.bytes_per_day if named else 0,
                )
            )
        # What OpenAI stores for this request is recorded as this key's (stored_owners); nothing else is.
        # (With the client's own OpenAI key the object is in its own project: nothing to record.)
        made = (
            stored_owners.kind_made(wire, body)
            if fmt == wire
            and route.provider == "openai"
            and (override is None or ctx.override_for not in (None, "openai"))  # not with its own key
            else None
        )
        if stream and upstream_sse:
            relay: Relay = _make_relay(fmt, wire, route, body, wants_usage)
            if made is not None:
                relay = stored_owners.OwnedStream(relay, ctx, gw.kv, made, key.id)
            chunks: list[bytes] | None = [] if acct is not None else None
            try:
                response, outcome = await _stream(request, upstream, relay, out_headers, chunks, head)
            except asyncio.CancelledError:
                # Cut off mid-stream (the client hung up, or a shutdown past its grace period): what was
                # streamed is billed, from its usage if it came, else estimated from the bytes.
                if acct is not None and gw.usage is not None:
                    gw.usage.complete(
                        acct, http_status=200, outcome=abandoned(request), wire=wire, chunks=chunks
                    )
                raise
            if acct is not None and gw.usage is not None:
                gw.usage.complete(acct, http_status=200, outcome=outcome, wire=wire, chunks=chunks)
            # What follows the stream's end is read only now that its outcome is recorded: a client that has
            # read its whole response may hang up meanwhile (cancelling this), and changes nothing by it.
            if outcome != "client_disconnected":
                await _drain(upstream)
            return response
        if read_error is not None:
            raise read_error
        if answer_body is None:  # a stream to a request for one answer (judged with its attempt)
            raise UpstreamError(
                f"Upstream {route.provider} returned {unusable}.",
                code="bad_upstream_response",
                headers=out_headers,
            )
        data = answer_body
        failed_status = carried  # read with the attempt that was accepted
        if failed_status is not None:
            _finish_usage(gw, acct, failed_status, "upstream_error", None)
            return _error_from(request, data, failed_status, fmt, wire, out_headers, api_key)
        if made is not None:
            ctx.wait_until(stored_owners.remember_answer(gw.kv, made, data, key.id))
        if fmt == wire and not stream:
            problem = unusable  # judged when its attempt read it (`_unreadable_answer`), not decoded again
            if problem is not None:
                # Forwarded, an SDK would fail to parse it (empty, HTML, an SSE stream), or hand the client an
                # answer object without its answer (`{}`): a 502 in the client's format instead.
                raise UpstreamError(
                    f"Upstream {route.provider} returned {problem}.",
                    code="bad_upstream_response",
                    headers=out_headers,
                )
            if acct is not None and gw.usage is not None:
                gw.usage.complete(
                    acct, http_status=upstream.status, outcome="completed", wire=wire, body=data
                )
            return web.Response(
                body=data, status=upstream.status, headers=out_headers, content_type="application/json"
            )
        work: Callable[[], Response | bytes] = (
            # The upstream answered a stream request with one JSON body: it is replayed as a stream below.
            functools.partial(_decode_answer, wire, data, route.provider)
            if stream
            else functools.partial(_translated, fmt, wire, data, route.provider, body)
        )
        done = await asyncio.to_thread(work) if len(data) >= _OFF_LOOP_ANSWER_BYTES else work()
        # Usage is read from the body as sent (OpenRouter's reported cost too), after the response.
        if acct is not None and gw.usage is not None:
            gw.usage.complete(acct, http_status=upstream.status, outcome="completed", wire=wire, body=data)
        if isinstance(done, Response):
            relay = _make_relay(fmt, "canonical", route, body, wants_usage)
            return await _replay(request, done, relay, out_headers)
        return web.Response(body=done, headers=out_headers, content_type="application/json")
    except TimeoutError as exc:
        _finish_usage(gw, acct, 504, "upstream_failed", None)
        raise UpstreamError(
            f"Upstream {route.provider} timed out.", status=504, code="upstream_timeout", headers=out_headers
        ) from exc
    except aiohttp.ClientError as exc:
        _finish_usage(gw, acct, 502, "upstream_failed", None)
        raise UpstreamError(
            f"Upstream {route.provider} failed: {exc.__class__.__name__}.",
            code="upstream_error",
            headers=out_headers,
        ) from exc
    except GatewayError as exc:
        _finish_usage(gw, acct, exc.status, "upstream_failed", None)
        # An answer the worker cannot use (not JSON, a shape it cannot translate) still reaches the client
        # with what every answer carries: its usage event, the upstream that answered, the rate-limit state.
        exc.headers = {**out_headers, **exc.headers}
        raise
    except asyncio.CancelledError:  # the client hung up (or shutdown) while the answer was being read
        upstream.close()  # drop the upstream connection rather than read an answer nobody wants
        _finish_usage(gw, acct, upstream.status if upstream.status >= 400 else 200, abandoned(request), None)
        raise
    finally:
        upstream.release()
        if acct is not None and acct.outcome == "pending":  # an unexpected failure: account it, never leak it
            _finish_usage(gw, acct, 500, "upstream_failed", None)


# ---- attempts: retries and fallbacks ------

_RETRYABLE = frozenset({429, 502, 503, 504, 529})  # 529: Anthropic's "overloaded"
_MAX_FALLBACKS = 5


@dataclasses.dataclass(slots=True)
class _Prepared:
    """One candidate's upstream request, built for its wire format."""

    route: ModelRoute
    wire: UpstreamWire
    payload: bytes
    wants_usage: bool


def _prepare(
    fmt: InboundFormat, body: dict[str, Any], stream: bool, route: ModelRoute, gw: Gateway
) -> _Prepared:
    wire = _wire(fmt, route)
    wants_usage = True
    if fmt == wire:
        upstream_body = dict(body)  # a shallow copy: a fallback may need the client's body again
        upstream_body["model"] = route.upstream_model
        if wire == "messages" and upstream_body.get("max_tokens") is None:
            upstream_body["max_tokens"] = gw.default_max_tokens  # Anthropic requires it
        if body.get("model") == SMART_AUTO:
            # smart-auto's choice, not the client's: what the client set for any model, the chosen one must
            # take. (A model the client named gets its body as sent, and the provider's answer to it.)
            _fit_chosen_model(upstream_body, route, wire)
        if (
            wire == "chat"
            and route.provider == "openai"
            and "max_tokens" in upstream_body
            and "max_completion_tokens" not in upstream_body
            and route.upstream_model.startswith(openai_chat.REASONING_MODELS)
        ):
            # OpenAI's reasoning models refuse `max_tokens` ("use max_completion_tokens"), which older
            # clients, and smart-auto's choice of such a model, would otherwise run into.
            upstream_body["max_completion_tokens"] = upstream_body.pop("max_tokens")
        if wire == "chat" and stream:
            stream_options = body.get("stream_options")
            stream_options = dict(stream_options) if isinstance(stream_options, dict) else {}
            # OpenRouter sends its usage chunk (with the cost) whatever was asked: its clients expect it.
            wants_usage = stream_options.get("include_usage") is True or route.provider == "openrouter"
            # We always need the usage; the client sees the usage chunk only if it asked for it.
            stream_options["include_usage"] = True
            upstream_body["stream_options"] = stream_options
    else:
        upstream_body = _encode_request(wire, _decode_request(fmt, body), route, gw)
        if fmt == "chat" and stream:
            client_options = body.get("stream_options")
            wants_usage = isinstance(client_options, dict) and client_options.get("include_usage") is True
    return _Prepared(route, wire, _encoder.encode(upstream_body), wants_usage)


_OUTPUT_CAPS: Mapping[InboundFormat, tuple[str, ...]] = {
    "chat": ("max_tokens", "max_completion_tokens"),
    "messages": ("max_tokens",),
    "responses": ("max_output_tokens",),
}
"""The fields that cap a request's output, by inbound format (the first is the one a 402 names by default)."""


def _credit_estimate(
    gw: Gateway, fmt: InboundFormat, prepared: _Prepared, body: dict[str, Any], input_tokens: int
) -> Estimate:
    """What a request on Compute Credits may cost at most on `prepared`'s route (see `holds`): its input at
    the input price, and its output cap at the output price — the client's cap, at most the model's catalog
    maximum; else the `max_tokens` an Anthropic upstream is sent; else the catalog maximum; else the
    default — for each of a chat request's `n` choices."""
    route = prepared.route
    listed = gw.catalog.get(route.model)
    ceiling = listed.info.max_output if listed is not None and listed.info.max_output > 0 else None
    fields = _OUTPUT_CAPS[fmt]
    asked = [
        (v, f) for f in fields if isinstance(v := body.get(f), int) and not isinstance(v, bool) and v > 0
    ]
    field = max(asked)[1] if asked else fields[0]
    if asked:
        cap = min(max(asked)[0], ceiling) if ceiling is not None else max(asked)[0]
    elif prepared.wire == "messages":
        cap = gw.default_max_tokens
    else:
        cap = ceiling or DEFAULT_HOLD_OUTPUT_TOKENS
    priced = gw.prices.for_route(route.model, route.provider, route.upstream_model)
    price = priced[1] if priced is not None else None
    # A chat request's `n` choices may each generate the cap, all billed (a translated request refuses n > 1,
    # and the Messages and Responses APIs have no `n`).
    n = body.get("n") if fmt == "chat" else None
    return Estimate(
        input_tokens,
        cap,
        field,
        price.input if price is not None else 0.0,
        price.output if price is not None else 0.0,
        n if isinstance(n, int) and not isinstance(n, bool) and n > 1 else 1,
    )


def _wire(fmt: InboundFormat, route: ModelRoute) -> UpstreamWire:
    """The format `route` is sent a request of `fmt` in: the client's own (forwarded as sent), or not
    (translated)."""
    return "responses" if fmt == "responses" and route.provider == "openai" else route.wire


def _fit_chosen_model(body: dict[str, Any], route: ModelRoute, wire: UpstreamWire) -> None:
    """Leave out of a same-format body what the model smart-auto chose refuses: an OpenAI reasoning model's
    refused sampling parameters and stop sequences, a Claude model's refused sampling parameters."""
    if route.provider == "openai" and route.upstream_model.startswith(openai_chat.REASONING_MODELS):
        openai_chat.fit_reasoning_model(body, responses=wire == "responses")
    elif wire == "messages":
        anthropic.fit_sampling(body, sampling_of(route.upstream_model))


_KEEP_ALIVE = b": keep-alive\n\n"
# The terminators a same-format stream may end without once it has finished (see `Relay.finished`).
_DONE = b"data: [DONE]\n\n"
_MESSAGE_STOP = b'event: message_stop\ndata: {"type":"message_stop"}\n\n'


def _fallbacks(trex: Any) -> list[ModelRoute]:
    """`trex.routing.fallbacks` as routes (400 naming the field when malformed)."""
    routing = trex.get("routing") if isinstance(trex, dict) else None
    if routing is None:
        return []
    if not isinstance(routing, dict):
        raise InvalidRequestError("'trex.routing' must be an object.", param="trex.routing")
    raw = routing.get("fallbacks")
    if raw is None:
        return []
    where = "trex.routing.fallbacks"
    if not isinstance(raw, list) or len(raw) > _MAX_FALLBACKS:
        raise InvalidRequestError(
            f"'{where}' must be a list of at most {_MAX_FALLBACKS} entries.", param=where
        )
    routes = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise InvalidRequestError(f"'{where}[{i}]' must be an object.", param=f"{where}[{i}]")
        provider, name = entry.get("provider"), entry.get("model")
        if provider not in PROVIDER_NAMES:
            raise InvalidRequestError(
                f"'{where}[{i}].provider' must be one of {', '.join(PROVIDER_NAMES)}.",
                param=f"{where}[{i}].provider",
            )
        name = checked_model(name, f"{where}[{i}].model")
        upstream = name[6:] if provider == "local" and name.startswith("local/") else name
        routes.append(ModelRoute(name, provider, upstream))
    return routes


_UNUSABLE = (MissingProviderKeyError, InvalidRequestError, ModelNotAllowedError, InsufficientBalanceError)
"""Why a candidate route cannot be tried for this key and request: no provider key, a request its provider
cannot take, a model the plan does not allow, or one on credits the key lacks."""


def _skipped(route: ModelRoute, exc: GatewayError) -> dict[str, Any]:
    """The usage event's record of a candidate that was never sent the request."""
    return {"provider": route.provider, "model": route.upstream_model, "status": None, "error": exc.message}


async def _first_preparable(
    request: web.Request,
    gw: Gateway,
    key: KeyRecord,
    fmt: InboundFormat,
    body: dict[str, Any],
    stream: bool,
    ranked: Iterator[ModelRoute],
    attempts: list[dict[str, Any]],
) -> tuple[_Prepared, str | None]:
    """smart-auto's first choice that can be sent this request (the ones before it are recorded as skipped);
    when none can, the refusal of the first."""
    first: GatewayError | None = None
    for route in ranked:
        try:
            api_key = await provider_key(request, gw, key, route.provider)
            return _prepare(fmt, body, stream, route, gw), api_key
        except (MissingProviderKeyError, InvalidRequestError) as exc:
            attempts.append(_skipped(route, exc))
            first = first or exc
    assert first is not None  # smart_auto returns at least one route
    raise first


async def _next_fallback(
    request: web.Request,
    gw: Gateway,
    key: KeyRecord,
    fmt: InboundFormat,
    body: dict[str, Any],
    stream: bool,
    fallbacks: Iterator[ModelRoute],
    attempts: list[dict[str, Any]],
    admission: Admission | None,
    input_tokens: int,
) -> tuple[_Prepared, str | None, Admission | None] | None:
    """The next fallback this key can use, and how its request is then charged; one without a provider key,
    that the key's plan does not allow (or allows on credits it lacks), or that cannot take this request, is
    recorded as skipped. On credits, it holds what the fallback may cost in place of what was held."""
    admitted = request[CTX].rate
    for route in fallbacks:
        try:
            api_key = await provider_key(request, gw, key, route.provider)
            prepared = _prepare(fmt, body, stream, route, gw)
            if admission is None:  # no plan: nothing to check
                return prepared, api_key, None
            listed = gw.catalog.get(route.model)
            charged = await gw.quotas.admit_fallback(
                key,
                admission,
                route.model,
                tier=listed.info.tier if listed is not None else None,
                in_flight=admitted.in_flight if admitted is not None else 0,
                estimate=functools.partial(_credit_estimate, gw, fmt, prepared, body, input_tokens),
            )
            return prepared, api_key, charged
        except _UNUSABLE as exc:
            attempts.append(_skipped(route, exc))
    return None


async def reachable_providers(
    request: web.Request, gw: Gateway, key: KeyRecord, *, chosen_for_the_client: bool = False
) -> set[Provider]:
    """Providers this request can reach: the bound ones and the local server (which needs no key); with an
    `X-Upstream-Api-Key` override, every provider for a model the client names (the override is for its
    provider), but for one chosen for it (smart-auto) only the provider the override's format names."""
    bound = await gw.keys.bound_providers(key.id)
    reachable: set[Provider] = {p for p in PROVIDER_NAMES if p in bound or p == "local"}
    if _override(request) is not None:
        if not chosen_for_the_client:
            return set(PROVIDER_NAMES)
        reachable.add(_override_provider(request))
    return reachable


def _override(request: web.Request) -> str | None:
    value = request.headers.get(X_UPSTREAM_API_KEY)
    return value.strip() if value and value.strip() else None


def _uses_own_key(request: web.Request, provider: Provider) -> bool:
    """True when a call to `provider` for this request goes with the client's `X-Upstream-Api-Key`."""
    return _override(request) is not None and request[CTX].override_for in (None, provider)


def _override_provider(request: web.Request) -> Provider:
    """The provider an `X-Upstream-Api-Key` override is for: the requested model's (set by `proxy`), else the
    one its key format names (Anthropic's `sk-ant-`, OpenRouter's `sk-or-`; other keys are OpenAI's)."""
    known = request[CTX].override_for
    if known is not None:
        return cast(Provider, known)
    secret = _override(request) or ""
    return (
        "anthropic"
        if secret.startswith("sk-ant-")
        else "openrouter"
        if secret.startswith("sk-or-")
        else "openai"
    )


async def _smart_auto(
    request: web.Request,
    gw: Gateway,
    key: KeyRecord,
    fmt: InboundFormat,
    body: dict[str, Any],
    tokens_in: int,
) -> list[ModelRoute]:
    plan = gw.quotas.plans.get(key.plan) if key.plan else None
    reachable = await reachable_providers(request, gw, key, chosen_for_the_client=True)
    entries = usable(gw.catalog, reachable, plan)
    need, requested = needs(body, fmt)
    return smart_auto(entries, gw.prices, tokens_in, need, requested, plan.credit_models if plan else ())


def _retry_after(headers: Mapping[str, str]) -> float | None:
    """Seconds from `retry-after-ms`, or `Retry-After` in seconds or as an HTTP date; None when absent or
    not a sensible wait (negative, not a number), so the normal backoff applies."""
    ms = headers.get("retry-after-ms")
    if ms:
        with contextlib.suppress(ValueError):
            wait = float(ms) / 1000
            if math.isfinite(wait) and wait >= 0:
                return wait
    value = headers.get("Retry-After")
    if not value:
        return None
    with contextlib.suppress(ValueError):
        wait = float(value)
        return wait if math.isfinite(wait) and wait >= 0 else None
    with contextlib.suppress(TypeError, ValueError, IndexError):
        when = email.utils.parsedate_to_datetime(value)
        if when.tzinfo is not None:
            return max(0.0, when.timestamp() - time.time())
    return None


def _retry_wait(
    gw: Gateway, tries: int, deadline: float, failed: aiohttp.ClientResponse | None
) -> float | None:
    """How long to wait before retrying the same route after `tries` retries (the upstream's Retry-After on
    its failed answer, else the backoff), or None when no retry is left or the wait is too long or would
    end past the deadline."""
    if tries >= gw.retries:
        return None
    retry_after = _retry_after(failed.headers) if failed is not None else None
    wait = retry_after if retry_after is not None else _backoff(tries)
    return wait if wait <= gw.retry_max_wait and time.monotonic() + wait < deadline else None


def _backoff(tries: int) -> float:
    """Exponential from 0.25 s with full jitter of ±50 %."""
    return float(0.25 * (2**tries) * random.uniform(0.5, 1.5))


async def _discard(resp: aiohttp.ClientResponse) -> None:
    """Drop a failed attempt's answer, keeping the connection reusable when the body is small."""
    try:
        async with asyncio.timeout(1.0):
            await resp.content.read(_ERROR_BODY_LIMIT)
    except (TimeoutError, aiohttp.ClientError):
        resp.close()
    finally:
        resp.release()


def _record_attempts(
    gw: Gateway, acct: Begun | None, attempts: list[dict[str, Any]], route: ModelRoute
) -> None:
    if acct is not None and gw.usage is not None:
        gw.usage.reroute(acct, route.provider, route.upstream_model, attempts)


# ---- usage accounting ------


def _begin_usage(
    request: web.Request,
    gw: Gateway,
    key: KeyRecord,
    route: ModelRoute,
    model: str,
    stream: bool,
    session: str | None,
    report: Report,
    encoding: str,
    exact: bool,
    received: int,
    payload: bytes,
    client_claims: claims.Claims,
) -> Begun | None:
    if gw.usage is None:
        return None
    ctx = request[CTX]
    started = ctx.started
    begun = ctx.usage_event = gw.usage.begin(
        key=key,
        route=request.path,
        provider=route.provider,
        model=model,
        upstream_model=route.upstream_model,
        stream=stream,
        session_id=session,
        original_tokens=report.original_tokens,
        optimized_tokens=report.optimized_tokens,
        encoding=encoding,
        estimated=not exact,
        bytes_before=received,
        bytes_after=len(payload),
        claims=client_claims,
        overhead_ms=elapsed_ms(started),
        started=started,
    )
    return begun


def _finish_usage(
    gw: Gateway,
    acct: Begun | None,
    status: int,
    outcome: Outcome,
    observed: Observed | None,
) -> None:
    if acct is not None and gw.usage is not None:
        gw.usage.complete(acct, http_status=status, outcome=outcome, observed=observed)


async def provider_key(request: web.Request, gw: Gateway, key: KeyRecord, provider: Provider) -> str | None:
    """The override header (for the provider it is for only: a fallback to another provider must never be
    sent the client's key for this one), else the bound key, else (local only) none; otherwise
    `missing_provider_key`."""
    known, value = _known_provider_key(request, gw, key, provider, _override(request))
    if known:
        return value
    return _bound_or_missing(key, provider, await gw.keys.provider_key(key.id, provider))


def _known_provider_key(
    request: web.Request, gw: Gateway, key: KeyRecord, provider: Provider, override: str | None
) -> tuple[bool, str | None]:
    """(True, what `provider_key` answers) when that needs no KV read (the override, or the bound key in the
    key store's cache), else (False, None). `override`: the request's `_override`."""
    if override is not None and request[CTX].override_for in (None, provider):
        return True, override
    hit, bound = gw.keys.cached_provider_key(key.id, provider)
    return (True, _bound_or_missing(key, provider, bound)) if hit else (False, None)


def _bound_or_missing(key: KeyRecord, provider: Provider, bound: str | None) -> str | None:
    if bound:
        return bound
    if provider == "local":
        return None
    raise MissingProviderKeyError(
        f"No {provider} key is bound to proxy key {key.id}. Bind one with "
        f"`trex keys bind {key.id} --provider {provider}`, or send it in the X-Upstream-Api-Key header.",
        param="model",
    )


# ---- request building ------


def _decode_request(fmt: InboundFormat, body: dict[str, Any]) -> Request:
    try:
        if fmt == "chat":
            return openai_chat.decode_request(body)
        if fmt == "messages":
            return anthropic.decode_request(body)
        return openai_responses.decode_request(body)
    except TranslationError as exc:
        code = "unsupported_for_provider" if exc.unsupported else "invalid_request"
        raise InvalidRequestError(_with_param(exc), param=exc.param, code=code) from None


def _encode_request(wire: UpstreamWire, req: Request, route: ModelRoute, gw: Gateway) -> dict[str, Any]:
    try:
        if wire == "messages":
            return anthropic.encode_request(
                req,
                upstream_model=route.upstream_model,
                default_max_tokens=gw.default_max_tokens,
                sampling=sampling_of(route.upstream_model),
            )
        flavor: Literal["openai", "openrouter", "local"] = (
            "openrouter"
            if route.provider == "openrouter"
            else "local"
            if route.provider == "local"
            else "openai"
        )
        return openai_chat.encode_request(req, upstream_model=route.upstream_model, flavor=flavor)
    except TranslationError as exc:
        raise InvalidRequestError(
            _with_param(exc), param=exc.param, code="unsupported_for_provider"
        ) from None


def _with_param(exc: TranslationError) -> str:
    # Anthropic error bodies have no `param`, so the field is named in the message for every client.
    return f"{exc.param}: {exc}" if exc.param and exc.param not in str(exc) else str(exc)


def _upstream_url(gw: Gateway, provider: Provider, wire: UpstreamWire) -> URL | str:
    """The endpoint of `provider` for a `wire` request, parsed once per gateway."""
    url = gw.endpoints.get((provider, wire))
    if url is None:
        url = gw.endpoints[(provider, wire)] = _parsed(_endpoint(gw.base_urls[provider], wire))
    return url


def _endpoint(base: str, wire: UpstreamWire) -> str:
    if wire == "messages":
        return f"{base}/messages" if base.endswith("/v1") else f"{base}/v1/messages"
    return f"{base}/responses" if wire == "responses" else f"{base}/chat/completions"


def _parsed(url: str) -> URL | str:
    """`url` as the `URL` aiohttp would make of it; one it cannot parse stays a string, refused by aiohttp on
    the request as before."""
    try:
        return URL(url)
    except (TypeError, ValueError):
        return url


_CLIENT_HEADERS: Mapping[Provider, tuple[str, ...]] = {
    "openai": (istr("OpenAI-Organization"), istr("OpenAI-Project"), istr("OpenAI-Beta")),
    "anthropic": (istr("anthropic-beta"),),
    "openrouter": (istr("HTTP-Referer"), istr("X-Title")),
    "local": (),
}
# Which organization or project a call is billed to: the client chooses only for its own provider key. With
# the operator's bound key they would let a tenant bill any organization or project that key can reach.
_OWN_KEY_ONLY_HEADERS = frozenset({"OpenAI-Organization", "OpenAI-Project"})


def _upstream_headers(
    request: web.Request, gw: Gateway, provider: Provider, api_key: str | None
) -> dict[str, str]:
    headers = {CONTENT_TYPE: "application/json", ACCEPT: "application/json, text/event-stream"}
    if provider == "anthropic":
        headers[ANTHROPIC_VERSION] = request.headers.get(ANTHROPIC_VERSION) or gw.anthropic_version
        if api_key:
            headers[X_API_KEY] = api_key
    elif api_key:
        headers[AUTHORIZATION] = f"Bearer {api_key}"
    for name in _CLIENT_HEADERS[provider]:
        value = request.headers.get(name)
        if value and (name not in _OWN_KEY_ONLY_HEADERS or _uses_own_key(request, provider)):
            headers[name] = value
    return headers


def _forwarded_headers(headers: Mapping[str, str]) -> dict[str, str]:
    out: dict[str, str] = {}
    for name, value in headers.items():
        # Every header passed on starts with one of these letters; most of an answer's headers (content-*,
        # date, server, openai-*, cf-*, …) are passed over on their first letter, without lowering the name.
        if name[:1] in _FORWARD_INITIALS:
            lower = name.lower()
            if lower in _FORWARD_HEADERS or lower.startswith(_FORWARD_HEADER_PREFIXES):
                out[name] = value
    return out


# ---- non-streaming responses ------


_OFF_LOOP_ANSWER_BYTES = 1 << 20
"""From this size on, an answer that is translated is decoded and translated on a worker thread (the default
executor, which large request bodies are optimized on): tens of MB of JSON (a provider or local server gone
wrong) take a second or more to turn into another format, which on the event loop would hold up every other
request of the instance meanwhile. Below it, the hop to the thread would cost more than it saves."""


def _decode_answer(wire: UpstreamWire, data: bytes, provider: str) -> Response:
    """A 2xx JSON answer in `wire`'s format as the canonical response (else a 502 `UpstreamError`)."""
    return _decode_response(wire, _decode_json(data, provider))


def _translated(
    fmt: InboundFormat, wire: UpstreamWire, data: bytes, provider: str, body: dict[str, Any]
) -> bytes:
    """A 2xx JSON answer in `wire`'s format, as the body of `fmt`'s answer to the client's request `body`."""
    return _encoder.encode(_encode_response(fmt, _decode_answer(wire, data, provider), body))


def _decode_json(data: bytes, provider: str) -> dict[str, Any]:
    try:
        doc = _decoder.decode(data)
    except msgspec.DecodeError:
        doc = None
    if not isinstance(doc, dict):
        raise UpstreamError(
            f"Upstream {provider} returned a body that is not a JSON object.", code="bad_upstream_response"
        )
    return doc


def _decode_response(wire: UpstreamWire, doc: dict[str, Any]) -> Response:
    try:
        if wire == "messages":
            return anthropic.decode_response(doc)
        if wire == "responses":  # only a same-format stream answered with one body gets here
            return openai_responses.decode_response(doc)
        return openai_chat.decode_response(doc)
    except (TranslationError, KeyError, TypeError, ValueError) as exc:
        raise UpstreamError(
            f"Upstream response could not be translated: {exc}", code="bad_upstream_response"
        ) from exc


def _encode_response(fmt: InboundFormat, resp: Response, body: dict[str, Any]) -> dict[str, Any]:
    if fmt == "chat":
        return openai_chat.encode_response(resp, model=resp.model)
    if fmt == "messages":
        return anthropic.encode_response(resp, model=resp.model)
    return openai_responses.encode_response(resp, model=resp.model, request=body)


# ---- errors ------

_CONTEXT_EXCEEDED_RE = re.compile(
    r"context_length_exceeded|maximum context length|context window|too many (?:input )?tokens", re.IGNORECASE
)
_STATUS_ERRORS: Mapping[int, type[GatewayError]] = {
    400: InvalidRequestError,
    401: AuthenticationError,
    402: PaymentRequiredError,
    403: PermissionDeniedError,
    404: NotFoundError,
    413: PayloadTooLargeError,
    422: InvalidRequestError,
    429: RateLimitError,
}


async def _error_response(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    fmt: InboundFormat,
    wire: UpstreamWire,
    headers: dict[str, str],
    secret: str | None,
) -> web.Response:
    data = await upstream.content.read(_ERROR_BODY_LIMIT)
    return _error_from(request, data, upstream.status, fmt, wire, headers, secret)


def _error_from(
    request: web.Request,
    data: bytes,
    status: int,
    fmt: InboundFormat,
    wire: UpstreamWire,
    headers: dict[str, str],
    secret: str | None,
) -> web.Response:
    """The client's response to an upstream error body `data` (with the status it stands for). The provider
    key the request was sent with is masked: some servers echo the credential they refused."""
    if secret and len(secret) >= 8 and secret.encode() in data:
        data = data.replace(secret.encode(), b"***")
    if fmt == wire and _is_error_document(data, fmt):
        # Same format: the upstream's error body is already what the client's SDK expects. Anything else (an
        # HTML page from a load balancer, plain text, an error body of the other format's shape) becomes a
        # structured error below.
        return web.Response(body=data, status=status, headers=headers, content_type="application/json")
    message, code = _upstream_error_detail(data, status)
    if fmt == "messages" and status == 400 and _CONTEXT_EXCEEDED_RE.search(f"{code} {message}"):
        # Claude Code compacts its conversation when it reads this phrase, and only then: without it a long
        # session on a translated model stays stuck at the limit.
        message = f"prompt is too long: {message}"
    cls = _STATUS_ERRORS.get(status, UpstreamError)
    err = cls(message, code=code, status=status, headers=headers)
    if status == 529:
        err.anthropic_type = "overloaded_error"
    return web.Response(
        body=err.body(error_format_for(request.path, request.headers), request[CTX].request_id),
        status=status,
        headers=headers,
        content_type="application/json",
    )


class _ChatAnswer(msgspec.Struct):
    choices: list[msgspec.Raw]


class _MessagesAnswer(msgspec.Struct):
    content: list[msgspec.Raw]


class _ResponsesAnswer(msgspec.Struct):
    output: list[msgspec.Raw]


_ANSWERS: Mapping[UpstreamWire, tuple[str, JsonDecoder[Any]]] = {
    "chat": ("choices", JsonDecoder(_ChatAnswer)),
    "messages": ("content", JsonDecoder(_MessagesAnswer)),
    "responses": ("output", JsonDecoder(_ResponsesAnswer)),
}
"""What a same-format answer must have for the client's SDK to read it, checked without building it."""


def _unreadable_answer(wire: UpstreamWire, data: bytes) -> str | None:
    """What makes a 2xx body unreadable as a `wire` answer (in words), or None for one that is readable."""
    field, decoder = _ANSWERS[wire]
    if not data.lstrip().startswith(b"{"):
        return "a body that is not a JSON object"
    try:
        decoder.decode(data)
    except msgspec.ValidationError:
        return f"an answer without its `{field}` list"
    except msgspec.DecodeError:
        return "a body that is not a JSON object"
    return None


def _is_error_document(data: bytes, fmt: InboundFormat) -> bool:
    """True for a JSON error body of the shape `fmt`'s SDK reads: `{"type": "error", "error": {...}}` for
    Anthropic's, `{"error": {...}}` (and no `type: error`) for OpenAI's."""
    try:
        doc = _decoder.decode(data)
    except msgspec.DecodeError:
        return False
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), dict):
        return False
    return (doc.get("type") == "error") == (fmt == "messages")


def _redirected(provider: str, status: int, headers: dict[str, str]) -> UpstreamError:
    return UpstreamError(
        f"Upstream {provider} answered with a redirect (HTTP {status}); set its base URL to the address it "
        "redirects to.",
        code="bad_upstream_response",
        headers=headers,
    )


def _is_event_stream(resp: aiohttp.ClientResponse) -> bool:
    return resp.headers.get(CONTENT_TYPE, "").startswith("text/event-stream")


def _error_in_body(data: bytes) -> int | None:
    """The status a 2xx body that is only an error stands for (OpenRouter reports errors met after it began
    processing this way: HTTP 200, `{"error": {"code": 502, …}}`), or None for an answer."""
    head = data[:200]
    # An answer's `"error": null` is no error. (bytes.find, not `in`: on Python 3.11 `in` first tries the
    # needle as an int, raising and clearing a TypeError each time, a few thousand instructions.)
    if head.find(b'"error":{') == -1 and head.find(b'"error": {') == -1:
        return None
    try:
        doc = _decoder.decode(data)
    except msgspec.DecodeError:
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("error"), dict):
        return None
    if any(key in doc for key in ("choices", "content", "output")):
        return None
    code = doc["error"].get("code")
    return code if isinstance(code, int) and not isinstance(code, bool) and 400 <= code <= 599 else 502


def _upstream_error_detail(data: bytes, status: int) -> tuple[str, str | None]:
    """Message and code from an OpenAI-shaped or Anthropic-shaped error body."""
    try:
        doc = _decoder.decode(data)
    except msgspec.DecodeError:
        doc = None
    if isinstance(doc, dict) and isinstance(doc.get("error"), dict):
        err = doc["error"]
        message = str(err.get("message") or f"Upstream error {status}")
        meta = err.get("metadata")
        if isinstance(meta, dict):  # OpenRouter: which provider failed, and what it said
            said = " ".join(str(meta[k]) for k in ("provider_name", "raw") if isinstance(meta.get(k), str))
            if said:
                message = f"{message} ({said[:500]})"
        code = err.get("code") or err.get("type")
        return message, str(code) if code else None
    text = data[:_PAGE_BYTES].decode("utf-8", "replace").strip().removeprefix("\ufeff")
    if text.startswith("<") and "</" in text:  # a load balancer's or a proxy's HTML error page
        text = _page_text(text)
    text = " ".join(text.split())[:500]
    return (text or f"Upstream returned HTTP {status}"), None


_PAGE_BYTES = 16384
"""How much of an error body that is not JSON is read for its message: enough for an HTML page's text behind
its `<head>` (styles and scripts), of which the message keeps the first 500 characters."""

_HIDDEN_BLOCK = re.compile(r"<(script|style)\b", re.IGNORECASE)
_TAG = re.compile(r"<[^<>]*>")


def _page_text(page: str) -> str:
    """The text of an HTML page: its `<script>` and `<style>` blocks and its tags removed, entities decoded.

    In one pass, linear in the page, on the event loop: `html.parser` takes seconds on some malformed pages
    (16 KiB of `<a ` took it 10 s), and the page comes from whatever answered in the upstream's place.
    """
    lower = page.lower()
    kept: list[str] = []
    at = 0
    while (block := _HIDDEN_BLOCK.search(page, at)) is not None:
        kept.append(page[at : block.start()])
        end = lower.find("</" + block.group(1).lower(), block.end())
        if end < 0:
            at = len(page)
            break
        close = lower.find(">", end)
        at = len(page) if close < 0 else close + 1
    kept.append(page[at:])
    return html.unescape(_TAG.sub(" ", "".join(kept)))


# ---- streaming ------


class PassthroughRelay:
    """Same format on both sides: forward each event's exact bytes; note when the stream is complete.

    What the client's SDK could not read is not forwarded: an event whose data is not JSON, and on the
    Messages API an event out of order (content before `message_start`, a block's delta or stop before its
    start), which the SDKs' stream helpers fail on with an error of their own. The stream ends there with
    the error event of the client's format instead, as a translated stream does."""

    def __init__(self, fmt: InboundFormat, wants_usage: bool) -> None:
        self._fmt = fmt
        self._wants_usage = wants_usage
        self._last_sequence = -1
        self._started = False  # Messages: message_start has come
        self._blocks: set[int | None] = set()  # Messages: the indexes of the content blocks started
        self.done = False
        self.failed = False
        self.finished = False

    def feed(self, event: SSEEvent) -> bytes:
        if self.done:
            return b""
        if event.event == COMMENT:  # a keep-alive: passed on the moment it arrives
            return event.raw
        fmt = self._fmt
        if fmt == "messages" and (event.event is None or (not event.data and event.event != "error")):
            # The Anthropic SDK skips an event without a name or without data (a keep-alive of a proxy in
            # between): passed on as it is. (The OpenAI SDK parses every event's data, empty or unnamed: on
            # the other paths such an event is checked like any other.)
            return event.raw
        index = None
        if not (event.data == "[DONE]" and fmt == "chat") and event.event != "ping":
            try:
                if fmt == "messages" and event.event in _BLOCK_EVENTS:
                    index = _block_index.decode(event.data).index
                else:
                    _json_check.decode(event.data)  # validated, not built: a quarter of a microsecond
            except msgspec.DecodeError:  # not JSON, or a block's index that is not a number
                return self._refuse("The upstream sent a malformed stream event.")
        if fmt == "messages" and event.event != "ping":
            out_of_order = self._out_of_order(event.event, index)
            if out_of_order is not None:
                return self._refuse(out_of_order)
        if fmt == "chat":
            data = event.data
            if data == "[DONE]":
                self.done = True
            elif data.startswith('{"error"') or (
                '"error"' in data and '"finish_reason":"error"' in data.replace(" ", "")
            ):
                # An error chunk: OpenAI's alone, OpenRouter's as a chunk with `error` and that finish reason.
                self.done = self.failed = True
            else:
                if not self.finished and ('"finish_reason":"' in data or '"finish_reason": "' in data):
                    self.finished = True
                if not self._wants_usage and '"usage"' in data:
                    compact = data.replace(" ", "")  # servers that write `"usage": {` with spaces too
                    if '"usage":{' in compact and '"choices":[]' in compact:
                        return b""  # the usage chunk we forced on; the client did not ask for it
        elif fmt == "messages":
            if event.event in ("message_stop", "error"):
                self.done = True
                self.failed = event.event == "error"
            elif event.event == "message_delta":
                self.finished = True
        else:
            if event.event in ("response.completed", "response.incomplete", "response.failed", "error"):
                self.done = True
                self.failed = event.event in ("response.failed", "error")
            seq = _sequence_number(event.data)
            if seq is not None:
                self._last_sequence = seq
        return event.raw

    def _out_of_order(self, kind: str | None, index: int | None) -> str | None:
        """Why a Messages event (of a content block at `index`) cannot come now, or None."""
        if kind == "message_start":
            self._started = True
        elif kind in _MESSAGE_CONTENT and not self._started:
            return f"The upstream sent {kind} before message_start."
        if kind == "content_block_start":
            self._blocks.add(index)
        elif kind in ("content_block_delta", "content_block_stop") and index not in self._blocks:
            return f"The upstream sent {kind} for content block {index}, which it never started."
        return None

    def _refuse(self, message: str) -> bytes:
        """End the stream with the client's error event in place of an event it could not read."""
        self.failed = True
        return self.fail(message)

    def end(self) -> bytes:
        self.done = True
        if self._fmt == "chat":
            return _DONE
        # Responses streams end with their finish event itself (response.completed): never missing here.
        return _MESSAGE_STOP

    def fail(self, message: str) -> bytes:
        self.done = True
        if self._fmt == "chat":
            return frame(
                _encoder.encode(
                    {"error": {"message": message, "type": "upstream_error", "code": None, "param": None}}
                )
            )
        if self._fmt == "messages":
            return frame(
                _encoder.encode({"type": "error", "error": {"type": "api_error", "message": message}}),
                "error",
            )
        seq = self._last_sequence + 1
        return frame(
            _encoder.encode(
                {
                    "type": "error",
                    "code": "upstream_error",
                    "message": message,
                    "param": None,
                    "sequence_number": seq,
                }
            ),
            "error",
        )


class _BlockIndex(msgspec.Struct):
    """A Messages content-block event as far as its order is checked: the rest is skipped, not built."""

    index: int | None = None


_json_check = JsonDecoder(msgspec.Raw)
_block_index = JsonDecoder(_BlockIndex)
_BLOCK_EVENTS = frozenset({"content_block_start", "content_block_delta", "content_block_stop"})
_MESSAGE_CONTENT = _BLOCK_EVENTS | {"message_delta", "message_stop"}


def _sequence_number(data: str) -> int | None:
    marker = data.find('"sequence_number":')
    if marker < 0:
        return None
    digits = data[marker + 18 :].lstrip()
    end = 0
    while end < len(digits) and digits[end].isdigit():
        end += 1
    return int(digits[:end]) if end else None


class TranslatingRelay:
    """Different formats: decode upstream events to canonical ones and encode them for the client."""

    def __init__(
        self, decode: Callable[[SSEEvent], list[StreamEvent]], encode: Callable[[StreamEvent], bytes]
    ) -> None:
        self._decode = decode
        self._encode = encode
        self.done = False
        self.failed = False
        self.finished = False

    def feed(self, event: SSEEvent) -> bytes:
        if self.done:
            return b""
        if event.event == COMMENT:  # the upstream's keep-alive, as one the client's SDK also ignores
            return _KEEP_ALIVE
        out = b""
        for ev in self._decode(event):
            out += self._encode(ev)
            if isinstance(ev, StreamFinish | StreamEnd | StreamError):
                self._note(ev)
        return out

    def emit(self, ev: StreamEvent) -> bytes:
        if isinstance(ev, StreamFinish | StreamEnd | StreamError):
            self._note(ev)
        return self._encode(ev)

    def _note(self, ev: StreamFinish | StreamEnd | StreamError) -> None:
        if isinstance(ev, StreamFinish):
            self.finished = True
        else:
            self.done = True
            self.failed = isinstance(ev, StreamError)

    def end(self) -> bytes:
        return self.emit(StreamEnd())

    def fail(self, message: str) -> bytes:
        self.done = True
        return self._encode(StreamError("api_error", message))


def _make_relay(
    fmt: InboundFormat,
    wire: UpstreamWire | Literal["canonical"],
    route: ModelRoute,
    body: dict[str, Any],
    wants_usage: bool,
) -> PassthroughRelay | TranslatingRelay:
    if fmt == wire:
        return PassthroughRelay(fmt, wants_usage)
    model = route.upstream_model
    encode: Callable[[StreamEvent], bytes]
    if fmt == "chat":
        encode = openai_chat.StreamEncoder(model=model, include_usage=wants_usage).encode
    elif fmt == "messages":
        encode = anthropic.StreamEncoder(model=model).encode
    else:
        encode = openai_responses.StreamEncoder(model=model, request=body).encode
    decode: Callable[[SSEEvent], list[StreamEvent]]
    if wire == "messages":
        anthropic_decoder = anthropic.StreamDecoder()
        decode = lambda ev: anthropic_decoder.feed(ev.event, ev.data)  # noqa: E731
    elif wire == "chat":
        chat_decoder = openai_chat.StreamDecoder()
        decode = lambda ev: chat_decoder.feed(ev.data)  # noqa: E731
    else:
        decode = lambda ev: []  # noqa: E731 - canonical replays feed events directly through emit()
    return TranslatingRelay(decode, encode)


def _stream_headers(headers: dict[str, str]) -> dict[str, str]:
    return {
        **headers,
        "Content-Type": "text/event-stream",
        "Cache-Control": "no-cache",
        "X-Accel-Buffering": "no",
    }


async def _write(out: web.StreamResponse, data: bytes, client: _Client) -> bool:
    """Write to the client; False if it has gone away, or has stopped reading: a write that waits for it
    longer than `[local] client_read_timeout_seconds` cuts its connection (an upstream stream it holds is
    let go with it). Only a write that can wait is timed (`_Client.may_wait`)."""
    try:
        if client.may_wait(len(data)):
            async with asyncio.timeout(client.read_timeout):
                await out.write(data)
        else:
            await out.write(data)
    except ConnectionResetError:
        return False
    except TimeoutError:
        client.cut()
        return False
    return True


async def _end(out: web.StreamResponse, client: _Client) -> None:
    """End the response (its last chunk), timed as a write is: the end waits for the client to take what is
    still buffered for it."""
    try:
        async with asyncio.timeout(client.read_timeout):
            await out.write_eof()
    except ConnectionResetError:
        pass
    except TimeoutError:
        client.cut()


_FRAMING = 1024
"""Room left for what aiohttp adds to a write (chunk sizes, the head on the first one)."""


@dataclasses.dataclass(slots=True, frozen=True)
class _Client:
    """The client end of a streamed response, for `_write` and `_end`."""

    transport: asyncio.Transport | None
    protocol: BaseProtocol | None
    read_timeout: float
    room: int
    """What may wait in the transport's buffer before a write pauses on the client (high-water mark)."""

    @classmethod
    def of(cls, request: web.Request) -> _Client:
        transport, protocol = request.transport, request.protocol
        timeout = request.app[CONFIG].client_read_timeout_seconds
        if not isinstance(transport, asyncio.WriteTransport) or not isinstance(protocol, BaseProtocol):
            return cls(None, None, timeout, 0)
        return cls(transport, protocol, timeout, transport.get_write_buffer_limits()[1] - _FRAMING)

    def may_wait(self, size: int) -> bool:
        """Whether a write of `size` bytes can wait on the client: its writes are paused already (until
        what is buffered for it drains to the low-water mark), or these bytes take that past the high-water
        mark."""
        if self.transport is None or self.protocol is None:
            return False
        return self.protocol.writing_paused or self.transport.get_write_buffer_size() + size > self.room

    def cut(self) -> None:
        log.info("client stopped reading for %gs: its stream is cut", self.read_timeout)
        if self.transport is not None:
            self.transport.abort()


async def _stream(
    request: web.Request,
    upstream: aiohttp.ClientResponse,
    relay: Relay,
    headers: dict[str, str],
    chunks: list[bytes] | None = None,
    head: _Head | None = None,
) -> tuple[web.StreamResponse, Outcome]:
    """Relay the stream (from what `head` read of it already); `chunks` (if given) collects the upstream's raw
    bytes for usage accounting."""
    out = web.StreamResponse(status=200, headers=_stream_headers(headers))
    stamp(request, out)
    try:
        await out.prepare(request)
    except ConnectionResetError:  # the client left while the upstream was getting ready: not its failure
        upstream.close()
        return out, "client_disconnected"
    client = _Client.of(request)
    parser = SSEParser(comments=True)
    tail = b""
    outcome: Outcome = "completed"
    try:
        # iter_any yields whatever has arrived (never a fixed size); all the events it completed go out in
        # one write, so nothing waits for a later event and no write is split per event.
        async for chunk in _body(upstream, head):
            if chunks is not None:
                chunks.append(chunk)  # a reference, not a copy; parsed after the stream, off this path
            feed = relay.feed
            data = b"".join([feed(event) for event in parser.feed(chunk)])
            if data and not await _write(out, data, client):
                upstream.close()  # client gone: stop reading and drop the upstream connection
                return out, "client_disconnected"
            if relay.done:
                break
        if not relay.done:
            if relay.finished:  # complete but for its terminator, which an SDK does not require either
                tail = relay.end()
            else:
                outcome = "upstream_failed"
                tail = relay.fail("The upstream stream ended before completion.")
        elif relay.failed:  # the upstream's own error event ended it (already relayed)
            outcome = "upstream_failed"
    except TimeoutError:
        outcome = "upstream_failed"
        tail = relay.fail("The upstream stream timed out.")
    except aiohttp.ClientError as exc:
        outcome = "upstream_failed"
        tail = relay.fail(f"The upstream connection failed mid-stream ({exc.__class__.__name__}).")
    except Exception:  # noqa: BLE001 - logged with its cause; the client's stream still ends properly
        # A translator that cannot take what the upstream sent: the response has begun, so the client gets
        # the error event of its format (no second response can follow), and the upstream is let go.
        error_log.exception(
            "failed relaying the upstream stream of %s %s",
            request.method,
            request.path,
            extra={"request_id": request[CTX].request_id},
        )
        upstream.close()
        outcome = "upstream_failed"
        tail = relay.fail("The gateway could not translate the upstream stream.")
    if tail and not await _write(out, tail, client):
        return out, "client_disconnected"
    await _end(out, client)
    return out, outcome


@dataclasses.dataclass(slots=True)
class _Head:
    """What was read of a stream before its client was answered."""

    chunks: list[bytes]
    error: TimeoutError | aiohttp.ClientError | None = None
    """The read failed with this (raised again when the stream is relayed)."""
    ended: bool = False
    failed: tuple[int, str] | None = None
    """The stream failed before its first event of substance: the status that stands for, and why."""


_PREAMBLE = frozenset({"message_start", "ping"})
"""Events that open a Claude stream and carry nothing of the answer: read past while looking for its first
one (Anthropic's overloaded_error may follow message_start). A Responses stream's first event is not read
past: `response.created` carries the id a client may need at once (to cancel a background response)."""
_HEAD_EVENTS = 8
_ERROR_STATUSES = (("rate_limit", 429), ("overloaded", 529), ("timeout", 504), ("server_error", 502))
_ERROR_STATUSES_BY_TYPE = {"api_error": 502}


async def _first_event(resp: aiohttp.ClientResponse, wire: UpstreamWire, wait: float) -> _Head:
    """Read a stream up to its first event of substance (past its preamble; a comment, a keep-alive the
    client should get at once, ends the wait), and judge it: an error event that stands for a retryable
    status, or an unreadable event (data that is not a JSON object), an end, a cut or a stall
    (`UPSTREAM_IDLE_TIMEOUT`) before it, is a failure.

    Waited for `wait` seconds at most: a reasoning model may send its first chunk only after minutes of
    thought, and a client (or a proxy in front with a time-to-headers limit) must not wait that long for the
    response's headers. Past it, the stream is relayed from what was read so far, and a failure after that
    ends it with an error event. Leaving `readany` at the deadline loses nothing: what arrives is buffered
    in the response's stream, and taken from there only once the wait has returned."""
    head = _Head([])
    parser = SSEParser(comments=True)
    seen = 0
    waited = asyncio.timeout(wait)
    try:
        async with waited:
            while True:
                chunk = await resp.content.readany()
                if not chunk:
                    head.ended = True
                    head.failed = (502, "a stream that ended before its first event")
                    return head
                head.chunks.append(chunk)
                for event in parser.feed(chunk):
                    seen += 1
                    if event.event == COMMENT or seen > _HEAD_EVENTS:
                        return head
                    doc = _event_doc(wire, event)
                    if doc is None:  # nothing has reached the client: unusable like a cut, fallen back from
                        head.failed = (502, "an unreadable event before its first: " + event.data[:300])
                        return head
                    if event.event in _PREAMBLE:
                        continue
                    status = _stream_error_status(wire, event, doc)
                    if status is not None:
                        head.failed = (status, "an error event as its first: " + event.data[:300])
                    return head
    except (TimeoutError, aiohttp.ClientError) as exc:
        if waited.expired():  # the wait is over, not the upstream's idle timeout: it is relayed as it comes
            return head
        head.error = exc
        cut = "stalled" if isinstance(exc, TimeoutError) else f"was cut off ({exc.__class__.__name__})"
        head.failed = (
            504 if isinstance(exc, TimeoutError) else 502,
            f"a stream that {cut} before its first event",
        )
        return head


_NOT_JSON: dict[str, Any] = {}
"""`_event_doc` of an event whose data is rightly not JSON (a chat stream's `[DONE]`)."""


def _event_doc(wire: UpstreamWire, event: SSEEvent) -> dict[str, Any] | None:
    """An upstream event's data as the JSON object every event of a provider's stream carries, or None when
    it is unreadable (not JSON, not an object, nested too deep)."""
    if wire == "chat" and event.data == "[DONE]":
        return _NOT_JSON
    try:
        doc = _decoder.decode(event.data)
    except msgspec.DecodeError:
        return None
    return doc if isinstance(doc, dict) else None


def _stream_error_status(wire: UpstreamWire, event: SSEEvent, doc: dict[str, Any]) -> int | None:
    """The retryable status an upstream's error event (its data decoded as `doc`) stands for (Anthropic's
    `overloaded_error` is its 529), or None: not an error, or one a retry would meet again (an invalid
    request). A chat stream's error is a chunk with an `error` field (OpenRouter's carries its id too)."""
    if ("error" not in doc) if wire == "chat" else (event.event not in ("error", "response.failed")):
        return None
    err = doc.get("error")
    if event.event == "response.failed":
        response = doc.get("response")
        err = response.get("error") if isinstance(response, dict) else None
    elif not isinstance(err, dict):  # a Responses `error` event carries its code at the top level
        err = doc
    if not isinstance(err, dict):
        return None
    code = err.get("code")
    if isinstance(code, int) and not isinstance(code, bool):
        return code if code in _RETRYABLE else None
    kind = f"{err.get('type') or ''} {code or ''}"
    status = next((status for word, status in _ERROR_STATUSES if word in kind), None)
    return status or _ERROR_STATUSES_BY_TYPE.get(str(err.get("type")))


async def _body(upstream: aiohttp.ClientResponse, head: _Head | None) -> AsyncIterator[bytes]:
    """The stream's body: what `head` read of it, then the rest as it arrives (or the failure `head` met)."""
    if head is not None:
        for chunk in head.chunks:
            yield chunk
        if head.error is not None:
            raise head.error
        if head.ended:
            return
    async for chunk in upstream.content.iter_any():
        yield chunk


async def _drain(upstream: aiohttp.ClientResponse) -> None:
    """Read what follows the terminal event (normally just EOF) so the connection can go back to the pool;
    an upstream that keeps talking is cut off instead."""
    try:
        async with asyncio.timeout(1.0):
            while await upstream.content.readany():
                pass
    except (TimeoutError, aiohttp.ClientError):
        upstream.close()


def events_from_response(resp: Response) -> list[StreamEvent]:
    """A complete response as the canonical event sequence a stream of it would produce."""
    events: list[StreamEvent] = [StreamStart(id=resp.id, model=resp.model)]
    index = 0
    for part in resp.content:
        if isinstance(part, Text):
            events += [TextStart(index), TextDelta(index, part.text), BlockStop(index)]
        elif isinstance(part, ToolCall):
            events += [
                ToolCallStart(index, part.id, part.name),
                ToolCallDelta(index, part.arguments),
                BlockStop(index),
            ]
        else:
            continue  # thinking is not replayed
        index += 1
    events += [
        StreamFinish(resp.stop_reason or "stop", resp.stop_sequence),
        StreamUsage(resp.usage),
        StreamEnd(),
    ]
    return events


async def _replay(
    request: web.Request, resp: Response, relay: PassthroughRelay | TranslatingRelay, headers: dict[str, str]
) -> web.StreamResponse:
    assert isinstance(relay, TranslatingRelay)
    out = web.StreamResponse(status=200, headers=_stream_headers(headers))
    stamp(request, out)
    try:
        await out.prepare(request)
    except ConnectionResetError:  # the client left before its answer: it was billed all the same
        return out
    client = _Client.of(request)
    for ev in events_from_response(resp):
        data = relay.emit(ev)
        if data and not await _write(out, data, client):
            return out
    await _end(out, client)
    return out


# ---- JSON pass-through endpoints (embeddings) ------


def _embedding_input_tokens(value: Any, encoding: str) -> int:
    """Tokens in an embeddings `input`: a string, a list of strings, or token arrays (counted as given)."""
    if isinstance(value, str):
        return tokens.count(value, encoding)
    if isinstance(value, list):
        if all(isinstance(v, int) for v in value):
            return len(value)
        return sum(_embedding_input_tokens(v, encoding) for v in value)
    return 0


async def forward_json(
    request: web.Request,
    gw: Gateway,
    key: KeyRecord,
    route: ModelRoute,
    path: str,
    body: dict[str, Any],
    *,
    free: bool = False,
) -> web.Response:
    """POST `body` to `<provider base>/<path>` and return the upstream's answer unchanged. `free`: a call no
    provider bills (Anthropic's token counting): no plan quota, no usage event."""
    client_claims = claims.parse(body.pop("trex_accounting", None))
    body.pop("trex", None)  # never forwarded (it has nothing to say to an embeddings call)
    api_key = await provider_key(request, gw, key, route.provider)
    model = body.get("model")
    listed = gw.catalog.get(str(model))
    ctx = request[CTX]
    admitted = ctx.rate
    admission = (
        None
        if free
        else await gw.quotas.admit(
            key,
            str(model),
            tier=listed.info.tier if listed is not None else None,
            in_flight=admitted.in_flight if admitted is not None else 0,
        )
    )
    body["model"] = route.upstream_model
    url = f"{gw.base_urls[route.provider]}/{path}"
    headers = _upstream_headers(request, gw, route.provider, api_key)
    out_headers = {X_TREX_UPSTREAM_PROVIDER: route.provider, X_TREX_UPSTREAM_MODEL: route.upstream_model}
    payload = _encoder.encode(body)
    encoding, exact = tokens.encoding_for_model(route.upstream_model)
    counted = 0
    if (gw.usage is not None and not free) or (admission is not None and admission.credits):
        counted = _embedding_input_tokens(body.get("input"), encoding)
    if admission is not None and admission.credits:  # an embedding's output costs nothing
        priced = gw.prices.for_route(str(model), route.provider, route.upstream_model)
        estimate = Estimate(counted, 0, "input", priced[1].input if priced is not None else 0.0, 0.0)
        admission = await gw.quotas.hold(admission, estimate)
    acct: Begun | None = None
    if gw.usage is not None and not free:
        started = ctx.started
        acct = ctx.usage_event = gw.usage.begin(
            key=key,
            route=request.path,
            provider=route.provider,
            model=str(model),
            upstream_model=route.upstream_model,
            stream=False,
            session_id=None,
            original_tokens=counted,
            optimized_tokens=counted,
            encoding=encoding,
            estimated=not exact,
            bytes_before=len(await request.read()),
            bytes_after=len(payload),
            claims=client_claims,
            overhead_ms=elapsed_ms(started),
            started=started,
        )
        acct.admission = admission
        out_headers[X_TREX_USAGE_EVENT_ID] = acct.event.id
        out_headers[X_TREX_GUARANTEE_STATUS] = await gw.usage.guarantee(key)
    deadline, tries = time.monotonic() + gw.retry_deadline, 0
    sent = time.perf_counter()
    while True:  # retried like a model call: a retryable status or failure, backoff or Retry-After
        try:
            upstream = await gw.upstream.request(route.provider, "POST", url, payload, headers)
        except asyncio.CancelledError:  # the client hung up while the upstream worked on it
            _finish_usage(gw, acct, 200, abandoned(request), None)
            raise
        except UpstreamUnavailable as exc:
            wait = _retry_wait(gw, tries, deadline, None)
            if wait is not None:
                tries += 1
                await asyncio.sleep(wait)
                continue
            error = unavailable(route.provider, exc, out_headers)
            _finish_usage(gw, acct, error.status, "upstream_failed", None)
            raise error from exc
        wait = _retry_wait(gw, tries, deadline, upstream) if upstream.status in _RETRYABLE else None
        if wait is None:
            break
        await _discard(upstream)
        tries += 1
        await asyncio.sleep(wait)
    answered = time.perf_counter()
    try:
        out_headers.update(_forwarded_headers(upstream.headers))
        if acct is not None:  # time in the worker, the upstream's excluded (as for model calls)
            overhead = (sent - acct.started) + (time.perf_counter() - answered)
            out_headers[X_TREX_PROXY_OVERHEAD_MS] = f"{overhead * 1000:.2f}"
        if upstream.status >= 300:  # an error (structured, the key masked) or a redirect, never passed raw
            _finish_usage(gw, acct, upstream.status, "upstream_error", None)
            if upstream.status < 400:
                raise _redirected(route.provider, upstream.status, out_headers)
            async with asyncio.timeout(gw.upstream.timeouts.total):
                return await _error_response(request, upstream, "chat", "chat", out_headers, api_key)
        async with asyncio.timeout(gw.upstream.timeouts.total):
            data = await upstream.read()
        if acct is not None and gw.usage is not None:
            gw.usage.complete(
                acct, http_status=upstream.status, outcome="completed", wire="embeddings", body=data
            )
        return web.Response(
            body=data, status=upstream.status, headers=out_headers, content_type="application/json"
        )
    except (TimeoutError, aiohttp.ClientError) as exc:
        _finish_usage(gw, acct, 502, "upstream_failed", None)
        raise UpstreamError(f"Upstream {route.provider} failed.", status=502, headers=out_headers) from exc
    except asyncio.CancelledError:
        upstream.close()
        _finish_usage(gw, acct, upstream.status if upstream.status >= 400 else 200, abandoned(request), None)
        raise
    finally:
        upstream.release()
