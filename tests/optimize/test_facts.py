"""The fact scanner: the factored alternation finds exactly what the plain one does."""

from __future__ import annotations

import random
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.optimize.corpus import all_cases
from tests.optimize.test_pipeline import _strings
from worker.optimize import facts
from worker.optimize.kinds._common import fact_list

_PLAIN = re.compile("|".join(f"(?:{p})" for p in facts._FACT_PATTERNS))


def _same(text: str) -> None:
    plain = [m.group(0) for m in _PLAIN.finditer(text)]
    assert [m.group(0) for m in facts._FACT_RE.finditer(text)] == plain
    # The whole-text scanner steps over words and punctuation runs, and must still find the same matches.
    assert [m.group(1) for m in facts._SCAN_RE.finditer(text) if m.group(1) is not None] == plain


def test_factored_scanner_matches_the_plain_alternation_on_the_corpus() -> None:
    texts = [_strings(case.body) for case in all_cases()]
    assert sum(len(facts.find_facts(t)) for t in texts) > 100  # the corpus is full of facts
    for text in texts:
        _same(text)


@settings(max_examples=200, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            [
                "ORD-1042",
                "v1.2.3",
                "a1b2c3d4e5",
                "2026-03-14",
                "$1,250.00",
                " ",
                "\n",
                "E501",
                "ECONNREFUSED",
                "cus_9fK2LmQ",
                "/srv/app/x.py",
                "x.py",
                "MAX_RETRIES",
                "3 days",
                "12%",
                "10:30 AM",
                "word",
                "-",
                "_",
                "March 14",
                "Marching",
                "Mar",
                "Error",
                "end.",
                "Done. ",
                '"',
                ",",
                "{",
                "}",
                "[",
                "]",
                ":",
                ".",
                "http://x.io/a",
                "john@x.com",
                "ERROR",
                "INFO",
                "GET ",
                "HTTP",
                "DEADBEEF",
                "=",
                "(",
                "<",
                ">",
                "status=",
                "c:\\",
                "C:\\x",
                *[";", "!", "?", "*", "|", "&", "%", "^", "\\", "'", ")", "x(", "\\\\srv\\share"],
            ]
        )
        | st.text(max_size=6),
        max_size=30,
    )
)
def test_factored_scanner_matches_the_plain_alternation_on_random_text(parts: list[str]) -> None:
    _same("".join(parts))


# What can follow a number and make it part of another fact (an amount, a quantity, a range, a percentage,
# a version, a date, an id, a path) or end it: the plain-number shortcut must find what the alternation does.
_AROUND_NUMBERS = [
    *["854", "5117", "12", "5", "0", ".", ",", ",\n  ", "\n", " ", "  ", "\t", "\u00a0", "\u2009"],
    *[" USD", "EUR", "USD", " dollars", "ms", " ms", " days", "business ", "%", " %", "-", " - ", "\u2013"],
    *["]", "}", '"', "{", "[", "e", "x", "a", "A", ":", "/", "@", "_", "#", "$", "+", "1,200", "2026-03-14"],
    *["10:30", " PM", "v1", "0x1f", "3f9a2c1"],
]


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_AROUND_NUMBERS), min_size=1, max_size=12))
def test_plain_number_shortcut_finds_what_the_plain_alternation_finds(parts: list[str]) -> None:
    _same("".join(parts))


def _start_class(char: str) -> str:
    if re.match(r"\d", char):
        return "D"
    if "a" <= char <= "z":
        return "L"
    if "A" <= char <= "Z":
        return "U"
    return "S" if char.isspace() else "O"


