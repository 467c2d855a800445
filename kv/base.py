"""The ``KVNamespace`` front end: Workers KV semantics, validated once for every backend."""

from __future__ import annotations

import abc
import builtins
import time
from collections.abc import Sequence
from dataclasses import dataclass
from types import TracebackType
from typing import Any, ClassVar, Self, TypeAlias, TypeVar, cast

import msgspec

from kv._keyrange import decode_cursor, encode_cursor
from kv._records import StoredKey, StoredValue, Write
from kv._validation import (
    MAX_KEY_BYTES,
    EncodedMetadata,
    check_limit,
    encode_key,
    encode_metadata,
    encode_prefix,
    encode_value,
    encoded_metadata,
    resolve_expiration,
)
from kv.clock import Clock
from kv.errors import (
    InvalidExpirationError,
    InvalidKeyError,
    InvalidListArgumentError,
    InvalidMetadataError,
    KVClosedError,
    KVError,
    KVUnavailableError,
    ValueTooLargeError,
)

__all__ = [
    "ONCE_MAX_KEYS",
    "InvalidExpirationError",
    "InvalidKeyError",
    "InvalidListArgumentError",
    "InvalidMetadataError",
    "KVClosedError",
    "KVError",
    "KVNamespace",
    "KVUnavailableError",
    "KeyInfo",
    "ListResult",
    "ValueTooLargeError",
]

Metadata: TypeAlias = dict[str, Any]

T = TypeVar("T")

ONCE_MAX_KEYS = 500
"""The most keys one `incr_many_once` call takes: all of them are written in one atomic step."""


def _per_key(value: T | Sequence[T], count: int, name: str) -> list[T]:
    if isinstance(value, Sequence) and not isinstance(value, (str, bytes)):
        if len(value) != count:
            raise ValueError(f"{name} has {len(value)} entries for {count} keys")
        return list(value)
    return [value] * count


def _counters(
    keys: Sequence[str],
    delta: int | Sequence[int],
    expiration_ttl: int | Sequence[int | None] | None,
    now: float,
) -> tuple[list[bytes], list[int], list[int | None]]:
    """The checked, encoded arguments of `incr_many`: keys, one delta and one expiration per key."""
    raw = [encode_key(k) for k in keys]
    if len(set(raw)) != len(raw):
        raise InvalidKeyError("incr_many needs distinct keys")
    deltas = _per_key(delta, len(raw), "delta")
    for d in deltas:
        if isinstance(d, bool) or not isinstance(d, int):
            raise TypeError(f"delta must be an int, got {type(d).__name__}")
    ttls = _per_key(expiration_ttl, len(raw), "expiration_ttl")
    return raw, deltas, [resolve_expiration(now, ttl, None) for ttl in ttls]


@dataclass(frozen=True, slots=True)
class KeyInfo:
    """One key of a ``list`` page: its name, absolute expiration (epoch seconds) and metadata."""

    name: str
    expiration: int | None
    metadata: dict[str, Any] | None


@dataclass(frozen=True, slots=True)
class ListResult:
    """One page of ``list``; pass ``cursor`` back to get the next page until ``list_complete``."""

    keys: list[KeyInfo]
    list_complete: bool
    cursor: str | None


def _decode_metadata(raw: bytes | None) -> Metadata | None:
    if raw is None:
        return None
    # Only dicts pass validation on the way in, so the stored JSON is always an object.
    return cast(Metadata, msgspec.json.decode(raw))


