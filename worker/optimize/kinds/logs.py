"""Log output (application logs, access logs, compiler diagnostics, test-runner output).

Safe mode folds runs of byte-identical consecutive lines into one line plus a count (lossless).

Balanced and aggressive modes fold by template. The log is split into entries (a line with a timestamp or
level prefix plus its continuation lines); each entry's template is its text with timestamps, UUIDs, hex
ids, IP addresses and numbers replaced by placeholders. Entries sharing a template are folded: the first one
stays verbatim as the example, followed by a marker with the count, the line range and every fact of the
folded entries (`facts.marker`). Never folded, kept verbatim in place: every entry with a warning, error,
fatal/critical, exception or traceback line, together with its whole stack trace (indented lines,
`at …` frames, `File "…", line N` frames, `Caused by:`); in balanced mode also the entry right before each of
them (what happened just before a failure).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType

from worker.optimize.base import Compressed, Context, Mode
from worker.optimize.kinds._common import FactLedger, finish, fold_exact_repeats, worth_folding
from worker.optimize.kinds._detect import DIAGNOSTIC_RE, LOG_PREFIX_RE


@dataclass(frozen=True, slots=True)
class _Settings:
    min_group: int
    """Entries sharing a template are folded only if there are at least this many."""
    context_before: int
    """Entries kept verbatim right before each important entry."""


_SETTINGS: Mapping[Mode, _Settings] = MappingProxyType(
    {
        "balanced": _Settings(min_group=3, context_before=1),
        "aggressive": _Settings(min_group=2, context_before=0),
    }
)

# Level words match in any case (`level=warn`, `[error]`); exception class names are CamelCase.
_IMPORTANT_RE = re.compile(
    r"\b(?:error|fatal|crit|critical|warn|warning|severe|panic|alert|emerg|emergency|exception|traceback|"
    r"fail|failed|failure)\b",
    re.IGNORECASE,
)
_EXCEPTION_NAME_RE = re.compile(r"[a-z0-9](?:Error|Exception|Warning|Fault)\b|^E\s{2,}|^Caused by:|^panic:")
# Stack-trace and multi-line-message continuations for logs without a per-line prefix.
_CONTINUATION_RE = re.compile(
    r"^(?:\s+\S|at \S|Caused by:|\.\.\. \d+ more|File \"|During handling of|The above exception|"
    r"goroutine \d+|\[\d+ frames? omitted\])"
)

# Placeholders that turn an entry into its template; the order matters (a UUID before its hex parts).
_NORMALISERS: tuple[tuple[re.Pattern[str], str], ...] = (
    # Test ids (`tests/test_a.py::test_x PASSED`, `--- PASS: TestX`): one template for all passing tests.
    (re.compile(r"\S+::\S+|(?<=^--- PASS: )\S+|(?<=^ok  \t)\S+"), "<test>"),
    (
        re.compile(r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b"),
        "<uuid>",
    ),
    (
        re.compile(
            r"\d{4}[-/]\d{2}[-/]\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)?"
            r"|\b\d{1,2}/[A-Z][a-z]{2}/\d{4}(?::\d{2}:\d{2}:\d{2})?(?: [+-]\d{4})?"
            r"|\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?"
        ),
        "<ts>",
    ),
    (re.compile(r"\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b"), "<ip>"),
    (re.compile(r"\b0x[0-9a-fA-F]+\b"), "<hex>"),
    (re.compile(r"\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b"), "<hex>"),
    (re.compile(r"\d+(?:\.\d+)?"), "<n>"),
    (re.compile(r"[ \t]+"), " "),  # column padding that varies with the width of a number
)


def compress(text: str, ctx: Context) -> Compressed | None:
    """Fold repeated log lines (safe: exact consecutive repeats; balanced/aggressive: templates)."""
    if ctx.mode == "off":
        return None
    lines = text.split("\n")
    if ctx.mode == "safe":
        deduped, folded = fold_exact_repeats(lines)
        if not folded:
            return None
        return finish(text, "\n".join(deduped), "log-dedupe", [f"{folded} exact repeated lines counted"])
    settings = _SETTINGS[ctx.mode]
    entries = _entries(lines)
    important = [_is_important(entry.lines) for entry in entries]
    pinned = list(important)
    for i, flag in enumerate(important):
        if flag:
            for j in range(max(0, i - settings.context_before), i):
                pinned[j] = True
    groups: dict[str, list[int]] = {}
    for i, entry in enumerate(entries):
        if not pinned[i] and any(line.strip() for line in entry.lines):
            groups.setdefault(_template(entry.lines), []).append(i)
    foldable = [members for members in groups.values() if len(members) >= settings.min_group]
    # Everything not in a foldable group's tail stays verbatim; markers need not repeat facts shown there.
    tails = {i for members in foldable for i in members[1:]}
    ledger = FactLedger("\n".join("\n".join(e.lines) for i, e in enumerate(entries) if i not in tails))
    markers: dict[int, str] = {}  # example entry index -> marker emitted after it
    folded_entries: set[int] = set()
    for members in sorted(foldable, key=lambda m: m[0]):
        rest = members[1:]
        dropped = ["\n".join(entries[i].lines) for i in rest]
        marker_text, listed = ledger.marker(_describe(entries, members), dropped)
        if worth_folding(marker_text, dropped):
            ledger.commit(listed)
            markers[members[0]] = marker_text
            folded_entries.update(rest)
    if not folded_entries:
        return None
    out: list[str] = []
    for i, entry in enumerate(entries):
        if i in folded_entries:
            continue
        out.extend(entry.lines)
        if i in markers:
            out.append(markers[i])
    notes = [f"folded {len(folded_entries)} repeated log entries into {len(markers)} templates"]
    return finish(text, "\n".join(out), "log-template", notes)


def _describe(entries: list[_Entry], members: list[int]) -> str:
    """`179 more lines like the one above (lines 3-500)` for a group whose first member stays."""
    rest = members[1:]
    first, last = entries[rest[0]].start + 1, entries[rest[-1]].start + 1
    single = all(len(entries[i].lines) == 1 for i in members)
    noun = ("line" if single else "entry") if len(rest) == 1 else ("lines" if single else "entries")
    where = f"line {first}" if first == last else f"lines {first}-{last}"
    return f"{len(rest)} more {noun} like the one above ({where})"


@dataclass(slots=True)
class _Entry:
    start: int
    """0-based index of the entry's first line."""
    lines: list[str]