def test_each_pattern_starts_only_with_the_classes_it_is_dispatched_under() -> None:
    # `_FACT_RE` tries a pattern only at positions of the classes `_FIRST_CHARS` gives it, and none at a
    # blank (class S); a pattern seen starting with another class would be missed there. Every match of every pattern, alone, on the corpus
    # and on samples of each shape, must start with a character of its classes.
    texts = [_strings(case.body) for case in all_cases()]
    texts.append(
        "see https://x.io/a and bob.k+1@mail.example.org or 123e4567-e89b-12d3-a456-426614174000 at 3f9a2c1d "
        "0x7ffe `make test` 2026-03-14T09:12:00Z 03/14/2026 March 14, 2026 14 March 2026 10:30 AM $1,250.00 "
        "1,200 EUR 12% 5-7 business days v1.2.3 v2 ./x ~/y /srv/app/x.py src/a/b.py C:\\Users\\me x.py "
        "ORD-1042 cus_9fK2LmQ #1234 E501 ECONNREFUSED NOT_FOUND 5404 _x.py _a/b.py ._x/y ٣٤٥ days\n 10:30\n\tPM "
        "$ 5 \u00a0$\u00a05 million 5\u2003days -$1,234.50 (-1253.75) EUR 1.234,56 JPY 5000 -1,200 EUR -12% "
        "1.2.3-rc.1+build.5 fe80::1ff:fe23:abcd:890a 2001:db8:0:0:0:0:2:1 PT15M P1Y2M3DT4H 5pm 11 a.m. txn_0042"
    )
    assert len(facts._FIRST_CHARS) == len(facts._FACT_PATTERNS)
    for pattern, classes in zip(facts._FACT_PATTERNS, facts._FIRST_CHARS, strict=True):
        compiled = re.compile(pattern)
        for text in texts:
            for match in compiled.finditer(text):
                assert _start_class(match.group(0)[0]) in classes, (pattern, match.group(0))


_CONSTRAINT_WORDS = st.lists(
    st.sampled_from(
        [
            "must",
            "MUST not",
            "Never",
            "only",
            "do  not",
            "don't",
            "by EOD",
            "by end of",
            "Deadline",
            "limits",
            "At Least",
            "unless",
            "feel free",
            "don't hesitate",
            "how frustrating this must be",
            "must have been annoying",
            "mustard",
            "onlyness",
            "word",
            " ",
            "\n",
            ".",
            "'",
        ]
    )
    | st.text(max_size=5),
    max_size=20,
)


@settings(max_examples=300, deadline=None)
@given(_CONSTRAINT_WORDS)
def test_constraint_check_on_lowercased_ascii_agrees_with_the_ignore_case_pattern(parts: list[str]) -> None:
    from worker.optimize import prose_units

    text = "".join(parts)
    assert facts.is_constraint(text) == (facts._CONSTRAINT_RE.search(text) is not None)
    courtesy_free = prose_units._BOILERPLATE_RE.sub(" ", text)
    assert prose_units.is_hard_constraint(text) == (facts._CONSTRAINT_RE.search(courtesy_free) is not None)


def test_constraint_check_handles_non_ascii_text_with_the_ignore_case_pattern() -> None:
    assert facts.is_constraint("Zahlung: MUST arrive, café") and not facts.is_constraint("café ok")
    # U+017F (long s) folds to "s" under IGNORECASE only: the ASCII shortcut must not be taken for it.
    long_s = "unle\u017fs"
    assert facts.is_constraint(long_s) == (facts._CONSTRAINT_RE.search(long_s) is not None)


@settings(max_examples=200, deadline=None)
@given(_CONSTRAINT_WORDS)
def test_fact_count_counts_every_fact_match(parts: list[str]) -> None:
    text = "".join(parts) + " ORD-1042 at 10:30 AM, $12.50"
    expected = sum(1 for m in facts._SCAN_RE.finditer(text) if m.group(1))
    assert facts.fact_count(text) == expected >= 3


_ADVERSARIAL = {
    "compact JSON int array": ",".join(str(i % 3) for i in range(50_000)).join("[]"),
    "one line of 1,1,1": ",".join(["1"] * 50_000),
    "a-a-a": "a-" * 50_000,
    "a.a.a": "a." * 50_000,
    "A-A-A": "A-" * 50_000,
    "1a-1a-": "1a-" * 33_000,
    "a.1a.1": "a.1" * 33_000,
}


