"""What a client may state in `trex_accounting`, and what it may not change.

The upstream's own usage (here: 1,300 input tokens of which 1,024 cached, 46 output) is what quotas count and
credits pay for; a client's `actual_usage_override` changes how the event is priced, never what the key is
charged, and a client baseline is priced with the same cache split as the billed usage.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any

import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEYS, GatewaySetup
from tests.fakes.upstream import FakeUpstream, fixture_json
from tests.harness import InProcessWorker
from tests.test_usage import HTTP, wait_final
from worker.appkeys import GATEWAY

USAGE = fixture_json("openai/chat_text.json")["usage"]
UPSTREAM_TOKENS = USAGE["prompt_tokens"] + USAGE["completion_tokens"]
PLANS = """
[plans.metered]
daily_tokens = 1000000
[plans.credits]
credit_models = ["gpt-4.1*"]
"""
OFF = {"optimize": {"mode": "off"}}


def _send(setup: GatewaySetup, model: str, accounting: dict[str, Any] | None = None) -> dict[str, Any]:
    body: dict[str, Any] = {"model": model, "messages": [{"role": "user", "content": "hi"}], "trex": OFF}
    if accounting is not None:
        body["trex_accounting"] = accounting
    r = HTTP.post(
        setup.worker.url + "/v1/chat/completions", json=body, headers={"Authorization": f"Bearer {setup.key}"}
    )
    assert r.status_code == 200, r.text
    return wait_final(setup, r.headers["X-Trex-Usage-Event-Id"])


def _on_plan(make_worker: Callable[..., InProcessWorker], fake: FakeUpstream, plan: str) -> GatewaySetup:
    worker = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY}, extra=PLANS)
    record, token = worker.call(worker.app[GATEWAY].keys.create("c", plan=plan))
    worker.call(worker.app[GATEWAY].keys.bind(record.id, "openai", UPSTREAM_KEYS["openai"]))
    return GatewaySetup(worker, fake, token, record.id)


def test_an_override_of_the_input_alone_keeps_the_cached_tokens_inside_it(gateway: GatewaySetup) -> None:
    event = _send(gateway, "gpt-4o-mini", {"actual_usage_override": {"input_tokens": 100}})
    billed = event["billed"]
    assert (billed["input_tokens"], billed["cached_input_tokens"]) == (100, 100)
    # Priced as 100 cached input tokens and 46 output tokens (gpt-4o-mini: $0.075 cached, $0.60 out per 1M).
    assert event["actual_cost_usd"] == pytest.approx((100 * 0.075 + 46 * 0.60) / 1e6)


def test_a_client_baseline_equal_to_the_billed_usage_saves_nothing(gateway: GatewaySetup) -> None:
    baseline = {"input_tokens": USAGE["prompt_tokens"], "output_tokens": USAGE["completion_tokens"]}
    event = _send(gateway, "gpt-4o-mini", {"baseline_usage": baseline})
    assert event["savings_tokens"] == 0
    assert event["savings_usd"] == pytest.approx(0.0)  # the cache discount is not a saving
    assert event["baseline"]["cost_usd"] == pytest.approx(event["actual_cost_usd"])


def test_an_override_does_not_lower_what_the_token_quota_counts(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    setup = _on_plan(make_worker, fake_upstream, "metered")
    event = _send(
        setup, "gpt-4o-mini", {"actual_usage_override": {"input_tokens": 0, "cached_input_tokens": 0}}
    )
    assert event["billed"]["input_tokens"] == 0  # the event is priced as the client says
    counter = f"quota/{setup.key_id}/d{time.strftime('%Y%m%d', time.gmtime())}/tokens"
    deadline = time.monotonic() + 5
    while (used := setup.worker.call(setup.worker.app[GATEWAY].kv.get(counter))) is None:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert int(used) == UPSTREAM_TOKENS  # the quota counts what the upstream billed


def test_an_override_does_not_lower_the_credits_a_request_costs(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    setup = _on_plan(make_worker, fake_upstream, "credits")
    quotas = setup.worker.app[GATEWAY].quotas
    setup.worker.call(quotas.add_credits(setup.key_id, 1.0))

    def debit(accounting: dict[str, Any] | None) -> float:
        before = setup.worker.call(quotas.balance(setup.key_id))
        _send(setup, "gpt-4.1", accounting)
        deadline = time.monotonic() + 5
        while (after := setup.worker.call(quotas.balance(setup.key_id))) == before:
            assert time.monotonic() < deadline
            time.sleep(0.05)
        return float(before - after)

    plain = debit(None)
    assert plain > 0
    assert debit({"actual_usage_override": {"input_tokens": 0, "cached_input_tokens": 0}}) == pytest.approx(
        plain
    )
