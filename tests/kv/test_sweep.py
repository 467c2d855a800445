"""`sweep`: the space of expired entries nobody reads again is reclaimed, a bounded slice at a time.

Keys such as per-minute rate-limit counters are written once and never read or listed after their window.
Before `sweep`, on Redis each left its member in the index for good once Redis's own expiry had removed the
value (the index grew by one member per client IP per minute), and on SQLite their rows were deleted only by
a purge that counters never triggered and that, when a put did trigger it, deleted every expired row inside
that put.
"""

from __future__ import annotations

import sqlite3
from pathlib import Path

import redis.asyncio as aioredis

from kv import KVNamespace, ManualClock, RedisKV, SqliteKV
from tests.kv.test_contract import names


async def sweep_pass(kv: KVNamespace) -> int:
    """Sweep until the pass is over; returns how many calls it took."""
    calls = 1
    while await kv.sweep(rest_seconds=60):
        calls += 1
    return calls


async def test_a_pass_reclaims_what_expired_and_keeps_the_rest(kv: KVNamespace, clock: ManualClock) -> None:
    await kv.incr_many([f"rl/ip/10.0.0.{i}/1" for i in range(50)], 1, expiration_ttl=60)
    await kv.put("session/a", "live", expiration_ttl=3600)
    await kv.put("keys/k", "forever")
    assert await kv.incr("rl/ip/10.0.0.1/2", expiration_ttl=120) == 1
    clock.advance(61)
    await sweep_pass(kv)
    assert await names(kv) == ["keys/k", "rl/ip/10.0.0.1/2", "session/a"]
    assert await kv.get("session/a") == b"live"
    assert await kv.incr("rl/ip/10.0.0.1/2", expiration_ttl=120) == 2  # a live counter keeps counting
    assert await kv.incr("rl/ip/10.0.0.7/1", expiration_ttl=60) == 1  # a swept one starts afresh


async def test_sweep_needs_a_positive_rest(kv: KVNamespace) -> None:
    for bad in (0, -1.0, float("nan")):
        try:
            await kv.sweep(rest_seconds=bad)
        except ValueError:
            continue
        raise AssertionError(f"rest_seconds={bad!r} was taken")


# -- Redis: the index ----------------------------------------------------------------------------------------


async def test_redis_index_members_of_values_redis_expired_are_dropped(
    redis_db: aioredis.Redis, redis_url: str, clock: ManualClock
) -> None:
    """Counters nobody lists: once Redis's own expiry has removed their hashes, the sweep drops their index
    members, a bounded slice per call, and leaves every live member alone."""
    async with RedisKV(redis_url, clock=clock, namespace="sw") as kv:
        counters = [f"rl/ip/198.51.{i // 256}.{i % 256}/29000000" for i in range(600)]
        await kv.incr_many(counters, 1, expiration_ttl=120)
        await kv.put("usage/live", "v")  # sorts after the counters
        await kv.put("session/live", "v", expiration_ttl=3600)
        # What Redis's own expiry does when the counters' TTL runs out: the hashes go, the members stay.
        await redis_db.delete(*(f"sw:kv:v:{c}" for c in counters))
        assert await redis_db.zcard("sw:kv:index") == 602

        assert await kv.sweep(rest_seconds=60)  # one slice: 256 members looked at, all dead
        assert await redis_db.zcard("sw:kv:index") == 602 - 256
        assert await sweep_pass(kv) == 2
        assert await redis_db.zrange("sw:kv:index", 0, -1) == [b"session/live", b"usage/live"]
        assert await kv.get("session/live") == b"v"


async def test_redis_sweep_drops_entries_the_clock_expired(
    redis_db: aioredis.Redis, redis_url: str, clock: ManualClock
) -> None:
    """An entry expired by the namespace's clock whose hash Redis has not reclaimed yet goes with its member."""
    async with RedisKV(redis_url, clock=clock, namespace="sw") as kv:
        await kv.put("nonce/a", "1", expiration_ttl=60)
        await kv.put("nonce/b", "1", expiration_ttl=600)
        clock.advance(60)
        await sweep_pass(kv)
        assert await redis_db.zrange("sw:kv:index", 0, -1) == [b"nonce/b"]
        assert await redis_db.exists("sw:kv:v:nonce/a") == 0


