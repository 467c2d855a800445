"""OpenAI's stored objects through the worker, as the official SDK reaches them: a background response polled,
its stream resumed, cancelled and deleted, its input items listed, input tokens counted; stored chat
completions retrieved, updated, listed and deleted. Each call is passed through to OpenAI with the calling
key's OpenAI binding, for an object that key made (tests/test_openai_stored_owners.py has who may reach
what); `background` on a model OpenAI does not serve is refused."""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import parse_qs

import aiohttp
import openai
import pytest

from tests.conftest import MASTER_KEY, UPSTREAM_KEYS, GatewaySetup
from tests.fakes.upstream import FakeUpstream, Reply, fixture_bytes, fixture_json, split_sse
from tests.harness import InProcessWorker, wait_for_a_fresh_minute
from tests.test_openai_stored_owners import _raw, make_completion, make_response
from tests.test_usage import wait_final
from worker.appkeys import GATEWAY

RESP_ID = "resp_bg68af2b61c4e08190a0b1c2d3e4f5a6b7"
CHAT_ID = "chatcmpl-stored9f8e7d6c5b4a"
CLAUDE = "claude-sonnet-4-6"
TEXT = fixture_json("openai/responses_text.json")["output"][0]["content"][0]["text"]
EVENTS = split_sse(fixture_bytes("openai/responses_text.sse"))  # sequence numbers 0 … 20

# Every pass-through route, as (method, path) with a body where the SDK sends one.
ROUTES: list[tuple[str, str, Any]] = [
    ("GET", f"/v1/responses/{RESP_ID}", None),
    ("DELETE", f"/v1/responses/{RESP_ID}", None),
    ("POST", f"/v1/responses/{RESP_ID}/cancel", None),
    ("GET", f"/v1/responses/{RESP_ID}/input_items", None),
    ("POST", "/v1/responses/input_tokens", {"model": "gpt-5", "input": "hi"}),
    ("GET", "/v1/chat/completions", None),
    ("GET", f"/v1/chat/completions/{CHAT_ID}", None),
    ("POST", f"/v1/chat/completions/{CHAT_ID}", {"metadata": {"topic": "x"}}),
    ("DELETE", f"/v1/chat/completions/{CHAT_ID}", None),
    ("GET", f"/v1/chat/completions/{CHAT_ID}/messages", None),
]


def _response(status: str, **fields: Any) -> dict[str, Any]:
    doc = fixture_json("openai/responses_text.json")
    doc.update(id=RESP_ID, background=True, status=status, **fields)
    if status != "completed":
        doc.update(output=[], usage=None, completed_at=None)
    return doc


def _completion() -> dict[str, Any]:
    return {**fixture_json("openai/chat_text.json"), "id": CHAT_ID}


def _query(gateway: GatewaySetup) -> dict[str, list[str]]:
    return parse_qs(gateway.fake.last().query)


# ---- Responses ------


def test_a_background_response_is_polled_until_it_is_done(gateway: GatewaySetup) -> None:
    gateway.fake.set("/v1/responses", Reply.json(_response("queued")))
    path = f"/v1/responses/{RESP_ID}"
    gateway.fake.enqueue(path, Reply.json(_response("in_progress")), Reply.json(_response("completed")))
    client = gateway.openai()
    response = client.responses.create(model="gpt-5", input="Summarize the notes.", background=True)
    assert response.status == "queued" and gateway.fake.last().json["background"] is True
    polls = 0
    while response.status in ("queued", "in_progress"):
        raw = client.responses.with_raw_response.retrieve(
            response.id, include=["message.output_text.logprobs"]
        )
        response = raw.parse()
        polls += 1
        assert raw.headers["X-Trex-Upstream-Provider"] == "openai" and raw.headers["X-Request-Id"]
    assert polls == 2 and response.status == "completed" and response.output_text == TEXT
    sent = gateway.fake.last()
    assert (sent.method, sent.path, sent.body) == ("GET", path, b"")
    assert (
        sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEYS['openai']}"
    )  # the binding, never the proxy key
    assert "message.output_text.logprobs" in str(parse_qs(sent.query))


