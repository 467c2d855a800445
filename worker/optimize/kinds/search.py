"""Search output: grep/ripgrep `path:line:content` lines (also rg's heading mode, and OpenCode's: a `path:`
line, then `  Line N: content` lines), `find`/`ls` path lists.

Safe mode folds runs of identical consecutive lines into one line plus a count (lossless).

Balanced and aggressive modes drop exact duplicate lines, rank every match by BM25 relevance to
`ctx.query` (identifiers split at camelCase, snake_case and punctuation), and keep the best match of each
file (file diversity, up to a cap of files) plus the top N matches overall. The other matches of a file
are folded into one marker per file: how many, which line range, and every fact of the folded lines
(`facts.marker`) not already visible in the kept lines. Lines that are not matches (`Binary file … matches`,
summaries) are kept. Output is grouped by file in order of first appearance.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from itertools import accumulate, chain, repeat
from operator import add, itemgetter
from types import MappingProxyType
from typing import NamedTuple

import msgspec

from worker.optimize import facts
from worker.optimize.base import Compressed, Context, Mode
from worker.optimize.bm25 import BM25, tokenize
from worker.optimize.kinds._common import FactLedger, finish, fold_exact_repeats, worth_folding
from worker.optimize.kinds._detect import (
    GREP_CONTEXT_RE,
    GREP_HEAD,
    GREP_LINE_RE,
    GREP_NOLINE_RE,
    HEADING_LINE_RE,
    OPENCODE_LINE_RE,
    PATH_ONLY_RE,
)


@dataclass(frozen=True, slots=True)
class _Settings:
    top_n: int
    """Matches kept by relevance across all files."""
    file_cap: int
    """Files whose best match is kept regardless of rank."""


_SETTINGS: Mapping[Mode, _Settings] = MappingProxyType(
    {
        "balanced": _Settings(top_n=25, file_cap=20),
        "aggressive": _Settings(top_n=10, file_cap=8),
    }
)

_WORD_RE = re.compile(r"[A-Za-z0-9_]+")
# GREP_LINE_RE (matching the same lines), with the rest of the line after a `:` separator that a blank
# follows as a third group: what `_doc` tokenizes of most grep lines' bodies.
_GREP_REST_RE = re.compile(GREP_HEAD + r"(?::(?P<rest> .*)|[:-])", re.DOTALL)
_CAMEL_PART_RE = re.compile(r"[A-Z]+(?=[A-Z][a-z])|[A-Z]?[a-z]+|[A-Z]+|\d+")


class _Match(msgspec.Struct, gc=False):
    """One match (a line of a file, or a line of paths). A Struct: its constructor runs in C, and there is one
    per line; it holds only strings and numbers, so the garbage collector need not track it."""

    index: int
    path: str
    line: int | None
    raw: str
    body: str
    """The raw line without its `path:` prefix (what the marker's facts come from)."""


@dataclass(slots=True)
class _Group:
    """One file's matches (or a single non-match line, `path` empty), with its rg heading line if any."""

    path: str
    heading: str | None = None
    matches: list[_Match] = field(default_factory=list)
    stem: list[str] = field(default_factory=list)
    """The terms of the file's name without its extension, which every match of the file is ranked by too."""


class _Parsed(NamedTuple):
    """A search output read line by line (`_parse`)."""

    groups: list[_Group]
    duplicates: int
    """How many duplicate lines were dropped."""
    indices: list[int]
    """The line of each document, in line order: a match with a path (a line that is no match has none)."""
    docs: list[list[str]]
    """Each document's terms (`_doc`)."""
    bodies: list[int]
    """Where the body of each line starts (`_NO_BODY` for a line that is no match)."""


def compress(text: str, ctx: Context) -> Compressed | None:
    """Dedupe, rank and fold search results; None when nothing can be folded."""
    if ctx.mode == "off":
        return None
    lines = text.split("\n")
    if ctx.mode == "safe":
        deduped, folded = fold_exact_repeats(lines)
        if not folded:
            return None
        return finish(text, "\n".join(deduped), "search-dedupe", [f"{folded} repeated lines counted"])
    groups, duplicates, indices, docs, bodies = _parse(lines)
    settings = _SETTINGS[ctx.mode]
    if not docs:
        return None
    # A document's score depends on its own terms and the corpus's statistics, not on where the document
    # stands among the others (`BM25.scores`): `_parse` gives them in line order, each score filed by line.
    scores = dict(zip(indices, BM25(docs).scores(tokenize(ctx.query)), strict=True))
    keep = _select(groups, scores, settings)
    # Each group with its kept and dropped matches (a line that is not a match is kept).
    parts = [
        (g, [m for m in g.matches if m.index in keep], [m for m in g.matches if m.index not in keep])
        if g.path
        else (g, g.matches, [])
        for g in groups
    ]
    visible = "\n".join((g.heading or "") + "\n" + "\n".join([m.raw for m in kept]) for g, kept, _ in parts)
    ledger = FactLedger(visible)
    found, words = _body_facts(text, lines, bodies)
    out: list[str] = []
    folded_total = 0
    for group, kept, dropped in parts:
        if group.heading is not None:
            out.append(group.heading)
        marker_text = ""
        if dropped:
            dropped_facts: list[str] = []
            for m in dropped:
                line_facts = found.get(m.index)
                if line_facts:  # one fact (most lines with any) is distinct as it is
                    dropped_facts += line_facts if len(line_facts) == 1 else facts.distinct_facts(line_facts)
            marker_text, listed = ledger.marker_of(_what(group, dropped, bool(kept)), dropped_facts, words)
            if worth_folding(marker_text, [m.raw for m in dropped]):
                ledger.commit(listed)
                folded_total += len(dropped)
            else:
                kept, marker_text = group.matches, ""
        out += [m.raw for m in kept]
        if marker_text:
            out.append(marker_text)
    if not folded_total and not duplicates:
        return None
    notes = [f"folded {folded_total} lower-ranked matches"] if folded_total else []
    if duplicates:
        notes.append(f"dropped {duplicates} duplicate lines")
    every_fact = facts.distinct_facts(chain.from_iterable(found.values()))
    return finish(text, "\n".join(out), "search-rank", notes, original_facts=every_fact)


def _body_facts(
    text: str, lines: list[str], bodies: list[int]
) -> tuple[dict[int, list[str]], dict[str, str]]:
    """The facts of each match's body (by line index), as `facts.fact_spans` finds them in the whole text,
    and the whole word a marker lists for each (`facts.whole_token`, at its first occurrence in a body);
    `bodies` says where each line's body starts (`_Parsed.bodies`).

    Facts that start in a `path:line:` prefix, or on a line that is not a match, are filed under -1: the
    final check still requires them, the markers do not list them (as when each body is scanned alone).

    Unless a fact can run across a line break (`facts.may_cross_line_breaks`: grep lines open with a few
    paths, so the stretches around their breaks are few), each line holds, scanned alone, the facts the whole
    scan finds on it; a grep line is scanned in two pieces, cut after its `path:line:`, whose digit skeletons
    (`facts.digit_skeleton`) repeat where whole lines seldom do: each skeleton is scanned once
    (`facts.form_spans`), a piece holding `0x` as it is.

    A line is cut at its first `: ` after a digit when no backtick comes before it. No fact spans that seam:
    a fact holds a blank only after a digit, a letter, a currency sign or a backslash (in amounts, times,
    dates, quantities, Windows paths), never after a colon, and only inline code (opened by a backtick)
    holds anything else; and no fact starts on a blank. Nor does a look-around tell the two scans apart:
    what ends at the seam ends in a colon, which no pattern ends a word, a number or a look-ahead test with
    (an IPv6 address ends in `::`, and the colon here follows a digit), and the blank opening the second
    piece is as much a non-word character, and no sign, as it is in the whole line.
    """
    found: dict[int, list[str]] = {}
    words: dict[str, str] = {}
    starts = list(accumulate(map(add, map(len, lines), repeat(1)), initial=0))  # of each line in `text`
    skeleton = facts.digit_skeleton(text)
    if facts.may_cross_line_breaks(skeleton, starts[1:-1]):
        for position, fact in facts.fact_spans(text):
            index = bisect_right(starts, position) - 1
            if position - starts[index] >= bodies[index]:
                found.setdefault(index, []).append(fact)
                if fact not in words:
                    words[fact] = facts.whole_token(text, position, fact)
            else:
                found.setdefault(-1, []).append(fact)
        return found, words
    known: dict[str, list[tuple[int, int]]] = {}  # skeleton -> (start, end) of each of its facts
    with_0x = "0x" in text
    ticks = "`" in text
    others: list[str] = []  # the facts filed under -1
    other = others.append
    forms = skeleton.split("\n")
    for index, (line, form, body) in enumerate(zip(lines, forms, bodies, strict=True)):
        # The pieces of the line: its `path:line:` head and the rest, or the whole line.
        cut = line.find(": ")
        if cut > 0 and line[cut - 1].isdigit() and not (ticks and "`" in line[:cut]):
            cut += 1
            head = known.get(form[:cut])
            if head is None:
                head = known[form[:cut]] = facts.form_spans(form[:cut])
        else:
            cut, head = 0, []
        tail = known.get(form[cut:])
        if tail is None:
            tail = known[form[cut:]] = facts.form_spans(form[cut:])
        if with_0x and "0x" in line:
            head, tail = _spans_with_0x(line, cut, head, tail)
        if not (head or tail):
            continue
        for start, end in head:
            if start < body:
                other(line[start:end])
            else:
                _file(found, words, text, starts, index, start, line[start:end])
        for start, end in tail:
            if cut + start < body:
                other(line[cut + start : cut + end])
            else:
                _file(found, words, text, starts, index, cut + start, line[cut + start : cut + end])
    if others:
        found[-1] = others
    return found, words


def _file(
    found: dict[int, list[str]],
    words: dict[str, str],
    text: str,
    starts: list[int],
    index: int,
    start: int,
    fact: str,
) -> None:
    """File `fact`, found at `start` in the body of line `index` of `text` (`_body_facts`), whose lines
    start at `starts`."""
    found.setdefault(index, []).append(fact)
    if fact not in words:
        words[fact] = facts.whole_token(text, starts[index] + start, fact)


def _spans_with_0x(
    line: str, cut: int, head: list[tuple[int, int]], tail: list[tuple[int, int]]
) -> tuple[list[tuple[int, int]], list[tuple[int, int]]]:
    """`head` and `tail`, the facts of a line's pieces (`_body_facts`), for a line holding `0x`: a piece
    holding it scanned as it is (no pattern but `0x` tells one digit from another)."""
    if "0x" in line[:cut]:
        head = [(start, start + len(fact)) for start, fact in facts.fact_spans(line[:cut])]
    if "0x" in line[cut:]:
        tail = [(start, start + len(fact)) for start, fact in facts.fact_spans(line[cut:])]
    return head, tail


_NO_BODY = 1 << 62
"""Where the body of a line that is no match starts: past its end (its facts are all filed under -1)."""


def _terms(cache: dict[str, list[str]], text: str) -> list[str]:
    found = cache.get(text)
    if found is None:
        found = cache[text] = tokenize(text)
    return found


def _what(group: _Group, dropped: list[_Match], some_kept: bool) -> str:
    numbers = [m.line for m in dropped if m.line is not None]
    if not numbers:
        where = ""
    elif min(numbers) == max(numbers):
        where = f" (line {numbers[0]})"
    else:
        where = f" (lines {min(numbers)}-{max(numbers)})"
    more = "more " if some_kept else ""
    noun = "match" if len(dropped) == 1 else "matches"
    return f"{len(dropped)} {more}{noun} in {group.path}{where}"


def _parse(lines: list[str]) -> _Parsed:
    """Lines grouped by file (first-appearance order), how many duplicate lines were dropped, each match's
    document (`_doc`) and where each line's body starts."""
    groups: list[_Group] = []
    by_path: dict[str, _Group] = {}
    seen: set[tuple[str, str]] = set()
    duplicates = 0
    heading: str | None = None
    terms: dict[str, list[str]] = {}
    indices: list[int] = []
    docs: list[list[str]] = []
    bodies = [_NO_BODY] * len(lines)
    # Matched in C up front: whether the next line is a numbered `N:` line (which makes this one a heading),
    # and the `path:line:` of a grep line (what most lines are).
    # A numbered line starts with a digit: where no line does (most grep output), none is matched for.
    numbered_next: Iterable[re.Match[str] | None] = (
        [*map(HEADING_LINE_RE.match, lines[1:]), None]
        if any(map(str.isdigit, map(itemgetter(slice(0, 1)), lines)))
        else repeat(None, len(lines))
    )
    greps = map(_GREP_REST_RE.match, lines)
    for index, (line, numbered, grep) in enumerate(zip(lines, numbered_next, greps, strict=True)):
        if grep is not None and heading is None and numbered is None and line[-1] != ":":
            # A grep line (most lines), neither a heading nor under one: what the steps below do with it, in
            # fewer tests (it is not blank, and its match is made once it is known not to repeat).
            found, number, rest = grep.groups()  # the path, the line number, the rest after `: ` (or None)
            key = (found, line)
            if key in seen:
                duplicates += 1
                continue
            seen.add(key)
            group_for = by_path.get(found)
            if group_for is None:
                group_for = by_path[found] = _Group(path=found, stem=_path_terms(terms, found))
                groups.append(group_for)
            start = len(found) + 1
            body = line[start:]
            group_for.matches.append(_Match(index, found, int(number), line, body))
            bodies[index] = start
            indices.append(index)
            # The body is the line number, its separator, then the rest, and `_doc` cuts it at its first
            # blank: neither the number nor the separator holds one, so a rest starting with one is cut there.
            if rest is not None and number.isascii():
                rest_terms = terms.get(rest)  # `_terms`, in line: there is a call per match
                if rest_terms is None:
                    rest_terms = terms[rest] = tokenize(rest)
                docs.append([number, *rest_terms, *group_for.stem])
            else:
                docs.append(_doc(terms, body, group_for.stem))
            continue
        if not line or line.isspace() or line == "--":
            heading = None if not line or line.isspace() else heading
            continue
        # A heading is followed by a numbered line, or ends in a colon (OpenCode): most lines are neither.
        path = (
            _heading_path(line, lines[index + 1] if index + 1 < len(lines) else "", numbered is not None)
            if numbered is not None or line[-1] == ":"
            else None
        )
        if path is not None:
            heading = path
            group = _Group(path=path, heading=line, stem=_path_terms(terms, path))
            groups.append(group)
            by_path[path] = group
            continue
        if heading is None and grep is not None:  # what `_parse_line` finds first
            found, number = grep.group(1, 2)  # the path and the line number
            match: _Match | None = _Match(index, found, int(number), line, line[len(found) + 1 :])
        else:
            match = _parse_line(index, line, heading)
        if match is None:
            if PATH_ONLY_RE.match(line.strip()):
                match = _Match(index, line.strip(), None, line, line)
            else:
                groups.append(_Group(path="", matches=[_Match(index, "", None, line, line)]))
                bodies[index] = 0
                continue
        key = (match.path, match.raw)
        if key in seen:
            duplicates += 1
            continue
        seen.add(key)
        group_for = by_path.get(match.path)
        if group_for is None:
            group_for = _Group(path=match.path, stem=_path_terms(terms, match.path))
            groups.append(group_for)
            by_path[match.path] = group_for
        group_for.matches.append(match)
        bodies[index] = len(line) - len(match.body)
        indices.append(index)
        docs.append(_doc(terms, match.body, group_for.stem))
    return _Parsed(groups, duplicates, indices, docs, bodies)


def _doc(terms: dict[str, list[str]], body: str, stem: list[str]) -> list[str]:
    """A match's terms, for ranking: its body's, then its file name's (`stem`).

    Many matches share a file, and grep bodies repeat: each distinct string is tokenized once (`terms`). A
    body is tokenized in two, at its first blank (no term holds a blank): its line number and what follows
    it, which repeats where the whole body, numbered, seldom does.
    """
    cut = body.find(" ")
    if cut <= 0:
        return _terms(terms, body) + stem
    head, rest = body[:cut], body[cut:]
    number = head[:-1]
    # A grep body's head is its line number and a colon, whose one term is the number.
    if head[-1] == ":" and number.isdigit() and number.isascii():
        return [number, *_terms(terms, rest), *stem]
    return _terms(terms, head) + _terms(terms, rest) + stem


def _path_terms(terms: dict[str, list[str]], path: str) -> list[str]:
    """The terms of a file's name without its extension (`_Group.stem`)."""
    return _terms(terms, path.rsplit("/", 1)[-1].rsplit(".", 1)[0])


def _heading_path(line: str, nxt: str, nxt_numbered: bool) -> str | None:
    """The file of a heading line: rg --heading's `path` before `N:content` lines, OpenCode's `path:` before
    `  Line N: content` lines; None for any other line. `nxt_numbered`: HEADING_LINE_RE matches `nxt`."""
    if nxt_numbered and PATH_ONLY_RE.match(line):  # the cheap test first: most lines fail it
        return line
    if line.endswith(":") and OPENCODE_LINE_RE.match(nxt) and PATH_ONLY_RE.match(line[:-1]):
        return line[:-1]
    return None


def _parse_line(index: int, line: str, heading: str | None) -> _Match | None:
    if heading is not None:
        numbered = HEADING_LINE_RE.match(line) or OPENCODE_LINE_RE.match(line)
        if numbered:
            return _Match(index, heading, int(numbered.group("line")), line, line)
    for pattern in (GREP_LINE_RE, GREP_CONTEXT_RE):
        grep = pattern.match(line)
        if grep:
            path = grep.group("path")
            return _Match(index, path, int(grep.group("line")), line, line[len(path) + 1 :])
    plain = GREP_NOLINE_RE.match(line)
    if plain:
        path = plain.group("path")
        return _Match(index, path, None, line, line[len(path) + 1 :])
    return None


def _select(groups: list[_Group], scores: dict[int, float], settings: _Settings) -> set[int]:
    """Indices of the matches to keep: each file's best (files ranked by it, up to the cap) and the top N.

    Ranked best score first, ties in line order: a stable sort in reverse of the indices in line order keeps
    equal scores in that order. A file's best match is its first in that ranking, and the files ranked by
    their best are the files in the order their bests come in it.
    """
    group_of = {m.index: k for k, g in enumerate(groups) if g.path for m in g.matches}
    ranked = sorted(sorted(group_of), key=scores.__getitem__, reverse=True)
    keep = set(ranked[: settings.top_n])
    files: set[int] = set()
    # Past the cap, or once every file has its best, the ranking holds no more files' bests.
    cap = min(settings.file_cap, sum(1 for g in groups if g.path and g.matches))
    for index in ranked:
        if len(files) >= cap:
            break
        group = group_of[index]
        if group not in files:
            files.add(group)
            keep.add(index)
    return keep
