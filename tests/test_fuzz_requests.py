"""Fuzzing every route's request body: from a valid body per POST/PATCH/PUT route, one part is swapped for
something odd (another type, a 400-digit integer, NaN, a lone surrogate, hundreds of nesting levels, odd tool
output for the optimizer, wrong header values). Whatever a client sends, the worker answers a structured
error in the route's shape with a 4xx, or serves it; never a 500, never an unhandled exception in its log,
and it stays healthy. Raw HTTP through aiohttp's client, because the SDKs cannot send most of these."""

from __future__ import annotations

import asyncio
import copy
import json
import logging
import os
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.conftest import MASTER_KEY, with_key
from tests.fakes.upstream import FakeUpstream, Reply
from tests.harness import InProcessWorker, load_test_config, write_config
from worker.agents import authorization_header
from worker.appkeys import GATEWAY

ADMIN = "adm_" + "f" * 40
TOOL_CALL = {"id": "call_1", "type": "function", "function": {"name": "read", "arguments": '{"path": "a"}'}}
MESSAGES_TOOL_USE = {"type": "tool_use", "id": "toolu_1", "name": "read", "input": {"path": "a"}}
PAYLOAD_PUSH = {
    "tzp_version": "1.0",
    "payload": {
        "vector_seq_b64": ["AAECAwQ="],
        "quant_params": {"min": -1, "max": 1, "method": "uniform"},
        "dimensions": 384,
        "chunk_count": 1,
        "summary": "demo payload",
    },
    "metadata": {"ttl_seconds": 600, "allowed_receivers": []},
}


# The optimizer at its most active, so that every tool output goes through it.
OPTIMIZE_ALL = {"optimize": {"mode": "aggressive", "protect_recent_turns": 0}}


def chat_body(tool_output: str = "ok") -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "system", "content": "be brief"},
            {"role": "user", "content": [{"type": "text", "text": "read a"}]},
            {"role": "assistant", "content": None, "tool_calls": [TOOL_CALL]},
            {"role": "tool", "tool_call_id": "call_1", "content": tool_output},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [
            {
                "type": "function",
                "function": {"name": "read", "parameters": {"type": "object", "properties": {}}},
            }
        ],
        "max_tokens": 16,
        "metadata": {"team": "a"},
        "trex": OPTIMIZE_ALL,
    }


def responses_body(tool_output: str = "ok") -> dict[str, Any]:
    return {
        "model": "gpt-4o-mini",
        "instructions": "be brief",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": "read a"}]},
            {"type": "function_call", "call_id": "call_1", "name": "read", "arguments": '{"path": "a"}'},
            {"type": "function_call_output", "call_id": "call_1", "output": tool_output},
            {"role": "user", "content": "thanks"},
        ],
        "tools": [{"type": "function", "name": "read", "parameters": {"type": "object", "properties": {}}}],
        "max_output_tokens": 16,
        "metadata": {"team": "a"},
        "trex": OPTIMIZE_ALL,
    }


def messages_body(tool_output: str = "ok") -> dict[str, Any]:
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 16,
        "system": [{"type": "text", "text": "be brief"}],
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "read a"}]},
            {"role": "assistant", "content": [MESSAGES_TOOL_USE]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_1", "content": tool_output}],
            },
            {"role": "user", "content": "thanks"},
        ],
        "tools": [{"name": "read", "input_schema": {"type": "object", "properties": {}}}],
        "metadata": {"user_id": "u1"},
        "trex": OPTIMIZE_ALL,
    }


@dataclass
class Env:
    """The worker under fuzz, the credentials each route needs, and what it logged at ERROR or above."""

    worker: InProcessWorker
    key: str
    spare_key_id: str
    agent_id: str
    agent_secret: str
    spare_agent_id: str
    errors: list[logging.LogRecord] = field(default_factory=list)


class _Collect(logging.Handler):
    def __init__(self, into: list[logging.LogRecord]) -> None:
        super().__init__(logging.ERROR)
        self.into = into

    def emit(self, record: logging.LogRecord) -> None:
        self.into.append(record)


