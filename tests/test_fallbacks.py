"""Retries and fallbacks: retryable failures move on, others don't; streams fall back only before output."""

from __future__ import annotations

import email.utils
import json
import time
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import anthropic
import openai
import pytest

from adapters.sse import SSEParser
from tests.conftest import MASTER_KEY, UPSTREAM_KEYS, GatewaySetup, with_key
from tests.fakes.upstream import FakeUpstream, Reply, fixture_bytes
from tests.harness import InProcessWorker, free_port
from tests.test_usage import wait_final
from worker.appkeys import GATEWAY

MESSAGES = [{"role": "user", "content": "Write a short status update."}]
TO_CLAUDE = {"trex": {"routing": {"fallbacks": [{"provider": "anthropic", "model": "claude-sonnet-4-6"}]}}}


@pytest.fixture
def routed(make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream) -> Any:
    opened: list[GatewaySetup] = []

    def factory(**variables: Any) -> GatewaySetup:
        worker = make_worker({"UPSTREAM_RETRIES": 0, **variables}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
        setup = with_key(worker, fake_upstream, "routing")
        opened.append(setup)
        return setup

    yield factory
    for setup in opened:
        setup.close()


def _paths(fake: FakeUpstream) -> list[str]:
    return [r.path for r in fake.received]


@pytest.mark.parametrize("status", [429, 502, 503, 504, 529])
def test_retryable_status_falls_back_to_the_next_provider(routed: Any, status: int) -> None:
    setup = routed()
    setup.fake.enqueue(
        "/v1/chat/completions", Reply.json({"error": {"message": "busy", "type": "x"}}, status=status)
    )
    raw = setup.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_body=TO_CLAUDE
    )
    completion = raw.parse()
    assert completion.choices[0].message.content  # Claude's answer, translated to chat
    assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"
    assert raw.headers["X-Trex-Upstream-Model"] == "claude-sonnet-4-6"
    assert raw.headers["X-Trex-Fallback-Attempts"] == "1"
    assert _paths(setup.fake) == ["/v1/chat/completions", "/v1/messages"]
    assert "trex" not in setup.fake.last().json  # the routing instructions are never forwarded
    event = wait_final(setup, raw.headers["X-Trex-Usage-Event-Id"])
    assert [(a["provider"], a["status"]) for a in event["attempts"]] == [
        ("openai", status),
        ("anthropic", 200),
    ]
    assert event["provider"] == "anthropic" and event["priced_as"] == "claude-sonnet-4-6"


@pytest.mark.parametrize("status", [400, 401, 403, 404, 422, 500])
def test_other_failures_do_not_fall_back(routed: Any, status: int) -> None:
    setup = routed()
    error = {"error": {"message": "nope", "type": "invalid_request_error", "code": "nope"}}
    setup.fake.enqueue("/v1/chat/completions", Reply.json(error, status=status))
    with pytest.raises(openai.APIStatusError) as err:
        setup.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_body=TO_CLAUDE)  # type: ignore[arg-type]
    assert err.value.status_code == status
    assert err.value.response.headers["X-Trex-Fallback-Attempts"] == "0"
    assert _paths(setup.fake) == ["/v1/chat/completions"]


def test_a_dropped_connection_falls_back(routed: Any) -> None:
    setup = routed(OPENROUTER_BASE_URL=f"http://127.0.0.1:{free_port()}/api/v1")  # nothing listens there
    fallback = {"trex": {"routing": {"fallbacks": [{"provider": "openai", "model": "gpt-4o-mini"}]}}}
    raw = setup.openai().chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini", messages=MESSAGES, extra_body=fallback
    )
    assert (
        raw.headers["X-Trex-Upstream-Provider"] == "openai" and raw.headers["X-Trex-Fallback-Attempts"] == "1"
    )
    event = wait_final(setup, raw.headers["X-Trex-Usage-Event-Id"])
    first = event["attempts"][0]
    assert (first["provider"], first["status"]) == ("openrouter", 502) and "connect" in first["error"]


