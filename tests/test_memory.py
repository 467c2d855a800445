"""The TrexID memory layer: store optimized context, reference it from a later request, expand it."""

from __future__ import annotations

import asyncio
import base64
import json
import math
import time
import urllib.error
import urllib.request
from collections.abc import Callable
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import MASTER_KEY, GatewaySetup, closed_after_test
from tests.fakes.upstream import FakeUpstream, Reply
from tests.harness import InProcessWorker
from worker import memory
from worker.appkeys import GATEWAY
from worker.optimize.facts import find_facts

# A handover document: four topics, each with facts a later request depends on.
SECTIONS = [
    "Billing: invoice INV-2024-0042 for Acme Corp totals $1,250.00 and is due 2026-03-31. The customer asked "
    "for the late fee to be waived; finance agreed only if payment arrives before the due date. "
    + "Routine reminders were sent every week and nobody answered them. "
    * 4,
    "Database migration: the orders table moves to the new cluster db-prod-7 on 2026-04-02 at 02:00 UTC. "
    "The migration must not run during the quarterly close, and the rollback script is "
    "scripts/rollback_orders.sql. "
    + "The team discussed naming conventions at length without a decision. "
    * 4,
    "Incident INC-4471: checkout latency rose to 2.3 s p99 after release v4.12.1; the cause was a missing index "
    "on payments.customer_id. " + "Several people joined the call and repeated what was already known. " * 4,
    "Hiring: two backend roles are open, one in Berlin and one remote; interviews are scheduled by "
    "recruiting@example.com. "
    + "The job description went through many small wording changes over time. "
    * 4,
]
DOCUMENT = "\n\n".join(SECTIONS)
FACTS = [
    "INV-2024-0042",
    "$1,250.00",
    "2026-03-31",
    "2026-04-02",
    "scripts/rollback_orders.sql",
    "INC-4471",
    "v4.12.1",
    "recruiting@example.com",
]


