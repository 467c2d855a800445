"""Plan charges applied to Redis when its reply never comes (a timeout, a connection cut mid-command): the
charge may or may not have been applied, and it is sent again, with the id it was first sent with, until it
is known to be applied once. Uses the machine's Redis through a proxy that cuts a connection the way a
partition does (tests/fakes/redis_proxy.py)."""

from __future__ import annotations

import logging
import time
import uuid
from collections.abc import Callable, Iterator

import openai
import pytest

from kv import KVIndeterminateError, KVUnavailableError
from kv.redis import RedisKV
from tests import redis_target
from tests.conftest import MASTER_KEY, GatewaySetup, with_key
from tests.fakes.redis_proxy import RedisProxy
from tests.fakes.upstream import FakeUpstream, fixture_json
from tests.harness import InProcessWorker
from tests.test_usage import HTTP, wait_final
from worker.accounting.charges import RETRY_SECONDS, PendingCharges
from worker.appkeys import GATEWAY
from worker.quotas import Quotas

DB = 14
PLANS = """
[plans.exact]
daily_tokens = {one}
[plans.roomy]
daily_tokens = {three_but_one}
"""
MESSAGES = [{"role": "user", "content": "hi"}]
_USAGE = fixture_json("openai/chat_text.json")["usage"]
ONE_REQUEST = _USAGE["prompt_tokens"] + _USAGE["completion_tokens"]
"""The tokens the fake upstream bills each request."""


