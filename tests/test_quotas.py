"""Plan quotas, model lists and Compute Credits through the worker."""

from __future__ import annotations

import contextlib
import json
import time
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEYS, GatewaySetup, closed_after_test
from tests.fakes.upstream import FakeUpstream, Reply, fixture_json
from tests.harness import InProcessWorker
from tests.test_admin import ADMIN, call
from tests.test_cli import trex
from tests.test_usage import HTTP, wait_final
from worker.appkeys import CONFIG, GATEWAY
from worker.config import ConfigError
from worker.quotas import parse_quota_plans

PLANS = """
[plans.free]
daily_requests = 3
models = ["gpt-4o-mini", "gpt-4.1*", "claude-*"]
credit_models = ["gpt-4.1*"]
[plans.metered]
daily_tokens = 2000
[plans.search]
daily_web_searches = 2
credit_above_input_tokens = 60
[plans.nosearch]
daily_web_searches = 0
[plans.tiers]
credit_premium = true
[plans.pinned]
credit_pinned = true
[plans.busy]
credit_above_concurrent = 1
[plans.weekly]
daily_requests = 3
weekly_requests = 10
[plans.searchy]
daily_requests = 2
daily_web_searches = 5
[plans.weeklymetered]
weekly_tokens = 2000
"""
MESSAGES = [{"role": "user", "content": "hi"}]


def _setup(
    make_worker: Callable[..., InProcessWorker], fake: FakeUpstream, plan: str, **variables: Any
) -> GatewaySetup:
    worker = make_worker(
        variables, dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN}, extra=PLANS
    )
    keys = worker.app[GATEWAY].keys
    record, token = worker.call(keys.create("q", plan=plan))
    for provider, secret in UPSTREAM_KEYS.items():
        worker.call(keys.bind(record.id, provider, secret))
    setup = GatewaySetup(worker, fake, token, record.id)
    closed_after_test(setup)
    return setup


def _seconds_to_utc_midnight() -> int:
    now = time.time()
    return 86400 - int(now) % 86400


