"""Usage accounting through the worker: events, pricing, trex_accounting, streams, totals, restarts."""

from __future__ import annotations

import contextlib
import http.client
import json
import signal
import socket
import threading
import time
import urllib.error
import urllib.parse
import urllib.request
from collections.abc import Callable
from pathlib import Path
from typing import Any

import msgspec
import pytest
import tiktoken

from tests.conftest import MASTER_KEY, UPSTREAM_KEYS, GatewaySetup
from tests.fakes.upstream import FakeUpstream, Reply, fixture_bytes, fixture_json
from tests.harness import InProcessWorker, WorkerProcess, write_config
from tests.test_cli import trex
from worker.accounting.events import FLUSH_AT
from worker.accounting.pricing import BUILTIN_PRICES
from worker.appkeys import CONFIG, GATEWAY


class _Resp:
    def __init__(self, status: int, headers: Any, body: bytes) -> None:
        self.status_code, self.headers, self.text = status, headers, body.decode()

    def json(self) -> Any:
        return json.loads(self.text)


def _http(method: str, url: str, json_body: Any = None, headers: dict[str, str] | None = None) -> _Resp:
    data = None if json_body is None else json.dumps(json_body).encode()
    req = urllib.request.Request(
        url, data=data, method=method, headers={"Content-Type": "application/json", **(headers or {})}
    )
    try:
        with urllib.request.urlopen(req, timeout=30) as r:
            return _Resp(r.status, r.headers, r.read())
    except urllib.error.HTTPError as e:
        return _Resp(e.code, e.headers, e.read())


class HTTP:
    """The few raw HTTP calls these tests make, on the standard library."""

    @staticmethod
    def post(url: str, json: Any = None, headers: dict[str, str] | None = None) -> _Resp:
        return _http("POST", url, json, headers)

    @staticmethod
    def get(url: str, params: dict[str, str] | None = None, headers: dict[str, str] | None = None) -> _Resp:
        query = "?" + urllib.parse.urlencode(params) if params else ""
        return _http("GET", url + query, None, headers)


MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello to the team."}]
OFF = {"trex": {"optimize": {"mode": "off"}}}


def _get(gateway: GatewaySetup, path: str, key: str | None = None, **params: Any) -> _Resp:
    return HTTP.get(
        gateway.worker.url + path, params=params, headers={"Authorization": f"Bearer {key or gateway.key}"}
    )


def wait_final(gateway: GatewaySetup, event_id: str, key: str | None = None) -> dict[str, Any]:
    deadline = time.monotonic() + 10
    while True:
        r = _get(gateway, f"/v1/usage/events/{event_id}", key)
        assert r.status_code == 200, r.text
        event = r.json()
        if event["status"] == "final" or time.monotonic() > deadline:
            assert event["status"] == "final", event
            return dict(event)
        time.sleep(0.05)


def _usd(tokens: int, per_million: float) -> float:
    return tokens * per_million / 1_000_000


def _o200k(doc: Any) -> int:
    return len(tiktoken.get_encoding("o200k_base").encode_ordinary(msgspec.json.encode(doc).decode()))


def test_non_streaming_chat_event_is_reconciled_and_priced(gateway: GatewaySetup) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_body=OFF
    )
    event_id = raw.headers["X-Trex-Usage-Event-Id"]
    assert event_id.startswith("ue_")
    assert float(raw.headers["X-Trex-Proxy-Overhead-Ms"]) >= 0
    assert raw.headers["X-Trex-Guarantee-Status"] == "not_applicable"
    event = wait_final(gateway, event_id)
    usage = fixture_json("openai/chat_text.json")["usage"]
    assert event["billed"] == {
        "input_tokens": usage["prompt_tokens"],
        "output_tokens": usage["completion_tokens"],
        "cached_input_tokens": usage["prompt_tokens_details"]["cached_tokens"],
        "cache_write_tokens": 0,
    }
    assert event["usage_source"] == "upstream" and event["outcome"] == "completed"
    assert event["http_status"] == 200 and event["route"] == "/v1/chat/completions"
    assert event["provider"] == "openai" and event["key_id"] == gateway.key_id
    # Counts are tiktoken's own, on the content fields of what was received and forwarded.
    assert event["original_input_tokens"] == _o200k({"messages": MESSAGES})
    assert event["optimized_input_tokens"] == event["original_input_tokens"]
    assert event["token_count_encoding"] == "o200k_base" and event["token_count_estimated"] is False
    price = BUILTIN_PRICES["gpt-4o-mini"]
    cached = usage["prompt_tokens_details"]["cached_tokens"]
    expected = (
        _usd(usage["prompt_tokens"] - cached, price.input)
        + _usd(cached, price.cached_input or 0)
        + _usd(usage["completion_tokens"], price.output)
    )
    assert event["actual_cost_usd"] == pytest.approx(expected)
    assert event["priced_as"] == "gpt-4o-mini"
    assert event["baseline"]["cost_usd"] == pytest.approx(expected)  # nothing optimized: nothing saved
    assert event["savings_usd"] == pytest.approx(0.0) and event["savings_tokens"] == 0


def test_savings_from_optimization_are_priced_at_the_input_rate(gateway: GatewaySetup) -> None:
    log = "\n".join(f"2026-11-02T10:{i % 60:02d}:00Z INFO worker heartbeat ok queue=0" for i in range(400))
    messages = [
        {"role": "user", "content": "Run the job."},
        {"role": "assistant", "content": None, "tool_calls": [
            {"id": "call_1", "type": "function", "function": {"name": "run", "arguments": "{}"}}
        ]},
        {"role": "tool", "tool_call_id": "call_1", "content": log},
        {"role": "user", "content": "Did it work?"},
    ]  # fmt: skip
    raw = gateway.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)  # type: ignore[arg-type]
    saved = int(raw.headers["X-Trex-Saved-Tokens"])
    assert saved > 1000
    event = wait_final(gateway, raw.headers["X-Trex-Usage-Event-Id"])
    assert event["original_input_tokens"] == int(raw.headers["X-Trex-Original-Tokens"])
    assert event["saved_input_tokens"] == saved == event["savings_tokens"]
    price = BUILTIN_PRICES["gpt-4o-mini"]
    assert event["savings_usd"] == pytest.approx(_usd(saved, price.input))
    assert event["baseline"]["input_tokens"] == event["billed"]["input_tokens"] + saved