def _compress_and_store(gateway: GatewaySetup, key: str | None = None) -> dict[str, Any]:
    body = {
        "model": "gpt-4o-mini",
        "messages": [{"role": "user", "content": DOCUMENT}],
        "trex": {"store_context": True},
        "store": False,  # the payload's own field (OpenAI's): returned untouched
    }
    req = urllib.request.Request(
        gateway.worker.url + "/v1/compress",
        data=json.dumps(body).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {key or gateway.key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        doc: dict[str, Any] = json.loads(r.read())
        assert r.headers["X-Trex-Id"] == doc["trex_id"]
    assert "trex" not in doc and doc["store"] is False and doc["compression"]["technique"]
    return doc


def _get(gateway: GatewaySetup, path: str, key: str | None = None) -> tuple[int, Any]:
    req = urllib.request.Request(
        gateway.worker.url + path, headers={"Authorization": f"Bearer {key or gateway.key}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, json.loads(r.read())
    except urllib.error.HTTPError as e:
        return e.code, json.loads(e.read())


def _forwarded_text(gateway: GatewaySetup) -> str:
    return json.dumps(gateway.fake.last("/v1/chat/completions").json["messages"], ensure_ascii=False)


def test_a_reference_spelled_with_json_escapes_is_expanded_too(gateway: GatewaySetup) -> None:
    """The part's type written with `\\u` escapes is still a reference: the body is not judged by its bytes."""
    trex_id = _compress_and_store(gateway)["trex_id"]
    body = (
        '{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": [{"type": "text", "text": "Use it."},'
        ' {"type": "trex\\u005fref", "trex_id": "' + trex_id + '"}]}]}'
    ).encode()
    request = urllib.request.Request(
        gateway.worker.url + "/v1/chat/completions",
        data=body,
        headers={"Authorization": f"Bearer {gateway.key}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(request, timeout=10) as resp:
        assert resp.status == 200
    text = _forwarded_text(gateway)
    assert "trex_ref" not in text and f"TrexID {trex_id}" in text


def test_lexical_vectors_are_deterministic_normalised_and_rank_the_matching_chunk_first() -> None:
    vectors = memory.embed(SECTIONS)
    assert vectors == memory.embed(SECTIONS) and all(len(v) == memory.DIMENSIONS for v in vectors)
    assert all(abs(math.sqrt(sum(x * x for x in v)) - 1) < 1e-9 for v in vectors)
    packed = memory.quantize(vectors[0])
    assert len(packed) == 384
    restored = memory.dequantize(packed, 384, memory.QUANT)
    assert max(abs(a - b) for a, b in zip(vectors[0], restored, strict=True)) <= 1 / 255 + 1e-9
    push = memory.build("summary", DOCUMENT, 3600)
    assert push.payload.chunk_count == len(push.payload.chunks) == len(push.payload.vector_seq_b64) >= 4
    assert all(len(base64.b64decode(v)) == 384 for v in push.payload.vector_seq_b64)
    assert set(FACTS) <= set(push.payload.facts)
    from worker.payloads import Stored

    stored = Stored("tzp_x", "1.0", "key_x", 0, 1e12, "", 0, push.payload, push.metadata)
    best, score = asyncio.run(memory.search(stored, "database migration rollback cluster", 1))[0]
    assert "db-prod-7" in push.payload.chunks[best] and score > 0


def test_store_reference_and_expand_through_the_openai_sdk(gateway: GatewaySetup) -> None:
    stored = _compress_and_store(gateway)
    trex_id = stored["trex_id"]
    client = gateway.openai()

    # Default expansion: the summary and every preserved fact reach the upstream.
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[
            {
                "role": "user",
                "content": [
                    {"type": "text", "text": "Using this context, what is owed and when?"},
                    {"type": "trex_ref", "trex_id": trex_id},  # type: ignore[list-item]
                ],
            }
        ],
    )
    text = _forwarded_text(gateway)
    assert "trex_ref" not in text and f"TrexID {trex_id}" in text
    assert all(fact in text for fact in FACTS)

    # "full" restores the original, narrative included.
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "What was discussed?"}],
        extra_body={"trex": {"context_ref": [trex_id], "expand": "full"}},
    )
    text = _forwarded_text(gateway)
    assert "nobody answered them" in text and "What was discussed?" in text

    # A query brings back the most similar chunk, not the unrelated ones.
    client.chat.completions.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": "When does the migration run?"}],
        extra_body={
            "trex": {
                "context_ref": [{"trex_id": trex_id, "expand": {"query": "orders migration cluster", "k": 1}}]
            }
        },
    )
    text = _forwarded_text(gateway)
    assert "db-prod-7" in text and "recruiting@example.com" not in text

    # The expand route ranks chunks with scores.
    status, found = _get(gateway, f"/v1/payloads/{trex_id}/expand?query=checkout+latency+index&k=2")
    assert status == 200 and len(found["data"]) == 2
    assert "INC-4471" in found["data"][0]["text"] and found["data"][0]["score"] >= found["data"][1]["score"]
    status, doc = _get(gateway, f"/v1/payloads/{trex_id}")
    assert status == 200 and doc["metadata"]["sender"] == gateway.key_id
    assert doc["payload"]["original"] == DOCUMENT and set(FACTS) <= set(doc["payload"]["facts"])
    for query, param in (("query=x&k=0", "k"), ("query=+&k=2", "query")):  # named as in the query string
        status, doc = _get(gateway, f"/v1/payloads/{trex_id}/expand?{query}")
        assert status == 400 and doc["error"]["param"] == param


def test_store_context_on_a_proxied_request(gateway: GatewaySetup) -> None:
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[{"role": "user", "content": DOCUMENT}],
        extra_body={"trex": {"store_context": {"ttl_seconds": 3600}}},
    )
    trex_id = raw.headers["X-Trex-Id"]
    status, doc = _get(gateway, f"/v1/payloads/{trex_id}")
    assert status == 200 and doc["payload"]["dimensions"] == 384 and doc["payload"]["chunk_count"] >= 4
    assert doc["payload"]["quant_params"] == {"min": -1, "max": 1, "method": "uniform"}
    assert all(fact in doc["payload"]["summary"] for fact in find_facts(DOCUMENT))
    assert "trex" not in gateway.fake.last("/v1/chat/completions").json
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "x"}],
            extra_body={"trex": {"store_context": "yes"}},
        )
    assert err.value.body["param"] == "trex.store_context"  # type: ignore[index]


