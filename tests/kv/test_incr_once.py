"""`incr_many_once`: increments applied at most once per token, run unchanged against every backend."""

from __future__ import annotations

import asyncio

import pytest

from kv import (
    ONCE_MAX_KEYS,
    InvalidExpirationError,
    InvalidKeyError,
    KVError,
    KVNamespace,
    ManualClock,
    RedisKV,
)
from tests.kv.conftest import REDIS_URL
from tests.kv.test_contract import names


def _another(kv: KVNamespace, clock: ManualClock) -> KVNamespace:
    """The same storage through another connection (another process or instance, as far as it can tell)."""
    return RedisKV(REDIS_URL, clock=clock) if isinstance(kv, RedisKV) else kv.independent()


async def test_the_same_token_applies_once(kv: KVNamespace) -> None:
    assert await kv.incr_many_once("t1", ["a", "b"], [2, 3], expiration_ttl=600, token_ttl=120) == [2, 3]
    # Sent again (its reply was lost, say): nothing changes.
    assert await kv.incr_many_once("t1", ["a", "b"], [2, 3], expiration_ttl=600, token_ttl=120) is None
    assert await kv.get("a") == b"2" and await kv.get("b") == b"3"
    assert await kv.incr_many_once("t2", ["a", "b"], [2, 3], expiration_ttl=600, token_ttl=120) == [4, 6]
    assert await kv.incr_many(["a"]) == [5]  # plain increments of the same keys are not affected


async def test_a_token_is_no_entry(kv: KVNamespace) -> None:
    await kv.incr_many_once("once/t", ["n"], 1, token_ttl=120)
    assert await names(kv) == ["n"]  # listing everything, or the token's name, never shows it
    assert await names(kv, prefix="once") == []
    assert await kv.get("once/t") is None
    await kv.put("once/t", "an entry of that name")  # and an entry of the same name is no token
    assert await kv.incr_many_once("once/t", ["n"], 1, token_ttl=120) is None
    assert await kv.get("once/t") == b"an entry of that name"


async def test_a_token_is_forgotten_after_its_ttl(kv: KVNamespace, clock: ManualClock) -> None:
    assert await kv.incr_many_once("t", ["n"], 5, token_ttl=120) == [5]
    clock.advance(119)
    assert await kv.incr_many_once("t", ["n"], 5, token_ttl=120) is None
    clock.advance(2)
    assert await kv.incr_many_once("t", ["n"], 5, token_ttl=120) == [10]


async def test_concurrent_calls_with_one_token_apply_once(kv: KVNamespace) -> None:
    results = await asyncio.gather(
        *(kv.incr_many_once("t", ["x", "y"], [1, 2], token_ttl=120) for _ in range(20))
    )
    assert [r for r in results if r is not None] == [[1, 2]]
    assert await kv.get("x") == b"1" and await kv.get("y") == b"2"


async def test_tokens_are_shared_by_every_connection_to_the_storage(
    kv: KVNamespace, clock: ManualClock
) -> None:
    other = _another(kv, clock)
    try:
        assert await kv.incr_many_once("shared", ["n"], 7, token_ttl=120) == [7]
        assert await other.incr_many_once("shared", ["n"], 7, token_ttl=120) is None
        assert await other.incr_many_once("mine", ["n"], 7, token_ttl=120) == [14]
    finally:
        if other is not kv:
            await other.close()


async def test_a_value_that_is_no_integer_fails_and_the_rest_is_counted_once(kv: KVNamespace) -> None:
    await kv.put("text", "abc")
    with pytest.raises(KVError):
        await kv.incr_many_once("t", ["ok", "text"], 3, token_ttl=120)
    assert await kv.get("ok") == b"3" and await kv.get("text") == b"abc"
    assert await kv.incr_many_once("t", ["ok", "text"], 3, token_ttl=120) is None
    assert await kv.get("ok") == b"3"


async def test_arguments_are_checked_before_anything_is_written(kv: KVNamespace) -> None:
    with pytest.raises(InvalidExpirationError):
        await kv.incr_many_once("t", ["a"], token_ttl=59)
    with pytest.raises(InvalidKeyError):
        await kv.incr_many_once("", ["a"], token_ttl=120)
    with pytest.raises(InvalidKeyError):
        await kv.incr_many_once("t", ["a", "a"], token_ttl=120)
    with pytest.raises(ValueError):
        await kv.incr_many_once("t", [f"k{i}" for i in range(ONCE_MAX_KEYS + 1)], token_ttl=120)
    assert await kv.incr_many_once("t", [], token_ttl=120) == []
    assert await names(kv) == []
    # The most keys one call takes, all in one step.
    keys = [f"k/{i:03d}" for i in range(ONCE_MAX_KEYS)]
    assert await kv.incr_many_once("t", keys, 1, expiration_ttl=600, token_ttl=120) == [1] * ONCE_MAX_KEYS
    assert await kv.incr_many_once("t", keys, 1, expiration_ttl=600, token_ttl=120) is None