def test_the_query_string_reaches_openai_exactly_as_sent(gateway: GatewaySetup) -> None:
    make_response(gateway, RESP_ID)
    gateway.fake.set(f"/v1/responses/{RESP_ID}", Reply.json(_response("completed")))
    query = "include[]=message.output_text.logprobs&include[]=reasoning.encrypted_content&x=%2F%20"
    status, _, body = _raw(gateway, "GET", f"/v1/responses/{RESP_ID}?{query}")
    assert status == 200 and body["id"] == RESP_ID
    assert gateway.fake.last().query == query


def test_a_background_stream_resumes_after_a_sequence_number(gateway: GatewaySetup) -> None:
    make_response(gateway, RESP_ID, background=True)
    gateway.fake.set(f"/v1/responses/{RESP_ID}", Reply(sse=EVENTS[3:], chunk_delay=0.05))
    stream = gateway.openai().responses.retrieve(RESP_ID, stream=True, starting_after=2)
    events = list(stream)
    assert [e.sequence_number for e in events] == list(range(3, 21))
    assert events[-1].type == "response.completed"
    assert events[-1].response.output_text == "Sure! Here's a fun fact: honey never spoils."
    assert _query(gateway) == {"stream": ["true"], "starting_after": ["2"]}

    async def arrivals() -> tuple[dict[str, str], bytes, list[float]]:
        times: list[float] = []
        received = b""
        async with (
            aiohttp.ClientSession() as s,
            s.get(
                f"{gateway.worker.url}/v1/responses/{RESP_ID}?stream=true&starting_after=2",
                headers={"Authorization": f"Bearer {gateway.key}"},
            ) as r,
        ):
            async for chunk in r.content.iter_any():
                times.append(time.monotonic())
                received += chunk
            return dict(r.headers), received, times

    headers, received, times = asyncio.run(arrivals())
    assert received == b"".join(EVENTS[3:])  # byte for byte
    assert headers["Content-Type"].startswith("text/event-stream") and headers["X-Accel-Buffering"] == "no"
    assert headers["X-Trex-Upstream-Provider"] == "openai" and headers["X-RateLimit-Limit"]
    # The upstream paces its events 50 ms apart; a buffering relay would deliver them in one or two reads.
    assert len(times) >= 4 and times[-1] - times[0] > 0.4


def test_a_stream_the_upstream_breaks_off_is_broken_off_for_the_client_who_resumes(
    gateway: GatewaySetup,
) -> None:
    """No event is made up at the break: its sequence number would not be OpenAI's, and a resume after it
    would skip one. The client sees the connection fail, as it would with OpenAI, and resumes."""
    make_response(gateway, RESP_ID, background=True)
    path = f"/v1/responses/{RESP_ID}"
    gateway.fake.set(path, Reply(sse=EVENTS[3:], drop_after=5))
    client = gateway.openai()
    seen: list[int] = []
    with pytest.raises(openai.APIConnectionError):
        for event in client.responses.retrieve(RESP_ID, stream=True, starting_after=2):
            seen.append(event.sequence_number)
    assert seen == [3, 4, 5, 6, 7]
    gateway.fake.set(path, Reply(sse=EVENTS[seen[-1] + 1 :]))
    rest = list(client.responses.retrieve(RESP_ID, stream=True, starting_after=seen[-1]))
    assert seen + [e.sequence_number for e in rest] == list(range(3, 21))
    assert _query(gateway)["starting_after"] == ["7"]