def test_unknown_and_foreign_references_are_refused_before_anything_is_forwarded(
    gateway: GatewaySetup,
) -> None:
    other_id, other_key = gateway.new_key("other")
    foreign = _compress_and_store(gateway, other_key)["trex_id"]
    sent = len(gateway.fake.received)
    with pytest.raises(openai.NotFoundError) as missing:
        gateway.openai().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "hi"}],
            extra_body={"trex": {"context_ref": ["tzp_00000000000000000000000000000000"]}},
        )
    assert missing.value.code == "payload_not_found"
    with pytest.raises(anthropic.PermissionDeniedError) as denied:
        gateway.anthropic().messages.create(
            model="claude-haiku-4-5",
            max_tokens=32,
            messages=[{"role": "user", "content": [{"type": "trex_ref", "trex_id": foreign}]}],  # type: ignore[list-item, typeddict-item]
        )
    assert denied.value.body["error"]["type"] == "permission_error"  # type: ignore[index]
    assert len(gateway.fake.received) == sent  # nothing reached an upstream
    assert _get(gateway, f"/v1/payloads/{foreign}")[0] == 403
    assert _get(gateway, f"/v1/payloads/{foreign}", other_key)[0] == 200
    assert other_id


def test_an_embeddings_endpoint_replaces_the_lexical_vectors(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    base = fake_upstream.base_urls()["OPENAI_BASE_URL"]
    worker = make_worker(
        {"MEMORY_EMBEDDINGS_URL": base, "MEMORY_EMBEDDINGS_MODEL": "nomic-embed-text"},
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "MEMORY_EMBEDDINGS_API_KEY": "sk-embed-secret"},
    )
    assert worker.app[GATEWAY].embeddings is not None, worker.app[GATEWAY].embeddings
    record, token = worker.call(worker.app[GATEWAY].keys.create("mem"))
    worker.call(worker.app[GATEWAY].keys.bind(record.id, "openai", "sk-openai"))
    setup = GatewaySetup(worker, fake_upstream, token, record.id)
    try:

        def one_hot(i: int) -> list[float]:
            return [1.0 if j == i else 0.0 for j in range(8)]

        def reply(vectors: list[list[float]]) -> Reply:
            data = [{"object": "embedding", "index": i, "embedding": v} for i, v in enumerate(vectors)]
            return Reply.json({"object": "list", "data": data, "model": "nomic-embed-text"})

        fake_upstream.enqueue("/v1/embeddings", reply([one_hot(i) for i in range(len(SECTIONS))]))
        trex_id = _compress_and_store(setup)["trex_id"]
        sent = fake_upstream.last("/v1/embeddings")
        assert sent.json == {"model": "nomic-embed-text", "input": memory.chunks(DOCUMENT)}
        assert sent.headers["Authorization"] == "Bearer sk-embed-secret"
        status, doc = _get(setup, f"/v1/payloads/{trex_id}")
        assert status == 200
        payload = doc["payload"]
        assert payload["embedding"] == "provider:nomic-embed-text" and payload["dimensions"] == 8
        assert payload["quant_params"] == {"min": 0.0, "max": 1.0, "method": "uniform"}
        assert [base64.b64decode(v)[i] for i, v in enumerate(payload["vector_seq_b64"])] == [255] * len(
            SECTIONS
        )

        # The query is embedded by the endpoint too: its vector, not the words, picks the chunk.
        fake_upstream.enqueue("/v1/embeddings", reply([one_hot(3)]))
        setup.openai().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Who schedules interviews?"}],
            extra_body={"trex": {"context_ref": [{"trex_id": trex_id, "expand": {"query": "zzz", "k": 1}}]}},
        )
        text = _forwarded_text(setup)
        assert "recruiting@example.com" in text and "db-prod-7" not in text

        # An endpoint that fails leaves the lexical vectors, and the context is still stored.
        fake_upstream.enqueue("/v1/embeddings", Reply.json({"error": {"message": "down"}}, status=500))
        fallback = _compress_and_store(setup)["trex_id"]
        status, doc = _get(setup, f"/v1/payloads/{fallback}")
        assert status == 200
        assert doc["payload"]["embedding"] == memory.LEXICAL and doc["payload"]["dimensions"] == 384

        # So does one answering JSON nested deeper than the decoder goes (it was a 500 for the client).
        deep = b'{"data": ' + b"[" * 5000 + b"]" * 5000 + b"}"
        fake_upstream.enqueue("/v1/embeddings", Reply(body=deep))
        deep_fallback = _compress_and_store(setup)["trex_id"]
        status, doc = _get(setup, f"/v1/payloads/{deep_fallback}")
        assert status == 200
        assert doc["payload"]["embedding"] == memory.LEXICAL
    finally:
        setup.close()