def test_claude_counts_are_labelled_estimates_and_cache_writes_are_priced(gateway: GatewaySetup) -> None:
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    assert raw.headers["X-Trex-Token-Count"] == "estimate"
    event = wait_final(gateway, raw.headers["X-Trex-Usage-Event-Id"])
    assert event["token_count_estimated"] is True
    u = fixture_json("anthropic/message_text.json")["usage"]
    read, write = u["cache_read_input_tokens"], u["cache_creation_input_tokens"]
    assert event["billed"] == {
        "input_tokens": u["input_tokens"] + read + write,
        "output_tokens": u["output_tokens"],
        "cached_input_tokens": read,
        "cache_write_tokens": write,
    }
    expected = (
        _usd(u["input_tokens"], 3.0) + _usd(read, 0.30) + _usd(write, 3.75) + _usd(u["output_tokens"], 15.0)
    )
    assert event["actual_cost_usd"] == pytest.approx(expected)
    # The same usage with one-hour cache writes costs twice the input rate for the written tokens.
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="claude-sonnet-4-6",
        max_tokens=100,
        messages=[{"role": "user", "content": "hi"}],
        extra_body={"trex_accounting": {"cache_write_ttl": "1h"}},
    )
    event = wait_final(gateway, raw.headers["X-Trex-Usage-Event-Id"])
    assert event["cache_write_ttl"] == "1h"
    assert event["actual_cost_usd"] == pytest.approx(expected + _usd(write, 6.0 - 3.75))
    assert "trex_accounting" not in gateway.fake.last().json


def test_cache_writes_anthropic_reports_as_one_hour_ones_are_priced_at_that_rate(
    gateway: GatewaySetup,
) -> None:
    """Anthropic splits cache writes by TTL (`cache_creation.ephemeral_1h_input_tokens`): the 1-hour ones cost
    2x input, not the 5-minute 1.25x, whatever the client's `cache_write_ttl` says; streaming or not."""
    body = fixture_json("anthropic/message_text.json")
    u = body["usage"]
    u["cache_creation"] = {"ephemeral_5m_input_tokens": 48, "ephemeral_1h_input_tokens": 2000}
    read, write = u["cache_read_input_tokens"], u["cache_creation_input_tokens"]
    assert write == 2048
    expected = (
        _usd(u["input_tokens"], 3.0)
        + _usd(read, 0.30)
        + _usd(48, 3.75)
        + _usd(2000, 6.0)
        + _usd(u["output_tokens"], 15.0)
    )
    gateway.fake.set("/v1/messages", Reply.json(body))
    raw = gateway.anthropic().messages.with_raw_response.create(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    )
    event = wait_final(gateway, raw.headers["X-Trex-Usage-Event-Id"])
    assert event["billed"]["cache_write_1h_tokens"] == 2000
    assert event["actual_cost_usd"] == pytest.approx(expected)
    # The same usage streamed to a chat client (translated), reported in message_start.
    sse = (
        fixture_bytes("anthropic/message_text.sse")
        .replace(b'"cache_creation_input_tokens":0', b'"cache_creation_input_tokens":2048')
        .replace(
            b'"cache_creation":{"ephemeral_5m_input_tokens":0,"ephemeral_1h_input_tokens":0}',
            b'"cache_creation":{"ephemeral_5m_input_tokens":48,"ephemeral_1h_input_tokens":2000}',
        )
    )
    assert b'"ephemeral_1h_input_tokens":2000' in sse
    gateway.fake.set("/v1/messages", Reply.stream(sse))
    with gateway.openai().chat.completions.with_streaming_response.create(
        model="claude-sonnet-4-6", messages=[{"role": "user", "content": "hi"}], stream=True
    ) as resp:
        event_id = resp.headers["X-Trex-Usage-Event-Id"]
        list(resp.iter_lines())
    streamed = wait_final(gateway, event_id)
    assert (
        streamed["billed"]["cache_write_tokens"] == 2048
        and streamed["billed"]["cache_write_1h_tokens"] == 2000
    )


def test_trex_accounting_baseline_override_and_client_stats(gateway: GatewaySetup) -> None:
    accounting = {
        "baseline_usage": {"input_tokens": 6184, "output_tokens": 380},
        "actual_usage_override": {"input_tokens": 1887, "cached_input_tokens": 143},
        "cache_write_ttl": "5m",
        "trex": {
            "original_input_tokens": 6184,
            "optimized_input_tokens": 1973,
            "request_bytes_before": 18417,
            "request_bytes_after": 6084,
        },
    }
    raw = gateway.openai().responses.with_raw_response.create(
        model="gpt-5-mini",
        input="Summarize the deployment notes.",
        extra_body={"trex_accounting": accounting},
    )
    assert "trex_accounting" not in gateway.fake.last().json
    event = wait_final(gateway, raw.headers["X-Trex-Usage-Event-Id"])
    out = fixture_json("openai/responses_text.json")["usage"]["output_tokens"]
    price = BUILTIN_PRICES["gpt-5-mini"]
    assert event["usage_source"] == "override"
    assert event["billed"]["input_tokens"] == 1887 and event["billed"]["cached_input_tokens"] == 143
    actual = _usd(1887 - 143, price.input) + _usd(143, price.cached_input or 0) + _usd(out, price.output)
    # The client's baseline is priced with the billed cache split (143 cached): a cache discount is no saving.
    baseline = _usd(6184 - 143, price.input) + _usd(143, price.cached_input or 0) + _usd(380, price.output)
    assert event["actual_cost_usd"] == pytest.approx(actual)
    assert event["baseline"] == {
        "input_tokens": 6184,
        "output_tokens": 380,
        "cost_usd": pytest.approx(baseline),
        "source": "client",
    }
    assert event["savings_usd"] == pytest.approx(baseline - actual)
    assert event["savings_tokens"] == (6184 + 380) - (1887 + out)
    assert event["original_input_tokens"] == 6184 and event["request_bytes_before"] == 18417
    assert event["client_reported"] == accounting["trex"]


