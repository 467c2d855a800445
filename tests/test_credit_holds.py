"""Compute Credits are held before a request goes upstream, so requests in flight together cannot overdraw a
balance: of concurrent requests on a small balance only as many as it covers are served, the rest are 402s in
the client's format; holds are shared by instances on one SQLite file or one Redis, released when a request
fails, and settled (released, the actual cost debited) when its usage is reconciled, streams included.
Before, admission only checked that the balance was positive and every concurrent request passed."""

from __future__ import annotations

import copy
import threading
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import openai
import pytest

from tests import redis_target
from tests.conftest import MASTER_KEY, GatewaySetup, closed_after_test, with_key
from tests.fakes.redis_proxy import RedisProxy
from tests.fakes.upstream import FakeUpstream, Reply, fixture_json
from tests.harness import InProcessWorker, flush_redis_db
from tests.test_misbehaving_upstreams import connections_held
from tests.test_usage import wait_final
from worker.appkeys import GATEWAY

PLANS = """
[plans.credits]
credit_models = ["gpt-4.1*", "claude-opus-*", "text-embedding-3-large"]
models = ["gpt-4o-mini", "gpt-4.1*", "claude-opus-*", "text-embedding-3-large"]
"""
MESSAGES = [{"role": "user", "content": "hi"}]
REDIS = redis_target.url(11)
# gpt-4.1: $2 input, $8 output per 1M tokens; claude-opus-4-7: $5 and $25. Micro-dollars per token, then.
OUTPUT_MICRO = {"chat": 8, "messages": 25}
MODEL = {"chat": "gpt-4.1", "messages": "claude-opus-4-7"}


@pytest.fixture
def redis_db() -> Iterator[str]:
    flush_redis_db(REDIS)
    yield REDIS
    flush_redis_db(REDIS)


def _workers(
    make_worker: Callable[..., InProcessWorker],
    fake: FakeUpstream,
    count: int = 1,
    kv_url: str | None = None,
    **variables: Any,
) -> list[GatewaySetup]:
    """`count` workers on one KV (the test's SQLite file, or `kv_url`), one key on the `credits` plan made on
    the first and used on all of them."""
    local = {"kv_url": kv_url} if kv_url else None
    dev_vars = {"TREX_MASTER_KEY": MASTER_KEY}
    workers = [make_worker(variables, local=local, dev_vars=dev_vars, extra=PLANS)]
    first = with_key(workers[0], fake, plan="credits")
    setups = [first]
    for _ in range(count - 1):
        worker = make_worker(variables, local=local, dev_vars=dev_vars, extra=PLANS)
        setups.append(GatewaySetup(worker, fake, first.key, first.key_id))
    for setup in setups:
        closed_after_test(setup)
    return setups


def _grant(setup: GatewaySetup, usd: float) -> None:
    setup.worker.call(setup.worker.app[GATEWAY].quotas.add_credits(setup.key_id, usd))


def _balance_micro(setup: GatewaySetup) -> int:
    raw = setup.worker.call(setup.worker.app[GATEWAY].kv.get(f"credits/{setup.key_id}"))
    return int(raw or 0)


def _held_micro(setup: GatewaySetup) -> int:
    """The key's holds, as they stand in the KV (every hour's counter)."""
    kv = setup.worker.app[GATEWAY].kv

    async def total() -> int:
        names = [k.name for k in (await kv.list(prefix=f"credits_held/{setup.key_id}/")).keys]
        return sum([int(await kv.get(name) or 0) for name in names])

    return int(setup.worker.call(total()))


def _settled(setup: GatewaySetup, balance: int) -> None:
    """Wait until the charges are applied: nothing held and the balance at `balance` (micro-dollars)."""
    deadline = time.monotonic() + 10
    while (_held_micro(setup), _balance_micro(setup)) != (0, balance):
        assert time.monotonic() < deadline, (_held_micro(setup), _balance_micro(setup), balance)
        time.sleep(0.05)


