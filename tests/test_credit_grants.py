"""Compute Credits grants sent again are applied once: `POST /admin/v1/keys/{id}/credits` with an
`Idempotency-Key`, and `trex credits add`. Before, a grant whose Redis reply timed out after Redis had applied
it was a 503, and the admin's retry granted it a second time."""

from __future__ import annotations

import asyncio
import json
import urllib.error
import urllib.request
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from kv.redis import RedisKV
from tests import redis_target
from tests.conftest import MASTER_KEY
from tests.fakes.redis_proxy import RedisProxy
from tests.harness import InProcessWorker, flush_redis_db
from tests.test_cli import trex
from worker.appkeys import GATEWAY
from worker.auth import KeyStore

ADMIN = "adm_" + "g" * 40
DB = 15


def post(
    worker: InProcessWorker, key_id: str, amount: Any, idempotency_key: str | None = None
) -> tuple[int, dict[str, str], Any]:
    headers = {"Content-Type": "application/json", "Authorization": f"Bearer {ADMIN}"}
    if idempotency_key is not None:
        headers["Idempotency-Key"] = idempotency_key
    req = urllib.request.Request(
        f"{worker.url}/admin/v1/keys/{key_id}/credits",
        data=json.dumps({"amount_usd": amount}).encode(),
        method="POST",
        headers=headers,
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), json.loads(e.read())


def balance(worker: InProcessWorker, key_id: str) -> float:
    return float(worker.call(worker.app[GATEWAY].quotas.balance(key_id)))


def new_key(worker: InProcessWorker) -> str:
    record, _ = worker.call(worker.app[GATEWAY].keys.create("granted"))
    return str(record.id)


@pytest.fixture
def admin_worker(make_worker: Callable[..., InProcessWorker]) -> InProcessWorker:
    return make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN})


def test_a_grant_sent_again_with_its_key_is_applied_once_and_answered_alike(
    admin_worker: InProcessWorker,
) -> None:
    worker = admin_worker
    key_id = new_key(worker)
    status, headers, doc = post(worker, key_id, 10, "grant-0001")
    assert status == 200 and doc["balance_usd"] == 10 and "Idempotent-Replayed" not in headers
    assert post(worker, key_id, 2.5)[0] == 200  # another grant meanwhile, without a key
    for _ in range(2):
        status, headers, doc = post(worker, key_id, 10, "grant-0001")
        assert status == 200 and headers["Idempotent-Replayed"] == "true"
        assert doc == {"key_id": key_id, "object": "credits", "balance_usd": 10}  # what the first answered
    assert balance(worker, key_id) == 12.5
    # Another grant under its own key is applied.
    assert post(worker, key_id, 1, "grant-0002")[2]["balance_usd"] == 13.5


def test_a_key_reused_for_another_grant_is_refused_and_applies_nothing(admin_worker: InProcessWorker) -> None:
    worker = admin_worker
    first, second = new_key(worker), new_key(worker)
    assert post(worker, first, 5, "reused")[0] == 200
    for key_id, amount in ((first, 6), (second, 5)):
        status, _, doc = post(worker, key_id, amount, "reused")
        assert status == 422 and doc["error"]["code"] == "idempotency_key_reused"
    assert (balance(worker, first), balance(worker, second)) == (5, 0)


def test_without_a_key_every_grant_counts_and_a_bad_key_is_a_400(admin_worker: InProcessWorker) -> None:
    worker = admin_worker
    key_id = new_key(worker)
    assert [post(worker, key_id, 1)[2]["balance_usd"] for _ in range(3)] == [1, 2, 3]
    for bad in ("", " ", "k" * 256):
        status, _, doc = post(worker, key_id, 1, bad)
        assert status == 400 and doc["error"]["code"] == "invalid_idempotency_key"
    assert balance(worker, key_id) == 3


def test_grants_sent_at_the_same_moment_with_one_key_apply_once(admin_worker: InProcessWorker) -> None:
    worker = admin_worker
    key_id = new_key(worker)

    async def burst() -> list[int]:
        headers = {"Authorization": f"Bearer {ADMIN}", "Idempotency-Key": "double-click"}
        async with aiohttp.ClientSession(headers=headers) as session:

            async def one() -> int:
                url = f"{worker.url}/admin/v1/keys/{key_id}/credits"
                async with session.post(url, json={"amount_usd": 7}) as r:
                    await r.read()
                    return r.status

            return list(await asyncio.gather(*(one() for _ in range(6))))

    assert asyncio.run(burst()) == [200] * 6
    assert balance(worker, key_id) == 7


