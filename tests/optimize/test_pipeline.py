"""The optimizer over the corpus and over random conversations: every planted fact forwarded verbatim, tool
pairs intact, deterministic, never larger; what must never be touched is byte-identical."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from tests.optimize.corpus import Case, all_cases, coding_session
from worker import tokens
from worker.optimize.pipeline import Options, _billed, _billed_parts, _count_parts, measure, optimize
from worker.optimize.segments import detect_format

CASES = {c.name: c for c in all_cases()}


def _strings(obj: Any) -> str:
    """Every string value in a JSON document, joined (facts are checked in the text, not in JSON escapes)."""
    if isinstance(obj, str):
        return obj
    if isinstance(obj, dict):
        return "\n".join(_strings(v) for v in obj.values())
    if isinstance(obj, list):
        return "\n".join(_strings(v) for v in obj)
    return ""


def _run(case: Case, mode: str = "balanced", turns: int = 2) -> tuple[dict[str, Any], Any]:
    body = copy.deepcopy(case.body)
    report = optimize(case.fmt, body, Options(mode=mode, protect_recent_turns=turns))  # type: ignore[arg-type]
    return body, report


def _tool_pairs_valid(body: dict[str, Any]) -> None:
    """Every tool call has exactly one result after it, in order, with the same id (chat format)."""
    pending: list[str] = []
    for msg in body["messages"]:
        if msg["role"] == "assistant":
            assert not pending, f"tool calls without results: {pending}"
            pending = [c["id"] for c in msg.get("tool_calls") or []]
        elif msg["role"] == "tool":
            assert msg["tool_call_id"] == pending.pop(0)
    assert not pending


@pytest.mark.parametrize("name", sorted(CASES))
@pytest.mark.parametrize("mode", ["safe", "balanced", "aggressive"])
def test_every_planted_fact_is_forwarded_verbatim(name: str, mode: str) -> None:
    case = CASES[name]
    body, report = _run(case, mode)
    # Both counts are exact, the input's included (it may be counted on another thread meanwhile).
    assert report.original_tokens == measure(case.fmt, case.body)
    text = _strings(body)
    missing = [f for f in case.facts if f not in text]
    assert not missing, f"{name}/{mode} lost {missing}"
    assert report.optimized_tokens <= report.original_tokens
    assert report.optimized_tokens == measure(case.fmt, body)  # the report describes what is forwarded
    json.loads(json.dumps(body))  # still serialisable JSON


@pytest.mark.parametrize("name", sorted(CASES))
def test_balanced_saves_tokens_and_aggressive_saves_more(name: str) -> None:
    case = CASES[name]
    _, safe = _run(case, "safe")
    _, balanced = _run(case, "balanced")
    _, aggressive = _run(case, "aggressive")
    assert balanced.compression_rate > 0.25, (name, balanced.compression_rate)
    assert aggressive.optimized_tokens <= balanced.optimized_tokens <= safe.optimized_tokens
    assert balanced.applied_strategies and balanced.removed


def test_coding_session_structure_is_intact() -> None:
    case = coding_session()
    body, report = _run(case)
    _tool_pairs_valid(body)
    original = case.body
    assert len(body["messages"]) == len(original["messages"])
    assert body["messages"][0] == original["messages"][0]  # system prompt untouched
    assert body["messages"][-1] == original["messages"][-1]  # the latest user turn untouched
    assert body["tools"] == original["tools"]  # tool definitions untouched
    for new, old in zip(body["messages"], original["messages"], strict=True):
        assert new.get("tool_calls") == old.get("tool_calls")  # arguments byte-identical
    assert "cross_turn_dedup" in report.applied_strategies  # the file read twice
    assert report.compression_rate > 0.5


@pytest.mark.parametrize("name", sorted(CASES))
def test_deterministic(name: str) -> None:
    first, _ = _run(CASES[name])
    second, _ = _run(CASES[name])
    assert json.dumps(first) == json.dumps(second)


def test_off_changes_nothing() -> None:
    for case in CASES.values():
        body, report = _run(case, "off")
        assert body == case.body and report.saved_tokens == 0 and not report.removed


def test_cache_control_blocks_and_recent_prose_are_never_touched() -> None:
    case = coding_session()
    body = copy.deepcopy(case.body)
    pinned = body["messages"][7]
    assert pinned["role"] == "tool"
    pinned["content"] = [{"type": "text", "text": pinned["content"], "cache_control": {"type": "ephemeral"}}]
    before = copy.deepcopy(pinned)
    optimize("chat", body, Options(mode="aggressive"))
    assert body["messages"][7] == before
    # The prose of the last N turns stays whole; older prose may be compacted.
    long_prose = " ".join(["The deployment went fine and nothing unusual happened at all today."] * 30)
    convo = {
        "model": "gpt-4o-mini",
        "messages": [
            {"role": "user", "content": long_prose},
            {"role": "assistant", "content": long_prose},
            {"role": "user", "content": long_prose},
            {"role": "assistant", "content": long_prose},
            {"role": "user", "content": "And now?"},
        ],
    }
    optimize("chat", convo, Options(mode="aggressive", protect_recent_turns=2))
    assert convo["messages"][3]["content"] == long_prose  # within the last 2 turns
    assert convo["messages"][4]["content"] == "And now?"


def test_detect_format() -> None:
    assert detect_format({"system": "x", "messages": []}) == "messages"
    assert detect_format({"input": "x"}) == "responses"
    assert detect_format({"messages": []}) == "chat"


# ---- property-based: random conversations ---------------------------------------------------------------

_FACTS = st.sampled_from(
    [
        "ORD-10293",
        "$4,120.75",
        "2026-02-28",
        "a1b2c3d4e5f6",
        "https://x.example.com/a/b",
        "v1.22.3",
        "ENOSPC",
        "user_9xQ2mZ",
        "45%",
        "/var/log/app.log",
    ]
)
_WORDS = st.sampled_from(
    [
        "the",
        "service",
        "request",
        "retry",
        "failed",
        "because",
        "of",
        "timeout",
        "ok",
        "INFO",
        "GET",
        "/healthz",
        "200",
        "worker",
        "batch",
        "processed",
        "again",
    ]
)


@st.composite
def _line(draw: st.DrawFn) -> str:
    words = draw(st.lists(_WORDS, min_size=3, max_size=12))
    if draw(st.booleans()):
        words.insert(draw(st.integers(0, len(words))), draw(_FACTS))
    return " ".join(words)


@st.composite
def _conversation(draw: st.DrawFn) -> dict[str, Any]:
    messages: list[dict[str, Any]] = [{"role": "system", "content": "sys"}]
    for i in range(draw(st.integers(1, 6))):
        messages.append(
            {"role": "user", "content": ". ".join(draw(st.lists(_line(), min_size=1, max_size=20)))}
        )
        if draw(st.booleans()):
            cid = f"call_{i}"
            messages.append(
                {
                    "role": "assistant",
                    "content": None,
                    "tool_calls": [
                        {"id": cid, "type": "function", "function": {"name": "t", "arguments": "{}"}}
                    ],
                }
            )
            lines = draw(st.lists(_line(), min_size=1, max_size=80))
            if draw(st.booleans()):
                lines = lines * draw(st.integers(2, 5))  # repeated output
            messages.append({"role": "tool", "tool_call_id": cid, "content": "\n".join(lines)})
        messages.append(
            {"role": "assistant", "content": ". ".join(draw(st.lists(_line(), min_size=1, max_size=10)))}
        )
    messages.append({"role": "user", "content": "what failed?"})
    return {"model": "gpt-4o-mini", "messages": messages}


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(convo=_conversation(), mode=st.sampled_from(["safe", "balanced", "aggressive"]))
def test_random_conversations_keep_the_invariants(convo: dict[str, Any], mode: str) -> None:
    from worker.optimize.facts import find_facts

    original = copy.deepcopy(convo)
    facts = {f for m in original["messages"] for f in find_facts(m.get("content") or "")}
    body = copy.deepcopy(convo)
    report = optimize("chat", body, Options(mode=mode))  # type: ignore[arg-type]
    text = _strings(body)
    lost = [f for f in facts if f not in text]
    if "log-template" in report.applied_strategies:
        # Log folding may summarise incidental values (timestamps, numbers, hex ids) of folded lines.
        from worker.optimize.kinds.logs import summarisable

        lost = [f for f in lost if not summarisable(f)]
    assert not lost
    assert report.optimized_tokens <= report.original_tokens
    # Both counts exact: the output is counted again from the parts of the input it kept (`_count_parts`).
    assert report.original_tokens == measure("chat", original)
    assert report.optimized_tokens == measure("chat", body)
    _tool_pairs_valid(body)
    again = copy.deepcopy(convo)
    optimize("chat", again, Options(mode=mode))  # type: ignore[arg-type]
    assert again == body
    assert body["messages"][-1] == original["messages"][-1]


_FILLER = (
    "Thanks for bearing with me while I went through all of the files one more time this afternoon. "
    "It has been a long week and I appreciate your patience with the back and forth on this one. "
)
_TASK = _FILLER * 3 + "Please fix ORD-77812 in the billing service. " + _FILLER * 3
_PLAN = _FILLER * 3 + "I will patch src/billing.py next; the limit must stay below 750. " + _FILLER * 3
_EARLIER = _FILLER * 3 + "The service was deployed on 2026-11-30. " + _FILLER * 3


def _same_conversation() -> dict[str, dict[str, Any]]:
    """A task, the model's prose with two parallel tool calls, and their results, in each format."""
    calls = [
        {"id": f"c{i}", "type": "function", "function": {"name": "bash", "arguments": "{}"}} for i in (1, 2)
    ]
    return {
        "chat": {
            "model": "gpt-4o-mini",
            "messages": [
                {"role": "user", "content": "Hello."},
                {"role": "assistant", "content": _EARLIER},
                {"role": "user", "content": _TASK},
                {"role": "assistant", "content": _PLAN, "tool_calls": calls},
                {"role": "tool", "tool_call_id": "c1", "content": "ok"},
                {"role": "tool", "tool_call_id": "c2", "content": "ok"},
            ],
        },
        "messages": {
            "model": "claude-sonnet-4-6",
            "max_tokens": 100,
            "messages": [
                {"role": "user", "content": "Hello."},
                {"role": "assistant", "content": _EARLIER},
                {"role": "user", "content": _TASK},
                {
                    "role": "assistant",
                    "content": [
                        {"type": "text", "text": _PLAN},
                        *({"type": "tool_use", "id": f"c{i}", "name": "bash", "input": {}} for i in (1, 2)),
                    ],
                },
                {
                    "role": "user",
                    "content": [
                        {"type": "tool_result", "tool_use_id": f"c{i}", "content": "ok"} for i in (1, 2)
                    ],
                },
            ],
        },
        "responses": {
            "model": "gpt-4o-mini",
            "input": [
                {"role": "user", "content": "Hello."},
                {
                    "type": "message",
                    "role": "assistant",
                    "content": [{"type": "output_text", "text": _EARLIER}],
                },
                {"role": "user", "content": _TASK},
                {"type": "message", "role": "assistant", "content": [{"type": "output_text", "text": _PLAN}]},
                *(
                    {"type": "function_call", "call_id": f"c{i}", "name": "bash", "arguments": "{}"}
                    for i in (1, 2)
                ),
                *({"type": "function_call_output", "call_id": f"c{i}", "output": "ok"} for i in (1, 2)),
            ],
        },
    }


