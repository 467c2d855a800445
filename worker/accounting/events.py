"""Usage events: one per proxied request, reconciled after the response and written behind it in batches.

Life of an event:
1. `begin()` on the request path (no I/O): a `pending` event with the counts known before the upstream
   answers; its id goes out in `X-Trex-Usage-Event-Id` with the response headers.
2. `finish()` in `wait_until`, after the response (or stream) is complete: billed usage from the upstream
   body or stream, priced; baseline, actual cost and savings; status `final`.
3. The flush loop writes every changed event to the KV each `USAGE_FLUSH_SECONDS` (default 1 s), or as soon
   as `FLUSH_AT` requests wait to be written (a busy worker holds a bounded number of them), with one
   `put_many` (an event still pending from the last interval waits for the next flush, so a short request
   is written once, final), as `usage/ev/<key id>/<YYYYMMDD>/<event id>`, kept `USAGE_RETENTION_DAYS`. The
   KV metadata of each entry carries the numbers totals need, so `totals()` lists keys and never reads
   values.

A graceful shutdown flushes everything (the flush runs after in-flight requests and their `wait_until`
tasks have finished). A hard kill loses at most the events changed since the last flush: one interval.
Reads (`get`, `totals`) see this process's unflushed events too; another worker process sees them after
its next flush.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import math
import secrets
import time
from collections.abc import Callable
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from kv import EncodedMetadata, KVError, KVNamespace, KVUnavailableError, struct_metadata

from .. import tokens
from ..auth import KeyRecord
from . import usage
from .charges import PendingCharges
from .claims import NO_CLAIMS, Claims
from .plans import Plan, guarantee_status
from .pricing import PRICES_TAKEN, Billed, Price, PriceTable, cost
from .usage import Observed, Wire

if TYPE_CHECKING:
    from ..quotas import Admission, Quotas

log = logging.getLogger("trex.usage")

PREFIX = "usage/ev/"
LOG_PREFIX = "logs/"
GROUP_BYS = ("model", "day", "provider")
Outcome = Literal[
    "pending", "completed", "upstream_error", "upstream_failed", "client_disconnected", "interrupted"
]
"""How a request ended; `interrupted`: the worker cut a stream off (a shutdown past its grace period)."""
_THREAD_COUNT_CHARS = 64 * 1024
_GUARANTEE_REFRESH_SECONDS = 60.0
_SLICE = 64
FLUSH_AT = 256
_SEQUENCE_END = 10**12
"""Requests waiting to be written that start a flush before the interval is up."""


class BilledTokens(msgspec.Struct, omit_defaults=True):
    input_tokens: int
    output_tokens: int
    cached_input_tokens: int
    cache_write_tokens: int
    cache_write_1h_tokens: int = 0
    """Of the cache writes, those the provider reports as 1-hour ones (shown only when there are some)."""


class Baseline(msgspec.Struct):
    input_tokens: int
    output_tokens: int
    cost_usd: float | None
    source: str
    """`client` (from trex_accounting.baseline_usage) or `computed` (billed usage plus what was saved)."""


class UsageEvent(msgspec.Struct, kw_only=True):
    id: str
    object: str = "usage.event"
    status: str = "pending"
    created: int
    created_at: str
    key_id: str
    route: str
    provider: str
    model: str
    upstream_model: str
    stream: bool
    session_id: str | None
    http_status: int | None = None
    outcome: str = "pending"
    latency_ms: float | None = None
    proxy_overhead_ms: float
    original_input_tokens: int
    optimized_input_tokens: int
    saved_input_tokens: int
    token_count_encoding: str
    token_count_estimated: bool
    """True for models without a public tokenizer (Claude): the counts are o200k_base estimates."""
    request_bytes_before: int
    request_bytes_after: int
    billed: BilledTokens | None = None
    usage_source: str | None = None
    """`upstream`, `override` (trex_accounting.actual_usage_override), `estimated` (no usage reported:
    input from our count, output counted from what was streamed) or `none` (the upstream refused)."""
    baseline: Baseline | None = None
    actual_cost_usd: float | None = None
    savings_tokens: int = 0
    savings_usd: float | None = None
    priced_as: str | None = None
    prices_taken: str = PRICES_TAKEN
    cache_write_ttl: str = "5m"
    client_reported: dict[str, int] | None = None
    attempts: list[dict[str, Any]] | None = None
    """Every upstream attempt (provider, model, status, latency_ms, error): retries and fallbacks."""


_encoder = msgspec.json.Encoder()
_event_decoder = msgspec.json.Decoder(UsageEvent)


class Begun(msgspec.Struct):
    """An event in flight and what reconciling it needs (a Struct: one is built per request, several times
    cheaper than a dataclass)."""

    event: UsageEvent
    claims: Claims
    price: Price | None
    started: float
    # Set by `complete()`; read when the event is reconciled.
    http_status: int = 0
    outcome: Outcome = "pending"
    latency_ms: float = 0.0
    wire: Wire | None = None
    body: bytes | None = None
    chunks: list[bytes] | None = None
    observed: Observed | None = None
    admission: Admission | None = None
    """How the key's plan charges this request (quota tokens or Compute Credits), if it does."""


