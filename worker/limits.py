"""Rate limits: requests per minute per proxy key and per client IP, and concurrent requests per key.

Both per-minute limits apply to every authenticated request (defaults 100 each, seed `002_…`; a plan's
`requests_per_minute` overrides the key limit). They count in fixed windows aligned to the minute, with the
KV's atomic `incr`, so every instance on one SQLite file or one Redis admits exactly the limit together.
The counts of concurrent requests share one round trip (`kv.batching.CounterBatch`), and for limits of 128 or
more an instance reserves blocks of the count (at most 64, at most 1/64 of what is left) while far from the
limit, so most requests need no round trip at all; within 128 of the limit it counts one request at a time.
The in-flight limit (`RATE_LIMIT_MAX_CONCURRENT`, a plan's `max_concurrent`) is counted per instance.

Over a limit: 429 in the client's error format with `Retry-After` (code `rate_limit_exceeded`, or
`concurrency_limit_exceeded`). Every authenticated response carries `X-RateLimit-Limit`,
`X-RateLimit-Remaining` and `X-RateLimit-Reset` (seconds until the window resets) for the key's limit.

The client IP is the peer address; `X-Forwarded-For` is believed only when the peer is one of
`TRUSTED_PROXIES` (IPs or CIDRs), and then the nearest address in it that is not a trusted proxy is used.
When the KV cannot count (Redis down), `RATE_LIMIT_FAIL` decides: `open` admits (and logs and counts each
case in `failures`), `closed` answers 503 `rate_limiter_unavailable`.
"""

from __future__ import annotations

import ipaddress
import logging
import time
from collections.abc import Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any

from kv import KVError, KVNamespace
from kv.batching import CounterBatch

from .auth import KeyRecord
from .config import ConfigError, plan_int
from .errors import RateLimitError, ServiceUnavailableError
from .headernames import X_RATELIMIT_LIMIT, X_RATELIMIT_REMAINING, X_RATELIMIT_RESET

log = logging.getLogger("trex.limits")

Network = ipaddress.IPv4Network | ipaddress.IPv6Network


class RateLimitExceededError(RateLimitError):
    default_code = "rate_limit_exceeded"


@dataclass(frozen=True, slots=True)
class PlanLimits:
    requests_per_minute: int | None = None
    max_concurrent: int | None = None


def parse_plan_limits(raw: Any, source: str) -> dict[str, PlanLimits]:
    """The rate-limit fields of `[plans.NAME]`."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, PlanLimits] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            continue
        values = {
            field: value
            for field in ("requests_per_minute", "max_concurrent")
            if (value := plan_int(source, name, entry, field, 1)) is not None
        }
        if values:
            out[name] = PlanLimits(**values)
    return out


def parse_trusted(raw: str, source: str) -> tuple[Network, ...]:
    nets = []
    for part in (p.strip() for p in raw.split(",")):
        if not part:
            continue
        try:
            nets.append(ipaddress.ip_network(part, strict=False))
        except ValueError:
            raise ConfigError(
                source, "vars.TRUSTED_PROXIES", f"{part!r} is not an IP address or CIDR"
            ) from None
    return tuple(nets)


@dataclass(slots=True)
class Admitted:
    """What a request was admitted with: its rate-limit headers and the in-flight slot to give back."""

    headers: dict[str, str]
    key_id: str | None = None
    in_flight: int = 0
    """The key's requests in flight on this instance, this one included."""


@dataclass(slots=True)
class _Second:
    now: int
    plan_name: str | None
    counters: tuple[tuple[str, int, int], tuple[str, int, int]]
    """(counter, TTL, limit) of the key's and the client IP's minute windows."""
    key_limit: int
    limit_text: str
    reset: int
    """Seconds until the minute window resets."""
    reset_text: str
    concurrent: int


