"""SQLite KV backend (aiosqlite), safe for several processes sharing one database file.

A connection keeps the file it opened, not its path: were the file deleted (or replaced) under a running
worker, every write would go on into the unlinked file and be gone at the next start. So the path is checked
against the open file at most once a second, and once it no longer names that file the store refuses every
operation (`KVUnavailableError`, which requests and `GET /health` answer as a 503) until the worker is
restarted onto the file now at the path: usage records and keys are refused loudly rather than lost silently.
"""

from __future__ import annotations

import asyncio
import functools
import logging
import os
import sqlite3
import time
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import aiosqlite

from kv._keyrange import lower_bound, prefix_successor
from kv._records import StoredKey, StoredValue, Write
from kv.base import KVNamespace
from kv.clock import Clock
from kv.errors import KVError, KVUnavailableError

_SCHEMA = (
    # BLOB keys compare with memcmp, so the primary-key index is already in UTF-8 byte order.
    """CREATE TABLE IF NOT EXISTS kv (
        key BLOB PRIMARY KEY NOT NULL,
        value BLOB NOT NULL,
        expiration INTEGER,
        metadata TEXT
    )""",
    "CREATE INDEX IF NOT EXISTS kv_expiration ON kv (expiration) WHERE expiration IS NOT NULL",
)

_SELECT_LIVE = "SELECT value, metadata FROM kv WHERE key = ? AND (expiration IS NULL OR expiration > ?)"
_UPSERT = (
    "INSERT INTO kv (key, value, expiration, metadata) VALUES (?, ?, ?, ?) "
    "ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
    "expiration = excluded.expiration, metadata = excluded.metadata"
)
# The conflict branch only fires over an expired row, and RETURNING yields a row only when
# something was written, so one statement both decides and reports the outcome atomically.
_INSERT_IF_ABSENT = _UPSERT + " WHERE kv.expiration IS NOT NULL AND kv.expiration <= ? RETURNING 1"
_UPSERT_MANY_HEAD = "INSERT INTO kv (key, value, expiration, metadata) VALUES "
_UPSERT_MANY_TAIL = (
    " ON CONFLICT (key) DO UPDATE SET value = excluded.value, "
    "expiration = excluded.expiration, metadata = excluded.metadata"
)
# The multi-row statements (`put_many`, `incr_many`) have one shape per row count, and the sqlite3 module
# keeps every shape it prepares, 128 by default, at about 0.6 KB per row: a busy worker's usage writes
# (batches of up to 256 events, of varying size) held MBs of them, growing with every new size. A connection
# runs far fewer fixed statements than this (6 on the request path under the proxy benchmark), so those stay
# prepared while batch shapes come and go.
_CACHED_STATEMENTS = 16
_ROWS_PER_STATEMENT = 500  # at most 4 parameters a row, well under SQLite's 32,766-parameter limit
# One statement, so atomic across connections: a live integer is increased by the row's delta (carried in
# `excluded.value`); a missing or expired row starts from the delta with the row's expiration; a live value
# that is not an integer is left as it is (and the caller, seeing it come back, raises). The value stays a
# BLOB of the decimal digits.
_LIVE = "(kv.expiration IS NULL OR kv.expiration > ?)"
_AS_INT = "CAST(CAST({} AS TEXT) AS INTEGER)"
_INT_TEXT = f"CAST({_AS_INT.format('kv.value')} AS TEXT) = CAST(kv.value AS TEXT)"
_INCR_ROW = "(?, CAST(? AS BLOB), ?, NULL)"
_INCR_TAIL = (
    " ON CONFLICT (key) DO UPDATE SET "
    f"value = CASE WHEN NOT {_LIVE} THEN excluded.value WHEN {_INT_TEXT} "
    f"THEN CAST({_AS_INT.format('kv.value')} + {_AS_INT.format('excluded.value')} AS BLOB) "
    "ELSE kv.value END, "
    f"metadata = CASE WHEN NOT {_LIVE} THEN NULL ELSE kv.metadata END, "
    f"expiration = CASE WHEN NOT {_LIVE} THEN excluded.expiration ELSE kv.expiration END "
    "RETURNING CAST(value AS TEXT), key"
)


@functools.cache
def _incr_sql(rows: int) -> str:
    return _UPSERT_MANY_HEAD + ", ".join([_INCR_ROW] * rows) + _INCR_TAIL


