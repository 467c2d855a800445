"""KeyStore on the request path: a burst of requests that miss the cache loads a key once."""

from __future__ import annotations

import asyncio

import pytest

from kv import MemoryKV
from tests.conftest import MASTER_KEY
from tests.fakes.counting_kv import CountingKV
from worker.auth import KeyStore
from worker.errors import AuthenticationError
from worker.vault import Vault


async def test_a_burst_of_cache_misses_reads_the_key_and_its_binding_once() -> None:
    kv = CountingKV(round_trip=0.01)  # a round trip: the burst arrives while a read is in flight
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
    kv = CountingKV(round_trip=0.01)
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
    kv = CountingKV(round_trip=0.01)
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


async def test_changes_to_a_key_in_use_leave_it_one_renewal_and_none_after_close() -> None:
    """Each change made on this instance (a state change, a binding) drops the key's cache entry and the next
    request loads it again: the key keeps one renewal all the same, so under steady traffic the KV is read
    about once a second however many changes were made, and not at all once the store is closed."""
    kv = CountingKV(round_trip=0.01)
    vault = Vault(MASTER_KEY)
    record, token = await KeyStore(kv, vault).create("k")
    store = KeyStore(kv, vault)
    await store.authenticate(token)
    for _ in range(10):
        await store.set_state(record.id, "active")
        await store.authenticate(token)
        await asyncio.sleep(0.05)
    kv.reads = 0
    loop = asyncio.get_running_loop()
    end = loop.time() + 2.5
    while loop.time() < end:  # a request every 10 ms
        assert (await store.authenticate(token)).id == record.id
        await asyncio.sleep(0.01)
    # keyhash/…, keys/… and keys_revoked/… each renewal (0.8 s): 3 or 4 renewals in 2.5 s
    assert kv.reads <= 12, kv.reads
    await store.authenticate(token)  # in use when it closes
    store.close()
    kv.reads = 0
    await asyncio.sleep(1.2)
    assert kv.reads == 0


class _SlowRevocationReads(MemoryKV):
    """A KV whose answer about a revocation comes back slowly: the value is read, then the reply takes
    `delay` to arrive (a load can be in flight with a read made before a change)."""

    def __init__(self) -> None:
        super().__init__()
        self.delay = 0.0

    async def get(self, key: str) -> bytes | None:
        value = await super().get(key)
        if key.startswith("keys_revoked/"):
            await asyncio.sleep(self.delay)
        return value


async def test_a_request_after_a_revocation_does_not_join_a_load_that_read_the_key_before_it() -> None:
    kv = _SlowRevocationReads()
    vault = Vault(MASTER_KEY)
    record, token = await KeyStore(kv, vault).create("k")
    store = KeyStore(kv, vault)
    kv.delay = 0.2
    before = asyncio.ensure_future(store.authenticate(token))  # its load reads the key still active
    await asyncio.sleep(0.05)
    kv.delay = 0.0
    await store.set_state(record.id, "revoked")  # on this instance: seen at once, not within the second
    with pytest.raises(AuthenticationError) as err:
        await store.authenticate(token)
    assert err.value.code == "key_revoked"
    await before  # (the request that came first may still be answered as before the change)
    store.close()


async def test_a_remembered_hash_authenticates_nothing_the_cache_would_refuse() -> None:
    """The hash of a key that authenticated is remembered, not its answer: once the key is revoked its next
    lookup refuses it; keys that are refused (unknown, or none at all) are not remembered."""
    store = KeyStore(MemoryKV(), Vault(MASTER_KEY))
    record, token = await store.create("k")
    await store.authenticate(token)  # loads the record into the cache
    assert store.authenticate_cached(token)[0] == record
    assert store.authenticate_cached(token)[0] == record  # with the remembered hash
    await store.set_state(record.id, "revoked")  # drops the cached record
    with pytest.raises(AuthenticationError, match="revoked"):
        await store.authenticate(token)
    with pytest.raises(AuthenticationError, match="revoked"):
        store.authenticate_cached(token)
    with pytest.raises(AuthenticationError):
        await store.authenticate("trex_unknown")
    with pytest.raises(AuthenticationError):
        store.authenticate_cached("trex_unknown")  # refused from the cache
    for missing in ("", None):
        with pytest.raises(AuthenticationError, match="Missing proxy key"):
            store.authenticate_cached(missing)
    assert list(store._digests) == [token]