def test_when_every_attempt_fails_the_last_failure_is_returned(routed: Any) -> None:
    setup = routed()
    setup.fake.enqueue(
        "/v1/chat/completions", Reply.json({"error": {"message": "a", "type": "x"}}, status=503)
    )
    setup.fake.enqueue("/v1/messages", Reply.json("anthropic/error_overloaded.json", status=529))
    with pytest.raises(openai.APIStatusError) as err:
        setup.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_body=TO_CLAUDE)  # type: ignore[arg-type]
    assert err.value.status_code == 529
    assert err.value.response.headers["X-Trex-Upstream-Provider"] == "anthropic"
    assert err.value.response.headers["X-Trex-Fallback-Attempts"] == "1"


def test_retries_back_off_then_succeed_on_the_same_route(routed: Any) -> None:
    setup = routed(UPSTREAM_RETRIES=2)
    busy = Reply.json({"error": {"message": "busy", "type": "x"}}, status=503)
    setup.fake.enqueue("/v1/chat/completions", busy, busy)
    started = time.monotonic()
    raw = setup.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    elapsed = time.monotonic() - started
    assert raw.parse().choices[0].message.content
    assert _paths(setup.fake) == ["/v1/chat/completions"] * 3
    assert elapsed >= 0.125 + 0.25  # two jittered backoffs: at least 0.125 s and 0.25 s
    assert raw.headers["X-Trex-Fallback-Attempts"] == "2"


def test_retry_after_is_honoured_and_one_past_the_limit_is_not_waited_for(routed: Any) -> None:
    setup = routed(UPSTREAM_RETRIES=1)
    setup.fake.enqueue(
        "/v1/chat/completions",
        Reply.json(
            {"error": {"message": "slow down", "type": "x"}}, status=429, headers={"Retry-After": "1"}
        ),
    )
    started = time.monotonic()
    setup.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert time.monotonic() - started >= 0.95
    # A Retry-After beyond UPSTREAM_RETRY_MAX_WAIT is not waited for: the fallback is tried at once.
    setup.fake.reset()
    setup.fake.enqueue(
        "/v1/chat/completions",
        Reply.json({"error": {"message": "later", "type": "x"}}, status=429, headers={"Retry-After": "30"}),
    )
    started = time.monotonic()
    raw = setup.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_body=TO_CLAUDE
    )
    assert time.monotonic() - started < 10  # not the 30 s asked for (a bound a loaded machine cannot miss)
    assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"


def test_streams_fall_back_before_the_first_byte(routed: Any) -> None:
    setup = routed()
    setup.fake.enqueue(
        "/v1/chat/completions", Reply.json({"error": {"message": "x", "type": "x"}}, status=503)
    )
    with setup.openai().chat.completions.stream(
        model="gpt-4o-mini",
        messages=MESSAGES,
        extra_body=TO_CLAUDE,  # type: ignore[arg-type]
    ) as stream:
        final = stream.get_final_completion()
    assert final.choices[0].message.content
    assert _paths(setup.fake) == ["/v1/chat/completions", "/v1/messages"]


def test_a_stream_failing_after_its_first_byte_ends_with_an_error_and_no_fallback(routed: Any) -> None:
    setup = routed()
    setup.fake.enqueue("/v1/chat/completions", Reply.stream("openai/chat_text.sse", drop_after=4))
    with setup.openai().chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body=TO_CLAUDE
    ) as resp:
        lines = [line for line in resp.iter_lines() if line.startswith("data: ")]
    events = [json.loads(line[6:]) for line in lines if line != "data: [DONE]"]
    assert "error" in events[-1]  # the stream ends with an error event
    text = "".join(e["choices"][0]["delta"].get("content") or "" for e in events[:-1] if e.get("choices"))
    full = "".join(
        json.loads(ev.data)["choices"][0]["delta"].get("content") or ""
        for ev in SSEParser().feed(fixture_bytes("openai/chat_text.sse"))
        if ev.data.startswith("{") and json.loads(ev.data)["choices"]
    )
    assert text and full.startswith(text) and text != full  # a prefix, once: nothing replayed by a fallback
    assert _paths(setup.fake) == ["/v1/chat/completions"]


