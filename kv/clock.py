"""Clock abstraction used for every expiry decision."""

from __future__ import annotations

from collections.abc import Callable
from typing import TypeAlias

Clock: TypeAlias = Callable[[], float]
"""A zero-argument callable returning the current time as epoch seconds."""


class ManualClock:
    """A clock that only moves when told to, so tests can expire keys without sleeping."""

    def __init__(self, now: float) -> None:
        """Start the clock at ``now`` epoch seconds."""
        self.now = now

    def __call__(self) -> float:
        """Return the current (manually controlled) time."""
        return self.now

    def advance(self, seconds: float) -> None:
        """Move the clock forward by ``seconds``."""
        self.now += seconds
