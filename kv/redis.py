"""Redis KV backend: one hash per key plus a lexicographic sorted-set index for listing."""

from __future__ import annotations

import contextlib
import math
import time
from collections.abc import Iterator, Sequence
from typing import Any
from urllib.parse import urlsplit

import redis.asyncio as aioredis
import redis.exceptions

from kv import _redis_scripts
from kv._keyrange import lower_bound, prefix_successor
from kv._records import StoredKey, StoredValue, Write
from kv.base import KVNamespace
from kv.clock import Clock
from kv.errors import KVError, KVIndeterminateError, KVUnavailableError

_VALUE = b"v"
_EXPIRATION = b"e"
_METADATA = b"m"
_MIN_SCAN_BATCH = 32
_PUT_MANY_SLICE = 256
_SWEEP_SLICE = 256
"""Index members one sweep call looks at: a script of well under a millisecond, so nobody waits behind it."""
MAX_CONNECTIONS = 128
"""Connections per instance to Redis (the pool's default size; `?max_connections=N` in the URL changes it)."""


# redis-py's messages for failures before a command went out: connecting, or waiting for a pooled connection.
_BEFORE_SENDING = ("connecting to", "connection available", "from pool")
# Error replies of a Redis that cannot serve commands right now (out of memory, a read-only replica after a
# failover, a failed snapshot that stops writes, a script that runs too long …): an outage, not a fault of the
# command, and over once Redis is fixed.
_REFUSALS = frozenset(
    {"OOM", "READONLY", "MISCONF", "BUSY", "MASTERDOWN", "NOREPLICAS", "TRYAGAIN", "CLUSTERDOWN"}
)


def _never_sent(exc: Exception) -> bool:
    """Whether the failed call never reached Redis (then it was not applied and a retry is safe)."""
    if isinstance(exc, ConnectionRefusedError | redis.exceptions.ConnectionError) and isinstance(
        exc.__cause__ or exc.__context__, ConnectionRefusedError
    ):
        return True
    text = str(exc).lower()
    return any(marker in text for marker in _BEFORE_SENDING)


def _refusal(exc: redis.exceptions.ResponseError) -> bool:
    """Whether Redis refused the command because it cannot serve now (see `_REFUSALS`)."""
    code = getattr(exc, "status_code", None) or str(exc).split(" ", 1)[0]
    return code in _REFUSALS


def _describe(url: str) -> str:
    # Never echo the URL itself: it may carry a password.
    try:
        parts = urlsplit(url)
    except ValueError:  # e.g. an unclosed `[` in the host
        return "an unparsable Redis URL"
    try:
        port = parts.port or 6379
    except ValueError:
        return f"{parts.scheme}://{parts.hostname} (invalid port)"
    return f"{parts.scheme}://{parts.hostname}:{port}{parts.path}"


def _raw(reply: bytes | str | None) -> bytes | None:
    # The client keeps decode_responses off, so str only appears in the type stubs.
    return reply.encode() if isinstance(reply, str) else reply


def _live(expiration: bytes | None, now: float) -> bool:
    return expiration is None or int(expiration) > now


