"""Same-format traffic through the worker with the official SDKs: chat → OpenAI, Responses → OpenAI,
Messages → Anthropic, chat → OpenRouter and local; auth, provider keys, errors, streams cut, abandoned, or
ended without their terminator."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable

import aiohttp
import anthropic
import openai
import pytest

from adapters.sse import SSEParser
from tests.conftest import MASTER_KEY, UPSTREAM_KEYS, GatewaySetup, with_key
from tests.fakes.upstream import FakeUpstream, Reply, fixture_bytes, fixture_json
from tests.harness import InProcessWorker
from tests.test_usage import wait_final

MESSAGES = [{"role": "system", "content": "Be brief."}, {"role": "user", "content": "Say hello"}]


def _expected_chat_text(fixture: str) -> str:
    return fixture_json(fixture)["choices"][0]["message"]["content"]


def _sse_chat_text(fixture: str) -> str:
    events = SSEParser().feed(fixture_bytes(fixture))
    chunks = [json.loads(e.data) for e in events if e.data != "[DONE]"]
    return "".join(c["choices"][0]["delta"].get("content") or "" for c in chunks if c["choices"])


def test_chat_to_openai_non_streaming(gateway: GatewaySetup) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_body={"trex": {"optimize": {"mode": "off"}}}
    )
    completion = raw.parse()
    assert completion.choices[0].message.content == _expected_chat_text("openai/chat_text.json")
    assert completion.usage is not None and completion.usage.prompt_tokens_details is not None
    assert completion.usage.prompt_tokens_details.cached_tokens == 1024
    assert raw.headers["X-Trex-Upstream-Provider"] == "openai"
    assert raw.headers["X-Request-Id"]
    sent = gateway.fake.last()
    assert sent.path == "/v1/chat/completions"
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEYS['openai']}"  # never the proxy key
    assert gateway.key not in json.dumps(sent.headers)
    assert "trex" not in sent.json and sent.json["messages"] == MESSAGES


def test_chat_stream_with_tool_calls_accumulated_by_the_sdk(gateway: GatewaySetup) -> None:
    gateway.fake.set("/v1/chat/completions", Reply.stream("openai/chat_tool_calls.sse"))
    expected = fixture_json("openai/chat_tool_calls.json")["choices"][0]["message"]["tool_calls"]
    with gateway.openai().chat.completions.stream(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "weather in Paris and Tokyo?"}]
    ) as stream:
        final = stream.get_final_completion()
    calls = final.choices[0].message.tool_calls
    assert calls is not None and [c.function.name for c in calls] == [c["function"]["name"] for c in expected]
    for call in calls:
        json.loads(call.function.arguments)
    assert final.choices[0].finish_reason == "tool_calls"
    # include_usage was forced upstream, but the client did not ask, so it saw no usage chunk.
    assert gateway.fake.last().json["stream_options"] == {"include_usage": True}
    assert final.usage is None


def test_chat_stream_usage_reaches_client_only_when_asked(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    chunks = list(
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
        )
    )
    assert chunks[-1].choices == [] and chunks[-1].usage is not None and chunks[-1].usage.total_tokens > 0
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, stream=True))
    assert all(c.choices for c in chunks)
    text = "".join(c.choices[0].delta.content or "" for c in chunks)
    assert text == _sse_chat_text("openai/chat_text.sse")


def test_stream_headers_and_incremental_delivery(gateway: GatewaySetup) -> None:
    gateway.fake.set("/v1/chat/completions", Reply.stream("openai/chat_text.sse", chunk_delay=0.15))

    async def go() -> list[float]:
        arrivals: list[float] = []
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                gateway.worker.url + "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
                headers={"Authorization": f"Bearer {gateway.key}"},
            ) as r,
        ):
            assert r.status == 200
            assert r.headers["Content-Type"].startswith("text/event-stream")
            assert r.headers["X-Accel-Buffering"] == "no"
            assert r.headers["X-Trex-Upstream-Provider"] == "openai"
            # A stream carries the request id and the rate-limit state like every other response.
            assert r.headers["X-Request-Id"].startswith("req_")
            assert r.headers["X-RateLimit-Limit"] == "100000"
            async for _ in r.content.iter_any():
                arrivals.append(time.monotonic())
        return arrivals

    arrivals = asyncio.run(go())
    # The upstream paces events 150 ms apart; a buffering proxy would deliver them in one or two reads.
    assert len(arrivals) >= 4
    assert arrivals[-1] - arrivals[0] > 0.3


def test_responses_to_openai(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    response = client.responses.create(model="gpt-4o-mini", input="Summarize the deployment notes.")
    assert response.output_text == "".join(
        c["text"]
        for item in fixture_json("openai/responses_text.json")["output"]
        for c in item.get("content", [])
    )
    assert gateway.fake.last().path == "/v1/responses"
    with client.responses.stream(model="gpt-4o-mini", input="again") as stream:
        final = stream.get_final_response()
    assert final.output_text and final.usage is not None and final.usage.input_tokens > 0


def test_messages_to_anthropic(gateway: GatewaySetup) -> None:
    client = gateway.anthropic()
    raw = client.messages.with_raw_response.create(
        model="claude-sonnet-4-6",
        max_tokens=256,
        messages=[{"role": "user", "content": "Hello"}],
        extra_headers={"anthropic-beta": "prompt-caching-2024-07-31"},
    )
    message = raw.parse()
    expected = fixture_json("anthropic/message_text.json")
    assert message.content[0].type == "text" and message.content[0].text == expected["content"][0]["text"]
    assert message.usage.cache_read_input_tokens == expected["usage"]["cache_read_input_tokens"]
    assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"
    sent = gateway.fake.last()
    assert sent.path == "/v1/messages"
    assert sent.headers["x-api-key"] == UPSTREAM_KEYS["anthropic"]
    assert sent.headers["anthropic-version"] == raw.http_request.headers["anthropic-version"]  # forwarded
    assert sent.headers["anthropic-beta"] == "prompt-caching-2024-07-31"
    assert "Authorization" not in sent.headers


def test_anthropic_version_defaults_when_the_client_sends_none(gateway: GatewaySetup) -> None:
    async def go() -> int:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                gateway.worker.url + "/v1/messages",
                json={
                    "model": "claude-sonnet-4-6",
                    "max_tokens": 10,
                    "messages": [{"role": "user", "content": "x"}],
                },
                headers={"x-api-key": gateway.key},
            ) as r,
        ):
            return r.status

    assert asyncio.run(go()) == 200
    assert gateway.fake.last().headers["anthropic-version"] == "2023-06-01"


def test_messages_stream_tool_use_with_sdk(gateway: GatewaySetup) -> None:
    gateway.fake.set("/v1/messages", Reply.stream("anthropic/message_tool_use.sse"))
    with gateway.anthropic().messages.stream(
        model="claude-sonnet-4-6", max_tokens=512, messages=[{"role": "user", "content": "weather?"}]
    ) as stream:
        final = stream.get_final_message()
    tool_uses = [b for b in final.content if b.type == "tool_use"]
    assert len(tool_uses) == 2 and all(isinstance(b.input, dict) and b.input for b in tool_uses)
    assert final.stop_reason == "tool_use"


def test_openrouter_and_local(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    chunks = list(client.chat.completions.create(model="openai/gpt-4o-mini", messages=MESSAGES, stream=True))
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices)
    sent = gateway.fake.last()
    assert sent.path == "/api/v1/chat/completions" and sent.json["model"] == "openai/gpt-4o-mini"
    assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEYS['openrouter']}"

    local = client.chat.completions.create(model="local/llama3.1", messages=MESSAGES)
    assert local.choices[0].message.content
    sent = gateway.fake.last()
    assert sent.path == "/local/v1/chat/completions" and sent.json["model"] == "llama3.1"
    assert "Authorization" not in sent.headers  # a local server needs no key


def test_models_and_embeddings(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    ids = {m.id for m in client.models.list()}
    assert {"gpt-4o-mini", "claude-sonnet-4-6"} <= ids
    emb = client.embeddings.create(model="text-embedding-3-small", input=["a", "b"])
    assert len(emb.data) == 2 and len(emb.data[0].embedding) > 0
    assert gateway.fake.last().path == "/v1/embeddings"
    with pytest.raises(openai.BadRequestError, match="does not provide embeddings"):
        client.embeddings.create(model="claude-sonnet-4-6", input="x")


def test_authentication_in_each_client_format(gateway: GatewaySetup) -> None:
    bad = gateway.openai(key="trex_wrong")
    with pytest.raises(openai.AuthenticationError) as err:
        bad.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert err.value.status_code == 401 and err.value.code == "invalid_api_key"
    bad_anthropic = gateway.anthropic(key="trex_wrong")
    with pytest.raises(anthropic.AuthenticationError) as aerr:
        bad_anthropic.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert aerr.value.body["error"]["type"] == "authentication_error"  # type: ignore[index]
    assert gateway.fake.received == []  # nothing reached an upstream

    async def raw(headers: dict[str, str]) -> tuple[int, dict]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                gateway.worker.url + "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": MESSAGES},
                headers=headers,
            ) as r,
        ):
            return r.status, await r.json()

    assert asyncio.run(raw({}))[1]["error"]["code"] == "missing_api_key"
    assert asyncio.run(raw({"X-API-Key": gateway.key}))[0] == 200
    assert asyncio.run(raw({"x-api-key": gateway.key}))[0] == 200


def test_missing_provider_key_and_override(gateway: GatewaySetup) -> None:
    key_id, token = gateway.new_key()
    client = gateway.openai(key=token)
    with pytest.raises(openai.BadRequestError) as err:
        client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert err.value.code == "missing_provider_key"
    assert "openai" in err.value.message and key_id in err.value.message
    out = client.chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Upstream-Api-Key": "sk-override-123"}
    )
    assert out.choices[0].message.content
    assert gateway.fake.last().headers["Authorization"] == "Bearer sk-override-123"
    aclient = gateway.anthropic(key=token)
    with pytest.raises(anthropic.BadRequestError) as aerr:
        aclient.messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert "anthropic" in str(aerr.value.body)


def test_organization_and_project_go_upstream_only_with_the_clients_own_key(gateway: GatewaySetup) -> None:
    """`OpenAI-Organization` and `OpenAI-Project` choose whom a call is billed to: with the operator's bound
    key they are dropped (a tenant could bill another organization the key can reach); with the client's own
    `X-Upstream-Api-Key` they are the client's to send. `OpenAI-Beta` is forwarded either way."""
    client = gateway.openai(
        organization="org-someone-else", project="proj-someone-else", default_headers={"OpenAI-Beta": "x=v1"}
    )
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    client.responses.create(model="gpt-4o-mini", input="hi")
    client.embeddings.create(model="text-embedding-3-small", input="a")
    for sent in gateway.fake.received:
        assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEYS['openai']}"
        assert not {"openai-organization", "openai-project"} & {name.lower() for name in sent.headers}
        assert sent.headers["OpenAI-Beta"] == "x=v1"
    assert len(gateway.fake.received) == 3
    gateway.fake.reset()
    own = {"X-Upstream-Api-Key": "sk-clients-own-key-123"}
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers=own)  # type: ignore[arg-type]
    client.embeddings.create(model="text-embedding-3-small", input="a", extra_headers=own)
    for sent in gateway.fake.received:
        assert sent.headers["Authorization"] == "Bearer sk-clients-own-key-123"
        assert sent.headers["OpenAI-Organization"] == "org-someone-else"
        assert sent.headers["OpenAI-Project"] == "proj-someone-else"
    assert len(gateway.fake.received) == 2


