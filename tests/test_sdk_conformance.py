"""Everything the worker sends a client validates against the official SDKs' types, strictly.

The SDKs read responses without validating them, so these tests validate instead (see tests/conformance.py):
every body and every stream event of the six translation paths (chat, Responses and Messages clients, each to
an OpenAI-format and an Anthropic upstream), of OpenRouter and local chat, of embeddings, the model list and
the token count, and the error bodies of each format (the gateway's own, the upstream's, a stream that breaks
mid-way), for the answers that shape the output: text with cached tokens, one tool call, parallel tool calls
after text, a stop sequence, the token limit reached, reasoning (alone and before tool calls), a refusal, an
image in, and the sparse answers some OpenAI-compatible servers give. One worker and one fake upstream serve
the whole module.
"""

from __future__ import annotations

import json
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import anthropic.types
import openai.types
import pydantic
import pytest

from tests.conformance import (
    Answer,
    Got,
    Http,
    chat_body,
    chat_sse,
    check_anthropic_error,
    check_chat_body,
    check_chat_stream,
    check_messages_body,
    check_messages_stream,
    check_openai_error,
    check_responses_body,
    check_responses_stream,
    claude_body,
    claude_sse,
    strict,
)
from tests.conftest import MASTER_KEY, GatewaySetup, with_key
from tests.fakes.upstream import FakeUpstream, Reply, fixture_json, split_sse
from tests.harness import InProcessWorker, load_test_config, write_config

PNG = "iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNk+M9QDwADhgGAWjR9awAAAABJRU5ErkJggg=="
WEATHER = {"type": "object", "properties": {"city": {"type": "string"}}, "required": ["city"]}

SCENARIOS: dict[str, Answer] = {
    "text": Answer(text="Paris is the capital of France.", cached=16),
    "tool": Answer(calls=[("toolu_01Paris", "get_weather", {"city": "Paris"})], stop="tool_calls"),
    "parallel": Answer(
        text="Checking both.",
        calls=[
            ("toolu_01Paris", "get_weather", {"city": "Paris"}),
            ("toolu_02Rome", "get_weather", {"city": "Rome"}),
        ],
        stop="tool_calls",
    ),
    "stop_sequence": Answer(text="Paris", stop="stop_sequence", stop_sequence="END"),
    "max_tokens": Answer(text="Paris is the cap", stop="length"),
    "thinking": Answer(thinking="The user asks for a capital.", text="Paris.", reasoning_tokens=5),
    "image": Answer(text="A single white pixel."),
    "thinking_tools": Answer(
        thinking="Two cities: two calls.",
        text="Checking both.",
        calls=[
            ("toolu_01Paris", "get_weather", {"city": "Paris"}),
            ("toolu_02Rome", "get_weather", {"city": "Rome"}),
        ],
        stop="tool_calls",
    ),
    "refusal": Answer(text="I can't help with that.", stop="content_filter"),
    "bare": Answer(text="Paris.", bare=True),
}
TRANSLATED_ONLY = {"bare"}
"""Answers an upstream may send that only a translation must mend: a same-format answer goes as it came."""

CLAUDE = "claude-sonnet-4-6"
GPT = "gpt-4o-mini"
OPENROUTER = "meta-llama/llama-3.3-70b-instruct"
LOCAL = "local/qwen3"
UPSTREAM_PATH = {
    CLAUDE: "/v1/messages",
    GPT: "/v1/chat/completions",
    OPENROUTER: "/api/v1/chat/completions",
    LOCAL: "/local/v1/chat/completions",
}


@pytest.fixture(scope="module")
def gw(tmp_path_factory: pytest.TempPathFactory) -> Iterator[GatewaySetup]:
    """The module's worker, with no retries (an upstream error reaches the client at once) and no circuit
    breaker (one test's upstream errors do not pause a route for the next)."""
    fake = FakeUpstream().start()
    directory: Path = tmp_path_factory.mktemp("conformance")
    path = write_config(
        directory,
        {**fake.base_urls(), "BREAKER_FAILURES": 0, "UPSTREAM_RETRIES": 0},
        dev_vars={"TREX_MASTER_KEY": MASTER_KEY},
    )
    worker = InProcessWorker(load_test_config(path)).start()
    try:
        yield with_key(worker, fake)
    finally:
        worker.stop()
        fake.stop()


@pytest.fixture(scope="module")
def http(gw: GatewaySetup) -> Http:
    return Http(gw.worker.url)


@pytest.fixture(autouse=True)
def _fresh_upstream(gw: GatewaySetup) -> None:
    gw.fake.reset()