def _entries(lines: list[str]) -> list[_Entry]:
    """Lines grouped into log entries: a header line and its continuation lines (stack frames, wrapped text).

    When most lines carry a timestamp/level prefix, every unprefixed line continues the entry before it;
    otherwise only indented lines and stack-frame shapes do.
    """
    nonblank = [line for line in lines if line.strip()]
    prefixed = sum(1 for line in nonblank if LOG_PREFIX_RE.match(line) or DIAGNOSTIC_RE.match(line))
    structured = bool(nonblank) and prefixed * 2 >= len(nonblank)
    entries: list[_Entry] = []
    for index, line in enumerate(lines):
        if entries and line.strip() and entries[-1].lines[-1].strip():
            if structured:
                continues = not (LOG_PREFIX_RE.match(line) or DIAGNOSTIC_RE.match(line))
            else:
                continues = bool(_CONTINUATION_RE.match(line))
            if continues or _ends_traceback(entries[-1].lines, line):
                entries[-1].lines.append(line)
                continue
        entries.append(_Entry(index, [line]))
    return entries


def _ends_traceback(entry: list[str], line: str) -> bool:
    """The `ValueError: …` line closing a Python traceback belongs to it."""
    return entry[0].startswith("Traceback") and bool(_EXCEPTION_NAME_RE.search(line))


def _is_important(lines: list[str]) -> bool:
    return any(_IMPORTANT_RE.search(line) or _EXCEPTION_NAME_RE.search(line) for line in lines)


def _template(lines: list[str]) -> str:
    text = "\n".join(lines)
    for pattern, placeholder in _NORMALISERS:
        text = pattern.sub(placeholder, text)
    return text