@pytest.mark.parametrize(
    ("routing", "param"),
    [
        ("fast", "trex.routing"),
        ({"fallbacks": "anthropic"}, "trex.routing.fallbacks"),
        ({"fallbacks": [{"provider": "azure", "model": "x"}]}, "trex.routing.fallbacks[0].provider"),
        ({"fallbacks": [{"provider": "openai"}]}, "trex.routing.fallbacks[0].model"),
        ({"fallbacks": [{"provider": "openai", "model": "m"}] * 6}, "trex.routing.fallbacks"),
    ],
)
def test_bad_fallbacks_are_a_400_naming_the_field(routed: Any, routing: Any, param: str) -> None:
    setup = routed()
    with pytest.raises(openai.BadRequestError) as err:
        setup.openai().chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_body={"trex": {"routing": routing}},  # type: ignore[arg-type]
        )
    assert err.value.body["param"] == param  # type: ignore[index]
    assert setup.fake.received == []


def test_a_fallback_without_a_provider_key_is_skipped(routed: Any) -> None:
    setup = routed()
    key_id, only_openai = setup.new_key("only-openai")
    setup.worker.call(setup.worker.app[GATEWAY].keys.bind(key_id, "openai", UPSTREAM_KEYS["openai"]))
    setup.fake.enqueue(
        "/v1/chat/completions", Reply.json({"error": {"message": "x", "type": "x"}}, status=503)
    )
    client = setup.openai(key=only_openai)
    with pytest.raises(openai.APIStatusError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_body=TO_CLAUDE)  # type: ignore[arg-type]
    assert err.value.status_code == 503  # the only usable route's answer
    assert _paths(setup.fake) == ["/v1/chat/completions"]
    event_id = err.value.response.headers["X-Trex-Usage-Event-Id"]
    event = wait_final(GatewaySetup(setup.worker, setup.fake, only_openai, key_id), event_id)
    skipped = event["attempts"][1]
    assert (skipped["provider"], skipped["status"]) == ("anthropic", None) and "anthropic" in skipped["error"]


def test_breaker_opens_skips_is_shared_and_recovers_after_a_probe(routed: Any) -> None:
    setup = routed(BREAKER_FAILURES=2, BREAKER_COOLDOWN_SECONDS=60)
    busy = Reply.json({"error": {"message": "down", "type": "x"}}, status=503)
    setup.fake.enqueue("/v1/chat/completions", busy, busy)
    client = setup.openai()
    for _ in range(2):  # two failures, each served by the fallback
        raw = client.chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_body=TO_CLAUDE
        )
        assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"
    setup.fake.reset()
    # Open: OpenAI is skipped without being contacted.
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_body=TO_CLAUDE
    )
    assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic" and _paths(setup.fake) == ["/v1/messages"]
    event = wait_final(setup, raw.headers["X-Trex-Usage-Event-Id"])
    assert event["attempts"][0] == {
        "provider": "openai",
        "model": "gpt-4o-mini",
        "status": None,
        "error": "circuit open",
    }
    # Without a fallback the client is told to come back, at once.
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.status_code == 503 and err.value.code == "provider_unavailable"
    assert err.value.response.headers["Retry-After"] == "60"
    # Another instance on the same KV agrees.
    other = routed(BREAKER_FAILURES=2, BREAKER_COOLDOWN_SECONDS=60)
    setup.fake.reset()
    with pytest.raises(openai.InternalServerError):
        other.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert setup.fake.received == []
    # After the cooldown one probe goes through; it succeeds, so the breaker closes for everyone.
    breakers = setup.worker.app[GATEWAY].breakers
    breakers._clock = lambda: time.time() + 61  # the cooldown has passed for this instance
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices  # type: ignore[arg-type]
    assert _paths(setup.fake) == ["/v1/chat/completions"]
    time.sleep(1.1)  # the other instance re-reads the shared state within a second
    assert other.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices  # type: ignore[arg-type]