def test_the_recent_turns_are_the_same_in_every_format() -> None:
    """`protect_recent_turns` counts a model step (its prose and all its tool calls) as one turn and the
    results of those calls as the next, whatever the format: the model's latest prose stays whole."""
    for fmt, body in _same_conversation().items():
        optimize(fmt, body, Options(mode="aggressive"))  # type: ignore[arg-type]
        text = _strings(body)
        assert _PLAN in text and _TASK in text, fmt
        assert _EARLIER not in text and "2026-11-30" in text, fmt  # older prose compacted, its facts kept


def test_a_dedup_marker_names_where_the_earlier_copy_is_in_the_request() -> None:
    """The marker points at the earlier copy's place in the request the model reads, not at internal block
    numbers (system messages and parallel tool results made those unresolvable)."""
    a = "\n".join(f"config line {i}: value_{i} = enabled" for i in range(15))
    b = "\n".join(f"other file line {i}: flag_{i} = off" for i in range(15))

    def call(cid: str, path: str) -> dict[str, Any]:
        return {
            "id": cid,
            "type": "function",
            "function": {"name": "read", "arguments": json.dumps({"p": path})},
        }

    body: dict[str, Any] = {
        "model": "gpt-4o",
        "messages": [
            {"role": "system", "content": "sys"},
            {"role": "user", "content": "read both"},
            {"role": "assistant", "content": None, "tool_calls": [call("c1", "a.cfg"), call("c2", "b.cfg")]},
            {"role": "tool", "tool_call_id": "c1", "content": a},
            {"role": "tool", "tool_call_id": "c2", "content": b},
            {"role": "user", "content": "read b again"},
            {"role": "assistant", "content": None, "tool_calls": [call("c3", "b.cfg")]},
            {"role": "tool", "tool_call_id": "c3", "content": b},
            {"role": "user", "content": "diff?"},
        ],
    }
    optimize("chat", body, Options(mode="safe"))
    assert (
        body["messages"][7]["content"]
        == "[trex: identical to the tool_result content at messages[4].content; omitted]"
    )
    assert body["messages"][4]["content"] == b