def _answer_with(gw: GatewaySetup, model: str, answer: Answer, stream: bool) -> None:
    """The upstream of `model` answers `answer` in its own format."""
    if model == CLAUDE:
        reply = Reply.stream(claude_sse(answer)) if stream else Reply.json(claude_body(answer))
    else:
        reply = Reply.stream(chat_sse(answer)) if stream else Reply.json(chat_body(answer))
    gw.fake.set(UPSTREAM_PATH[model], reply)


def _post(http: Http, gw: GatewaySetup, path: str, body: dict[str, Any], key: str | None = None) -> Got:
    headers = {"Authorization": f"Bearer {key or gw.key}"}
    if path == "/v1/messages":
        headers = {"x-api-key": key or gw.key, "anthropic-version": "2023-06-01"}
    return http.post(path, headers, body=body)


# ---- requests of each format for a scenario ------


def _chat_request(model: str, name: str, answer: Answer, stream: bool) -> dict[str, Any]:
    content: Any = "What is the capital of France?"
    if name == "image":
        content = [
            {"type": "text", "text": "What is this?"},
            {"type": "image_url", "image_url": {"url": f"data:image/png;base64,{PNG}"}},
        ]
    body: dict[str, Any] = {
        "model": model,
        "messages": [{"role": "user", "content": content}],
        "max_tokens": 64,
    }
    if answer.calls:
        body["tools"] = [{"type": "function", "function": {"name": "get_weather", "parameters": WEATHER}}]
    if answer.stop_sequence:
        body["stop"] = [answer.stop_sequence]
    if stream:
        body |= {"stream": True, "stream_options": {"include_usage": True}}
    return body


def _responses_request(model: str, name: str, answer: Answer, stream: bool) -> dict[str, Any]:
    body: dict[str, Any] = {
        "model": model,
        "input": "What is the capital of France?",
        "max_output_tokens": 64,
    }
    if name == "image":
        parts = [
            {"type": "input_text", "text": "What is this?"},
            {"type": "input_image", "image_url": f"data:image/png;base64,{PNG}", "detail": "auto"},
        ]
        body["input"] = [{"role": "user", "content": parts}]
    if answer.calls:
        body["tools"] = [{"type": "function", "name": "get_weather", "parameters": WEATHER, "strict": False}]
    if stream:
        body["stream"] = True
    return body


def _messages_request(model: str, name: str, answer: Answer, stream: bool) -> dict[str, Any]:
    content: Any = "What is the capital of France?"
    if name == "image":
        content = [
            {"type": "text", "text": "What is this?"},
            {"type": "image", "source": {"type": "base64", "media_type": "image/png", "data": PNG}},
        ]
    body: dict[str, Any] = {
        "model": model,
        "max_tokens": 64,
        "messages": [{"role": "user", "content": content}],
    }
    if answer.calls:
        body["tools"] = [{"name": "get_weather", "input_schema": WEATHER}]
    if answer.stop_sequence:
        body["stop_sequences"] = [answer.stop_sequence]
    if answer.thinking:
        body |= {"max_tokens": 2048, "thinking": {"type": "enabled", "budget_tokens": 1024}}
    if stream:
        body["stream"] = True
    return body


# ---- the six translation paths and the same-format ones ------


def _cases(models: list[str], same_format: set[str]) -> list[Any]:
    """Every scenario on each model's upstream, plain and streamed (those that only a translation must mend
    left out where `models` are sent the client's own format)."""
    return [
        pytest.param(model, name, stream, id=f"{model.split('/')[0]}-{name}-{'stream' if stream else 'body'}")
        for model in models
        for name in SCENARIOS
        for stream in (False, True)
        if not (model in same_format and name in TRANSLATED_ONLY)
    ]


@pytest.mark.parametrize(
    ("model", "name", "stream"), _cases([CLAUDE, GPT, OPENROUTER, LOCAL], {GPT, OPENROUTER, LOCAL})
)
def test_chat_completions_conform(gw: GatewaySetup, http: Http, model: str, name: str, stream: bool) -> None:
    answer = SCENARIOS[name]
    _answer_with(gw, model, answer, stream)
    resp = _post(http, gw, "/v1/chat/completions", _chat_request(model, name, answer, stream))
    assert resp.status_code == 200, resp.text
    if not stream:
        completion = check_chat_body(resp.json())
        calls = completion.choices[0].message.tool_calls or []
        assert [c.id for c in calls] == [c[0] for c in answer.calls]
        return
    chunks = check_chat_stream(resp.content)
    if not answer.bare:
        assert sum(1 for c in chunks if c.usage is not None) == 1, "one usage chunk, as include_usage asks"
    called = {call.index for c in chunks for ch in c.choices for call in ch.delta.tool_calls or []}
    assert called == set(range(len(answer.calls)))