class _Summary(msgspec.Struct):
    """What totals need, stored as the KV entry's metadata (well under its 1024-byte limit). Encoded from a
    Struct, whose field names msgspec encodes once, rather than from a dict: the same JSON object, cheaper."""

    t: int
    m: str
    p: str
    s: str
    oi: int
    zi: int
    bi: int
    bo: int
    ci: int
    st: int
    bc: float | None
    ac: float | None
    sv: float | None


def _summary(ev: UsageEvent) -> EncodedMetadata:
    b = ev.billed
    base = ev.baseline
    return struct_metadata(
        _Summary(
            ev.created,
            ev.model[:200],
            ev.provider,
            ev.status,
            ev.original_input_tokens,
            ev.optimized_input_tokens,
            b.input_tokens if b else 0,
            b.output_tokens if b else 0,
            b.cached_input_tokens if b else 0,
            ev.savings_tokens,
            base.cost_usd if base else None,
            ev.actual_cost_usd,
            ev.savings_usd,
        )
    )


class _LogEntry(msgspec.Struct):
    """A request-log entry (the metadata of its KV entry) of a request without a usage event."""

    time: float
    request_id: str
    key_id: str
    method: str
    route: str
    status: int
    latency_ms: float


class _UsageLogEntry(_LogEntry):
    """A request-log entry with its usage event's numbers (after the fields of `_LogEntry`, in this order)."""

    model: str
    provider: str
    usage_event_id: str
    original_input_tokens: int
    optimized_input_tokens: int
    billed_input_tokens: int | None
    billed_output_tokens: int | None
    savings_tokens: int
    savings_usd: float | None


def _within(input_tokens: int, output_tokens: int, like: Billed) -> Billed:
    """Usage of these sizes with the cache split of `like`, its cached and cache-write tokens kept inside the
    input (they are part of it)."""
    cached = min(like.cached_input_tokens, input_tokens)
    writes = min(like.cache_write_tokens, input_tokens - cached)
    return Billed(
        input_tokens=input_tokens,
        output_tokens=output_tokens,
        cached_input_tokens=cached,
        cache_write_tokens=writes,
        cache_write_1h_tokens=min(like.cache_write_1h_tokens, writes),
    )


def _day(epoch: int) -> str:
    return time.strftime("%Y%m%d", time.gmtime(epoch))


def kv_key(key_id: str, event_id: str) -> str | None:
    """Where an event lives, from its id (`ue_<YYYYMMDD>_<hex>`); None for a malformed id."""
    if len(event_id) != 32 or not event_id.startswith("ue_") or event_id[11] != "_":
        return None
    day, rand = event_id[3:11], event_id[12:]
    if not day.isdigit() or not all(c in "0123456789abcdef" for c in rand):
        return None
    return f"{PREFIX}{key_id}/{day}/{event_id}"


