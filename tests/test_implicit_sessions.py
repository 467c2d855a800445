"""Sessions for clients that name none: an OpenAI or Anthropic SDK pointed at the worker unchanged sends no
`X-Session-Id`, and its conversation is still replayed byte for byte from its second exchange on, matched by
its opening exchange. Sessions found that way never cross keys, and conversations that open alike replay only
what they share."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import anthropic
import openai
import pytest

from tests.conftest import MASTER_KEY, closed_after_test
from tests.fakes.upstream import FakeUpstream
from tests.harness import InProcessWorker, load_test_config, write_config
from tests.test_sessions import TURN1, TURN2, _prose
from worker.appkeys import GATEWAY
from worker.config import ConfigError
from worker.gateway import build_gateway

SYSTEM = {"role": "system", "content": "You are the billing assistant of ACME. Answer briefly."}


def _key(w: InProcessWorker) -> tuple[str, str]:
    record, token = w.call(w.app[GATEWAY].keys.create("implicit"))
    return record.id, token


def _openai(w: InProcessWorker, token: str) -> openai.OpenAI:
    """An OpenAI client of `token`'s (closed when the test ends)."""
    return closed_after_test(
        openai.OpenAI(
            api_key=token,
            base_url=w.url + "/v1",
            max_retries=0,
            default_headers={"X-Upstream-Api-Key": "sk-x"},
        )
    )


def _stored(w: InProcessWorker, key_id: str) -> list[bytes | None]:
    kv = w.app[GATEWAY].kv
    return [w.call(kv.get(k.name)) for k in w.call(kv.list(prefix=f"session/{key_id}/")).keys]


def _chat(
    w: InProcessWorker, fake: FakeUpstream, key_id: str, client: openai.OpenAI, messages: list[Any]
) -> tuple[Any, list[str]]:
    """One chat turn sent without X-Session-Id: its headers and the messages the upstream received, once the
    session state the turn writes (if any) has landed."""
    before = _stored(w, key_id)
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    deadline = time.monotonic() + 5
    while _stored(w, key_id) == before and time.monotonic() < deadline:
        time.sleep(0.02)
    return raw.headers, [json.dumps(m, sort_keys=True) for m in fake.last().json["messages"]]


def test_a_client_that_names_no_session_gets_its_forwarded_prefix_replayed(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    key_id, token = _key(w)
    client = _openai(w, token)
    first_headers, first = _chat(w, fake_upstream, key_id, client, [SYSTEM, *TURN1])
    assert first[1] != json.dumps(TURN1[0], sort_keys=True)  # the old user prose was compacted
    second_headers, second = _chat(w, fake_upstream, key_id, client, [SYSTEM, *TURN2])
    assert int(second_headers["X-Trex-Session-Replayed"]) == 4
    assert second[:4] == first[:4]  # byte-identical prefix: the provider's prompt cache keeps hitting
    assert first_headers["X-Trex-Session-Id"] == second_headers["X-Trex-Session-Id"]
    assert second_headers["X-Trex-Session-Id"].startswith("sess_")
    # The id it was given is its session: a client that sends it back gets the same conversation.
    turn3 = [
        *TURN2,
        {"role": "assistant", "content": "INV-2026-0042."},
        {"role": "user", "content": "Thanks."},
    ]
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=[SYSTEM, *turn3],  # type: ignore[list-item]
        extra_headers={"X-Session-Id": second_headers["X-Trex-Session-Id"]},
    )
    assert int(raw.headers["X-Trex-Session-Replayed"]) == 6