@pytest.mark.parametrize(("model", "name", "stream"), _cases([CLAUDE, OPENROUTER, LOCAL], set()))
def test_responses_conform(gw: GatewaySetup, http: Http, model: str, name: str, stream: bool) -> None:
    answer = SCENARIOS[name]
    _answer_with(gw, model, answer, stream)
    resp = _post(http, gw, "/v1/responses", _responses_request(model, name, answer, stream))
    assert resp.status_code == 200, resp.text
    if stream:
        events = check_responses_stream(resp.content)
        final = events[-1].response
    else:
        final = check_responses_body(resp.json())
    calls = [item for item in final.output if item.type == "function_call"]
    assert [c.call_id for c in calls] == [c[0] for c in answer.calls]
    if answer.stop in ("length", "content_filter"):  # the item cut off says so, as OpenAI's does
        assert final.status == "incomplete" and final.incomplete_details is not None
        assert [item.status for item in final.output] == ["incomplete"]


@pytest.mark.parametrize("fixture", ["responses_text", "responses_function_call"])
@pytest.mark.parametrize("stream", [False, True])
def test_responses_to_openai_conform(gw: GatewaySetup, http: Http, fixture: str, stream: bool) -> None:
    body = {"model": GPT, "input": "hi", "stream": stream}
    gw.fake.set(
        "/v1/responses",
        Reply.stream(f"openai/{fixture}.sse") if stream else Reply.json(f"openai/{fixture}.json"),
    )
    resp = _post(http, gw, "/v1/responses", body)
    assert resp.status_code == 200, resp.text
    if stream:
        check_responses_stream(resp.content)
    else:
        check_responses_body(resp.json())


@pytest.mark.parametrize(("model", "name", "stream"), _cases([CLAUDE, GPT, OPENROUTER, LOCAL], {CLAUDE}))
def test_messages_conform(gw: GatewaySetup, http: Http, model: str, name: str, stream: bool) -> None:
    answer = SCENARIOS[name]
    _answer_with(gw, model, answer, stream)
    resp = _post(http, gw, "/v1/messages", _messages_request(model, name, answer, stream))
    assert resp.status_code == 200, resp.text
    if stream:
        events = check_messages_stream(resp.content)
        starts = [e.content_block for e in events if e.type == "content_block_start"]
        used = [b.id for b in starts if b.type == "tool_use"]
    else:
        message = check_messages_body(resp.json())
        used = [b.id for b in message.content if b.type == "tool_use"]
    assert len(used) == len(answer.calls)


# ---- embeddings, models ------


