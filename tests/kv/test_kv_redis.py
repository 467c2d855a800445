"""Redis-only behaviour: key layout, native expiry, index cleanup and outages."""

from __future__ import annotations

import asyncio

import pytest
import redis.asyncio as aioredis

from kv import KVError, KVUnavailableError, ManualClock, RedisKV, open_kv
from tests import redis_target


async def test_key_layout_and_native_expiry(
    redis_db: aioredis.Redis, redis_url: str, clock: ManualClock
) -> None:
    """Keys live under the namespace; GC expiry is relative, never early."""
    async with RedisKV(redis_url, clock=clock, namespace="gw") as kv:
        await kv.put("k", "v", expiration_ttl=120, metadata={"a": 1})
        await kv.put("forever", "v")
    assert sorted(await redis_db.keys("*")) == [b"gw:kv:index", b"gw:kv:v:forever", b"gw:kv:v:k"]
    assert await redis_db.zrange("gw:kv:index", 0, -1, withscores=True) == [(b"forever", 0.0), (b"k", 0.0)]
    assert await redis_db.hgetall("gw:kv:v:k") == {
        b"v": b"v",
        b"m": b'{"a":1}',
        b"e": str(int(clock.now) + 120).encode(),
    }
    # The fake clock is years behind the server: GC must still wait the full TTL.
    assert 119_000 <= await redis_db.pttl("gw:kv:v:k") <= 120_000
    assert await redis_db.pttl("gw:kv:v:forever") == -1


async def test_overwrite_clears_native_expiry(redis_db: aioredis.Redis, redis_url: str) -> None:
    """Overwriting without expiration also removes Redis's own TTL."""
    async with RedisKV(redis_url) as kv:
        await kv.put("k", "v", expiration_ttl=60)
        await kv.put("k", "w")
    assert await redis_db.pttl("trex:kv:v:k") == -1


async def test_put_many_has_the_layout_and_native_expiry_of_put(
    redis_db: aioredis.Redis, redis_url: str, clock: ManualClock
) -> None:
    """A batch stores what single puts would: hash fields, index members, relative GC expiry; a later
    batch without expiration clears it, and within a batch the last write of a key wins."""
    async with RedisKV(redis_url, clock=clock, namespace="gw") as kv:
        await kv.put_many(
            [("a", b"1", {"n": 1}), ("b", "2", None), ("a", b"3", {"n": 3})], expiration_ttl=120
        )
        assert await redis_db.hgetall("gw:kv:v:a") == {
            b"v": b"3",
            b"m": b'{"n":3}',
            b"e": str(int(clock.now) + 120).encode(),
        }
        assert await redis_db.hgetall("gw:kv:v:b") == {b"v": b"2", b"e": str(int(clock.now) + 120).encode()}
        assert 119_000 <= await redis_db.pttl("gw:kv:v:b") <= 120_000
        assert await redis_db.zrange("gw:kv:index", 0, -1) == [b"a", b"b"]
        await kv.put_many([("b", b"kept", None)])
        assert await redis_db.hgetall("gw:kv:v:b") == {b"v": b"kept"}
        assert await redis_db.pttl("gw:kv:v:b") == -1
        many = [(f"m/{i:04d}", f"v{i}", {"i": i}) for i in range(600)]  # more than one script call
        await kv.put_many(many, expiration_ttl=60)
        assert await redis_db.zcount("gw:kv:index", 0, 0) == 602
        assert await kv.get_with_metadata("m/0599") == (b"v599", {"i": 599})


async def test_namespaces_are_isolated(redis_db: aioredis.Redis, redis_url: str) -> None:
    """Two namespaces on one database never see each other's keys."""
    async with RedisKV(redis_url, namespace="a") as first, RedisKV(redis_url, namespace="b") as second:
        await first.put("k", "from-a")
        assert await second.get("k") is None
        assert (await second.list()).keys == []
        await second.put("k", "from-b")
        assert await first.get("k") == b"from-a"


async def test_list_drops_stale_index_entries(
    redis_db: aioredis.Redis, redis_url: str, clock: ManualClock
) -> None:
    """list removes index entries for expired or vanished hashes."""
    async with RedisKV(redis_url, clock=clock) as kv:
        for index in range(10):
            await kv.put(f"exp{index}", "v", expiration_ttl=60)
        await kv.put("gone", "v")
        await kv.put("live", "v")
        # Simulates Redis's own expiry having reclaimed the hash.
        await redis_db.delete("trex:kv:v:gone")
        clock.advance(60)
        page = await kv.list()
        assert [info.name for info in page.keys] == ["live"]
        assert await redis_db.zrange("trex:kv:index", 0, -1) == [b"live"]
        assert await redis_db.exists("trex:kv:v:exp0") == 0


async def test_get_of_expired_key_cleans_up(
    redis_db: aioredis.Redis, redis_url: str, clock: ManualClock
) -> None:
    """Reading an expired key deletes its hash and index entry."""
    async with RedisKV(redis_url, clock=clock) as kv:
        await kv.put("k", "v", expiration_ttl=60)
        clock.advance(60)
        assert await kv.get("k") is None
    assert await redis_db.keys("*") == []


async def test_unreachable_redis_raises_unavailable() -> None:
    """Every operation against a dead server raises KVUnavailableError."""
    kv = await open_kv("redis://127.0.0.1:1/0")
    try:
        with pytest.raises(KVUnavailableError, match=r"127\.0\.0\.1:1\b"):
            await kv.get("k")
        with pytest.raises(KVUnavailableError):
            await kv.put("k", "v")
        with pytest.raises(KVUnavailableError):
            await kv.put_if_absent("k", "v", expiration_ttl=60)
        with pytest.raises(KVUnavailableError):
            await kv.list()
        with pytest.raises(KVUnavailableError):
            await kv.delete("k")
    finally:
        await kv.close()


async def test_error_messages_hide_password() -> None:
    """Error messages never echo credentials from the URL."""
    kv = await open_kv("redis://user:s3cret@127.0.0.1:1/0")
    try:
        with pytest.raises(KVUnavailableError) as info:
            await kv.get("k")
        assert "s3cret" not in str(info.value)
    finally:
        await kv.close()


def test_rejects_empty_namespace() -> None:
    """An empty namespace would collide with other users and is refused."""
    with pytest.raises(KVError, match="namespace"):
        RedisKV(redis_target.url(13), namespace="")


async def test_a_burst_past_the_pool_size_waits_for_connections_instead_of_failing(
    redis_db: aioredis.Redis, redis_url: str
) -> None:
    """More concurrent calls than pooled connections queue for one (redis-py's default pool failed them
    with "Too many connections": a 500 for every request past 100 in flight)."""
    async with RedisKV(redis_url) as kv:
        await kv.put("k", "v")
        results = await asyncio.gather(*(kv.get("k") for _ in range(400)))
        assert results == [b"v"] * 400
    async with RedisKV(redis_url + "?max_connections=2") as small:
        assert await asyncio.gather(*(small.get("k") for _ in range(20))) == [b"v"] * 20