class UsageRecorder:
    """Creates, reconciles, batches and reads usage events; one per worker process."""

    def __init__(
        self,
        kv: KVNamespace,
        prices: PriceTable,
        plans: dict[str, Plan],
        *,
        retention_seconds: int,
        flush_seconds: float,
        log_retention_seconds: int = 30 * 86400,
        quotas: Quotas | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.prices = prices
        self.plans = plans
        self._tracked = {name for name, plan in plans.items() if plan.tracks_guarantee}
        """The plans whose guarantee is tracked: `guarantee_now` answers every request with one lookup."""
        self.retention_seconds = retention_seconds
        self.log_retention_seconds = log_retention_seconds
        self.quotas = quotas
        self.flush_seconds = flush_seconds
        self._clock = clock
        self._live: dict[str, UsageEvent] = {}
        """Events not yet final or not yet flushed, by id."""
        self._dirty: dict[str, UsageEvent] = {}
        """Events to write with the next flush."""
        self._fresh: dict[str, UsageEvent] = {}
        """Events begun since the last periodic flush: written pending only if still in flight at the next."""
        self._aging: dict[str, UsageEvent] = {}
        """Events begun before the last periodic flush: those still pending are written with the next one."""
        self._queued: dict[str, Begun] = {}
        self._logs: list[tuple[float, str, str, str, str, int, float, Begun | None]] = []
        self._log_retry: list[tuple[str, bytes, EncodedMetadata]] = []
        self._logged = 0
        """Request-log entries queued by this process so far."""
        self._id_prefix = secrets.token_hex(5)
        self._counter = 0
        self._second = -1
        self._day = self._iso = self._id_head = ""
        """Completed requests waiting to be reconciled (by the flush loop, or when read)."""
        self._cycle: dict[tuple[str, str], list[float]] = {}
        """(key id, YYYYMM) → [savings in the cycle, monotonic time loaded]."""
        self._unflushed_savings: dict[tuple[str, str], float] = {}
        self._charges = quotas.pending if quotas is not None else PendingCharges(clock)
        """Quota and credit charges of reconciled events not yet applied (with the give-backs the KV could not
        take at once: they are applied with them)."""
        self._flush_lock = asyncio.Lock()
        self._task: asyncio.Task[None] | None = None
        self._refreshing: set[tuple[str, str]] = set()
        self._wake = asyncio.Event()

    # ---- request path (no I/O) ----

    def begin(
        self,
        *,
        key: KeyRecord,
        route: str,
        provider: str,
        model: str,
        upstream_model: str,
        stream: bool,
        session_id: str | None,
        original_tokens: int,
        optimized_tokens: int,
        encoding: str,
        estimated: bool,
        bytes_before: int,
        bytes_after: int,
        claims: Claims,
        overhead_ms: float,
        started: float,
    ) -> Begun:
        created = int(self._clock())
        if created != self._second:  # the time strings change once a second: build them once a second
            self._second = created
            self._day = _day(created)
            self._id_head = f"ue_{self._day}_{self._id_prefix}"
            self._iso = time.strftime("%Y-%m-%dT%H:%M:%SZ", time.gmtime(created))
        self._counter += 1
        # Unique without a random draw per request: a random per-process prefix and a counter.
        event_id = self._id_head + hex(self._counter & 0xFFFFFFFFFF)[2:].zfill(10)  # `:010x`, cheaper
        original, reported = original_tokens, None
        if claims is not NO_CLAIMS:  # most requests claim nothing: the worker's own measures stand
            if claims.original_input_tokens is not None:
                original = claims.original_input_tokens
            if claims.request_bytes_before is not None:
                bytes_before = claims.request_bytes_before
            reported = claims.client_reported()
        priced = self.prices.for_route(model, provider, upstream_model)
        ev = UsageEvent(
            id=event_id,
            created=created,
            created_at=self._iso,
            key_id=key.id,
            route=route,
            provider=provider,
            model=model,
            upstream_model=upstream_model,
            stream=stream,
            session_id=session_id,
            proxy_overhead_ms=overhead_ms,
            original_input_tokens=original,
            optimized_input_tokens=optimized_tokens,
            saved_input_tokens=max(0, original - optimized_tokens),
            token_count_encoding=encoding,
            token_count_estimated=estimated,
            request_bytes_before=bytes_before,
            request_bytes_after=bytes_after,
            priced_as=priced[0] if priced else None,
            cache_write_ttl=claims.cache_write_ttl,
            client_reported=reported,
        )
        self._live[event_id] = ev
        self._fresh[event_id] = ev
        return Begun(ev, claims, priced[1] if priced else None, started)

    # ---- after the response ----

    def reroute(
        self, begun: Begun, provider: str, upstream_model: str, attempts: list[dict[str, Any]]
    ) -> None:
        """Record the attempts, and the route that finally served (a fallback is priced as itself)."""
        ev = begun.event
        ev.attempts = attempts
        if (provider, upstream_model) != (ev.provider, ev.upstream_model):
            ev.provider, ev.upstream_model = provider, upstream_model
            priced = self.prices.for_route(upstream_model, provider, upstream_model)
            ev.priced_as = priced[0] if priced else None
            begun.price = priced[1] if priced else None

    def complete(
        self,
        begun: Begun,
        *,
        http_status: int,
        outcome: Outcome,
        wire: Wire | None = None,
        body: bytes | None = None,
        chunks: list[bytes] | None = None,
        observed: Observed | None = None,
    ) -> None:
        """Record how the request ended; no parsing here. Usage is read from `body` (a response body) or
        `chunks` (a stream's raw bytes) or taken from `observed` when the flush loop, or a read of this event,
        reconciles it. Called once per event, on the request path: it only queues."""
        if begun.outcome != "pending":
            return
        begun.http_status, begun.outcome = http_status, outcome
        begun.latency_ms = round((time.perf_counter() - begun.started) * 1000, 2)
        if chunks is not None and wire is not None and observed is None:
            # The stream is over and sent. Its usage sits in one or two events: read it now and let the
            # chunks go, rather than hold every stream's bytes until the next flush. Only a stream without
            # usage (cut off, abandoned) keeps its bytes, to estimate the output from.
            billed = usage.usage_at_the_end(wire, b"".join(chunks))
            if billed is not None:
                observed, chunks = Observed(billed), None
        begun.wire, begun.body, begun.chunks, begun.observed = wire, body, chunks, observed
        self._queued[begun.event.id] = begun

    async def _reconcile_queued(self, only: str | None = None) -> None:
        if only is not None:
            begun = self._queued.pop(only, None)
            if begun is not None:
                await self._reconcile(begun)
        else:
            queued, self._queued = self._queued, {}
            pending = list(queued.values())
            try:
                for i, begun in enumerate(pending, 1):
                    if not self._reconcile_now(begun):
                        await self._reconcile_later(begun)
                    if i % _SLICE == 0:
                        await asyncio.sleep(0)  # requests run between slices: a busy second never stalls
            except BaseException:  # cut off: what was not reconciled waits for the next pass
                self._queued = {
                    b.event.id: b for b in pending if b.outcome != "pending" and b.event.status != "final"
                } | self._queued
                raise
        await self._apply_charges()

    async def _reconcile(self, begun: Begun) -> None:
        """Reconcile one event; a failure is that event's alone (logged, the event stays pending), never the
        rest of the pass's."""
        if not self._reconcile_now(begun):
            await self._reconcile_later(begun)

    def _reconcile_now(self, begun: Begun) -> bool:
        """Reconcile one event without an await (nearly every event: a pass over hundreds of them creates no
        coroutine per event). False when its output must first be counted off the loop (a long answer
        without reported usage): `_reconcile_later` does that; its usage, read here, waits in `observed`."""
        try:
            observed = self._observed(begun)
            if self._long_output(begun, observed):
                begun.observed = observed
                return False
            self._finish(begun, observed, None)
        except Exception:
            log.exception("could not reconcile usage event %s", begun.event.id)
        return True

    async def _reconcile_later(self, begun: Begun) -> None:
        try:
            observed = begun.observed
            assert observed is not None  # set by _reconcile_now for a long output
            output = await asyncio.to_thread(
                tokens.count, observed.output_text, begun.event.token_count_encoding
            )
            self._finish(begun, observed, output)
        except Exception:
            log.exception("could not reconcile usage event %s", begun.event.id)

    async def _apply_charges(self) -> None:
        if self.quotas is not None:
            await self._charges.apply(self.quotas)

    def _observed(self, begun: Begun) -> Observed | None:
        """The usage the upstream reported (read from the response body or stream once), if any."""
        observed = begun.observed
        if observed is None and begun.wire is not None and begun.http_status < 400:
            try:
                if begun.body is not None:
                    observed = usage.from_response(begun.wire, begun.body)
                elif begun.chunks is not None:
                    observed = usage.from_stream(begun.wire, begun.chunks)
            except Exception:
                log.exception("could not read usage for %s", begun.event.id)
        begun.body = begun.chunks = None
        return observed

    @staticmethod
    def _long_output(begun: Begun, observed: Observed | None) -> bool:
        """Whether the event's output is estimated from a text long enough to count off the loop."""
        return (
            begun.http_status < 400
            and observed is not None
            and observed.billed is None
            and len(observed.output_text) >= _THREAD_COUNT_CHARS
        )

    def _finish(self, begun: Begun, observed: Observed | None, output_tokens: int | None) -> None:
        """Reconcile and mark final. `observed` is None when the upstream never answered usefully;
        `output_tokens`, when given, is the count of its output text (counted off the loop)."""
        ev, claims, price = begun.event, begun.claims, begun.price
        http_status = begun.http_status
        ev.http_status = http_status
        ev.outcome = begun.outcome
        ev.latency_ms = begun.latency_ms or round((time.perf_counter() - begun.started) * 1000, 2)
        failed = http_status >= 400  # refused or never answered: nothing billed
        billed: Billed
        if failed:
            billed, source = Billed(), "none"
        elif observed is not None and observed.billed is not None:
            billed, source = observed.billed, "upstream"
        else:
            if output_tokens is not None:
                output = output_tokens
            else:
                text = observed.output_text if observed is not None else ""
                output = tokens.count(text, ev.token_count_encoding)
            reported = observed.input_side if observed is not None else None
            if reported is not None:  # the input as the upstream reported it, the output estimated
                billed = msgspec.structs.replace(reported, output_tokens=output)
            else:
                billed = Billed(input_tokens=ev.optimized_input_tokens, output_tokens=output)
            source = "estimated"
        metered = billed  # what quotas and credits are charged: the upstream's usage, never a client's claim
        plain = claims is NO_CLAIMS  # most requests: no client claims to look at
        if not plain and claims.has_override and not failed:
            inp = claims.override_input_tokens
            cached = claims.override_cached_input_tokens
            split = billed if cached is None else msgspec.structs.replace(billed, cached_input_tokens=cached)
            billed = _within(inp if inp is not None else billed.input_tokens, billed.output_tokens, split)
            source = "override"
        ttl = claims.cache_write_ttl
        actual = cost(billed, price, ttl)
        if failed:
            base_in, base_out, base_cost, base_source = 0, 0, actual, "computed"
        elif not plain and claims.has_baseline:
            claimed_in, claimed_out = claims.baseline_input_tokens, claims.baseline_output_tokens
            base_in = claimed_in if claimed_in is not None else billed.input_tokens + ev.saved_input_tokens
            base_out = claimed_out if claimed_out is not None else billed.output_tokens
            # Priced with the billed cache split, as the computed baseline is: the same prompt would have hit
            # the same cache, so the cache discount is not counted as a saving.
            # Without a price (a cost the upstream reported) there is nothing to price another usage at.
            base_cost = cost(_within(base_in, base_out, billed), price, ttl) if price is not None else None
            base_source = "client"
        else:
            saved = ev.saved_input_tokens
            base_in, base_out = billed.input_tokens + saved, billed.output_tokens
            # Nothing saved: the baseline is the billed usage itself, at the same price.
            base_cost = (
                actual
                if saved == 0
                else cost(
                    msgspec.structs.replace(billed, input_tokens=base_in, output_tokens=base_out), price, ttl
                )
                if price is not None
                else None
            )
            base_source = "computed"
        ev.billed = BilledTokens(
            billed.input_tokens,
            billed.output_tokens,
            billed.cached_input_tokens,
            billed.cache_write_tokens,
            billed.cache_write_1h_tokens,
        )
        ev.usage_source = source
        ev.baseline = Baseline(base_in, base_out, base_cost, base_source)
        ev.actual_cost_usd = actual
        ev.savings_tokens = (base_in + base_out) - (billed.input_tokens + billed.output_tokens)
        if base_cost is None or actual is None:
            ev.savings_usd = None
        elif base_cost is actual and math.isfinite(actual):  # the baseline is the billed usage: nothing saved
            ev.savings_usd = 0.0  # round(actual - actual, 9), without rounding (costly) on most requests
        else:
            ev.savings_usd = round(base_cost - actual, 9)
        ev.status = "final"
        self._dirty[ev.id] = ev
        if begun.admission is not None and self.quotas is not None:
            # Applied together at the end of this reconciliation pass: one round trip for all of them, at most
            # once (charges.py). A failed request is charged nothing, and releases its credit hold.
            charged = None if failed else actual if metered is billed else cost(metered, price, ttl)
            tokens_used = 0 if failed else metered.input_tokens + metered.output_tokens
            self._charges.add(self.quotas.charges(begun.admission, tokens_used, charged))
        if ev.savings_usd:
            cycle = (ev.key_id, time.strftime("%Y%m", time.gmtime(ev.created)))
            self._unflushed_savings[cycle] = self._unflushed_savings.get(cycle, 0.0) + ev.savings_usd
            if cycle in self._cycle:
                self._cycle[cycle][0] += ev.savings_usd

    # ---- request log ----

    def log(
        self,
        request_id: str,
        key_id: str,
        method: str,
        route: str,
        status: int,
        latency_ms: float,
        begun: Begun | None,
    ) -> None:
        """Queue the request-log entry of an authenticated request; written with the next flush, after its
        usage event (if any) is reconciled, so the entry carries the final tokens and savings."""
        self._logs.append((time.time(), request_id, key_id, method, route, status, latency_ms, begun))
        self._logged += 1
        if len(self._logs) >= FLUSH_AT:
            self._wake.set()  # a busy second: write now rather than hold every request until the interval

    def _take_logs(self) -> tuple[int, list[Any]]:
        """The queued request-log entries, and how many entries this process logged before them."""
        queued, self._logs = self._logs, []
        return self._logged - len(queued), queued

    def _log_entries(self, sequence: int, queued: list[Any]) -> list[tuple[str, bytes, EncodedMetadata]]:
        out = []
        encode = struct_metadata
        for at, rid, key_id, method, route, status, latency, begun in queued:
            sequence += 1
            if begun is None:
                entry = encode(_LogEntry(round(at, 3), rid, key_id, method, route[:200], status, latency))
            else:
                ev = begun.event
                b = ev.billed
                entry = encode(
                    _UsageLogEntry(
                        round(at, 3),
                        rid,
                        key_id,
                        method,
                        route[:200],
                        status,
                        latency,
                        ev.model[:120],
                        ev.provider,
                        ev.id,
                        ev.original_input_tokens,
                        ev.optimized_input_tokens,
                        b.input_tokens if b else None,
                        b.output_tokens if b else None,
                        ev.savings_tokens,
                        ev.savings_usd,
                    )
                )
            # Newest first in key order: the key carries the time counted down from a far future, then this
            # process's count of entries counted down (requests in the same millisecond stay newest first).
            inverted = 10**13 - int(at * 1000)
            # (zfill: the digits `:013d` and `:012d` give, without parsing a format spec per entry)
            newest = str(_SEQUENCE_END - sequence).zfill(12)
            key = f"{LOG_PREFIX}{key_id}/{str(inverted).zfill(13)}-{newest}-{rid}"
            out.append((key, b"", entry))
        return out

    async def logs(
        self, key_id: str, limit: int, cursor: str | None
    ) -> tuple[list[dict[str, Any]], str | None]:
        """The key's request-log entries, newest first, and the cursor of the next page (None at the end)."""
        await self.flush()
        page = await self.kv.list(prefix=f"{LOG_PREFIX}{key_id}/", limit=limit, cursor=cursor)
        entries = [info.metadata for info in page.keys if isinstance(info.metadata, dict)]
        return entries, None if page.list_complete else page.cursor

    # ---- guarantee ----

    def _tracked_plan(self, key: KeyRecord) -> Plan | None:
        plan = self.plans.get(key.plan) if key.plan else None
        return plan if plan is not None and plan.tracks_guarantee else None

    def guarantee_now(self, key: KeyRecord) -> str | None:
        """`not_applicable` without an await when the key's plan tracks no guarantee (most keys); None when
        `guarantee()` must be asked."""
        return None if key.plan in self._tracked else "not_applicable"

    async def guarantee(self, key: KeyRecord) -> str:
        """`met`, `tracking` or `not_applicable` for the key's current cycle (the calendar month, UTC)."""
        plan = self._tracked_plan(key)
        if plan is None:
            return "not_applicable"
        cycle = (key.id, time.strftime("%Y%m", time.gmtime(self._clock())))
        entry = self._cycle.get(cycle)
        if entry is None:
            entry = self._cycle[cycle] = [await self._cycle_savings(*cycle), time.monotonic()]
        elif time.monotonic() - entry[1] > _GUARANTEE_REFRESH_SECONDS and cycle not in self._refreshing:
            self._refreshing.add(cycle)  # other workers' savings arrive through the KV: re-read now and then
            asyncio.get_running_loop().create_task(self._refresh_cycle(cycle))
        return guarantee_status(plan, entry[0])

    async def _refresh_cycle(self, cycle: tuple[str, str]) -> None:
        try:
            self._cycle[cycle] = [await self._cycle_savings(*cycle), time.monotonic()]
        except KVError as exc:
            log.warning("could not refresh guarantee savings for %s: %s", cycle[0], exc)
        finally:
            self._refreshing.discard(cycle)

    async def _cycle_savings(self, key_id: str, month: str) -> float:
        total = self._unflushed_savings.get((key_id, month), 0.0)
        async for _, meta in self._scan(f"{PREFIX}{key_id}/{month}"):
            sv = meta.get("sv")
            if isinstance(sv, int | float):
                total += sv
        return total

    # ---- persistence ----

    def start(self) -> None:
        """Start the background flush loop (once the event loop runs)."""
        if self._task is None:
            self._task = asyncio.get_running_loop().create_task(self._run(), name="usage-flush")

    async def _run(self) -> None:
        down_since: float | None = None  # when the KV stopped taking the flushes
        while True:
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), self.flush_seconds)
            self._wake.clear()
            try:
                await self.flush(in_flight=False)
            except Exception as exc:
                if not isinstance(exc, KVUnavailableError):
                    log.exception("usage flush failed; retrying at the next interval")
                elif down_since is None:
                    # An outage, not a fault: one line when it begins and one when it ends, no traceback
                    # every interval. What is not written waits in memory (requests need the KV too).
                    down_since = time.monotonic()
                    log.warning(
                        "usage not written, the KV is unavailable; retrying every %g s: %s",
                        2 * self.flush_seconds,
                        exc,
                    )
                # A failing KV is retried at the interval, however many requests wait meanwhile.
                await asyncio.sleep(self.flush_seconds)
                self._wake.clear()
            else:
                if down_since is not None:
                    log.info("usage written again after %.1f s of KV outage", time.monotonic() - down_since)
                    down_since = None

    async def flush(self, in_flight: bool = True) -> int:
        """Reconcile what completed, then write every changed event; returns how many were written.

        `in_flight=False` (the periodic flush) keeps back the events of requests still in flight that began
        after the previous periodic flush: most complete before the next flush and are then written once,
        final, instead of twice. A long request's pending event is written at the next periodic flush after
        that, so a crash mid-request still leaves its trace.
        """
        # The log entries are taken before the reconciliation: every one of them belongs to a request that
        # has completed, so each is written with its event's final numbers. (Taken after the awaits below, an
        # entry of a request that completed meanwhile would carry its event's pending, empty numbers.)
        sequence, logged = self._take_logs()
        try:
            await self._reconcile_queued()
        except BaseException:  # cut off (a shutdown cancels the loop's flush): the next flush writes them
            self._logs[:0] = logged
            raise
        fresh_logs = self._log_entries(sequence, logged)
        try:
            return await self._write(in_flight, fresh_logs)
        except BaseException:
            self._log_retry += fresh_logs  # written by the next flush (the one at close, at the latest)
            raise

    async def _write(self, in_flight: bool, fresh_logs: list[tuple[str, bytes, EncodedMetadata]]) -> int:
        """Write the changed events, then the request-log entries (with those a failed flush left); events
        not written stay queued for the next flush, whatever stopped this one."""
        async with self._flush_lock:
            batch, self._dirty = self._dirty, {}
            # A final event is in `batch` already (it may still be in the dicts of the begun, as `pending` no
            # more): only those still pending are taken from them.
            aged, self._aging, self._fresh = self._aging, self._fresh, {}
            if in_flight:
                aged |= self._aging
                self._aging = {}
            for ev in aged.values():
                if ev.status == "pending":
                    batch.setdefault(ev.id, ev)
            events = list(batch.values())
            written = 0
            # Slice by slice: encode a few hundred events, write them, let requests run, go on. The memory a
            # flush needs stays small and no request waits long for the loop.
            for start in range(0, len(events), _SLICE):
                part = events[start : start + _SLICE]
                entries = [
                    (f"{PREFIX}{ev.key_id}/{ev.id[3:11]}/{ev.id}", _encoder.encode(ev), _summary(ev))
                    for ev in part
                ]
                try:
                    await self.kv.put_many(entries, expiration_ttl=self.retention_seconds)
                except BaseException:
                    for ev in events[start:]:  # keep the unwritten for the next attempt, newer changes first
                        self._dirty.setdefault(ev.id, ev)
                    raise
                written += len(entries)
                self._settle(part)
            # Request-log entries go after the events they name.
            logs = self._log_retry + fresh_logs
            self._log_retry = []
            fresh_logs.clear()  # in `logs` now: the caller must not queue them again
            for start in range(0, len(logs), _SLICE * 4):
                try:
                    await self.kv.put_many(
                        logs[start : start + _SLICE * 4], expiration_ttl=self.log_retention_seconds
                    )
                except BaseException:
                    self._log_retry = logs[start:]
                    raise
            return written

    def _settle(self, written: list[UsageEvent]) -> None:
        """Forget final events that are now in the KV (unless they changed again meanwhile)."""
        for ev in written:
            if ev.status == "final" and ev.id not in self._dirty:
                self._live.pop(ev.id, None)
                if ev.savings_usd:
                    cycle = (ev.key_id, time.strftime("%Y%m", time.gmtime(ev.created)))
                    left = self._unflushed_savings.get(cycle, 0.0) - ev.savings_usd
                    if abs(left) < 1e-12:
                        self._unflushed_savings.pop(cycle, None)
                    else:
                        self._unflushed_savings[cycle] = left

    async def close(self, within: float | None = None) -> None:
        """Stop the loop and write what is left (graceful shutdown), giving up after `within` seconds (None:
        however long the KV takes). A KV that stalls answers each command only at its reply timeout, and the
        last write takes several: unbounded, it held the shutdown past its grace period (and past a
        supervisor's patience, whose SIGKILL then lost everything, the rest of the shutdown included)."""
        try:
            async with asyncio.timeout(within):
                if self._task is not None:
                    self._task.cancel()
                    with contextlib.suppress(asyncio.CancelledError):
                        await self._task
                    self._task = None
                await self.flush()
        except (KVUnavailableError, TimeoutError) as exc:
            # The rest of the shutdown goes on: what could not be written is lost, and said so.
            timed_out = within is not None and not isinstance(exc, KVUnavailableError)
            why = f"the KV did not take them within the {within:g} s left" if timed_out else exc
            log.error(
                "%d usage events and %d request-log entries were not written before shutdown: %s",
                len(self._dirty)
                + len(self._queued)
                # still-running requests' pending events wait there until a write takes them
                + sum(ev.status == "pending" and ev.id not in self._dirty for ev in self._aging.values())
                + sum(ev.status == "pending" and ev.id not in self._dirty for ev in self._fresh.values()),
                len(self._logs) + len(self._log_retry),
                why,
            )
        finally:
            if left := len(self._charges):
                log.error(
                    "%d charges to plans were not applied before shutdown (the KV did not take them)", left
                )

    # ---- reads ----

    async def get(self, key_id: str, event_id: str) -> UsageEvent | None:
        """The event, if `key_id` made it."""
        ev = self._live.get(event_id)
        if ev is not None:
            if ev.key_id != key_id:
                return None
            await self._reconcile_queued(event_id)  # reading it settles it: no need to wait for the loop
            return ev
        where = kv_key(key_id, event_id)
        if where is None:
            return None
        raw = await self.kv.get(where)
        return None if raw is None else _event_decoder.decode(raw)

    async def _scan(self, prefix: str) -> Any:
        cursor: str | None = None
        while True:
            page = await self.kv.list(prefix=prefix, limit=1000, cursor=cursor)
            for info in page.keys:
                if isinstance(info.metadata, dict):
                    yield info.name, info.metadata
            if page.list_complete:
                return
            cursor = page.cursor

    async def totals(self, key_id: str | None, start: int, end: int, group_by: str | None) -> dict[str, Any]:
        """Sums over the events created in [start, end] (epoch seconds), overall and per group."""
        await self.flush()  # include this process's latest events
        prefix = PREFIX if key_id is None else f"{PREFIX}{key_id}/"
        first, last = _day(start), _day(end)
        overall = _Totals()
        groups: dict[str, _Totals] = {}
        async for name, meta in self._scan(prefix):
            day = name.rsplit("/", 2)[-2]
            if not first <= day <= last:
                continue
            t = meta.get("t")
            if not isinstance(t, int) or not start <= t <= end:
                continue
            overall.add(meta)
            if group_by is not None:
                label = f"{day[:4]}-{day[4:6]}-{day[6:]}" if group_by == "day" else str(meta.get(group_by[0]))
                groups.setdefault(label, _Totals()).add(meta)
        out: dict[str, Any] = {"totals": overall.as_dict()}
        if group_by is not None:
            out["groups"] = [{group_by: label, **groups[label].as_dict()} for label in sorted(groups)]
        return out


