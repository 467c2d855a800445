"""A request that fails after its usage event began (the KV failing between two attempts) ends its event:
the event is final, nothing billed, never left pending in memory and in the KV for the retention period."""

from __future__ import annotations

import threading
import time
from collections.abc import Callable
from typing import Any

import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEYS, closed_after_test
from tests.fakes.redis_proxy import RedisProxy
from tests.fakes.upstream import FakeUpstream, Reply
from tests.harness import InProcessWorker
from tests.test_usage import HTTP
from worker.accounting.events import PREFIX
from worker.appkeys import GATEWAY

DB = 13


def _events(w: InProcessWorker, key_id: str, token: str) -> list[dict[str, Any]]:
    """The key's usage events, as `GET /v1/usage/events/{id}` shows them."""
    names = w.call(w.app[GATEWAY].kv.names(f"{PREFIX}{key_id}/"))
    auth = {"Authorization": f"Bearer {token}"}
    return [
        HTTP.get(f"{w.url}/v1/usage/events/{name.rsplit('/', 1)[1]}", headers=auth).json() for name in names
    ]


def test_a_kv_failure_between_attempts_ends_the_event_as_failed(
    proxy: RedisProxy, make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(
        {"UPSTREAM_RETRIES": 0, "USAGE_FLUSH_SECONDS": 0.2},
        local={"kv_url": proxy.url(DB)},
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
    )
    keys = w.app[GATEWAY].keys
    record, token = w.call(keys.create("fails-between-attempts"))
    for provider in ("openai", "anthropic"):
        w.call(keys.bind(record.id, provider, UPSTREAM_KEYS[provider]))
    client = closed_after_test(openai.OpenAI(api_key=token, base_url=w.url + "/v1", max_retries=0))
    hi = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=hi)  # type: ignore[arg-type]
    # OpenAI answers 503 after a while; meanwhile Redis stops answering, so the fallback's first read of its
    # Anthropic key (never needed before, so not cached) fails and the request ends in a KV error.
    error = {"error": {"message": "overloaded", "type": "server_error", "code": None, "param": None}}
    fake_upstream.set("/v1/chat/completions", Reply.json(error, status=503, latency=0.8))
    stall = threading.Timer(0.3, lambda: setattr(proxy, "stalled", True))
    stall.start()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(
            model="gpt-4o-mini",
            messages=hi,  # type: ignore[arg-type]
            extra_body={
                "trex": {"routing": {"fallbacks": [{"provider": "anthropic", "model": "claude-haiku-4-5"}]}}
            },
        )
    assert err.value.status_code == 503
    proxy.stalled = False
    deadline = time.monotonic() + 10
    while True:
        events = _events(w, record.id, token)
        pending = [e for e in events if e["status"] != "final"]
        if len(events) == 2 and not pending:
            break
        assert time.monotonic() < deadline, f"an event stayed pending: {pending}"
        time.sleep(0.1)
    failed = next(e for e in events if e["http_status"] != 200)
    assert failed["outcome"] == "upstream_failed" and failed["http_status"] == 503
    assert failed["billed"]["input_tokens"] == 0