@pytest.mark.timeout(20)
@pytest.mark.parametrize("name", list(_ADVERSARIAL))
def test_the_scan_is_linear_on_adversarial_input(name: str) -> None:
    # A guard against catastrophic backtracking (each ~100 KB input once took 8 s to minutes), not a
    # speed goal: a linear scan takes ~0.2 s, so only a scan that backtracks reaches the timeout, however
    # loaded the machine.
    text = _ADVERSARIAL[name]
    facts.find_facts(text)
    fact_list(text)


@pytest.mark.parametrize(
    ("text", "fact"),
    [
        ("a refund of -$1,234.50 was issued", "-$1,234.50"),
        ('{"amount":-1253.75}', "-1253.75"),
        ("[12,-1253.75]", "-1253.75"),
        ("a credit of +$20.00", "+$20.00"),
        ("-1,200 EUR were written off", "-1,200 EUR"),
        ("margin fell by -12%", "-12%"),
        ("total EUR 1.234,56 due", "EUR 1.234,56"),
        ("fee: JPY 5000.", "JPY 5000"),
        ("ship 1.2.3-rc.1+build.5 today", "1.2.3-rc.1+build.5"),
        ("listens on fe80::1ff:fe23:abcd:890a now", "fe80::1ff:fe23:abcd:890a"),
        ("route 2001:db8:85a3:0:0:8a2e:370:7334 down", "2001:db8:85a3:0:0:8a2e:370:7334"),
        ("prefix 2001:db8:: is ours", "2001:db8::"),
        ("keep the window at PT15M.", "PT15M"),
        ("a lease of P1Y2M3DT4H", "P1Y2M3DT4H"),
        ("the standup moves to 5pm.", "5pm"),
        ("call at 11 a.m. sharp", "11 a.m."),
        ('{"txn":"txn_0042"}', "txn_0042"),
    ],
)
def test_the_catalog_finds_signed_amounts_codes_first_build_metadata_ipv6_durations_and_short_times(
    text: str, fact: str
) -> None:
    assert fact in facts.find_facts(text)


@pytest.mark.parametrize(
    ("text", "not_a_fact"),
    [
        ("the years 2026-2027", "-2027"),  # a range, not a negative number
        ("pages 10-200", "-200"),
        ("id ORD-1042", "-1042"),
        ("x[1::2]", "1::2"),  # a slice, not an address
        ("std::vector<int>", "std::vector"),
        ("PT alone", "P"),
    ],
)
def test_signs_and_colons_that_join_values_are_not_part_of_a_fact(text: str, not_a_fact: str) -> None:
    assert not_a_fact not in facts.find_facts(text)


@pytest.mark.parametrize(
    ("text", "fact", "word"),
    [
        ("payments-api-7d9f8c6b5-16790        1/1     Running", "16790", "payments-api-7d9f8c6b5-16790"),
        ('{"key":"pdf-v2","name":"Pdf V2"}', "v2", "pdf-v2"),
        ("listens on localhost:8080.", "8080", "localhost:8080"),
        (
            "internal/ledger/post.go:70:26: copylocks",
            "internal/ledger/post.go",
            "internal/ledger/post.go:70:26",
        ),
        ("deployed build-20417.", "20417", "build-20417"),
        ("order ORD-1042 shipped on 2026-03-14.", "2026-03-14", "2026-03-14"),  # a fact that is a word
        ("v2.", "v2", "v2"),  # the full stop ends the sentence
        ("x-" + "a" * 100 + "-12345", "12345", "12345"),  # a blob, not a word: the fact alone
    ],
)
def test_a_marker_lists_the_whole_word_a_fact_is_part_of(text: str, fact: str, word: str) -> None:
    """`facts kept: 16790` (a pod-name hash) or `v2` (a flag key) named nothing the reader could find."""
    assert (fact, word) in facts.facts_in_words(text)
    assert [f for f, _ in facts.facts_in_words(text)] == facts.find_facts(text)


@pytest.mark.timeout(20)
def test_whole_words_are_found_in_linear_time() -> None:
    facts.facts_in_words("a-111-" * 40_000)