class RedisKV(KVNamespace):
    """A KV namespace in Redis, isolated from others by ``namespace``.

    Each key is a hash ``{namespace}:kv:v:<key>`` holding value, metadata and expiration;
    the sorted set ``{namespace}:kv:index`` (all scores 0) lists keys in byte order.
    Visibility is decided by ``clock``; native Redis expiry only reclaims memory, and ``sweep`` drops the
    index members it leaves behind (``{namespace}:kv:sweep`` holds where the sweep is).
    """

    loses_replies = True

    def __init__(
        self,
        url: str,
        *,
        clock: Clock = time.time,
        namespace: str = "trex",
        socket_timeout: float = 5.0,
        connect_timeout: float = 2.0,
    ) -> None:
        """Prepare a client for ``url`` (redis:// or rediss://); nothing connects until first use."""
        super().__init__(clock=clock)
        if not namespace:
            raise KVError("Redis namespace must be a non-empty string")
        self._where = _describe(url)
        self._prefix = f"{namespace}:kv:".encode()
        self._index = self._prefix + b"index"
        try:
            # A blocking pool: past `max_connections` concurrent calls wait (up to the socket timeout) for a
            # free connection, where the default pool fails them ("Too many connections") under a burst.
            # `?max_connections=N` in the URL overrides the size. from_pool hands the pool to the client,
            # whose aclose() shuts it down.
            pool = aioredis.BlockingConnectionPool.from_url(
                url,
                max_connections=MAX_CONNECTIONS,
                timeout=socket_timeout,
                socket_timeout=socket_timeout,
                socket_connect_timeout=connect_timeout,
                health_check_interval=30,
            )
            self._client = aioredis.Redis.from_pool(pool)
        except ValueError as exc:
            raise KVError(f"invalid Redis URL {self._where}: {exc}") from exc
        self._put_script = self._client.register_script(_redis_scripts.PUT)
        self._cleanup_script = self._client.register_script(_redis_scripts.CLEANUP)
        self._incr_script = self._client.register_script(_redis_scripts.INCR_MANY)
        self._incr_once_script = self._client.register_script(_redis_scripts.INCR_MANY_ONCE)
        self._put_many_script = self._client.register_script(_redis_scripts.PUT_MANY)
        self._sweep_script = self._client.register_script(_redis_scripts.SWEEP)

    def _hash(self, key: bytes) -> bytes:
        return self._prefix + b"v:" + key

    @contextlib.contextmanager
    def _translate_errors(self) -> Iterator[None]:
        try:
            yield
        except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
            message = f"Redis at {self._where} is unavailable: {exc}"
            if _never_sent(exc):
                raise KVUnavailableError(message) from exc
            raise KVIndeterminateError(message + " (the command may have been applied)") from exc
        except redis.exceptions.ResponseError as exc:
            if _refusal(exc):
                # Unavailable as for a broken connection. A script refused midway (out of memory at its first
                # write) may have applied what came before: the outcome is unknown.
                raise KVIndeterminateError(f"Redis at {self._where} refused the command: {exc}") from exc
            raise KVError(f"Redis at {self._where} failed: {exc}") from exc
        except redis.exceptions.RedisError as exc:
            raise KVError(f"Redis at {self._where} failed: {exc}") from exc

    def _put_call(self, write: Write, now: float, only_if_absent: bool) -> tuple[list[bytes], list[Any]]:
        """The PUT script's keys and arguments for one write."""
        native_ttl_ms = ""
        if write.expiration is not None:
            # Relative TTL rather than EXPIREAT: the injected clock may be offset from Redis's
            # own clock, and GC must never reclaim a key before the clock says it expired.
            native_ttl_ms = str(math.ceil((write.expiration - now) * 1000))
        return [self._hash(write.key), self._index], [
            write.key,
            write.value,
            "" if write.expiration is None else str(write.expiration),
            write.metadata or b"",
            native_ttl_ms,
            "1" if only_if_absent else "0",
            repr(now),
        ]

    async def _write(self, write: Write, now: float, *, only_if_absent: bool) -> bool:
        with self._translate_errors():
            keys, args = self._put_call(write, now, only_if_absent)
            written = await self._put_script(keys=keys, args=args)
        return bool(written)

    async def _put_many(self, writes: Sequence[Write], now: float) -> None:
        # One script call per slice: one command to build and send for a few hundred keys, where a script
        # call per key costs the client far more than Redis spends on the writes. Slices keep each atomic
        # script short, so other clients never wait long behind a large batch.
        with self._translate_errors():
            for start in range(0, len(writes), _PUT_MANY_SLICE):
                keys: list[bytes] = [self._index]
                args: list[bytes | str] = []
                for write in writes[start : start + _PUT_MANY_SLICE]:
                    keys.append(self._hash(write.key))
                    if write.expiration is None:
                        args += (write.key, write.value, "", write.metadata or b"", "")
                    else:
                        ttl_ms = str(math.ceil((write.expiration - now) * 1000))
                        args += (write.key, write.value, str(write.expiration), write.metadata or b"", ttl_ms)
                await self._put_many_script(keys=keys, args=args)

    @staticmethod
    def _incr_args(
        keys: Sequence[bytes], deltas: Sequence[int], expirations: Sequence[int | None], now: float
    ) -> list[bytes | str]:
        """INCR_MANY's four arguments per key."""
        args: list[bytes | str] = []
        for key, delta, expiration in zip(keys, deltas, expirations, strict=True):
            ttl_ms = "" if expiration is None else str(math.ceil((expiration - now) * 1000))
            args += (key, str(delta), "" if expiration is None else str(expiration), ttl_ms)
        return args

    @staticmethod
    def _counted(keys: Sequence[bytes], values: Sequence[Any]) -> list[int]:
        out = []
        for key, value in zip(keys, values, strict=True):
            if isinstance(value, bytes):
                raise KVError(f"the value at {key.decode()!r} is not an integer")
            out.append(int(value))
        return out

    async def _incr_many(
        self, keys: Sequence[bytes], deltas: Sequence[int], expirations: Sequence[int | None], now: float
    ) -> list[int]:
        # One script call for every key: one command to build and parse however many keys there are.
        args = [repr(now), *self._incr_args(keys, deltas, expirations, now)]
        with self._translate_errors():
            values = await self._incr_script(keys=[self._index, *map(self._hash, keys)], args=args)
        return self._counted(keys, values)

    async def _incr_many_once(
        self,
        token: bytes,
        token_expiration: int,
        keys: Sequence[bytes],
        deltas: Sequence[int],
        expirations: Sequence[int | None],
        now: float,
    ) -> list[int] | None:
        # The token's record is a plain key outside the index: nothing lists it, and Redis's own expiry
        # removes it for good (an indexed entry that is never listed would leave its index member behind).
        args = [
            repr(now),
            str(token_expiration),
            str(math.ceil((token_expiration - now) * 1000)),
            *self._incr_args(keys, deltas, expirations, now),
        ]
        with self._translate_errors():
            values = await self._incr_once_script(
                keys=[self._index, self._prefix + b"once:" + token, *map(self._hash, keys)], args=args
            )
        return None if values is None else self._counted(keys, values)

    async def _cleanup(self, keys: Sequence[bytes], now: float) -> None:
        if keys:
            with self._translate_errors():
                await self._cleanup_script(
                    keys=[self._index, *(self._hash(key) for key in keys)],
                    args=[repr(now), *keys],
                )

    async def _get(self, key: bytes, now: float) -> StoredValue | None:
        with self._translate_errors():
            replies = await self._client.hmget(self._hash(key), [_VALUE, _METADATA, _EXPIRATION])
        value, metadata, expiration = (_raw(reply) for reply in replies)
        if value is None:
            return None
        if not _live(expiration, now):
            await self._cleanup([key], now)
            return None
        return StoredValue(value=value, metadata=metadata)

    async def _put(self, write: Write, now: float) -> None:
        await self._write(write, now, only_if_absent=False)

    async def _put_if_absent(self, write: Write, now: float) -> bool:
        return await self._write(write, now, only_if_absent=True)

    async def _delete(self, key: bytes) -> None:
        with self._translate_errors():
            async with self._client.pipeline(transaction=True) as pipe:
                pipe.delete(self._hash(key))
                pipe.zrem(self._index, key)
                await pipe.execute()

    async def _scan(self, prefix: bytes, after: bytes | None, count: int, now: float) -> Sequence[StoredKey]:
        bound, inclusive = lower_bound(prefix, after)
        low = (b"[" if inclusive else b"(") + bound
        upper = prefix_successor(prefix)
        high = b"+" if upper is None else b"(" + upper
        batch = max(count, _MIN_SCAN_BATCH)
        found: list[StoredKey] = []
        stale: list[bytes] = []
        while len(found) < count:
            with self._translate_errors():
                members = [
                    member
                    for reply in await self._client.zrangebylex(self._index, low, high, start=0, num=batch)
                    if (member := _raw(reply)) is not None
                ]
                if not members:
                    break
                async with self._client.pipeline(transaction=False) as pipe:
                    for member in members:
                        pipe.exists(self._hash(member))
                        pipe.hmget(self._hash(member), [_EXPIRATION, _METADATA])
                    replies = await pipe.execute()
            for member, exists, fields in zip(members, replies[0::2], replies[1::2], strict=True):
                if len(found) >= count:
                    break
                expiration, metadata = (_raw(field) for field in fields)
                # A missing hash means Redis's own expiry reclaimed it; drop it from the index too.
                if not exists or not _live(expiration, now):
                    stale.append(member)
                    continue
                found.append(
                    StoredKey(
                        key=member,
                        expiration=None if expiration is None else int(expiration),
                        metadata=metadata,
                    )
                )
            if len(members) < batch:
                break
            low = b"(" + members[-1]
        await self._cleanup(stale, now)
        return found

    async def _sweep(self, now: float, rest_seconds: float) -> bool:
        with self._translate_errors():
            more = await self._sweep_script(
                keys=[self._index, self._prefix + b"sweep"],
                args=[self._prefix + b"v:", repr(now), _SWEEP_SLICE, max(1, math.ceil(rest_seconds * 1000))],
            )
        return bool(more)

    async def _close(self) -> None:
        with self._translate_errors():
            await self._client.aclose()
