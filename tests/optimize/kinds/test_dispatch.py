"""Kind detection and the `compress_tool_output` entry point (normalisation, pass-through, modes)."""

from __future__ import annotations

import json
import random
import re
from itertools import islice

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.optimize.kinds._data import (
    PROSE,
    PYTHON_SOURCE,
    app_log,
    csv_invoices,
    git_diff,
    grep_output,
    html_page,
    java_log,
    kubectl_pods,
    missing,
    orders,
)
from tests.optimize.kinds._equivalence import assert_matches_alike
from worker.optimize.base import Context
from worker.optimize.kinds import KINDS, _detect, compress_tool_output, detect
from worker.optimize.kinds._common import (
    _chunks,
    collapse_blank_lines,
    missing_facts,
    strip_trailing_ws,
)


def test_detects_every_kind() -> None:
    samples = {
        "json": json.dumps(orders(20), indent=2),
        "log": app_log(50),
        "search": grep_output(),
        "diagnostics": "cmd/app/main.go:12:2: unusedresult: result of errors.New call not used\n"
        "cmd/app/main.go:40:9: printf: fmt.Sprintf format %d has arg id of wrong type string",
        "diff": git_diff(),
        "html": html_page(),
        "table": csv_invoices(20),
        "code": PYTHON_SOURCE,
        "prose": PROSE,
    }
    assert set(samples) == set(KINDS)
    for kind, text in samples.items():
        assert detect(text) == kind, kind


@pytest.mark.parametrize(
    ("text", "kind"),
    [
        ("", "prose"),
        ("[1, 2, 3]", "json"),
        ("[2026-03-14 09:12:00] INFO starting\n[2026-03-14 09:12:01] INFO ready", "log"),
        ("level=info msg=started\nlevel=warn msg=slow", "log"),
        ("tests/test_a.py::test_x PASSED\ntests/test_a.py::test_y FAILED", "log"),
        ("export function f(a: number) {\n  return a + 1;\n}\n", "code"),
        ("\n".join(f"{i:>6}\t{line}" for i, line in enumerate(PYTHON_SOURCE.split("\n"), 1)), "code"),
        ("\n".join(f"{i:>6}→{line}" for i, line in enumerate(PYTHON_SOURCE.split("\n"), 1)), "code"),
        ("a\tb\tc\n1\t2\t3\n4\t5\t6", "table"),
        ("Hello there, this is a short note about the plan.", "prose"),
    ],
)
def test_detection_heuristics(text: str, kind: str) -> None:
    assert detect(text) == kind


def test_off_mode_never_changes_anything() -> None:
    off = Context(mode="off")
    for text in (json.dumps(orders(), indent=2), app_log(), "x   \n\x1b[31mred\x1b[0m"):
        assert compress_tool_output(text, off) is None


def test_code_is_passed_through_untouched() -> None:
    """An agent quotes a file's exact lines back in its edits, trailing blanks included."""
    ctx = Context(mode="aggressive")
    assert compress_tool_output(PYTHON_SOURCE, ctx) is None
    padded = "\n".join(line + "   " if line else line for line in PYTHON_SOURCE.split("\n"))
    assert compress_tool_output(padded, ctx) is None
    assert compress_tool_output(padded + "\n\n\n\n", ctx) is None


def test_prose_only_gets_whitespace_normalised() -> None:
    ctx = Context(mode="balanced")
    assert compress_tool_output(PROSE, ctx) is None
    messy = PROSE.replace("\n\n", "\n\n\n\n\n") + "   \n"
    result = compress_tool_output(messy, ctx)
    assert result is not None and result.text == PROSE + "\n"


def test_ansi_escapes_are_stripped_in_safe_mode() -> None:
    coloured = "\x1b[1m\x1b[31mFAILED\x1b[0m tests/test_orders.py::test_refund - AssertionError: 502 != 200\n"
    result = compress_tool_output(coloured * 3, Context(mode="safe"))
    assert result is not None
    assert "\x1b" not in result.text
    plain = "FAILED tests/test_orders.py::test_refund - AssertionError: 502 != 200\n"
    assert missing(plain * 3, result.text) == []


def test_results_are_never_larger() -> None:
    for text in ("{}", "ok", "a\nb", "<p>x</p>", "--- a\n+++ b\n@@ -1 +1 @@\n-a\n+b", "x.py:1:y"):
        for mode in ("safe", "balanced", "aggressive"):
            result = compress_tool_output(text, Context(mode=mode))
            assert result is None or len(result.text) <= len(text)