def test_cookies_an_upstream_sets_are_not_sent_back_on_later_requests(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """The connection pool serves every tenant: a cookie a provider (or the CDN in front of it) set on one
    tenant's answer must not ride along on the next tenant's request. (aiohttp's default cookie jar keeps
    cookies from a host name, not from an IP address: the upstream is reached as `localhost` here.)"""
    by_name = {name: url.replace("127.0.0.1", "localhost") for name, url in fake_upstream.base_urls().items()}
    gateway = with_key(make_worker(by_name, dev_vars={"TREX_MASTER_KEY": MASTER_KEY}), fake_upstream)
    fake_upstream.set(
        "/v1/chat/completions",
        Reply(
            body=fixture_bytes("openai/chat_text.json"),
            headers={"Set-Cookie": "__cf_bm=tenant-a-session; Path=/; HttpOnly"},
        ),
    )
    own = {"X-Upstream-Api-Key": "sk-tenant-a-own-key-123"}
    client = gateway.openai()
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES, extra_headers=own)  # type: ignore[arg-type]
    client.chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)  # type: ignore[arg-type]
    client.responses.create(model="gpt-4o-mini", input="hi")
    client.close()
    assert len(fake_upstream.received) == 3
    for sent in fake_upstream.received:
        assert "cookie" not in {name.lower() for name in sent.headers}


