"""Group commit for counters: concurrent `incr` calls share one `incr_many` round trip.

A rate limiter counts every request. Sent one by one, those counts cost a SQLite commit (or a Redis round
trip) per request, serialized behind each other. `CounterBatch` gathers the increments that arrive while a
round trip is in flight and sends them together as the next one, so at any concurrency there is at most one
round trip in flight per instance, and each caller still learns the exact value its own increment produced:
within a batch the callers are ordered by arrival, and caller i sees the stored value before the batch plus
the deltas of callers 0..i. Atomicity across instances is the KV's, as with a plain `incr`.
"""

from __future__ import annotations

import asyncio
from collections import deque
from collections.abc import Sequence

from kv.base import KVNamespace

Increment = tuple[str, int, int | None]
"""(key, delta, expiration_ttl)"""

_MAX_KEYS = 500
"""Keys in one round trip; callers beyond it wait for the next one."""


class _Batch:
    __slots__ = ("deltas", "future", "ttls")

    def __init__(self) -> None:
        self.deltas: dict[str, int] = {}
        self.ttls: dict[str, int | None] = {}
        self.future: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()

    def add(self, key: str, delta: int, ttl: int | None) -> int:
        """Add one increment; returns the batch's total for `key` before it."""
        before = self.deltas.get(key, 0)
        self.deltas[key] = before + delta
        self.ttls.setdefault(key, ttl)  # a counter keeps the expiration it was created with anyway
        return before


class CounterBatch:
    """Coalesces concurrent increments on one KV namespace (see the module docstring)."""

    def __init__(self, kv: KVNamespace) -> None:
        self.kv = kv
        self.round_trips = 0
        self._queue: deque[_Batch] = deque()  # not sent yet; the last one still takes increments
        self._sender: asyncio.Task[None] | None = None

    async def incr(self, increments: Sequence[Increment]) -> list[int]:
        """Add each `(key, delta, expiration_ttl)` and return, per entry, the value after this call's
        increment. The keys of one call must be distinct. Raises the KV's error if the round trip fails."""
        if not self._queue or len(self._queue[-1].deltas) + len(increments) > _MAX_KEYS:
            self._queue.append(_Batch())
        batch = self._queue[-1]
        offsets = [batch.add(key, delta, ttl) for key, delta, ttl in increments]
        if self._sender is None:
            self._sender = asyncio.create_task(self._send())
        # Shielded: one caller giving up must not cancel the others' round trip.
        values = await asyncio.shield(batch.future)
        return [
            values[key] - batch.deltas[key] + offset + delta
            for (key, delta, _), offset in zip(increments, offsets, strict=True)
        ]

    async def _send(self) -> None:
        batch: _Batch | None = None
        try:
            while self._queue:
                batch = self._queue.popleft()  # from here on, new increments go to a new batch
                keys = list(batch.deltas)
                try:
                    values = await self.kv.incr_many(
                        keys,
                        [batch.deltas[k] for k in keys],
                        expiration_ttl=[batch.ttls[k] for k in keys],
                    )
                except Exception as exc:  # noqa: BLE001 - handed to every caller of this batch
                    batch.future.set_exception(exc)
                    batch.future.exception()  # retrieved: every waiter may have gone already
                else:
                    batch.future.set_result(dict(zip(keys, values, strict=True)))
                self.round_trips += 1
        except BaseException:  # cancelled at shutdown: nobody may wait forever
            if batch is not None:
                batch.future.cancel()
            while self._queue:
                self._queue.popleft().future.cancel()
            raise
        finally:
            self._sender = None
