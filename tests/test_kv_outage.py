"""What clients see, and what state is left, when the KV fails mid-traffic: the worker on Redis through a
proxy a test can cut, stall, refuse or make answer errors (tests/fakes/redis_proxy.py).

A store that is unreachable, stalled past its reply timeout or refusing commands is a 503 `kv_unavailable`
with `Retry-After: 1` in the client's format, never a 500 or a hang, and the worker recovers by itself when
the store comes back; `/health` says whether the store takes writes. Usage written behind the response waits out an outage and is charged once after it; a
shutdown during one finishes and says what it could not write.
"""

from __future__ import annotations

import asyncio
import logging
import sqlite3
import subprocess
import sys
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal

import anthropic
import openai
import pytest
import redis

from tests import redis_target
from tests.conftest import MASTER_KEY, GatewaySetup, closed_after_test, with_key
from tests.fakes.redis_proxy import RedisProxy
from tests.fakes.upstream import FakeUpstream, Reply
from tests.harness import ROOT, InProcessWorker, free_port
from tests.test_usage import HTTP, wait_final
from worker.appkeys import GATEWAY

DB = 7
"""This module's Redis database: no other test file uses it."""
PLANS = """
[plans.metered]
daily_requests = 1
daily_web_searches = 1
daily_tokens = 1000000

[plans.credits]
credit_models = ["gpt-4.1*"]
"""
HI = [{"role": "user", "content": "hi"}]


@pytest.fixture(autouse=True)
def redis_db() -> Iterator[None]:
    """An empty database 7 on the machine's Redis; a failure, not a skip, when Redis is not there."""
    client = redis.Redis(host=redis_target.HOST, port=redis_target.PORT, db=DB, socket_connect_timeout=1)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError as exc:
        pytest.fail(f"these tests need the Redis on {redis_target.HOST}:{redis_target.PORT}: {exc}")
    yield
    client.flushdb()
    client.close()


def _setup(
    make_worker: Callable[..., InProcessWorker],
    fake: FakeUpstream,
    proxy: RedisProxy,
    plan: str | None = None,
    **variables: Any,
) -> GatewaySetup:
    w = make_worker(
        {"USAGE_FLUSH_SECONDS": 0.2, **variables},
        local={"kv_url": proxy.url(DB)},
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
        extra=PLANS,
    )
    gw = with_key(w, fake, plan=plan)
    closed_after_test(gw)
    return gw


def _past_key_cache() -> None:
    time.sleep(1.1)  # a key is looked up in the KV again once its 1 s cache entry is over


def _assert_kv_unavailable_openai(err: openai.APIStatusError) -> None:
    assert err.status_code == 503
    assert err.response.headers["Retry-After"] == "1"
    body = err.response.json()
    assert body["error"]["code"] == "kv_unavailable" and body["error"]["type"] == "server_error"
    assert "redis" not in body["error"]["message"].lower()  # nothing of the store's address or errors


def _tasks(w: InProcessWorker) -> int:
    async def count() -> int:
        return len(asyncio.all_tasks())

    return int(w.call(count()))