async def test_redis_instances_share_one_pass_and_its_rest(
    redis_db: aioredis.Redis, redis_url: str, clock: ManualClock
) -> None:
    """Several instances continue one pass where any of them left it, and rest together after it."""
    async with (
        RedisKV(redis_url, clock=clock, namespace="sw") as first,
        RedisKV(redis_url, clock=clock, namespace="sw") as second,
    ):
        dead = [f"rl/k/key{i:04d}/1" for i in range(700)]
        await first.incr_many(dead, 1, expiration_ttl=120)
        await redis_db.delete(*(f"sw:kv:v:{k}" for k in dead))
        assert await first.sweep(rest_seconds=60)
        assert await second.sweep(rest_seconds=60)  # the second slice, not the first one again
        assert await redis_db.zcard("sw:kv:index") == 700 - 512
        assert not await first.sweep(rest_seconds=60)  # the pass ends
        assert await redis_db.zcard("sw:kv:index") == 0

        await second.incr("rl/k/late/2", expiration_ttl=120)
        await redis_db.delete("sw:kv:v:rl/k/late/2")
        assert not await second.sweep(rest_seconds=60)  # resting: nothing looked at
        assert await redis_db.zcard("sw:kv:index") == 1
        assert 59_000 < await redis_db.pttl("sw:kv:sweep") <= 60_000
        await redis_db.delete("sw:kv:sweep")  # the rest is over
        assert not await second.sweep(rest_seconds=60)
        assert await redis_db.zcard("sw:kv:index") == 0


async def test_redis_sweep_keeps_a_key_written_again(
    redis_db: aioredis.Redis, redis_url: str, clock: ManualClock
) -> None:
    async with RedisKV(redis_url, clock=clock, namespace="sw") as kv:
        await kv.put("session/s", "old", expiration_ttl=60)
        await redis_db.delete("sw:kv:v:session/s")
        await kv.put("session/s", "new", expiration_ttl=60)
        await sweep_pass(kv)
        assert await names(kv) == ["session/s"]


# -- SQLite: the rows ----------------------------------------------------------------------------------------


def _rows(path: Path) -> int:
    with sqlite3.connect(path) as db:
        return int(db.execute("SELECT count(*) FROM kv").fetchone()[0])


async def test_sqlite_rows_of_expired_counters_are_deleted_by_the_sweep_only(
    sqlite_path: Path, clock: ManualClock
) -> None:
    """Writes never delete other rows (the purge used to run inside every thousandth write, deleting every
    expired row while that write's caller waited); the sweep deletes them, at most 500 per call."""
    async with SqliteKV(sqlite_path, clock=clock) as kv:
        await kv.incr_many([f"rl/ip/10.0.{i // 256}.{i % 256}/1" for i in range(1200)], 1, expiration_ttl=60)
        clock.advance(61)
        for i in range(1000):
            await kv.put(f"session/{i}", "v", expiration_ttl=3600)
        assert _rows(sqlite_path) == 2200

        assert await kv.sweep(rest_seconds=60)
        assert _rows(sqlite_path) == 1700
        assert await sweep_pass(kv) == 2
        assert _rows(sqlite_path) == 1000
        assert len(await names(kv, prefix="session/")) == 1000


async def test_sqlite_sweep_deletes_spent_incr_once_tokens(sqlite_path: Path, clock: ManualClock) -> None:
    async with SqliteKV(sqlite_path, clock=clock) as kv:
        assert await kv.incr_many_once("batch-1", ["credits/k"], 5, token_ttl=60) == [5]
        clock.advance(61)
        await sweep_pass(kv)
        assert _rows(sqlite_path) == 1  # the counter; the token's record is gone
        assert await kv.get("credits/k") == b"5"