def test_a_reference_in_a_responses_request_and_an_anthropic_one(gateway: GatewaySetup) -> None:
    trex_id = _compress_and_store(gateway)["trex_id"]
    gateway.openai().responses.create(
        model="gpt-4o-mini",
        input=[
            {
                "role": "user",
                "content": [
                    {"type": "input_text", "text": "What is owed?"},
                    {"type": "trex_ref", "trex_id": trex_id},  # type: ignore[list-item, typeddict-item]
                ],
            }
        ],
    )
    sent = gateway.fake.last("/v1/responses").json["input"][0]["content"]
    assert sent[0] == {"type": "input_text", "text": "What is owed?"} and sent[1]["type"] == "input_text"
    assert all(fact in sent[1]["text"] for fact in FACTS)
    gateway.anthropic().messages.create(
        model="claude-haiku-4-5",
        max_tokens=64,
        messages=[{"role": "user", "content": "What is owed?"}],
        extra_body={"trex": {"context_ref": [trex_id]}},
    )
    text = json.dumps(gateway.fake.last("/v1/messages").json["messages"])
    assert all(fact in text for fact in FACTS) and "What is owed?" in text


def _call(gateway: GatewaySetup, method: str, path: str, key: str | None = None) -> int:
    req = urllib.request.Request(
        gateway.worker.url + path, method=method, headers={"Authorization": f"Bearer {key or gateway.key}"}
    )
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status
    except urllib.error.HTTPError as e:
        return e.code


def test_the_owning_key_describes_and_revokes_its_payload(gateway: GatewaySetup) -> None:
    trex_id = _compress_and_store(gateway)["trex_id"]
    _, other_key = gateway.new_key("other")
    assert _call(gateway, "HEAD", f"/v1/payloads/{trex_id}") == 200
    assert _call(gateway, "DELETE", f"/v1/payloads/{trex_id}", other_key) == 403
    assert _call(gateway, "DELETE", f"/v1/payloads/{trex_id}") == 204
    assert _call(gateway, "GET", f"/v1/payloads/{trex_id}") == 404
    assert _call(gateway, "GET", f"/v1/payloads/{trex_id}", "trex_not_a_key") == 401


@pytest.mark.parametrize(
    ("content", "trex", "param"),
    [
        ([{"type": "trex_ref"}], None, "messages[0].content[0].trex_id"),
        (
            [{"type": "trex_ref", "trex_id": "tzp_x", "expand": "everything"}],
            None,
            "messages[0].content[0].expand",
        ),
        ("hi", {"context_ref": "tzp_x"}, "trex.context_ref"),
        ("hi", {"context_ref": [7]}, "trex.context_ref"),
        (
            "hi",
            {"context_ref": [{"trex_id": "tzp_x", "expand": {"query": "q", "k": 99}}]},
            "trex.context_ref[0].expand.k",
        ),
    ],
)
def test_malformed_references_are_400s_naming_the_field(
    gateway: GatewaySetup, content: Any, trex: dict[str, Any] | None, param: str
) -> None:
    sent = len(gateway.fake.received)
    with pytest.raises(openai.BadRequestError) as err:
        gateway.openai().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": content}],
            extra_body={"trex": trex} if trex else None,
        )
    assert err.value.body["param"] == param  # type: ignore[index]
    assert len(gateway.fake.received) == sent


