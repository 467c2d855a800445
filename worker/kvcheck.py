"""Whether the KV takes writes, as `GET /health` reports it.

Nearly every request needs the KV (the key lookup past its cache, rate limits, quotas), so a worker whose
store is down answers 503s: a load balancer should know. The check is a write (a counter increased by 0), as
writes are what a store that still reads but no longer writes (a Redis out of memory or turned read-only by a
failover, a SQLite file locked by another process) fails first. A probe waits for it 1 s at most, so a stalled
store is reported in time; its outcome is kept for a second, and while a check is still on its way no other
starts, so probes cost at most one KV call at a time and one a second per instance, however many arrive (on
a locked SQLite file each call waits the busy timeout: they must not queue up ahead of requests).
"""

from __future__ import annotations

import asyncio
import contextlib
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
        self._check: asyncio.Task[bool] | None = None

    async def ok(self) -> bool:
        """True when the KV took a write within the last second (or does now, within the timeout)."""
        if time.monotonic() < self._until:
            return self._ok
        if self._check is None:
            self._check = asyncio.get_running_loop().create_task(self._write(), name="kv-check")
        try:
            async with asyncio.timeout(self._timeout):
                # Shared by the probes that arrive meanwhile; one giving up does not cancel it.
                return await asyncio.shield(self._check)
        except TimeoutError:  # still on its way: the store is stalled (or locked)
            self._ok, self._until = False, time.monotonic() + self._fresh
            return False

    async def _write(self) -> bool:
        try:
            await self.kv.incr(_KEY, 0, expiration_ttl=60)
            self._ok = True
        except KVError:
            self._ok = False
        finally:
            self._check = None
        self._until = time.monotonic() + self._fresh
        return self._ok

    async def close(self) -> None:
        """Stop a check still on its way (shutdown)."""
        if self._check is not None:
            self._check.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await self._check