# `incr_many_once` tokens are rows of the same table, so that recording one and counting go in one statement:
# the token's row is one more row of the increment, and none of the rows is written while the token has a
# live row. Their keys start with 0xFF, a byte no UTF-8 key contains, so no entry is ever one of them and
# scans stop below them.
_TOKEN_PREFIX = b"\xffonce/"
_ENTRIES_END = b"\xff"


@functools.cache
def _incr_once_sql(rows: int) -> str:
    return (
        "INSERT INTO kv (key, value, expiration, metadata) "
        + "SELECT column1, CAST(column2 AS BLOB), column3, NULL FROM (VALUES "
        + ", ".join(["(?, ?, ?)"] * rows)
        + ") WHERE NOT EXISTS (SELECT 1 FROM kv WHERE key = ? AND expiration > ?)"
        + _INCR_TAIL
    )


_DELETE = "DELETE FROM kv WHERE key = ?"
# One bounded slice of expired rows (the partial index on expiration finds them), so that a sweep never holds
# the database's one write lock for long, however much expired at once.
_SWEEP_EXPIRED = (
    "DELETE FROM kv WHERE rowid IN "
    "(SELECT rowid FROM kv WHERE expiration IS NOT NULL AND expiration <= ? LIMIT ?) RETURNING 1"
)
_SWEEP_ROWS = 500

# busy_timeout already waits for other writers; these retries only cover the cases where
# SQLite reports a lock without invoking the busy handler (e.g. during WAL recovery).
_LOCK_RETRIES = 8
_LOCK_BACKOFF_S = 0.02


_BLOB_COPY_MAX = 4096

_FILE_CHECK_SECONDS = 1.0
"""How often the path is checked against the open file: a stat per second, not per statement (the writes of
the second before a deletion is noticed are lost with it)."""

log = logging.getLogger("trex.kv")


def _is_lock_error(exc: sqlite3.DatabaseError) -> bool:
    return exc.sqlite_errorcode & 0xFF in (sqlite3.SQLITE_BUSY, sqlite3.SQLITE_LOCKED)


def _is_decimal(text: str) -> bool:
    return text.lstrip("-").isdigit()


def _blob(data: bytes) -> bytes | bytearray:
    """`data` as a statement parameter. The sqlite3 module binds int, float, str and bytearray as they are,
    but looks every other type up in its adapter registry first (bytes included): a tuple built, a dict miss
    and two attribute probes per parameter, as much as binding the rest of the row. A bytearray is bound as
    the same BLOB; a large value, for which that lookup is nothing next to its bytes, is not copied."""
    return bytearray(data) if len(data) <= _BLOB_COPY_MAX else data


def _metadata_text(raw: bytes | None) -> str | None:
    return None if raw is None else raw.decode("utf-8")


def _metadata_bytes(text: str | None) -> bytes | None:
    return None if text is None else text.encode("utf-8")


