"""CounterBatch: concurrent increments share round trips and each caller still gets its exact count."""

from __future__ import annotations

import asyncio
from collections.abc import Sequence

import pytest

from kv import KVError, KVNamespace, ManualClock, MemoryKV
from kv.batching import LEASE_MAX, LEASE_MIN_LIMIT, CounterBatch


async def test_concurrent_callers_get_every_count_exactly_once_in_few_round_trips(kv: KVNamespace) -> None:
    counters = CounterBatch(kv)
    results = await asyncio.gather(
        *(counters.incr([("rl/key", 1, 120), (f"rl/ip/{i % 3}", 1, 120)]) for i in range(300))
    )
    assert sorted(r[0] for r in results) == list(range(1, 301))
    for ip in range(3):
        assert sorted(r[1] for i, r in enumerate(results) if i % 3 == ip) == list(range(1, 101))
    assert await kv.get("rl/key") == b"300"
    # The first caller's round trip goes alone; everyone who arrived meanwhile shares the next one.
    assert counters.round_trips <= 3


async def test_deltas_and_zero_reads_see_the_increments_before_them(kv: KVNamespace) -> None:
    await kv.incr("tokens", 1000)
    counters = CounterBatch(kv)
    read, added, read_again = await asyncio.gather(
        counters.incr([("tokens", 0, None)]),
        counters.incr([("tokens", 250, None)]),
        counters.incr([("tokens", 0, None)]),
    )
    assert (read, added, read_again) == ([1000], [1250], [1250])


async def test_a_new_counter_keeps_the_ttl_it_was_created_with(kv: KVNamespace, clock: ManualClock) -> None:
    counters = CounterBatch(kv)
    await asyncio.gather(counters.incr([("w", 1, 60)]), counters.incr([("w", 1, 600)]))
    clock.advance(61)
    assert await kv.get("w") is None


class _FailingKV(MemoryKV):
    def __init__(self) -> None:
        super().__init__()
        self.fail = True

    async def _incr_many(
        self, keys: Sequence[bytes], deltas: Sequence[int], expirations: Sequence[int | None], now: float
    ) -> list[int]:
        await asyncio.sleep(0.01)
        if self.fail:
            raise KVError("the store is down")
        return list(await super()._incr_many(keys, deltas, expirations, now))


async def test_a_failed_round_trip_fails_its_callers_and_the_next_one_still_counts() -> None:
    kv = _FailingKV()
    counters = CounterBatch(kv)
    outcomes = await asyncio.gather(
        *(counters.incr([("n", 1, None)]) for _ in range(5)), return_exceptions=True
    )
    assert all(isinstance(o, KVError) for o in outcomes)
    kv.fail = False
    assert await counters.incr([("n", 1, None)]) == [1]


async def test_one_caller_giving_up_does_not_cancel_the_others() -> None:
    kv = _FailingKV()
    kv.fail = False
    counters = CounterBatch(kv)
    first = asyncio.create_task(counters.incr([("n", 1, None)]))
    await asyncio.sleep(0)  # the first round trip is in flight
    quitter = asyncio.create_task(counters.incr([("n", 1, None)]))
    stayer = asyncio.create_task(counters.incr([("n", 1, None)]))
    await asyncio.sleep(0)
    quitter.cancel()
    assert await first == [1]
    assert await stayer == [3]  # the quitter's increment was already part of the shared round trip
    with pytest.raises(asyncio.CancelledError):
        await quitter
    assert await kv.get("n") == b"3"


async def test_more_keys_than_one_round_trip_takes_go_in_the_next_ones() -> None:
    kv = MemoryKV()
    counters = CounterBatch(kv)
    results = await asyncio.gather(*(counters.incr([(f"k/{i}", 1, None)]) for i in range(1200)))
    assert results == [[1]] * 1200
    assert counters.round_trips >= 3


async def test_counts_below_the_lease_threshold_go_one_at_a_time(kv: KVNamespace) -> None:
    a, b = CounterBatch(kv), CounterBatch(kv)  # two instances on one store
    positions = [(await (a if i % 2 else b).count([("q", None, LEASE_MIN_LIMIT - 1)]))[0] for i in range(20)]
    assert positions == list(range(1, 21))
    assert a.round_trips + b.round_trips == 20
    assert await kv.get("q") == b"20"


async def test_far_from_the_limit_an_instance_counts_from_a_lease_without_round_trips(
    kv: KVNamespace,
) -> None:
    a, b = CounterBatch(kv), CounterBatch(kv)
    first = [(await a.count([("rl", 120, 10**6)]))[0] for _ in range(LEASE_MAX)]
    assert first == list(range(1, LEASE_MAX + 1))
    assert a.round_trips == 1  # one increment reserved the whole block
    assert await kv.get("rl") == str(LEASE_MAX).encode()
    assert await b.count([("rl", 120, 10**6)]) == [LEASE_MAX + 1]  # the other instance starts after it
    assert await a.count([("rl", 120, 10**6)]) == [2 * LEASE_MAX + 1]