class KVNamespace(abc.ABC):
    """A Workers-KV-style namespace.

    Public methods validate their arguments here, once, then delegate to the protected
    abstract methods a backend implements with already-encoded, already-checked data.
    Every expiry decision uses ``clock`` so tests can move time without sleeping.
    """

    loses_replies: ClassVar[bool] = False
    """Whether a call can fail with `KVIndeterminateError` (sent, its reply lost): a network store's can, a
    local database's cannot. A caller pays for `incr_many_once` over `incr_many` only where it can."""

    def __init__(self, *, clock: Clock = time.time) -> None:
        """Create a namespace whose expiry decisions use ``clock`` (epoch seconds)."""
        self._clock = clock
        self._closed = False

    async def __aenter__(self) -> Self:
        """Use the namespace as an async context manager that closes it on exit."""
        return self

    async def __aexit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        """Close the namespace."""
        await self.close()

    # -- public API -------------------------------------------------------------------------

    async def get(self, key: str) -> bytes | None:
        """Return the value stored under ``key``, or None if it is missing or expired."""
        stored = await self._get_live(key)
        return None if stored is None else stored.value

    async def get_with_metadata(self, key: str) -> tuple[bytes | None, Metadata | None]:
        """Return ``(value, metadata)`` for ``key``; ``(None, None)`` if missing or expired."""
        stored = await self._get_live(key)
        if stored is None:
            return None, None
        return stored.value, _decode_metadata(stored.metadata)

    async def get_text(self, key: str) -> str | None:
        """Return the value decoded as UTF-8 (raises UnicodeDecodeError if it is not)."""
        value = await self.get(key)
        return None if value is None else value.decode("utf-8")

    async def get_json(self, key: str) -> Any:
        """Return the value parsed as JSON, or None if missing (raises msgspec.DecodeError if invalid)."""
        value = await self.get(key)
        return None if value is None else msgspec.json.decode(value)

    async def put(
        self,
        key: str,
        value: bytes | str,
        *,
        expiration_ttl: int | None = None,
        expiration: int | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Store ``value`` under ``key``, replacing any previous value and metadata.

        ``expiration_ttl`` (seconds, >= 60) or ``expiration`` (epoch seconds, >= 60 s ahead)
        makes the key disappear at that time; at most one of them may be given.
        """
        now = self._clock()
        write = self._prepare_write(key, value, expiration_ttl, expiration, metadata, now)
        await self._put(write, now)

    async def put_json(
        self,
        key: str,
        obj: Any,
        *,
        expiration_ttl: int | None = None,
        expiration: int | None = None,
        metadata: Metadata | None = None,
    ) -> None:
        """Store ``obj`` serialized as JSON (raises TypeError if it is not serializable)."""
        await self.put(
            key,
            msgspec.json.encode(obj),
            expiration_ttl=expiration_ttl,
            expiration=expiration,
            metadata=metadata,
        )

    async def put_many(
        self,
        entries: Sequence[tuple[str, bytes | str, Metadata | EncodedMetadata | None]],
        *,
        expiration_ttl: int | None = None,
    ) -> None:
        """Store several `(key, value, metadata)` entries with one TTL, in as few backend round trips as
        the backend allows (one statement per few hundred keys on SQLite, one script call per 256 keys on
        Redis).

        The metadata of an entry may also be given already encoded, by `struct_metadata` (what a writer of
        many entries of one shape encodes faster from a `msgspec.Struct` than from a dict); it reads back as
        that object.

        Every entry is validated before anything is written. A batch is not a transaction: after a backend
        failure some entries may be stored and others not.
        """
        now = self._clock()
        expiration = resolve_expiration(now, expiration_ttl, None)  # one TTL check for the whole batch
        writes = [
            Write(
                encode_key(k),
                encode_value(v),
                expiration,
                encoded_metadata(m) if type(m) is EncodedMetadata else encode_metadata(m),
            )
            for k, v, m in entries
        ]
        self._check_open()
        if writes:
            await self._put_many(writes, now)

    async def put_if_absent(
        self,
        key: str,
        value: bytes | str,
        *,
        expiration_ttl: int,
        metadata: Metadata | None = None,
    ) -> bool:
        """Atomically store ``value`` unless a live value exists; return whether it was stored.

        An expired entry counts as absent. The TTL is mandatory so a crashed owner cannot
        hold the key forever.
        """
        if expiration_ttl is None:
            raise InvalidExpirationError("put_if_absent requires an expiration_ttl")
        now = self._clock()
        write = self._prepare_write(key, value, expiration_ttl, None, metadata, now)
        return await self._put_if_absent(write, now)

    async def incr(self, key: str, delta: int = 1, *, expiration_ttl: int | None = None) -> int:
        """Atomically add `delta` to the integer stored at `key` and return the new value.

        A missing or expired key counts from 0 and is created with `expiration_ttl` (>= 60 s, or none); later
        increments keep the expiration it was created with, so a counter covers a fixed window. The value is
        the decimal number as text, so `get` reads it too. Atomic across processes on SQLite and instances on
        Redis. A value that is not an integer raises KVError.
        """
        return (await self.incr_many([key], delta, expiration_ttl=expiration_ttl))[0]

    async def incr_many(
        self,
        keys: Sequence[str],
        delta: int | Sequence[int] = 1,
        *,
        expiration_ttl: int | Sequence[int | None] | None = None,
    ) -> Sequence[int]:
        """`incr` for several distinct keys in one round trip where the backend allows it (one statement on
        SQLite, one script call on Redis); each key is atomic on its own. `delta` and `expiration_ttl` are one
        value for every key, or one per key."""
        now = self._clock()
        raw, deltas, expirations = _counters(keys, delta, expiration_ttl, now)
        self._check_open()
        if not raw:
            return []
        return await self._incr_many(raw, deltas, expirations, now)

    async def incr_many_once(
        self,
        token: str,
        keys: Sequence[str],
        delta: int | Sequence[int] = 1,
        *,
        expiration_ttl: int | Sequence[int | None] | None = None,
        token_ttl: int,
    ) -> Sequence[int] | None:
        """`incr_many` applied at most once per `token`, so that a call whose outcome is unknown can be sent
        again: the increments and a record of the token are written in one atomic step, and while that record
        lives (`token_ttl` seconds, >= 60) a call with the same token changes nothing and returns None.

        A call that failed with `KVIndeterminateError` (Redis took it and its reply never came) may or may not
        have been applied; sent again with the same token and the same increments within `token_ttl`, it is
        applied if the first was lost and not again if it was not. Tokens are shared by every process and
        instance on the backend, so make them unique (a random id per batch). A token is not an entry:
        `get` and `list` never see it. At most `ONCE_MAX_KEYS` keys, all written in one step; no keys: no-op,
        nothing recorded."""
        now = self._clock()
        raw_token = encode_key(token)
        if token_ttl is None:
            raise InvalidExpirationError("incr_many_once requires a token_ttl")
        token_expiration = resolve_expiration(now, token_ttl, None)
        raw, deltas, expirations = _counters(keys, delta, expiration_ttl, now)
        if len(raw) > ONCE_MAX_KEYS:
            raise ValueError(f"incr_many_once takes at most {ONCE_MAX_KEYS} keys, got {len(raw)}")
        self._check_open()
        if not raw:
            return []
        assert token_expiration is not None  # a TTL was given
        return await self._incr_many_once(raw_token, token_expiration, raw, deltas, expirations, now)

    async def delete(self, key: str) -> None:
        """Remove ``key``; deleting a missing key is not an error."""
        raw_key = encode_key(key)
        self._check_open()
        await self._delete(raw_key)

    async def list(self, *, prefix: str = "", limit: int = 1000, cursor: str | None = None) -> ListResult:
        """Return up to ``limit`` live keys starting with ``prefix``, in UTF-8 byte order.

        ``prefix`` is matched literally. ``cursor`` resumes strictly after the last key of
        the page that returned it; None or "" starts from the beginning.
        """
        checked_limit = check_limit(limit)
        raw_prefix = encode_prefix(prefix)
        after = decode_cursor(cursor, MAX_KEY_BYTES)
        self._check_open()
        # One extra key tells whether another page exists without a second round trip.
        found = await self._scan(raw_prefix, after, checked_limit + 1, self._clock())
        page = found[:checked_limit]
        complete = len(found) <= checked_limit
        return ListResult(
            keys=[
                KeyInfo(
                    name=item.key.decode("utf-8"),
                    expiration=item.expiration,
                    metadata=_decode_metadata(item.metadata),
                )
                for item in page
            ],
            list_complete=complete,
            cursor=None if complete else encode_cursor(page[-1].key),
        )

    async def names(self, prefix: str) -> builtins.list[str]:
        """The names of every live key starting with ``prefix``, all pages of ``list`` read."""
        out: builtins.list[str] = []
        cursor: str | None = None
        while True:
            page = await self.list(prefix=prefix, cursor=cursor)
            out += (info.name for info in page.keys)
            if page.list_complete or page.cursor is None:
                return out
            cursor = page.cursor

    async def sweep(self, *, rest_seconds: float) -> bool:
        """Reclaim the space of expired entries, one bounded slice per call; returns whether the current pass
        over the store has more to look at (call again soon) or is over (call again in a while).

        Expired entries are invisible at once but keep their space until something removes them: a `get` or
        `list` that meets them, or this. Keys nothing reads again (per-minute counters, sessions, nonces)
        are only ever removed here, so a long-running process calls it now and then (the worker does, in the
        background). Each call does a bounded amount of work, so it never holds the store long: on SQLite it
        deletes a few hundred expired rows; on Redis, whose own expiry removes the value hashes but not their
        members of the index `list` reads, it looks at a few hundred index members from where the last call
        (of any instance) left off and drops those whose entry is gone. `rest_seconds` (> 0): after a pass
        ends, calls by any instance on the same Redis return False at once for that long, so several
        instances do one pass between them, not one each. Safe alongside every other operation and other
        callers."""
        if not rest_seconds > 0:
            raise ValueError(f"rest_seconds must be positive, got {rest_seconds!r}")
        self._check_open()
        return await self._sweep(self._clock(), rest_seconds)

    def independent(self) -> KVNamespace:
        """The same data through a connection of its own, for a background writer whose batches must not
        queue everyone else's operations behind them. Backends whose operations never queue behind each
        other (memory, Redis's connection pool) return themselves; the caller closes what it gets only if it
        is not this namespace."""
        return self

    async def close(self) -> None:
        """Release the backend's resources; further calls raise KVClosedError. Idempotent."""
        if self._closed:
            return
        self._closed = True
        await self._close()

    # -- helpers ----------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self._closed:
            raise KVClosedError(f"{type(self).__name__} is closed")

    async def _get_live(self, key: str) -> StoredValue | None:
        raw_key = encode_key(key)
        self._check_open()
        return await self._get(raw_key, self._clock())

    def _prepare_write(
        self,
        key: str,
        value: bytes | str,
        expiration_ttl: int | None,
        expiration: int | None,
        metadata: Metadata | None,
        now: float,
    ) -> Write:
        write = Write(
            key=encode_key(key),
            value=encode_value(value),
            expiration=resolve_expiration(now, expiration_ttl, expiration),
            metadata=encode_metadata(metadata),
        )
        self._check_open()
        return write

    # -- backend contract -------------------------------------------------------------------

    @abc.abstractmethod
    async def _get(self, key: bytes, now: float) -> StoredValue | None:
        """Return the entry for ``key`` if it exists and its expiration is after ``now``."""

    @abc.abstractmethod
    async def _put(self, write: Write, now: float) -> None:
        """Atomically replace the entry for ``write.key`` (value, metadata and expiration)."""

    @abc.abstractmethod
    async def _incr_many(
        self, keys: Sequence[bytes], deltas: Sequence[int], expirations: Sequence[int | None], now: float
    ) -> Sequence[int]:
        """Add each delta atomically to its distinct key (see `incr`), returning the new values in order."""

    @abc.abstractmethod
    async def _incr_many_once(
        self,
        token: bytes,
        token_expiration: int,
        keys: Sequence[bytes],
        deltas: Sequence[int],
        expirations: Sequence[int | None],
        now: float,
    ) -> Sequence[int] | None:
        """Unless `token` is recorded and its record lives past `now`: record it until `token_expiration`
        and apply `_incr_many`, both in one atomic step, returning the new values; else change nothing and
        return None. Token records live apart from the entries."""

    async def _put_many(self, writes: Sequence[Write], now: float) -> None:
        """Backends with a batch path override this; the default writes one by one."""
        for write in writes:
            await self._put(write, now)

    @abc.abstractmethod
    async def _put_if_absent(self, write: Write, now: float) -> bool:
        """Atomically store ``write`` unless a live entry exists at ``now``; return whether stored."""

    @abc.abstractmethod
    async def _delete(self, key: bytes) -> None:
        """Remove ``key`` if present."""

    @abc.abstractmethod
    async def _scan(self, prefix: bytes, after: bytes | None, count: int, now: float) -> Sequence[StoredKey]:
        """Return up to ``count`` live keys starting with ``prefix`` and above ``after``, ascending."""

    @abc.abstractmethod
    async def _sweep(self, now: float, rest_seconds: float) -> bool:
        """Remove a bounded slice of what expired by `now`; True while the current pass has more to see."""

    @abc.abstractmethod
    async def _close(self) -> None:
        """Release connections, threads and other resources."""