def test_repeated_lines_of_unclassified_output_are_counted() -> None:
    text = "Downloading package...\n" + "progress: still working\n" * 20 + "done in 12.5 s"
    for mode in ("safe", "balanced"):
        result = compress_tool_output(text, Context(mode=mode))
        assert result is not None and result.strategy == "prose-dedupe"
        assert result.text.split("\n")[1:3] == [
            "progress: still working",
            "[trex: previous line repeated 19 more times]",
        ]


_WHITESPACE_TEXT = st.text(alphabet=" \t\r\n\x0bab{}\u00a0\u2028", max_size=60)


@settings(max_examples=400, deadline=None)
@given(_WHITESPACE_TEXT)
def test_whitespace_clean_up_is_the_regex_definition(text: str) -> None:
    """The fast paths strip and collapse exactly what `[ \\t]+$` (multi-line) and `\\n{3,}` would."""
    lf = text.replace("\r\n", "\n")
    stripped = re.sub(r"[ \t]+$", "", lf, flags=re.MULTILINE)
    assert strip_trailing_ws(text) == stripped
    assert collapse_blank_lines(stripped) == re.sub(r"\n{3,}", "\n\n", stripped)


def _comma_cuts_reference(piece: str, size: int) -> list[str]:
    """An over-long piece cut after the last comma of each `size` characters (or the first one past them)."""
    out: list[str] = []
    while len(piece) > size and "," in piece:
        ends = [i + 1 for i, c in enumerate(piece) if c == ","]
        within = [end for end in ends if end <= size]
        end = within[-1] if within else ends[0]
        out.append(piece[:end])
        piece = piece[end:]
    return [*out, piece]


def _chunks_reference(text: str, size: int) -> list[str]:
    """The chunking rule, line by line: the most whole lines within `size`, over-long lines cut first."""
    out: list[str] = []
    buffer: list[str] = []
    used = 0
    for line in text.split("\n"):
        pieces = re.split(r'(?:(?<=,)|(?<=, ))(?=")', line) if len(line) > size else [line]
        for piece in (cut for whole in pieces for cut in _comma_cuts_reference(whole, size)):
            if used + len(piece) > size and buffer:
                out.append("\n".join(buffer))
                buffer, used = [], 0
            buffer.append(piece)
            used += len(piece) + 1
    if buffer:
        out.append("\n".join(buffer))
    return out


@settings(max_examples=400, deadline=None)
@given(st.text(alphabet='ab\n,"', max_size=200), st.integers(min_value=1, max_value=20))
@example('ab\na,"bbbbbbbbbbbbb', 10)  # an over-long line whose first piece joins the lines before it
@example("a,b,aaaaaaaaaa,bb,b,a", 5)  # an over-long piece without `,"`: cut after commas
def test_chunks_follow_the_line_rule(text: str, size: int) -> None:
    """Chunks found by searching for line ends are the ones the line-by-line rule builds."""
    chunks = list(_chunks(text, size))
    assert chunks == _chunks_reference(text, size)
    # Nothing is lost or added but line breaks between pieces.
    assert "".join(chunks).replace("\n", "") == text.replace("\n", "")


def test_a_long_line_without_json_members_is_cut_after_commas() -> None:
    line = ",".join(["1"] * 20_000)  # 40 KB: one line, no `,"`
    chunks = list(_chunks(line))
    assert len(chunks) == 5 and all(len(chunk) <= 8000 for chunk in chunks)
    assert "".join(chunks) == line


def test_the_diagnostic_pattern_matches_what_its_backtracking_form_matches() -> None:
    plain = re.compile(
        r"^[^\s:]+:\d+(?::\d+)?:?\s*(?:error|warning|note|fatal|[EWFC]\d{2,4}|[A-Z]{1,4}\d{3,4})\b",
        re.IGNORECASE,
    )
    alphabet = [
        *"ab:1234 \t.-_EeWwCcFfxXZ\u00e9",
        "error",
        "Warning",
        "note",
        "E501",
        "W12",
        ":12:",
        "src/a.py",
    ]
    assert_matches_alike(_detect.DIAGNOSTIC_RE, plain, alphabet, seed=4, most=12)