def test_a_short_cooldown_is_kept_and_retry_after_counts_down(routed: Any) -> None:
    """A cooldown under the KV's 60 s minimum TTL is still the configured one, and Retry-After says what is
    left of it."""
    setup = routed(BREAKER_FAILURES=1, BREAKER_COOLDOWN_SECONDS=5)
    setup.fake.enqueue(
        "/v1/chat/completions", Reply.json({"error": {"message": "down", "type": "x"}}, status=503)
    )
    client = setup.openai().with_options(max_retries=0)
    with pytest.raises(openai.InternalServerError):
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    breakers = setup.worker.app[GATEWAY].breakers
    opened = time.time()
    breakers._clock = lambda: opened + 3  # three seconds into the cooldown
    with pytest.raises(openai.InternalServerError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.code == "provider_unavailable"
    assert int(err.value.response.headers["Retry-After"]) in (2, 3)
    breakers._clock = lambda: opened + 6  # past the configured 5 s: the probe goes through and succeeds
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices  # type: ignore[arg-type]


def test_a_probe_that_never_reports_back_lets_the_next_request_probe_a_cooldown_later(routed: Any) -> None:
    """The half-open probe answered 429 (neither a success nor a failure): the route is probed again a
    cooldown later, not only when the KV entry of the probe expires (60 s at least)."""
    setup = routed(BREAKER_FAILURES=1, BREAKER_COOLDOWN_SECONDS=5)
    client = setup.openai().with_options(max_retries=0)
    busy = Reply.json({"error": {"message": "down", "type": "x"}}, status=503)
    limited = Reply.json({"error": {"message": "slow down", "type": "x"}}, status=429)
    setup.fake.enqueue("/v1/chat/completions", busy, limited)
    with pytest.raises(openai.InternalServerError):  # opens the breaker
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    breakers = setup.worker.app[GATEWAY].breakers
    opened = time.time()
    breakers._clock = lambda: opened + 6
    with pytest.raises(openai.RateLimitError):  # the probe: a 429 says nothing about the route's health
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    breakers._clock = lambda: opened + 12  # a cooldown after that probe began
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices  # type: ignore[arg-type]


def test_no_fallback_starts_after_the_deadline(routed: Any) -> None:
    setup = routed(UPSTREAM_RETRY_DEADLINE=0.3)
    slow_failure = Reply.json({"error": {"message": "busy", "type": "x"}}, status=503, latency=0.5)
    setup.fake.enqueue("/v1/chat/completions", slow_failure)
    with pytest.raises(openai.InternalServerError) as err:
        setup.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_body=TO_CLAUDE)  # type: ignore[arg-type]
    assert err.value.status_code == 503
    assert _paths(setup.fake) == ["/v1/chat/completions"]


def test_a_retry_after_date_is_a_wait_and_a_nonsense_one_is_none(routed: Any) -> None:
    setup = routed(UPSTREAM_RETRIES=1)
    later = email.utils.format_datetime(datetime.now(UTC) + timedelta(hours=1), usegmt=True)
    setup.fake.enqueue(
        "/v1/chat/completions",
        Reply.json({"error": {"message": "later", "type": "x"}}, status=429, headers={"Retry-After": later}),
    )
    raw = setup.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_body=TO_CLAUDE
    )
    # An hour away: past UPSTREAM_RETRY_MAX_WAIT, so no retry of the same route; the fallback answers.
    assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"
    assert _paths(setup.fake) == ["/v1/chat/completions", "/v1/messages"]
    for bad in ("-30", "nan"):  # the normal backoff, not an immediate retry
        setup.fake.reset()
        setup.fake.enqueue(
            "/v1/chat/completions",
            Reply.json({"error": {"message": "x", "type": "x"}}, status=429, headers={"Retry-After": bad}),
        )
        started = time.monotonic()
        setup.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        assert time.monotonic() - started >= 0.1, bad  # backoff starts at 0.25 s ± 50 %
        assert _paths(setup.fake) == ["/v1/chat/completions"] * 2


def test_an_upstream_that_answers_a_redirect_or_no_json_is_a_502(routed: Any) -> None:
    """Redirects are not followed (the provider key would go to the new host, and a POST become a GET);
    a 200 that is not a JSON object (empty, HTML, an SSE stream for a non-stream request) is no answer."""
    setup = routed()
    elsewhere = FakeUpstream().start()
    try:
        target = elsewhere.base_urls()["ANTHROPIC_BASE_URL"] + "/messages"
        setup.fake.enqueue("/v1/messages", Reply(status=307, body=b"", headers={"Location": target}))
        with pytest.raises(anthropic.APIStatusError) as err:
            setup.anthropic().messages.create(model="claude-sonnet-4-6", max_tokens=10, messages=MESSAGES)  # type: ignore[arg-type]
        assert err.value.status_code == 502 and "redirect" in err.value.message
        assert elsewhere.received == []  # the key never left for the other host
    finally:
        elsewhere.stop()
    for body in (b"", b"<html>maintenance</html>", fixture_bytes("openai/chat_text.sse")):
        setup.fake.enqueue("/v1/chat/completions", Reply(status=200, body=body))
        with pytest.raises(openai.APIStatusError) as oerr:
            setup.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        assert oerr.value.status_code == 502 and oerr.value.code == "bad_upstream_response"


