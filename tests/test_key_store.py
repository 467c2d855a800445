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


class _Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


async def test_a_key_in_use_is_loaded_again_before_its_cache_entry_expires() -> None:
    """Under steady traffic no request waits for the KV once a second: a cache entry that requests read is
    loaded again in the background before it expires, so the requests after its second find the renewed
    entry."""
    kv = _CountingKV()
    vault = Vault(MASTER_KEY)
    record, token = await KeyStore(kv, vault).create("k")
    await KeyStore(kv, vault).bind(record.id, "openai", "sk-bound")
    clock = _Clock()  # the entries' second; their renewal is timed by the event loop (0.8 s)
    store = KeyStore(kv, vault, clock=clock)
    await store.authenticate(token)
    await store.provider_key(record.id, "openai")
    assert (await store.authenticate(token)).id == record.id  # read from the cache: in use
    assert await store.provider_key(record.id, "openai") == "sk-bound"
    kv.reads = 0
    clock.now += 0.5
    for _ in range(300):  # the renewals run in the background: keyhash, keys, keys_revoked and the binding
        if kv.reads == 4:
            break
        await asyncio.sleep(0.01)
    clock.now += 0.9  # past the second of the first load, within the renewed one
    kv.reads = 0
    assert (await store.authenticate(token)).id == record.id
    assert await store.provider_key(record.id, "openai") == "sk-bound"
    assert kv.reads == 0
    store.close()
