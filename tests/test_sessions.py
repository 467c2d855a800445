"""Cache-safe sessions: a later turn replays what was forwarded before, byte for byte; only the new tail is
optimized; past the token budget the whole context is optimized afresh; sessions never cross keys."""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from typing import Any

import openai

from tests.conftest import MASTER_KEY, closed_after_test
from tests.fakes.upstream import FakeUpstream
from tests.harness import InProcessWorker
from tests.test_usage import HTTP
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


def _notes(fact: str) -> str:
    """Notes the user pasted: long enough (`narrative.PASTED_TOKENS`) to be compacted like other prose. A
    shorter older user turn is the user's instructions, which balanced mode keeps whole."""
    return "My notes from the billing call:\n\n" + _prose(fact, n=56)


TURN1: list[dict[str, Any]] = [
    {"role": "user", "content": _notes("The invoice INV-2026-0042 must be paid by 2026-12-15.")},
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
    client = openai.OpenAI(api_key=token, base_url=w.url + "/v1", max_retries=0, default_headers=headers)
    return closed_after_test(client), record.id


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


def _turn(
    w: InProcessWorker,
    fake: FakeUpstream,
    key_id: str,
    client: openai.OpenAI,
    messages: list[dict[str, Any]],
    **headers: str,
) -> tuple[Any, list[Any]]:
    """One chat turn: its response headers and the messages the upstream received, once the session state
    the turn writes is stored."""
    kv = w.app[GATEWAY].kv

    def stored() -> list[bytes | None]:
        return [w.call(kv.get(k.name)) for k in w.call(kv.list(prefix=f"session/{key_id}/")).keys]

    before = stored()
    raw = client.chat.completions.with_raw_response.create(
        model="gpt-4o-mini",
        messages=messages,  # type: ignore[arg-type]
        extra_headers=headers,
    )
    deadline = time.monotonic() + 5
    while stored() == before:
        assert time.monotonic() < deadline, "session state was not stored"
        time.sleep(0.02)
    return raw.headers, fake.last().json["messages"]


def test_past_the_budget_a_session_is_reoptimized_once_then_replayed_again(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """A context that stays over the budget after its re-optimization is not re-optimized (and its cached
    prefix lost) on every turn: only after growing by half the budget again."""
    w = make_worker(variables={"SESSION_REOPTIMIZE_TOKENS": 50}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    client, key_id = _client(w, "conv-regrow")
    headers, _ = _turn(w, fake_upstream, key_id, client, TURN1)
    assert headers["X-Trex-Session-Reoptimized"] == "false"
    headers, second = _turn(w, fake_upstream, key_id, client, TURN2)
    assert headers["X-Trex-Session-Reoptimized"] == "true" and headers["X-Trex-Session-Replayed"] == "0"
    turn3 = [
        *TURN2,
        {"role": "assistant", "content": _prose("Invoice INV-2026-0042 is for $3,400.00.")},
        {"role": "user", "content": "Thanks."},
    ]
    headers, third = _turn(w, fake_upstream, key_id, client, turn3)
    assert headers["X-Trex-Session-Reoptimized"] == "false"
    assert int(headers["X-Trex-Session-Replayed"]) == len(TURN2) and third[: len(TURN2)] == second
    turn4 = [*turn3, {"role": "assistant", "content": "Welcome."}, {"role": "user", "content": "OK?"}]
    headers, _ = _turn(w, fake_upstream, key_id, client, turn4)
    # Turn 3 grew the forwarded context by more than half the budget since the re-optimization.
    assert headers["X-Trex-Session-Reoptimized"] == "true"


def test_with_optimization_off_a_session_forwards_the_messages_as_sent(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    client, key_id = _client(w, "conv-off")
    _, first = _turn(w, fake_upstream, key_id, client, TURN1)
    assert first[0] != TURN1[0]  # compacted in balanced mode
    headers, second = _turn(w, fake_upstream, key_id, client, TURN2, **{"X-Trex-Optimize": "off"})
    assert second == TURN2 and headers["X-Trex-Saved-Tokens"] == "0"


def test_a_session_that_changes_its_optimizer_settings_is_not_replayed_what_the_old_ones_made(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """Turn 1 in aggressive mode compacts the old prose; turn 2 asks for `safe` (lossless only) and must not
    be sent those compacted bytes again. Settings kept the same replay as before."""
    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    client, key_id = _client(w, "conv-modes")
    _, first = _turn(w, fake_upstream, key_id, client, TURN1, **{"X-Trex-Optimize": "aggressive"})
    assert first[0] != TURN1[0]
    headers, second = _turn(w, fake_upstream, key_id, client, TURN2, **{"X-Trex-Optimize": "safe"})
    assert second == TURN2 and headers["X-Trex-Session-Replayed"] == "0"
    turn3 = [*TURN2, {"role": "assistant", "content": "Done."}, {"role": "user", "content": "Thanks."}]
    headers, third = _turn(w, fake_upstream, key_id, client, turn3, **{"X-Trex-Optimize": "safe"})
    assert int(headers["X-Trex-Session-Replayed"]) == len(TURN2) and third[: len(TURN2)] == second


def test_a_moved_cache_breakpoint_keeps_the_replayed_prefix(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """Claude Code puts its `cache_control` breakpoint on the newest block each turn: the content already
    forwarded is replayed unchanged, with the breakpoints where the client now puts them."""
    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    record, token = w.call(w.app[GATEWAY].keys.create("cc"))
    key_id = record.id
    headers = {"x-api-key": token, "X-Upstream-Api-Key": "sk-x", "X-Session-Id": "cc-1"}
    breakpoint_ = {"type": "ephemeral"}

    def text(words: str, cache: bool = False) -> dict[str, Any]:
        block: dict[str, Any] = {"type": "text", "text": words}
        return {**block, "cache_control": breakpoint_} if cache else block

    history = [
        {"role": "user", "content": [text(_notes("Ticket TCK-1 is open."))]},
        {"role": "assistant", "content": [text(_prose("TCK-1 noted."))]},
    ]
    # The newest block carries the breakpoint, so it is pinned: forwarded whole, however long.
    latest = _prose("TCK-2 was reported at 09:14 by the night shift.")
    turn1 = [*history, {"role": "user", "content": [text(latest, cache=True)]}]
    turn2 = [
        *history,
        {"role": "user", "content": [text(latest)]},  # the breakpoint moved on to the newest block
        {"role": "assistant", "content": [text(_prose("TCK-2 is next."))]},
        {"role": "user", "content": [text("Go.", cache=True)]},
    ]
    kv = w.app[GATEWAY].kv
    sent = []
    for messages in (turn1, turn2):
        before = [w.call(kv.get(k.name)) for k in w.call(kv.list(prefix=f"session/{key_id}/")).keys]
        body = {"model": "claude-sonnet-4-6", "max_tokens": 50, "messages": messages}
        r = HTTP.post(w.url + "/v1/messages", json=body, headers=headers)
        assert r.status_code == 200, r.text
        sent.append(fake_upstream.last().json["messages"])
        deadline = time.monotonic() + 5
        while [w.call(kv.get(k.name)) for k in w.call(kv.list(prefix=f"session/{key_id}/")).keys] == before:
            assert time.monotonic() < deadline
            time.sleep(0.02)
    first, second = sent
    assert first[0] != turn1[0]  # compacted prose: what the session must replay, not re-derive
    assert second[:2] == first[:2]  # the forwarded prefix, byte for byte
    # Replayed as forwarded (whole), not compacted now that it has no breakpoint: the cached prefix holds.
    assert first[2]["content"] == [text(latest, cache=True)]
    assert second[2]["content"] == [text(latest)]  # the moved breakpoint is gone from here ...
    assert second[-1]["content"][-1]["cache_control"] == breakpoint_  # ... and is on the newest block


def test_any_printable_session_id_up_to_1024_characters_is_kept_and_others_are_400s(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """An id over 128 characters (or with a tab) was replaced by a new generated id on every turn while the
    request was still treated as the client's session: nothing was ever replayed and each turn left an
    orphan session behind. A long id is kept; an unusable one is a 400 naming the header."""
    w = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    long_id = "agent-run/" + "0123456789abcdef" * 40  # 650 characters
    client, key_id = _client(w, long_id)
    headers, first = _turn(w, fake_upstream, key_id, client, TURN1)
    assert headers["X-Trex-Session-Id"] == long_id
    headers, second = _turn(w, fake_upstream, key_id, client, TURN2)
    assert headers["X-Trex-Session-Id"] == long_id and headers["X-Trex-Session-Replayed"] == str(len(TURN1))
    assert second[: len(TURN1)] == first
    assert len(w.call(w.app[GATEWAY].kv.list(prefix=f"session/{key_id}/")).keys) == 1  # no orphans

    auth = {"Authorization": f"Bearer {client.api_key}", "X-Upstream-Api-Key": "sk-x"}
    body = {"model": "gpt-4o-mini", "messages": TURN1}
    sent = len(fake_upstream.received)
    for bad, problem in (("a" * 1025, "at most 1024 characters"), ("run\t7", "printable")):
        r = HTTP.post(w.url + "/v1/chat/completions", json=body, headers={**auth, "X-Session-Id": bad})
        error = r.json()["error"]
        assert (r.status_code, error["param"]) == (400, "X-Session-Id") and problem in error["message"], (
            r.text
        )
    assert len(fake_upstream.received) == sent
    # An empty header is no session id: a generated one, as without the header.
    r = HTTP.post(w.url + "/v1/chat/completions", json=body, headers={**auth, "X-Session-Id": ""})
    assert r.status_code == 200 and r.headers["X-Trex-Session-Id"].startswith("sess_")


def test_a_session_compacted_by_its_client_is_reoptimized_by_the_budget_again(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """After a re-optimization, a client that compacts its history under the same session id (agents do, on
    /compact) starts a new conversation: its growth past the budget is measured from nothing. The old mark
    was carried over, so a compacted conversation was not re-optimized until it passed the old size."""
    w = make_worker(variables={"SESSION_REOPTIMIZE_TOKENS": 50}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    client, key_id = _client(w, "conv-compact")
    _turn(w, fake_upstream, key_id, client, TURN1)
    headers, _ = _turn(w, fake_upstream, key_id, client, TURN2)
    assert headers["X-Trex-Session-Reoptimized"] == "true"
    mark = int(headers["X-Trex-Optimized-Tokens"])
    compacted: list[dict[str, Any]] = [
        {"role": "user", "content": "Summary so far: invoice INV-2026-0042 for $3,400.00 is due 2026-12-15."},
        {"role": "assistant", "content": "Noted: INV-2026-0042, $3,400.00, due 2026-12-15."},
        {"role": "user", "content": "Who should I remind about it, and by which date at the latest?"},
    ]
    headers, _ = _turn(w, fake_upstream, key_id, client, compacted)
    assert headers["X-Trex-Session-Reoptimized"] == "false" and headers["X-Trex-Session-Replayed"] == "0"
    grown = [
        *compacted,
        {"role": "assistant", "content": "Remind billing."},
        {"role": "user", "content": "OK."},
    ]
    headers, _ = _turn(w, fake_upstream, key_id, client, grown)
    # Past the budget, and far below the old mark plus half the budget: re-optimized all the same.
    assert int(headers["X-Trex-Optimized-Tokens"]) < mark
    assert headers["X-Trex-Session-Reoptimized"] == "true"


def test_new_sessions_past_the_keys_daily_storage_are_not_stored_known_ones_are(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> None:
    """Every new X-Session-Id stores a conversation for a day: past PAYLOAD_BYTES_PER_DAY a key's new sessions
    are not stored (their next turn is not replayed; the request itself is served), while the sessions it has
    keep being replayed and updated."""
    probe = make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY})
    client, key_id = _client(probe, "measure")
    _turn(probe, fake_upstream, key_id, client, TURN1)
    entry = probe.call(probe.app[GATEWAY].kv.list(prefix=f"session/{key_id}/")).keys[0].name
    size = len(probe.call(probe.app[GATEWAY].kv.get(entry)) or b"")
    w = make_worker(
        variables={"PAYLOAD_BYTES_PER_DAY": size * 3 // 2}, dev_vars={"TREX_MASTER_KEY": MASTER_KEY}
    )
    first, key_id = _client(w, "first")
    _turn(w, fake_upstream, key_id, first, TURN1)  # fits: stored
    token = first.api_key
    second = closed_after_test(
        openai.OpenAI(
            api_key=token,
            base_url=w.url + "/v1",
            max_retries=0,
            default_headers={"X-Upstream-Api-Key": "sk-x", "X-Session-Id": "second"},
        )
    )
    assert second.chat.completions.create(model="gpt-4o-mini", messages=TURN1).choices  # type: ignore[arg-type]
    time.sleep(0.3)  # its state would be written after the response
    raw = second.chat.completions.with_raw_response.create(model="gpt-4o-mini", messages=TURN2)  # type: ignore[arg-type]
    assert raw.headers["X-Trex-Session-Replayed"] == "0"  # it was not stored
    headers, _ = _turn(w, fake_upstream, key_id, first, TURN2)
    assert int(headers["X-Trex-Session-Replayed"]) > 0  # the session it had is replayed and updated