@pytest.fixture(scope="module")
def env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Env]:
    """One worker for the whole module (hypothesis runs many examples against it)."""
    fake = FakeUpstream().start()
    # The routes passed through as they are, answered as their providers would.
    fake.set("/v1/responses/input_tokens", Reply.json({"object": "response.input_tokens", "input_tokens": 9}))
    fake.set("/v1/messages/count_tokens", Reply.json({"input_tokens": 9}))
    fake.set("/v1/chat/completions/chatcmpl_1", Reply.json("openai/chat_text.json"))
    directory: Path = tmp_path_factory.mktemp("fuzz")
    path = write_config(
        directory, fake.base_urls(), dev_vars={"TREX_MASTER_KEY": MASTER_KEY, "TREX_ADMIN_TOKEN": ADMIN}
    )
    worker = InProcessWorker(load_test_config(path)).start()
    setup = with_key(worker, fake)
    gw = worker.app[GATEWAY]
    spare, _ = worker.call(gw.keys.create("spare"))
    agent, secret = worker.call(gw.agents.create("pusher"))
    spare_agent, _ = worker.call(gw.agents.create("spare"))
    errors: list[logging.LogRecord] = []
    handler = _Collect(errors)
    loggers = [logging.getLogger("trex"), logging.getLogger("aiohttp")]
    for logger in loggers:
        logger.addHandler(handler)
    try:
        yield Env(worker, setup.key, spare.id, agent.id, secret, spare_agent.id, errors)
    finally:
        for logger in loggers:
            logger.removeHandler(handler)
        worker.stop()
        fake.stop()


@dataclass(frozen=True)
class Target:
    """A route, a valid body for it, and the error shape it answers in."""

    method: str
    path: str
    body: dict[str, Any]
    anthropic: bool = False
    auth: str = "key"  # "key", "admin" or "agent"


def targets(env: Env) -> list[Target]:
    """One valid request per route (the model calls first, see `model_calls`), built anew for each use."""
    spare, agent = env.spare_key_id, env.spare_agent_id
    return [
        Target("POST", "/v1/chat/completions", chat_body()),
        Target("POST", "/v1/responses", responses_body()),
        Target("POST", "/v1/responses/input_tokens", responses_body()),
        Target("POST", "/v1/messages", messages_body(), anthropic=True),
        Target("POST", "/v1/messages/count_tokens", messages_body(), anthropic=True),
        Target("POST", "/v1/chat/completions", {**chat_body(), "stream": True}),
        Target("POST", "/v1/responses", {**responses_body(), "stream": True}),
        Target("POST", "/v1/messages", {**messages_body(), "stream": True}, anthropic=True),
        # Translated: the adapters decode the whole body.
        Target("POST", "/v1/chat/completions", {**chat_body(), "model": "claude-sonnet-4-5"}),
        Target("POST", "/v1/responses", {**responses_body(), "model": "claude-sonnet-4-5"}),
        Target("POST", "/v1/messages", {**messages_body(), "model": "gpt-4o-mini"}, anthropic=True),
        Target(
            "POST",
            "/v1/messages",
            {**messages_body(), "model": "gpt-4o-mini", "stream": True},
            anthropic=True,
        ),
        # Counted here with tiktoken, not forwarded.
        Target(
            "POST", "/v1/messages/count_tokens", {**messages_body(), "model": "gpt-4o-mini"}, anthropic=True
        ),
        Target("POST", "/v1/embeddings", {"model": "text-embedding-3-small", "input": ["hi", "there"]}),
        Target("POST", "/v1/compress", chat_body()),
        Target("POST", "/v1/compress", messages_body()),
        Target("POST", "/v1/chat/completions/chatcmpl_1", {"metadata": {"team": "b"}}),
        Target("POST", "/v1/payloads", PAYLOAD_PUSH, auth="agent"),
        Target(
            "POST",
            "/admin/v1/keys",
            {"name": "fuzzed", "plan": None, "optimize_mode": "balanced"},
            auth="admin",
        ),
        Target("PATCH", f"/admin/v1/keys/{spare}", {"state": "active", "plan": None}, auth="admin"),
        Target("PUT", f"/admin/v1/keys/{spare}/bindings/openai", {"api_key": "sk-fuzz-1"}, auth="admin"),
        Target("POST", f"/admin/v1/keys/{spare}/credits", {"amount_usd": 1}, auth="admin"),
        Target("POST", "/admin/v1/agents", {"name": "fuzzed"}, auth="admin"),
        Target("PATCH", f"/admin/v1/agents/{agent}", {"state": "active"}, auth="admin"),
    ]


