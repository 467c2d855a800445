"""Cache-safe sessions: a later turn replays what was forwarded before, byte for byte; only the new tail is
optimized; past the token budget the whole context is optimized afresh; sessions never cross keys."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import openai

from tests.conftest import MASTER_KEY
from tests.fakes.upstream import FakeUpstream
from tests.harness import InProcessWorker
from worker.appkeys import GATEWAY

FILLER = [
    "Thanks for the update, I really appreciate you taking the time to walk me through all of this today.",
    "I went ahead and looked at a few other things in the meantime but nothing stood out as unusual to me.",
    "Honestly it has been a pretty busy week around here so I am glad we are finally getting to this one.",
    "Let me know if there is anything else you would like me to check while we are looking at this together.",
]


def _prose(fact: str, n: int = 8) -> str:
    sentences = [FILLER[i % len(FILLER)] for i in range(n)]
    sentences.insert(n // 2, fact)
    return " ".join(sentences)


TURN1: list[dict[str, Any]] = [
    {"role": "user", "content": _prose("The invoice INV-2026-0042 must be paid by 2026-12-15.")},
    {"role": "assistant", "content": _prose("I confirmed the balance of $3,400.00 with the billing team.")},
    {"role": "user", "content": "What is the deadline?"},
]
TURN2 = [
    *TURN1,
    {"role": "assistant", "content": _prose("The deadline is 2026-12-15 and the amount is $3,400.00.")},
    {"role": "user", "content": "And the invoice number?"},
]


def _client(w: InProcessWorker, session: str | None) -> tuple[openai.OpenAI, str]:
    record, token = w.call(w.app[GATEWAY].keys.create("s"))
    headers = {"X-Upstream-Api-Key": "sk-x", **({"X-Session-Id": session} if session else {})}
    return openai.OpenAI(
        api_key=token, base_url=w.url + "/v1", max_retries=0, default_headers=headers
    ), record.id


def _forwarded(fake: FakeUpstream, client: openai.OpenAI, messages: list[dict[str, Any]]) -> list[str]:
    raw = client.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=messages)
    assert raw.headers["X-Trex-Session-Id"]
    return [json.dumps(m, sort_keys=True) for m in fake.last().json["messages"]]


def _wait_for_session_write(w: InProcessWorker, key_id: str) -> None:
    deadline = time.monotonic() + 5
    while time.monotonic() < deadline:
        page = w.call(w.app[GATEWAY].kv.list(prefix=f"session/{key_id}/"))
        if page.keys:
            return
        time.sleep(0.02)
    raise AssertionError("session state was not stored")


def test_later_turn_replays_the_forwarded_prefix(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    client, key_id = _client(w, "conv-1")
    first = _forwarded(fake_upstream, client, TURN1)
    assert first[0] != json.dumps(TURN1[0], sort_keys=True)  # the old user prose was compacted
    assert first[1] == json.dumps(TURN1[1], sort_keys=True)  # within the protected recent turns: whole
    _wait_for_session_write(w, key_id)
    second = _forwarded(fake_upstream, client, TURN2)
    assert second[:3] == first[:3]  # byte-identical prefix: the provider's prompt cache keeps hitting
    assert second[4] == json.dumps(TURN2[4], sort_keys=True)


def test_without_a_session_the_prefix_would_change(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """The control for the test above: with no session the aged assistant turn gets compacted."""
    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    client, _ = _client(w, None)
    first = _forwarded(fake_upstream, client, TURN1)
    second = _forwarded(fake_upstream, client, TURN2)
    assert second[1] != first[1]


def test_budget_triggers_one_full_reoptimization(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(variables={"SESSION_REOPTIMIZE_TOKENS": 50}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    client, key_id = _client(w, "conv-budget")
    first = _forwarded(fake_upstream, client, TURN1)
    _wait_for_session_write(w, key_id)
    second = _forwarded(fake_upstream, client, TURN2)
    assert second[1] != first[1]  # past the budget: everything optimized afresh


def test_sessions_do_not_cross_keys_and_stop_at_an_edited_message(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    owner, owner_id = _client(w, "shared-name")
    first = _forwarded(fake_upstream, owner, TURN1)
    _wait_for_session_write(w, owner_id)
    other, _ = _client(w, "shared-name")  # another key, same session name
    assert _forwarded(fake_upstream, other, TURN2)[1] != first[1]  # nothing replayed from the owner's session
    edited = [dict(m) for m in TURN2]
    edited[0] = {"role": "user", "content": TURN1[0]["content"] + " (edited)"}
    replayed = _forwarded(fake_upstream, owner, edited)
    assert replayed[1] != first[1]  # the history diverged at message 0: no replay after it