def test_with_implicit_sessions_off_the_prefix_changes(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """The control for the test above: the aged assistant turn is compacted once it leaves the recent turns."""
    w = make_worker(variables={"IMPLICIT_SESSIONS": "off"}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    key_id, token = _key(w)
    client = _openai(w, token)
    _, first = _chat(w, fake_upstream, key_id, client, TURN1)
    time.sleep(0.3)  # what a session write would take
    headers, second = _chat(w, fake_upstream, key_id, client, TURN2)
    assert headers["X-Trex-Session-Replayed"] == "0" and second[1] != first[1]


def test_conversations_that_open_alike_replay_only_what_they_share(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    key_id, token = _key(w)
    client = _openai(w, token)
    _, first = _chat(w, fake_upstream, key_id, client, TURN1)
    other = [
        *TURN1[:2],
        {"role": "user", "content": "Who at billing confirmed it?"},
        {"role": "assistant", "content": _prose("It was Dana Okafor, on ticket BILL-5521.")},
        {"role": "user", "content": "Which ticket was that?"},
    ]
    headers, forwarded = _chat(w, fake_upstream, key_id, client, other)
    assert headers["X-Trex-Session-Replayed"] == "2" and forwarded[:2] == first[:2]
    assert forwarded[2] == json.dumps(other[2], sort_keys=True)  # its own message, not the other's
    assert "BILL-5521" in forwarded[3] and forwarded[4] == json.dumps(other[4], sort_keys=True)
    # Another key sending the very same conversation shares nothing with this one.
    other_id, other_token = _key(w)
    headers, _ = _chat(w, fake_upstream, other_id, _openai(w, other_token), TURN2)
    assert headers["X-Trex-Session-Replayed"] == "0"


def test_an_anthropic_client_that_names_no_session_is_replayed_too(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    key_id, token = _key(w)
    client = closed_after_test(
        anthropic.Anthropic(
            api_key=token, base_url=w.url, max_retries=0, default_headers={"X-Upstream-Api-Key": "sk-ant-x"}
        )
    )

    def turn(messages: list[Any]) -> tuple[Any, list[Any]]:
        before = _stored(w, key_id)
        raw = client.messages.with_raw_response.create(
            model="claude-sonnet-4-5", max_tokens=64, system="Answer briefly.", messages=messages
        )
        deadline = time.monotonic() + 5
        while _stored(w, key_id) == before and time.monotonic() < deadline:
            time.sleep(0.02)
        return raw.headers, fake_upstream.last().json["messages"]

    _, first = turn(TURN1)
    assert first[0] != TURN1[0]
    headers, second = turn(TURN2)
    assert int(headers["X-Trex-Session-Replayed"]) == 3 and second[:3] == first


def test_implicit_sessions_is_an_on_off_switch(tmp_path: Path) -> None:
    config = load_test_config(write_config(tmp_path, {"IMPLICIT_SESSIONS": "maybe"}))
    with pytest.raises(ConfigError) as err:
        build_gateway(config, None)  # type: ignore[arg-type]
    assert err.value.key == "vars.IMPLICIT_SESSIONS"


def test_a_one_shot_request_stores_nothing(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """A system prompt and a question (a classification pipeline's every request) has no exchange to replay:
    nothing is kept for it, where each such request used to be stored for SESSION_TTL_SECONDS. With implicit
    sessions off, its generated id is the only way back to it, and it is stored as before."""
    for switch, kept in (("on", 0), ("off", 1)):
        w = make_worker(variables={"IMPLICIT_SESSIONS": switch}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
        key_id, token = _key(w)
        client = _openai(w, token)
        one_shot = [SYSTEM, {"role": "user", "content": "Classify: the refund of $40.00 never arrived."}]
        for _ in range(3):
            raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=one_shot)  # type: ignore[arg-type]
            assert raw.headers["X-Trex-Session-Id"].startswith("sess_")
        deadline = time.monotonic() + 2
        while len(_stored(w, key_id)) < 3 * kept and time.monotonic() < deadline:
            time.sleep(0.02)
        time.sleep(0.3)
        assert len(_stored(w, key_id)) == 3 * kept


def test_conversations_that_open_with_the_same_instructions_keep_their_own_sessions(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """A coding agent opens every conversation in a repository with the same items (its developer message,
    the AGENTS.md instructions, the environment): two conversations taking turns are told apart by the
    model's first reply, and each keeps its own forwarded prefix byte for byte."""
    developer = {"role": "developer", "content": "Sandbox: workspace-write. Approvals: on-request."}
    agents = {
        "role": "user",
        "content": "# AGENTS.md instructions for /repo\n\nRun make test before committing.",
    }
    environment = {"role": "user", "content": "<environment_context><cwd>/repo</cwd></environment_context>"}

    def conversation(tag: str, turns: int) -> list[Any]:
        opening = {"role": "user", "content": f"[{tag}] fix ticket {tag}-0"}
        out: list[Any] = [developer, agents, environment, opening]
        for t in range(turns):
            reply = _prose(f"For {tag}-{t} I changed billing/{tag}_{t}.py.")
            out.append({"role": "assistant", "content": reply})
            out.append({"role": "user", "content": f"[{tag}] what next for ticket {tag}-{t + 1}?"})
        return out

    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    key_id, token = _key(w)
    client = _openai(w, token)
    ids: set[str] = set()
    previous: list[str] | None = None
    for turns in range(1, 5):
        headers, forwarded = _chat(w, fake_upstream, key_id, client, conversation("A", turns))
        ids.add(headers["X-Trex-Session-Id"])
        if previous is not None:
            assert int(headers["X-Trex-Session-Replayed"]) == len(previous)
            assert forwarded[: len(previous)] == previous  # nothing A forwarded before is rewritten
        previous = forwarded
        other, _ = _chat(w, fake_upstream, key_id, client, conversation("B", turns))
        ids.add(other["X-Trex-Session-Id"])
    assert len(ids) == 2
