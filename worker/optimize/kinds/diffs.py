"""Unified diffs (`git diff`, `git show`, `diff -u`).

Every changed line (`+`, `-`, `\\ No newline at end of file`), every hunk header, every `diff --git`, `index`,
mode and rename line is kept byte for byte, as is anything outside hunks (a `git show` commit header, say).
Only unchanged context lines are folded: balanced keeps 1 context line next to each change, aggressive keeps
none. A folded run becomes one line `[trex: N unchanged lines; facts kept: …]` (no diff prefix, so it cannot
be mistaken for a line of the file); hunk headers keep their original counts, so the line numbers they
state stay true.

The `--- a/P` / `+++ b/P` pair of a file is dropped when its `diff --git a/P b/P` header names exactly the
same two paths (the pair says nothing more); pairs that differ (`/dev/null` for an added or deleted file,
a rename) stay. One marker at the top says so, and only when at least `_MIN_IMPLIED_PAIRS` pairs go,
so that the saving outweighs the marker.

Safe mode changes nothing (there is nothing lossless to remove from a diff: trailing blanks on `+`/`-`
lines are part of the change).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from worker.optimize.base import Compressed, Context, Mode
from worker.optimize.facts import distinct_facts, may_cross_lines
from worker.optimize.kinds._common import FactLedger, facts_by_line, finish, worth_folding
from worker.optimize.kinds._detect import HUNK_RE

_CONTEXT_KEPT: Mapping[Mode, int] = MappingProxyType({"balanced": 1, "aggressive": 0})
_MIN_IMPLIED_PAIRS = 2
IMPLIED_HEADERS_MARKER = (
    "[trex: `--- a/…` and `+++ b/…` lines omitted where `diff --git` names the same paths]"
)


@dataclass(slots=True)
class _Run:
    """A run of consecutive context lines inside a hunk: lines [start, end) of the diff."""

    start: int
    end: int
    before_change: bool
    """A changed line follows the run (inside the same hunk)."""
    after_change: bool
    """A changed line precedes the run (inside the same hunk)."""


def compress(text: str, ctx: Context) -> Compressed | None:
    """Fold unchanged context lines of a unified diff; None in safe mode or when nothing folds."""
    if ctx.mode not in _CONTEXT_KEPT:
        return None
    lines = text.split("\n")
    runs = _context_runs(lines)
    implied = _implied_file_headers(lines)
    if not runs and not implied:
        return None
    keep_n = _CONTEXT_KEPT[ctx.mode]
    folds: list[tuple[int, int]] = []  # [start, end) of each context stretch to fold
    for run in runs:
        lo = run.start + (keep_n if run.after_change else 0)
        hi = run.end - (keep_n if run.before_change else 0)
        if hi - lo >= 1:
            folds.append((lo, hi))
    if not folds and not implied:
        return None
    folded_lines = {i for lo, hi in folds for i in range(lo, hi)}
    ledger = FactLedger("\n".join(line for i, line in enumerate(lines) if i not in folded_lines))
    found = _facts_of_lines(text, lines, sorted(folded_lines.union(implied)))
    markers: dict[int, str] = {}
    counted: dict[str, int] = {}
    for lo, hi in folds:
        dropped = lines[lo:hi]
        noun = "line" if hi - lo == 1 else "lines"
        dropped_facts = [f for i in range(lo, hi) if i in found for f in distinct_facts(found[i])]
        marker_text, listed = ledger.marker_of(f"{hi - lo} unchanged {noun}", dropped_facts)
        if worth_folding(marker_text, dropped, counted):
            ledger.commit(listed)
            markers[lo] = marker_text
    if not markers and not implied:
        return None
    fold_end = dict(folds)
    out: list[str] = [IMPLIED_HEADERS_MARKER] if implied else []
    skip_until = -1
    total = 0
    for i, line in enumerate(lines):
        if i < skip_until or i in implied:
            continue
        if i in markers:
            out.append(markers[i])
            end = fold_end[i]
            total += end - i
            skip_until = end
            continue
        out.append(line)
    notes = [f"folded {total} unchanged context lines"] if markers else []
    if implied:
        notes.append(f"omitted {len(implied) // 2} file header pairs implied by `diff --git`")
    # The facts of every line that may leave the output: the final check needs no others, since every other
    # line is in the output as it is, and so is each fact on it (or, if another fact holds it as a whole
    # token, that fact).
    every_fact = distinct_facts(f for line_facts in found.values() for f in line_facts)
    return finish(text, "\n".join(out), "diff-context", notes, original_facts=every_fact)


def _facts_of_lines(text: str, lines: list[str], wanted: list[int]) -> dict[int, list[str]]:
    """`facts_by_line(text)`, or only its entries for the lines `wanted` (in order): what a fold or a dropped
    file header takes out of the output. Those lines are scanned alone, joined, when no fact can run across
    a line break of `text` or of the joined lines (`facts.may_cross_lines`): each line then holds the facts
    a scan of the whole text finds on it. Most of a diff stays (changed lines, hunk headers), and is not
    scanned."""
    if len(wanted) < len(lines) and not may_cross_lines(text):
        part = "\n".join([lines[i] for i in wanted])
        if not may_cross_lines(part):
            return {wanted[k]: found for k, found in facts_by_line(part).items()}
    return facts_by_line(text)


def _implied_file_headers(lines: list[str]) -> set[int]:
    """Indexes of the `--- a/P` / `+++ b/P` pairs restating their `diff --git a/P b/P` header (if enough)."""
    implied: set[int] = set()
    header = ""
    # Every other line leaves the state below as it is: only these are visited.
    for i in [i for i, line in enumerate(lines) if line.startswith(("diff --git ", "@@", "--- "))]:
        line = lines[i]
        if line.startswith("diff --git "):
            header = line
        elif line.startswith("@@"):
            header = ""  # the pair comes before the first hunk of its file, or not at all
        elif (
            header
            and line.startswith("--- ")
            and lines[i + 1 : i + 2]
            and lines[i + 1].startswith("+++ ")
            and header == f"diff --git {line[4:]} {lines[i + 1][4:]}"
        ):
            implied.update((i, i + 1))
            header = ""
    return implied if len(implied) // 2 >= _MIN_IMPLIED_PAIRS else set()


def _context_runs(lines: list[str]) -> list[_Run]:
    """The context-line runs of every hunk, walking hunks by the line counts their headers declare."""
    runs: list[_Run] = []
    i = 0
    n = len(lines)
    while i < n:
        header = HUNK_RE.match(lines[i])
        if not header:
            i += 1
            continue
        old_left = int(header.group(2)) if header.group(2) is not None else 1
        new_left = int(header.group(4)) if header.group(4) is not None else 1
        i += 1
        # The runs of context lines, closed at each changed line and at the hunk's end: a run is "after" a
        # change when one came earlier in the hunk, "before" one when a changed line closes it.
        run_start = -1
        run_after = changed = False
        while i < n and (old_left > 0 or new_left > 0):
            line = lines[i]
            tag = line[:1]
            if tag == " " or line == "":
                # A blank context line whose leading space was stripped still counts as context.
                old_left -= 1
                new_left -= 1
                if run_start < 0:
                    run_start, run_after = i, changed
                i += 1
                continue
            if tag == "-":
                old_left -= 1
            elif tag == "+":
                new_left -= 1
            elif tag != "\\":
                break  # malformed hunk: stop at the first line that cannot belong to it
            if run_start >= 0:
                runs.append(_Run(run_start, i, before_change=True, after_change=run_after))
                run_start = -1
            changed = True
            i += 1
        while i < n and lines[i].startswith("\\"):
            if run_start >= 0:
                runs.append(_Run(run_start, i, before_change=True, after_change=run_after))
                run_start = -1
            i += 1
        if run_start >= 0:
            runs.append(_Run(run_start, i, before_change=False, after_change=run_after))
    return runs
