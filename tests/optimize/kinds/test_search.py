"""Search output: dedupe, BM25 ranking against the query, per-file folding with facts in markers."""

from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.optimize.kinds._data import GREP_ANSWER, GREP_FILES, GREP_QUERY, grep_output, missing, reduction
from worker import tokens
from worker.optimize import facts
from worker.optimize.base import Context
from worker.optimize.kinds import compress_tool_output, detect, search

BALANCED = Context(mode="balanced", query=GREP_QUERY)


def test_detected_as_search() -> None:
    assert detect(grep_output()) == "search"
    assert detect("src/a.py\nsrc/b/c.py\n./docs/index.md\n") == "search"  # find-style
    assert (
        detect("src/app/main.py\n12:def main():\n40:    main()\n\nsrc/app/views.py\n3:import x\n") == "search"
    )


def test_compiler_diagnostics_are_not_search_results() -> None:
    mypy = (
        'worker/app.py:12: error: Incompatible return value type (got "int", expected "str")\n'
        "worker/app.py:40: error: Missing return statement  [return]\n"
        "worker/cli.py:7: note: See https://mypy.rtfd.io for more"
    )
    assert detect(mypy) == "log"


def test_balanced_meets_goal_keeps_facts_and_the_answer() -> None:
    text = grep_output()
    assert len(text.split("\n")) == 300
    result = search.compress(text, BALANCED)
    assert result is not None and result.strategy == "search-rank"
    assert missing(text, result.text) == []
    assert reduction(text, result.text) >= 0.50
    assert any(line.startswith(GREP_ANSWER) for line in result.text.split("\n"))


def test_every_file_keeps_its_best_match_and_a_per_file_marker() -> None:
    result = search.compress(grep_output(), BALANCED)
    assert result is not None
    lines = result.text.split("\n")
    for path in GREP_FILES:
        assert any(line.startswith(f"{path}:") for line in lines), path
    markers = [line for line in lines if line.startswith("[trex:")]
    assert len(markers) == len(GREP_FILES)
    assert any(m.startswith("[trex: 19 more matches in src/config/settings.py (lines ") for m in markers)


def test_kept_lines_are_verbatim_input_lines() -> None:
    text = grep_output()
    source = set(text.split("\n"))
    result = search.compress(text, BALANCED)
    assert result is not None
    for line in result.text.split("\n"):
        assert line.startswith("[trex:") or line in source


def test_ranking_follows_the_query() -> None:
    text = "\n".join(
        [f"src/util.py:{i}:    value = compute(x)" for i in range(1, 40)]
        + ["src/auth/tokens.py:88:def refreshAccessToken(session):"]
    )
    result = search.compress(text, Context(mode="aggressive", query="where do we refresh the access token?"))
    assert result is not None
    assert "src/auth/tokens.py:88:def refreshAccessToken(session):" in result.text.split("\n")


def test_identical_lines_are_deduplicated() -> None:
    text = grep_output()
    doubled = text + "\n" + text  # two overlapping searches concatenated
    result = search.compress(doubled, BALANCED)
    assert result is not None
    assert "dropped 300 duplicate lines" in result.removed
    assert missing(doubled, result.text) == []


def test_aggressive_is_not_larger_than_balanced() -> None:
    text = grep_output()
    balanced = search.compress(text, BALANCED)
    aggressive = search.compress(text, Context(mode="aggressive", query=GREP_QUERY))
    assert balanced is not None and aggressive is not None
    assert tokens.count(aggressive.text) < tokens.count(balanced.text)
    assert missing(text, aggressive.text) == []


def test_rg_heading_mode() -> None:
    body = "\n".join(f"{10 + i}:    retry_count = {i % 5}" for i in range(40))
    text = f"src/payments/retry.py\n{body}\n\nsrc/jobs/worker.py\n7:from retry import policy\n"
    result = search.compress(text, BALANCED)
    assert result is not None
    lines = result.text.split("\n")
    assert lines[0] == "src/payments/retry.py"
    assert "src/jobs/worker.py" in lines and "7:from retry import policy" in lines
    assert missing(text, result.text) == []


