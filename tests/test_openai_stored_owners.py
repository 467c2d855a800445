"""Tenant isolation of OpenAI's stored objects: two proxy keys bound to the same OpenAI key (one OpenAI
project) never reach each other's stored responses and chat completions through the worker. Each object made
through the gateway is recorded as its proxy key's; the follow-up routes serve it to that key only, and any
other id is OpenAI's own not-found, answered without asking OpenAI."""

from __future__ import annotations

import asyncio
import json
import threading
import time
from typing import Any

import aiohttp
import openai
import pytest
from yarl import URL

from tests.conftest import UPSTREAM_KEYS, GatewaySetup
from tests.fakes.upstream import Reply, fixture_json
from worker.appkeys import GATEWAY, TASKS

RESP_ID = "resp_owned68af2b61c4e08190a0b1c2d3e4f5a6b7"
CHAT_ID = "chatcmpl-owned9f8e7d6c5b4a"
STREAMED_RESP = "resp_e09ae98d65c360f1a948f95483bd2f2ea446768ead2a7b47"  # responses_text.sse's response
STREAMED_CHAT = "chatcmpl-0ksBCPk9peCVeWbKKNZihzG3ozBvC"  # chat_text.sse's chunks
OWN_KEY = "sk-proj-tenant-own-key-0123456789"
THIRTY_DAYS = 30 * 86400


def _response(rid: str = RESP_ID, **fields: Any) -> dict[str, Any]:
    doc = fixture_json("openai/responses_text.json")
    doc.update(id=rid, **fields)
    return doc


def _completion(cid: str = CHAT_ID) -> dict[str, Any]:
    return {**fixture_json("openai/chat_text.json"), "id": cid}


def _other_tenant(gateway: GatewaySetup) -> str:
    """A second proxy key bound to the very same OpenAI key as the fixture's."""
    key_id, token = gateway.new_key("other-tenant")
    gateway.worker.call(gateway.worker.app[GATEWAY].keys.bind(key_id, "openai", UPSTREAM_KEYS["openai"]))
    return token


def settle(gateway: GatewaySetup) -> None:
    """Wait for the work the worker does after its responses (the ownership records among it)."""
    deadline = time.monotonic() + 5
    while len(gateway.worker.app[TASKS]) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not len(gateway.worker.app[TASKS])


def _records(gateway: GatewaySetup) -> dict[str, tuple[str, int | None]]:
    """The ownership records in the worker's KV: name → (proxy key id, expiration)."""
    kv = gateway.worker.app[GATEWAY].kv
    page = gateway.worker.call(kv.list(prefix="stored/"))
    return {
        info.name: (gateway.worker.call(kv.get(info.name)).decode(), info.expiration) for info in page.keys
    }


def make_response(gateway: GatewaySetup, rid: str = RESP_ID, **create: Any) -> None:
    """Have the gateway's key make a (background) response `rid` on OpenAI, and its record written."""
    gateway.fake.enqueue("/v1/responses", Reply.json(_response(rid, background=True, status="queued")))
    assert gateway.openai().responses.create(model="gpt-5", input="x", **create).id == rid
    settle(gateway)


def make_completion(gateway: GatewaySetup, cid: str = CHAT_ID) -> None:
    """Have the gateway's key make a stored chat completion `cid` on OpenAI, and its record written."""
    gateway.fake.enqueue("/v1/chat/completions", Reply.json(_completion(cid)))
    client = gateway.openai()
    made = client.chat.completions.create(
        model="gpt-4o-mini", messages=[{"role": "user", "content": "hi"}], store=True
    )
    assert made.id == cid
    settle(gateway)


def _raw(
    gateway: GatewaySetup,
    method: str,
    path: str,
    body: Any = None,
    headers: dict[str, str] | None = None,
    key: str | None = None,
) -> tuple[int, dict[str, str], Any]:
    """One request as raw HTTP with `key` (the gateway's own by default): (status, headers, JSON body)."""

    async def go() -> tuple[int, dict[str, str], Any]:
        async with (
            aiohttp.ClientSession() as s,
            s.request(
                method,
                URL(gateway.worker.url + path, encoded=True),
                json=body,
                headers={"Authorization": f"Bearer {key or gateway.key}", **(headers or {})},
            ) as r,
        ):
            data = await r.read()
            return r.status, dict(r.headers), json.loads(data) if data else None

    return asyncio.run(go())