def test_a_client_that_leaves_a_resumed_stream_stops_the_upstream_read(gateway: GatewaySetup) -> None:
    make_response(gateway, RESP_ID, background=True)
    many = EVENTS[4:5] * 200 + EVENTS[-1:]
    gateway.fake.set(f"/v1/responses/{RESP_ID}", Reply(sse=many, chunk_delay=0.02))

    async def read_a_little_then_leave() -> None:
        async with aiohttp.ClientSession() as s:
            r = await s.get(
                f"{gateway.worker.url}/v1/responses/{RESP_ID}?stream=true",
                headers={"Authorization": f"Bearer {gateway.key}"},
            )
            await r.content.readuntil(b"\n\n")
            r.close()

    asyncio.run(read_a_little_then_leave())
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline and gateway.fake.active_streams:
        time.sleep(0.05)
    assert gateway.fake.streams_aborted == 1 and gateway.fake.streams_completed == 0


def test_cancel_delete_input_items_and_input_tokens(gateway: GatewaySetup) -> None:
    make_response(gateway, RESP_ID, background=True)
    client = gateway.openai()
    gateway.fake.set(f"/v1/responses/{RESP_ID}/cancel", Reply.json(_response("cancelled")))
    assert client.responses.cancel(RESP_ID).status == "cancelled"
    assert (gateway.fake.last().method, gateway.fake.last().path) == (
        "POST",
        f"/v1/responses/{RESP_ID}/cancel",
    )

    item = {
        "id": "msg_in1",
        "type": "message",
        "role": "user",
        "status": "completed",
        "content": [{"type": "input_text", "text": "Summarize the notes."}],
    }
    page_doc = {
        "object": "list",
        "data": [item],
        "first_id": "msg_in1",
        "last_id": "msg_in1",
        "has_more": False,
    }
    gateway.fake.set(f"/v1/responses/{RESP_ID}/input_items", Reply.json(page_doc))
    page = client.responses.input_items.list(RESP_ID, limit=1, order="asc")
    assert [i.id for i in page.data] == ["msg_in1"]
    assert _query(gateway) == {"limit": ["1"], "order": ["asc"]}

    gateway.fake.set(
        "/v1/responses/input_tokens", Reply.json({"object": "response.input_tokens", "input_tokens": 11})
    )
    counted = client.responses.input_tokens.count(model="gpt-5", input="Tell me a joke.")
    assert counted.input_tokens == 11
    assert gateway.fake.last().json == {"model": "gpt-5", "input": "Tell me a joke."}  # unchanged

    deleted = {"id": RESP_ID, "object": "response.deleted", "deleted": True}
    gateway.fake.set(f"/v1/responses/{RESP_ID}", Reply.json(deleted))
    assert client.responses.delete(RESP_ID) is None
    assert gateway.fake.last().method == "DELETE"
    make_response(gateway, RESP_ID, background=True)  # deleted: made again
    status, _, body = _raw(gateway, "DELETE", f"/v1/responses/{RESP_ID}")
    assert (status, body) == (200, deleted)  # the body OpenAI sent, as it sent it


