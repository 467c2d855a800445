"""The token bounds the optimizer decides with before it counts: never above or below the real count."""

from __future__ import annotations

import pytest
from hypothesis import given, settings
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
