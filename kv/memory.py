"""In-process KV backend: a dict for lookups plus a sorted key list for ordered listing."""

from __future__ import annotations

import bisect
import time
from collections.abc import Sequence

from kv._keyrange import lower_bound
from kv._records import StoredKey, StoredValue, Write
from kv.base import KVNamespace
from kv.clock import Clock
from kv.errors import KVError

_PRUNE_TOKENS_AT = 4096
_SWEEP_SLICE = 1000


def _is_live(entry: Write, now: float) -> bool:
    return entry.expiration is None or entry.expiration > now


class MemoryKV(KVNamespace):
    """A KV namespace held in memory; data is lost when the process exits.

    Operations never await, so each one is atomic with respect to other coroutines.
    """

    def __init__(self, *, clock: Clock = time.time) -> None:
        """Create an empty namespace whose expiry decisions use ``clock``."""
        super().__init__(clock=clock)
        self._entries: dict[bytes, Write] = {}
        self._sorted_keys: list[bytes] = []
        self._tokens: dict[bytes, int] = {}
        """`incr_many_once` tokens and the expiration of their record."""
        self._swept_to: bytes | None = None
        """The last key the sweep's current pass looked at (None: the pass starts from the first)."""

    def _remove(self, key: bytes) -> None:
        if self._entries.pop(key, None) is not None:
            del self._sorted_keys[bisect.bisect_left(self._sorted_keys, key)]

    async def _get(self, key: bytes, now: float) -> StoredValue | None:
        entry = self._entries.get(key)
        if entry is None:
            return None
        if not _is_live(entry, now):
            self._remove(key)
            return None
        return StoredValue(value=entry.value, metadata=entry.metadata)

    async def _put(self, write: Write, now: float) -> None:
        if write.key not in self._entries:
            bisect.insort(self._sorted_keys, write.key)
        self._entries[write.key] = write

    async def _incr_many(
        self, keys: Sequence[bytes], deltas: Sequence[int], expirations: Sequence[int | None], now: float
    ) -> list[int]:
        out = []
        not_integer = None
        for key, delta, expiration in zip(keys, deltas, expirations, strict=True):
            existing = self._entries.get(key)
            metadata = None
            value = delta
            if existing is not None and _is_live(existing, now):
                try:
                    value = int(existing.value) + delta
                except ValueError:
                    # Left as it is; the other keys are still counted, as on SQLite and Redis.
                    not_integer = not_integer or key
                    continue
                expiration, metadata = existing.expiration, existing.metadata
            await self._put(Write(key, str(value).encode(), expiration, metadata), now)
            out.append(value)
        if not_integer is not None:
            raise KVError(f"the value at {not_integer.decode()!r} is not an integer")
        return out

    async def _incr_many_once(
        self,
        token: bytes,
        token_expiration: int,
        keys: Sequence[bytes],
        deltas: Sequence[int],
        expirations: Sequence[int | None],
        now: float,
    ) -> list[int] | None:
        recorded = self._tokens.get(token)
        if recorded is not None and recorded > now:
            return None
        if len(self._tokens) >= _PRUNE_TOKENS_AT:
            self._tokens = {t: e for t, e in self._tokens.items() if e > now}
        self._tokens[token] = token_expiration
        return await self._incr_many(keys, deltas, expirations, now)

    async def _put_if_absent(self, write: Write, now: float) -> bool:
        existing = self._entries.get(write.key)
        if existing is not None and _is_live(existing, now):
            return False
        await self._put(write, now)
        return True

    async def _delete(self, key: bytes) -> None:
        self._remove(key)

    async def _scan(self, prefix: bytes, after: bytes | None, count: int, now: float) -> Sequence[StoredKey]:
        bound, inclusive = lower_bound(prefix, after)
        find = bisect.bisect_left if inclusive else bisect.bisect_right
        found: list[StoredKey] = []
        expired: list[bytes] = []
        keys = self._sorted_keys
        # Index walk rather than slicing: a slice would copy the whole tail of the key list.
        for index in range(find(keys, bound), len(keys)):
            key = keys[index]
            if len(found) >= count or not key.startswith(prefix):
                break
            entry = self._entries[key]
            if _is_live(entry, now):
                found.append(StoredKey(key=key, expiration=entry.expiration, metadata=entry.metadata))
            else:
                expired.append(key)
        for key in expired:
            self._remove(key)
        return found

    async def _sweep(self, now: float, rest_seconds: float) -> bool:
        keys = self._sorted_keys
        start = 0 if self._swept_to is None else bisect.bisect_right(keys, self._swept_to)
        seen = keys[start : start + _SWEEP_SLICE]
        for key in seen:
            if not _is_live(self._entries[key], now):
                self._remove(key)
        if len(seen) < _SWEEP_SLICE:
            self._swept_to = None
            self._tokens = {t: e for t, e in self._tokens.items() if e > now}
            return False
        self._swept_to = seen[-1]
        return True

    async def _close(self) -> None:
        self._entries.clear()
        self._sorted_keys.clear()
        self._tokens.clear()
