"""A revoke is final across instances: a change made at the same moment on another instance sharing the KV
(one SQLite file) never brings a revoked key or agent back."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kv import SqliteKV
from tests.conftest import MASTER_KEY
from tests.harness import InProcessWorker
from worker.agents import AgentStore, authorization_header
from worker.auth import KeyStore
from worker.errors import AuthenticationError, ConflictError
from worker.vault import Vault

ADMIN = "adm_" + "r" * 40


class _HeldKV(SqliteKV):
    """The real SQLite KV, on the file the other instance uses, that holds one write of `hold` until the test
    lets it go: the other instance's read-modify-write is cut between its read and its write."""

    def __init__(self, path: Path) -> None:
        super().__init__(path)
        self.hold: str | None = None
        self.reached = asyncio.Event()
        self.release = asyncio.Event()

    async def put(self, key: str, value: bytes | str, **kw: Any) -> None:
        if key == self.hold:
            self.hold = None
            self.reached.set()
            await self.release.wait()
        await super().put(key, value, **kw)


@pytest.fixture
async def two_kvs(tmp_path: Path) -> AsyncIterator[tuple[SqliteKV, _HeldKV]]:
    first, second = SqliteKV(tmp_path / "kv.sqlite3"), _HeldKV(tmp_path / "kv.sqlite3")
    yield first, second
    await first.close()
    await second.close()


async def _race(held: _HeldKV, slot: str, change: Any, revoke: Callable[[], Any]) -> Any:
    """Start `change` on the held instance, let it read, revoke on the other one, then let it write."""
    held.hold = slot
    task = asyncio.ensure_future(change)
    await asyncio.wait_for(held.reached.wait(), 5)
    await revoke()
    held.release.set()
    return await asyncio.gather(task, return_exceptions=True)


@pytest.mark.parametrize("change", ["plan", "suspend"])
async def test_a_key_change_racing_a_revoke_on_another_instance_does_not_undo_it(
    two_kvs: tuple[SqliteKV, _HeldKV], change: str
) -> None:
    kv, held = two_kvs
    vault = Vault(MASTER_KEY)
    here, there = KeyStore(kv, vault), KeyStore(held, vault)
    record, token = await here.create("k")
    racing = there.set_plan(record.id, "pro") if change == "plan" else there.set_state(record.id, "suspended")
    (outcome,) = await _race(held, f"keys/{record.id}", racing, lambda: here.set_state(record.id, "revoked"))
    if change == "plan":
        assert outcome.state == "revoked" and outcome.plan == "pro"  # the plan changed; the key stays revoked
    else:
        assert isinstance(outcome, ConflictError)  # a revoked key changes state no more
    for store in (KeyStore(kv, vault), KeyStore(held, vault)):  # cold caches, on either instance
        with pytest.raises(AuthenticationError) as info:
            await store.authenticate(token)
        assert info.value.code == "key_revoked"
        assert (await store.get(record.id)).state == "revoked"
        assert [r.state for r, _ in await store.list_keys()] == ["revoked"]
    with pytest.raises(ConflictError):
        await there.set_state(record.id, "active")
    # Deleting the key deletes its revoke too.
    await there.delete(record.id)
    assert (await kv.list(prefix="keys_revoked/")).keys == []


async def test_an_agent_activation_racing_a_revoke_on_another_instance_does_not_undo_it(
    two_kvs: tuple[SqliteKV, _HeldKV],
) -> None:
    kv, held = two_kvs
    vault = Vault(MASTER_KEY)
    here, there = AgentStore(kv, vault), AgentStore(held, vault)
    record, secret = await here.create("a")
    await here.set_state(record.id, "suspended")
    (outcome,) = await _race(
        held,
        f"agents/{record.id}",
        there.set_state(record.id, "active"),
        lambda: here.set_state(record.id, "revoked"),
    )
    assert isinstance(outcome, ConflictError)
    for store in (AgentStore(kv, vault), AgentStore(held, vault)):
        header = authorization_header(record.id, secret, "GET", "/v1/payloads/x")
        with pytest.raises(AuthenticationError) as info:
            await store.verify("GET", "/v1/payloads/x", header)
        assert info.value.code == "agent_revoked"
        assert (await store.get(record.id)).state == "revoked"
        assert [a.state for a in await store.list_agents()] == ["revoked"]
    await there.delete(record.id)
    assert (await kv.list(prefix="agents_revoked/")).keys == []


def test_revokes_racing_changes_on_two_workers_all_stay(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    """The same through the admin API of two workers on one SQLite file, each revoke sent with a plan change
    or an activation on the other worker at the same moment (bounded: a few dozen rounds)."""
    dev_vars = {"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN}
    plans = "[plans.pro]\ndescription = 'p'\n"
    first, second = make_worker(dev_vars=dev_vars, extra=plans), make_worker(dev_vars=dev_vars, extra=plans)

    async def go() -> list[tuple[str, str]]:
        async with aiohttp.ClientSession(headers={"Authorization": f"Bearer {ADMIN}"}) as session:

            async def call(worker: InProcessWorker, method: str, path: str, body: Any = None) -> Any:
                async with session.request(method, worker.url + path, json=body) as r:
                    return await r.json()

            undone: list[tuple[str, str]] = []
            for _ in range(25):
                key_id = (await call(first, "POST", "/admin/v1/keys", {"name": "k"}))["id"]
                agent_id = (await call(first, "POST", "/admin/v1/agents", {"name": "a"}))["id"]
                await asyncio.gather(
                    call(first, "PATCH", f"/admin/v1/keys/{key_id}", {"state": "revoked"}),
                    call(second, "PATCH", f"/admin/v1/keys/{key_id}", {"plan": "pro"}),
                    call(first, "PATCH", f"/admin/v1/agents/{agent_id}", {"state": "revoked"}),
                    call(second, "PATCH", f"/admin/v1/agents/{agent_id}", {"state": "active"}),
                )
                for worker in (first, second):
                    for path in (f"/admin/v1/keys/{key_id}", f"/admin/v1/agents/{agent_id}"):
                        state = (await call(worker, "GET", path))["state"]
                        if state != "revoked":
                            undone.append((path, state))
            return undone

    assert asyncio.run(go()) == []