@pytest.fixture
def on_redis(
    proxy: RedisProxy, make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> Iterator[Callable[[str], GatewaySetup]]:
    """Factory: a worker on Redis through the proxy (usage flushed only when read), a key on `plan`. The
    proxy is set up first so that it outlives the worker, whose last flush at close goes through it."""
    opened: list[GatewaySetup] = []

    def factory(plan: str) -> GatewaySetup:
        worker = make_worker(
            {"USAGE_FLUSH_SECONDS": 3600},
            local={"kv_url": proxy.url(DB)},
            dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
            extra=PLANS.format(one=ONE_REQUEST, three_but_one=3 * ONE_REQUEST - 1),
        )
        setup = with_key(worker, fake_upstream, "charged", plan)
        opened.append(setup)
        return setup

    yield factory
    for setup in opened:
        setup.close()


def _charged(setup: GatewaySetup) -> int:
    """The key's token counters for today, summed."""
    kv = setup.worker.app[GATEWAY].kv
    counters = setup.worker.call(kv.names(f"quota/{setup.key_id}/d"))
    values = [setup.worker.call(kv.get(name)) for name in counters]
    return sum(int(v) for v in values if v is not None)


def _request(setup: GatewaySetup) -> str:
    raw = setup.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    return str(raw.headers["X-Trex-Usage-Event-Id"])


def _next_flush(setup: GatewaySetup) -> None:
    """A read of the key's totals: it runs a usage flush, as the flush loop does every interval."""
    r = HTTP.get(setup.worker.url + "/v1/usage", headers={"Authorization": f"Bearer {setup.key}"})
    assert r.status_code == 200, r.text


def test_a_charge_lost_on_its_way_to_redis_is_sent_again_and_the_quota_holds(
    on_redis: Callable[[str], GatewaySetup], proxy: RedisProxy
) -> None:
    setup = on_redis("exact")  # one request uses up the day's tokens
    event_id = _request(setup)
    proxy.cut(f"quota/{setup.key_id}/d".encode(), lose="command")
    wait_final(setup, event_id)  # reconciled: its charge is sent, and lost on the way
    assert proxy.cuts == 1
    _next_flush(setup)
    assert _charged(setup) == ONE_REQUEST  # it was charged (never, before: the charge was only logged)
    with pytest.raises(openai.RateLimitError) as err:
        setup.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.code == "quota_exceeded"


def test_a_charge_whose_reply_was_lost_is_not_applied_twice(
    on_redis: Callable[[str], GatewaySetup], proxy: RedisProxy
) -> None:
    setup = on_redis("roomy")  # room for three requests' tokens, not four
    wait_final(setup, _request(setup))  # charged as usual (so Redis knows the charging script)
    event_id = _request(setup)
    proxy.cut(f"quota/{setup.key_id}/d".encode(), lose="reply")
    wait_final(setup, event_id)  # reconciled: Redis applies its charge, the reply never comes
    assert proxy.cuts == 1
    assert _charged(setup) == 2 * ONE_REQUEST
    _next_flush(setup)  # sent again: Redis knows it, and applies nothing
    _next_flush(setup)
    assert _charged(setup) == 2 * ONE_REQUEST
    _request(setup)  # the quota is not used up by a charge counted twice


async def test_a_reply_that_never_comes_is_indeterminate_and_a_refused_connection_is_not(
    proxy: RedisProxy,
) -> None:
    namespace = f"test-indeterminate-{uuid.uuid4().hex[:8]}"
    through = RedisKV(proxy.url(DB), namespace=namespace)
    direct = RedisKV(redis_target.url(DB), namespace=namespace)
    try:
        assert await through.incr("c", 1, expiration_ttl=600) == 1
        proxy.stalled = True
        with pytest.raises(KVIndeterminateError):
            await through.incr("c", 5)
        assert await direct.get("c") == b"6"  # it was applied all the same
    finally:
        await through.close()
        await direct.close()
    refused = RedisKV(f"redis://127.0.0.1:1/{DB}", connect_timeout=0.5)
    with pytest.raises(KVUnavailableError) as err:
        await refused.incr("c", 1)
    assert not isinstance(err.value, KVIndeterminateError)  # never sent: safe to retry
    await refused.close()


class _Clock:
    def __init__(self) -> None:
        self.now = time.time()

    def __call__(self) -> float:
        return self.now


async def test_a_charge_whose_outcome_stays_unknown_is_dropped_once_it_could_be_applied_twice(
    proxy: RedisProxy, caplog: pytest.LogCaptureFixture
) -> None:
    namespace = f"test-charges-{uuid.uuid4().hex[:8]}"
    through = RedisKV(proxy.url(DB), namespace=namespace)
    direct = RedisKV(redis_target.url(DB), namespace=namespace)
    clock = _Clock()
    pending = PendingCharges(clock)
    quotas = Quotas(through, {})
    try:
        pending.add([("quota/k/d20261206/tokens", 1, 86400)])
        await pending.apply(quotas)  # applied: Redis knows the script, the connection is open
        pending.add([("quota/k/d20261206/tokens", 1200, 86400)])
        proxy.stalled = True
        await pending.apply(quotas)  # Redis applies it; its reply never comes
        assert len(pending) == 1
        assert await direct.get("quota/k/d20261206/tokens") == b"1201"
        proxy.stalled = False
        clock.now += RETRY_SECONDS + 1  # by now Redis may be about to forget it was applied
        with caplog.at_level(logging.ERROR, logger="trex.usage"):
            await pending.apply(quotas)
        assert len(pending) == 0
        assert "1 charges (batch" in caplog.text and "dropped" in caplog.text
        assert await direct.get("quota/k/d20261206/tokens") == b"1201"  # once, not again
    finally:
        await through.close()
        await direct.close()


async def test_charges_made_while_redis_is_down_wait_and_are_applied_once_it_is_back(
    proxy: RedisProxy,
) -> None:
    namespace = f"test-charges-{uuid.uuid4().hex[:8]}"
    through = RedisKV(proxy.url(DB), namespace=namespace, connect_timeout=0.5)
    direct = RedisKV(redis_target.url(DB), namespace=namespace)
    pending = PendingCharges(time.time)
    quotas = Quotas(through, {})
    try:
        assert await through.incr("warm", 1) == 1  # a pooled connection, broken by the outage
        proxy.refuse()
        pending.add([("credits/k", -300, None), ("quota/k/d20261206/tokens", 100, 86400)])
        await pending.apply(quotas)  # refused: never sent
        pending.add([("quota/k/d20261206/tokens", 50, 86400)])
        await pending.apply(quotas)
        assert len(pending) == 3
        proxy.accept()
        await pending.apply(quotas)
        assert len(pending) == 0
        assert await direct.get("credits/k") == b"-300"
        assert await direct.get("quota/k/d20261206/tokens") == b"150"
    finally:
        await through.close()
        await direct.close()
