"""Tool output crafted against the optimizer's patterns: each input here made one pattern backtrack
exponentially or quadratically (one 500-byte request held the worker's event loop for seconds to hours, since
a regex holds the GIL even on a thread). They must now be handled like any other text. The timeout bounds
each test far above what the fixed patterns need (milliseconds) and far below what the old ones took."""

from __future__ import annotations

import copy
from typing import Any

import pytest

from worker.optimize.directives import is_directive
from worker.optimize.facts import find_facts, is_constraint
from worker.optimize.kinds import detect
from worker.optimize.pipeline import Options, optimize

pytestmark = pytest.mark.timeout(20)


def _tool_result(output: str) -> dict[str, Any]:
    return {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "run it"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "sh", "arguments": "{}"}}
                ],
            },
            {"role": "tool", "tool_call_id": "c1", "content": output},
            {"role": "user", "content": "and now?"},
        ],
    }


@pytest.mark.parametrize(
    "output",
    [
        "<!---->" * 60 + "<x>",  # leading HTML comments: doubled the time per comment (60: centuries)
        "<!-- a -->" * 40 + "<p>not a page</p>",
        "a(" * 200_000,  # a call shape with no closing parenthesis: quadratic per line (about 30 s)
        "[" * 5_000,  # nested too deep to decode: not JSON, not a failure (it was a 500)
    ],
    ids=["comments", "spaced-comments", "open-calls", "deep-json"],
)
def test_adversarial_tool_output_is_optimized_like_any_other(output: str) -> None:
    body = _tool_result(output)
    report = optimize("chat", copy.deepcopy(body), Options())
    assert report.optimized_tokens <= report.original_tokens
    assert detect(output) in {"html", "code", "prose", "log", "search", "table", "json", "diff"}


def test_a_long_word_in_old_prose_is_scanned_once() -> None:
    """One unbroken word: the fact scan retried it at each of its letters (an 80 KB word took 46 s)."""
    assert find_facts("abcdefgh" * 20_000) == find_facts("abcdefgh" * 20_000 + " ") == []
    assert find_facts("Ab" * 50_000 + "1") == []
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "abcdefgh" * 10_000},
            *[{"role": r, "content": c} for r, c in zip(["assistant", "user"] * 3, "abcdef", strict=True)],
        ],
    }
    report = optimize("chat", body, Options())
    assert report.optimized_tokens <= report.original_tokens


def _log(extra: str) -> str:
    lines = [f"2026-01-0{i % 9 + 1} 12:00:{i % 60:02d} INFO request served id={i}" for i in range(60)]
    return "\n".join([*lines[:30], extra, *lines[30:]])


@pytest.mark.parametrize(
    ("output", "question"),
    [
        # An id-like word of the latest request was looked for at each position of a long run (about 1 h).
        (_log("2026-01-01 12:00:00 ERROR job failed"), "why did it fail? " + "a_" * 100_000),
        # A test id (`path::name`) was tried at each position of a long word of colons (about 30 s).
        (_log("tests/test_a.py::test_x PASSED " + "a:" * 60_000), "why did it fail?"),
        # Ids are told from numbers by their place in the line: a long leading word and long hex runs.
        (_log("w" + "\t" * 50_000 + "1 " + "a1" * 60_000), "why did it fail?"),
        ("\n".join(f"2026-01-01 12:00:{i:02d} INFO {'a1' * 20_000}{i} pid={i}" for i in range(30)), "why?"),
    ],
    ids=["query-ids", "test-slot", "leading-word", "hex-runs"],
)
def test_adversarial_logs_tables_and_questions(output: str, question: str) -> None:
    body = _tool_result(output)
    body["messages"][-1]["content"] = question
    report = optimize("chat", body, Options())
    assert report.optimized_tokens <= report.original_tokens


def test_a_long_typed_turn_is_scanned_in_linear_time() -> None:
    """The directive patterns read only a sentence's first words; the constraint words each take one look."""
    text = "also, " * 40_000 + "then " * 40_000 + "x"
    assert not is_directive(text)
    assert not is_constraint("not " * 100_000 + "x") and not is_constraint("instead " * 100_000)
    body = {
        "model": "gpt-4o",
        "messages": [
            {"role": "user", "content": "Also, " * 40_000 + "please do it."},
            {"role": "assistant", "content": "ok " * 300},
            {"role": "user", "content": "and now?"},
        ],
    }
    report = optimize("chat", body, Options(mode="aggressive", protect_recent_turns=0))
    assert report.optimized_tokens <= report.original_tokens


def test_locations_after_paths_are_scanned_in_linear_time() -> None:
    """A path's `:line:col` is taken along by the path pattern (two at most), and the diagnostics test reads
    each line once."""
    assert find_facts("a/b.py" + ":1" * 100_000)[0] == "a/b.py"
    line = "a/b.go" + ":7" * 50_000 + " x"
    assert detect("\n".join([line] * 4)) in {"diagnostics", "search", "log", "prose", "table", "code"}
    assert detect("x" + "y:" * 100_000) in {"diagnostics", "search", "log", "prose", "table", "code"}
