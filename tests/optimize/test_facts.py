"""The fact scanner: the factored alternation finds exactly what the plain one does."""

from __future__ import annotations

import re

from hypothesis import given, settings
from hypothesis import strategies as st

from tests.optimize.corpus import all_cases
from tests.optimize.test_pipeline import _strings
from worker.optimize import facts

_PLAIN = re.compile("|".join(f"(?:{p})" for p in facts._FACT_PATTERNS))


def _same(text: str) -> None:
    assert [m.group(0) for m in facts._FACT_RE.finditer(text)] == [m.group(0) for m in _PLAIN.finditer(text)]


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
            ]
        )
        | st.text(max_size=6),
        max_size=30,
    )
)
def test_factored_scanner_matches_the_plain_alternation_on_random_text(parts: list[str]) -> None:
    _same("".join(parts))
