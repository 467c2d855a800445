"""Group commit for counters: concurrent `incr` calls share one `incr_many` round trip.

A rate limiter counts every request. Sent one by one, those counts cost a SQLite commit (or a Redis round
trip) per request, serialized behind each other. `CounterBatch` gathers the increments that arrive while a
round trip is in flight and sends them together as the next one, so at any concurrency there is at most one
round trip in flight per instance, and each caller still learns the exact value its own increment produced:
within a batch the callers are ordered by arrival, and caller i sees the stored value before the batch plus
the deltas of callers 0..i. Atomicity across instances is the KV's, as with a plain `incr`.

`count` adds leases for counters checked against a limit (rate limits, request quotas). Far from its limit,
an instance reserves a block of positions in the shared counter with one increment and hands them out
locally, without a round trip; close to the limit (as far as the instance has seen the counter) the blocks
shrink to one position. No position is ever handed out twice and none beyond what the counter holds, so
all instances together never admit more than the limit. Positions an instance reserved but has not used yet
wait for its next requests; those still unused when the counter's window ends are lost (a few per instance
and counter, only for limits of at least `LEASE_MIN_LIMIT`: a lease is at most `LEASE_MAX` and at most
1/64 of what the instance saw left). One lease per counter is reserved at a time: requests that find none
while one is on its way wait for it and take their positions from it, so a burst of concurrent requests
reserves one block, not a block each, in one round trip; those the block has no room left for count one
position each at once (they do not wait for it).

On a store that can lose a reply (Redis: sent, the reply never came, `KVIndeterminateError`), a round trip
may have counted what its callers were refused or admitted uncounted for. With a `Settler` (`settle_with`),
each round trip goes out as `incr_many_once` under a token of its own, and one whose outcome is unknown is
handed to it: sent again under that token once the store answers (applied once, whether or not the first
went through), then its `count` increments taken back, so the counter ends as if they had never been sent.
Its plain `incr` increments (a give-back, a read) are left applied.
"""

from __future__ import annotations

import asyncio
import secrets
import time
from collections import deque
from collections.abc import Iterable, Sequence
from typing import Protocol

from kv.base import KVNamespace
from kv.errors import KVError, KVIndeterminateError

Increment = tuple[str, int, int | None]
"""(key, delta, expiration_ttl)"""

_MAX_KEYS = 500
"""Keys in one round trip; callers beyond it wait for the next one."""

LEASE_MAX = 64
"""The most positions one lease reserves."""
LEASE_MIN_LIMIT = 2 * 64
"""Limits below this are counted one position at a time: exact, with nothing ever left unused."""
_LEASE_SHARE = 64
"""A lease is at most this fraction (1/n) of what is left before the limit."""
_PRUNE_AT = 4096
TOKEN_TTL = 120
"""How long the store remembers a round trip's token: as long as a per-minute rate-limit counter lives, so a
round trip settled later finds its counters gone anyway. (A request-quota count settled more than this after
an outage began may be counted twice and taken back once.) One token key per round trip lives that long."""


class Settler(Protocol):
    """Where round trips whose outcome is unknown are settled (see the module docstring)."""

    def token(self, batch_id: str) -> str:
        """The once-token a round trip with this id is sent under."""

    def settle(
        self, batch_id: str, sent_at: float, increments: Iterable[Increment], undo: Iterable[Increment]
    ) -> None:
        """Send `increments` again under `batch_id`'s token until the store answers, then apply `undo`."""


class _Batch:
    __slots__ = ("counted", "deltas", "future", "ttls")

    def __init__(self) -> None:
        self.deltas: dict[str, int] = {}
        self.ttls: dict[str, int | None] = {}
        self.counted: dict[str, int] = {}
        """The part of `deltas` that `count` added: taken back if the round trip's outcome is unknown."""
        self.future: asyncio.Future[dict[str, int]] = asyncio.get_running_loop().create_future()

    def add(self, key: str, delta: int, ttl: int | None, counted: bool) -> int:
        """Add one increment; returns the batch's total for `key` before it."""
        before = self.deltas.get(key, 0)
        self.deltas[key] = before + delta
        self.ttls.setdefault(key, ttl)  # a counter keeps the expiration it was created with anyway
        if counted:
            self.counted[key] = self.counted.get(key, 0) + delta
        return before


