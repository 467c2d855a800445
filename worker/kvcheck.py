"""Whether the KV takes writes, as `GET /health` reports it.

Nearly every request needs the KV (the key lookup past its cache, rate limits, quotas), so a worker whose
store is down answers 503s: a load balancer should know. The check is a write (a counter increased by 0), as
writes are what a store that still reads but no longer writes (a Redis out of memory or turned read-only by a
failover, a SQLite file locked by another process) fails first. It is bounded by a timeout, so a stalled store
answers the probe in time, and its outcome is kept for a second, so probes cost at most one KV round trip a
second per instance, however many arrive.
"""

from __future__ import annotations

import asyncio
import time

from kv import KVError, KVNamespace

_KEY = "health/kv"
_FRESH_SECONDS = 1.0
_TIMEOUT_SECONDS = 1.0


class KVCheck:
    """The KV's state as last seen, refreshed at most once a second (see the module docstring)."""

    def __init__(
        self, kv: KVNamespace, *, fresh_seconds: float = _FRESH_SECONDS, timeout: float = _TIMEOUT_SECONDS
    ) -> None:
        self.kv = kv
        self._fresh = fresh_seconds
        self._timeout = timeout
        self._ok = True
        self._until = 0.0
        self._lock = asyncio.Lock()

    async def ok(self) -> bool:
        """True when the KV took a write within the last second (or does now)."""
        if time.monotonic() < self._until:
            return self._ok
        async with self._lock:  # probes arriving together wait for one check
            if time.monotonic() < self._until:
                return self._ok
            try:
                async with asyncio.timeout(self._timeout):
                    await self.kv.incr(_KEY, 0, expiration_ttl=60)
                self._ok = True
            except (KVError, TimeoutError):
                self._ok = False
            self._until = time.monotonic() + self._fresh
            return self._ok
