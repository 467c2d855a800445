"""The KV sweep: the space of expired entries nothing reads again, reclaimed in the background.

Per-minute rate-limit counters, sessions, nonces, breaker state: most keys the worker writes expire and are
never read or listed again. Expired, they are invisible, but on SQLite their rows stay in the file and on
Redis their members stay in the index `list` reads (Redis's own expiry removes only the value), one more for
every client IP every minute. The loop here calls `KVNamespace.sweep` a bounded slice at a time, with a pause
between slices so that requests never queue behind it, and rests between passes. It is started with the app
and stopped at shutdown (the slice in flight finishes; none starts after).
"""

from __future__ import annotations

import asyncio
import contextlib
import logging

from kv import KVError, KVNamespace

log = logging.getLogger("trex.sweep")

PAUSE_SECONDS = 0.02
"""Between two slices of one pass, at the least: a slice takes about a millisecond of the store's time."""
_SHARE = 4
"""A pause is at least this many times the slice before it took: a pass holds the store a fifth of the time at
most (SQLite's write lock, say, with a large backlog of expired rows)."""


class Sweeper:
    """Calls `kv.sweep` in the background: slice after slice while a pass has more, then `rest_seconds` of
    rest (shared by every instance on one Redis: they do one pass between them)."""

    def __init__(self, kv: KVNamespace, rest_seconds: float, pause_seconds: float = PAUSE_SECONDS) -> None:
        self.kv = kv
        self.rest_seconds = rest_seconds
        self.pause_seconds = pause_seconds
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None

    def start(self) -> None:
        """Start the loop (once the event loop runs); its first slice comes after one pause."""
        if self._task is None:
            self._stop.clear()
            self._task = asyncio.get_running_loop().create_task(self._run(), name="kv-sweep")

    async def _run(self) -> None:
        delay = self.pause_seconds
        clock = asyncio.get_running_loop().time
        while not await self._stopped_within(delay):
            started = clock()
            try:
                more = await self.kv.sweep(rest_seconds=self.rest_seconds)
            except KVError as exc:
                log.warning("KV sweep failed (%s); trying again in %.0f s", exc, self.rest_seconds)
                more = False
            except Exception:
                log.exception("KV sweep failed; trying again in %.0f s", self.rest_seconds)
                more = False
            # A slow slice (a large backlog, a busy store) waits longer before the next: the sweep takes at
            # most a fifth of the store's time, whatever a slice costs.
            delay = max(self.pause_seconds, _SHARE * (clock() - started)) if more else self.rest_seconds

    async def _stopped_within(self, seconds: float) -> bool:
        with contextlib.suppress(TimeoutError):
            await asyncio.wait_for(self._stop.wait(), seconds)
        return self._stop.is_set()

    async def close(self) -> None:
        """Stop the loop: a slice in flight finishes (it is short), no other starts. Idempotent."""
        task, self._task = self._task, None
        if task is None:
            return
        self._stop.set()
        await task