class _Totals:
    __slots__ = (
        "actual",
        "baseline",
        "billed_in",
        "billed_out",
        "cached",
        "final",
        "optimized",
        "original",
        "requests",
        "saved",
        "savings",
        "unpriced",
    )

    def __init__(self) -> None:
        self.requests = self.final = self.unpriced = 0
        self.original = self.optimized = self.billed_in = self.billed_out = self.cached = self.saved = 0
        self.baseline = self.actual = self.savings = 0.0

    def add(self, m: dict[str, Any]) -> None:
        self.requests += 1
        self.final += m.get("s") == "final"
        self.original += int(m.get("oi") or 0)
        self.optimized += int(m.get("zi") or 0)
        self.billed_in += int(m.get("bi") or 0)
        self.billed_out += int(m.get("bo") or 0)
        self.cached += int(m.get("ci") or 0)
        self.saved += int(m.get("st") or 0)
        if m.get("ac") is None:
            self.unpriced += m.get("s") == "final"
        else:
            actual = float(m["ac"])
            # A baseline that could not be priced (a cost the upstream reported, at no known rate) counts as
            # the actual cost: no saving is claimed for it, and the baseline never reads below the actual.
            self.baseline += actual if m.get("bc") is None else float(m["bc"])
            self.actual += actual
            self.savings += float(m.get("sv") or 0.0)

    def as_dict(self) -> dict[str, Any]:
        return {
            "requests": self.requests,
            "final_requests": self.final,
            "original_input_tokens": self.original,
            "optimized_input_tokens": self.optimized,
            "billed_input_tokens": self.billed_in,
            "billed_output_tokens": self.billed_out,
            "cached_input_tokens": self.cached,
            "saved_tokens": self.saved,
            "baseline_cost_usd": round(self.baseline, 6),
            "actual_cost_usd": round(self.actual, 6),
            "savings_usd": round(self.savings, 6),
            "unpriced_requests": self.unpriced,
        }