def test_a_stalled_store_times_out_into_503s_and_the_worker_recovers_with_nothing_left_behind(
    proxy: RedisProxy, make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """Redis stops answering (its replies held back): 20 requests at once each get a 503 within the reply
    timeout (`?socket_timeout=0.5` in the URL; 5 s by default), none hangs; when it answers again requests
    are served, and no task is left behind."""
    gw = _setup(make_worker, fake_upstream, proxy)
    client = gw.openai()
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    time.sleep(0.5)  # the first usage flush
    tasks = _tasks(gw.worker)
    proxy.stalled = True
    _past_key_cache()

    def ask(_: int) -> tuple[int, float]:
        began = time.monotonic()
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
        except openai.APIStatusError as err:
            _assert_kv_unavailable_openai(err)
            return err.status_code, time.monotonic() - began
        return 200, time.monotonic() - began

    with ThreadPoolExecutor(20) as pool:
        answers = list(pool.map(ask, range(20)))
    client.close()  # its 20 kept-alive connections, each a task of the server's
    assert {status for status, _ in answers} == {503}
    assert max(took for _, took in answers) < 3, answers
    proxy.stalled = False
    gw.openai().chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    time.sleep(0.5)
    assert _tasks(gw.worker) <= tasks


def test_a_store_unreachable_at_start_up_is_served_as_an_outage_until_it_comes(
    proxy: RedisProxy, make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    first = _setup(make_worker, fake_upstream, proxy)
    first.worker.stop()
    proxy.refuse()
    w = make_worker(local={"kv_url": proxy.url(DB)}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY}, extra=PLANS)
    client = openai.OpenAI(api_key=first.key, base_url=w.url + "/v1", max_retries=0)
    try:
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
        _assert_kv_unavailable_openai(err.value)
        proxy.accept()
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    finally:
        client.close()


def test_redis_refusing_a_command_is_a_503_not_an_internal_error(
    proxy: RedisProxy,
    make_worker: Callable[..., InProcessWorker],
    fake_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = _setup(make_worker, fake_upstream, proxy)
    client, claude = gw.openai(), gw.anthropic()
    with caplog.at_level(logging.WARNING):
        for error in (
            "OOM command not allowed when used memory > 'maxmemory'.",
            "READONLY You can't write against a read only replica.",
            "MISCONF Redis is configured to save RDB snapshots, but it's currently unable to persist to disk.",
        ):
            _past_key_cache()
            proxy.fail(b"keyhash/", error)
            with pytest.raises(openai.APIStatusError) as err:
                client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
            _assert_kv_unavailable_openai(err.value)
        _past_key_cache()
        proxy.fail(b"keyhash/", "OOM command not allowed when used memory > 'maxmemory'.")
        with pytest.raises(anthropic.APIStatusError) as aerr:
            claude.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI)  # type: ignore[arg-type]
        assert (
            aerr.value.status_code == 503
            and aerr.value.response.json()["error"]["type"] == "overloaded_error"
        )
    assert not [r for r in caplog.records if r.exc_info], "a store refusing commands is no unhandled error"
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]


def test_a_store_that_is_down_is_a_503_in_each_format_and_the_worker_recovers_by_itself(
    proxy: RedisProxy,
    make_worker: Callable[..., InProcessWorker],
    fake_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = _setup(make_worker, fake_upstream, proxy)
    client, claude = gw.openai(), gw.anthropic()
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    proxy.refuse()
    _past_key_cache()
    with caplog.at_level(logging.WARNING):
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
        _assert_kv_unavailable_openai(err.value)
        with pytest.raises(anthropic.APIStatusError) as aerr:
            claude.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI)  # type: ignore[arg-type]
        assert aerr.value.status_code == 503 and aerr.value.response.headers["Retry-After"] == "1"
        assert aerr.value.response.json()["error"]["type"] == "overloaded_error"
    assert not [r for r in caplog.records if r.exc_info], "an outage is no unhandled error"
    proxy.accept()
    began = time.monotonic()
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    assert time.monotonic() - began < 2  # no restart, no backoff to wait out


def _counter(w: InProcessWorker, prefix: str, suffix: str) -> int:
    """The value of the one counter under `prefix` ending in `suffix`, read through the worker's own KV."""
    kv = w.app[GATEWAY].kv
    names = [n for n in w.call(kv.names(prefix)) if n.endswith(suffix)]
    assert len(names) == 1, names
    return int(w.call(kv.get(names[0])))