# What stands on either side of a line break inside a fact, and what looks like it but is not.
_AROUND_LINE_BREAKS = [
    *["\n", "\n", "\n", "\r\n", " ", ", ", ",", "12", "5", "1,200", "3.5", "0x1f", "deadbeef1", "2026-03-14"],
    *["ms", " ms", "days", "business days", "TB", "Traceback", "%", "-", "- ", "\u2013", "-6", "USD", "EUR"],
    *["dollars", "AM", "pm", "a.m.", "PM", "UTC", "PST", "k", "million", "more", "bn", "$", "€", "+", "M"],
    *["INFO", "ERROR", "GET /x", "ORD-1042", "10:30", "\t", "word", "Mar", "x.py", "/srv/a.py:12", "P3D"],
]


# Pieces that end a line, and pieces that start the next one.
_LINE_ENDS = [
    *["12", "5", "1,200", "1,200,", "3.5", "$5", "$", "€", "USD", "EUR", "5 -", "5 \u2013", "10:30"],
    *["10:30 PM", "10 AM", "12 ", "word", "ERROR", "M", "INFO 200", "ORD-1042", "-", "Mar 5", "0x1f"],
    *["v1.2", "5 ms", "P3D"],
]
_LINE_STARTS = [
    *["ms", "days", "business days", "TB", "TiB", "Traceback", "%", "-6", "- 6", "\u20136", "USD", "EUR 5"],
    *["M", "dollars", "AM", "pm", "a.m.", "PM", "UTC", "PST", "k", "million", "more", "bn", "5", "-5", "+5"],
    *["GHz", "12 ms", "INFO x", "2026-03-14", "GET /x", "x.py", "requests", "hrs", " 5", "\t", "Mar 5"],
    "USD\n5",
]


def _scan_lines_alone(text: str) -> None:
    """Unless `may_cross_lines`, the lines of `text` scanned one by one give the whole text's fact spans."""
    if facts.may_cross_lines(text):
        return
    by_line: list[tuple[int, str]] = []
    offset = 0
    for line in text.split("\n"):
        by_line += [(offset + start, fact) for start, fact in facts.fact_spans(line)]
        offset += len(line) + 1
    assert by_line == facts.fact_spans(text), text


def test_lines_scanned_alone_hold_the_whole_scans_facts_when_none_can_cross_a_line() -> None:
    for end in _LINE_ENDS:
        for start in _LINE_STARTS:
            for between in ("\n", "\n\n", "\r\n", " \n"):
                _scan_lines_alone(f"{end}{between}{start}")
                _scan_lines_alone(f"x {end}{between}{start} y")


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(_AROUND_LINE_BREAKS), min_size=1, max_size=14))
def test_lines_scanned_alone_hold_the_whole_scans_facts_on_random_text(parts: list[str]) -> None:
    _scan_lines_alone("".join(parts))


def test_the_across_lines_pattern_with_its_first_look_behind_finds_what_the_plain_one_finds() -> None:
    plain = re.compile(facts._ACROSS_LINES_RE.pattern.replace(r"(?<=[\d,Mm$€£¥₹A-Z\-\u2013]\n)", "", 1))
    assert plain.pattern != facts._ACROSS_LINES_RE.pattern
    rng = random.Random(21)
    alphabet = [*"\n\n\n1,mMaA$€Zz-\u2013+% .", "ms", "UTC", "GMT", "PST", "EUR", "days", "a.m.", "b"]
    for _ in range(30_000):
        text = "".join(rng.choices(alphabet, k=rng.randint(1, 8)))
        assert (facts._ACROSS_LINES_RE.search(text) is None) == (plain.search(text) is None), text


def _across_by_stretches(text: str) -> bool:
    starts = [i + 1 for i, c in enumerate(text) if c == "\n"]
    return facts.may_cross_line_breaks(facts.digit_skeleton(text), starts)


