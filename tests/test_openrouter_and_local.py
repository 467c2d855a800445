"""OpenRouter's and local servers' ways, as their clients see them through the worker: OpenRouter's usage
chunk and its errors (inside a 200 body, or as a chunk mid-stream), and local servers that space their JSON."""

from __future__ import annotations

import asyncio
import json
import time
from typing import Any

import aiohttp
import anthropic
import openai
import pytest

from tests.conftest import GatewaySetup
from tests.fakes.upstream import Reply, fixture_bytes
from tests.test_usage import wait_final

MESSAGES: list[dict[str, Any]] = [{"role": "user", "content": "hi"}]
OPENROUTER = "/api/v1/chat/completions"


def _chunk(delta: dict[str, Any], finish: str | None = None, **extra: Any) -> bytes:
    doc = {
        "id": "gen-1",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "openai/gpt-4o-mini",
        "choices": [{"index": 0, "delta": delta, "finish_reason": finish}],
        **extra,
    }
    return b"data: " + json.dumps(doc).encode() + b"\n\n"


def test_openrouters_usage_chunk_reaches_its_streaming_clients(gateway: GatewaySetup) -> None:
    """OpenRouter sends its usage (with the cost) as a last chunk whatever the client asked; a client of
    OpenRouter reads it there, so it is passed on."""
    chunks = list(
        gateway.openai().chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES, stream=True)  # type: ignore[call-overload]
    )
    usage = [c.usage for c in chunks if c.usage is not None]
    assert (
        len(usage) == 1
        and usage[0].prompt_tokens == 14
        and usage[0].model_extra["cost"] == pytest.approx(6.3e-06)
    )


def test_a_local_servers_spaced_usage_chunk_is_still_held_back(gateway: GatewaySetup) -> None:
    """The usage chunk the worker asks for is not passed to a client that did not ask, however the server
    spaces its JSON (Python's json.dumps writes `"usage": {`)."""
    spaced = (
        _chunk({"role": "assistant", "content": "hi"}).replace(b'{"id"', b'{ "id"')
        + _chunk({}, "stop")
        + b'data: {"id": "x", "object": "chat.completion.chunk", "created": 1, "model": "m", "choices": [], '
        b'"usage": {"prompt_tokens": 3, "completion_tokens": 1, "total_tokens": 4}}\n\n' + b"data: [DONE]\n\n"
    )
    gateway.fake.set("/local/v1/chat/completions", Reply.stream(spaced))
    chunks = list(gateway.openai().chat.completions.create(model="local/m", messages=MESSAGES, stream=True))  # type: ignore[call-overload]
    assert chunks and all(c.choices for c in chunks)


@pytest.mark.parametrize("route", ["chat", "messages"])
def test_an_openrouter_error_in_a_200_body_is_an_error_billed_nothing(
    gateway: GatewaySetup, route: str
) -> None:
    """OpenRouter reports a failure met after it began as HTTP 200 with only an `error`: the client gets an
    error with OpenRouter's status and message (and which provider failed), nothing is billed."""
    failure = {
        "error": {
            "code": 502,
            "message": "Provider returned error",
            "metadata": {"provider_name": "Together", "raw": "upstream overloaded"},
        }
    }
    gateway.fake.set(OPENROUTER, Reply.json(failure))
    if route == "chat":
        with pytest.raises(openai.APIStatusError) as err:
            gateway.openai().chat.completions.with_raw_response.create(
                model="openai/gpt-4o-mini", messages=MESSAGES
            )  # type: ignore[arg-type]
        status, headers = err.value.status_code, err.value.response.headers
    else:
        with pytest.raises(anthropic.APIStatusError) as aerr:
            gateway.anthropic().messages.create(model="openai/gpt-4o-mini", max_tokens=20, messages=MESSAGES)  # type: ignore[arg-type]
        status, headers = aerr.value.status_code, aerr.value.response.headers
        assert "Together" in aerr.value.message and "upstream overloaded" in aerr.value.message
    assert status == 502
    event = wait_final(gateway, headers["X-Trex-Usage-Event-Id"])
    assert event["outcome"] == "upstream_error" and event["billed"]["input_tokens"] == 0


def _failure_in_200(code: int) -> Reply:
    return Reply.json({"error": {"code": code, "message": f"failed with {code}", "metadata": {"raw": "x"}}})


def test_a_retryable_error_in_a_200_body_is_retried_then_falls_back(gateway: GatewaySetup) -> None:
    """OpenRouter's 502 inside a 200 body is a 502 to the retry rules: retried on the route, then the next
    fallback answers, and the usage event lists the failed attempts with the status they stood for."""
    gateway.fake.enqueue(OPENROUTER, _failure_in_200(502))
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["X-Trex-Fallback-Attempts"] == "1"
    assert [r.path for r in gateway.fake.received] == [OPENROUTER, OPENROUTER]  # the retry answered
    gateway.fake.reset()
    gateway.fake.enqueue(OPENROUTER, _failure_in_200(503), _failure_in_200(503))  # the route and its retry
    fallback = {"trex": {"routing": {"fallbacks": [{"provider": "openai", "model": "gpt-4o-mini"}]}}}
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="openai/gpt-4o-mini",
        messages=MESSAGES,  # type: ignore[arg-type]
        extra_body=fallback,
    )
    assert raw.parse().choices[0].message.content
    assert raw.headers["X-Trex-Upstream-Provider"] == "openai"
    event = wait_final(gateway, raw.headers["X-Trex-Usage-Event-Id"])
    assert [(a["provider"], a["status"]) for a in event["attempts"]] == [
        ("openrouter", 503),
        ("openrouter", 503),
        ("openai", 200),
    ]


