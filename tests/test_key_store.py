"""KeyStore on the request path: a burst of requests that miss the cache loads a key once."""

from __future__ import annotations

import asyncio

from kv import MemoryKV
from tests.conftest import MASTER_KEY
from worker.auth import KeyStore
from worker.vault import Vault


class _CountingKV(MemoryKV):
    """A real in-memory KV that counts the reads reaching it."""

    def __init__(self) -> None:
        super().__init__()
        self.reads = 0

    async def get(self, key: str) -> bytes | None:
        self.reads += 1
        await asyncio.sleep(0.01)  # a round trip: the burst arrives while it is in flight
        return await super().get(key)


async def test_a_burst_of_cache_misses_reads_the_key_and_its_binding_once() -> None:
    kv = _CountingKV()
    vault = Vault(MASTER_KEY)
    record, token = await KeyStore(kv, vault).create("k")
    await KeyStore(kv, vault).bind(record.id, "openai", "sk-bound")
    store = KeyStore(kv, vault)  # a cold cache, as after the 1 s cache expires
    kv.reads = 0
    records = await asyncio.gather(*(store.authenticate(token) for _ in range(50)))
    # keyhash/…, keys/… and keys_revoked/… (a revoke made on another instance), once for the whole burst
    assert {r.id for r in records} == {record.id} and kv.reads == 3
    kv.reads = 0
    assert (
        await asyncio.gather(*(store.provider_key(record.id, "openai") for _ in range(50)))
        == ["sk-bound"] * 50
    )
    assert kv.reads == 1


async def test_a_requester_that_goes_away_does_not_fail_the_others_waiting_on_the_same_load() -> None:
    kv = _CountingKV()
    vault = Vault(MASTER_KEY)
    record, token = await KeyStore(kv, vault).create("k")
    store = KeyStore(kv, vault)
    first = asyncio.ensure_future(store.authenticate(token))
    await asyncio.sleep(0)
    others = [asyncio.ensure_future(store.authenticate(token)) for _ in range(5)]
    await asyncio.sleep(0)
    first.cancel()  # its client hung up
    assert [r.id for r in await asyncio.gather(*others)] == [record.id] * 5