class _FileWatch:
    """Whether the database file is still the one at the path; shared by a namespace and its `independent`
    copies, so that one deletion is noticed (and logged) once."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.identity: tuple[int, int] | None = None
        """(st_dev, st_ino) of the file the first connection opened."""
        self.next_check = 0.0
        self.lost: str | None = None

    def opened(self) -> None:
        """Record the file a connection has just opened (the first one's is the one every copy must see)."""
        if self.identity is None:
            self.identity = self._stat()
        self.next_check = time.monotonic() + _FILE_CHECK_SECONDS

    def check(self) -> None:
        """Raise `KVUnavailableError` when the path no longer names the open file (checked once a second)."""
        if self.lost is None and self.identity is not None and time.monotonic() >= self.next_check:
            self.next_check = time.monotonic() + _FILE_CHECK_SECONDS
            now = self._stat()
            if now != self.identity:
                self.lost = "deleted" if now is None else "replaced by another file"
                log.error(
                    "SQLite KV file %r was %s while the worker had it open: refusing every KV operation (503 "
                    "kv_unavailable) rather than writing into a file that is gone; restart the worker",
                    self.path,
                    self.lost,
                )
        if self.lost is not None:
            raise KVUnavailableError(
                f"SQLite database {self.path!r} was {self.lost} while open; restart the worker"
            )

    def _stat(self) -> tuple[int, int] | None:
        try:
            st = os.stat(self.path)
        except FileNotFoundError:
            return None
        return st.st_dev, st.st_ino


class SqliteKV(KVNamespace):
    """A KV namespace stored in one SQLite table, in WAL mode.

    Every statement runs in autocommit mode, so each operation is a single atomic
    statement; concurrent writers in other processes wait on ``busy_timeout_ms``.
    The connection opens on first use, or explicitly with ``connect()``.
    """

    def __init__(
        self,
        path: str | os.PathLike[str],
        *,
        clock: Clock = time.time,
        busy_timeout_ms: int = 5000,
    ) -> None:
        """Prepare a namespace backed by the SQLite file at ``path`` (":memory:" also works)."""
        super().__init__(clock=clock)
        self._path = os.fspath(path)
        self._busy_timeout_ms = busy_timeout_ms
        self._watch = _FileWatch(self._path) if self._path != ":memory:" else None
        self._conn: aiosqlite.Connection | None = None
        self._connect_lock = asyncio.Lock()

    def independent(self) -> SqliteKV:
        # aiosqlite runs one connection's statements one at a time on one thread; WAL lets a second
        # connection write while the first one reads.
        if self._path == ":memory:":
            return self  # a second connection would open a different, empty database
        copy = SqliteKV(self._path, clock=self._clock, busy_timeout_ms=self._busy_timeout_ms)
        copy._watch = self._watch
        return copy

    async def connect(self) -> None:
        """Open the database and create the schema now rather than on first use."""
        self._check_open()
        await self._connection()

    async def _connection(self) -> aiosqlite.Connection:
        if self._conn is None:
            async with self._connect_lock:
                if self._conn is None:
                    self._conn = await self._open()
        return self._conn

    async def _open(self) -> aiosqlite.Connection:
        if self._path != ":memory:":
            try:
                await asyncio.to_thread(Path(self._path).parent.mkdir, parents=True, exist_ok=True)
            except OSError as exc:
                raise KVUnavailableError(f"cannot create the directory of {self._path!r}: {exc}") from exc
        try:
            conn = await aiosqlite.connect(
                self._path,
                isolation_level=None,
                timeout=self._busy_timeout_ms / 1000,
                cached_statements=_CACHED_STATEMENTS,
            )
        except sqlite3.Error as exc:
            raise KVUnavailableError(f"cannot open SQLite database {self._path!r}: {exc}") from exc
        try:
            await self._retrying(conn, f"PRAGMA busy_timeout = {int(self._busy_timeout_ms)}", ())
            await self._retrying(conn, "PRAGMA journal_mode = WAL", ())
            await self._retrying(conn, "PRAGMA synchronous = NORMAL", ())
            for statement in _SCHEMA:
                await self._retrying(conn, statement, ())
        except BaseException:
            await conn.close()
            raise
        if self._watch is not None:
            self._watch.opened()
        return conn

    async def _retrying(
        self, conn: aiosqlite.Connection, sql: str, params: Sequence[object]
    ) -> list[sqlite3.Row]:
        for attempt in range(_LOCK_RETRIES + 1):
            began = time.monotonic()
            try:
                return list(await conn.execute_fetchall(sql, params))
            except sqlite3.DatabaseError as exc:  # locked, read-only, full disk, not a database, damaged …
                # A lock reported after the busy handler waited it out is held by another process (a backup,
                # a shell in a transaction): retrying would wait the busy timeout again, nine times over.
                waited_out = time.monotonic() - began >= self._busy_timeout_ms / 2000
                if not _is_lock_error(exc) or attempt == _LOCK_RETRIES or waited_out:
                    raise KVUnavailableError(f"SQLite database {self._path!r} failed: {exc}") from exc
            await asyncio.sleep(_LOCK_BACKOFF_S * (attempt + 1))
        raise AssertionError("unreachable: the last attempt either returns or raises")

    async def _query(self, sql: str, params: Sequence[object]) -> list[Any]:
        conn = await self._connection()
        if self._watch is not None:
            self._watch.check()
        return await self._retrying(conn, sql, params)

    async def _get(self, key: bytes, now: float) -> StoredValue | None:
        rows = await self._query(_SELECT_LIVE, (_blob(key), now))
        if not rows:
            return None
        value, metadata = rows[0]
        return StoredValue(value=bytes(value), metadata=_metadata_bytes(metadata))

    async def _put(self, write: Write, now: float) -> None:
        await self._query(
            _UPSERT, (_blob(write.key), _blob(write.value), write.expiration, _metadata_text(write.metadata))
        )

    async def _put_many(self, writes: Sequence[Write], now: float) -> None:
        # One multi-row upsert per slice: a single statement is atomic and commits once.
        for start in range(0, len(writes), _ROWS_PER_STATEMENT):
            part = writes[start : start + _ROWS_PER_STATEMENT]
            sql = _UPSERT_MANY_HEAD + ", ".join(["(?, ?, ?, ?)"] * len(part)) + _UPSERT_MANY_TAIL
            params: list[object] = []
            for w in part:
                params += (_blob(w.key), _blob(w.value), w.expiration, _metadata_text(w.metadata))
            await self._query(sql, params)

    async def _incr_many(
        self, keys: Sequence[bytes], deltas: Sequence[int], expirations: Sequence[int | None], now: float
    ) -> list[int]:
        # One statement per slice of keys, each row with its own delta and expiration.
        values: dict[bytes, str] = {}
        for start in range(0, len(keys), _ROWS_PER_STATEMENT):
            params: list[object] = []
            for i in range(start, min(start + _ROWS_PER_STATEMENT, len(keys))):
                params += (_blob(keys[i]), str(deltas[i]), expirations[i])
            rows = await self._query(_incr_sql(len(params) // 3), [*params, now, now, now])
            values.update((bytes(k), text) for text, k in rows)
        return self._counted(keys, values)

    @staticmethod
    def _counted(keys: Sequence[bytes], values: dict[bytes, str]) -> list[int]:
        out = []
        for key in keys:
            text = values[key]
            if not _is_decimal(text):
                raise KVError(f"the value at {key.decode()!r} is not an integer")
            out.append(int(text))
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
        marker = _TOKEN_PREFIX + token
        params: list[object] = [_blob(marker), "1", token_expiration]
        for key, delta, expiration in zip(keys, deltas, expirations, strict=True):
            params += (_blob(key), str(delta), expiration)
        # ONCE_MAX_KEYS rows at most: one statement, so the token and every count are written together.
        rows = await self._query(_incr_once_sql(len(keys) + 1), [*params, _blob(marker), now, now, now, now])
        if not rows:
            return None  # the token's row is live: applied before
        return self._counted(keys, {bytes(k): text for text, k in rows})

    async def _put_if_absent(self, write: Write, now: float) -> bool:
        rows = await self._query(
            _INSERT_IF_ABSENT,
            (_blob(write.key), _blob(write.value), write.expiration, _metadata_text(write.metadata), now),
        )
        return bool(rows)

    async def _delete(self, key: bytes) -> None:
        await self._query(_DELETE, (_blob(key),))

    async def _scan(self, prefix: bytes, after: bytes | None, count: int, now: float) -> Sequence[StoredKey]:
        bound, inclusive = lower_bound(prefix, after)
        conditions = ["key >= ?" if inclusive else "key > ?"]
        params: list[object] = [_blob(bound)]
        conditions.append("key < ?")
        params.append(_blob(prefix_successor(prefix) or _ENTRIES_END))
        conditions.append("(expiration IS NULL OR expiration > ?)")
        params += [now, count]
        where = " AND ".join(conditions)
        sql = f"SELECT key, expiration, metadata FROM kv WHERE {where} ORDER BY key LIMIT ?"
        rows = await self._query(sql, params)
        return [
            StoredKey(key=bytes(key), expiration=expiration, metadata=_metadata_bytes(metadata))
            for key, expiration, metadata in rows
        ]

    async def _sweep(self, now: float, rest_seconds: float) -> bool:
        # Expired rows are invisible but keep their space until deleted; every process on the file may sweep,
        # each slice one short statement. (`rest_seconds` is for stores shared with instances that cannot
        # see each other's passes; a slice that finds nothing here is one index probe.)
        deleted = await self._query(_SWEEP_EXPIRED, (now, _SWEEP_ROWS))
        return len(deleted) == _SWEEP_ROWS

    async def _close(self) -> None:
        async with self._connect_lock:
            if self._conn is not None:
                conn, self._conn = self._conn, None
                await conn.close()