def test_the_location_pattern_matches_what_its_backtracking_form_matches() -> None:
    plain = re.compile(r"^(?!\d)[^\s:,]+:\d+:\d+: ?\S")
    alphabet = [*"ab:12 \t,.-_x\u00e9", ":12:", ":3: ", "src/a.go", "1"]
    assert_matches_alike(_detect.LOCATION_LINE_RE, plain, alphabet, seed=16, most=10)


def test_a_share_of_lines_is_judged_as_counting_them_all_would() -> None:
    rng = random.Random(6)
    for _ in range(5_000):
        lines = ["x" if rng.random() < rng.random() else "" for _ in range(rng.randint(0, 30))]
        tenths, least = rng.randint(1, 10), rng.choice([0, 2])
        hits = sum(1 for line in lines if line)
        assert _detect._share_at_least(lines, bool, tenths, least) == (
            hits >= least and hits * 10 >= len(lines) * tenths
        )


def _is_search_line_by_line(lines: list[str]) -> bool:
    """`_detect.is_search` as its definition reads: every line tested, none grouped by skeleton."""
    body = [line for line in lines if line != "--"]
    if len(body) < 2:
        return False
    if _detect._share_at_least(body, _detect.DIAGNOSTIC_RE.match, 3):
        return False
    if _detect._share_at_least(body, _detect._grep_line, 6):
        return True
    numbered = sum(1 for line in body if _detect.HEADING_LINE_RE.match(line))
    paths = sum(1 for line in body if _detect.PATH_ONLY_RE.match(line))
    if numbered and paths and (numbered + paths) * 10 >= len(body) * 9:
        return True
    opencode = sum(1 for line in body if _detect.OPENCODE_LINE_RE.match(line))
    headings = sum(1 for line in body if line.endswith(":") and _detect.PATH_ONLY_RE.match(line[:-1]))
    if opencode and headings and (opencode + headings) * 10 >= len(body) * 8:
        return True
    return len(body) >= 3 and paths * 10 >= len(body) * 8


def test_search_output_is_told_per_line_skeleton_as_line_by_line() -> None:
    """`is_search` tests each digit skeleton of its lines once, counted as often as it occurs."""
    rng = random.Random(14)
    parts = [
        *["src/a.py:12:", "src/a.py-12-", "a.py:", "src/a.py", "./b/c", "12:", "12-", "  Line 12: ", "x"],
        *["src/a.go:7:3: x", "a.c:5: error ", "E501 ", "W12", "2026-03-14T10:02:00Z INFO ", "0x1f", " ", ":"],
        *["--", "Found 3 matches", "tests/test_a.py::test_x PASSED", "é", "ab", "1", "10", "-", "/", "."],
    ]
    found = 0
    for _ in range(6_000):
        kinds = [
            "".join(rng.choice(parts) for _ in range(rng.randint(1, 3))) for _ in range(rng.randint(1, 4))
        ]
        lines = [rng.choice(kinds) for _ in range(rng.randint(0, 30))]
        lines = ["".join(rng.choice("0123456789") if c.isdigit() else c for c in line) for line in lines]
        assert _detect.is_search(lines) == _is_search_line_by_line(lines), lines
        found += _detect.is_search(lines)
    assert 300 < found < 5_700
    for text in (grep_output(), app_log(), java_log(), git_diff(), kubectl_pods()):
        lines = _detect._sample(text)
        assert _detect.is_search(lines) == _is_search_line_by_line(lines)


def _detect_line_by_line(text: str) -> str:
    """`detect` as its definition reads: the first 400 non-blank lines, each tested, none grouped by skeleton."""
    stripped = text.strip()
    if not stripped:
        return "prose"
    if _detect.is_json(stripped):
        return "json"
    lines = list(islice(filter(str.strip, stripped.split("\n")), 400))
    end = next((k for k, line in enumerate(lines) if line.startswith("<system-reminder>")), len(lines))
    if end > 0 and _detect._share_at_least(lines[:end], _detect.LINE_GUTTER_RE.match, 8):
        return "code"
    if _detect.is_diff(lines, "\n".join(lines)):
        return "diff"
    if _detect._COMPONENT_RE.match(stripped):
        return "code"
    if _detect.is_html(stripped):
        return "html"
    if _detect._share_at_least(lines, _detect.LOCATION_LINE_RE.match, 6, least=2):
        return "diagnostics"
    if _is_search_line_by_line(lines):
        return "search"
    if len(lines) >= 2 and _detect._share_at_least(lines, _detect._log_line, 4):
        return "log"
    if _detect.is_table(lines):
        return "table"
    return "code" if _detect.is_code(lines) else "prose"


