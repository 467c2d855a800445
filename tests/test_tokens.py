"""The token bounds the optimizer decides with before it counts: never above or below the real count."""

from __future__ import annotations

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from tests.optimize.corpus import all_cases
from tests.optimize.test_pipeline import _strings
from worker import tokens

_ENCODINGS = ("o200k_base", "cl100k_base")
# Blanks of every kind (tabs, line breaks, no-break and ideographic spaces, the separators Python alone calls
# whitespace), punctuation that glues line breaks and slashes to itself, letters, digits and contractions.
_BLANKS = [" ", "  ", "\t", "\n", "\r\n", "\u00a0", "\u3000", "\u2028", "\x1f", "\x85"]
_WORDS = [
    ".",
    "/",
    ".\n/",
    "-",
    "'s",
    "a",
    "Word",
    "ORD-77812",
    "2026-03-14",
    "1234567",
    "中文",
    "é",
    "\u0301",
]
_PIECES = st.lists(
    st.sampled_from([*_BLANKS, *_WORDS, "$", "[trex: x]", "```"]) | st.text(max_size=5), max_size=30
)


def _check(text: str) -> None:
    for name in _ENCODINGS:
        count = tokens.count(text, name)
        assert tokens.at_least(text) <= count <= tokens.at_most(text), (name, text)


@settings(max_examples=400, deadline=None)
@given(_PIECES)
def test_bounds_hold_on_random_text(parts: list[str]) -> None:
    _check("".join(parts))


@pytest.mark.parametrize(
    "text",
    ["", " ", "\n \n", ".\n/", ".\n/x y", "a\x1fb", "x \u3000 y", "\t\tindented code\n", "résumé 中文 😀"],
)
def test_bounds_hold_on_edge_cases(text: str) -> None:
    _check(text)


def test_bounds_hold_on_the_corpus_line_by_line() -> None:
    for case in all_cases():
        text = _strings(case.body)
        _check(text)
        for line in text.split("\n"):
            _check(line)


def test_words_are_a_useful_lower_bound() -> None:
    assert tokens.at_least("The rollback budget is limited to 30 minutes.") == 8
    assert tokens.at_least(".\n/ x") == 2  # the line break does not part words: `.\n/` may be one token


def test_at_least_counts_the_words_between_spaces_and_tabs_and_adds_up_over_pieces() -> None:
    import random

    rng = random.Random(9)
    alphabet = [" ", "\t", "\n", "\r", "\x0b", "\xa0", "\u2003", "a", "bc", "é", ".", "x\ny", " \n "]
    pieces = ["".join(rng.choice(alphabet) for _ in range(rng.randint(0, 10))) for _ in range(3000)]
    for text in pieces:
        words = text.replace("\t", " ").split(" ")
        assert tokens.at_least(text) == sum(1 for word in words if word and not word.isspace()), repr(text)
    for k in range(0, 3000, 7):
        group = pieces[k : k + 7]
        assert tokens.at_least(" ".join(group)) == sum(tokens.at_least(piece) for piece in group)


def test_at_least_splits_ascii_text_at_spaces_and_tabs_only() -> None:
    """ASCII text whose only blanks are spaces and tabs is counted in C (a byte table); any other ASCII blank (a
    line break, a form feed, a file separator) joins the runs on either side into one word, as in other text."""
    for blank in map(chr, range(128)):
        for text in (f"a{blank}b", f"a {blank} b", f"{blank}a\tb{blank}"):
            words = text.replace("\t", " ").split(" ")
            assert tokens.at_least(text) == sum(1 for word in words if word and not word.isspace()), repr(
                text
            )


def test_long_texts_are_remembered_by_count_and_short_ones_are_not() -> None:
    tokens.forget_counts()
    long_text = "The refund cap for ORD-77812 is 200.00 EUR. " * 40
    short = "The refund cap for ORD-77812 is 200.00 EUR."
    assert tokens.remembered(long_text) is None
    n = tokens.count_remembered(long_text)
    assert n == tokens.count(long_text)
    assert tokens.remembered(long_text) == n
    assert tokens.remembered(long_text, "cl100k_base") is None  # counts are per encoding
    assert tokens.count_remembered(long_text, "cl100k_base") == tokens.count(long_text, "cl100k_base")
    assert tokens.count_remembered(short) == tokens.count(short)
    assert tokens.remembered(short) is None
    tokens.forget_counts()
    assert tokens.remembered(long_text) is None


def test_remembered_counts_are_bounded_and_the_least_recently_used_go_first(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    tokens.forget_counts()
    monkeypatch.setattr(tokens, "_REMEMBERED_MAX", 3)
    texts = [f"text {i}: " + "lorem ipsum dolor " * 80 for i in range(4)]
    for text in texts[:3]:
        tokens.count_remembered(text)
    assert tokens.remembered(texts[0]) is not None  # used again: now the most recent
    tokens.count_remembered(texts[3])
    assert tokens.remembered(texts[1]) is None
    assert [tokens.remembered(t) is not None for t in (texts[0], texts[2], texts[3])] == [True] * 3
    tokens.forget_counts()


def test_count_joined_adds_up_runs_of_short_texts_and_remembered_long_ones() -> None:
    tokens.forget_counts()
    long_text = "word " * 600
    parts = [
        '{"messages":[{"',
        'role":"user","content":"hi"},{"',
        f'role":"user","content":"{long_text}"}}]}}',
    ]
    text = "".join(parts)
    assert tokens.count_joined(parts) == tokens.count(text)
    assert tokens.remembered(parts[2]) == tokens.count(parts[2])
    assert tokens.count_joined(parts) == tokens.count(text)  # and again, from what it remembered
    tokens.forget_counts()


@settings(max_examples=1000, deadline=None)
@given(st.text(alphabet=st.sampled_from([*"ab1 .,:-_\t\n\r\v\f\x1c\x85\xa0é中"]), max_size=40))
@example("a\x1cb")
@example(" \t a b\t")
def test_at_least_counts_the_words_between_spaces_and_tabs_whatever_the_text(text: str) -> None:
    """The ASCII case counted in C and the general one count the same words."""
    words = text.replace("\t", " ").split(" ")
    assert tokens.at_least(text) == sum(1 for word in words if word and not word.isspace()), repr(text)