def test_an_assistant_prefill_ending_the_conversation_is_never_touched() -> None:
    """A conversation that ends with the model's own turn asks it to continue that exact text: compacting it
    (with no recent turns protected) would change what the model is continuing."""
    filler = (
        "I looked at the overall situation and there is a lot of general background to go through here. "
        "Honestly most of it is routine and I am only mentioning it to be thorough about everything. "
    ) * 12
    prefill = filler + "The refund for order ORD-20417 of $1,250.00 is"
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 100,
        "messages": [
            {"role": "user", "content": filler + "Summarise the refund."},
            {"role": "assistant", "content": filler},
            {"role": "user", "content": "Finish the sentence."},
            {"role": "assistant", "content": prefill},
        ],
    }
    report = optimize("messages", body, Options(mode="aggressive", protect_recent_turns=0))
    assert body["messages"][-1]["content"] == prefill
    assert report.optimized_tokens < report.original_tokens  # the older turns were compacted


# What decides where the pre-tokenizers cut: letters (of every case and kind), marks, digits, blanks, line
# breaks, quotes, apostrophes and contractions, JSON punctuation and escapes.
_TRICKY = st.sampled_from(
    [
        *"aZ0 .,:;'\"\\{}[]/\n\r\t!?$%#`-_",
        "é",
        "ß",
        "中",
        "\u0301",
        "\u00a0",
        "ǅ",
        "ʰ",
        "٣",
        "🙂",
        "'s",
        "'LL",
        "  ",
    ]
)


