"""The contract every content compressor follows.

A compressor is a pure, deterministic function `(text, ctx) -> Compressed | None`: no I/O, no randomness,
no dependence on dict/set iteration order of unordered inputs, the same bytes for the same input. It returns
None when the content is not its kind, or when it cannot make the text smaller. A result is never larger
than its input (the pipeline checks tokens again), and every fact (`facts.find_facts`) of the input is
either still in the output verbatim or listed in a `facts.marker(...)` that replaced the dropped part —
except the incidental values of folded routine log lines, which `kinds.logs` summarises (its docstring
states the rule).
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Literal

Mode = Literal["off", "safe", "balanced", "aggressive"]
MODES: tuple[Mode, ...] = ("off", "safe", "balanced", "aggressive")


@dataclass(frozen=True, slots=True)
class Context:
    """What a compressor may know besides the text itself."""

    mode: Mode = "balanced"
    query: str = ""
    """The latest user request (for relevance ranking)."""
    profile: str | None = None
    """A coding-agent profile (`claude`, `opencode`, `codex`, `cursor`) or None."""


@dataclass(frozen=True, slots=True)
class Compressed:
    """A compressor's output: the new text, the strategy name for the report, and what was removed."""

    text: str
    strategy: str
    removed: list[str] = field(default_factory=list)
    """Human-readable notes of what was dropped or folded (for the report's removal list)."""