def test_a_grant_past_the_bound_is_refused_again_when_sent_again(admin_worker: InProcessWorker) -> None:
    worker = admin_worker
    key_id = new_key(worker)
    assert post(worker, key_id, 900_000_000)[0] == 200
    status, _, doc = post(worker, key_id, 200_000_000, "too-much")
    assert status == 400 and doc["error"]["param"] == "amount_usd"
    assert post(worker, key_id, -300_000_000)[0] == 200
    # There would be room now, but a repeat answers what the first answered: the grant was refused.
    status, _, doc = post(worker, key_id, 200_000_000, "too-much")
    assert status == 400 and doc["error"]["param"] == "amount_usd"
    assert balance(worker, key_id) == 600_000_000


# -- a reply lost on its way back from Redis ----------------------------------------------------------------


@pytest.fixture
def proxy(proxy: RedisProxy) -> Iterator[RedisProxy]:
    """conftest's Redis proxy, on a database emptied before and after."""
    flush_redis_db(redis_target.url(DB))
    yield proxy
    flush_redis_db(redis_target.url(DB))


def test_a_grant_whose_redis_reply_was_lost_is_applied_once_when_sent_again(
    make_worker: Callable[..., InProcessWorker], proxy: RedisProxy
) -> None:
    worker = make_worker(
        local={"kv_url": proxy.url(DB)}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN}
    )
    key_id = new_key(worker)
    assert post(worker, key_id, 1, "warm-up")[0] == 200  # Redis knows the script; the connection is open
    proxy.cut(f"credits/{key_id}".encode(), lose="reply")
    status, _, doc = post(worker, key_id, 10, "grant-after-timeout")
    assert status == 503 and doc["error"]["code"] == "kv_unavailable"
    assert proxy.cuts == 1
    assert balance(worker, key_id) == 11  # Redis applied it
    status, headers, doc = post(worker, key_id, 10, "grant-after-timeout")  # the admin's retry
    assert status == 200 and headers["Idempotent-Replayed"] == "true" and doc["balance_usd"] == 11
    assert balance(worker, key_id) == 11  # not 21


def _redis_key(url: str) -> str:
    async def create() -> str:
        kv = RedisKV(url)
        try:
            record, _ = await KeyStore(kv, None).create("cli")
            return str(record.id)
        finally:
            await kv.close()

    return asyncio.run(create())


def test_trex_credits_add_retries_a_lost_reply_without_granting_twice(
    proxy: RedisProxy, tmp_path: Path
) -> None:
    direct = redis_target.url(DB)
    key_id = _redis_key(direct)
    proxy.cut(f"credits/{key_id}".encode(), lose="reply")
    run = trex(
        "credits", "add", key_id, "10", "--kv-url", proxy.url(DB), "--persist-to", str(tmp_path), "--json"
    )
    assert run.returncode == 0, run.stderr
    assert proxy.cuts == 1
    assert json.loads(run.stdout)["balance_usd"] == 10
    shown = trex("credits", "show", key_id, "--kv-url", direct, "--persist-to", str(tmp_path), "--json")
    assert json.loads(shown.stdout)["balance_usd"] == 10


def test_trex_credits_add_with_a_key_run_twice_grants_once(proxy: RedisProxy, tmp_path: Path) -> None:
    direct = redis_target.url(DB)
    key_id = _redis_key(direct)
    args = ("--kv-url", direct, "--persist-to", str(tmp_path), "--json")
    for _ in range(2):
        run = trex("credits", "add", key_id, "4", "--idempotency-key", "invoice-42", *args)
        assert run.returncode == 0, run.stderr
        assert json.loads(run.stdout)["balance_usd"] == 4
    reused = trex("credits", "add", key_id, "5", "--idempotency-key", "invoice-42", *args)
    assert reused.returncode == 2 and b"another grant" in reused.stderr