def test_rate_limits_do_not_open_the_breaker(routed: Any) -> None:
    """A 429 is most often one customer's own provider key running out: the model stays up for the others."""
    setup = routed(BREAKER_FAILURES=2)
    limited = Reply.json({"error": {"message": "quota", "type": "insufficient_quota"}}, status=429)
    setup.fake.enqueue("/v1/chat/completions", limited, limited, limited)
    for _ in range(3):
        with pytest.raises(openai.RateLimitError):
            setup.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    setup.fake.reset()
    assert setup.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices  # type: ignore[arg-type]
    assert _paths(setup.fake) == ["/v1/chat/completions"]


def test_failures_with_a_clients_own_provider_key_do_not_open_the_breaker_for_others(routed: Any) -> None:
    """One tenant whose own key (`X-Upstream-Api-Key`) fails — its account's outage, long generations past the
    timeout — must not pause the model for every other tenant."""
    setup = routed(BREAKER_FAILURES=2, UPSTREAM_FIRST_BYTE_TIMEOUT=0.3)
    _, tenant = setup.new_key("own-key-only")
    own = setup.openai(key=tenant, default_headers={"X-Upstream-Api-Key": "sk-tenant-own-key-0000000"})
    busy = Reply.json({"error": {"message": "down", "type": "x"}}, status=503)
    slow = Reply.json("openai/chat_text.json", latency=1.0)
    setup.fake.enqueue("/v1/chat/completions", busy, slow, busy)
    statuses = []
    for _ in range(3):
        with pytest.raises(openai.InternalServerError) as err:
            own.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
        statuses.append(err.value.status_code)
    assert statuses == [503, 504, 503]  # each reached the upstream: the tenant's own key is not paused either
    setup.fake.reset()
    # Another tenant, with the operator's bound key, is served by the model as usual.
    raw = setup.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert raw.headers["X-Trex-Upstream-Provider"] == "openai" and raw.parse().choices
    (sent,) = setup.fake.received
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEYS['openai']}"


def test_a_probe_that_fails_with_a_clients_own_key_leaves_the_probe_to_the_next_request(routed: Any) -> None:
    setup = routed(BREAKER_FAILURES=1, BREAKER_COOLDOWN_SECONDS=60)
    busy = Reply.json({"error": {"message": "down", "type": "x"}}, status=503)
    setup.fake.enqueue("/v1/chat/completions", busy)
    client = setup.openai()
    with pytest.raises(openai.InternalServerError):  # the operator's key: counted, the breaker opens
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    breakers = setup.worker.app[GATEWAY].breakers
    breakers._clock = lambda: time.time() + 61  # the cooldown has passed
    _, tenant = setup.new_key("own-key-only")
    own = setup.openai(key=tenant, default_headers={"X-Upstream-Api-Key": "sk-tenant-own-key-0000000"})
    setup.fake.enqueue("/v1/chat/completions", busy)
    with pytest.raises(openai.InternalServerError) as err:  # it probes with its own key, and fails
        own.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    assert err.value.code != "provider_unavailable"
    setup.fake.reset()
    # Its failure neither opened the breaker again nor kept the probe: the next request probes, and closes it.
    assert client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices  # type: ignore[arg-type]
    assert _paths(setup.fake) == ["/v1/chat/completions"]