class Limits:
    """Per-key and per-IP request counters in the KV, and per-key in-flight counts in this instance."""

    def __init__(
        self,
        kv: KVNamespace,
        *,
        enabled: bool,
        key_per_minute: int,
        ip_per_minute: int,
        max_concurrent: int,
        trusted: tuple[Network, ...],
        fail_open: bool,
        plans: Mapping[str, PlanLimits],
        counters: CounterBatch | None = None,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.kv = kv
        self.counters = counters or CounterBatch(kv)
        self.enabled = enabled
        self.key_per_minute = key_per_minute
        self.ip_per_minute = ip_per_minute
        self.max_concurrent = max_concurrent
        self.trusted = trusted
        self.fail_open = fail_open
        self.plans = plans
        self.failures = 0
        """Requests admitted without counting because the KV failed (fail-open)."""
        self._clock = clock
        self._in_flight: dict[str, int] = {}
        self._seconds: dict[tuple[str, str], _Second] = {}
        """(key or agent id, client IP) -> what counting its requests needs in the current second."""

    def client_ip(self, peer: str | None, forwarded_for: str | None) -> str:
        ip = peer or "unknown"
        if not forwarded_for or not self.trusted or not self._is_trusted(ip):
            return ip
        for hop in reversed([h.strip() for h in forwarded_for.split(",") if h.strip()]):
            try:
                address = ipaddress.ip_address(hop)
            except ValueError:  # `unknown`, or made up: no client of its own; the proxy is counted
                return ip
            if not any(address in net for net in self.trusted):
                return hop
        return ip

    def _is_trusted(self, address: str) -> bool:
        try:
            ip = ipaddress.ip_address(address)
        except ValueError:
            return False
        return any(ip in net for net in self.trusted)

    def admit(self, key: KeyRecord, ip: str) -> Coroutine[Any, Any, Admitted | None]:
        """Count this request; raise the 429 (or 503) that refuses it. None when limits are off. (`_admit`'s
        coroutine itself, awaited by the caller: no second coroutine around it on every request.)"""
        return self._admit(key.id, key.plan, ip)

    def admit_agent(self, agent_id: str, ip: str) -> Coroutine[Any, Any, Admitted | None]:
        """`admit` for a signed agent: the per-key limits apply to the agent id (agents have no plan)."""
        return self._admit(agent_id, None, ip)

    async def _admit(self, ident: str, plan_name: str | None, ip: str) -> Admitted | None:
        if not self.enabled:
            return None
        second = self._seconds.get((ident, ip))
        now = int(self._clock())
        if second is None or second.now != now or second.plan_name != plan_name:
            second = self._second(ident, plan_name, ip, now)
        key_limit = second.key_limit
        # Most requests take both positions from this instance's leases, without a coroutine; the others
        # count both counters in one round trip shared with every request counted at the same time.
        used = self.counters.take(second.counters)
        try:
            used_key, used_ip = used if used is not None else await self.counters.count(second.counters)
        except KVError as exc:
            if not self.fail_open:
                raise ServiceUnavailableError(
                    "Rate limits cannot be checked right now; try again shortly.",
                    code="rate_limiter_unavailable",
                    headers={"Retry-After": "1"},
                ) from exc
            self.failures += 1
            log.warning("rate limits not checked (fail open, %d so far): %s", self.failures, exc)
            used_key = used_ip = 0
        reset = second.reset
        headers = {
            X_RATELIMIT_LIMIT: second.limit_text,
            X_RATELIMIT_REMAINING: str(key_limit - used_key) if used_key < key_limit else "0",
            X_RATELIMIT_RESET: second.reset_text,
        }
        if used_key > key_limit or used_ip > self.ip_per_minute:
            which = "key" if used_key > key_limit else "client IP"
            limit = key_limit if which == "key" else self.ip_per_minute
            raise RateLimitExceededError(
                f"Rate limit of {limit} requests per minute per {which} reached; retry in {reset} s.",
                headers={**headers, "Retry-After": str(reset)},
            )
        concurrent = second.concurrent
        in_flight = self._in_flight.get(ident, 0)
        if concurrent and in_flight >= concurrent:
            raise RateLimitError(
                f"This key already has {in_flight} requests in flight (limit {concurrent}).",
                code="concurrency_limit_exceeded",
                headers={**headers, "Retry-After": "1"},
            )
        # Counted even without a limit: a plan's credit_above_concurrent reads it.
        self._in_flight[ident] = in_flight + 1
        return Admitted(headers, ident, in_flight + 1)

    def _second(self, ident: str, plan_name: str | None, ip: str, now: int) -> _Second:
        """What counting a request of `ident` from `ip` needs in this second: built once a second per key
        and client IP, not per request (the reset counts down by the second; `_admit` finds it built)."""
        plan = self.plans.get(plan_name) if plan_name else None
        key_limit = plan.requests_per_minute if plan and plan.requests_per_minute else self.key_per_minute
        window = now // 60
        reset = max(1, (window + 1) * 60 - now)
        entry = _Second(
            now,
            plan_name,
            (
                (f"rl/k/{ident}/{window}", 120, key_limit),
                (f"rl/ip/{ip}/{window}", 120, self.ip_per_minute),
            ),
            key_limit,
            str(key_limit),
            # ceil((window + 1) * 60 - t) for any t within this second: the seconds left in the minute.
            reset,
            str(reset),
            plan.max_concurrent if plan and plan.max_concurrent else self.max_concurrent,
        )
        if len(self._seconds) >= 4096:  # many client IPs: start over rather than scan them every second
            self._seconds.clear()
        self._seconds[(ident, ip)] = entry
        return entry

    def release(self, admitted: Admitted) -> None:
        """Give back the in-flight slot (the request's response is complete, or it failed)."""
        if admitted.key_id is None:
            return
        left = self._in_flight.get(admitted.key_id, 0) - 1
        if left > 0:
            self._in_flight[admitted.key_id] = left
        else:
            self._in_flight.pop(admitted.key_id, None)
