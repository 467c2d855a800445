"""Rate limits per key, per client IP and in flight; shared exactly across processes on SQLite and Redis."""

from __future__ import annotations

import json
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from kv import RedisKV
from kv.batching import CounterBatch
from tests import redis_target
from tests.conftest import MASTER_KEY
from tests.fakes.upstream import FakeUpstream, Reply
from tests.harness import (
    InProcessWorker,
    WorkerProcess,
    flush_redis_db,
    wait_for_a_fresh_minute,
    write_config,
)
from tests.test_cli import trex
from worker.appkeys import GATEWAY

MESSAGES = [{"role": "user", "content": "hi"}]
REDIS_DB = redis_target.url(12)


def _post(url: str, key: str, headers: dict[str, str] | None = None) -> tuple[int, Any]:
    body = json.dumps({"model": "gpt-4o-mini", "messages": MESSAGES}).encode()
    all_headers = {"Content-Type": "application/json", "Authorization": f"Bearer {key}", **(headers or {})}
    req = urllib.request.Request(url + "/v1/chat/completions", data=body, method="POST", headers=all_headers)
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return r.status, r.headers
    except urllib.error.HTTPError as e:
        return e.code, e.headers


def _worker(make_worker: Callable[..., InProcessWorker], **variables: Any) -> tuple[InProcessWorker, str]:
    worker = make_worker(variables, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    _, token = worker.call(worker.app[GATEWAY].keys.create("limited"))
    return worker, token


def test_product_defaults() -> None:
    from worker.config import DEFAULT_VARS

    assert (
        DEFAULT_VARS["RATE_LIMIT_PER_MINUTE"] == "100" and DEFAULT_VARS["RATE_LIMIT_IP_PER_MINUTE"] == "100"
    )


def test_key_limit_headers_and_429_in_both_formats(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    wait_for_a_fresh_minute()
    worker, token = _worker(make_worker, RATE_LIMIT_PER_MINUTE=3)
    client = openai.OpenAI(
        api_key=token,
        base_url=worker.url + "/v1",
        max_retries=0,
        default_headers={"X-Upstream-Api-Key": "sk-x"},
    )
    try:
        remaining = []
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            assert raw.headers["X-RateLimit-Limit"] == "3"
            assert 1 <= int(raw.headers["X-RateLimit-Reset"]) <= 60
            remaining.append(raw.headers["X-RateLimit-Remaining"])
        assert remaining == ["2", "1", "0"]
        with pytest.raises(openai.RateLimitError) as err:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        assert err.value.code == "rate_limit_exceeded"
        assert 1 <= int(err.value.response.headers["Retry-After"]) <= 60
        assert err.value.response.headers["X-RateLimit-Remaining"] == "0"
    finally:
        client.close()
    with anthropic.Anthropic(api_key=token, base_url=worker.url, max_retries=0) as aclient:
        with pytest.raises(anthropic.RateLimitError) as aerr:
            aclient.messages.create(model="claude-haiku-4-5", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
        assert aerr.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]


def test_the_client_ip_limit_spans_keys_and_trusts_forwarded_for_only_from_trusted_proxies(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    wait_for_a_fresh_minute()
    worker, first = _worker(make_worker, RATE_LIMIT_IP_PER_MINUTE=2, TRUSTED_PROXIES="127.0.0.1/32")
    _, second = worker.call(worker.app[GATEWAY].keys.create("second"))
    up = {"X-Upstream-Api-Key": "sk-x"}
    assert _post(worker.url, first, {**up, "X-Forwarded-For": "203.0.113.7"})[0] == 200
    assert _post(worker.url, second, {**up, "X-Forwarded-For": "203.0.113.7"})[0] == 200
    status, headers = _post(worker.url, second, {**up, "X-Forwarded-For": "203.0.113.7"})
    assert (
        status == 429 and headers["X-RateLimit-Remaining"] == "99998"
    )  # the key limit is far away: the IP one refused
    # Another client behind the same trusted proxy has its own count; a spoofed hop left of it is ignored.
    assert _post(worker.url, first, {**up, "X-Forwarded-For": "198.51.100.9, 203.0.113.8"})[0] == 200


def test_forwarded_for_from_an_untrusted_peer_is_ignored(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    wait_for_a_fresh_minute()
    worker, token = _worker(make_worker, RATE_LIMIT_IP_PER_MINUTE=2)
    up = {"X-Upstream-Api-Key": "sk-x"}
    statuses = [_post(worker.url, token, {**up, "X-Forwarded-For": f"10.0.0.{i}"})[0] for i in range(3)]
    assert statuses == [200, 200, 429]  # all counted for the real peer


def test_a_forwarded_hop_that_is_not_an_address_counts_as_the_proxy(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """A trusted proxy passing on a hop that is no IP address (`unknown`, or whatever a client wrote): that
    hop is not a client of its own (each made-up value had a fresh count), the proxy's address is counted."""
    wait_for_a_fresh_minute()
    worker, token = _worker(make_worker, RATE_LIMIT_IP_PER_MINUTE=2, TRUSTED_PROXIES="127.0.0.1/32")
    up = {"X-Upstream-Api-Key": "sk-x"}
    statuses = [
        _post(worker.url, token, {**up, "X-Forwarded-For": f"client-{i}-" + "x" * 300})[0] for i in range(3)
    ]
    assert statuses == [200, 200, 429]


def test_in_flight_limit_per_key(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    worker, token = _worker(make_worker, RATE_LIMIT_MAX_CONCURRENT=1)
    fake_upstream.enqueue("/v1/chat/completions", Reply.json("openai/chat_text.json", latency=0.6))
    up = {"X-Upstream-Api-Key": "sk-x"}
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(_post, worker.url, token, up)
        time.sleep(0.2)
        status, headers = _post(worker.url, token, up)
        assert status == 429 and headers["Retry-After"] == "1"
        assert slow.result()[0] == 200
    assert _post(worker.url, token, up)[0] == 200  # the slot came back


@pytest.mark.parametrize(("mode", "expected"), [("open", 200), ("closed", 503)])
def test_an_unreachable_counter_store_fails_open_or_closed(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream, mode: str, expected: int
) -> None:
    worker, token = _worker(make_worker, RATE_LIMIT_FAIL=mode)
    limits = worker.app[GATEWAY].limits
    dead = RedisKV("redis://127.0.0.1:1/0", socket_timeout=0.5, connect_timeout=0.5)
    limits.counters = CounterBatch(dead)  # the counters' store goes away; keys still resolve
    try:
        status, _ = _post(worker.url, token, {"X-Upstream-Api-Key": "sk-x"})
        assert status == expected
        assert limits.failures == (1 if mode == "open" else 0)
    finally:
        worker.call(dead.close())


def _shared_limit(
    tmp_path: Path,
    fake: FakeUpstream,
    spawn_worker: Callable[..., WorkerProcess],
    kv_url: str | None,
    limit: int,
) -> None:
    variables = {**fake.base_urls(), "RATE_LIMIT_PER_MINUTE": limit, "RATE_LIMIT_MAX_CONCURRENT": 0}
    local = {"kv_url": kv_url} if kv_url else None
    cfg = write_config(tmp_path, variables, local, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    created = trex("keys", "create", "--config", str(cfg), "--name", "shared", "--json")
    assert created.returncode == 0, created.stderr
    token = json.loads(created.stdout)["key"]
    workers = [spawn_worker(cfg), spawn_worker(cfg)]
    wait_for_a_fresh_minute()
    up = {"X-Upstream-Api-Key": "sk-x"}
    with ThreadPoolExecutor(16) as pool:
        statuses = list(pool.map(lambda i: _post(workers[i % 2].url, token, up)[0], range(3 * limit)))
    assert statuses.count(200) == limit and statuses.count(429) == 2 * limit


# 20 is counted one request at a time; at 300 each process counts from reserved blocks until it nears the limit.
SHARED_LIMITS = pytest.mark.parametrize("limit", [20, 300])


@SHARED_LIMITS
def test_two_processes_on_one_sqlite_file_admit_exactly_the_limit(
    tmp_path: Path, fake_upstream: FakeUpstream, spawn_worker: Callable[..., WorkerProcess], limit: int
) -> None:
    _shared_limit(tmp_path, fake_upstream, spawn_worker, None, limit)


@SHARED_LIMITS
def test_two_processes_on_one_redis_admit_exactly_the_limit(
    tmp_path: Path, fake_upstream: FakeUpstream, spawn_worker: Callable[..., WorkerProcess], limit: int
) -> None:
    flush_redis_db(REDIS_DB)
    _shared_limit(tmp_path, fake_upstream, spawn_worker, REDIS_DB, limit)