def _opencode(grep: str) -> str:
    """The same matches as OpenCode's grep tool prints them: a count, then per file `path:` and its lines."""
    out = [f"Found {len(grep.splitlines())} matches"]
    current = ""
    for line in grep.splitlines():
        path, number, content = line.split(":", 2)
        if path != current:
            out += ([""] if current else []) + [f"/repo/{path}:"]
            current = path
        out.append(f"  Line {number}: {content}")
    return "\n".join(out)


def test_opencode_grep_output_is_ranked_and_folded_per_file() -> None:
    text = _opencode(grep_output())
    assert detect(text) == "search"
    result = search.compress(text, BALANCED)
    assert result is not None and result.strategy == "search-rank"
    lines = result.text.split("\n")
    assert lines[0] == "Found 300 matches"
    for path in GREP_FILES:  # every file keeps its heading, its best match and one marker
        assert f"/repo/{path}:" in lines, path
    assert any(m.startswith("[trex: 19 more matches in /repo/src/config/settings.py (lines ") for m in lines)
    answer = GREP_ANSWER.split(":", 2)
    assert f"  Line {answer[1]}: {answer[2]}  # payment webhook retry limit" in lines
    source = set(text.split("\n"))
    assert all(line.startswith("[trex:") or line in source for line in lines)
    assert missing(text, result.text) == []
    assert reduction(text, result.text) >= 0.50


def test_safe_mode_folds_only_consecutive_repeats() -> None:
    text = grep_output()
    assert search.compress(text, Context(mode="safe")) is None
    line = text.split("\n")[0]
    repeated = "\n".join([line] * 5 + text.split("\n")[1:])
    result = search.compress(repeated, Context(mode="safe"))
    assert result is not None
    assert result.text.split("\n")[:2] == [line, "[trex: previous line repeated 4 more times]"]


def test_bm25_and_tokenizer() -> None:
    assert {"getuserbyid", "user", "id"} <= set(search.tokenize("getUserById"))
    assert {"max", "retries"} <= set(search.tokenize("MAX_RETRIES"))
    docs = [search.tokenize(t) for t in ("retry the request", "unrelated line", "retry retry later")]
    scores = search.BM25(docs).scores(search.tokenize("retry"))
    assert scores[1] == 0.0 and scores[0] > 0 and scores[2] > scores[0]


def test_deterministic_and_tiny() -> None:
    text = grep_output()
    first = search.compress(text, BALANCED)
    second = search.compress(text, BALANCED)
    assert first is not None and second is not None and first.text == second.text
    assert search.compress("src/a.py:1:x", BALANCED) is None


def test_dispatch_through_compress_tool_output() -> None:
    result = compress_tool_output(grep_output(), BALANCED)
    assert result is not None and result.strategy == "search-rank"


def test_markers_list_whole_words_not_their_fragments() -> None:
    """A folded match's `payments-queue-00012` was listed as `00012`."""
    text = "\n".join(
        f"src/jobs/worker_{i % 3}.py:{10 + i}:    queue = connect('payments-queue-{i:05d}')"
        for i in range(60)
    )
    result = search.compress(text, Context(mode="balanced", query="which queue does the worker use?"))
    assert result is not None
    listed = [
        fact
        for line in result.text.split("\n")
        if line.startswith("[trex:")
        for fact in line.partition("facts kept: ")[2].rstrip("]").split(", ")
    ]
    assert "payments-queue-00012" in listed or "payments-queue-00012" in result.text
    assert not any(fact.isdigit() for fact in listed)


