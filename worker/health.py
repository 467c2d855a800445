"""Provider health: a circuit breaker per provider and model, shared by every instance through the KV.

`BREAKER_FAILURES` consecutive failures (5xx gateway errors, Anthropic's 529, refused connections, timeouts;
not a 429, which is a rate limit, most often of one customer's own key, not an outage for everyone; nor any
failure of a request sent with the client's own provider key, which may be that key's) open the breaker for
`BREAKER_COOLDOWN_SECONDS`: routing then skips that provider+model without waiting on it. A success on any
instance resets the count: the periodic state read also notices a failure count left by another instance.
When the cooldown is over, one request — the first to win a KV `put_if_absent`, on whichever instance — is let
through as a probe (half-open): a success closes the breaker, a failure opens it for another cooldown (one
with the client's own key gives the probe up for the next request instead).

KV keys: `health/<provider>/<model>/fails` (an `incr` counter), `health/<provider>/<model>/open` (the epoch
second the cooldown ends, with the cooldown as TTL), `health/<provider>/<model>/probe` (who probes). Each
instance caches a route's state for at most `_REFRESH_SECONDS`, so the request path reads the KV about once a
second per route, not once per request (the requests that find the state stale while it is being read wait for
that one read; a route in use is read again before its state is stale, `_RENEW_AFTER_SECONDS`, so that
under steady traffic none waits), and writes only when something fails or recovers. That cache holds at most
`max_routes` routes: a client can name any number of models (`local/<anything>` needs no key), and each would
otherwise stay in it for good. Past that, the route least recently read from the KV goes, one without failures
if one of the oldest few has none; the KV still holds its state, so it is only read again.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import math
import time
from collections import OrderedDict
from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from itertools import islice
from typing import Any

from kv import KVError, KVNamespace

from .context import shared

log = logging.getLogger("trex.health")
_REFRESH_SECONDS = 1.0
_RENEW_AFTER_SECONDS = 0.8
"""How long after a read a route's state is read again, if requests used it since: under steady traffic the
state is renewed before it is stale, and no request waits for the read (every request in flight otherwise
would, once a second). A route nobody used since its read is left to go stale."""
MAX_ROUTES = 4096
_EVICTION_SCAN = 32  # how many of the oldest routes are looked at for one without failures


def _number(raw: bytes) -> float:
    try:
        return float(raw)
    except ValueError:
        return 0.0


@dataclass(slots=True)
class _State:
    open_until: float
    checked: float
    failures_seen: bool


class Breakers:
    """Circuit breakers for every provider+model this instance routes to."""

    def __init__(
        self,
        kv: KVNamespace,
        failures: int,
        cooldown_seconds: int,
        clock: Callable[[], float] = time.time,
        max_routes: int = MAX_ROUTES,
    ) -> None:
        self.kv = kv
        self.failures = failures
        self.cooldown = max(1, cooldown_seconds)
        self._ttl = max(60, cooldown_seconds)  # the KV's shortest TTL; `open` holds the exact end itself
        self._clock = clock
        self._max_routes = max(1, max_routes)
        # Least recently read from the KV first (see the module docstring).
        self._states: OrderedDict[tuple[str, str], _State] = OrderedDict()
        self._reading: dict[tuple[str, str], asyncio.Future[_State | None]] = {}
        """The reads of a route's state from the KV in flight."""
        self._used: set[tuple[str, str]] = set()
        """Routes whose state requests used since it was last read."""
        self._renewals: dict[tuple[str, str], asyncio.TimerHandle] = {}
        self._closed = False

    def _key(self, provider: str, model: str, what: str) -> str:
        return f"health/{provider}/{model}/{what}"

    def allowed(self, provider: str, model: str) -> bool | None:
        """What `allow` would answer, when this instance knows it without the KV (the state read within the
        last second, and no probe to contend for); None when only `allow` can tell. The request path asks
        this first: most requests need no coroutine for their breaker."""
        if self.failures <= 0:
            return True
        route = (provider, model)
        state = self._states.get(route)
        if state is None:
            return None
        now = self._clock()
        if now - state.checked >= _REFRESH_SECONDS:
            return None
        self._used.add(route)
        if state.open_until == 0.0:
            return True
        return False if now < state.open_until else None

    async def allow(self, provider: str, model: str) -> bool:
        """False while the breaker is open (skip this route); True when closed or when this request is the
        half-open probe."""
        if self.failures <= 0:
            return True
        now = self._clock()
        route = (provider, model)
        state = self._states.get(route)
        if state is None or now - state.checked >= _REFRESH_SECONDS:
            # Shielded: a request that goes away does not cancel the read the others wait for.
            fresh = await shared(self._start_read(route, now))
            if fresh is None:  # health is advisory: an unreachable KV never blocks traffic
                return True
            state = fresh
        self._used.add(route)
        if state.open_until == 0.0:
            return True
        if now < state.open_until:
            return False
        # Cooling down is over: one probe, across every instance. The probe's turn lasts a cooldown (its value
        # says until when): one that never reported back (answered 429, its client left) lets the next request
        # probe then, not only when the KV entry expires (60 s at least).
        probe = self._key(provider, model, "probe")
        turn = str(now + self.cooldown).encode()
        try:
            if await self.kv.put_if_absent(probe, turn, expiration_ttl=self._ttl):
                return True
            held = await self.kv.get(probe)
            if held is None or _number(held) > now:
                return False
            await self.kv.delete(probe)
            return await self.kv.put_if_absent(probe, turn, expiration_ttl=self._ttl)
        except KVError:
            return True

    def _start_read(self, route: tuple[str, str], now: float) -> asyncio.Future[_State | None]:
        """The read of the route's state in flight, started if there is none: one read of the KV for every
        request that finds the state stale meanwhile (and for its renewal)."""
        reading = self._reading.get(route)
        if reading is None:
            reading = self._reading[route] = asyncio.ensure_future(self._read(route, now))
            reading.add_done_callback(functools.partial(self._read_done, route))
        return reading

    async def _read(self, route: tuple[str, str], now: float) -> _State | None:
        """The route's state as the KV holds it now (None when the KV cannot say)."""
        provider, model = route
        try:
            raw = await self.kv.get(self._key(provider, model, "open"))
            # Failures counted by any instance: a success here must reset them (consecutive failures).
            counted = await self.kv.get(self._key(provider, model, "fails"))
        except KVError as exc:
            log.warning("breaker state for %s/%s unavailable: %s", provider, model, exc)
            return None
        held = self._states.get(route)
        state = _State(
            float(raw) if raw else 0.0, now, (held.failures_seen if held else False) or counted is not None
        )
        self._remember(route, state)
        return state

    def _read_done(self, route: tuple[str, str], reading: asyncio.Future[_State | None]) -> None:
        self._reading.pop(route, None)
        self._used.discard(route)
        pending = self._renewals.pop(route, None)
        if pending is not None:  # one renewal per route: its state was read again before its timer came
            pending.cancel()
        # Retrieved: every request that waited for it may have gone already (a renewal has none).
        if reading.cancelled() or reading.exception() is not None or reading.result() is None:
            return
        if not self._closed and route in self._states:
            self._renewals[route] = asyncio.get_running_loop().call_later(
                _RENEW_AFTER_SECONDS, self._renew, route
            )

    def _renew(self, route: tuple[str, str]) -> None:
        """Read the route's state again if requests used it since its last read (`_RENEW_AFTER_SECONDS`)."""
        self._renewals.pop(route, None)
        if route in self._used and not self._closed:
            self._start_read(route, self._clock())

    def close(self) -> None:
        """Stop renewing route states (at shutdown: no KV read is started after it)."""
        self._closed = True
        for handle in self._renewals.values():
            handle.cancel()
        self._renewals.clear()

    def _remember(self, route: tuple[str, str], state: _State) -> None:
        """Hold `state` for `route` (as the most recently read), within `max_routes`."""
        states = self._states
        if route in states:
            states[route] = state
            states.move_to_end(route)
            return
        if len(states) >= self._max_routes:
            oldest = islice(states.items(), _EVICTION_SCAN)
            victim = next(
                (r for r, s in oldest if not s.failures_seen and s.open_until == 0.0), next(iter(states))
            )
            del states[victim]
            self._used.discard(victim)
            pending = self._renewals.pop(victim, None)
            if pending is not None:
                pending.cancel()
        states[route] = state

    def retry_after(self, provider: str, model: str) -> int:
        """Whole seconds until the open breaker of this route lets a probe through (at least 1)."""
        state = self._states.get((provider, model))
        left = state.open_until - self._clock() if state is not None else self.cooldown
        return max(1, math.ceil(left))

    async def failed(self, provider: str, model: str, *, counted: bool = True) -> None:
        """Count a retryable failure; open the breaker at the threshold.

        `counted=False`: a failure that says nothing about the route for everyone (a request sent with the
        client's own provider key). It is not counted; if it was the half-open probe, the probe is given up
        so that the next request probes instead of the route staying skipped until the probe entry expires.
        """
        if self.failures <= 0:
            return
        route = (provider, model)
        if not counted:
            state = self._states.get(route)
            if state is not None and 0 < state.open_until <= self._clock():
                try:
                    await self.kv.delete(self._key(provider, model, "probe"))
                except KVError as exc:
                    log.warning("could not give up the probe of %s/%s: %s", provider, model, exc)
            return
        try:
            count = await self.kv.incr(self._key(provider, model, "fails"), 1, expiration_ttl=self._ttl * 2)
            state = self._states.get(route)
            if state is None:
                state = _State(0.0, 0.0, True)
                self._remember(route, state)
            state.failures_seen = True
            half_open = state.open_until > 0 and self._clock() >= state.open_until  # the probe failed
            if count >= self.failures or half_open:
                until = self._clock() + self.cooldown
                await self.kv.put(
                    self._key(provider, model, "open"), str(until), expiration_ttl=self._ttl * 2
                )
                await self.kv.delete(self._key(provider, model, "fails"))
                await self.kv.delete(self._key(provider, model, "probe"))
                state.open_until, state.checked = until, self._clock()
                log.warning(
                    "breaker open for %s/%s for %d s after %d failures", provider, model, self.cooldown, count
                )
        except KVError as exc:
            log.warning("could not record a failure of %s/%s: %s", provider, model, exc)

    def succeeded(self, provider: str, model: str) -> Coroutine[Any, Any, None] | None:
        """The writes closing the breaker if this route had failures or was open, else None (nothing to
        write, the usual case: decided without creating a coroutine)."""
        state = self._states.get((provider, model))
        if state is None or (not state.failures_seen and state.open_until == 0.0):
            return None
        return self._close(provider, model, state)

    async def _close(self, provider: str, model: str, state: _State) -> None:
        try:
            for what in ("fails", "open", "probe"):
                await self.kv.delete(self._key(provider, model, what))
        except KVError as exc:
            log.warning("could not close the breaker of %s/%s: %s", provider, model, exc)
            return
        state.open_until, state.failures_seen, state.checked = 0.0, False, self._clock()
        log.info("breaker closed for %s/%s", provider, model)
