"""Workers-KV-compatible key-value storage with memory, SQLite and Redis backends."""

from __future__ import annotations

import time
from typing import TYPE_CHECKING, Any

from kv._validation import MAX_EXPIRATION, MAX_VALUE_BYTES, EncodedMetadata, struct_metadata
from kv.base import ONCE_MAX_KEYS, KeyInfo, KVNamespace, ListResult
from kv.clock import Clock, ManualClock
from kv.errors import (
    InvalidExpirationError,
    InvalidKeyError,
    InvalidListArgumentError,
    InvalidMetadataError,
    KVClosedError,
    KVError,
    KVIndeterminateError,
    KVUnavailableError,
    ValueTooLargeError,
)
from kv.memory import MemoryKV
from kv.sqlite import SqliteKV

if TYPE_CHECKING:
    from kv.redis import RedisKV

__all__ = [
    "MAX_EXPIRATION",
    "MAX_VALUE_BYTES",
    "ONCE_MAX_KEYS",
    "Clock",
    "EncodedMetadata",
    "InvalidExpirationError",
    "InvalidKeyError",
    "InvalidListArgumentError",
    "InvalidMetadataError",
    "KVClosedError",
    "KVError",
    "KVIndeterminateError",
    "KVNamespace",
    "KVUnavailableError",
    "KeyInfo",
    "ListResult",
    "ManualClock",
    "MemoryKV",
    "RedisKV",
    "SqliteKV",
    "ValueTooLargeError",
    "open_kv",
    "struct_metadata",
]


def __getattr__(name: str) -> Any:
    # redis-py costs ~7 MB of resident memory on import: only a worker configured for Redis pays for it.
    if name == "RedisKV":
        from kv.redis import RedisKV

        return RedisKV
    raise AttributeError(f"module 'kv' has no attribute {name!r}")


async def open_kv(url: str, *, clock: Clock = time.time, namespace: str = "trex") -> KVNamespace:
    """Open the namespace a URL describes.

    ``memory://``; ``sqlite:///relative/path.db`` or ``sqlite:////absolute/path.db``
    (the path is everything after ``sqlite:///``); ``redis://host:port/db`` or
    ``rediss://...``, where ``namespace`` prefixes every Redis key. SQLite files are
    opened (and their schema created) before returning; Redis connects on first use.
    """
    scheme, sep, rest = url.partition("://")
    if not sep:
        raise KVError(f"KV URL {url!r} has no scheme; expected memory://, sqlite:/// or redis://")
    scheme = scheme.lower()
    if scheme == "memory":
        return MemoryKV(clock=clock)
    if scheme == "sqlite":
        # Everything after "sqlite:///" is the path, so a fourth slash makes it absolute.
        if not rest.startswith("/") or rest == "/":
            raise KVError(f"SQLite KV URL must look like sqlite:///path/to/file.db, got {url!r}")
        sqlite_kv = SqliteKV(rest[1:], clock=clock)
        await sqlite_kv.connect()
        return sqlite_kv
    if scheme in ("redis", "rediss"):
        from kv.redis import RedisKV

        return RedisKV(url, clock=clock, namespace=namespace)
    raise KVError(f"unsupported KV URL scheme {scheme!r}; expected memory, sqlite, redis or rediss")