def model_calls(env: Env) -> list[Target]:
    """The targets that call a model (plain, streamed and translated), not the stored-object, payload or
    admin routes."""
    return targets(env)[:13]


@dataclass
class Answer:
    status: int
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


def send(env: Env, target: Target, raw: bytes, headers: dict[str, str] | None = None) -> Answer:
    """`raw` as the body of `target`'s request, with its credentials and `headers` on top."""
    env.errors.clear()  # what an earlier request logged was reported with it
    sent: dict[str, str] = {"Content-Type": "application/json"}
    if target.auth == "admin":
        sent["Authorization"] = f"Bearer {ADMIN}"
    elif target.auth == "agent":
        sent["Authorization"] = authorization_header(
            env.agent_id, env.agent_secret, target.method, target.path
        )
    elif target.anthropic:
        sent["x-api-key"] = env.key
        sent["anthropic-version"] = "2023-06-01"
    else:
        sent["Authorization"] = f"Bearer {env.key}"
    sent.update(headers or {})

    async def go() -> Answer:
        url = env.worker.url + target.path
        async with (
            aiohttp.ClientSession(skip_auto_headers=("Content-Type",)) as session,
            session.request(target.method, url, data=raw, headers=sent) as resp,
        ):
            return Answer(resp.status, await resp.read())

    return asyncio.run(go())


def assert_handled(env: Env, target: Target, answer: Answer, what: object) -> None:
    """Served, or refused with a 4xx in the route's error shape naming the problem; nothing logged as an
    unhandled error."""
    context = f"{target.method} {target.path} with {str(what)[:300]!r}: {answer.status} {answer.body[:500]!r}"
    assert answer.status < 500, context
    assert not env.errors, f"{context}; logged: {[r.getMessage() for r in env.errors]}"
    if answer.status < 400:
        return
    doc = answer.json()
    if target.anthropic:
        assert doc["type"] == "error", context
        error = doc["error"]
        assert isinstance(error["type"], str) and error["type"], context
    else:
        error = doc["error"]
        assert set(error) >= {"message", "type", "param", "code"}, context
    assert isinstance(error["message"], str) and error["message"].strip(), context


def assert_healthy(env: Env) -> None:
    async def go() -> int:
        async with aiohttp.ClientSession() as session, session.get(env.worker.url + "/health") as resp:
            return resp.status

    assert asyncio.run(go()) == 200


def encode(body: Any) -> bytes:
    """JSON as a client might write it: NaN/Infinity tokens and lone surrogates (as `\\ud800` escapes) pass."""
    return json.dumps(body).encode()


# --- mutations ---------------------------------------------------------------------------------------------


def deep(levels: int, leaf: Any = "x", kind: str = "list") -> Any:
    value = leaf
    for _ in range(levels):
        value = [value] if kind == "list" else {"k": value}
    return value


TOOL_OUTPUTS = [
    '{"id": ' + "9" * 309 + "}",
    '{"n": -' + "1" * 400 + ', "f": 1e999, "g": -1e999, "h": 1e-999}',
    '{"a": NaN, "b": Infinity, "c": -Infinity}',
    "[" * 400 + "]" * 400,
    "[" * 950 + "]" * 950,
    '{"a":' * 990 + "1" + "}" * 990,
    "[" * 5000 + "]" * 5000,
    '{"a":' * 300 + "1" + "}" * 300,
    '{"k": 1, "k": 2, "k": [1, 2, 3]}',
    '{"s": "\\ud800", "t": "\\udfff\\ud800"}',
    '[{"id": 1}, {"id": 1}, {"id": 1}, ' * 50 + "{}" + "]" * 50,
    '{"unterminated": [1, 2, ',
    "\n".join(
        f"2026-01-01T00:00:{i % 60:02d}Z ERROR worker[{i}] failed: {'x' * (i % 7)}" for i in range(400)
    ),
    "\n".join(["--- a/x.py", "+++ b/x.py", "@@ -1,3 +1,3 @@", "-old", "+new", " same"] * 100),
    "@@ -99999999999999999999999,1 +1,999999999999999999999999 @@\n-a\n+b\n",
    "diff --git a/x b/x\n@@ -1 +1 @@\n" + "+" * 5000,
    "\x00\x01\x02\x1b[31mred\x1b[0m\r\n\t" * 200,
    "\ufeff\u202e\u200b" * 1000,
    "a" * 300_000,
    ("line\n" * 2000) + "same\n" * 2000,
    "src/a.py:1:1: E501 line too long\n" * 500,
    "Traceback (most recent call last):\n" + '  File "x.py", line 1, in <module>\n' * 300 + "ValueError: x",
    "| a | b |\n|---|---|\n" + "| 1 | 2 |\n" * 500,
    "<html>" * 300 + "</html>" * 300,
    "1e400 " * 1000,
    "-" * 100_000,
]


