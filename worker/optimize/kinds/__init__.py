"""Tool-output compressors: what coding agents get back from file reads, grep, test runs, diffs, APIs, logs.

`compress_tool_output(text, ctx, tool)` is the entry point: it strips terminal escapes and trailing whitespace
(every mode but `off`), finds the kind of content — from the tool's name when a coding-agent profile knows
it (`profiles`), else by detection (`detect`) — and hands it to that kind's compressor:

- json → `json_output` (minify; fold long record arrays),
- log → `logs` (fold repeated lines by template; warnings, errors and stack traces stay verbatim),
- search → `search` (dedupe, BM25-rank against the query, fold per file),
- diagnostics (`path:line:col: message` from compilers, vet tools, linters) → kept whole: each line is a
  finding to fix; only runs of identical lines are counted,
- diff → `diffs` (fold unchanged context lines),
- html, table → `markup` (HTML to text, for a page a fetch tool read: markup a shell command printed is
  what its task is about, and is only normalised like prose; fold long tables),
- code → passed through (source code is never changed beyond the whitespace step),
- prose → only runs of identical lines are counted (the rest belongs to the narrative compressor).

A file printed by a shell command (`cat package.json`, `sed -n '1,80p' app.py`: `commands.views_file`) is
passed through as it is, unless it is a log or a table: the agent quotes its lines in its next edit.

Facts inside escape sequences (a 24-bit colour's `255;100;0`) are terminal styling, not content: retention
is guaranteed against the escape-free text. Trailing whitespace is left alone in diffs, where it is part of
the change.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from types import MappingProxyType

from worker.optimize import profiles
from worker.optimize.base import Compressed, Context
from worker.optimize.commands import views_file
from worker.optimize.kinds import diffs, json_output, logs, markup, search
from worker.optimize.kinds._common import (
    COUNT_CHECK_SHARE,
    collapse_blank_lines,
    count,
    finish,
    fold_exact_repeats,
    strip_ansi,
    strip_trailing_ws,
)
from worker.optimize.kinds._detect import KINDS, Kind, detect

__all__ = ["KINDS", "Kind", "compress_tool_output", "detect", "normalise"]


def _exact_repeats(strategy: str) -> Callable[[str, Context], Compressed | None]:
    """A compressor that only folds runs of identical lines (losslessly), labelled `strategy`: for
    unclassified output (progress lines, CLI chatter) and for diagnostics, every finding of which is kept."""

    def compress(text: str, ctx: Context) -> Compressed | None:
        lines, folded = fold_exact_repeats(text.split("\n"))
        if not folded:
            return None
        return finish(text, "\n".join(lines), strategy, [f"{folded} exact repeated lines counted"])

    return compress


_COMPRESSORS: Mapping[Kind, Callable[[str, Context], Compressed | None]] = MappingProxyType(
    {
        "json": json_output.compress,
        "log": logs.compress,
        "search": search.compress,
        "diagnostics": _exact_repeats("diagnostics-dedupe"),
        "diff": diffs.compress,
        "html": markup.compress,
        "table": markup.compress,
        "prose": _exact_repeats("prose-dedupe"),
    }
)


_FILE_VIEW_KINDS_COMPRESSED = frozenset({"log", "table"})
"""Kinds still compacted when a shell command printed them from a file: logs and data tables are read, not
edited, and are the large files (every other file view passes through as it is)."""


def normalise(text: str, kind: Kind) -> str:
    """The lossless clean-up every mode but `off` applies: no escapes, no trailing blanks, fewer blank lines.

    Source code is passed through untouched: an agent quotes its exact lines back in its edits, trailing
    blanks included. Diffs keep trailing whitespace (it can be the change itself).
    """
    if kind == "code":
        return text
    text = strip_ansi(text)
    if kind == "diff":
        return text
    # In a table a trailing tab is an empty last field (TSV), not padding.
    return collapse_blank_lines(strip_trailing_ws(text, " " if kind == "table" else " \t"))


def _smaller(new: str, old: str) -> bool:
    """`new` has fewer tokens than `old`; counted only when it is not much shorter (see `finish`)."""
    if len(new) >= len(old):
        return False
    return len(new) <= COUNT_CHECK_SHARE * len(old) or count(new) < count(old)


def compress_tool_output(
    text: str, ctx: Context, tool: str | None = None, command: str | None = None
) -> Compressed | None:
    """Compress one tool result; None when the mode is `off` or nothing gets smaller.

    `tool` is the name of the tool that produced it; with a coding-agent profile (`ctx.profile`) it decides
    the kind before content detection does, and unwraps the agent's envelopes (`profiles`). `command` is the
    shell command that printed it, when the call ran one (`commands.command_of`).
    """
    if ctx.mode == "off" or not text.strip():
        return None
    wrapped = profiles.unwrap(ctx.profile, tool, text)
    if wrapped is not None:
        inner = compress_tool_output(wrapped.inner, ctx, tool, command)
        if inner is None:
            return None
        rewrapped = wrapped.rewrap(inner.text)
        if not _smaller(rewrapped, text):
            return None
        return Compressed(text=rewrapped, strategy=inner.strategy, removed=inner.removed)
    kind = profiles.kind_for(ctx.profile, tool, lambda: detect(strip_ansi(text)))
    if command is not None and kind not in _FILE_VIEW_KINDS_COMPRESSED and views_file(command):
        return None  # `cat package.json`: the file as the agent will quote it in its next edit
    if kind == "html" and (command is not None or profiles.role(ctx.profile, tool) == "shell"):
        kind = "prose"  # markup a command printed (curl, a build): its tags and attributes are the subject
    cleaned = normalise(text, kind)
    compressor = _COMPRESSORS.get(kind)
    result = compressor(cleaned, ctx) if compressor is not None else None
    if result is None:
        if cleaned == text or not cleaned.strip() or not _smaller(cleaned, text):
            return None  # nothing left (only a spinner's escape codes) is never a replacement
        removed = ["terminal escape sequences and trailing whitespace"]
        return Compressed(text=cleaned, strategy=f"{kind}-whitespace", removed=removed)
    if not _smaller(result.text, text):
        return None
    if cleaned == text:
        return result
    removed = ["terminal escape sequences and trailing whitespace", *result.removed]
    return Compressed(text=result.text, strategy=result.strategy, removed=removed)