def test_daily_request_quota_then_429_with_retry_after(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    setup = _setup(make_worker, fake_upstream, "free")
    client = setup.openai()
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    before = len(fake_upstream.received)
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.code == "quota_exceeded"
    retry_after = int(err.value.response.headers["Retry-After"])
    assert abs(retry_after - _seconds_to_utc_midnight()) <= 2
    with pytest.raises(anthropic.RateLimitError) as aerr:  # the same quota, in Anthropic's error shape
        setup.anthropic().messages.create(model="claude-sonnet-4-6", max_tokens=5, messages=MESSAGES)  # type: ignore[arg-type]
    assert aerr.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert len(fake_upstream.received) == before  # nothing reached the upstream


def test_models_outside_the_plan_are_403(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    setup = _setup(make_worker, fake_upstream, "free")
    with pytest.raises(openai.PermissionDeniedError) as err:
        setup.openai().chat.completions.create(model="gpt-5.5", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.code == "model_not_allowed" and "free" in err.value.message


def test_credit_models_need_a_balance_and_are_debited_their_cost(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    setup = _setup(make_worker, fake_upstream, "free")
    client = setup.openai()
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4.1", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.status_code == 402 and err.value.code == "insufficient_balance"
    status, doc = call(setup.worker, "POST", f"/admin/v1/keys/{setup.key_id}/credits", {"amount_usd": 1.5})
    assert status == 200 and doc["balance_usd"] == 1.5
    raw = client.chat.completions.with_raw_response.create(model="gpt-4.1", messages=MESSAGES)  # type: ignore[arg-type]
    event = wait_final(setup, raw.headers["X-Trex-Usage-Event-Id"])
    balance = call(setup.worker, "GET", f"/admin/v1/keys/{setup.key_id}/credits")[1]["balance_usd"]
    assert balance == pytest.approx(1.5 - event["actual_cost_usd"], abs=1e-6)
    # Credit models do not draw on the request quota: three more quota requests are still admitted.
    for _ in range(3):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    config = setup.worker.app[CONFIG].source
    shown = trex("credits", "show", setup.key_id, "--config", config, "--json")
    assert shown.returncode == 0 and json.loads(shown.stdout)["balance_usd"] == pytest.approx(balance)
    added = trex("credits", "add", setup.key_id, "2", "--config", config)
    assert added.returncode == 0 and f"${balance + 2:,.6f}" in added.stdout.decode()
    assert trex("credits", "add", "key_missing", "1", "--config", config).returncode == 1


def _third_request_over_2000_tokens(setup: GatewaySetup) -> openai.RateLimitError:
    """Two requests on a 2000-token quota (0 used, then one request's tokens: both under it when admitted),
    each reconciled; the third is refused: its error."""
    usage: dict[str, Any] = fixture_json("openai/chat_text.json")["usage"]
    per_request = usage["prompt_tokens"] + usage["completion_tokens"]
    assert per_request < 2000 < 2 * per_request
    client = setup.openai()
    for _ in range(2):
        raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        wait_final(setup, raw.headers["X-Trex-Usage-Event-Id"])
    with pytest.raises(openai.RateLimitError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    return err.value


def test_token_quota_counts_billed_tokens_at_reconciliation(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    setup = _setup(make_worker, fake_upstream, "metered")
    err = _third_request_over_2000_tokens(setup)
    assert err.code == "quota_exceeded" and "token" in err.message
    # Every quota counter expires after its window (the first read of the token counter created it, and a
    # counter keeps the expiration it was created with: it used to be created without one, forever).
    kv = setup.worker.app[GATEWAY].kv
    counters = setup.worker.call(kv.list(prefix=f"quota/{setup.key_id}/")).keys
    assert {c.name.rsplit("/", 1)[1] for c in counters} == {"tokens"}
    now = time.time()
    assert all(c.expiration is not None and now < c.expiration <= now + 2 * 86400 + 1 for c in counters)


def test_weekly_token_quota_refuses_once_the_weeks_billed_tokens_reach_it(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    setup = _setup(make_worker, fake_upstream, "weeklymetered")
    err = _third_request_over_2000_tokens(setup)
    assert err.code == "quota_exceeded" and "weekly token quota" in err.message
    # Only the week's token counter exists: no daily or request counter for a plan without those limits.
    kv = setup.worker.app[GATEWAY].kv
    counters = setup.worker.call(kv.list(prefix=f"quota/{setup.key_id}/")).keys
    assert len(counters) == 1 and counters[0].name.split("/")[2].startswith("w")
    assert counters[0].name.endswith("/tokens")


def test_keys_without_a_quota_plan_are_not_checked(gateway: GatewaySetup) -> None:
    for _ in range(5):
        gateway.openai().chat.completions.create(model="gpt-5.5", messages=MESSAGES)  # type: ignore[arg-type]
    assert gateway.worker.app[GATEWAY].quotas.plans == {}


def test_web_search_draws_on_the_plans_daily_allowance(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    setup = _setup(make_worker, fake_upstream, "search")
    client = setup.openai()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    client.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o-mini", messages=MESSAGES, extra_body={"web_search_options": {}}
    )
    setup.anthropic().messages.create(
        model="claude-sonnet-4-6",
        max_tokens=64,
        messages=MESSAGES,  # type: ignore[arg-type]
        tools=[{"type": "web_search_20250305", "name": "web_search", "max_uses": 1}],  # type: ignore[list-item]
    )
    with pytest.raises(anthropic.RateLimitError) as err:  # the day's two are used, in any format
        setup.anthropic().messages.create(
            model="claude-sonnet-4-6",
            max_tokens=64,
            messages=MESSAGES,  # type: ignore[arg-type]
            tools=[{"type": "web_search_20250305", "name": "web_search"}],  # type: ignore[list-item]
        )
    assert err.value.body["error"]["type"] == "rate_limit_error"  # type: ignore[index]
    assert "web search" in err.value.message and int(err.value.response.headers["Retry-After"]) > 0
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]

    closed = _setup(make_worker, fake_upstream, "nosearch").openai()
    with pytest.raises(openai.PermissionDeniedError) as denied:
        closed.chat.completions.create(  # type: ignore[call-overload]
            model="gpt-4o-mini", messages=MESSAGES, extra_body={"web_search_options": {}}
        )
    assert denied.value.code == "web_search_not_allowed"


def test_only_a_search_the_provider_is_asked_for_uses_the_allowance(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """Chat's `web_search_options` cannot be sent to Claude (a 400 naming it, however many searches are
    left) and a null one asks for nothing: neither uses up the day's searches."""
    setup = _setup(make_worker, fake_upstream, "search")
    client = setup.openai()
    for _ in range(3):
        with pytest.raises(openai.BadRequestError) as err:
            client.chat.completions.create(  # type: ignore[call-overload]
                model="claude-sonnet-4-6", messages=MESSAGES, extra_body={"web_search_options": {}}
            )
        assert err.value.param == "web_search_options" and err.value.code == "unsupported_for_provider"
    client.chat.completions.create(  # type: ignore[call-overload]
        model="gpt-4o-mini", messages=MESSAGES, extra_body={"web_search_options": None}
    )
    for _ in range(2):  # the day's two
        client.chat.completions.create(  # type: ignore[call-overload]
            model="gpt-4o-search-preview", messages=MESSAGES, extra_body={"web_search_options": {}}
        )
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(  # type: ignore[call-overload]
            model="gpt-4o-search-preview", messages=MESSAGES, extra_body={"web_search_options": {}}
        )
    # On a plan without web search, the refusal names the field that asked for one.
    closed = _setup(make_worker, fake_upstream, "nosearch").openai()
    with pytest.raises(openai.PermissionDeniedError) as denied:
        closed.responses.create(model="gpt-4o-mini", input="hi", tools=[{"type": "web_search"}])  # type: ignore[list-item]
    assert denied.value.param == "tools[0]"


def test_long_context_draws_on_compute_credits(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    setup = _setup(make_worker, fake_upstream, "search")
    client = setup.openai()
    long = [{"role": "user", "content": "Summarise the incident report for ticket INC-4471 please. " * 12}]
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=long)  # type: ignore[arg-type]
    assert err.value.status_code == 402 and err.value.code == "insufficient_balance"
    assert "long context" in err.value.message
    call(setup.worker, "POST", f"/admin/v1/keys/{setup.key_id}/credits", {"amount_usd": 1})
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=long)  # type: ignore[arg-type]
    event = wait_final(setup, raw.headers["X-Trex-Usage-Event-Id"])
    assert event["optimized_input_tokens"] > 60
    balance = call(setup.worker, "GET", f"/admin/v1/keys/{setup.key_id}/credits")[1]["balance_usd"]
    assert balance == pytest.approx(1 - event["actual_cost_usd"], abs=1e-6) and balance < 1


def test_premium_and_pinned_models_draw_on_credits_smart_auto_and_free_models_on_the_quota(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    fake_upstream.set("/api/v1/chat/completions", Reply.json("openai/chat_text.json"))
    for plan, expected in (
        # model: catalog tier free, premium, not in the catalog (OpenRouter), smart-auto
        ("tiers", {"gpt-4o-mini": 200, "gpt-5.5": 402, "openai/gpt-4o": 200, "smart-auto": 200}),
        ("pinned", {"gpt-4o-mini": 200, "gpt-5.5": 402, "openai/gpt-4o": 402, "smart-auto": 200}),
    ):
        client = _setup(make_worker, fake_upstream, plan).openai()
        got = {}
        for model in expected:
            try:
                client.chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
                got[model] = 200
            except openai.APIStatusError as exc:
                got[model] = exc.status_code
                assert exc.status_code != 402 or exc.code == "insufficient_balance"
        assert got == expected, plan


def test_high_concurrency_draws_on_credits(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    setup = _setup(make_worker, fake_upstream, "busy")
    client = setup.openai()
    fake_upstream.enqueue("/v1/chat/completions", Reply.json("openai/chat_text.json", latency=0.8))
    with ThreadPoolExecutor(2) as pool:
        slow = pool.submit(client.chat.completions.create, model="gpt-4o-mini", messages=MESSAGES)
        time.sleep(0.3)  # the first is in flight: a second one is over the plan's 1
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        assert err.value.status_code == 402 and "in flight" in err.value.message
        slow.result()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]


@pytest.mark.parametrize(
    ("field", "value", "problem"),
    [
        ("daily_requests", -1, "integer >= 0"),
        ("daily_web_searches", True, "integer >= 0"),
        ("credit_above_input_tokens", 0, "integer >= 1"),
        ("credit_above_concurrent", "4", "integer >= 1"),
        ("credit_premium", "yes", "true or false"),
        ("credit_pinned", 1, "true or false"),
        ("models", "gpt-*", "list of model names"),
    ],
)
def test_bad_plan_fields_are_config_errors_naming_the_field(field: str, value: object, problem: str) -> None:
    with pytest.raises(ConfigError) as err:
        parse_quota_plans({"p": {field: value}}, "wrangler_local.toml")
    assert f"plans.p.{field}" in str(err.value) and problem in str(err.value)
    assert parse_quota_plans({"p": {"credit_pinned": True}}, "x")["p"].credit_pinned


def test_a_fallback_gets_the_plans_model_and_credit_checks_too(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """The `free` plan allows gpt-4o-mini, gpt-4.1* (on credits) and claude-*; gpt-5 is not on it."""
    setup = _setup(make_worker, fake_upstream, "free", UPSTREAM_RETRIES=0)
    quotas = setup.worker.app[GATEWAY].quotas

    def ask(fallback: str) -> Any:
        fake_upstream.enqueue("/v1/chat/completions", Reply.json("openai/error_rate_limit.json", status=429))
        body = {
            "model": "gpt-4o-mini",
            "messages": MESSAGES,
            "trex": {"routing": {"fallbacks": [{"provider": "openai", "model": fallback}]}},
        }
        return HTTP.post(
            setup.worker.url + "/v1/chat/completions",
            json=body,
            headers={"Authorization": f"Bearer {setup.key}"},
        )

    # Not on the plan: skipped, so the primary's 429 is the answer.
    refused = ask("gpt-5")
    assert refused.status_code == 429 and refused.headers["X-Trex-Upstream-Model"] == "gpt-4o-mini"
    # On credits, without a balance: skipped as well.
    unpaid = ask("gpt-4.1")
    assert unpaid.status_code == 429 and unpaid.headers["X-Trex-Upstream-Model"] == "gpt-4o-mini"
    assert [
        a.get("error", "") for a in wait_final(setup, unpaid.headers["X-Trex-Usage-Event-Id"])["attempts"]
    ][-1].startswith("The model 'gpt-4.1' draws on Compute Credits")
    # With a balance it serves, and the request is paid with credits.
    setup.worker.call(quotas.add_credits(setup.key_id, 1.0))
    paid = ask("gpt-4.1")
    assert paid.status_code == 200 and paid.headers["X-Trex-Upstream-Model"] == "gpt-4.1"
    event = wait_final(setup, paid.headers["X-Trex-Usage-Event-Id"])
    deadline = time.monotonic() + 5
    while (balance := setup.worker.call(quotas.balance(setup.key_id))) == 1.0:
        assert time.monotonic() < deadline
        time.sleep(0.05)
    assert balance == pytest.approx(1.0 - event["actual_cost_usd"], abs=1e-6)


def test_refused_requests_use_up_no_quota(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """Requests refused over the daily quota count against neither the weekly quota nor the web searches:
    once the day turns over, the week still has what was served subtracted, and nothing more."""
    setup = _setup(make_worker, fake_upstream, "weekly")
    client = setup.openai()
    statuses = []
    for _ in range(12):
        try:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
            statuses.append(200)
        except openai.RateLimitError:
            statuses.append(429)
    assert statuses == [200] * 3 + [429] * 9
    kv = setup.worker.app[GATEWAY].kv
    weekly = [k.name for k in setup.worker.call(kv.list(prefix=f"quota/{setup.key_id}/w")).keys]
    assert [setup.worker.call(kv.get(name)) for name in weekly] == [b"3"]

    searchy = _setup(make_worker, fake_upstream, "searchy")
    search_tools = [{"type": "web_search"}]
    for _ in range(4):
        with contextlib.suppress(openai.RateLimitError):
            searchy.openai().responses.create(model="gpt-4o-mini", input="news?", tools=search_tools)  # type: ignore[arg-type]
    searches = [
        k.name
        for k in searchy.worker.call(kv.list(prefix=f"quota/{searchy.key_id}/")).keys
        if k.name.endswith("web_searches")
    ]
    assert [searchy.worker.call(kv.get(name)) for name in searches] == [b"2"]


def test_requests_refused_after_admission_give_back_what_they_counted(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """A request refused for an unknown TrexID (404), a malformed reference or `trex` option (400), or a
    body its expansions make too large (413) reaches no upstream and uses up none of the daily quota (3)."""
    setup = _setup(make_worker, fake_upstream, "free", MAX_BODY_BYTES=4096)
    client = setup.openai()
    stored = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "The invoice INV-1 is due 2026-03-31. " * 60}],
        extra_body={"trex": {"store_context": True}},
    )  # counted: one of the three
    trex_id = stored.headers["X-Trex-Id"]
    full = {"trex_id": trex_id, "expand": "full"}
    refused: list[tuple[dict[str, Any], int]] = [
        ({"context_ref": ["tzp_" + "0" * 32]}, 404),
        ({"context_ref": [{"trex_id": trex_id, "expand": "bogus"}]}, 400),
        ({"optimize": {"mode": "bogus"}}, 400),
        ({"store_context": "yes"}, 400),
        ({"routing": {"fallbacks": "none"}}, 400),
        ({"context_ref": [full, full]}, 413),
    ]
    before = len(fake_upstream.received)
    for option, status in refused:
        with pytest.raises(openai.APIStatusError) as err:
            client.chat.completions.create(
                model="gpt-4o-mini",
                messages=MESSAGES,  # type: ignore[arg-type]
                extra_body={"trex": option},
            )
        assert err.value.status_code == status, option
    assert len(fake_upstream.received) == before
    for _ in range(2):  # what is left of the day's three
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]


def test_a_request_an_open_breaker_refuses_uses_no_quota(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """While a model's breaker is open its requests are refused without reaching it: none of them uses up the
    day's quota (3), so the key is not drained by another tenant's outage."""
    setup = _setup(make_worker, fake_upstream, "free", BREAKER_FAILURES=1, UPSTREAM_RETRIES=0)
    client = setup.openai().with_options(max_retries=0)
    fake_upstream.enqueue(
        "/v1/chat/completions", Reply.json({"error": {"message": "down", "type": "x"}}, status=503)
    )
    with pytest.raises(openai.InternalServerError):  # counted: it reached the upstream
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    for _ in range(4):
        with pytest.raises(openai.InternalServerError) as err:
            client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        assert err.value.code == "provider_unavailable"
    setup.worker.app[GATEWAY].breakers._states.clear()  # the route recovers (as after its cooldown)
    setup.worker.call(setup.worker.app[GATEWAY].kv.delete("health/openai/gpt-4o-mini/open"))
    for _ in range(2):  # what is left of the day's three
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    with pytest.raises(openai.RateLimitError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]


def test_what_a_request_costs_comes_from_its_provider(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """An OpenRouter model the price table does not know is priced (and its credits debited) at the cost
    OpenRouter reports; a local model is never priced at a cloud model's rates whatever it is called, unless
    the config prices it; embeddings follow the plan's tier rules like chat (a free-tier model needs no
    credits) and never forward the `trex` field."""
    setup = _setup(make_worker, fake_upstream, "pinned")
    client = setup.openai()
    assert call(setup.worker, "POST", f"/admin/v1/keys/{setup.key_id}/credits", {"amount_usd": 10})[0] == 200
    answer = fixture_json("openrouter/chat_text.json")
    answer["usage"]["cost"] = 0.05
    fake_upstream.set("/api/v1/chat/completions", Reply.json(answer))
    raw = client.chat.completions.with_raw_response.create(
        model="meta-llama/llama-3.3-70b-instruct", messages=MESSAGES
    )  # type: ignore[arg-type]
    event = wait_final(setup, raw.headers["X-Trex-Usage-Event-Id"])
    assert event["actual_cost_usd"] == pytest.approx(0.05)
    balance = call(setup.worker, "GET", f"/admin/v1/keys/{setup.key_id}/credits")[1]["balance_usd"]
    assert balance == pytest.approx(9.95, abs=1e-6)

    raw = client.chat.completions.with_raw_response.create(model="local/gpt-4o", messages=MESSAGES)  # type: ignore[arg-type]
    event = wait_final(setup, raw.headers["X-Trex-Usage-Event-Id"])
    assert event["priced_as"] is None and event["actual_cost_usd"] is None

    embedded = client.embeddings.with_raw_response.create(
        model="text-embedding-3-small", input="hello", extra_body={"trex": {"optimize": {"mode": "off"}}}
    )
    assert embedded.status_code == 200 and "trex" not in fake_upstream.last("/v1/embeddings").json