ODD_VALUES: list[Any] = [
    None,
    True,
    False,
    0,
    -1,
    -(2**63) - 1,
    2**64,
    10**400,
    -(10**400),
    1.5,
    -0.0,
    1e308,
    float("nan"),
    float("inf"),
    float("-inf"),
    "",
    " ",
    "\ud800",
    "a\udfffb",
    "\x00",
    "x" * 200_000,
    "9" * 400,
    [],
    {},
    [None],
    [[]],
    [{}],
    {"": None},
    {"type": "mystery"},
    {"role": "wizard", "content": "hi"},
    deep(300),
    deep(300, kind="dict"),
    deep(60),
    deep(900),
    deep(900, kind="dict"),
    deep(60, kind="dict"),
]

_leaves = st.none() | st.booleans() | st.integers() | st.floats() | st.text(max_size=8)
odd_values = st.one_of(
    st.sampled_from(ODD_VALUES),
    st.sampled_from(TOOL_OUTPUTS),
    st.integers(),
    st.floats(allow_nan=True, allow_infinity=True),
    st.text(max_size=40),
    st.lists(_leaves, max_size=4),
    st.dictionaries(st.text(max_size=8), _leaves, max_size=4),
    st.lists(
        st.lists(_leaves, max_size=3) | st.dictionaries(st.text(max_size=8), _leaves, max_size=3), max_size=3
    ),
)


def paths_of(value: Any, prefix: tuple[Any, ...] = ()) -> list[tuple[Any, ...]]:
    """Every place in `value` that a mutation can replace (the root excluded), to a depth of 12: below that is
    only what an earlier mutation put in (hundreds of levels), which a recursive walk could not get through."""
    found: list[tuple[Any, ...]] = []
    if len(prefix) >= 12:
        return found
    items = value.items() if isinstance(value, dict) else enumerate(value) if isinstance(value, list) else ()
    for k, v in items:
        found.append((*prefix, k))
        found.extend(paths_of(v, (*prefix, k)))
    return found


def replaced(body: Any, path: tuple[Any, ...], new: Any) -> Any:
    """`body` with the value at `path` replaced by `new`: the containers on the path are copied, the rest is
    shared (a deep copy would recurse through a deeply nested value)."""
    out = copy.copy(body)
    out[path[0]] = replaced(body[path[0]], path[1:], new) if len(path) > 1 else new
    return out


SETTINGS = settings(
    max_examples=int(os.environ.get("FUZZ_EXAMPLES", "60")),
    deadline=None,
    suppress_health_check=[HealthCheck.function_scoped_fixture, HealthCheck.too_slow],
    derandomize=not os.environ.get("FUZZ_RANDOM"),
)


@SETTINGS
@given(data=st.data())
def test_a_field_swapped_for_something_odd_is_served_or_refused_in_the_routes_shape(
    env: Env, data: st.DataObject
) -> None:
    target = data.draw(st.sampled_from(targets(env)))
    body, changes = target.body, []
    for _ in range(data.draw(st.integers(1, 3))):  # one change, or a few at once
        where = paths_of(body)
        if not where:
            break
        path, new = data.draw(st.sampled_from(where)), data.draw(odd_values)
        body = replaced(body, path, new)
        changes.append((path, new))
    assert_handled(env, target, send(env, target, encode(body)), changes)


@SETTINGS
@given(data=st.data())
def test_a_field_dropped_or_an_unknown_one_added_is_served_or_refused(env: Env, data: st.DataObject) -> None:
    target = data.draw(st.sampled_from(targets(env)))
    path = data.draw(st.sampled_from(paths_of(target.body)))
    body = copy.deepcopy(target.body)  # a valid body: a few levels deep
    node = body
    for k in path[:-1]:
        node = node[k]
    if data.draw(st.booleans()):
        del node[path[-1]]
    elif isinstance(node, dict):
        node[data.draw(st.text(max_size=12))] = data.draw(odd_values)
    else:
        node.append(data.draw(odd_values))
    assert_handled(env, target, send(env, target, encode(body)), (path, body))