def test_a_success_on_another_instance_resets_the_failure_count(routed: Any) -> None:
    """Failures must be consecutive across instances: one instance's success clears what another counted."""
    first, second = routed(BREAKER_FAILURES=3), routed(BREAKER_FAILURES=3)
    busy = Reply.json({"error": {"message": "down", "type": "x"}}, status=503)
    for _ in range(3):
        first.fake.enqueue("/v1/chat/completions", busy)
        raw = first.openai().chat.completions.with_raw_response.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_body=TO_CLAUDE
        )
        assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"  # served by the fallback
        time.sleep(1.1)  # the other instance re-reads the shared state within a second
        assert second.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices  # type: ignore[arg-type]
        time.sleep(1.1)
    first.fake.reset()
    assert first.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES).choices  # type: ignore[arg-type]
    assert _paths(first.fake) == ["/v1/chat/completions"]  # never three in a row: the breaker stayed closed


def test_a_clients_own_provider_key_never_goes_to_another_provider(routed: Any) -> None:
    """`X-Upstream-Api-Key` is a key for the requested model's provider: a fallback to another provider uses
    that provider's bound key (or is skipped without one), never the client's OpenAI key."""
    setup = routed()
    own = "sk-proj-CLIENTS-OWN-OPENAI-KEY-1234"
    setup.fake.enqueue(
        "/v1/chat/completions", Reply.json({"error": {"message": "x", "type": "x"}}, status=503)
    )
    raw = setup.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=MESSAGES,
        extra_body=TO_CLAUDE,
        extra_headers={"X-Upstream-Api-Key": own},
    )
    assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"
    first, fallback = setup.fake.received
    assert first.headers["Authorization"] == f"Bearer {own}"
    assert fallback.headers["x-api-key"] == UPSTREAM_KEYS["anthropic"] and own not in json.dumps(
        fallback.headers
    )
    _, only_override = setup.new_key("nothing-bound")
    setup.fake.reset()
    setup.fake.enqueue(
        "/v1/chat/completions", Reply.json({"error": {"message": "x", "type": "x"}}, status=503)
    )
    with pytest.raises(openai.APIStatusError) as err:
        setup.openai(key=only_override).chat.completions.create(
            model="gpt-4o-mini",
            messages=MESSAGES,
            extra_body=TO_CLAUDE,
            extra_headers={"X-Upstream-Api-Key": own},  # type: ignore[arg-type]
        )
    assert err.value.status_code == 503 and _paths(setup.fake) == ["/v1/chat/completions"]


def test_a_provider_key_an_upstream_echoes_is_masked(routed: Any) -> None:
    """Some servers repeat the credential they refused; the client never sees the operator's bound key."""
    setup = routed()
    secret = UPSTREAM_KEYS["openai"]
    echo = {"error": {"message": f"bad key: Bearer {secret}", "type": "invalid_request_error"}}
    for path, model in (
        ("/v1/chat/completions", "gpt-4o-mini"),
        ("/v1/embeddings", "text-embedding-3-small"),
    ):
        setup.fake.enqueue(path, Reply.json(echo, status=401))
        with pytest.raises(openai.AuthenticationError) as err:
            if path == "/v1/embeddings":
                setup.openai().embeddings.create(model=model, input="x")
            else:
                setup.openai().chat.completions.create(model=model, messages=MESSAGES)  # type: ignore[arg-type]
        assert secret not in err.value.response.text and "bad key: Bearer ***" in err.value.response.text
    setup.fake.enqueue("/v1/embeddings", Reply(status=500, body=b"Internal Server Error (plain text)"))
    with pytest.raises(openai.InternalServerError) as failed:
        setup.openai().embeddings.create(model="text-embedding-3-small", input="x")
    assert failed.value.response.json()["error"]["message"].startswith("Internal Server Error")


def test_embeddings_are_retried_like_model_calls(routed: Any) -> None:
    setup = routed(UPSTREAM_RETRIES=1)
    limited = Reply.json(
        {"error": {"message": "slow down", "type": "x"}}, status=429, headers={"Retry-After": "0"}
    )
    setup.fake.enqueue("/v1/embeddings", limited)
    vectors = setup.openai().embeddings.create(model="text-embedding-3-small", input="x")
    assert vectors.data and _paths(setup.fake) == ["/v1/embeddings", "/v1/embeddings"]
    setup.fake.reset()
    setup.fake.enqueue("/v1/embeddings", limited, limited)
    with pytest.raises(openai.RateLimitError):
        setup.openai().embeddings.create(model="text-embedding-3-small", input="x")
    assert len(setup.fake.received) == 2  # one retry, then the failure as it came