def test_a_stream_outlives_an_outage_and_its_usage_is_written_and_charged_once_after_it(
    proxy: RedisProxy,
    make_worker: Callable[..., InProcessWorker],
    fake_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis goes away in the middle of a stream: the stream ends normally (it needs no KV), its usage event
    waits in memory while the flushes fail (a warning when the outage begins, no traceback every interval),
    and once Redis is back the event is written and its tokens charged to the plan once."""
    gw = _setup(make_worker, fake_upstream, proxy, plan="metered")
    go_on = threading.Event()
    fake_upstream.enqueue(
        "/v1/chat/completions", Reply.stream("openai/chat_text.sse", pause_after=3, resume=go_on)
    )
    stream = gw.openai().chat.completions.create(
        model="gpt-4o-mini",
        messages=HI,  # type: ignore[arg-type]
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = iter(stream)
    next(chunks)
    with caplog.at_level(logging.WARNING):
        proxy.refuse()
        go_on.set()
        usage = [chunk.usage for chunk in chunks if chunk.usage is not None]
        assert usage and usage[0].total_tokens > 0
        time.sleep(1.5)  # several flushes fail meanwhile
    assert not [r for r in caplog.records if r.exc_info], "an outage is no unhandled error"
    warned = [r.getMessage() for r in caplog.records if r.name == "trex.usage"]
    # One line as the outage begins (events not written, charges not applied), not one per flush.
    assert len(warned) == 2, warned
    proxy.accept()
    event_id = stream.response.headers["X-Trex-Usage-Event-Id"]
    event = wait_final(gw, event_id)
    assert event["billed"]["input_tokens"] + event["billed"]["output_tokens"] == usage[0].total_tokens
    time.sleep(0.5)  # more flushes: nothing is charged twice
    assert _counter(gw.worker, f"quota/{gw.key_id}/d", "/tokens") == usage[0].total_tokens


def test_a_shutdown_while_the_store_is_down_completes_and_says_what_was_not_written(
    proxy: RedisProxy,
    make_worker: Callable[..., InProcessWorker],
    fake_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    gw = _setup(make_worker, fake_upstream, proxy, USAGE_FLUSH_SECONDS=30)
    gw.openai().chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    proxy.refuse()
    with caplog.at_level(logging.WARNING):
        gw.worker.stop()  # raised the KV's error out of the shutdown, leaving the rest of it undone
    lost = [r.getMessage() for r in caplog.records if "not written before shutdown" in r.getMessage()]
    assert lost and lost[0].startswith("1 usage events and 1 request-log entries were not written")


def test_a_shutdown_while_the_store_stalls_ends_within_its_grace_period(
    proxy: RedisProxy,
    make_worker: Callable[..., InProcessWorker],
    fake_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """Redis takes commands and never answers (a stalled server, a dropped route): the last usage write waited
    out the reply timeout of each of its commands, so a shutdown with a 1 s grace period took two reply
    timeouts (20 s here, past a supervisor's patience, whose SIGKILL loses everything). It now gives up on
    the KV when the grace period is over and says what it could not write."""
    w = make_worker(
        {"USAGE_FLUSH_SECONDS": 30},
        local={
            "kv_url": f"redis://127.0.0.1:{proxy.port}/{DB}?socket_timeout=10",
            "shutdown_grace_seconds": 1,
        },
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
        extra=PLANS,
    )
    gw = closed_after_test(with_key(w, fake_upstream, plan="metered"))
    gw.openai().chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    proxy.stalled = True
    began = time.monotonic()
    with caplog.at_level(logging.WARNING):
        w.stop()
    assert time.monotonic() - began < 8, "the shutdown waited for the stalled KV"  # 1 s grace + 1 s write
    lost = [r.getMessage() for r in caplog.records if "not written before shutdown" in r.getMessage()]
    assert lost and lost[0].startswith("1 usage events and 1 request-log entries were not written"), lost


def test_health_says_whether_the_store_answers(
    proxy: RedisProxy, make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """/health answered 200 whatever the store did, so a load balancer kept sending requests that were all
    503s; it now says whether the KV takes writes, in time even when the store stalls."""
    w = _setup(make_worker, fake_upstream, proxy).worker
    ok = HTTP.get(w.url + "/health")
    assert ok.status_code == 200 and ok.json()["status"] == "ok" and ok.json()["kv"] == "ok"
    proxy.refuse()
    time.sleep(1.1)  # what the store said is kept for a second
    down = HTTP.get(w.url + "/health")
    assert down.status_code == 503 and down.headers["Retry-After"] == "1"
    assert down.json()["status"] == "unavailable" and down.json()["kv"] == "unavailable"
    proxy.accept()
    proxy.stalled = True
    time.sleep(1.1)
    began = time.monotonic()
    assert HTTP.get(w.url + "/health").status_code == 503  # a stalled store too, answered in time
    assert time.monotonic() - began < 1.5
    proxy.stalled = False
    time.sleep(1.1)
    assert HTTP.get(w.url + "/health").json()["kv"] == "ok"


def _search(client: openai.OpenAI) -> Any:
    """A chat request that asks OpenAI to search the web (counted against `daily_web_searches`)."""
    return client.chat.completions.create(
        model="gpt-4o-mini",
        messages=HI,  # type: ignore[arg-type]
        extra_body={"web_search_options": {}},
    )


def test_a_request_refused_because_the_store_failed_during_admission_uses_up_no_quota(
    proxy: RedisProxy, make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """Its web search was counted, then the count of its request was lost with the connection (a 503): the
    web search is given back, so the day's one search and one request are still there. It was kept: the
    next request was a 429 `quota_exceeded` for the rest of the day."""
    gw = _setup(make_worker, fake_upstream, proxy, plan="metered")
    client = gw.openai()
    proxy.cut(b"/requests", lose="command")
    with pytest.raises(openai.APIStatusError) as err:
        _search(client)
    _assert_kv_unavailable_openai(err.value)
    assert proxy.cuts == 1
    _search(client)


def test_what_a_request_counted_is_given_back_once_the_store_is_back(
    proxy: RedisProxy, make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """Redis goes away after the request was counted, as its context is being stored: it is a 503, and its
    count, which Redis could not take back then, is given back once Redis is back (once: the day's one
    request is there again, not two). It was lost: the day's request was used up by a request refused."""
    gw = _setup(make_worker, fake_upstream, proxy, plan="metered")
    client = gw.openai()
    proxy.cut(b"payloads/", lose="command", then_refuse=True)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=HI,  # type: ignore[arg-type]
            extra_body={"trex": {"store_context": True}},
        )
    _assert_kv_unavailable_openai(err.value)
    proxy.accept()
    time.sleep(1)  # a few flushes: the give-back is applied at the first
    assert _counter(gw.worker, f"quota/{gw.key_id}/d", "/requests") == 0
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]