@pytest.mark.parametrize("output", TOOL_OUTPUTS, ids=[f"out{i}" for i in range(len(TOOL_OUTPUTS))])
def test_odd_tool_output_is_optimized_without_a_crash_in_every_format(env: Env, output: str) -> None:
    for make, path in (
        (chat_body, "/v1/chat/completions"),
        (responses_body, "/v1/responses"),
        (messages_body, "/v1/messages"),
        (chat_body, "/v1/compress"),
        (messages_body, "/v1/compress"),
    ):
        body = make(output)
        target = Target("POST", path, body, anthropic=path == "/v1/messages")
        answer = send(env, target, encode(body), {"X-Trex-Optimize": "true"})
        assert_handled(env, target, answer, output[:80])
    assert_healthy(env)


@SETTINGS
@given(text=st.text(max_size=2000), which=st.integers(0, 2))
def test_arbitrary_tool_output_text_never_crashes_the_optimizer(env: Env, text: str, which: int) -> None:
    make = (chat_body, responses_body, messages_body)[which]
    target = Target("POST", "/v1/compress", make(text), auth="key")
    assert_handled(env, target, send(env, target, encode(make(text))), text)


RAW_BODIES: list[bytes] = [
    b"",
    b"null",
    b"[]",
    b"[{}]",
    b'"text"',
    b"42",
    b"true",
    b"{",
    b"{}",
    b'{"model": "gpt-4o-mini", "model": 5}',
    b'{"a": 1}garbage',
    b"\xff\xfe\x00",
    b'{"model": "\xff\xfe"}',
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\xc3\x28"}]}',
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "\\ud800"}]}',
    b'{"max_tokens": ' + b"9" * 400 + b"}",
    b'{"max_tokens": 1e999}',
    b'{"max_tokens": NaN}',
    b"\xef\xbb\xbf{}",
    b'{"x": ' + b"[" * 300 + b"]" * 300 + b"}",
    b'{"model": "gpt-4o-mini", "messages": [{"role": "user", "content": '
    + b"[" * 2000
    + b"]" * 2000
    + b"}]}",
    b'{"model": "gpt-4o-mini", "metadata": ' + b'{"a": ' * 2000 + b"1" + b"}" * 2001,
]


@pytest.mark.parametrize("raw", RAW_BODIES, ids=[f"raw{i}" for i in range(len(RAW_BODIES))])
def test_a_body_that_is_not_a_json_object_of_the_route_is_a_structured_400(env: Env, raw: bytes) -> None:
    for target in targets(env):
        assert_handled(env, target, send(env, target, raw), raw[:60])
    assert_healthy(env)


HEADER_CASES: list[dict[str, str]] = [
    {"X-Trex-Optimize": "maybe"},
    {"X-Trex-Optimize": ""},
    {"X-Trex-Optimize": "9" * 400},
    {"X-Trex-Optimize": "true, false"},
    {"X-Session-Id": ""},
    {"X-Session-Id": "s" * 5000},
    {"X-Session-Id": "é☃\u202e"},
    {"X-Session-Id": "a b\tc"},
    {"anthropic-version": ""},
    {"anthropic-version": "1999-01-01"},
    {"anthropic-version": "x" * 3000},
    {"anthropic-beta": ",,,"},
    {"Content-Type": "text/plain"},
    {"Content-Type": "application/json; charset=latin-1"},
    {"Content-Type": "multipart/form-data; boundary=x"},
    {"Content-Type": ""},
    {"X-Trex-Compression-Model": ""},
    {"X-Trex-Compression-Model": "no-such-model"},
    {"X-Request-Id": "\u00e9" * 300},
    {"Idempotency-Key": "k" * 5000},
]


@pytest.mark.parametrize("headers", HEADER_CASES, ids=[f"hdr{i}" for i in range(len(HEADER_CASES))])
def test_odd_header_values_are_served_or_refused_in_the_routes_shape(
    env: Env, headers: dict[str, str]
) -> None:
    for target in targets(env):
        assert_handled(env, target, send(env, target, encode(target.body), headers), headers)
    assert_healthy(env)