async def test_take_serves_what_count_would_from_the_leases_and_takes_nothing_when_one_has_none(
    kv: KVNamespace,
) -> None:
    counters = CounterBatch(kv)
    limit = 32 * 64  # blocks of 32
    both = [("rl/k", 120, limit), ("rl/ip", 120, limit)]
    assert counters.take(both) is None  # no lease yet: `count` reserves one
    assert await counters.count(both) == [1, 1]
    assert [counters.take(both) for _ in range(31)] == [[i, i] for i in range(2, 33)]
    assert await counters.count([("rl/k", 120, limit)]) == [33]  # its next block
    # The IP's block is used up: the key's position is given back, so `count` hands out the same ones.
    assert counters.take(both) is None
    assert await counters.count(both) == [34, 33]
    assert counters.round_trips == 3


async def test_instances_sharing_a_counter_admit_exactly_the_limit_and_never_a_position_twice(
    kv: KVNamespace,
) -> None:
    limit = 1000
    instances = [CounterBatch(kv), CounterBatch(kv), CounterBatch(kv)]

    async def client(n: int) -> list[int]:
        got = []
        for i in range(n):
            got += await instances[(n + i) % 3].count([("quota", None, limit)])
        return got

    results = await asyncio.gather(*(client(n) for n in range(50, 70)))
    positions = [p for r in results for p in r]
    assert len(positions) == len(set(positions)) == sum(range(50, 70))  # 1190 attempts
    # Every position up to the limit was handed out once, or is still held unused in an instance's lease (a
    # lease taken while that instance's view of the counter was behind can outlast the load; it is used by
    # the instance's next requests, or lost when the window ends). Nothing is handed out twice.
    held = [
        p
        for instance in instances
        if "quota" in instance._leases
        for first, last in instance._leases["quota"].ranges
        for p in range(first, last + 1)
    ]
    assert not set(held) & set(positions)
    assert sorted(p for p in positions + held if p <= limit) == list(range(1, limit + 1))
    assert len([p for p in held if p <= limit]) < len(instances) * LEASE_MAX
    assert sum(i.round_trips for i in instances) < len(positions) / 4


async def test_a_burst_reserves_one_lease_not_one_per_request(kv: KVNamespace) -> None:
    """64 requests arriving at once on an instance with no lease yet: one reserves a block, the others count
    a position each, so the shared counter holds what was used plus at most one block (each used to
    reserve its own block: 660 of a limit of 1000 for 64 requests, refusing the other instances early)."""
    counters = CounterBatch(kv)
    positions = await asyncio.gather(*(counters.count([("rl", 120, 1000)]) for _ in range(64)))
    assert sorted(p[0] for p in positions) == sorted({p[0] for p in positions})  # never one twice
    stored = int(await kv.get("rl") or 0)
    assert stored - 64 <= 1000 // 64


async def test_requests_that_arrive_while_a_lease_is_reserved_are_served_from_it(kv: KVNamespace) -> None:
    """32 requests at once far from the limit: the first reserves a block and the others wait for it rather
    than each counting a position of its own, so the block serves all of them in one round trip."""
    counters = CounterBatch(kv)
    positions = await asyncio.gather(*(counters.count([("rl", 120, 10**6)]) for _ in range(32)))
    assert sorted(p[0] for p in positions) == list(range(1, 33))
    assert counters.round_trips == 1
    assert await kv.get("rl") == str(LEASE_MAX).encode()


async def test_requests_a_reserved_block_is_too_small_for_count_their_own(kv: KVNamespace) -> None:
    """The first of 40 requests reserves a block of 15 (1/64 of the limit), which serves 15 of them; the
    other 25 count a position each in the same round trip instead of waiting for the block to come back
    empty and then making a second one (a whole store round trip of latency each burst)."""
    counters = CounterBatch(kv)
    positions = await asyncio.gather(*(counters.count([("rl", 120, 1000)]) for _ in range(40)))
    assert sorted(p[0] for p in positions) == list(range(1, 41))
    assert await kv.get("rl") == b"40"  # nothing reserved is left over
    assert counters.round_trips == 1


async def test_many_live_counters_are_not_scanned_for_every_new_one() -> None:
    """A new client IP every request makes a new live counter each time: the expired-lease pass must not run
    for each of them once the map is large (it scanned every live counter per request: 2.4 ms at 100k)."""
    counters = CounterBatch(MemoryKV())
    for i in range(20_000):
        await counters.count([(f"rl/ip/10.0.{i // 256}.{i % 256}", 120, 100)])
    assert counters.prunes <= 5  # amortized: a pass each time the map has doubled, not one per new counter