def test_a_response_the_gateway_translated_for_claude_has_no_state_its_id_is_openai_s_404(
    gateway: GatewaySetup,
) -> None:
    client = gateway.openai()
    created = client.responses.create(model=CLAUDE, input="Explain caching.")
    assert created.store is False  # said so when it was made
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.retrieve(created.id)
    assert [r.path for r in gateway.fake.received] == ["/v1/messages"]  # OpenAI is not asked about it
    assert err.value.body == {
        "message": f"Response with id '{created.id}' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    }


# ---- stored chat completions ------


def test_stored_chat_completions_retrieve_update_list_delete_and_messages(gateway: GatewaySetup) -> None:
    make_completion(gateway, CHAT_ID)
    client = gateway.openai()
    path = f"/v1/chat/completions/{CHAT_ID}"
    gateway.fake.set(path, Reply.json(_completion()))
    assert client.chat.completions.retrieve(CHAT_ID).id == CHAT_ID
    assert gateway.fake.last().method == "GET"

    updated = client.chat.completions.update(CHAT_ID, metadata={"topic": "billing"})
    assert updated.id == CHAT_ID
    sent = gateway.fake.last()
    assert (sent.method, sent.path, sent.json) == ("POST", path, {"metadata": {"topic": "billing"}})

    listing = {
        "object": "list",
        "data": [_completion()],
        "first_id": CHAT_ID,
        "last_id": CHAT_ID,
        "has_more": False,
    }
    gateway.fake.set("/v1/chat/completions", Reply.json(listing))
    own = {"X-Upstream-Api-Key": "sk-proj-client-own-key-0123456789"}  # the list needs the client's own key
    page = client.chat.completions.list(
        model="gpt-4o-mini", metadata={"topic": "billing"}, limit=5, extra_headers=own
    )
    assert [c.id for c in page.data] == [CHAT_ID]
    assert gateway.fake.last().method == "GET"
    assert _query(gateway) == {"model": ["gpt-4o-mini"], "metadata[topic]": ["billing"], "limit": ["5"]}

    message = {"id": f"{CHAT_ID}-0", "role": "user", "content": "hi", "content_parts": None, "name": None}
    messages = {
        "object": "list",
        "data": [message],
        "first_id": message["id"],
        "last_id": message["id"],
        "has_more": False,
    }
    gateway.fake.set(f"{path}/messages", Reply.json(messages))
    assert [m.content for m in client.chat.completions.messages.list(CHAT_ID, limit=1).data] == ["hi"]

    gateway.fake.set(path, Reply.json({"id": CHAT_ID, "object": "chat.completion.deleted", "deleted": True}))
    assert client.chat.completions.delete(CHAT_ID).deleted is True
    assert gateway.fake.last().method == "DELETE"


# ---- authentication, provider keys, bad input, upstream errors ------


def test_every_route_needs_a_proxy_key(gateway: GatewaySetup) -> None:
    for method, path, body in ROUTES:
        for headers in ({"Authorization": ""}, {"Authorization": "Bearer trex_not-a-key"}):
            status, _, doc = _raw(gateway, method, path, body, headers)
            assert status == 401, (method, path)
            assert set(doc["error"]) == {"message", "type", "code", "param"}
    assert gateway.fake.received == []


def test_every_route_reaches_openai_with_the_key_binding(gateway: GatewaySetup) -> None:
    for method, path, body in ROUTES:
        make_response(gateway, RESP_ID)  # again, for a delete takes it (and its record) away
        make_completion(gateway, CHAT_ID)
        gateway.fake.set(path, Reply.json({"ok": path}))
        if path == "/v1/chat/completions":  # the list would show other keys' completions
            status, _, doc = _raw(gateway, method, path, body)
            assert status == 403 and doc["error"]["code"] == "own_upstream_key_required"
            continue
        status, headers, doc = _raw(gateway, method, path, body)
        assert (status, doc) == (200, {"ok": path}), (method, path)
        assert headers["X-Trex-Upstream-Provider"] == "openai"
        sent = gateway.fake.last()
        assert (sent.method, sent.path) == (method, path)
        assert sent.headers["Authorization"] == f"Bearer {UPSTREAM_KEYS['openai']}"
        assert sent.json == body


def test_a_key_without_an_openai_binding_and_the_override_header(gateway: GatewaySetup) -> None:
    _, unbound = gateway.new_key()
    client = gateway.openai(key=unbound)
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.retrieve(RESP_ID)
    assert err.value.code == "missing_provider_key" and "openai" in err.value.message
    assert err.value.param is None
    # An Anthropic key is for Anthropic: never sent to OpenAI.
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.cancel(RESP_ID, extra_headers={"X-Upstream-Api-Key": UPSTREAM_KEYS["anthropic"]})
    assert err.value.code == "missing_provider_key"
    assert gateway.fake.received == []
    # The client's own OpenAI key goes, with the organization it names.
    gateway.fake.set(f"/v1/responses/{RESP_ID}", Reply.json(_response("completed")))
    own = "sk-proj-client-own-key-0123456789"
    headers = {"X-Upstream-Api-Key": own, "OpenAI-Organization": "org-client"}
    assert client.responses.retrieve(RESP_ID, extra_headers=headers).status == "completed"
    sent = gateway.fake.last().headers
    assert sent["Authorization"] == f"Bearer {own}" and sent["OpenAI-Organization"] == "org-client"
    # With the bound key the organization is not the client's to choose.
    make_response(gateway, RESP_ID)
    gateway.openai().responses.retrieve(RESP_ID, extra_headers={"OpenAI-Organization": "org-other"})
    assert "OpenAI-Organization" not in gateway.fake.last().headers


def test_an_id_that_could_reach_another_endpoint_is_refused(gateway: GatewaySetup) -> None:
    for path, param in (
        ("/v1/responses/%2e%2e%2Ffiles", "response_id"),
        ("/v1/responses/..", "response_id"),
        ("/v1/responses/..%2F..%2Fv1%2Ffiles/cancel", "response_id"),
        ("/v1/chat/completions/a%20b/messages", "completion_id"),
    ):
        status, _, doc = _raw(gateway, "POST" if path.endswith("cancel") else "GET", path)
        assert status == 400, path
        assert doc["error"]["param"] == param and doc["error"]["code"] == "invalid_id"
    assert gateway.fake.received == []


def test_a_malformed_body_is_a_400_before_anything_is_sent(gateway: GatewaySetup) -> None:
    async def post(data: bytes) -> tuple[int, Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.post(
                f"{gateway.worker.url}/v1/chat/completions/{CHAT_ID}",
                data=data,
                headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"},
            ) as r,
        ):
            return r.status, await r.json()

    for data in (b"{oops", b"[1, 2]"):
        status, doc = asyncio.run(post(data))
        assert status == 400 and doc["error"]["code"] == "invalid_json"
    assert gateway.fake.received == []


def test_upstream_errors_come_back_with_their_status_in_openai_shape(gateway: GatewaySetup) -> None:
    make_response(gateway, RESP_ID)
    path = f"/v1/responses/{RESP_ID}"
    client = gateway.openai()
    gateway.fake.set(path, Reply.json("openai/error_rate_limit.json", 429, headers={"Retry-After": "7"}))
    with pytest.raises(openai.RateLimitError) as rate:
        client.responses.retrieve(RESP_ID)
    assert rate.value.body == fixture_json("openai/error_rate_limit.json")["error"]
    assert rate.value.response.headers["Retry-After"] == "7"
    gateway.fake.set(path, Reply(status=502, body=b"<html>bad gateway</html>"))
    with pytest.raises(openai.InternalServerError) as bad:
        client.responses.retrieve(RESP_ID)
    assert bad.value.status_code == 502 and "bad gateway" in bad.value.message
    status, _, doc = _raw(gateway, "DELETE", path)
    assert status == 502 and set(doc["error"]) == {"message", "type", "code", "param"}
    secret = UPSTREAM_KEYS["openai"]
    gateway.fake.set(
        path,
        Reply.json(
            {
                "error": {
                    "message": f"Incorrect API key provided: {secret}",
                    "type": "invalid_request_error",
                    "code": "invalid_api_key",
                    "param": None,
                }
            },
            401,
        ),
    )
    status, _, doc = _raw(gateway, "GET", path)
    assert status == 401 and secret not in json.dumps(doc) and "***" in doc["error"]["message"]


# ---- rate limits and quotas ------


def _setup(
    make_worker: Callable[..., InProcessWorker],
    fake: FakeUpstream,
    extra: str = "",
    plan: str | None = None,
    **variables: Any,
) -> GatewaySetup:
    worker = make_worker(variables, dev_vars={"TREX_MASTER_KEY": MASTER_KEY}, extra=extra)
    keys = worker.app[GATEWAY].keys
    record, token = worker.call(keys.create("s", plan=plan))
    for provider, secret in UPSTREAM_KEYS.items():
        worker.call(keys.bind(record.id, provider, secret))
    return GatewaySetup(worker, fake, token, record.id)


@pytest.fixture
def setups() -> Iterator[list[GatewaySetup]]:
    opened: list[GatewaySetup] = []
    yield opened
    for setup in opened:
        setup.close()


def test_polling_counts_against_the_rate_limit_not_the_plan_quota(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream, setups: list[GatewaySetup]
) -> None:
    setup = _setup(make_worker, fake_upstream, "[plans.one]\ndaily_requests = 1\n", plan="one")
    setups.append(setup)
    fake_upstream.set("/v1/responses", Reply.json(_response("queued")))
    fake_upstream.set(f"/v1/responses/{RESP_ID}", Reply.json(_response("in_progress")))
    client = setup.openai()
    client.responses.create(model="gpt-5", input="x", background=True)  # the day's one request
    with pytest.raises(openai.RateLimitError) as err:
        client.responses.create(model="gpt-5", input="y", background=True)
    assert err.value.code == "quota_exceeded"
    for _ in range(3):  # polls are no model requests: the used-up quota does not stop them
        assert client.responses.retrieve(RESP_ID).status == "in_progress"


def test_polls_are_rate_limited_like_every_authenticated_request(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream, setups: list[GatewaySetup]
) -> None:
    setup = _setup(make_worker, fake_upstream, RATE_LIMIT_PER_MINUTE=3)
    setups.append(setup)
    wait_for_a_fresh_minute()
    make_response(setup, RESP_ID, background=True)  # the minute's first request
    fake_upstream.set(f"/v1/responses/{RESP_ID}", Reply.json(_response("in_progress")))
    client = setup.openai()
    first = client.responses.with_raw_response.retrieve(RESP_ID)
    assert first.headers["X-RateLimit-Limit"] == "3" and first.headers["X-RateLimit-Remaining"] == "1"
    client.responses.retrieve(RESP_ID)
    with pytest.raises(openai.RateLimitError) as err:
        client.responses.retrieve(RESP_ID)
    assert err.value.code == "rate_limit_exceeded" and err.value.response.headers["Retry-After"]
    assert len(fake_upstream.received) == 3


# ---- background on a model OpenAI does not serve ------


@pytest.mark.parametrize("model", [CLAUDE, "anthropic/claude-sonnet-4", "local/qwen3"])
def test_background_on_a_model_openai_does_not_serve_is_a_400_naming_it(
    gateway: GatewaySetup, model: str
) -> None:
    client = gateway.openai()
    with pytest.raises(openai.BadRequestError) as err:
        client.responses.create(model=model, input="x", background=True)
    assert err.value.param == "background" and "background" in err.value.message
    with pytest.raises(openai.BadRequestError):
        client.responses.create(model=model, input="x", background=True, stream=True)
    assert gateway.fake.received == []
    assert client.responses.create(model=model, input="x", background=False).status == "completed"


def test_smart_auto_sends_a_background_response_to_openai(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream, setups: list[GatewaySetup]
) -> None:
    setup = _setup(
        make_worker,
        fake_upstream,
        '[plans.claude_first]\nmodels = ["claude-haiku-*", "gpt-4.1"]\n',
        plan="claude_first",
    )
    setups.append(setup)
    client = setup.openai()
    raw = client.responses.with_raw_response.create(model="smart-auto", input="x")
    assert raw.headers["X-Trex-Upstream-Provider"] == "anthropic"  # the cheaper of the two
    fake_upstream.set("/v1/responses", Reply.json(_response("queued")))
    raw = client.responses.with_raw_response.create(model="smart-auto", input="x", background=True)
    assert raw.headers["X-Trex-Upstream-Model"] == "gpt-4.1" and raw.parse().status == "queued"
    assert fake_upstream.last().json["background"] is True
    event = wait_final(setup, raw.headers["X-Trex-Usage-Event-Id"])
    assert [a["model"] for a in event["attempts"]] == ["gpt-4.1"]  # Claude was not even a choice
