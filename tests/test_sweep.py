"""The worker reclaims the space of expired KV entries nothing reads again (per-minute rate-limit counters
above all), in the background: on Redis their index members, on SQLite their rows. Before, a Redis index
grew by a member per client IP per minute for good, and a SQLite file kept every expired counter until some
thousandth put deleted them all while its request waited."""

from __future__ import annotations

import asyncio
import itertools
import sqlite3
import time
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest
import redis

from kv import MemoryKV
from tests import redis_target
from tests.conftest import MASTER_KEY
from tests.fakes.upstream import FakeUpstream
from tests.harness import InProcessWorker, flush_redis_db
from tests.test_limits import _post
from worker.appkeys import GATEWAY
from worker.sweeper import Sweeper

REDIS_DB = redis_target.url(15)
CLIENTS = 300
UP = {"X-Upstream-Api-Key": "sk-x"}


def _until(condition: Callable[[], bool], seconds: float = 15) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if condition():
            return True
        time.sleep(0.05)
    return condition()


@pytest.fixture
def raw_redis() -> Iterator[redis.Redis]:
    flush_redis_db(REDIS_DB)
    client = redis.Redis.from_url(REDIS_DB)
    yield client
    client.flushdb()
    client.close()


def test_redis_index_sheds_the_counters_of_clients_gone_quiet(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream, raw_redis: redis.Redis
) -> None:
    worker = make_worker(
        {"TRUSTED_PROXIES": "127.0.0.1/32", "KV_SWEEP_SECONDS": 0.2},
        local={"kv_url": REDIS_DB},
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
    )
    _, token = worker.call(worker.app[GATEWAY].keys.create("many-clients"))
    for i in range(CLIENTS):
        ip = f"198.51.{i // 256}.{i % 256}"
        assert _post(worker.url, token, {**UP, "X-Forwarded-For": ip})[0] == 200

    def counters() -> list[bytes]:
        return [m for m in raw_redis.zrangebylex("trex:kv:index", "[rl/", "(rl0")]

    # One per client IP, and the key's own: one per minute window its 300 requests spanned (one or two).
    assert len([m for m in counters() if m.startswith(b"rl/ip/")]) == CLIENTS
    assert 1 <= len([m for m in counters() if not m.startswith(b"rl/ip/")]) <= 2
    # A minute or two later Redis's own expiry removes the counters' hashes (their TTL is 120 s).
    raw_redis.delete(*(b"trex:kv:v:" + m for m in counters()))
    assert _until(lambda: counters() == []), f"{len(counters())} index members of expired counters left"
    # Everything live is still indexed and listed: the key, and a usage event for each request.
    gateway = worker.app[GATEWAY]
    worker.call(gateway.recorder.flush())
    assert len(worker.call(gateway.kv.names("usage/ev/"))) == CLIENTS
    assert len(worker.call(gateway.keys.list_keys())) == 1


def test_sqlite_file_sheds_expired_rows_while_the_worker_runs(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream, tmp_path: Path
) -> None:
    worker = make_worker({"KV_SWEEP_SECONDS": 0.2}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    _, token = worker.call(worker.app[GATEWAY].keys.create("k"))
    path = worker.config.kv_url.removeprefix("sqlite:///")
    assert _post(worker.url, token, UP)[0] == 200
    worker.call(worker.app[GATEWAY].recorder.flush())  # every connection of the worker is open by now
    # Counters of clients from a few minutes ago, expired since, never read again.
    gone = int(time.time()) - 60
    with sqlite3.connect(path) as db:
        db.executemany(
            "INSERT INTO kv (key, value, expiration) VALUES (?, CAST('1' AS BLOB), ?)",
            [(f"rl/ip/203.0.{i // 256}.{i % 256}/1".encode(), gone) for i in range(2000)],
        )
    assert _post(worker.url, token, UP)[0] == 200

    def expired() -> int:
        with sqlite3.connect(path) as db:
            return int(
                db.execute("SELECT count(*) FROM kv WHERE expiration <= ?", (time.time(),)).fetchone()[0]
            )

    assert _until(lambda: expired() == 0), f"{expired()} expired rows left"
    assert _post(worker.url, token, UP)[0] == 200


class _SlowSweeps(MemoryKV):
    """A memory KV whose sweep slices each take 50 ms and never finish a pass (a large backlog)."""

    def __init__(self) -> None:
        super().__init__()
        self.slices: list[tuple[float, float]] = []

    async def _sweep(self, now: float, rest_seconds: float) -> bool:
        started = time.monotonic()
        await asyncio.sleep(0.05)
        self.slices.append((started, time.monotonic()))
        return True


async def test_slow_slices_are_spaced_so_the_sweep_takes_a_fifth_of_the_store_at_most() -> None:
    kv = _SlowSweeps()
    sweeper = Sweeper(kv, rest_seconds=60, pause_seconds=0.001)
    sweeper.start()
    await asyncio.sleep(1.0)
    await sweeper.close()
    assert len(kv.slices) >= 3
    for (_, ended), (next_started, _) in itertools.pairwise(kv.slices):
        assert next_started - ended >= 4 * 0.05 * 0.95  # four times the slice, not the 1 ms pause
