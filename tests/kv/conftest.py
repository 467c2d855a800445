"""Fixtures for the KV tests: a manual clock and one namespace per backend."""

from __future__ import annotations

import os
from collections.abc import AsyncIterator
from pathlib import Path

import pytest
import redis.asyncio as aioredis
import redis.exceptions

from kv import KVNamespace, ManualClock, open_kv
from tests import redis_target

REDIS_URL = redis_target.url(13)
# A fixed instant years in the past: Redis's own expiry must not reclaim keys early just
# because the injected clock disagrees with the server's.
START_TIME = 1_700_000_000.0


@pytest.fixture
def clock() -> ManualClock:
    """A clock frozen at START_TIME that tests advance explicitly."""
    return ManualClock(START_TIME)


async def _flush_redis() -> None:
    client = aioredis.Redis.from_url(REDIS_URL, socket_connect_timeout=1, socket_timeout=5)
    try:
        await client.flushdb()
    except (redis.exceptions.ConnectionError, redis.exceptions.TimeoutError) as exc:
        message = f"Redis at {REDIS_URL} is unreachable ({exc})"
        if os.environ.get("CI") == "true":
            pytest.fail(f"{message}; CI=true requires the Redis backend to be tested")
        pytest.skip(f"{message}; set CI=true to make this a failure")
    finally:
        await client.aclose()


@pytest.fixture
def redis_url() -> str:
    """URL of the dedicated Redis test database."""
    return REDIS_URL


@pytest.fixture
async def redis_db() -> AsyncIterator[aioredis.Redis]:
    """A raw client on the dedicated test database, flushed before and after the test."""
    await _flush_redis()
    client = aioredis.Redis.from_url(REDIS_URL)
    try:
        yield client
    finally:
        await client.flushdb()
        await client.aclose()


@pytest.fixture
def sqlite_path(tmp_path: Path) -> Path:
    """A database file inside a directory that does not exist yet."""
    return tmp_path / "nested" / "dir" / "kv.db"


@pytest.fixture(params=["memory", "sqlite", "redis"])
async def kv(
    request: pytest.FixtureRequest, clock: ManualClock, sqlite_path: Path
) -> AsyncIterator[KVNamespace]:
    """The namespace under test, once per backend, always closed afterwards."""
    backend: str = request.param
    if backend == "memory":
        url = "memory://"
    elif backend == "sqlite":
        url = f"sqlite:///{sqlite_path}"
    else:
        url = REDIS_URL
        await _flush_redis()
    namespace = await open_kv(url, clock=clock)
    try:
        yield namespace
    finally:
        await namespace.close()
        if backend == "redis":
            await _flush_redis()