def test_a_session_write_the_store_cannot_take_is_one_warning_and_the_next_turn_is_served(
    proxy: RedisProxy,
    make_worker: Callable[..., InProcessWorker],
    fake_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
) -> None:
    """A session's state is written after the upstream accepted the turn; with Redis gone by then the write
    fails in the background: one warning line (it was a traceback, as for an unhandled error), and the next
    turn, with Redis back, is served (optimized afresh, as nothing was stored)."""
    gw = _setup(make_worker, fake_upstream, proxy)
    client = gw.openai()
    fake_upstream.enqueue("/v1/chat/completions", Reply.json("openai/chat_text.json", latency=0.6))
    turn = [{"role": "system", "content": "Be brief."}, *HI]
    going = threading.Timer(0.3, proxy.refuse)  # while the upstream works on the turn
    with caplog.at_level(logging.WARNING):
        going.start()
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=turn,  # type: ignore[arg-type]
            extra_headers={"X-Session-Id": "outage-1"},
        )
        going.join()
        time.sleep(0.3)  # the session write fails meanwhile
    assert not [r for r in caplog.records if r.exc_info], "an outage is no unhandled error"
    assert [r for r in caplog.records if r.name == "trex.wait_until" and "KV" in r.getMessage()]
    proxy.accept()
    answer = client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[*turn, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "again"}],  # type: ignore[arg-type]
        extra_headers={"X-Session-Id": "outage-1"},
    )
    assert answer.choices[0].message.content


def _held_micro(w: InProcessWorker, key_id: str) -> int:
    """The key's Compute Credits holds as they stand in the KV (every hour's counter)."""
    kv = w.app[GATEWAY].kv

    async def total() -> int:
        return sum([int(await kv.get(name) or 0) for name in await kv.names(f"credits_held/{key_id}/")])

    return int(w.call(total()))