def _chat_answer(output_tokens: int) -> dict[str, Any]:
    """A chat completion billed 1 input token and `output_tokens` output tokens: what it holds, nearly."""
    doc = copy.deepcopy(fixture_json("openai/chat_text.json"))
    doc["model"] = "gpt-4.1"
    doc["usage"] = {"prompt_tokens": 1, "completion_tokens": output_tokens, "total_tokens": output_tokens + 1}
    return dict(doc)


def _messages_answer(output_tokens: int) -> dict[str, Any]:
    doc = copy.deepcopy(fixture_json("anthropic/message_text.json"))
    doc["model"] = "claude-opus-4-7"
    doc["usage"] = {"input_tokens": 1, "output_tokens": output_tokens}
    return dict(doc)


def _ask(setup: GatewaySetup, fmt: str, max_tokens: int) -> tuple[int, Any]:
    """(status, event id) of a 200, (402, the error) of a refusal."""
    try:
        if fmt == "chat":
            raw: Any = setup.openai().chat.completions.with_raw_response.create(
                model=MODEL[fmt],
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=max_tokens,
            )
        else:
            raw = setup.anthropic().messages.with_raw_response.create(
                model=MODEL[fmt],
                max_tokens=max_tokens,
                messages=MESSAGES,  # type: ignore[arg-type]
            )
    except (openai.APIStatusError, anthropic.APIStatusError) as exc:
        return exc.status_code, exc
    return raw.status_code, raw.headers["X-Trex-Usage-Event-Id"]


@pytest.mark.parametrize(("backend", "fmt"), [("sqlite", "chat"), ("redis", "messages")])
def test_concurrent_requests_on_a_small_balance_are_served_only_as_far_as_it_goes(
    make_worker: Callable[..., InProcessWorker],
    fake_upstream: FakeUpstream,
    request: pytest.FixtureRequest,
    backend: str,
    fmt: str,
) -> None:
    """Ten requests at once, spread over two workers sharing the KV, each able to cost about $0.008 (chat,
    1,000 output tokens) or $0.01 (Messages, 400): a balance covering three (two) serves three (two), the
    others are 402 `insufficient_balance` in the client's shape, saying what fits; billed their whole output,
    the served ones leave the balance at or above zero, and nothing held."""
    kv_url = request.getfixturevalue("redis_db") if backend == "redis" else None
    setups = _workers(make_worker, fake_upstream, 2, kv_url)
    max_tokens, fits = (1000, 3) if fmt == "chat" else (400, 2)
    hold_output = max_tokens * OUTPUT_MICRO[fmt]
    start = fits * hold_output + hold_output // 2  # room for the inputs, not for one more request
    _grant(setups[0], start / 1e6)
    if fmt == "chat":
        fake_upstream.set("/v1/chat/completions", Reply.json(_chat_answer(max_tokens), latency=0.5))
    else:
        fake_upstream.set("/v1/messages", Reply.json(_messages_answer(max_tokens), latency=0.5))

    with ThreadPoolExecutor(10) as pool:
        results = list(pool.map(lambda i: _ask(setups[i % 2], fmt, max_tokens), range(10)))

    served = [(i, event) for i, (status, event) in enumerate(results) if status == 200]
    refused = [error for status, error in results if status == 402]
    assert (len(served), len(refused)) == (fits, 10 - fits), [status for status, _ in results]
    for error in refused:
        if fmt == "chat":
            assert isinstance(error, openai.APIStatusError)
            assert error.code == "insufficient_balance" and error.type == "insufficient_quota"
        else:
            assert isinstance(error, anthropic.APIStatusError)
            assert error.body["error"]["type"] == "billing_error"  # type: ignore[index]
        assert "draws on Compute Credits" in error.message and "available" in error.message
    # The first refused saw the served ones' holds alone, and says what would fit beside them (the others saw
    # its hold too, until it was taken back, and may find nothing left).
    affordable = [e for e in refused if "can only afford" in e.message]
    assert affordable and all(
        f"You requested up to {max_tokens:,} output tokens, but can only afford" in e.message
        for e in affordable
    )
    if fmt == "chat":
        assert {e.param for e in affordable} == {"max_tokens"}
    spent = 0
    for i, event_id in served:
        event = wait_final(setups[i % 2], event_id)
        assert event["billed"]["output_tokens"] == max_tokens
        spent += round(event["actual_cost_usd"] * 1e6)
    _settled(setups[0], start - spent)
    assert start - spent >= 0
    # What the 402 said would fit does: a request asking for less output than what is left covers.
    left = (start - spent) // OUTPUT_MICRO[fmt] - 100
    fake_upstream.set(
        "/v1/chat/completions" if fmt == "chat" else "/v1/messages",
        Reply.json(_chat_answer(left) if fmt == "chat" else _messages_answer(left)),
    )
    status, _ = _ask(setups[1], fmt, left)
    assert status == 200


