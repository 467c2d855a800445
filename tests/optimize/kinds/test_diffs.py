"""Unified diffs: every changed line and hunk header kept, unchanged context folded into counted markers,
`---`/`+++` pairs that restate their `diff --git` header omitted."""

from __future__ import annotations

import random

import pytest

from tests.optimize.kinds._data import git_diff, missing, reduction
from worker import tokens
from worker.optimize.base import Context
from worker.optimize.kinds import compress_tool_output, detect, diffs
from worker.optimize.kinds._common import facts_by_line

BALANCED = Context(mode="balanced")
AGGRESSIVE = Context(mode="aggressive")


def _changed(text: str) -> list[str]:
    """Header, hunk-header and +/- lines, in order, without `---`/`+++` pairs implied by `diff --git`."""
    lines = text.split("\n")
    implied = {
        j
        for i, line in enumerate(lines[:-1])
        if line.startswith("--- a/") and lines[i + 1].startswith("+++ b/")
        for j in (i, i + 1)
        if f"diff --git {line[4:]} {lines[i + 1][4:]}" in lines[max(0, i - 3) : i]
    }
    return [
        line
        for i, line in enumerate(lines)
        if i not in implied and (line[:1] in ("+", "-", "@", "\\") or line.startswith("diff "))
    ]


def test_detected_as_diff() -> None:
    assert detect(git_diff()) == "diff"
    assert detect("--- a/x\n+++ b/x\n@@ -1,2 +1,2 @@\n-a\n+b\n c") == "diff"


@pytest.mark.parametrize("seed", [1, 2, 3, 4])
@pytest.mark.parametrize("mode", ["balanced", "aggressive"])
def test_every_header_and_changed_line_is_kept_in_order(seed: int, mode: str) -> None:
    text = git_diff(seed)
    result = diffs.compress(text, Context(mode=mode))  # type: ignore[arg-type]
    assert result is not None
    assert _changed(result.text) == _changed(text)
    assert missing(text, result.text) == []


def test_reduction_on_a_four_file_diff() -> None:
    # Only context lines may go, and a marker costs about as much as a short code line, so balanced mode
    # (1 context line kept per side) lands around 20% on -U3 diffs; aggressive (none kept) passes 30%.
    text = git_diff()
    balanced = diffs.compress(text, BALANCED)
    aggressive = diffs.compress(text, AGGRESSIVE)
    assert balanced is not None and aggressive is not None
    assert reduction(text, balanced.text) >= 0.15
    assert reduction(text, aggressive.text) >= 0.30
    assert tokens.count(aggressive.text) < tokens.count(balanced.text)


def test_balanced_keeps_one_context_line_next_to_each_change() -> None:
    text = "\n".join(
        [
            "diff --git a/app.py b/app.py",
            "index 1a2b3c4..5d6e7f8 100644",
            "--- a/app.py",
            "+++ b/app.py",
            "@@ -10,9 +10,9 @@ def handler(event):",
            "     first = event['first']",
            "     second = event['second']",
            "     third = event['third']",
            "-    total = first + second",
            "+    total = first + second + third",
            "     log.info('computed total for event', extra={'event': event})",
            "     metrics.gauge('handler.total', total, tags=['service:billing'])",
            "     return {'status': 'ok', 'total': total}",
            "     # end of handler",
        ]
    )
    result = diffs.compress(text, BALANCED)
    assert result is not None
    assert result.text.split("\n")[4:] == [
        "@@ -10,9 +10,9 @@ def handler(event):",
        "[trex: 2 unchanged lines]",
        "     third = event['third']",
        "-    total = first + second",
        "+    total = first + second + third",
        "     log.info('computed total for event', extra={'event': event})",
        "[trex: 3 unchanged lines]",
    ]
    aggressive = diffs.compress(text, AGGRESSIVE)
    assert aggressive is not None
    assert "third = event['third']" not in aggressive.text


def test_facts_in_folded_context_are_listed() -> None:
    text = "\n".join(
        [
            "--- a/config.py",
            "+++ b/config.py",
            "@@ -1,6 +1,6 @@",
            " # Settings for the order sync job; values are read once at start-up and never reloaded.",
            ' API_URL = "https://api.example.com/v2/orders"  # the public endpoint, not the internal one',
            " TIMEOUT_SECONDS = 30  # must stay below the proxy limit of the gateway, see OPS-1234",
            " RETRIES = 3  # retried with exponential backoff and jitter between attempts",
            "-DEBUG = True",
            "+DEBUG = False",
        ]
    )
    result = diffs.compress(text, AGGRESSIVE)
    assert result is not None
    assert result.text.split("\n")[3].startswith("[trex: 4 unchanged lines; facts kept: ")
    assert "https://api.example.com/v2/orders" in result.text and "OPS-1234" in result.text


