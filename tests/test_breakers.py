"""Circuit breakers held by one instance: what a flood of made-up model names leaves behind, and how often a
burst of requests reads the KV."""

from __future__ import annotations

import asyncio
from pathlib import Path

from kv import MemoryKV, SqliteKV
from tests.fakes.counting_kv import CountingKV
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
    # nor does an evicted route keep a renewal timer (which would read it back in, evicting another)
    assert len(breakers._renewals) <= 4096 and len(breakers._used) <= 4096
    assert ("local", "down") in breakers._states  # the evicted ones were the routes without failures
    assert not await breakers.allow("local", "down")
    assert breakers.retry_after("local", "down") > 1
    breakers.close()


async def test_requests_that_find_a_route_stale_together_read_its_state_once(tmp_path: Path) -> None:
    """The state is read from the KV about once a second per route: the requests that arrive while it is being
    read (a burst, or every request in flight when the second is up) wait for that read instead of each
    making their own, and all of them get its answer."""
    statements: list[str] = []
    async with SqliteKV(tmp_path / "kv.sqlite3") as kv:
        await kv.connect()
        assert kv._conn is not None
        await kv._conn.set_trace_callback(statements.append)  # every statement SQLite runs
        breakers = Breakers(kv, failures=1, cooldown_seconds=60)
        await breakers.failed("openai", "down")  # opened (and known) here: no read needed for it yet
        assert await asyncio.gather(*(breakers.allow("openai", "up") for _ in range(32))) == [True] * 32
        reads = [s for s in statements if s.startswith("SELECT")]
        assert len(reads) == 2  # the route's `open` and `fails` entries, once

        other = Breakers(kv, failures=1, cooldown_seconds=60)  # another instance: it reads the open breaker
        statements.clear()
        assert await asyncio.gather(*(other.allow("openai", "down") for _ in range(8))) == [False] * 8
        assert len([s for s in statements if s.startswith("SELECT")]) == 2


async def test_a_route_in_use_has_its_state_read_again_before_it_is_stale() -> None:
    """Under steady traffic no request waits for the state's read once a second: the state of a route that
    requests used is read again in the background before it is stale, so the requests after its second find
    it fresh."""
    now = [1000.0]  # the state's second; its renewal is timed by the event loop (0.8 s)
    kv = CountingKV()
    breakers = Breakers(kv, failures=3, cooldown_seconds=60, clock=lambda: now[0])
    assert await breakers.allow("openai", "up")
    assert await breakers.allow("openai", "up")  # in use
    kv.reads = 0
    now[0] += 0.5
    for _ in range(300):  # the read runs in the background: the route's `open` and `fails` entries
        if kv.reads == 2:
            break
        await asyncio.sleep(0.01)
    now[0] += 0.9  # past the second of the first read, within the renewed one
    kv.reads = 0
    assert await breakers.allow("openai", "up")
    assert kv.reads == 0
    breakers.close()