@pytest.mark.parametrize("lose", ["reply", "command"])
def test_a_credit_hold_whose_outcome_is_unknown_is_settled_once(
    proxy: RedisProxy,
    make_worker: Callable[..., InProcessWorker],
    fake_upstream: FakeUpstream,
    lose: Literal["reply", "command"],
) -> None:
    """Redis applies a request's hold and its reply is lost (or the hold is lost on its way): the request is a
    503, and its hold, which it may or may not have made, is settled once Redis answers again — sent again
    under the id it went with (applied only if it was lost), then released: nothing held, never less. It
    stayed until its hour's counter lapsed (one to two hours), and every request that needed that much of
    the balance meanwhile was a 402."""
    gw = _setup(make_worker, fake_upstream, proxy, plan="credits")
    w = gw.worker
    w.call(w.app[GATEWAY].quotas.add_credits(gw.key_id, 0.01))  # $0.01: one hold of ~$0.008 at a time
    client = gw.openai()
    ask = {"model": "gpt-4.1", "messages": HI, "max_tokens": 1000}
    proxy.cut(b"credits_held/", lose=lose)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(**ask)  # type: ignore[call-overload]
    _assert_kv_unavailable_openai(err.value)
    assert proxy.cuts == 1
    # Settled: nothing waits to be sent and nothing is held, twice in a row a few flushes apart. (A hold lost
    # on its way holds nothing from the start; settling it adds it again, then takes it back: a request
    # admitted between those two round trips is a 402.)
    pending = w.app[GATEWAY].quotas.pending
    deadline, settled = time.monotonic() + 10, 0
    while settled < 2:
        assert time.monotonic() < deadline, (len(pending), _held_micro(w, gw.key_id))
        settled = settled + 1 if len(pending) == 0 and _held_micro(w, gw.key_id) == 0 else 0
        time.sleep(0.3)
    assert client.chat.completions.create(**ask).choices  # type: ignore[call-overload]