@pytest.mark.parametrize(
    ("accounting", "param"),
    [
        ("yes", "trex_accounting"),
        ({"baseline_usage": {"input_tokens": "6184"}}, "trex_accounting.baseline_usage.input_tokens"),
        ({"baseline_usage": {"input_tokens": -1}}, "trex_accounting.baseline_usage.input_tokens"),
        (
            {"actual_usage_override": {"cached_input_tokens": True}},
            "trex_accounting.actual_usage_override.cached_input_tokens",
        ),
        ({"cache_write_ttl": "10m"}, "trex_accounting.cache_write_ttl"),
        ({"trex": {"request_bytes_before": 1.5}}, "trex_accounting.trex.request_bytes_before"),
        ({"baseline": {}}, "trex_accounting.baseline"),
        # Beyond any request (a float overflow when priced): refused, never a failed reconciliation.
        ({"baseline_usage": {"input_tokens": 10**400}}, "trex_accounting.baseline_usage.input_tokens"),
        ({"trex": {"original_input_tokens": 10**9 + 1}}, "trex_accounting.trex.original_input_tokens"),
    ],
)
def test_bad_trex_accounting_is_a_400_naming_the_field(
    gateway: GatewaySetup, accounting: Any, param: str
) -> None:
    before = len(gateway.fake.received)
    body = {"model": "gpt-4o-mini", "messages": MESSAGES, "trex_accounting": accounting}
    r = HTTP.post(
        gateway.worker.url + "/v1/chat/completions",
        json=body,
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert r.status_code == 400
    assert r.json()["error"]["param"] == param and param in r.json()["error"]["message"]
    r = HTTP.post(
        gateway.worker.url + "/v1/messages",
        json={
            "model": "claude-sonnet-4-6",
            "max_tokens": 5,
            "messages": MESSAGES[1:],
            "trex_accounting": accounting,
        },
        headers={"x-api-key": gateway.key},
    )
    assert r.status_code == 400
    assert r.json()["type"] == "error" and param in r.json()["error"]["message"]
    assert len(gateway.fake.received) == before  # nothing reached the upstream


def test_streamed_chat_is_reconciled_from_the_usage_chunk(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    with client.chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body=OFF
    ) as resp:
        event_id = resp.headers["X-Trex-Usage-Event-Id"]
        chunks = list(resp.iter_lines())
    assert chunks
    event = wait_final(gateway, event_id)
    assert event["stream"] is True and event["outcome"] == "completed"
    assert event["usage_source"] == "upstream"
    last = [json.loads(line[6:]) for line in open_sse("openai/chat_text.sse") if line.startswith("data: {")][
        -1
    ]
    assert event["billed"]["input_tokens"] == last["usage"]["prompt_tokens"]
    assert event["billed"]["output_tokens"] == last["usage"]["completion_tokens"]


def open_sse(fixture: str) -> list[str]:
    from tests.fakes.upstream import fixture_bytes

    return fixture_bytes(fixture).decode().splitlines()


def test_anthropic_stream_through_the_sdk_is_reconciled(gateway: GatewaySetup) -> None:
    with gateway.anthropic().messages.stream(
        model="claude-sonnet-4-6", max_tokens=100, messages=[{"role": "user", "content": "hi"}]
    ) as stream:
        final = stream.get_final_message()
        event_id = stream.response.headers["X-Trex-Usage-Event-Id"]
    event = wait_final(gateway, event_id)
    assert event["billed"]["output_tokens"] == final.usage.output_tokens
    assert event["billed"]["cached_input_tokens"] == final.usage.cache_read_input_tokens


def test_stream_cut_by_the_upstream_is_estimated_from_what_was_streamed(gateway: GatewaySetup) -> None:
    gateway.fake.set("/v1/chat/completions", Reply.stream("openai/chat_text.sse", drop_after=6))
    with gateway.openai().chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body=OFF
    ) as resp:
        event_id = resp.headers["X-Trex-Usage-Event-Id"]
        body = "\n".join(resp.iter_lines())
    assert "error" in body  # the client stream ended with an error event
    event = wait_final(gateway, event_id)
    assert event["outcome"] == "upstream_failed" and event["usage_source"] == "estimated"
    assert event["billed"]["input_tokens"] == event["optimized_input_tokens"]
    assert 0 < event["billed"]["output_tokens"] < 20


def test_a_claude_stream_cut_off_bills_the_input_anthropic_reported(gateway: GatewaySetup) -> None:
    """message_start carries the input and its cache split: only the output is estimated."""
    gateway.fake.set("/v1/messages", Reply.stream("anthropic/message_text.sse", drop_after=5))
    r = HTTP.post(
        gateway.worker.url + "/v1/messages",
        json={"model": "claude-sonnet-4-6", "max_tokens": 100, "stream": True, "messages": MESSAGES[1:]},
        headers={"x-api-key": gateway.key},
    )
    assert r.status_code == 200 and "event: error" in r.text
    event = wait_final(gateway, r.headers["X-Trex-Usage-Event-Id"])
    assert event["outcome"] == "upstream_failed" and event["usage_source"] == "estimated"
    start = json.loads(open_sse("anthropic/message_text.sse")[1][6:])["message"]["usage"]
    billed = event["billed"]
    assert billed["input_tokens"] == start["input_tokens"] + start["cache_read_input_tokens"]
    assert billed["cached_input_tokens"] == start["cache_read_input_tokens"]
    assert billed["output_tokens"] == len(tiktoken.get_encoding("o200k_base").encode("Hello! I'm"))