class _Leases:
    """One counter's unused reserved positions in this instance, and the highest value seen."""

    __slots__ = ("expires", "ranges", "seen")

    def __init__(self, ttl: int | None) -> None:
        self.ranges: deque[list[int]] = deque()  # [next, last] position ranges
        self.seen = 0
        self.expires = time.monotonic() + (ttl or 3600)

    def take(self) -> int | None:
        while self.ranges:
            first = self.ranges[0]
            if first[0] <= first[1]:
                first[0] += 1
                return first[0] - 1
            self.ranges.popleft()
        return None


class CounterBatch:
    """Coalesces concurrent increments on one KV namespace (see the module docstring)."""

    def __init__(self, kv: KVNamespace) -> None:
        self.kv = kv
        self.round_trips = 0
        self.prunes = 0
        """Passes over the leases that dropped the expired ones (each is O(leases); see `_prune`)."""
        self._prune_at = _PRUNE_AT
        self._queue: deque[_Batch] = deque()  # not sent yet; the last one still takes increments
        self._sender: asyncio.Task[None] | None = None
        self._leases: dict[str, _Leases] = {}
        self._claiming: dict[str, tuple[int, list[asyncio.Future[None]]]] = {}
        """Counters with a block of positions being reserved: how many positions it will have for others, and
        the requests waiting for them."""
        self._settler: Settler | None = None

    def settle_with(self, settler: Settler) -> None:
        """Send round trips under tokens and hand those whose outcome is unknown to `settler`; only on a
        store that can lose a reply (elsewhere a token would be a write for nothing)."""
        if self.kv.loses_replies:
            self._settler = settler

    def take(self, counters: Sequence[tuple[str, int | None, int]]) -> list[int] | None:
        """`count`'s common case without a coroutine: each counter's position from this instance's lease, when
        every one of them has a position left in its current block (the same positions `count` would hand
        out); else None, with nothing taken, and `count` does the rest."""
        out: list[int] = []
        for key, _, _ in counters:
            leases = self._leases.get(key)
            if leases is None or not leases.ranges:
                break
            first = leases.ranges[0]
            position = first[0]
            if position > first[1]:
                break
            first[0] = position + 1
            out.append(position)
        else:
            return out
        for i in reversed(range(len(out))):  # given back: nothing ran in between
            self._leases[counters[i][0]].ranges[0][0] = out[i]
        return None

    async def count(self, counters: Sequence[tuple[str, int | None, int]]) -> list[int]:
        """Count one use of each `(key, expiration_ttl, limit)` and return its position: the counter's value
        after this use, as `incr` would return it. Served from this instance's leases where it can."""
        out = [0] * len(counters)
        claims: list[tuple[int, int]] = []  # (index, size)
        waits: list[tuple[int, asyncio.Future[None]]] = []
        for i, (key, _, limit) in enumerate(counters):
            leases = self._leases.get(key)
            position = leases.take() if leases is not None else None
            if position is not None:
                out[i] = position
                continue
            claiming = self._claiming.get(key)
            if claiming is not None:
                room, waiters = claiming
                if len(waiters) < room:  # a block is on its way with a position left: served from it
                    waiter = asyncio.get_running_loop().create_future()
                    waiters.append(waiter)
                    waits.append((i, waiter))
                else:  # spoken for: one position of its own now, not a second wait and round trip later
                    claims.append((i, 1))
                continue
            seen = leases.seen if leases is not None else 0
            size = min(LEASE_MAX, (limit - seen) // _LEASE_SHARE) if limit >= LEASE_MIN_LIMIT else 1
            if size > 1:
                self._claiming[key] = (size - 1, [])
            claims.append((i, max(1, size)))
        if claims:
            await self._claim(counters, claims, out)
        if waits:
            late: list[tuple[int, int]] = []
            for i, waiter in waits:
                await waiter
                leases = self._leases.get(counters[i][0])
                position = leases.take() if leases is not None else None
                if position is None:  # the block ran out before this request's turn, or never came
                    late.append((i, 1))
                else:
                    out[i] = position
            if late:
                await self._claim(counters, late, out)
        return out

    async def _claim(
        self, counters: Sequence[tuple[str, int | None, int]], claims: list[tuple[int, int]], out: list[int]
    ) -> None:
        """Count `claims`, (index in `counters`, size), in one increment: the first position of each block is
        this caller's, the rest its instance's lease; then wake the requests that waited for those blocks."""
        try:
            values = await self._incr([(counters[i][0], size, counters[i][1]) for i, size in claims], True)
            for (i, size), value in zip(claims, values, strict=True):
                key, ttl, _ = counters[i]
                out[i] = value - size + 1
                leases = self._leases.get(key)
                if leases is None:
                    if len(self._leases) >= self._prune_at:
                        self._prune()
                    leases = self._leases[key] = _Leases(ttl)
                leases.seen = max(leases.seen, value)
                if size > 1:
                    leases.ranges.append([value - size + 2, value])
        finally:
            for i, size in claims:
                if size > 1:
                    for waiter in self._claiming.pop(counters[i][0], (0, []))[1]:
                        if not waiter.done():  # one whose request was cancelled meanwhile is done
                            waiter.set_result(None)

    def _prune(self) -> None:
        """Drop the expired leases. The next pass waits until the map has doubled from what is left, so with
        many live counters (a new client IP every request) a new counter does not pay a scan of them all:
        the cost per counter stays constant and the map at most twice its live size."""
        now = time.monotonic()
        for key in [k for k, v in self._leases.items() if v.expires <= now]:
            del self._leases[key]
        self.prunes += 1
        self._prune_at = max(_PRUNE_AT, 2 * len(self._leases))

    async def incr(self, increments: Sequence[Increment]) -> list[int]:
        """Add each `(key, delta, expiration_ttl)` and return, per entry, the value after this call's
        increment. The keys of one call must be distinct. Raises the KV's error if the round trip fails."""
        return await self._incr(increments, False)

    async def _incr(self, increments: Sequence[Increment], counted: bool) -> list[int]:
        if not self._queue or len(self._queue[-1].deltas) + len(increments) > _MAX_KEYS:
            self._queue.append(_Batch())
        batch = self._queue[-1]
        offsets = [batch.add(key, delta, ttl, counted) for key, delta, ttl in increments]
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
                    values = await self._round_trip(batch, keys)
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

    async def _round_trip(self, batch: _Batch, keys: list[str]) -> Sequence[int]:
        deltas = [batch.deltas[k] for k in keys]
        ttls = [batch.ttls[k] for k in keys]
        if self._settler is None:
            return await self.kv.incr_many(keys, deltas, expiration_ttl=ttls)
        batch_id = secrets.token_hex(16)
        sent_at = time.time()
        try:
            values = await self.kv.incr_many_once(
                self._settler.token(batch_id), keys, deltas, expiration_ttl=ttls, token_ttl=TOKEN_TTL
            )
        except KVIndeterminateError:
            undo = [(k, -batch.counted[k], batch.ttls[k]) for k in keys if batch.counted.get(k)]
            self._settler.settle(batch_id, sent_at, zip(keys, deltas, ttls, strict=True), undo)
            raise
        if values is None:  # a token of 128 random bits, never sent before
            raise KVError(f"the counters' token {batch_id} was applied before")
        return values