def _tricky_text(most: int) -> st.SearchStrategy[str]:
    return st.lists(_TRICKY, max_size=most).map("".join)


_KEYS = st.sampled_from(["role", "content", "Type", "x", "_id", "1st", "é", '"q', " k", "'s"])
_JSON: st.SearchStrategy[Any] = st.recursive(
    _tricky_text(30) | st.integers() | st.floats(allow_nan=False) | st.booleans() | st.none(),
    lambda inner: (
        st.lists(inner, max_size=5)
        | st.dictionaries(st.builds(str.__add__, _KEYS, _tricky_text(3)), inner, max_size=5)
    ),
    max_leaves=40,
)


@settings(max_examples=400, deadline=None)
@given(
    messages=st.lists(_JSON, max_size=6),
    tools=st.none() | _JSON,
    encoding=st.sampled_from(["o200k_base", "cl100k_base"]),
    leave_out=st.lists(st.booleans(), max_size=12),
)
def test_the_request_counted_in_parts_is_counted_exactly(
    messages: Any, tools: Any, encoding: str, leave_out: list[bool]
) -> None:
    """The parts the pipeline counts one by one make up the billed text, and their counts add up to its; so
    do the counts of any of them in order and of those parts joined (what is not remembered is counted so)."""
    body = {"model": "m", "messages": messages} | ({} if tools is None else {"tools": tools})
    parts, _ = _billed_parts("chat", body)
    text = "".join(parts)
    assert text == msgspec.json.encode({k: body[k] for k in ("messages", "tools") if k in body}).decode()
    assert text == _billed("chat", body)[0]  # what `measure` and the optimizer off count, in one encode
    total, counts = _count_parts(parts, encoding)
    assert total == tokens.count(text, encoding) == tokens.count_joined(parts, encoding)
    some = [part for n, part in enumerate(parts) if not (leave_out[n] if n < len(leave_out) else False)]
    assert tokens.count("".join(some), encoding) == sum(counts[part] for part in some)