# Around the `path:line: ` seam where search cuts a grep line for its fact scan: what a fact can hold next to
# a colon or a blank (times, IPv6 addresses, inline code, amounts, units, Windows paths, signs).
_AROUND_THE_SEAM = [
    *["src/a.py", "a.py", ":", ": ", ":\t", " ", "  ", "12", "3", "2026", "::", "1: ", "9:\t", "12:", ":1"],
    *[
        "`",
        "`x: 1`",
        "$",
        "USD",
        " PM",
        "pm",
        "ab",
        "fe80",
        "0x1f",
        "Jan",
        "-",
        "+",
        "/",
        ".",
        "\\",
        "C:\\x y",
    ],
    *["%", "10:30", "a.b.c", "v1.2.3", "ORD-", "cus_", "e@x.io", "http://h/p", " days", "ms", "ECONN", "#12"],
    *[
        "NOT_FOUND",
        "x",
        "Foo",
        ",",
        "(",
        ")",
        "T",
        "Z",
        "€",
        "1,200",
        "EUR",
        "a.m.",
        "\u00a0",
        "\u00b2",
        "\n",
    ],
]


def _body_facts_by_definition(
    text: str, lines: list[str], groups: list[search._Group]
) -> tuple[dict[int, list[str]], dict[str, str]]:
    """`search._body_facts` from one scan of the whole text, each fact filed by where it starts."""
    starts = [0]
    for line in lines:
        starts.append(starts[-1] + len(line) + 1)
    body_start = {m.index: starts[m.index] + len(m.raw) - len(m.body) for g in groups for m in g.matches}
    found: dict[int, list[str]] = {}
    words: dict[str, str] = {}
    for position, fact in facts.fact_spans(text):
        index = max(k for k, start in enumerate(starts) if start <= position)
        if position >= body_start.get(index, len(text) + 1):
            found.setdefault(index, []).append(fact)
            words.setdefault(fact, facts.whole_token(text, position, fact))
        else:
            found.setdefault(-1, []).append(fact)
    return found, words


@settings(max_examples=1000, deadline=None)
@given(st.lists(st.sampled_from(_AROUND_THE_SEAM), max_size=40))
def test_grep_lines_cut_after_their_location_hold_the_whole_scans_facts(parts: list[str]) -> None:
    text = "".join(parts)
    lines = text.split("\n")
    parsed = search._parse(lines)
    found = search._body_facts(text, lines, parsed.bodies)
    assert found == _body_facts_by_definition(text, lines, parsed.groups), text


def _select_by_definition(
    groups: list[search._Group], scores: dict[int, float], top_n: int, cap: int
) -> set[int]:
    """Each file's best match (files ranked by it, up to `cap`) and the `top_n` best, ties in line order."""

    def rank(m: search._Match) -> tuple[float, int]:
        return (-scores[m.index], m.index)

    bests = sorted((min(g.matches, key=rank) for g in groups if g.path and g.matches), key=rank)
    ranked = sorted((m for g in groups if g.path for m in g.matches), key=rank)
    return {m.index for m in bests[:cap]} | {m.index for m in ranked[:top_n]}


def test_selection_keeps_each_files_best_and_the_top_matches_with_ties_in_line_order() -> None:
    import random

    rng = random.Random(5)
    for _ in range(2000):
        indices = list(range(rng.randint(0, 60)))
        rng.shuffle(indices)  # groups list files in order of first appearance, not line order
        groups: list[search._Group] = []
        pos = 0
        while pos < len(indices):
            path = rng.choice(["", "a.py", "b.py", "c.py", "d.py"])  # a path may come back (rg headings)
            taken = indices[pos : pos + (rng.randint(1, 8) if path else 1)]  # a non-match line is alone
            pos += len(taken)
            groups.append(
                search._Group(path, matches=[search._Match(i, path, None, "x", "x") for i in taken])
            )
        if rng.random() < 0.2:
            groups.append(search._Group("e.py"))  # a heading without matches
        scores = {
            m.index: rng.choice([0.0, 0.5, 1.0, rng.random()]) for g in groups if g.path for m in g.matches
        }
        top_n, cap = rng.randint(0, 10), rng.randint(0, 5)
        expected = _select_by_definition(groups, scores, top_n, cap)
        assert search._select(groups, scores, search._Settings(top_n=top_n, file_cap=cap)) == expected