TREX_OPTIONS: list[Any] = [
    None,
    "yes",
    5,
    [],
    {"optimize": "yes"},
    {"optimize": 2},
    {"optimize": []},
    {"optimize": {"mode": 5}},
    {"optimize": {"mode": []}},
    {"optimize": {"mode": {}}},
    {"optimize": {"mode": "ultra"}},
    {"optimize": {"mode": None}},
    {"optimize": {"compression_model": []}},
    {"optimize": {"compression_model": {}}},
    {"optimize": {"compression_model": 5}},
    {"optimize": {"protect_recent_turns": -1}},
    {"optimize": {"protect_recent_turns": 10**400}},
    {"optimize": {"protect_recent_turns": "3"}},
    {"optimize": {"protect_recent_turns": 1.5}},
    {"optimize": {"protect_recent_turns": float("nan")}},
    {"store_context": "forever"},
    {"store_context": -5},
    {"store_context": 10**400},
    {"store_context": float("inf")},
    {"store_context": []},
    {"store_context": {"ttl_seconds": 10**400}},
    {"context_ref": "tzp_x"},
    {"context_ref": [5]},
    {"context_ref": [None]},
    {"context_ref": [[]]},
    {"context_ref": [{}]},
    {"context_ref": [{"trex_id": []}]},
    {"context_ref": [{"trex_id": "tzp_x", "expand": 10**400}]},
    {"context_ref": ["tzp_x"] * 500},
    {"expand": []},
    {"expand": {"k": 10**400}},
    {"routing": "fast"},
    {"routing": []},
    {"routing": {"fallbacks": "x"}},
    {"routing": {"fallbacks": [5]}},
    {"routing": {"fallbacks": [[]]}},
    {"routing": {"fallbacks": [{"provider": 5, "model": []}]}},
    {"routing": {"fallbacks": [{"provider": [], "model": "gpt-4o-mini"}]}},
    {"routing": {"fallbacks": [{"provider": {}, "model": {}}]}},
    {"routing": {"fallbacks": [{}] * 50}},
    {"routing": {"smart": []}},
    {"session": {"id": 5}},
    {"": {}},
    deep(300, kind="dict"),
]


@pytest.mark.parametrize("trex", TREX_OPTIONS, ids=[f"trex{i}" for i in range(len(TREX_OPTIONS))])
def test_trex_options_of_the_wrong_type_are_refused_naming_them(env: Env, trex: Any) -> None:
    for target in model_calls(env):
        body = {**target.body, "trex": trex}
        assert_handled(env, target, send(env, target, encode(body)), trex)
    assert_healthy(env)


def test_the_unmutated_bodies_are_served(env: Env) -> None:
    """The baseline every mutation starts from: each body is valid for its route."""
    for target in targets(env):
        answer = send(env, target, encode(target.body))
        assert answer.status < 300 or target.path.startswith("/v1/chat/completions/"), (target, answer)


# --- crashes the fuzzing found, each pinned by a plain case -------------------------------------------------


@pytest.mark.parametrize("stream", [-1, 1, "true", "false", [], {}])
@pytest.mark.parametrize("target", [0, 1, 3], ids=["chat", "responses", "messages"])
def test_a_stream_flag_that_is_not_a_boolean_is_a_400_naming_it(env: Env, stream: Any, target: int) -> None:
    """It was read as "not streamed" and forwarded as it was; an upstream reading it as truthy streamed, and
    the client got a 502 bad_upstream_response for its own mistake."""
    route = targets(env)[target]
    answer = send(env, route, encode({**route.body, "stream": stream}))
    assert answer.status == 400, answer
    error = answer.json()["error"]
    assert "stream" in error["message"]
    if not route.anthropic:
        assert error["param"] == "stream"


@pytest.mark.parametrize("odd", [[], {}, ["system"], {"role": "system"}])
def test_a_role_or_item_type_that_is_a_list_or_an_object_is_not_a_500(env: Env, odd: Any) -> None:
    """A role was looked up in a set (implicit sessions: the system messages before the opening exchange) and
    a Responses item's type in a dict (the optimizer: hosted shell calls), both a TypeError for a JSON list or
    object: a 500 for every such request."""
    chat, responses = targets(env)[0], targets(env)[1]
    for target, path in ((chat, ("messages", 0, "role")), (responses, ("input", 1, "type"))):
        answer = send(env, target, encode(replaced(target.body, path, odd)))
        assert_handled(env, target, answer, (path, odd))
        answer = send(env, COMPRESS_CHAT, encode(replaced(chat.body, ("messages", 0, "role"), odd)))
        assert_handled(env, COMPRESS_CHAT, answer, odd)