def test_the_across_lines_pattern_reads_no_further_than_its_stretches_reach() -> None:
    """`may_cross_line_breaks` tries the pattern on the character before each break and the
    `_ACROSS_LINES_REACH` after it: the pattern's longest match, its break included, must fit."""
    longest = re._parser.parse(facts._ACROSS_LINES_RE.pattern).getwidth()[1]  # type: ignore[attr-defined]
    assert longest - 1 <= facts._ACROSS_LINES_REACH
    for unit in ("calendar attempts", "business requests", "working replicas"):
        text = f"took 12\n{unit}"
        assert facts.may_cross_lines(text) and _across_by_stretches(text), text


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from([*_AROUND_LINE_BREAKS, *_LINE_STARTS, "calendar ", "12\n"]), max_size=14))
def test_the_across_lines_question_asked_per_stretch_gets_the_whole_texts_answer(parts: list[str]) -> None:
    text = "".join(parts)
    assert _across_by_stretches(text) == facts.may_cross_lines(text), text


def test_a_fact_across_a_line_break_is_noticed() -> None:
    for text in ["took 12\nms", "1,200\nEUR", "5 -\n6 days", "10:30 PM\nUTC", "$\n5", "USD\n-5", "12\n%"]:
        assert facts.may_cross_lines(text), text
    log = (
        "2026-11-20T10:00:00.191Z INFO GET /healthz 200 4ms\n2026-11-20T10:00:01.191Z INFO done 12\nTraceback"
    )
    assert not facts.may_cross_lines(log)


_SKELETON_PIECES = [
    *["DDDD-DD-DDTDD:DD:DD.DDDZ ", "INFO ", '  "id": DDDD,', '  "total": DDD.DD,', "ORD-DDDD "],
    *["0xDD ", "DxD", "txn_DDDDab ", "$D,DDD.DD ", "DD USD", "DD%", "vD.D.D ", "/srv/a.py:DD "],
    *["deadbeefD ", "DD:DD PM ", "D", "took DD", "ms later", "USD D", "D days ", "#DDD ", "EDDD "],
    *["DD/DD/DDDD ", "Mar D ", "PTDM ", "- ", ","],
]


def test_facts_found_line_by_line_per_skeleton_are_the_whole_scans() -> None:
    import random

    rng = random.Random(11)
    by_line = 0
    for _ in range(300):
        skeletons = [
            "".join(rng.choice(_SKELETON_PIECES) for _ in range(rng.randint(0, 9))) for _ in range(4)
        ]
        lines = [rng.choice(skeletons) for _ in range(rng.randint(2, 30))]
        text = "\n".join("".join(rng.choice("0123456789") if c == "D" else c for c in line) for line in lines)
        spans = facts._spans_by_line(text)
        scanned = facts._scanned_spans(text)
        assert facts.fact_spans(text) == scanned
        assert facts.find_facts(text) == facts.distinct_facts(fact for _, fact in scanned)
        if spans is not None:
            by_line += 1
            assert spans == scanned, text
    assert 100 < by_line < 300  # both ways are taken


def _distinct_by_runs(found: list[str]) -> list[str]:
    """`distinct_facts` by its definition: drop a fact that is one alphanumeric run of a longer fact."""
    runs_of_longer = {
        run
        for fact in found
        for run in re.findall(r"[A-Za-z0-9]+", fact)
        if re.findall(r"[A-Za-z0-9]+", fact) != [fact]
    }
    return [fact for fact in dict.fromkeys(found) if fact not in runs_of_longer]


@settings(max_examples=600, deadline=None)
@given(
    st.lists(
        st.sampled_from(["5000", "854", "854.12", "ORD-854", "a.py", "x1", "12", "2026-03-14", "2026", "03"])
        | st.sampled_from(["é1", "1", "v2", "pdf-v2", "ab", "AB_12", "12x", "中", "x.y.z", "y"])
        | st.text(alphabet="ab1-._é", min_size=1, max_size=5),
        max_size=40,
    )
)
def test_distinct_facts_drops_exactly_the_runs_of_longer_facts(found: list[str]) -> None:
    """Few facts are compared pair by pair as substrings first, many by their runs: both by the definition."""
    assert facts.distinct_facts(found) == _distinct_by_runs(found)