def test_embeddings_conform(gw: GatewaySetup, http: Http) -> None:
    resp = _post(http, gw, "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["a", "b"]})
    assert resp.status_code == 200, resp.text
    strict(openai.types.CreateEmbeddingResponse, resp.json())


def test_models_conform_in_both_shapes(gw: GatewaySetup, http: Http) -> None:
    bearer = {"Authorization": f"Bearer {gw.key}"}
    listed = http.get("/v1/models", bearer).json()
    assert listed["object"] == "list" and listed["data"]
    for model in listed["data"]:
        strict(openai.types.Model, model)
    for wanted in (CLAUDE, "openai/gpt-4o-mini"):  # a catalog model, and one routed outside the catalog
        strict(openai.types.Model, http.get(f"/v1/models/{wanted}", bearer).json())
    claude = {"x-api-key": gw.key, "anthropic-version": "2023-06-01"}
    page = http.get("/v1/models", claude, params={"limit": 1000}).json()
    assert page["data"] and isinstance(page["has_more"], bool)
    for model in page["data"]:
        strict(anthropic.types.ModelInfo, model)
    for wanted in (CLAUDE, "openai/gpt-4o-mini"):
        strict(anthropic.types.ModelInfo, http.get(f"/v1/models/{wanted}", claude).json())


# ---- errors ------

OPENAI_ROUTES = [
    ("/v1/chat/completions", {"model": GPT, "messages": [{"role": "user", "content": "hi"}]}),
    ("/v1/responses", {"model": CLAUDE, "input": "hi"}),
    ("/v1/embeddings", {"model": "text-embedding-3-small", "input": "hi"}),
]


def _check_error(resp: Got, status: int, anthropic_shape: bool) -> None:
    assert resp.status_code == status, resp.text
    if anthropic_shape:
        check_anthropic_error(resp.json())
    else:
        check_openai_error(resp.json())


@pytest.mark.parametrize(
    ("path", "body"),
    [
        *OPENAI_ROUTES,
        ("/v1/messages", {"model": GPT, "max_tokens": 8, "messages": [{"role": "user", "content": "hi"}]}),
    ],
)
def test_gateway_errors_conform(gw: GatewaySetup, http: Http, path: str, body: dict[str, Any]) -> None:
    messages = path == "/v1/messages"
    _check_error(_post(http, gw, path, body, key="tx-not-a-key"), 401, messages)
    _check_error(_post(http, gw, path, {**body, "model": "no-such-provider"}), 404, messages)
    _check_error(_post(http, gw, path, {**body, "model": 7}), 400, messages)
    headers = (
        {"Authorization": f"Bearer {gw.key}", "anthropic-version": "2023-06-01"}
        if messages
        else {"Authorization": f"Bearer {gw.key}"}
    )
    _check_error(http.post(path, headers, content=b"{not json"), 400, messages)


def test_unknown_routes_and_models_conform(gw: GatewaySetup, http: Http) -> None:
    bearer = {"Authorization": f"Bearer {gw.key}"}
    _check_error(http.get("/v1/nothing-here", bearer), 404, False)
    _check_error(http.get("/v1/models/no-such-model", bearer), 404, False)
    claude = {"x-api-key": gw.key, "anthropic-version": "2023-06-01"}
    _check_error(http.get("/v1/models/no-such-model", claude), 404, True)


UPSTREAM_ERRORS = [
    (400, "openai/error_invalid_request.json", "anthropic/error_invalid_request.json"),
    (
        401,
        {
            "error": {
                "message": "bad key",
                "type": "invalid_request_error",
                "param": None,
                "code": "invalid_api_key",
            }
        },
        {"type": "error", "error": {"type": "authentication_error", "message": "bad key"}},
    ),
    (
        404,
        {
            "error": {
                "message": "no model",
                "type": "invalid_request_error",
                "param": "model",
                "code": "model_not_found",
            }
        },
        {"type": "error", "error": {"type": "not_found_error", "message": "no model"}},
    ),
    (429, "openai/error_rate_limit.json", "anthropic/error_rate_limit.json"),
    (
        500,
        {"error": {"message": "boom", "type": "server_error", "param": None, "code": None}},
        {"type": "error", "error": {"type": "api_error", "message": "boom"}},
    ),
    (
        529,
        {"error": {"message": "busy", "type": "server_error", "param": None, "code": None}},
        "anthropic/error_overloaded.json",
    ),
    (503, b"<html>Service Unavailable</html>", b"<html>Service Unavailable</html>"),
]


def _error_reply(status: int, body: Any) -> Reply:
    if isinstance(body, bytes):
        return Reply(status=status, body=body, content_type="text/html")
    return Reply.json(body, status=status)


@pytest.mark.parametrize(
    ("status", "openai_body", "anthropic_body"), UPSTREAM_ERRORS, ids=[str(e[0]) for e in UPSTREAM_ERRORS]
)
@pytest.mark.parametrize("stream", [False, True])
def test_upstream_errors_conform(
    gw: GatewaySetup, http: Http, status: int, openai_body: Any, anthropic_body: Any, stream: bool
) -> None:
    for model in (GPT, CLAUDE, OPENROUTER):
        body = anthropic_body if model == CLAUDE else openai_body
        gw.fake.set(UPSTREAM_PATH[model], _error_reply(status, body))
    gw.fake.set("/v1/responses", _error_reply(status, openai_body))
    for model in (GPT, CLAUDE, OPENROUTER):
        for path, request in (
            ("/v1/chat/completions", _chat_request(model, "text", SCENARIOS["text"], stream)),
            ("/v1/responses", _responses_request(model, "text", SCENARIOS["text"], stream)),
            ("/v1/messages", _messages_request(model, "text", SCENARIOS["text"], stream)),
        ):
            resp = _post(http, gw, path, request)
            assert resp.status_code >= 400, (model, path, resp.text)
            if path == "/v1/messages":
                check_anthropic_error(resp.json())
            else:
                check_openai_error(resp.json())


def _broken_stream(model: str) -> Reply:
    """A stream of `model`'s upstream that breaks with an error event after its first words."""
    if model == CLAUDE:
        return Reply.stream("anthropic/stream_error.sse")
    events = chat_sse(SCENARIOS["text"]).split(b"\n\n")[:3]
    # OpenAI sends an error object; OpenRouter its error chunk, with finish_reason "error".
    error: dict[str, Any] = {
        "error": {"message": "overloaded", "type": "server_error", "param": None, "code": None}
    }
    if model == OPENROUTER:
        error = json.loads(events[-1].removeprefix(b"data: ")) | {"error": {"code": 502, "message": "died"}}
        error["choices"][0] |= {"delta": {"content": ""}, "finish_reason": "error"}
    return Reply.stream(b"\n\n".join(events) + b"\n\ndata: " + json.dumps(error).encode() + b"\n\n")


@pytest.mark.parametrize("model", [CLAUDE, GPT, OPENROUTER])
def test_errors_mid_stream_conform(gw: GatewaySetup, http: Http, model: str) -> None:
    """A stream that breaks after it began ends with the error event of the client's format, after events
    that are valid and in order as far as they go."""
    gw.fake.set(UPSTREAM_PATH[model], _broken_stream(model))
    answer = SCENARIOS["text"]
    for path, request, check in (
        ("/v1/chat/completions", _chat_request(model, "text", answer, True), check_chat_stream),
        ("/v1/responses", _responses_request(model, "text", answer, True), check_responses_stream),
        ("/v1/messages", _messages_request(model, "text", answer, True), check_messages_stream),
    ):
        resp = _post(http, gw, path, request)
        assert resp.status_code == 200, resp.text
        assert b'"error"' in resp.content.rsplit(b"\n\n", 2)[-2], resp.text[-300:]
        check(resp.content)


@pytest.mark.parametrize("model", [CLAUDE, GPT])
def test_a_stream_for_a_request_for_one_answer_is_a_502_in_the_clients_format(
    gw: GatewaySetup, http: Http, model: str
) -> None:
    """An upstream that streams to a request that did not ask for a stream gives the client a 502 in its own
    format (as any answer no SDK could read does), not an internal error."""
    gw.fake.set(
        UPSTREAM_PATH[model],
        Reply.stream(claude_sse(SCENARIOS["text"]) if model == CLAUDE else chat_sse(SCENARIOS["text"])),
    )
    gw.fake.set("/v1/responses", Reply.stream("openai/responses_text.sse"))  # OpenAI's Responses, as sent
    answer = SCENARIOS["text"]
    for path, request in (
        ("/v1/chat/completions", _chat_request(model, "text", answer, False)),
        ("/v1/responses", _responses_request(model, "text", answer, False)),
        ("/v1/messages", _messages_request(model, "text", answer, False)),
    ):
        resp = _post(http, gw, path, request)
        _check_error(resp, 502, path == "/v1/messages")
        assert "event stream" in resp.text


def test_messages_token_count_conforms(gw: GatewaySetup, http: Http) -> None:
    """`/v1/messages/count_tokens` for a model not Claude's is counted here, in Anthropic's shape."""
    body = {"model": GPT, "messages": [{"role": "user", "content": "What is the capital of France?"}]}
    resp = _post(http, gw, "/v1/messages/count_tokens", body)
    assert resp.status_code == 200, resp.text
    assert strict(anthropic.types.MessageTokensCount, resp.json()).input_tokens > 0


def test_the_checks_refuse_what_strict_clients_refuse() -> None:
    """The checks above fail on the breakages the SDKs let through: a float `created`, a chunk choice without
    its `index`, usage without `input_tokens`, a Responses item without `status`, a tool_use block started
    without its id, events out of order."""
    invalid = (pydantic.ValidationError, AssertionError)
    check_chat_body(chat_body(SCENARIOS["text"]))
    with pytest.raises(invalid):
        check_chat_body({**chat_body(SCENARIOS["text"]), "created": 1752583901.5})
    stream = chat_sse(SCENARIOS["text"])
    check_chat_stream(stream)
    with pytest.raises(invalid):
        check_chat_stream(stream.replace(b'{"index": 0, "delta"', b'{"delta"', 1))
    message = claude_body(SCENARIOS["text"])
    check_messages_body(message)
    with pytest.raises(invalid):
        check_messages_body({**message, "usage": {"output_tokens": 12}})
    response = fixture_json("openai/responses_text.json")
    check_responses_body(response)
    del response["output"][0]["status"]
    with pytest.raises(invalid):
        check_responses_body(response)
    calls = claude_sse(SCENARIOS["tool"])
    check_messages_stream(calls)
    with pytest.raises(invalid):
        check_messages_stream(calls.replace(b'"id": "toolu_01Paris", ', b""))
    events = split_sse(calls)
    with pytest.raises(invalid):  # message_delta before the block's stop
        check_messages_stream(b"".join([*events[:-3], events[-2], events[-3], events[-1]]))