COMPRESS_CHAT = Target("POST", "/v1/compress", chat_body())


@pytest.mark.parametrize("odd", [[], {}, ["json_object"]])
def test_a_response_format_type_that_is_not_a_string_is_a_400_when_translated(env: Env, odd: Any) -> None:
    """Translating a Chat Completions request for Claude looked the type up in a set: a TypeError, a 500."""
    chat = targets(env)[0]
    body = {**chat.body, "model": "claude-sonnet-4-5", "response_format": {"type": odd}}
    answer = send(env, chat, encode(body))
    assert answer.status == 400, answer
    assert answer.json()["error"]["param"] == "response_format.type"


def send_raw_headers(env: Env, target: Target, extra: bytes) -> Answer:
    """`target`'s valid body with header lines `extra` as raw bytes (not UTF-8, say), over a bare socket: no
    client library sends those."""
    body = encode(target.body)
    auth = (
        f"x-api-key: {env.key}\r\nanthropic-version: 2023-06-01\r\n"
        if target.anthropic
        else f"Authorization: Bearer {env.key}\r\n"
    )
    netloc = env.worker.url.split("://", 1)[1]
    host, port = netloc.rsplit(":", 1)
    head = (
        f"{target.method} {target.path} HTTP/1.1\r\nHost: {netloc}\r\nConnection: close\r\n{auth}"
        f"Content-Type: application/json\r\nContent-Length: {len(body)}\r\n"
    ).encode()

    async def go() -> Answer:
        reader, writer = await asyncio.open_connection(host, int(port))
        try:
            writer.write(head + extra + b"\r\n" + body)
            await writer.drain()
            raw = await reader.read()
        finally:
            writer.close()
            await writer.wait_closed()
        status_line, _, rest = raw.partition(b"\r\n")
        payload = rest.partition(b"\r\n\r\n")[2]
        return Answer(int(status_line.split()[1]), payload)

    env.errors.clear()
    return asyncio.run(go())


RAW_HEADERS: list[bytes] = [
    b"X-Session-Id: \xff\xfe\xfd\r\n",
    b"X-Session-Id: \xc3\x28\r\n",
    b"X-Session-Id: \xed\xa0\x80\r\n",  # a UTF-8-encoded lone surrogate
    b"X-Trex-Optimize: \xe9\r\n",
    b"X-Trex-Compression-Model: \xff\r\n",
    b"anthropic-version: \xff\xfe\r\n",
    b"anthropic-beta: \x80\r\n",
    b"Content-Type: application/\xffjson\r\n",
    b"Idempotency-Key: \xff\r\n",
    b"X-Request-Id: \xff\r\n",
    b"X-Forwarded-For: \xff, 1.2.3.4\r\n",
]


@pytest.mark.parametrize("extra", RAW_HEADERS, ids=[f"raw_hdr{i}" for i in range(len(RAW_HEADERS))])
def test_header_values_that_are_not_utf8_are_served_or_refused(env: Env, extra: bytes) -> None:
    for target in model_calls(env):
        answer = send_raw_headers(env, target, extra)
        if answer.status < 400 and target.body.get("stream"):
            continue  # a stream: nothing more to check than its status
        assert_handled(env, target, answer, extra)
    assert_healthy(env)


@SETTINGS
@given(data=st.data())
def test_an_odd_next_turn_of_a_stored_session_is_served_or_refused(env: Env, data: st.DataObject) -> None:
    """A session's next turn is matched against what was stored and replayed: the odd part is in a turn the
    worker compares with one it kept."""
    target = data.draw(st.sampled_from(model_calls(env)))
    session = {"X-Session-Id": f"fuzz-{data.draw(st.integers(0, 10**9))}"}
    assert_handled(env, target, send(env, target, encode(target.body), session), "first turn")
    body = copy.copy(target.body)
    field_name = "input" if "input" in body else "messages"
    body[field_name] = [
        *body[field_name],
        {"role": "assistant", "content": "done"},
        {"role": "user", "content": "more"},
    ]
    changes = []
    for _ in range(data.draw(st.integers(1, 2))):
        path = data.draw(st.sampled_from(paths_of(body)))
        new = data.draw(odd_values)
        body = replaced(body, path, new)
        changes.append((path, new))
    assert_handled(env, target, send(env, target, encode(body), session), changes)