@pytest.mark.parametrize("name", sorted(CASES))
def test_counts_remembered_from_an_earlier_request_are_the_counts(name: str) -> None:
    """A request whose long parts were counted before (the client resends its conversation every turn) is
    counted from the remembered counts, and exactly as a first sight of it is: same report, same body."""
    case = CASES[name]
    text, estimated = _billed(case.fmt, case.body)  # type: ignore[arg-type]
    tokens.forget_counts()
    first = copy.deepcopy(case.body)
    cold = optimize(case.fmt, first, Options(mode="balanced"))  # type: ignore[arg-type]
    assert cold.original_tokens == tokens.count(text) + estimated
    long_parts = [p for p in _billed_parts(case.fmt, first)[0] if len(p) >= tokens.REMEMBERED_MIN_CHARS]  # type: ignore[arg-type]
    # What it forwarded was counted after the compaction, the long parts remembered.
    assert [tokens.remembered(p) for p in long_parts] == [tokens.count(p) for p in long_parts]
    again = copy.deepcopy(case.body)
    warm = optimize(case.fmt, again, Options(mode="balanced"))  # type: ignore[arg-type]
    assert (warm.original_tokens, warm.optimized_tokens) == (cold.original_tokens, cold.optimized_tokens)
    assert again == first
    assert measure(case.fmt, case.body) == cold.original_tokens  # type: ignore[arg-type]
    assert measure(case.fmt, first) == cold.optimized_tokens  # type: ignore[arg-type]
    # `measure` (what a session's next turn counts the client's messages with) remembers what it counts.
    sent = [p for p in _billed_parts(case.fmt, case.body)[0] if len(p) >= tokens.REMEMBERED_MIN_CHARS]  # type: ignore[arg-type]
    assert [tokens.remembered(p) for p in sent] == [tokens.count(p) for p in sent]


@pytest.mark.parametrize("name", sorted(CASES))
def test_mode_off_counts_and_changes_nothing(name: str) -> None:
    """With the optimizer off the body is left as it is and the report is the count alone: the same number
    before and after, nothing removed, no strategy, the default technique, no session."""
    case = CASES[name]
    body = copy.deepcopy(case.body)
    report = optimize(case.fmt, body, Options(mode="off"))  # type: ignore[arg-type]
    assert body == case.body
    assert report.mode == "off"
    assert report.original_tokens == report.optimized_tokens == measure(case.fmt, case.body) > 0  # type: ignore[arg-type]
    assert report.removed == [] and report.applied_strategies == [] and report.technique == "auto"
    assert report.replayed_items == 0 and report.reoptimized is False and report.time_ms >= 0


def test_a_request_with_an_image_is_counted_alike_in_parts_and_in_one_encode() -> None:
    """Image and file payloads are taken out before counting, by both ways of building the billed text."""
    image = {"type": "image_url", "image_url": {"url": "data:image/png;base64," + "iVBORw0KGgo" * 500}}
    body = {
        "model": "m",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": "What is on it?"}, image]},
            {"role": "assistant", "content": "A cat."},
            {"role": "user", "content": "And its colour?"},
        ],
    }
    parts, estimated = _billed_parts("chat", body)
    text, estimated_once = _billed("chat", body)
    assert "".join(parts) == text and estimated == estimated_once > 0
    assert "iVBORw0KGgo" not in text
    report = optimize("chat", copy.deepcopy(body), Options())
    assert report.original_tokens == measure("chat", body) == tokens.count(text) + estimated