def _setup(make_worker: Callable[..., InProcessWorker], fake: FakeUpstream, **variables: Any) -> GatewaySetup:
    """A worker with its own [vars] and one key bound to OpenAI and Anthropic."""
    worker = make_worker(variables, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    keys = worker.app[GATEWAY].keys
    record, token = worker.call(keys.create("mem"))
    for provider in ("openai", "anthropic"):
        worker.call(keys.bind(record.id, provider, f"sk-{provider}-upstream"))
    return GatewaySetup(worker, fake, token, record.id)


def test_reference_expansion_is_bounded_by_count_and_by_the_body_limit(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """A 1 KB request naming a large payload many times forwarded megabytes: expansions may not take a request
    past MAX_BODY_BYTES (413 in the client's format, naming the limit) nor carry more than 16 references."""
    setup = _setup(make_worker, fake_upstream, MAX_BODY_BYTES=65536)
    try:
        big = "\n\n".join(f"{i}: " + SECTIONS[i % len(SECTIONS)] for i in range(40))  # ~22 KB
        raw = setup.openai().chat.completions.with_raw_response.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": big}],
            extra_body={"trex": {"store_context": True}},
        )
        trex_id = raw.headers["X-Trex-Id"]
        sent = len(fake_upstream.received)
        full = {"trex_id": trex_id, "expand": "full"}
        # Two full expansions fit; four do not.
        setup.openai().chat.completions.create(
            model="gpt-4o-mini",
            messages=[{"role": "user", "content": "Summarise."}],
            extra_body={"trex": {"context_ref": [full, full]}},
        )
        assert len(fake_upstream.received) == sent + 1
        with pytest.raises(openai.APIStatusError) as err:
            setup.openai().chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Summarise."}],
                extra_body={"trex": {"context_ref": [full] * 4}},
            )
        assert err.value.status_code == 413
        body = err.value.body
        assert isinstance(body, dict) and body["code"] == "request_too_large"
        assert "65,536" in body["message"] and "MAX_BODY_BYTES" in body["message"]
        parts: Any = [{"type": "trex_ref", "trex_id": trex_id, "expand": "full"}] * 4
        with pytest.raises(anthropic.APIStatusError) as aerr:
            setup.anthropic().messages.create(
                model="claude-haiku-4-5", max_tokens=32, messages=[{"role": "user", "content": parts}]
            )
        assert aerr.value.status_code == 413
        assert aerr.value.body["error"]["type"] == "request_too_large"  # type: ignore[index]
        # Many small references: at most 16.
        small = _compress_and_store(setup)["trex_id"]
        with pytest.raises(openai.BadRequestError) as many:
            setup.openai().chat.completions.create(
                model="gpt-4o-mini",
                messages=[{"role": "user", "content": "Summarise."}],
                extra_body={"trex": {"context_ref": [small] * 17}},
            )
        assert many.value.body["param"] == "trex.context_ref[16]"  # type: ignore[index]
        assert len(fake_upstream.received) == sent + 1  # none of the refused ones was forwarded
    finally:
        setup.close()