def test_a_failed_request_releases_its_hold(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """A balance of $0.01 covers one request able to cost $0.008: one that fails upstream leaves it covering
    the next, which spends most of it; the one after that does not fit."""
    (setup,) = _workers(make_worker, fake_upstream)
    _grant(setup, 0.01)
    fake_upstream.enqueue(
        "/v1/chat/completions", Reply.json({"error": {"message": "boom", "type": "server_error"}}, status=500)
    )
    fake_upstream.set("/v1/chat/completions", Reply.json(_chat_answer(1000)))
    status, error = _ask(setup, "chat", 1000)
    assert status == 500
    failed = wait_final(setup, error.response.headers["X-Trex-Usage-Event-Id"])
    assert failed["actual_cost_usd"] == 0
    _settled(setup, 10_000)  # released, nothing debited
    status, event_id = _ask(setup, "chat", 1000)
    assert status == 200
    spent = round(wait_final(setup, event_id)["actual_cost_usd"] * 1e6)
    _settled(setup, 10_000 - spent)
    status, error = _ask(setup, "chat", 1000)
    assert status == 402 and error.code == "insufficient_balance"


def test_a_stream_holds_while_it_runs_and_settles_when_done(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """While a stream runs its hold counts against the balance (a second request that would not fit beside it
    is a 402); once it ends its hold is released and its cost debited, and the balance covers a request."""
    (setup,) = _workers(make_worker, fake_upstream)
    _grant(setup, 0.01)
    go_on = threading.Event()
    fake_upstream.enqueue(
        "/v1/chat/completions", Reply.stream("openai/chat_text.sse", pause_after=3, resume=go_on)
    )
    client = setup.openai()
    stream = client.chat.completions.create(
        model="gpt-4.1",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=1000,
        stream=True,
        stream_options={"include_usage": True},
    )
    chunks = iter(stream)
    next(chunks)  # the stream has begun
    held = _held_micro(setup)
    assert 8000 < held < 8200  # 1,000 output tokens at $8/M and the input at $2/M
    status, error = _ask(setup, "chat", 1000)
    assert status == 402 and error.code == "insufficient_balance"
    assert "$0.01 balance" in error.message
    go_on.set()
    usage = [chunk.usage for chunk in chunks if chunk.usage is not None]
    assert usage and usage[0].completion_tokens == 10
    stream.close()
    event_id = stream.response.headers["X-Trex-Usage-Event-Id"]
    spent = round(wait_final(setup, event_id)["actual_cost_usd"] * 1e6)
    assert 0 < spent < held
    _settled(setup, 10_000 - spent)
    fake_upstream.set("/v1/chat/completions", Reply.json(_chat_answer(1000)))
    assert _ask(setup, "chat", 1000)[0] == 200


def test_a_fallback_holds_for_the_model_that_serves_it(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """A quota model's request falling back to a credit model holds what the fallback may cost: with $0.005,
    a fallback able to cost $0.008 is skipped (the primary's 429 is the answer); one able to cost $0.004 serves,
    and the balance stays at or above zero."""
    (setup,) = _workers(make_worker, fake_upstream, UPSTREAM_RETRIES=0)
    _grant(setup, 0.005)
    fallback = {"routing": {"fallbacks": [{"provider": "openai", "model": "gpt-4.1"}]}}

    def ask(max_tokens: int) -> Any:
        fake_upstream.enqueue(
            "/v1/chat/completions",
            Reply.json("openai/error_rate_limit.json", status=429),
            Reply.json(_chat_answer(max_tokens)),
        )
        return setup.openai().chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=max_tokens,
            extra_body={"trex": fallback},
        )

    with pytest.raises(openai.RateLimitError) as err:
        ask(1000)
    event = wait_final(setup, err.value.response.headers["X-Trex-Usage-Event-Id"])
    assert "can only afford" in event["attempts"][-1]["error"]
    fake_upstream.reset()
    raw = ask(500)
    assert raw.headers["X-Trex-Upstream-Model"] == "gpt-4.1"
    spent = round(wait_final(setup, raw.headers["X-Trex-Usage-Event-Id"])["actual_cost_usd"] * 1e6)
    assert 4000 <= spent <= 5000
    _settled(setup, 5000 - spent)


def test_requests_refused_after_their_hold_release_it(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """A request refused once its hold is made — its context over the day's storage (429), its model's breaker
    open (503) — releases it, once: the balance of $0.01 still covers a request able to cost $0.008 (which
    spends most of it; the one after that does not fit), and nothing is left held, nor held below zero."""
    (setup,) = _workers(
        make_worker, fake_upstream, PAYLOAD_BYTES_PER_DAY=100, BREAKER_FAILURES=1, UPSTREAM_RETRIES=0
    )
    _grant(setup, 0.01)
    client = setup.openai()
    with pytest.raises(openai.RateLimitError) as over:
        client.chat.completions.create(
            model="gpt-4.1",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=1000,
            extra_body={"trex": {"store_context": True}},
        )
    assert over.value.code == "storage_quota_exceeded"
    _settled(setup, 10_000)
    fake_upstream.enqueue("/v1/chat/completions", Reply.json({"error": {"message": "down"}}, status=503))
    assert _ask(setup, "chat", 1000)[0] == 503  # the upstream's failure: it opens the breaker
    _settled(setup, 10_000)  # released when its usage is reconciled
    status, error = _ask(setup, "chat", 1000)
    assert status == 503 and error.code == "provider_unavailable"
    wait_final(setup, error.response.headers["X-Trex-Usage-Event-Id"])
    _settled(setup, 10_000)
    gw = setup.worker.app[GATEWAY]
    gw.breakers._states.clear()  # the route recovers (as after its cooldown)
    setup.worker.call(gw.kv.delete("health/openai/gpt-4.1/open"))
    fake_upstream.set("/v1/chat/completions", Reply.json(_chat_answer(1000)))
    status, event_id = _ask(setup, "chat", 1000)
    assert status == 200
    spent = round(wait_final(setup, event_id)["actual_cost_usd"] * 1e6)
    _settled(setup, 10_000 - spent)
    assert _ask(setup, "chat", 1000)[0] == 402


def test_embeddings_on_credits_hold_their_input(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """An embeddings request on credits holds its input's cost (its output costs nothing): of two at once, each
    of about 2,000 input tokens at $0.13/M (260 micro-dollars), a balance of 400 covers one; the other is a 402
    in OpenAI's shape. Once settled nothing is held and the balance covers the next."""
    (setup,) = _workers(make_worker, fake_upstream)
    _grant(setup, 0.0004)
    fake_upstream.set("/v1/embeddings", Reply.json(fixture_json("openai/embeddings.json"), latency=0.5))
    text = "ledger " * 2000

    def embed(_: int) -> tuple[int, Any]:
        try:
            raw = setup.openai().embeddings.with_raw_response.create(
                model="text-embedding-3-large", input=text
            )
        except openai.APIStatusError as exc:
            return exc.status_code, exc
        return raw.status_code, raw.headers["X-Trex-Usage-Event-Id"]

    with ThreadPoolExecutor(2) as pool:
        results = list(pool.map(embed, range(2)))
    assert sorted(status for status, _ in results) == [200, 402], results
    ((_, event_id),) = [r for r in results if r[0] == 200]
    ((_, error),) = [r for r in results if r[0] == 402]
    assert error.code == "insufficient_balance" and "available" in error.message
    spent = round(wait_final(setup, event_id)["actual_cost_usd"] * 1e6)
    _settled(setup, 400 - spent)
    assert embed(0)[0] == 200


def test_the_402_of_an_overdrawn_key_names_its_balance_and_no_output_an_embedding_cannot_have(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """An embeddings 402 says what the input may cost, without an "up to 0 output tokens at $0/M" clause, and a
    balance below zero reads as -$0.03, the way an amount owed is written."""
    (setup,) = _workers(make_worker, fake_upstream)
    _grant(setup, -0.03)
    fake_upstream.set("/v1/embeddings", Reply.json(fixture_json("openai/embeddings.json")))
    with pytest.raises(openai.APIStatusError) as refused:
        setup.openai().embeddings.create(model="text-embedding-3-large", input="ledger " * 2000)
    message = refused.value.message
    assert refused.value.status_code == 402 and refused.value.code == "insufficient_balance"
    assert "input tokens at $0.13/M), " in message, message
    assert "output tokens" not in message, message
    assert "$0.00 available (-$0.03 balance)" in message, message


def test_a_chat_request_for_n_choices_holds_the_output_of_all_of_them(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """OpenAI bills every one of a chat request's `n` choices: with $0.01, one 1,000-token answer at $8/M fits
    but five do not, so `n=5` is a 402 saying how many output tokens per choice would fit (before, it was
    served and took the balance to -$0.03). Asked with that many, it is served and the balance stays >= 0."""
    (setup,) = _workers(make_worker, fake_upstream)
    _grant(setup, 0.01)
    fake_upstream.set("/v1/chat/completions", Reply.json(_chat_answer(5000)))
    client = setup.openai()
    with pytest.raises(openai.APIStatusError) as refused:
        client.chat.completions.create(
            model="gpt-4.1",
            messages=MESSAGES,  # type: ignore[arg-type]
            max_tokens=1000,
            n=5,
        )
    message = refused.value.message
    assert refused.value.status_code == 402 and refused.value.code == "insufficient_balance", message
    assert "5,000 output tokens (5 choices of 1,000) at $8/M" in message, message
    assert "You requested up to 1,000 output tokens per choice, but can only afford" in message, message
    affordable = int(message.split("can only afford ")[1].split(":")[0].replace(",", ""))
    assert 240 <= affordable <= 250  # ($0.01 less the input) / ($8/M x 5)
    _settled(setup, 10_000)
    fake_upstream.set("/v1/chat/completions", Reply.json(_chat_answer(5 * affordable)))
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4.1",
        messages=MESSAGES,  # type: ignore[arg-type]
        max_tokens=affordable,
        n=5,
    )
    assert raw.status_code == 200
    spent = round(wait_final(setup, raw.headers["X-Trex-Usage-Event-Id"])["actual_cost_usd"] * 1e6)
    _settled(setup, 10_000 - spent)
    assert 10_000 - spent >= 0


def test_a_kv_failure_at_a_fallbacks_hold_lets_the_failed_answers_connection_go(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream, proxy: RedisProxy
) -> None:
    """The primary (a quota model) answers 503; its fallback draws on credits, and the KV fails as its hold is
    made: the client gets a 503, and the primary's answer, never read, does not keep its upstream connection
    (before, it was left acquired from the pool)."""
    flush_redis_db(REDIS)
    rest = threading.Event()
    try:
        (setup,) = _workers(make_worker, fake_upstream, kv_url=proxy.url(11), UPSTREAM_RETRIES=0)
        _grant(setup, 1)
        # A 503 whose body has not all come when the fallback is tried: its connection is still in use.
        error = b'data: {"error": {"message": "down", "type": "server_error"}}\n\n'
        fake_upstream.enqueue(
            "/v1/chat/completions", Reply(status=503, sse=[error, error], pause_after=1, resume=rest)
        )
        proxy.cut(b"credits_held/", lose="command")
        with pytest.raises(openai.APIStatusError) as failed:
            setup.openai().chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                max_tokens=100,
                extra_body={"trex": {"routing": {"fallbacks": [{"provider": "openai", "model": "gpt-4.1"}]}}},
            )
        assert failed.value.status_code == 503 and proxy.cuts == 1, failed.value.message
        assert len(fake_upstream.received) == 1  # the fallback was never sent
        assert connections_held(setup) == 0
    finally:
        rest.set()
        flush_redis_db(REDIS)