@pytest.mark.parametrize("code", [400, 500])
def test_an_error_in_a_200_body_that_is_not_retryable_is_returned_at_once(
    gateway: GatewaySetup, code: int
) -> None:
    gateway.fake.enqueue(OPENROUTER, _failure_in_200(code))
    fallback = {"trex": {"routing": {"fallbacks": [{"provider": "openai", "model": "gpt-4o-mini"}]}}}
    with pytest.raises(openai.APIStatusError) as err:
        gateway.openai().chat.completions.create(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            extra_body=fallback,
        )
    assert err.value.status_code == code and f"failed with {code}" in err.value.message
    assert err.value.response.headers["X-Trex-Fallback-Attempts"] == "0"
    assert [r.path for r in gateway.fake.received] == [OPENROUTER]


@pytest.mark.parametrize("route", ["chat", "messages"])
def test_an_openrouter_error_chunk_ends_the_stream_once_and_is_recorded_as_a_failure(
    gateway: GatewaySetup, route: str
) -> None:
    error_chunk = _chunk(
        {"content": ""}, "error", error={"code": "server_error", "message": "Provider disconnected"}
    )
    gateway.fake.set(OPENROUTER, Reply.stream(_chunk({"role": "assistant", "content": "Par"}) + error_chunk))
    if route == "chat":
        raw = gateway.openai().chat.completions.with_raw_response.create(
            model="openai/gpt-4o-mini",
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        body = raw.http_response.read()
        assert b"Provider disconnected" in body and b"ended before completion" not in body  # no second error
    else:
        raw = gateway.anthropic().messages.with_raw_response.create(
            model="openai/gpt-4o-mini",
            max_tokens=20,
            messages=MESSAGES,  # type: ignore[arg-type]
            stream=True,
        )
        body = raw.http_response.read()
        assert body.count(b"event: error") == 1
    event = wait_final(gateway, raw.headers["X-Trex-Usage-Event-Id"])
    assert event["outcome"] == "upstream_failed"


def test_openrouter_fixture_has_its_comment_lines() -> None:
    assert b": OPENROUTER PROCESSING" in fixture_bytes("openrouter/chat_text.sse")


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/v1/chat/completions", {"model": "openai/gpt-4o-mini", "messages": MESSAGES, "stream": True}),
        (
            "/v1/messages",
            {"model": "openai/gpt-4o-mini", "max_tokens": 20, "messages": MESSAGES, "stream": True},
        ),
    ],
)
def test_openrouters_keep_alive_comments_are_passed_on_when_they_arrive(
    gateway: GatewaySetup, path: str, body: dict[str, Any]
) -> None:
    """OpenRouter sends `: OPENROUTER PROCESSING` to keep a slow stream's connection open; held until the
    next event they kept nothing open. Same-format clients get them as sent, others a comment of their own."""
    stream = (
        b": OPENROUTER PROCESSING\n\n"
        + _chunk({"role": "assistant", "content": "hi"}, "stop")
        + b"data: [DONE]\n\n"
    )
    gateway.fake.set(OPENROUTER, Reply.stream(stream, chunk_delay=3.0))

    async def first_bytes() -> tuple[bytes, float]:
        async with aiohttp.ClientSession() as s:
            started = time.monotonic()
            headers = {"Authorization": f"Bearer {gateway.key}"}
            async with s.post(gateway.worker.url + path, json=body, headers=headers) as r:
                first = await r.content.readany()
                return first, time.monotonic() - started

    first, waited = asyncio.run(first_bytes())
    assert first.startswith(b": ") and waited < 2.0


def test_totals_never_show_a_baseline_below_the_cost_openrouter_reported(gateway: GatewaySetup) -> None:
    """A model priced at the cost OpenRouter reports has no rate to price its baseline at: the totals count
    its actual cost as its baseline (no saving claimed) rather than as zero."""
    records = [{"id": i, "status": "ok", "name": f"item-{i}", "value": i * 3} for i in range(300)]
    messages = [
        {"role": "user", "content": "list the items"},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [{"id": "c1", "type": "function", "function": {"name": "get", "arguments": "{}"}}],
        },
        {"role": "tool", "tool_call_id": "c1", "content": json.dumps(records, indent=2)},
        {"role": "user", "content": "What is the value of item-7?"},
    ]
    answer = {
        "id": "gen-2",
        "object": "chat.completion",
        "created": 1,
        "model": "mistralai/mistral-large",
        "choices": [{"index": 0, "message": {"role": "assistant", "content": "21"}, "finish_reason": "stop"}],
        "usage": {"prompt_tokens": 1500, "completion_tokens": 10, "total_tokens": 1510, "cost": 0.01},
    }
    gateway.fake.set(OPENROUTER, Reply.json(answer))
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="mistralai/mistral-large",
        messages=messages,  # type: ignore[arg-type]
    )
    event = wait_final(gateway, raw.headers["X-Trex-Usage-Event-Id"])
    assert event["saved_input_tokens"] > 0 and event["actual_cost_usd"] == pytest.approx(0.01)
    assert event["baseline"]["cost_usd"] is None and event["savings_usd"] is None
    totals = gateway.openai().get("/usage", cast_to=object)["totals"]  # type: ignore[index]
    assert totals["actual_cost_usd"] == pytest.approx(0.01)
    assert totals["baseline_cost_usd"] == pytest.approx(0.01) and totals["savings_usd"] == 0