def test_an_answer_without_usage_bills_its_output_estimated_from_its_text(gateway: GatewaySetup) -> None:
    answer = fixture_json("openai/chat_tool_calls.json")
    del answer["usage"]
    gateway.fake.set("/v1/chat/completions", Reply.json(answer))
    r = HTTP.post(
        gateway.worker.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "trex": OFF["trex"]},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert r.status_code == 200, r.text
    event = wait_final(gateway, r.headers["X-Trex-Usage-Event-Id"])
    assert event["usage_source"] == "estimated"
    message = answer["choices"][0]["message"]
    produced = (message.get("content") or "") + "".join(
        call["function"]["arguments"] for call in message["tool_calls"]
    )
    enc = tiktoken.get_encoding("o200k_base")
    assert event["billed"]["output_tokens"] == len(enc.encode(produced)) > 0
    assert event["billed"]["input_tokens"] == event["optimized_input_tokens"]


def test_client_disconnect_is_reconciled_from_what_was_streamed(gateway: GatewaySetup) -> None:
    gateway.fake.set("/v1/chat/completions", Reply.stream("openai/chat_text.sse", chunk_delay=0.2))
    with gateway.openai().chat.completions.with_streaming_response.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, extra_body=OFF
    ) as resp:
        event_id = resp.headers["X-Trex-Usage-Event-Id"]
        lines = resp.iter_lines()
        first = next(line for line in lines if line.startswith("data: "))
        assert json.loads(first[6:])["object"] == "chat.completion.chunk"
    # Leaving the block closed the connection after the first chunk: the client went away mid-stream.
    event = wait_final(gateway, event_id)
    assert event["outcome"] == "client_disconnected" and event["usage_source"] == "estimated"
    assert event["billed"]["input_tokens"] == event["optimized_input_tokens"]
    deadline = time.monotonic() + 5
    while gateway.fake.streams_aborted < 1 and time.monotonic() < deadline:
        time.sleep(0.05)
    assert gateway.fake.streams_aborted == 1  # and the worker stopped reading the upstream