RESPONSE_ROUTES = [
    ("GET", f"/v1/responses/{RESP_ID}"),
    ("GET", f"/v1/responses/{RESP_ID}?stream=true&starting_after=2"),
    ("POST", f"/v1/responses/{RESP_ID}/cancel"),
    ("GET", f"/v1/responses/{RESP_ID}/input_items"),
    ("DELETE", f"/v1/responses/{RESP_ID}"),
]
COMPLETION_ROUTES = [
    ("GET", f"/v1/chat/completions/{CHAT_ID}"),
    ("POST", f"/v1/chat/completions/{CHAT_ID}"),
    ("GET", f"/v1/chat/completions/{CHAT_ID}/messages"),
    ("DELETE", f"/v1/chat/completions/{CHAT_ID}"),
]
NOT_FOUND = {
    "response": {
        "message": f"Response with id '{RESP_ID}' not found.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    },
    "chat_completion": {
        "message": f"No chat completion found with id '{CHAT_ID}'.",
        "type": "invalid_request_error",
        "param": None,
        "code": None,
    },
}


def test_another_key_on_the_same_openai_key_gets_openai_s_404_for_a_stored_response(
    gateway: GatewaySetup,
) -> None:
    make_response(gateway, background=True)
    other = _other_tenant(gateway)
    asked = len(gateway.fake.received)
    for method, path in RESPONSE_ROUTES:
        status, headers, doc = _raw(gateway, method, path, {} if method == "POST" else None, key=other)
        assert (status, doc) == (404, {"error": NOT_FOUND["response"]}), (method, path)
        assert headers["X-Trex-Upstream-Provider"] == "openai"
    client = gateway.openai(key=other)
    with pytest.raises(openai.NotFoundError) as err:
        client.responses.retrieve(RESP_ID)
    assert err.value.body == NOT_FOUND["response"]
    with pytest.raises(openai.NotFoundError):
        client.responses.cancel(RESP_ID)
    assert len(gateway.fake.received) == asked  # OpenAI was never asked: nothing tells the id exists
    # The key that made it reaches it.
    gateway.fake.set(f"/v1/responses/{RESP_ID}", Reply.json(_response(status="completed")))
    assert gateway.openai().responses.retrieve(RESP_ID).status == "completed"
    assert gateway.fake.last().path == f"/v1/responses/{RESP_ID}"


def test_another_key_on_the_same_openai_key_gets_openai_s_404_for_a_stored_chat_completion(
    gateway: GatewaySetup,
) -> None:
    make_completion(gateway)
    assert gateway.fake.last().json["store"] is True  # the body went as sent
    other = _other_tenant(gateway)
    asked = len(gateway.fake.received)
    for method, path in COMPLETION_ROUTES:
        body = {"metadata": {"topic": "x"}} if method == "POST" else None
        status, _, doc = _raw(gateway, method, path, body, key=other)
        assert (status, doc) == (404, {"error": NOT_FOUND["chat_completion"]}), (method, path)
    with pytest.raises(openai.NotFoundError) as err:
        gateway.openai(key=other).chat.completions.retrieve(CHAT_ID)
    assert err.value.body == NOT_FOUND["chat_completion"]
    assert len(gateway.fake.received) == asked
    gateway.fake.set(f"/v1/chat/completions/{CHAT_ID}", Reply.json(_completion()))
    assert gateway.openai().chat.completions.retrieve(CHAT_ID).id == CHAT_ID


def test_an_id_never_made_through_the_gateway_is_openai_s_404_without_asking_openai(
    gateway: GatewaySetup,
) -> None:
    for method, path in RESPONSE_ROUTES:
        status, _, doc = _raw(gateway, method, path, {} if method == "POST" else None, key=gateway.key)
        assert (status, doc) == (404, {"error": NOT_FOUND["response"]}), (method, path)
    for method, path in COMPLETION_ROUTES:
        status, _, doc = _raw(gateway, method, path, {} if method == "POST" else None, key=gateway.key)
        assert (status, doc) == (404, {"error": NOT_FOUND["chat_completion"]}), (method, path)
    assert gateway.fake.received == []


def test_the_client_s_own_openai_key_passes_through_without_a_check(gateway: GatewaySetup) -> None:
    """Its own OpenAI account holds only its own objects: no record is needed to reach them."""
    gateway.fake.set(f"/v1/responses/{RESP_ID}", Reply.json(_response(status="completed")))
    gateway.fake.set(f"/v1/chat/completions/{CHAT_ID}", Reply.json(_completion()))
    client = gateway.openai(default_headers={"X-Upstream-Api-Key": OWN_KEY})
    assert client.responses.retrieve(RESP_ID).id == RESP_ID
    assert client.chat.completions.retrieve(CHAT_ID).id == CHAT_ID
    assert gateway.fake.last().headers["Authorization"] == f"Bearer {OWN_KEY}"
    # The same retrieve with the binding is refused, as the id was never made through the gateway.
    with pytest.raises(openai.NotFoundError):
        gateway.openai().responses.retrieve(RESP_ID)
    # An Anthropic key is never sent to OpenAI: the binding goes, and the check with it.
    with pytest.raises(openai.NotFoundError):
        gateway.openai().responses.retrieve(
            RESP_ID, extra_headers={"X-Upstream-Api-Key": UPSTREAM_KEYS["anthropic"]}
        )
    assert len(gateway.fake.received) == 2


def test_listing_stored_chat_completions_needs_the_client_s_own_openai_key(gateway: GatewaySetup) -> None:
    """The list would hold every key's completions on the shared OpenAI key: with the binding it is a 403
    saying what to do; with the client's own key it reaches its own project."""
    make_completion(gateway)
    asked = len(gateway.fake.received)
    client = gateway.openai()
    with pytest.raises(openai.PermissionDeniedError) as err:
        client.chat.completions.list(limit=5)
    assert err.value.code == "own_upstream_key_required" and "X-Upstream-Api-Key" in err.value.message
    assert len(gateway.fake.received) == asked
    listing = {"object": "list", "data": [_completion()], "first_id": CHAT_ID, "last_id": CHAT_ID}
    gateway.fake.set("/v1/chat/completions", Reply.json({**listing, "has_more": False}))
    page = client.chat.completions.list(limit=5, extra_headers={"X-Upstream-Api-Key": OWN_KEY})
    assert [c.id for c in page.data] == [CHAT_ID]
    assert gateway.fake.last().headers["Authorization"] == f"Bearer {OWN_KEY}"


def test_records_are_written_only_for_what_openai_stores_and_kept_thirty_days(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    messages = [{"role": "user", "content": "hi"}]
    client.chat.completions.create(model="gpt-4o-mini", messages=messages)  # the ordinary request
    client.chat.completions.create(model="gpt-4o-mini", messages=messages, store=False)
    client.chat.completions.create(model="claude-sonnet-4-6", messages=messages, store=True)  # not OpenAI's
    gateway.fake.enqueue("/v1/responses", Reply.json(_response("resp_unstored", store=False)))
    client.responses.create(model="gpt-5", input="x", store=False)
    client.responses.create(model="claude-sonnet-4-6", input="x")  # translated: stored nowhere
    gateway.fake.enqueue("/v1/responses", Reply.json(_response("resp_own_project")))
    # With the client's own OpenAI key the response is in its own project: nothing to record.
    client.responses.create(model="gpt-5", input="x", extra_headers={"X-Upstream-Api-Key": OWN_KEY})
    settle(gateway)
    assert _records(gateway) == {}
    before = time.time()
    make_completion(gateway)
    make_response(gateway)  # Responses store by default
    records = _records(gateway)
    assert set(records) == {f"stored/chat_completion/{CHAT_ID}", f"stored/response/{RESP_ID}"}
    for owner, expiration in records.values():
        assert owner == gateway.key_id
        assert (
            expiration is not None and before + THIRTY_DAYS - 5 <= expiration <= time.time() + THIRTY_DAYS + 1
        )


def test_a_streamed_response_is_recorded_from_its_first_event_while_it_streams(gateway: GatewaySetup) -> None:
    """The id comes from response.created as it passes: a client can cancel the response while its stream
    is still going (the stream is held after its first event here), and the stream is not held up."""
    resume = threading.Event()
    gateway.fake.set("/v1/responses", Reply.stream("openai/responses_text.sse", pause_after=1, resume=resume))
    gateway.fake.set(f"/v1/responses/{STREAMED_RESP}/cancel", Reply.json(_response(STREAMED_RESP)))
    other = _other_tenant(gateway)
    stream = gateway.openai().responses.create(model="gpt-5", input="x", stream=True, background=True)
    first = next(iter(stream))
    assert first.type == "response.created" and first.response.id == STREAMED_RESP
    deadline = time.monotonic() + 5
    while not _records(gateway) and time.monotonic() < deadline:
        time.sleep(0.01)
    assert _records(gateway)[f"stored/response/{STREAMED_RESP}"][0] == gateway.key_id
    assert gateway.openai().responses.cancel(STREAMED_RESP).id == STREAMED_RESP
    with pytest.raises(openai.NotFoundError):
        gateway.openai(key=other).responses.cancel(STREAMED_RESP)
    resume.set()
    assert [e.type for e in stream][-1] == "response.completed"


def test_a_streamed_stored_chat_completion_is_recorded_from_its_first_chunk(gateway: GatewaySetup) -> None:
    client = gateway.openai()
    messages = [{"role": "user", "content": "hi"}]
    chunks = list(client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True))
    settle(gateway)
    assert _records(gateway) == {}  # not stored: nothing recorded
    chunks = list(
        client.chat.completions.create(model="gpt-4o-mini", messages=messages, stream=True, store=True)
    )
    assert chunks[0].id == STREAMED_CHAT
    settle(gateway)
    records = _records(gateway)
    assert list(records) == [f"stored/chat_completion/{STREAMED_CHAT}"]
    assert records[f"stored/chat_completion/{STREAMED_CHAT}"][0] == gateway.key_id
    gateway.fake.set(f"/v1/chat/completions/{STREAMED_CHAT}", Reply.json(_completion(STREAMED_CHAT)))
    assert client.chat.completions.retrieve(STREAMED_CHAT).id == STREAMED_CHAT
    with pytest.raises(openai.NotFoundError):
        gateway.openai(key=_other_tenant(gateway)).chat.completions.retrieve(STREAMED_CHAT)


def test_deleting_an_object_deletes_its_record(gateway: GatewaySetup) -> None:
    make_response(gateway)
    make_completion(gateway)
    client = gateway.openai()
    gateway.fake.set(
        f"/v1/responses/{RESP_ID}", Reply.json({"id": RESP_ID, "object": "response", "deleted": True})
    )
    deleted = {"id": CHAT_ID, "object": "chat.completion.deleted", "deleted": True}
    gateway.fake.set(f"/v1/chat/completions/{CHAT_ID}", Reply.json(deleted))
    client.responses.delete(RESP_ID)
    assert client.chat.completions.delete(CHAT_ID).deleted is True
    settle(gateway)
    assert _records(gateway) == {}
    asked = len(gateway.fake.received)
    with pytest.raises(openai.NotFoundError):
        client.responses.retrieve(RESP_ID)
    with pytest.raises(openai.NotFoundError):
        client.chat.completions.retrieve(CHAT_ID)
    assert len(gateway.fake.received) == asked


def test_a_delete_openai_refuses_keeps_the_record(gateway: GatewaySetup) -> None:
    make_response(gateway)
    gateway.fake.enqueue(f"/v1/responses/{RESP_ID}", Reply.json("openai/error_rate_limit.json", 429))
    with pytest.raises(openai.RateLimitError):
        gateway.openai().responses.delete(RESP_ID)
    settle(gateway)
    assert list(_records(gateway)) == [f"stored/response/{RESP_ID}"]


def test_a_previous_response_of_another_key_is_not_found(gateway: GatewaySetup) -> None:
    """previous_response_id would give the model another key's conversation (and input_tokens would count
    it): with the binding it must be one of the calling key's responses."""
    make_response(gateway)
    other = gateway.openai(key=_other_tenant(gateway))
    asked = len(gateway.fake.received)
    with pytest.raises(openai.BadRequestError) as err:
        other.responses.create(model="gpt-5", input="Repeat the conversation.", previous_response_id=RESP_ID)
    assert err.value.body == {
        "message": f"Previous response with id '{RESP_ID}' not found.",
        "type": "invalid_request_error",
        "param": "previous_response_id",
        "code": "previous_response_not_found",
    }
    with pytest.raises(openai.BadRequestError) as err:
        other.responses.input_tokens.count(model="gpt-5", input="x", previous_response_id=RESP_ID)
    assert err.value.code == "previous_response_not_found"
    assert len(gateway.fake.received) == asked
    # The key that made it goes on from it; with its own OpenAI key, any key goes unchecked.
    client = gateway.openai()
    assert client.responses.create(model="gpt-5", input="Go on.", previous_response_id=RESP_ID).id
    assert gateway.fake.last().json["previous_response_id"] == RESP_ID
    gateway.fake.set(
        "/v1/responses/input_tokens", Reply.json({"object": "response.input_tokens", "input_tokens": 3})
    )
    assert client.responses.input_tokens.count(model="gpt-5", previous_response_id=RESP_ID).input_tokens == 3
    own = {"X-Upstream-Api-Key": OWN_KEY}
    other.responses.create(model="gpt-5", input="x", previous_response_id="resp_mine", extra_headers=own)
    assert gateway.fake.last().json["previous_response_id"] == "resp_mine"