def test_no_newline_marker_and_commit_header_are_kept() -> None:
    text = "\n".join(
        [
            "commit 3f9a2c1d8e7b6a5f4e3d2c1b0a9f8e7d6c5b4a39",
            "Author: Dana Lopez <dana@example.com>",
            "",
            "    Fix the rounding of refund totals",
            "",
            "diff --git a/refunds.py b/refunds.py",
            "--- a/refunds.py",
            "+++ b/refunds.py",
            "@@ -3,7 +3,7 @@",
            " import decimal",
            " ",
            " ROUNDING = decimal.ROUND_HALF_UP",
            "-PRECISION = 2",
            "+PRECISION = 4",
            " ",
            " def round_total(value):",
            "     return value.quantize(decimal.Decimal(10) ** -PRECISION, rounding=ROUNDING)",
            "\\ No newline at end of file",
        ]
    )
    result = diffs.compress(text, AGGRESSIVE)
    assert result is not None
    out = result.text.split("\n")
    assert out[:9] == text.split("\n")[:9]
    assert out[-1] == "\\ No newline at end of file"


def test_safe_mode_and_trailing_whitespace_are_untouched() -> None:
    text = git_diff()
    assert diffs.compress(text, Context(mode="safe")) is None
    with_blanks = "--- a/x\n+++ b/x\n@@ -1,1 +1,1 @@\n-a\n+a   "
    result = compress_tool_output(with_blanks, Context(mode="safe"))
    assert result is None  # `+a   ` adds trailing blanks: that is the change, not noise


def test_deterministic_and_tiny() -> None:
    text = git_diff()
    first = diffs.compress(text, BALANCED)
    second = diffs.compress(text, BALANCED)
    assert first is not None and second is not None and first.text == second.text
    assert diffs.compress("--- a/x\n+++ b/x\n@@ -1 +1 @@\n-a\n+b", BALANCED) is None


def test_dispatch_through_compress_tool_output() -> None:
    result = compress_tool_output(git_diff(), BALANCED)
    assert result is not None and result.strategy == "diff-context"


def test_file_header_pairs_are_omitted_only_when_implied() -> None:
    text = git_diff()
    result = diffs.compress(text, BALANCED)
    assert result is not None
    out = result.text.split("\n")
    assert out[0] == diffs.IMPLIED_HEADERS_MARKER
    assert not [line for line in out if line.startswith(("--- ", "+++ "))]
    assert sum(1 for line in out if line.startswith("diff --git ")) == 4
    # A new file's `--- /dev/null` says more than its `diff --git` line: that pair stays.
    added = "\n".join(
        [
            "diff --git a/new.py b/new.py",
            "new file mode 100644",
            "index 0000000..1a2b3c4",
            "--- /dev/null",
            "+++ b/new.py",
            "@@ -0,0 +1,2 @@",
            "+x = 1",
            "+y = 2",
        ]
    )
    renamed = "\n".join(
        [
            "diff --git a/old_name.py b/new_name.py",
            "--- a/old_name.py",
            "+++ b/new_name.py",
            "@@ -1 +1 @@",
            "-a = 1",
            "+a = 2",
        ]
    )
    mixed = diffs.compress("\n".join([text, added, renamed]), BALANCED)
    assert mixed is not None
    out = mixed.text.split("\n")
    assert "--- /dev/null" in out and "+++ b/new.py" in out
    # A rename's pair restates the two paths of its header, which stays.
    assert "--- a/old_name.py" not in out and "diff --git a/old_name.py b/new_name.py" in out
    # One implied pair alone is not worth the marker.
    single = text[: text.index("diff --git", 10)].rstrip("\n")
    alone = diffs.compress(single, BALANCED)
    assert alone is not None and diffs.IMPLIED_HEADERS_MARKER not in alone.text
    assert "--- a/app/jobs/orders.py" in alone.text


def test_facts_of_the_lines_that_may_go_are_those_the_whole_scan_finds_on_them() -> None:
    # The compressor scans only the lines a fold or a dropped header pair takes out of the output; on each of
    # them it must find what a scan of the whole diff finds there, also where a fact could run across a line
    # break (`10\nPM`, `$\n5`), in text that holds one or not.
    rng = random.Random(11)
    pieces = ["10", "5", " ", "PM", "UTC", "$", "-", "%", "EUR", "abc", "src/x.py", "0x1f", "2026-01-02",
              ":", "ORD-7", "\n", "\n", "\n", "+", " line"]  # fmt: skip
    for _ in range(3000):
        text = "".join(rng.choice(pieces) for _ in range(rng.randint(1, 40)))
        lines = text.split("\n")
        wanted = sorted(rng.sample(range(len(lines)), rng.randint(0, len(lines))))
        whole = facts_by_line(text)
        got = diffs._facts_of_lines(text, lines, wanted)
        assert {i: got.get(i) for i in wanted} == {i: whole.get(i) for i in wanted}, text