def test_upstream_errors_produce_a_final_event_with_nothing_billed(gateway: GatewaySetup) -> None:
    gateway.fake.set("/v1/chat/completions", Reply.json("openai/error_rate_limit.json", status=429))
    r = HTTP.post(
        gateway.worker.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert r.status_code == 429
    event = wait_final(gateway, r.headers["X-Trex-Usage-Event-Id"])
    assert event["http_status"] == 429 and event["outcome"] == "upstream_error"
    assert event["billed"]["input_tokens"] == 0 and event["actual_cost_usd"] == 0.0
    assert event["savings_usd"] == 0.0


def test_events_belong_to_the_key_that_made_them(gateway: GatewaySetup) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    event_id = raw.headers["X-Trex-Usage-Event-Id"]
    wait_final(gateway, event_id)
    _, other = gateway.new_key("other")
    r = _get(gateway, f"/v1/usage/events/{event_id}", other)
    assert r.status_code == 404 and r.json()["error"]["code"] == "usage_event_not_found"
    assert _get(gateway, "/v1/usage/events/ue_nonsense").status_code == 404
    assert _get(gateway, "/v1/usage", "trex_not_a_key").status_code == 401


def test_totals_equal_the_sum_of_the_events(gateway: GatewaySetup) -> None:
    events = []
    for model in ("gpt-4o-mini", "gpt-4o-mini", "gpt-4.1", "claude-sonnet-4-6"):
        if model.startswith("claude"):
            raw = gateway.anthropic().messages.with_raw_response.create(
                model=model, max_tokens=10, messages=[{"role": "user", "content": "hi"}]
            )
        else:
            raw = gateway.openai().chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        events.append(wait_final(gateway, raw.headers["X-Trex-Usage-Event-Id"]))
    r = _get(gateway, "/v1/usage", group_by="model")
    assert r.status_code == 200, r.text
    summary = r.json()
    totals = summary["totals"]
    assert totals["requests"] == len(events) == totals["final_requests"]
    assert totals["billed_input_tokens"] == sum(e["billed"]["input_tokens"] for e in events)
    assert totals["billed_output_tokens"] == sum(e["billed"]["output_tokens"] for e in events)
    assert totals["original_input_tokens"] == sum(e["original_input_tokens"] for e in events)
    assert totals["actual_cost_usd"] == pytest.approx(sum(e["actual_cost_usd"] for e in events), abs=1e-6)
    assert totals["baseline_cost_usd"] == pytest.approx(
        sum(e["baseline"]["cost_usd"] for e in events), abs=1e-6
    )
    groups = {g["model"]: g for g in summary["groups"]}
    assert set(groups) == {"gpt-4o-mini", "gpt-4.1", "claude-sonnet-4-6"}
    assert groups["gpt-4o-mini"]["requests"] == 2
    by_provider = {
        g["provider"]: g["requests"] for g in _get(gateway, "/v1/usage", group_by="provider").json()["groups"]
    }
    assert by_provider == {"openai": 3, "anthropic": 1}
    days = _get(gateway, "/v1/usage", group_by="day").json()["groups"]
    assert [g["day"] for g in days] == [time.strftime("%Y-%m-%d", time.gmtime())]
    # A range that ends before today holds nothing; bad parameters are named.
    assert (
        _get(gateway, "/v1/usage", to="2020-01-01", **{"from": "2020-01-01"}).json()["totals"]["requests"]
        == 0
    )
    bad = _get(gateway, "/v1/usage", group_by="week")
    assert bad.status_code == 400 and bad.json()["error"]["param"] == "group_by"
    assert _get(gateway, "/v1/usage", **{"from": "yesterday"}).json()["error"]["param"] == "from"
    # Bounds past what a date can hold: the earliest reads as "from the start", a later end is refused.
    ancient = _get(gateway, "/v1/usage", to="0001-01-02", **{"from": "0001-01-01"}).json()
    assert (ancient["from"], ancient["to"], ancient["totals"]["requests"]) == (
        "1970-01-01T00:00:00Z",
    ) * 2 + (0,)
    late = _get(gateway, "/v1/usage", to="9999-12-31T23:59:59-01:00")
    assert late.status_code == 400 and late.json()["error"]["param"] == "to"


def test_unknown_model_has_null_cost(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    worker = make_worker(
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
        extra='[[models]]\nname = "house-model"\nprovider = "openai"\n',
    )
    record, token = worker.call(worker.app[GATEWAY].keys.create("t"))
    worker.call(worker.app[GATEWAY].keys.bind(record.id, "openai", UPSTREAM_KEYS["openai"]))
    r = HTTP.post(
        worker.url + "/v1/chat/completions",
        json={"model": "house-model", "messages": MESSAGES},
        headers={"Authorization": f"Bearer {token}"},
    )
    assert r.status_code == 200
    setup = GatewaySetup(worker, fake_upstream, token, record.id)
    event = wait_final(setup, r.headers["X-Trex-Usage-Event-Id"])
    assert event["priced_as"] is None
    assert event["actual_cost_usd"] is None and event["savings_usd"] is None
    assert event["baseline"]["cost_usd"] is None
    totals = _get(setup, "/v1/usage").json()["totals"]
    assert totals["unpriced_requests"] == 1 and totals["actual_cost_usd"] == 0


def test_configured_prices_override_the_built_in_table(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    worker = make_worker(
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
        extra='[pricing."gpt-4o-mini"]\ninput = 1.0\ncached_input = 0.5\noutput = 2.0\n',
    )
    record, token = worker.call(worker.app[GATEWAY].keys.create("t"))
    r = HTTP.post(
        worker.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, **OFF},
        headers={"Authorization": f"Bearer {token}", "X-Upstream-Api-Key": "sk-x"},
    )
    event = wait_final(
        GatewaySetup(worker, fake_upstream, token, record.id), r.headers["X-Trex-Usage-Event-Id"]
    )
    u = fixture_json("openai/chat_text.json")["usage"]
    cached = u["prompt_tokens_details"]["cached_tokens"]
    expected = _usd(u["prompt_tokens"] - cached, 1.0) + _usd(cached, 0.5) + _usd(u["completion_tokens"], 2.0)
    assert event["actual_cost_usd"] == pytest.approx(expected)


def test_guarantee_status_tracks_then_meets_the_plan_price(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    worker = make_worker(
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
        extra="[plans.pro_edge]\nmonthly_price_usd = 0.01\nguarantee = true\n[plans.free]\n",
    )
    keys = worker.app[GATEWAY].keys
    record, token = worker.call(keys.create("pro", plan="pro_edge"))
    _, free = worker.call(keys.create("free", plan="free"))
    headers = {"Authorization": f"Bearer {token}", "X-Upstream-Api-Key": "sk-x"}
    setup = GatewaySetup(worker, fake_upstream, token, record.id)

    def call(accounting: dict[str, Any] | None = None, key_headers: dict[str, str] = headers) -> _Resp:
        body: dict[str, Any] = {"model": "gpt-4o-mini", "messages": MESSAGES}
        if accounting:
            body["trex_accounting"] = accounting
        return HTTP.post(worker.url + "/v1/chat/completions", json=body, headers=key_headers)

    first = call()
    assert first.headers["X-Trex-Guarantee-Status"] == "tracking"
    wait_final(setup, first.headers["X-Trex-Usage-Event-Id"])
    # 100k baseline input tokens at $0.15/M is $0.015 of savings: more than the $0.01 plan price.
    big = call({"baseline_usage": {"input_tokens": 100_000}})
    assert big.headers["X-Trex-Guarantee-Status"] == "tracking"
    event = wait_final(setup, big.headers["X-Trex-Usage-Event-Id"])
    assert event["savings_usd"] > 0.01
    assert call().headers["X-Trex-Guarantee-Status"] == "met"
    other = call(key_headers={"Authorization": f"Bearer {free}", "X-Upstream-Api-Key": "sk-x"})
    assert other.headers["X-Trex-Guarantee-Status"] == "not_applicable"


def test_events_survive_a_restart_and_a_graceful_shutdown_flushes_them(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    # A flush interval far longer than the test: only the shutdown flush can have written the events.
    variables = {"USAGE_FLUSH_SECONDS": 3600}
    worker = make_worker(variables, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    record, token = worker.call(worker.app[GATEWAY].keys.create("t"))
    headers = {"Authorization": f"Bearer {token}", "X-Upstream-Api-Key": "sk-x"}
    ids = []
    for _ in range(3):
        r = HTTP.post(
            worker.url + "/v1/chat/completions",
            json={"model": "gpt-4o-mini", "messages": MESSAGES},
            headers=headers,
        )
        ids.append(r.headers["X-Trex-Usage-Event-Id"])
    setup = GatewaySetup(worker, fake_upstream, token, record.id)
    before = [wait_final(setup, i) for i in ids]
    assert worker.call(worker.app[GATEWAY].kv.list(prefix="usage/ev/")).keys == []  # not flushed yet
    worker.stop()
    again = make_worker(variables, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    after = [wait_final(GatewaySetup(again, fake_upstream, token, record.id), i) for i in ids]
    assert after == before
    totals = _get(GatewaySetup(again, fake_upstream, token, record.id), "/v1/usage").json()["totals"]
    assert totals["requests"] == 3


def test_a_stream_cut_off_by_a_shutdown_is_billed_as_streamed(
    tmp_path: Path, fake_upstream: FakeUpstream, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    """A shutdown whose grace period ends mid-stream: the client got a 200 and part of the stream, so the
    upstream billed it; the event is estimated from what was streamed, not recorded as a free failure."""
    config = write_config(tmp_path, fake_upstream.base_urls(), dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    token = json.loads(trex("keys", "create", "--config", str(config), "--name", "k", "--json").stdout)["key"]
    fake_upstream.set("/v1/chat/completions", Reply.stream("openai/chat_text.sse", chunk_delay=0.5))
    worker = spawn_worker(config, "--grace-seconds", "1")
    headers = {"Authorization": f"Bearer {token}", "X-Upstream-Api-Key": "sk-x"}
    body = {
        "model": "gpt-4o-mini",
        "stream": True,
        "messages": MESSAGES,
        "trex": {"optimize": {"mode": "off"}},
    }
    got: dict[str, Any] = {}

    def client() -> None:
        req = urllib.request.Request(
            worker.url + "/v1/chat/completions",
            data=json.dumps(body).encode(),
            method="POST",
            headers={"Content-Type": "application/json", **headers},
        )
        with urllib.request.urlopen(req, timeout=30) as r:
            got["status"], got["event"] = r.status, r.headers["X-Trex-Usage-Event-Id"]
            streamed = b""
            with contextlib.suppress(http.client.HTTPException, OSError):  # the stream ends cut off
                while chunk := r.read1(65536):
                    streamed += chunk
            got["events"] = streamed.count(b"data:")

    reader = threading.Thread(target=client)
    reader.start()
    time.sleep(1.6)  # a few events are out
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    reader.join(20)
    assert got["status"] == 200 and got["events"] > 0
    again = spawn_worker(config)
    r = HTTP.get(again.url + f"/v1/usage/events/{got['event']}", headers=headers)
    event = r.json()
    assert event["status"] == "final" and event["outcome"] == "interrupted" and event["http_status"] == 200
    assert event["usage_source"] == "estimated" and event["billed"]["output_tokens"] > 0


def test_a_busy_worker_writes_its_events_before_the_interval(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """However long the flush interval, a worker never holds more than FLUSH_AT requests' events and
    request-log entries in memory: reaching that many starts a write at once."""
    worker = make_worker({"USAGE_FLUSH_SECONDS": 3600}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    _, token = worker.call(worker.app[GATEWAY].keys.create("busy"))
    headers = {"Authorization": f"Bearer {token}", "X-Upstream-Api-Key": "sk-x"}
    body = {"model": "gpt-4o-mini", "messages": MESSAGES}
    kv = worker.app[GATEWAY].kv

    def stored(prefix: str) -> int:
        return len(worker.call(kv.list(prefix=prefix)).keys)

    for _ in range(FLUSH_AT - 1):
        assert HTTP.post(worker.url + "/v1/chat/completions", json=body, headers=headers).status_code == 200
    time.sleep(0.3)
    assert stored("usage/ev/") == 0  # under the threshold: they wait for the interval
    assert HTTP.post(worker.url + "/v1/chat/completions", json=body, headers=headers).status_code == 200
    deadline = time.monotonic() + 10
    while (stored("usage/ev/"), stored("logs/")) != (FLUSH_AT, FLUSH_AT) and time.monotonic() < deadline:
        time.sleep(0.05)
    assert (stored("usage/ev/"), stored("logs/")) == (FLUSH_AT, FLUSH_AT)


def test_accounting_off_sends_no_event_and_says_so(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    worker = make_worker({"USAGE_ACCOUNTING": "off"}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    _, token = worker.call(worker.app[GATEWAY].keys.create("t"))
    headers = {"Authorization": f"Bearer {token}", "X-Upstream-Api-Key": "sk-x"}
    r = HTTP.post(
        worker.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES},
        headers=headers,
    )
    assert r.status_code == 200 and "X-Trex-Usage-Event-Id" not in r.headers
    r = HTTP.get(worker.url + "/v1/usage", headers=headers)
    assert r.status_code == 404 and r.json()["error"]["code"] == "usage_accounting_off"
    # The request log does not depend on accounting.
    logged = HTTP.get(worker.url + "/v1/logs", headers=headers).json()["data"]
    assert [e["route"] for e in logged] == ["/v1/usage", "/v1/chat/completions"]
    assert "usage_event_id" not in logged[1]


def test_trex_usage_prints_the_same_totals(gateway: GatewaySetup) -> None:
    for model in ("gpt-4o-mini", "gpt-4.1"):
        raw = gateway.openai().chat.completions.with_raw_response.create(model=model, messages=MESSAGES)
        wait_final(gateway, raw.headers["X-Trex-Usage-Event-Id"])
    served = _get(gateway, "/v1/usage", group_by="model").json()  # also flushes the worker's events
    config = gateway.worker.app[CONFIG].source
    out = trex("usage", "--config", config, "--group-by", "model", "--json")
    assert out.returncode == 0, out.stderr
    printed = json.loads(out.stdout)
    assert printed["totals"] == served["totals"] and printed["groups"] == served["groups"]
    text = trex("usage", "--config", config, "--key", gateway.key_id, "--group-by", "model")
    lines = text.stdout.decode().splitlines()
    assert lines[1].split()[:2] == ["MODEL", "REQUESTS"]
    assert [line.split()[0] for line in lines[2:]] == ["gpt-4.1", "gpt-4o-mini", "TOTAL"]
    assert lines[-1].split()[1] == "2"
    bad = trex("usage", "--config", config, "--from", "someday")
    assert bad.returncode == 2 and b"'from'" in bad.stderr  # an argument refused: bad usage
    unknown = trex("usage", "--config", config, "--key", "key_mistyped")
    assert unknown.returncode == 1 and b"key_mistyped" in unknown.stderr and not unknown.stdout
    quiet, _ = gateway.new_key("quiet")  # a real key without requests: an empty table, not an error
    empty = trex("usage", "--config", config, "--key", quiet, "--json")
    assert empty.returncode == 0 and json.loads(empty.stdout)["totals"]["requests"] == 0


def test_embeddings_produce_an_event_counted_and_billed(gateway: GatewaySetup) -> None:
    texts = ["refund ORD-1042 for $1,250.00", "the cap is enforced in payments.py"]
    raw = gateway.openai().embeddings.with_raw_response.create(model="text-embedding-3-small", input=texts)
    assert 0 < float(raw.headers["X-Trex-Proxy-Overhead-Ms"]) < 10_000  # like every proxied request
    event = wait_final(gateway, raw.headers["X-Trex-Usage-Event-Id"])
    enc = tiktoken.get_encoding("cl100k_base")
    assert event["token_count_encoding"] == "cl100k_base"
    assert event["original_input_tokens"] == sum(len(enc.encode_ordinary(t)) for t in texts)
    assert event["billed"]["input_tokens"] == fixture_json("openai/embeddings.json")["usage"]["prompt_tokens"]
    assert event["billed"]["output_tokens"] == 0
    assert event["actual_cost_usd"] == pytest.approx(_usd(event["billed"]["input_tokens"], 0.02))


@pytest.mark.parametrize(
    ("extra", "variables", "key"),
    [
        ('[pricing."m"]\ninput = 1\n', {}, "pricing.m"),
        ('[pricing."m"]\ninput = "cheap"\noutput = 1\n', {}, "pricing.m.input"),
        ("[plans.pro]\nguarantee = true\n", {}, "plans.pro.guarantee"),
        ("[plans.pro]\nmonthly_price_usd = -5\n", {}, "plans.pro.monthly_price_usd"),
        ("", {"USAGE_ACCOUNTING": "maybe"}, "vars.USAGE_ACCOUNTING"),
    ],
)
def test_bad_accounting_config_is_a_config_error(
    tmp_path: Any, extra: str, variables: dict[str, str], key: str
) -> None:
    from tests.harness import load_test_config, write_config
    from worker.config import ConfigError
    from worker.gateway import build_gateway

    config = load_test_config(write_config(tmp_path, variables, extra=extra))
    with pytest.raises(ConfigError) as err:
        build_gateway(config, None)  # type: ignore[arg-type]
    assert err.value.key == key


def test_request_log_has_one_entry_per_authenticated_request_newest_first(gateway: GatewaySetup) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=MESSAGES)
    proxied_event = raw.headers["X-Trex-Usage-Event-Id"]
    bad = HTTP.post(
        gateway.worker.url + "/v1/chat/completions",
        json={"model": "gpt-4o-mini", "messages": MESSAGES, "trex_accounting": "bad"},
        headers={"Authorization": f"Bearer {gateway.key}"},
    )
    assert bad.status_code == 400
    assert _get(gateway, "/v1/models").status_code == 200
    HTTP.get(
        gateway.worker.url + "/v1/models", headers={"Authorization": "Bearer trex_unknown"}
    )  # no key: no entry
    page = _get(gateway, "/v1/logs", limit="2")
    assert page.status_code == 200, page.text
    doc = page.json()
    assert [e["route"] for e in doc["data"]] == ["/v1/models", "/v1/chat/completions"]
    assert doc["data"][0]["status"] == 200 and doc["data"][1]["status"] == 400
    assert doc["has_more"] is True and doc["next_cursor"]
    rest = _get(gateway, "/v1/logs", cursor=doc["next_cursor"]).json()
    assert [e["route"] for e in rest["data"]] == ["/v1/chat/completions"] and rest["has_more"] is False
    entry = rest["data"][0]
    assert entry["usage_event_id"] == proxied_event and entry["model"] == "gpt-4o-mini"
    assert entry["billed_input_tokens"] == fixture_json("openai/chat_text.json")["usage"]["prompt_tokens"]
    assert entry["request_id"] == raw.headers["X-Request-Id"] and entry["key_id"] == gateway.key_id
    assert gateway.key not in json.dumps(doc) + json.dumps(rest)  # no secrets in the log
    assert "messages" not in json.dumps(entry)  # no bodies
    _, other = gateway.new_key("other")
    assert _get(gateway, "/v1/logs", other).json()["data"] == []  # a key sees only its own entries
    assert _get(gateway, "/v1/logs", limit="0").json()["error"]["param"] == "limit"
    assert _get(gateway, "/v1/logs", cursor="!!").json()["error"]["param"] == "cursor"
    config = gateway.worker.app[CONFIG].source
    printed = trex("logs", gateway.key_id, "--config", config, "--json")
    assert printed.returncode == 0, printed.stderr
    data = json.loads(printed.stdout)["data"]
    assert [e.get("usage_event_id") for e in data if e["route"] == "/v1/chat/completions"] == [
        None,
        proxied_event,
    ]
    text = trex("logs", gateway.key_id, "--config", config, "--limit", "20").stdout.decode()
    assert text.splitlines()[0].split()[:3] == ["TIME", "STATUS", "MS"] and "/v1/chat/completions" in text
    # A mistyped key id is an error, as in `trex keys` and `trex credits`, not an empty log.
    unknown = trex("logs", "key_nope", "--config", config)
    assert unknown.returncode == 1 and unknown.stdout == b""
    assert unknown.stderr.decode() == "trex: error: No proxy key with id 'key_nope'.\n"
    other_id, _ = gateway.new_key("quiet")
    quiet = trex("logs", other_id, "--config", config, "--json")  # a key with no requests yet: an empty log
    assert quiet.returncode == 0 and json.loads(quiet.stdout)["data"] == []
    # A deleted key's history stays, and can still be read.
    gateway.worker.call(gateway.worker.app[GATEWAY].keys.delete(gateway.key_id))
    kept = trex("logs", gateway.key_id, "--config", config, "--json")
    assert kept.returncode == 0 and json.loads(kept.stdout)["data"]


def _send_then_hang_up(
    gateway: GatewaySetup, path: str, doc: dict[str, Any], after: float = 0.3, first_byte: bool = False
) -> None:
    """Send a request on a raw socket and close it `after` seconds later (after its first byte arrived if
    `first_byte`), without reading the answer."""
    body = json.dumps(doc).encode()
    host, port = gateway.worker.url.removeprefix("http://").split(":")
    with socket.create_connection((host, int(port))) as conn:
        conn.sendall(
            f"POST {path} HTTP/1.1\r\nHost: x\r\nContent-Type: application/json\r\n".encode()
            + f"Authorization: Bearer {gateway.key}\r\nContent-Length: {len(body)}\r\n\r\n".encode()
            + body
        )
        if first_byte:
            conn.recv(1)
        time.sleep(after)


def _the_final_event(gateway: GatewaySetup) -> Any:
    """The only usage event, once it is final."""
    kv, deadline = gateway.worker.app[GATEWAY].kv, time.monotonic() + 10
    while True:
        usage = gateway.worker.app[GATEWAY].usage
        assert usage is not None
        gateway.worker.call(usage.flush())
        stored = gateway.worker.call(kv.list(prefix="usage/ev/")).keys
        if stored and stored[0].metadata and stored[0].metadata.get("s") == "final":
            assert len(stored) == 1
            return msgspec.json.decode(gateway.worker.call(kv.get(stored[0].name)))
        assert time.monotonic() < deadline, "the event was not reconciled"
        time.sleep(0.1)


def _until(condition: Callable[[], bool], seconds: float = 10) -> bool:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            return False
        time.sleep(0.05)
    return True


def test_a_client_that_leaves_before_the_first_byte_is_not_an_upstream_failure(gateway: GatewaySetup) -> None:
    """The upstream is slow to start a stream and the client hangs up meanwhile: the event says the client
    went away (what was used is estimated), not that the upstream failed."""
    gateway.fake.set("/v1/chat/completions", Reply.stream("openai/chat_text.sse", latency=1.0))
    _send_then_hang_up(
        gateway,
        "/v1/chat/completions",
        {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
    )
    event = _the_final_event(gateway)
    assert event["outcome"] == "client_disconnected" and event["usage_source"] == "estimated"


@pytest.mark.parametrize(
    ("path", "doc", "answer"),
    [
        ("/v1/chat/completions", {"model": "gpt-4o-mini", "messages": MESSAGES}, "openai/chat_text.json"),
        (
            "/v1/messages",
            {"model": "claude-sonnet-4-5", "max_tokens": 50, "messages": MESSAGES[1:]},
            "anthropic/message_text.json",
        ),
        ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hello"}, "openai/embeddings.json"),
    ],
)
def test_a_client_that_hangs_up_on_a_slow_answer_stops_the_upstream_call(
    gateway: GatewaySetup, path: str, doc: dict[str, Any], answer: str
) -> None:
    """The upstream takes long to answer and the client hangs up: the worker drops the upstream call at once
    (it would answer after 60 s) instead of paying for an answer nobody reads, and the event says so."""
    gateway.fake.set(path, Reply.json(answer, latency=60))
    _send_then_hang_up(gateway, path, doc)
    assert _until(lambda: gateway.fake.abandoned == 1), "the upstream call went on after the client left"
    event = _the_final_event(gateway)
    assert event["outcome"] == "client_disconnected" and event["usage_source"] == "estimated"


def test_a_client_that_hangs_up_while_the_stream_is_idle_stops_it_at_once(gateway: GatewaySetup) -> None:
    """A model that pauses between events (thinking) does not keep a stream to a departed client open until
    its next event: the upstream stream is dropped when the client hangs up."""
    gateway.fake.set("/v1/chat/completions", Reply.stream("openai/chat_text.sse", chunk_delay=60))
    doc = {"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True}
    _send_then_hang_up(gateway, "/v1/chat/completions", doc, first_byte=True)
    assert _until(lambda: gateway.fake.streams_aborted == 1), (
        "the upstream stream went on after the client left"
    )
    assert gateway.fake.active_streams == 0
    event = _the_final_event(gateway)
    assert event["outcome"] == "client_disconnected"


def test_a_shutdown_ends_within_its_grace_period(
    tmp_path: Path, fake_upstream: FakeUpstream, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    """`--grace-seconds` bounds the shutdown: a request still waiting on a slow upstream is cut off within it
    (aiohttp's own wait took twice as long)."""
    config = write_config(tmp_path, fake_upstream.base_urls(), dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    token = json.loads(trex("keys", "create", "--config", str(config), "--name", "k", "--json").stdout)["key"]
    fake_upstream.set("/v1/chat/completions", Reply.json("openai/chat_text.json", latency=30))
    worker = spawn_worker(config, "--grace-seconds", "3")
    headers = {"Authorization": f"Bearer {token}", "X-Upstream-Api-Key": "sk-x"}

    def call() -> None:
        with contextlib.suppress(Exception):
            HTTP.post(
                worker.url + "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": MESSAGES},
                headers=headers,
            )

    cut_at: list[float] = []
    caller = threading.Thread(target=lambda: (call(), cut_at.append(time.monotonic())))
    caller.start()
    time.sleep(0.5)  # the request is waiting on the upstream
    started = time.monotonic()
    worker.signal(signal.SIGTERM)
    assert worker.wait(20) == 0
    assert time.monotonic() - started < 4.5  # 3 s of grace, plus writing the last events (was about 6 s)
    caller.join(10)
    # In-flight requests get half of it (wait_until tasks the other half): it was cut off at the full 3 s.
    assert cut_at and cut_at[0] - started < 2.3