def test_detection_by_line_skeleton_is_detection_line_by_line() -> None:
    """`detect` samples a text's lines split off as needed and tests each digit skeleton once."""
    rng = random.Random(15)
    parts = [
        *["src/a.py:12:", "a.py:", "./b/c", "12:", "  Line 12: ", "x ", "     12\t", "  12→", "1234567\t"],
        *["src/a.go:7:3: x", "a.c:5: error ", "2026-03-14T10:02:00Z INFO ", "W0314 10:02:00.5 ", "ok ", "--"],
        *["<system-reminder>", "diff --git a/x b/x", "@@ -1,2 +1,3 @@", "+++ b/x", "def f(x):", "  return"],
        *["a,b,c", "a\tb", "| a | b |", "|---|---|", "NAME   READY", "<div>", "Hi there.", "{", " ", ""],
    ]
    kinds = set()
    for _ in range(1_000):
        pieces = ["".join(rng.choices(parts, k=rng.randint(1, 3))) for _ in range(rng.randint(1, 5))]
        lines = rng.choices(pieces, k=rng.choice([1, 2, 3, 10, 40, 399, 401, 900]))
        text = re.sub(r"\d", lambda _: rng.choice("0123456789"), "\n".join(lines))
        kind = detect(text)
        assert kind == _detect_line_by_line(text), text
        kinds.add(kind)
    assert len(kinds) >= 8, kinds
    samples = (grep_output(), app_log(), java_log(), git_diff(), kubectl_pods(), html_page(), PYTHON_SOURCE)
    for text in samples:
        assert detect(text) == _detect_line_by_line(text)


def test_delimited_fields_of_lines_with_and_without_quotes() -> None:
    assert _detect.split_delimited("a,,b,", ",") == ["a", "", "b", ""]
    assert _detect.split_delimited('a,"b,c",d', ",") == ["a", '"b,c"', "d"]
    rng = random.Random(8)
    for _ in range(5_000):
        line = "".join(rng.choice('ab,;\t" ') for _ in range(rng.randint(0, 12)))
        for delim in ",;\t":
            fields, quoted, current = [], False, ""
            for ch in line:  # the definition: a delimiter outside quotes ends a field
                if ch == delim and not quoted:
                    fields.append(current)
                    current = ""
                else:
                    quoted ^= ch == '"'
                    current += ch
            assert _detect.split_delimited(line, delim) == [*fields, current], (line, delim)


def test_the_path_pattern_matches_what_its_backtracking_form_matches() -> None:
    """Also when lines with a blank are ruled out before the pattern is tried (`_path_lines`)."""
    plain = re.compile(r"^(?:\.{0,2}/)?[\w.@+-]+(?:/[\w.@+-]+)+/?$|^[\w.@+-]+\.[A-Za-z]\w{0,7}$")
    alphabet = [*"ab1/.:-_ @+é\t", "src", ".py", "../", "./", "/", "x.toml", "2026-03-14T10"]
    assert_matches_alike(_detect.PATH_ONLY_RE, plain, alphabet, seed=9, most=10)
    rng = random.Random(10)
    for _ in range(2_000):
        lines = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(0, 9))
        ]
        assert _detect._path_lines(lines) == sum(1 for line in lines if plain.match(line)), lines


def test_the_final_check_finds_missing_facts_as_searching_for_each_would() -> None:
    """`missing_facts` looks facts up among the items a marker lists before searching the output; the facts it
    reports missing are exactly those the output does not hold, in order, whether few or many."""
    rng = random.Random(12)
    words = ["ORD-1042", "1042", "854.12", "54.1", "a.py", "x", "", " ", ", ", "[trex: y; facts kept: ", "]"]
    for _ in range(400):
        output = "".join(rng.choice(words) for _ in range(rng.randint(0, 40)))
        found = [
            rng.choice(words[:6]) + rng.choice(["", "0", ", 7"]) for _ in range(rng.choice([3, 40, 600]))
        ]
        assert missing_facts("", output, found) == [fact for fact in found if fact not in output]