@pytest.mark.parametrize("path", ["/v1/responses/input_tokens", "/v1/chat/completions/chatcmpl_1"])
def test_a_body_nested_deeper_than_the_decoder_goes_is_a_400_on_the_passed_through_routes(
    env: Env, path: str
) -> None:
    """These routes decoded the body with their own decoder, which caught a malformed body but not one nested
    too deeply: its RecursionError was a 500."""
    raw = b'{"model": "gpt-4o-mini", "input": ' + b"[" * 5000 + b"]" * 5000 + b"}"
    answer = send(env, Target("POST", path, {}), raw)
    assert answer.status == 400, answer
    assert answer.json()["error"]["code"] == "invalid_json"


@pytest.mark.parametrize("arguments", ["[" * 5000 + "]" * 5000, '{"a": ' * 5000 + "1" + "}" * 5000])
def test_tool_call_arguments_nested_too_deeply_are_a_400_when_translated_for_claude(
    env: Env, arguments: str
) -> None:
    """The arguments (a JSON string) are decoded to become Claude's `input`: a malformed string was a 400 but one
    nested deeper than the decoder goes raised RecursionError, a 500."""
    chat = targets(env)[0]
    call = {**TOOL_CALL, "function": {"name": "read", "arguments": arguments}}
    body = replaced({**chat.body, "model": "claude-sonnet-4-5"}, ("messages", 2, "tool_calls", 0), call)
    answer = send(env, chat, encode(body))
    assert answer.status == 400, answer
    assert "arguments" in answer.json()["error"]["message"]
    responses = targets(env)[1]
    body = replaced({**responses.body, "model": "claude-sonnet-4-5"}, ("input", 1, "arguments"), arguments)
    assert_handled(env, responses, send(env, responses, encode(body)), arguments[:20])


# Nesting as deep as the body decoder takes, at each place a walk over the body may recurse into.
DEEPEST = 880
DEEP_PLACES: list[tuple[int, tuple[Any, ...]]] = [
    (0, ("messages", 1, "content", 0, "text")),
    (0, ("messages", 3, "content")),
    (0, ("tools", 0, "function", "parameters", "properties")),
    (0, ("metadata",)),
    (0, ("response_format",)),
    (3, ("messages", 1, "content", 0, "input")),
    (3, ("tools", 0, "input_schema", "properties")),
    (3, ("messages", 2, "content", 0, "content")),
    (1, ("input", 0, "content")),
    (1, ("tools", 0, "parameters", "properties")),
    (1, ("text",)),
]


def nested(levels: int, kind: str) -> bytes:
    """JSON text nested `levels` deep (written out: the encoder would recurse as deep as the worker must)."""
    if kind == "list":
        return b"[" * levels + b'"x"' + b"]" * levels
    return b'{"k": ' * levels + b'"x"' + b"}" * levels


@pytest.mark.parametrize("kind", ["list", "dict"])
@pytest.mark.parametrize(("which", "place"), DEEP_PLACES, ids=[f"deep{i}" for i in range(len(DEEP_PLACES))])
def test_nesting_as_deep_as_the_decoder_takes_is_served_or_refused(
    env: Env, which: int, place: tuple[Any, ...], kind: str
) -> None:
    base = targets(env)[which]
    models = ("claude-sonnet-4-5", "gpt-4o-mini") if base.anthropic else ("gpt-4o-mini", "claude-sonnet-4-5")
    for model in models:
        for stream in (False, True):
            body = replaced({**base.body, "model": model, "stream": stream}, place, "\0DEEP")
            raw = encode(body).replace(b'"\\u0000DEEP"', nested(DEEPEST, kind))
            for target in (base, Target("POST", "/v1/compress", body)):
                answer = send(env, target, raw)
                if answer.status < 400 and stream and target is base:
                    continue
                assert_handled(env, target, answer, (model, stream, place))
    assert_healthy(env)