def test_context_ref_lands_in_the_latest_turn_in_a_shape_each_provider_accepts(gateway: GatewaySetup) -> None:
    """On a tool-result turn: after the tool_result blocks of a Messages user turn (Anthropic wants them
    first), and as a new user message after chat's `tool` message or a Responses function_call_output (it
    went into an older user turn)."""
    trex_id = _compress_and_store(gateway)["trex_id"]
    ref = {"trex": {"context_ref": [trex_id]}}
    gateway.anthropic().messages.create(
        model="claude-haiku-4-5",
        max_tokens=32,
        messages=[
            {"role": "user", "content": "Check the orders."},
            {
                "role": "assistant",
                "content": [{"type": "tool_use", "id": "toolu_1", "name": "orders", "input": {}}],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": "3 orders"}],
            },
        ],
        extra_body=ref,
    )
    sent = gateway.fake.last("/v1/messages").json["messages"]
    assert sent[0] == {"role": "user", "content": "Check the orders."}
    assert [b["type"] for b in sent[-1]["content"]] == ["tool_result", "text"]
    assert f"TrexID {trex_id}" in sent[-1]["content"][1]["text"]

    chat: Any = [
        {"role": "user", "content": "Check the orders."},
        {
            "role": "assistant",
            "content": None,
            "tool_calls": [
                {"id": "c1", "type": "function", "function": {"name": "orders", "arguments": "{}"}}
            ],
        },
        {"role": "tool", "tool_call_id": "c1", "content": "3 orders"},
    ]
    gateway.openai().chat.completions.create(model="gpt-4o-mini", messages=chat, extra_body=ref)
    sent = gateway.fake.last("/v1/chat/completions").json["messages"]
    assert sent[:3] == chat  # the older user turn is left as it was
    assert len(sent) == 4 and sent[3]["role"] == "user"
    assert f"TrexID {trex_id}" in sent[3]["content"][0]["text"]

    items: Any = [
        {"role": "user", "content": "Check the orders."},
        {"type": "function_call", "call_id": "c1", "name": "orders", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": "3 orders"},
    ]
    gateway.openai().responses.create(model="gpt-4o-mini", input=items, extra_body=ref)
    sent = gateway.fake.last("/v1/responses").json["input"]
    assert sent[:3] == items and len(sent) == 4 and sent[3]["role"] == "user"
    assert (
        sent[3]["content"][0]["type"] == "input_text" and f"TrexID {trex_id}" in sent[3]["content"][0]["text"]
    )


def test_references_inside_tool_results_system_and_tool_outputs_are_expanded(gateway: GatewaySetup) -> None:
    """A trex_ref among a Messages tool_result's blocks or in its `system` list (and among a Responses tool
    output's parts) reached the provider raw; it is expanded like one in a message."""
    trex_id = _compress_and_store(gateway)["trex_id"]
    ref: Any = {"type": "trex_ref", "trex_id": trex_id}
    messages: Any = [
        {"role": "user", "content": "What do we owe?"},
        {
            "role": "assistant",
            "content": [{"type": "tool_use", "id": "toolu_1", "name": "recall", "input": {}}],
        },
        {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": [ref]}]},
    ]
    system: Any = [{"type": "text", "text": "Be brief."}, ref]
    for model, path in (("claude-haiku-4-5", "/v1/messages"), ("gpt-4o-mini", "/v1/chat/completions")):
        gateway.anthropic().messages.create(model=model, max_tokens=32, system=system, messages=messages)
        sent = gateway.fake.last(path).json
        text = json.dumps(sent)
        assert "trex_ref" not in text and text.count(f"TrexID {trex_id}") == 2, model
        assert all(fact in text for fact in FACTS)
    sent = gateway.fake.last("/v1/messages").json
    assert sent["system"][1]["type"] == "text" and f"TrexID {trex_id}" in sent["system"][1]["text"]
    result = sent["messages"][2]["content"][0]
    assert result["type"] == "tool_result" and result["content"][0]["type"] == "text"

    items: Any = [
        {"role": "user", "content": "What do we owe?"},
        {"type": "function_call", "call_id": "c1", "name": "recall", "arguments": "{}"},
        {"type": "function_call_output", "call_id": "c1", "output": [ref]},
    ]
    gateway.openai().responses.create(model="gpt-4o-mini", input=items)
    output = gateway.fake.last("/v1/responses").json["input"][2]["output"]
    assert output[0]["type"] == "input_text" and f"TrexID {trex_id}" in output[0]["text"]


def _session_turn(
    gateway: GatewaySetup, session: str, messages: Any, trex: dict[str, Any] | None
) -> tuple[Any, list[Any]]:
    """One chat turn in a session: its response headers and the messages the upstream received, once the
    session state the turn writes is stored."""
    w, kv = gateway.worker, gateway.worker.app[GATEWAY].kv

    def stored() -> list[bytes | None]:
        return [w.call(kv.get(k.name)) for k in w.call(kv.list(prefix=f"session/{gateway.key_id}/")).keys]

    before = stored()
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=messages,
        extra_headers={"X-Session-Id": session},
        extra_body={"trex": trex} if trex else None,
    )
    deadline = time.monotonic() + 5
    while stored() == before:
        assert time.monotonic() < deadline, "session state was not stored"
        time.sleep(0.02)
    return raw.headers, gateway.fake.last("/v1/chat/completions").json["messages"]


@pytest.mark.parametrize("how", ["context_ref once", "context_ref every turn", "trex_ref part"])
def test_a_reference_in_a_session_keeps_the_replayed_prefix(gateway: GatewaySetup, how: str) -> None:
    """The session hashed the newest user turn with the context_ref expansion in it, so when the client sent
    that turn again (as it wrote it) it no longer matched: the prefix was not replayed and the provider's
    cache missed every turn. It is matched as sent and replayed as forwarded, expansion included; a
    context_ref sent again is not added a second time, and a trex_ref part in a replayed turn is not
    expanded again."""
    trex_id = _compress_and_store(gateway)["trex_id"]
    first: Any = "Turn 0: what are the deadlines?"
    if how == "trex_ref part":
        first = [{"type": "trex_ref", "trex_id": trex_id}, {"type": "text", "text": first}]
    messages: list[Any] = [
        {"role": "system", "content": "You are terse."},
        {"role": "user", "content": first},
    ]
    previous: list[Any] = []
    for turn in range(3):
        once = how == "context_ref once" and turn == 0
        trex = {"context_ref": [trex_id]} if once or how == "context_ref every turn" else None
        headers, sent = _session_turn(gateway, how, messages, trex)
        if turn:
            assert headers["X-Trex-Session-Replayed"] == str(len(previous))
            assert sent[: len(previous)] == previous  # byte for byte what was forwarded before
            assert (
                sent[len(previous) :] == messages[len(previous) :]
            )  # the new turn as sent: not expanded again
        assert json.dumps(sent).count(f"TrexID {trex_id}") == 1
        previous = sent
        messages = [
            *messages,
            {"role": "assistant", "content": f"Answer {turn}."},
            {"role": "user", "content": f"Turn {turn + 1}: and then?"},
        ]


def test_a_new_context_ref_reaches_a_latest_user_turn_before_an_assistant_prefill(
    gateway: GatewaySetup,
) -> None:
    """The latest user turn sits inside the replayed prefix when the conversation ends with an assistant
    prefill: the expansion added to it this turn must not be replaced by the turn's old forwarded bytes."""
    trex_id = _compress_and_store(gateway)["trex_id"]
    question = {"role": "user", "content": "What is the invoice number?"}
    _session_turn(gateway, "prefill", [question], None)
    messages = [question, {"role": "assistant", "content": "The invoice number is"}]
    headers, sent = _session_turn(gateway, "prefill", messages, {"context_ref": [trex_id]})
    assert f"TrexID {trex_id}" in json.dumps(sent[0])
    assert headers["X-Trex-Session-Replayed"] == "0"


def test_a_key_may_store_only_so_many_bytes_a_day(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """store_context keeps several times a request's size for up to a year: past PAYLOAD_BYTES_PER_DAY a key's
    stores are refused until midnight UTC (a stream of cheap requests could otherwise fill the disk), other
    keys are not affected, and compressing without storing still works."""
    worker = make_worker({"PAYLOAD_BYTES_PER_DAY": 60_000}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    tokens = [worker.call(worker.app[GATEWAY].keys.create(name))[1] for name in ("a", "b")]
    setup = GatewaySetup(worker, fake_upstream, tokens[0], "")
    _compress_and_store(setup)  # one store fits
    refused = None
    for _ in range(10):
        try:
            _compress_and_store(setup)
        except urllib.error.HTTPError as exc:
            refused = exc
            break
    assert refused is not None and refused.code == 429
    doc = json.loads(refused.read())
    assert (
        doc["error"]["code"] == "storage_quota_exceeded"
        and "PAYLOAD_BYTES_PER_DAY" in doc["error"]["message"]
    )
    assert 0 < int(refused.headers["Retry-After"]) <= 86400
    _compress_and_store(setup, key=tokens[1])  # another key's budget is its own
    # Ordinary traffic (no X-Session-Id: a session under a generated id) does not use up a key's budget.
    other = closed_after_test(openai.OpenAI(api_key=tokens[1], base_url=worker.url + "/v1", max_retries=0))
    for _ in range(40):  # about 120 KB of sessions
        other.chat.completions.create(
            model="gpt-4o-mini",
            messages=[
                {"role": "user", "content": DOCUMENT},
                {"role": "assistant", "content": "ok"},
                {"role": "user", "content": "and?"},
            ],
            extra_headers={"X-Upstream-Api-Key": "sk-x"},
        )
    time.sleep(0.3)  # their sessions are written after the responses
    _compress_and_store(setup, key=tokens[1])
    plain = urllib.request.Request(
        worker.url + "/v1/compress",
        data=json.dumps(
            {"model": "gpt-4o-mini", "messages": [{"role": "user", "content": DOCUMENT}]}
        ).encode(),
        method="POST",
        headers={"Authorization": f"Bearer {tokens[0]}", "Content-Type": "application/json"},
    )
    with urllib.request.urlopen(plain, timeout=10) as r:
        assert r.status == 200