def test_a_sqlite_file_locked_by_another_process_delays_a_request_by_the_busy_timeout_once(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """Another process holds the SQLite file's write lock (a backup, a `sqlite3` shell left in a transaction):
    `/health` says so within its second, probe after probe, and a request that must write (its rate-limit
    count) waits the busy timeout once — 5 s — and, the limits failing open, is served. Each statement was
    retried eight more times after the busy timeout had run out, so the request took 45 s, every other KV
    call of the worker queued behind it, and each health probe queued one more."""
    # Limits under 128 are counted one request at a time: each request writes.
    limits = {"RATE_LIMIT_PER_MINUTE": 100, "RATE_LIMIT_IP_PER_MINUTE": 100}
    w = make_worker(limits, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    gw = with_key(w, fake_upstream)
    closed_after_test(gw)
    client = gw.openai()
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    path = w.config.kv_url.removeprefix("sqlite:///")
    holder = sqlite3.connect(path, isolation_level=None, check_same_thread=False)
    try:
        holder.execute("BEGIN IMMEDIATE")
        time.sleep(1.1)  # past the last health check's second
        for _ in range(3):
            began = time.monotonic()
            assert HTTP.get(w.url + "/health").status_code == 503
            assert time.monotonic() - began < 1.5
            time.sleep(1.1 - (time.monotonic() - began) % 1.1)
        began = time.monotonic()
        client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
        took = time.monotonic() - began
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    assert took < 8, took
    assert HTTP.get(w.url + "/health").status_code == 200


def test_a_kv_file_that_is_no_sqlite_database_is_a_clear_start_up_error(
    tmp_path: Path, config_path: Path
) -> None:
    """`kv_url` naming a file that is not a SQLite database (a wrong path, a damaged file): `trex dev` says it
    cannot open the KV and exits 1, as for any KV it cannot open. It died with SQLite's traceback."""
    bad = tmp_path / "not-a-database.sqlite3"
    bad.write_bytes(b"\x13\x37" * 4096)
    argv = ["dev", "--config", str(config_path), "--port", str(free_port()), "--kv-url", f"sqlite:///{bad}"]
    proc = subprocess.run(
        [sys.executable, "-m", "worker", *argv],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert proc.returncode == 1, proc.stderr
    assert "cannot open KV" in proc.stderr and "file is not a database" in proc.stderr
    assert "Traceback" not in proc.stderr


@pytest.mark.parametrize("fail", ["open", "closed"])
def test_rate_limits_the_store_cannot_count_fail_as_configured(
    proxy: RedisProxy, make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream, fail: str
) -> None:
    """Only the rate-limit count fails (Redis refuses it): `RATE_LIMIT_FAIL = "open"` (the default) serves
    the request, `"closed"` answers 503 `rate_limiter_unavailable` with `Retry-After` in the client's
    format, as the README says."""
    gw = _setup(make_worker, fake_upstream, proxy, RATE_LIMIT_FAIL=fail)
    claude = gw.anthropic()
    proxy.fail(b"rl/k/", "OOM command not allowed when used memory > 'maxmemory'.")
    if fail == "open":
        assert claude.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI).content  # type: ignore[arg-type]
        assert gw.worker.app[GATEWAY].limits.failures == 1
        return
    with pytest.raises(anthropic.APIStatusError) as err:
        claude.messages.create(model="claude-haiku-4-5", max_tokens=16, messages=HI)  # type: ignore[arg-type]
    assert err.value.status_code == 503 and err.value.response.headers["Retry-After"] == "1"
    assert err.value.response.json()["error"]["type"] == "overloaded_error"
    assert "Rate limits cannot be checked" in err.value.response.json()["error"]["message"]


def test_the_request_log_while_the_store_is_down_is_a_503_that_names_no_store(
    proxy: RedisProxy, make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """`GET /v1/logs` with the key still in its 1 s cache and Redis gone: a 503 `kv_unavailable`. It was a 400
    saying the cursor was not valid, with the KV's error in it — the store's address for any client."""
    gw = _setup(make_worker, fake_upstream, proxy)
    gw.openai().chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    proxy.refuse()
    r = HTTP.get(gw.worker.url + "/v1/logs", headers={"Authorization": f"Bearer {gw.key}"})
    assert r.status_code == 503, r.text
    assert r.json()["error"]["code"] == "kv_unavailable" and r.headers["Retry-After"] == "1"
    assert "redis" not in r.text.lower() and "127.0.0.1" not in r.text
    proxy.accept()
    r = HTTP.get(
        gw.worker.url + "/v1/logs", headers={"Authorization": f"Bearer {gw.key}"}, params={"cursor": "x"}
    )
    assert r.status_code == 400 and r.json()["error"]["param"] == "cursor"


def test_a_restarted_redis_that_lost_its_scripts_is_served_without_a_failure(
    proxy: RedisProxy, make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """A Redis restarted (or failed over) has none of the worker's Lua scripts loaded: the first script call
    is answered NOSCRIPT, and the script is loaded again and run, so the rate limits are counted as ever."""
    gw = _setup(make_worker, fake_upstream, proxy, RATE_LIMIT_PER_MINUTE=100, RATE_LIMIT_IP_PER_MINUTE=100)
    client = gw.openai()
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    proxy.fail(b"rl/k/", "NOSCRIPT No matching script. Please use EVAL.")
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    assert proxy.cuts == 1 and gw.worker.app[GATEWAY].limits.failures == 0
    assert _counter(gw.worker, f"rl/k/{gw.key_id}/", "") == 2


def test_a_session_the_store_cannot_read_is_served_optimized_afresh(
    proxy: RedisProxy, make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """The read of a session's state is lost with its connection: the turn is served, optimized as a new
    session (as the README says), not refused."""
    gw = _setup(make_worker, fake_upstream, proxy)
    client = gw.openai()
    turn = [{"role": "system", "content": "Be brief."}, *HI]
    session = {"X-Session-Id": "blip-1"}
    client.chat.completions.create(model="gpt-4o-mini", messages=turn, extra_headers=session)  # type: ignore[arg-type]
    time.sleep(0.3)  # its state is written behind the response
    proxy.cut(b"session/", lose="command")
    answer = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[*turn, {"role": "assistant", "content": "Hello!"}, {"role": "user", "content": "again"}],  # type: ignore[arg-type]
        extra_headers=session,
    )
    assert proxy.cuts == 1 and answer.parse().choices[0].message.content
    assert answer.headers["X-Trex-Session-Replayed"] == "0"


@pytest.mark.parametrize("how", ["deleted", "replaced"])
def test_a_sqlite_file_deleted_or_replaced_under_the_worker_is_a_503_not_lost_writes(
    make_worker: Callable[..., InProcessWorker],
    fake_upstream: FakeUpstream,
    caplog: pytest.LogCaptureFixture,
    how: str,
) -> None:
    """The KV file is removed (an operator cleaning up, a volume remounted) or swapped for another file while
    the worker runs: `/health` turns 503 and requests are refused with 503 `kv_unavailable`, with one error in
    the log naming the file, instead of every key, count and usage record going on into the unlinked file and
    being gone at the next start."""
    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    gw = with_key(w, fake_upstream)
    closed_after_test(gw)
    client = gw.openai()
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    assert HTTP.get(w.url + "/health").status_code == 200
    path = Path(w.config.kv_url.removeprefix("sqlite:///"))
    with caplog.at_level(logging.WARNING):
        for leftover in path.parent.glob(path.name + "*"):  # the database, its -wal and -shm files
            leftover.unlink()
        if how == "replaced":
            sqlite3.connect(path).close()
        time.sleep(1.1)  # past the key's 1 s cache and the store's once-a-second look at its file
        deadline = time.monotonic() + 5
        while (health := HTTP.get(w.url + "/health")).status_code == 200:  # its own answer is kept 1 s
            assert time.monotonic() < deadline, "the deleted file was not noticed"
            time.sleep(0.2)
        assert health.status_code == 503 and health.json()["kv"] == "unavailable"
        with pytest.raises(openai.InternalServerError) as refused:
            client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
        assert refused.value.status_code == 503
        assert refused.value.code == "kv_unavailable"
        assert HTTP.get(w.url + "/health").status_code == 503
    errors = [r.getMessage() for r in caplog.records if r.levelno >= logging.ERROR]
    assert len(errors) == 1 and f"was {how}" in errors[0] and str(path) in errors[0], errors


@pytest.mark.parametrize("lose", ["reply", "command"])
def test_a_rate_limit_count_whose_reply_was_lost_is_taken_back_once(
    proxy: RedisProxy,
    make_worker: Callable[..., InProcessWorker],
    fake_upstream: FakeUpstream,
    lose: Literal["reply", "command"],
) -> None:
    """Redis counts a request against its key's and its IP's per-minute limits and the reply is lost (or the
    count is lost on its way): the request is served uncounted (the limits fail open), and once Redis answers
    the count is settled — sent again under the round trip's token (applied only if it was lost), then taken
    back — so the window holds what was counted for the requests served with a count, once. It stayed in the
    window: one request of the minute's limit used up by a request the limiter never counted."""
    limits = {"RATE_LIMIT_PER_MINUTE": 100, "RATE_LIMIT_IP_PER_MINUTE": 100}  # counted one request at a time
    gw = _setup(make_worker, fake_upstream, proxy, **limits)
    client = gw.openai()
    minute = int(time.time() // 60)
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    proxy.cut(b"rl/k/", lose=lose)
    assert client.chat.completions.create(model="gpt-4o-mini", messages=HI).choices  # type: ignore[arg-type]
    assert proxy.cuts == 1 and gw.worker.app[GATEWAY].limits.failures == 1
    if int(time.time() // 60) != minute:
        pytest.skip("the minute turned: the counts are in two windows")
    window = f"rl/k/{gw.key_id}/{minute}"
    gateway = gw.worker.app[GATEWAY]

    def settled() -> int:
        """The window's count once nothing waits to be settled, seen twice a flush apart (a pass sends its
        batches one after the other: in between, the settled count was sent again but not yet taken back)."""
        deadline, seen = time.monotonic() + 5, None
        while True:
            count = None if len(gateway.quotas.pending) else int(gw.worker.call(gateway.kv.get(window)))
            if count is not None and count == seen:
                return count
            assert time.monotonic() < deadline, count
            seen = count
            time.sleep(0.3)  # USAGE_FLUSH_SECONDS is 0.2 here

    assert settled() == 1
    client.chat.completions.create(model="gpt-4o-mini", messages=HI)  # type: ignore[arg-type]
    if int(time.time() // 60) == minute:
        assert settled() == 2