def test_upstream_errors_keep_status_body_and_retry_after(gateway: GatewaySetup) -> None:
    gateway.fake.set(
        "/v1/chat/completions",
        Reply.json(
            "openai/error_rate_limit.json",
            status=429,
            headers={"Retry-After": "7", "x-ratelimit-remaining-requests": "0"},
        ),
    )
    with pytest.raises(openai.RateLimitError) as err:
        gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    assert err.value.status_code == 429
    assert err.value.response.headers["Retry-After"] == "7"
    assert err.value.response.headers["x-ratelimit-remaining-requests"] == "0"
    assert err.value.response.headers["X-Trex-Upstream-Provider"] == "openai"
    assert err.value.code == fixture_json("openai/error_rate_limit.json")["error"]["code"]

    gateway.fake.set("/v1/messages", Reply.json("anthropic/error_overloaded.json", status=529))
    with pytest.raises(anthropic.APIStatusError) as aerr:
        gateway.anthropic().messages.create(
            model="claude-sonnet-4-6", max_tokens=5, messages=[{"role": "user", "content": "x"}]
        )
    assert aerr.value.status_code == 529 and aerr.value.body["error"]["type"] == "overloaded_error"  # type: ignore[index]


def test_unknown_model_and_bad_body(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    with pytest.raises(openai.NotFoundError) as err:
        client.chat.completions.create(model="mystery-model", messages=MESSAGES)
    assert err.value.code == "model_not_found"
    with pytest.raises(openai.BadRequestError):
        client.chat.completions.create(model="", messages=MESSAGES)


def test_upstream_unreachable_is_502(make_worker, fake_upstream) -> None:  # type: ignore[no-untyped-def]
    from tests.conftest import MASTER_KEY
    from worker.appkeys import GATEWAY

    w = make_worker(
        variables={"OPENAI_BASE_URL": "http://127.0.0.1:1/v1"}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY}
    )
    _record, token = w.call(w.app[GATEWAY].keys.create("x"))
    with (
        openai.OpenAI(api_key=token, base_url=w.url + "/v1", max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as err,
    ):
        client.chat.completions.create(
            model="gpt-4o-mini", messages=MESSAGES, extra_headers={"X-Upstream-Api-Key": "sk-x"}
        )
    assert err.value.status_code == 502 and err.value.code == "upstream_unreachable"
    # Every route names the failure alike: embeddings go through another forwarding path.
    with (
        openai.OpenAI(api_key=token, base_url=w.url + "/v1", max_retries=0) as client,
        pytest.raises(openai.APIStatusError) as err,
    ):
        client.embeddings.create(
            model="text-embedding-3-small", input="x", extra_headers={"X-Upstream-Api-Key": "sk-x"}
        )
    assert err.value.status_code == 502 and err.value.code == "upstream_unreachable"


@pytest.mark.parametrize(
    ("path", "fixture", "model"),
    [
        ("/v1/chat/completions", "openai/chat_text.sse", "gpt-4o-mini"),
        ("/v1/messages", "anthropic/message_text.sse", "claude-sonnet-4-6"),
        ("/v1/responses", "openai/responses_text.sse", "gpt-4o-mini"),
    ],
)
def test_stream_cut_off_midway_ends_with_error_event(
    gateway: GatewaySetup, path: str, fixture: str, model: str
) -> None:
    gateway.fake.set(path, Reply.stream(fixture, drop_after=3))
    if path == "/v1/messages":
        with (
            pytest.raises(anthropic.APIStatusError),
            gateway.anthropic().messages.stream(
                model=model, max_tokens=50, messages=[{"role": "user", "content": "x"}]
            ) as stream,
        ):
            stream.get_final_message()
    elif path == "/v1/responses":
        events = list(gateway.openai().responses.create(model=model, input="x", stream=True))
        assert events[-1].type == "error"
    else:
        with pytest.raises(openai.APIError, match=r"mid-stream|before completion"):
            list(gateway.openai().chat.completions.create(model=model, messages=MESSAGES, stream=True))


def test_a_finished_stream_that_ends_without_its_terminator_is_complete(gateway: GatewaySetup) -> None:
    """The SDKs take a stream that has sent its finish signal and then ends as complete; so does the worker."""
    gateway.fake.set("/v1/chat/completions", Reply.unterminated("openai/chat_text.sse"))
    stream = gateway.openai().chat.completions.create(
        model="gpt-4o-mini", messages=MESSAGES, stream=True, stream_options={"include_usage": True}
    )
    event_id = stream.response.headers["X-Trex-Usage-Event-Id"]
    chunks = list(stream)  # the SDK raises if the stream ends with an error event
    assert "".join(c.choices[0].delta.content or "" for c in chunks if c.choices) == _sse_chat_text(
        "openai/chat_text.sse"
    )
    assert [c.choices[0].finish_reason for c in chunks if c.choices][-1] == "stop"
    assert chunks[-1].usage is not None and chunks[-1].usage.total_tokens == 29
    event = wait_final(gateway, event_id)
    assert event["outcome"] == "completed" and event["billed"]["output_tokens"] == 10

    gateway.fake.set("/v1/messages", Reply.unterminated("anthropic/message_text.sse"))
    with gateway.anthropic().messages.stream(
        model="claude-sonnet-4-6", max_tokens=50, messages=[{"role": "user", "content": "x"}]
    ) as mstream:
        message = mstream.get_final_message()
        event_id = mstream.response.headers["X-Trex-Usage-Event-Id"]
    assert message.stop_reason == "end_turn" and message.usage.output_tokens == 19
    event = wait_final(gateway, event_id)
    assert event["outcome"] == "completed" and event["billed"]["output_tokens"] == 19


def test_client_disconnect_stops_the_upstream_read(gateway: GatewaySetup) -> None:
    chunk = {
        "id": "c",
        "object": "chat.completion.chunk",
        "created": 1,
        "model": "m",
        "choices": [{"index": 0, "delta": {"content": "x"}, "finish_reason": None}],
    }
    many = b"".join(b"data: " + json.dumps(chunk).encode() + b"\n\n" for _ in range(200))
    gateway.fake.set("/v1/chat/completions", Reply.stream(many + b"data: [DONE]\n\n", chunk_delay=0.02))

    async def read_a_little_then_leave() -> None:
        async with aiohttp.ClientSession() as s:
            r = await s.post(
                gateway.worker.url + "/v1/chat/completions",
                json={"model": "gpt-4o-mini", "messages": MESSAGES, "stream": True},
                headers={"Authorization": f"Bearer {gateway.key}"},
            )
            await r.content.readuntil(b"\n\n")
            r.close()  # drop the connection mid-stream

    asyncio.run(read_a_little_then_leave())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and gateway.fake.active_streams:
        time.sleep(0.05)
    assert gateway.fake.active_streams == 0
    assert gateway.fake.streams_aborted == 1 and gateway.fake.streams_completed == 0


def test_upstream_request_headers(gateway: GatewaySetup) -> None:
    """What an upstream receives, name by name and in order: the worker's own headers and aiohttp's defaults,
    never aiohttp's `User-Agent` (it names the library and its version)."""
    gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=MESSAGES)
    sent = gateway.fake.last()
    assert [(k, v) for k, v in sent.headers.items() if k != "Content-Length"] == [
        ("Host", sent.headers["Host"]),
        ("Content-Type", "application/json"),
        ("Accept", "application/json, text/event-stream"),
        ("Authorization", f"Bearer {UPSTREAM_KEYS['openai']}"),
        ("Accept-Encoding", "gzip, deflate"),
    ]
    assert list(sent.headers)[-1] == "Content-Length"
    assert sent.headers["Content-Length"] == str(len(sent.body))
    gateway.anthropic().messages.create(
        model="claude-sonnet-4-20250514", max_tokens=64, messages=[{"role": "user", "content": "hi"}]
    )
    sent = gateway.fake.last()
    assert list(sent.headers) == [
        "Host",
        "Content-Type",
        "Accept",
        "anthropic-version",
        "x-api-key",
        "Accept-Encoding",
        "Content-Length",
    ]
