"""A possessive (backtracking-free) pattern must match exactly what its plain form matches."""

from __future__ import annotations

import random
import re


def assert_matches_alike(
    fast: re.Pattern[str], plain: re.Pattern[str], alphabet: list[str], seed: int, most: int
) -> None:
    """Both patterns `match` the same prefix of 50,000 random strings of up to `most` pieces of `alphabet`."""
    assert plain.pattern != fast.pattern
    rng = random.Random(seed)
    for _ in range(50_000):
        s = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, most)))
        got, want = fast.match(s), plain.match(s)
        assert (got and got.group(0)) == (want and want.group(0)), s
