"""Circuit breakers held by one instance: what a flood of made-up model names leaves behind."""

from __future__ import annotations

from kv import MemoryKV
from worker.health import Breakers


async def test_model_names_a_client_makes_up_do_not_grow_the_breakers_without_bound() -> None:
    """Every model a client names (`local/<anything>` needs no key) gets a breaker; an instance keeps the
    state of at most a few thousand of them, and an open one is neither forgotten nor reopened for traffic."""
    breakers = Breakers(MemoryKV(), failures=1, cooldown_seconds=60)
    await breakers.failed("local", "down")  # one failure opens it
    assert not await breakers.allow("local", "down")
    for i in range(6000):
        assert await breakers.allow("local", f"made-up-{i}")
    assert len(breakers._states) <= 4096
    assert ("local", "down") in breakers._states  # the evicted ones were the routes without failures
    assert not await breakers.allow("local", "down")
    assert breakers.retry_after("local", "down") > 1
