"""Log output (application logs, access logs, compiler diagnostics, test-runner output).

Safe mode folds runs of byte-identical consecutive lines into one line plus a count (lossless).

Balanced and aggressive modes fold by template (`_templates`). The log is split into entries (a line with
a timestamp or level prefix plus its continuation lines); each entry's template is its text with
timestamps, short hex values, IP addresses and numbers replaced by slots. Folding never reorders output
(a `git log` commit line folded with the next commit's would leave each message under the wrong commit):

- a run of neighbouring entries sharing a template keeps its first entry verbatim as the example, followed
  by one marker with the count, the range of the folded lines and the template with each slot summarised;
- the routine entries between those runs and the entries that stay (a busy service interleaves health
  checks, requests and metrics) fold into one marker in their place, with the range and a census: each
  template with its count.

A marker's range is exactly the lines it folded; the first marker of an output says to re-run to see them.

Ids are never slots, so entries that differ in one never share a template: hex ids of 7+ digits (commit
SHAs, container and trace ids), UUIDs, and, in lines that do not start with a timestamp or a level, the
number in a line's first field or right after a leading word (`ps` output's PID column), a number labelled
`pid` and a number in `name[1234]`.

Never folded, kept verbatim in place: every entry with a warning, error, fatal/critical, exception or
traceback line, together with its whole stack trace (indented lines, `at …` frames, `File "…", line N`
frames, `Caused by:`); every entry containing an id or other fact of the latest user request
(`Context.query`); in balanced mode also the entry right before each important entry (what happened just
before a failure).

Fact retention in folded entries — the rule this module follows, and the only place where a fact may leave
the text without being listed:

- *Incidental* values (`summarisable`): timestamps, dates and times, bare numbers and numbers with a unit
  (durations, sizes, counts, percentages), hex values of up to 6 digits and IP addresses. In the entries of
  a routine group these are the fields that vary from line to line (every health check has its own
  timestamp and latency); they are summarised per slot instead of listed: the value itself when the whole
  group shares it; for one slot at most, all its distinct values if there are at most three; else
  `first … last` for timestamps, `min..max` for numbers and a count of distinct values otherwise (lists of
  values in two slots would read as if every combination had occurred).
- Every other fact of a folded entry — amounts with a currency, error codes, business ids (`ORD-1042`,
  `txn_8Hq2`), constants, paths, URLs, e-mail addresses, versions, inline code — is listed verbatim in the
  group's marker unless it is already visible elsewhere in the output.
- Facts of entries that are not folded (warnings, errors, traces, their context and everything the latest
  request mentions) are never touched.

`finish()` checks the result against exactly this rule: every fact of the input that is not an incidental
value must be in the output verbatim (incidental values of kept entries are there with their entries).
"""

from __future__ import annotations

import itertools
import re
from bisect import bisect_right
from collections.abc import Mapping
from dataclasses import dataclass
from itertools import accumulate
from operator import add, or_
from types import MappingProxyType

import msgspec

from worker import tokens
from worker.optimize import facts
from worker.optimize.base import Compressed, Context, Mode
from worker.optimize.kinds._common import FOLD_RATIO, FactLedger, finish, fold_exact_repeats, worth_folding
from worker.optimize.kinds._detect import DIAGNOSTIC_RE, LOG_PREFIX_RE
from worker.optimize.kinds._templates import (
    Piece,
    Shape,
    fold_pieces,
    shapes_of,
    skeletons,
    stretches,
    summary,
)


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
# The same for lower-cased ASCII text, written so that every alternative opens with a letter (the engine then
# jumps between the few places a match can start, 3x faster than trying `\b` at every position). At most one
# of the words, a whole word, matches at a place, so the order of the alternatives does not matter.
_IMPORTANT_LOWER_RE = re.compile(
    r"e(?<=\be)(?:rror|merg|mergency|xception)\b|f(?<=\bf)(?:atal|ail|ailed|ailure)\b|c(?<=\bc)(?:rit|ritical)\b"
    r"|w(?<=\bw)(?:arn|arning)\b|s(?<=\bs)evere\b|p(?<=\bp)anic\b|a(?<=\ba)lert\b|t(?<=\bt)raceback\b"
)
# Levels written as a letter or an abbreviation in an entry's first line, matched case-sensitively (lower-case
# `err` is a variable): glog/klog `E0314 10:02:01.123 …]` (W, F too), logcat threadtime
# `03-14 10:02:00.123  1234  5678 E Tag:`, and within the first three words logcat's `E/Tag( 123):` and
# zerolog's console `ERR`/`WRN`/`FTL`/`PNC`. Anchored at the entry's start: a `match` per entry costs a
# tenth of a scan of the whole text. A word and the blanks after it are taken possessively: a shorter word is
# followed by no blank, fewer blanks by no word, so giving characters back could only fail again.
_LEVEL_CODE_RE = re.compile(
    r"[ \t]{0,2}(?:[EWF]\d{4} \d{2}:\d{2}:\d{2}"
    r"|\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}[ \t]+\d+[ \t]+\d+[ \t]+[EWFA][ \t]"
    r"|(?:\S++[ \t]++){0,2}(?:[EWFA]/[\w.$-]+(?:\([ \t]*\d+\))?:|(?:ERR|WRN|FTL|PNC)\b))"
)
# `[a-z0-9](?:Error|Exception|Warning|Fault)\b|^E\s{2,}|^Caused by:|^panic:` (MULTILINE: `^` is the start of
# any line of an entry), written so that every alternative opens with a letter: the engine then jumps
# between the few places a match can start instead of trying the pattern at every position (5x faster on a
# log). A class name's match starts at its capital, one character later, on the same line.
_EXCEPTION_NAME_RE = re.compile(
    r"E(?<=[a-z0-9]E)(?:rror|xception)\b|W(?<=[a-z0-9]W)arning\b|F(?<=[a-z0-9]F)ault\b"
    r"|E(?<=^E)\s{2,}|C(?<=^C)aused by:|p(?<=^p)anic:",
    re.MULTILINE,
)
# Stack-trace and multi-line-message continuations for logs without a per-line prefix.
_CONTINUATION_RE = re.compile(
    r"^(?:\s+\S|at \S|Caused by:|\.\.\. \d+ more|File \"|During handling of|The above exception|"
    r"goroutine \d+|\[\d+ frames? omitted\])"
)


# Facts that are incidental in a routine log line (see the module docstring). A currency amount is never
# incidental, even though it is a number: amounts are what a billing task depends on.
_INCIDENTAL_RE = re.compile(
    r"(?:\d{4}[-/]\d{2}[-/]\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:[.,]\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\d{1,2}/\d{1,2}/\d{2,4}|\d{1,2}/[A-Z][a-z]{2}/\d{4}(?::\d{2}:\d{2}:\d{2})?"
    r"|\d{1,2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?:\s?[AaPp][Mm])?(?:\s?(?:UTC|GMT|[A-Z]{2,4}T))?"
    r"|0x[0-9a-fA-F]{1,6}"
    r"|\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?"
    r"|[-+]?\d[\d,]*(?:\.\d+)?(?:\s?(?:%|[A-Za-z]{1,12}))?)"
)
# Hex ids (commit SHAs, container and trace ids): never incidental, never summarised. A number with a unit
# can look like one (`123abcd`), hence the separate test in `summarisable`.
_HEX_ID_RE = re.compile(r"(?:0x)?(?=[0-9a-fA-F]*[a-fA-F])(?=[0-9a-fA-F]*\d)[0-9a-fA-F]{7,}|0x[0-9a-fA-F]{7,}")
_CURRENCY_RE = re.compile(r"[$€£¥₹]|\b(?:USD|EUR|GBP|JPY|CHF|CAD|AUD|CNY|INR|dollars|euros|pounds)\b")


# Id-like words of the latest request (`7f3a9c2`, `req-42`, `job_17`): an entry containing one is kept.
_QUERY_ID_RE = re.compile(r"[A-Za-z0-9][\w.:/-]*\d[\w.:/-]*|[\w.:/-]*\d[\w.:/-]*[A-Za-z0-9]")
# The id-like words are looked for in each run of such characters up to this long (an id is short; a longer
# run, a URL, is a fact already): the pattern retries a run at each of its positions, quadratic in its length.
_QUERY_RUN_RE = re.compile(r"[\w.:/-]+")
_QUERY_RUN_MAX = 256


def summarisable(fact: str) -> bool:
    """True for facts that a folded log entry may summarise rather than list: timestamps, dates, times,
    numbers with or without a unit, hex values of up to 6 digits, IP addresses (never a currency amount, a
    hex id of 7+ digits or a UUID)."""
    return (
        _INCIDENTAL_RE.fullmatch(fact) is not None
        and _CURRENCY_RE.search(fact) is None
        and _HEX_ID_RE.fullmatch(fact) is None
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
    whole = facts.digit_skeleton(text)  # the entries and their skeletons both read it
    entries = _entries(lines, whole)
    bodies = ["\n".join(entry.lines) for entry in entries]
    starts = _offsets(bodies)
    forms = skeletons(text, bodies, starts, whole)
    important = _important_entries(text, bodies, starts, forms)
    pinned = list(important)
    for i, flag in enumerate(important):
        if flag:
            for j in range(max(0, i - settings.context_before), i):
                pinned[j] = True
    for i in _asked_entries(bodies, ctx.query):
        pinned[i] = True  # the latest request names something in this entry: it stays as it is
    shapes = shapes_of(
        bodies,
        forms,
        [
            i
            for i, (body, pin) in enumerate(zip(bodies, pinned, strict=True))
            if not pin and body and not body.isspace()  # not blank
        ],
    )
    pieces = fold_pieces(stretches(shapes, len(entries)), shapes, settings.min_group)
    if not pieces:
        return None
    # One scan for facts, attributed to entries by position: what markers list and what the final check
    # requires come from the same matches.
    key_facts = _key_facts_by_entry(text, bodies, forms, starts)
    # Everything no fold may drop stays verbatim; markers need not repeat facts shown there.
    droppable = {i for piece in pieces for i in piece.dropped}
    ledger = FactLedger("\n".join([body for i, body in enumerate(bodies) if i not in droppable]))
    markers: dict[
        int, str
    ] = {}  # entry index -> marker emitted after it (a run) or instead of it (a stretch)
    folded_entries: set[int] = set()
    words = _word_counts(bodies, forms)
    for piece in pieces:
        listed_facts = facts.distinct_facts(f for i in piece.dropped for f in key_facts.get(i, ()))
        what = _describe(entries, piece, shapes, first=not markers)
        marker_text, listed = ledger.marker_of(what, listed_facts)
        if _worth_folding(marker_text, piece.dropped, bodies, words):
            ledger.commit(listed)
            markers[piece.members[0]] = marker_text
            folded_entries.update(piece.dropped)
    if not folded_entries:
        return None
    out: list[str] = []
    for i, entry in enumerate(entries):
        if i not in folded_entries:
            out.extend(entry.lines)
        if i in markers:
            out.append(markers[i])
    notes = [f"folded {len(folded_entries)} repeated log entries under {len(markers)} markers"]
    # The rule of the module docstring, checked on the result: every fact that is not an incidental value
    # is in the output verbatim (kept in place or listed), so a bug in grouping or pinning costs compression,
    # never an error line or an amount. Incidental values of kept entries are there with their entries.
    required = facts.distinct_facts(f for found in key_facts.values() for f in found)
    return finish(text, "\n".join(out), "log-template", notes, original_facts=required)


def _word_counts(bodies: list[str], forms: list[str | None]) -> list[int]:
    """`tokens.at_least` of each entry (its words), once per skeleton (`forms`): a skeleton writes digits as
    `1` and changes nothing else, so an entry and its skeleton have the same blanks, hence the same words."""
    known = {form: tokens.at_least(form) for form in dict.fromkeys(forms) if form is not None}
    return [
        tokens.at_least(body) if form is None else known[form]
        for body, form in zip(bodies, forms, strict=True)
    ]


def _worth_folding(marker_text: str, dropped: list[int], bodies: list[str], words: list[int]) -> bool:
    """`worth_folding(marker_text, [bodies[i] for i in dropped])`, its first test answered from the entries'
    word counts (`_word_counts`) instead of splitting the joined entries, often most of the log, into words.

    That test compares the marker's `tokens.at_most` with `FOLD_RATIO` of the words of the entries joined by
    spaces, less one for each seam; joined by spaces, the entries have exactly their own words, so the sum
    of their counts is that number. When it fails, `worth_folding` makes it again and goes on to count.
    """
    joined_words = sum(map(words.__getitem__, dropped)) - (len(dropped) - 1)
    if tokens.at_most(marker_text) <= FOLD_RATIO * joined_words:
        return True
    return worth_folding(marker_text, [bodies[i] for i in dropped])


def _offsets(bodies: list[str]) -> list[int]:
    """Where each entry starts in the text (`"\\n".join(bodies)`, which is the text itself)."""
    chars_before = accumulate(map(len, bodies[:-1]), initial=0)
    return list(map(add, chars_before, range(len(bodies))))  # and a line break after each earlier entry


def _important_entries(
    text: str, bodies: list[str], starts: list[int], forms: list[str | None]
) -> list[bool]:
    """`_is_important` of every entry: once per skeleton (`forms`) when entries mostly repeat a few, else from
    one scan of the whole text per pattern instead of one per entry.

    No pattern of `_is_important` tells one digit from another (a level, an exception name, a level code
    and a code frame's line number are letters, or digits of any value): an entry and its skeleton are
    both important or neither. In the scan of the whole text, a match is attributed to the entry it starts
    in. Only `^E\\s{2,}` can run past its line; when it runs past its entry, that entry is checked on its
    own (its body may hold fewer blanks).
    """
    distinct = dict.fromkeys(forms)
    if len(distinct) + forms.count(None) <= _SKELETON_SHARE * len(bodies):
        known = {form: _is_important(form) for form in distinct if form is not None}
        return [
            _is_important(body) if form is None else known[form]
            for body, form in zip(bodies, forms, strict=True)
        ]
    important = [False] * len(bodies)
    if text.isascii():
        # Lower-cased ASCII has the same words and word boundaries; a case-sensitive scan is ~3x faster.
        level_matches = _IMPORTANT_LOWER_RE.finditer(text.lower())
    else:
        level_matches = _IMPORTANT_RE.finditer(text)
    for match in level_matches:
        important[bisect_right(starts, match.start()) - 1] = True
    for i in itertools.compress(range(len(bodies)), map(_LEVEL_CODE_RE.match, bodies)):  # matched in C
        important[i] = True
    if "> " in text:
        for match in _CODE_FRAME_RE.finditer(text):
            important[bisect_right(starts, match.start()) - 1] = True
    for match in _EXCEPTION_NAME_RE.finditer(text):
        i = bisect_right(starts, match.start()) - 1
        if match.end() <= starts[i] + len(bodies[i]):
            important[i] = True
        elif not important[i]:
            important[i] = _is_important(bodies[i])
    return important


_SKELETON_SHARE = 0.5
"""`_important_entries` tests each skeleton once when there are at most this many per entry; with more, the
scans of the whole text cost less than a test of each entry."""


def _key_facts_by_entry(
    text: str, bodies: list[str], forms: list[str | None], starts: list[int]
) -> dict[int, list[str]]:
    """The facts of each entry that are not incidental values (`summarisable`), as one scan of `text` finds
    and attributes them.

    When no fact can run across a line break (`facts.may_cross_lines`), each entry scanned alone holds
    exactly those facts; entries with the same skeleton (`forms`, see `_templates.skeleton`: a log's lines
    mostly differ in their digits) hold them at the same places, so each skeleton is scanned once.
    """
    if facts.may_cross_lines(text):
        return _key_facts_by_scan(text, starts)
    # a fact never starts with a blank: it is at its match's start
    known: dict[str | None, tuple[slice, ...]] = {
        form: tuple(slice(p, p + len(f)) for p, f in facts.fact_spans(form) if not summarisable(f))
        for form in dict.fromkeys(forms)
        if form is not None
    }
    found: dict[int, list[str]] = {}
    # Only the entries whose skeleton holds a key fact, and those without a skeleton (`0x`), are visited: a
    # log's routine lines mostly hold incidental values alone.
    cuts_of = list(map(known.get, forms))
    for i in itertools.compress(range(len(bodies)), [cuts is None or cuts for cuts in cuts_of]):
        body, cuts = bodies[i], cuts_of[i]
        if cuts is None:
            key = [fact for _, fact in facts.fact_spans(body) if not summarisable(fact)]
        else:
            key = [body[cut] for cut in cuts]
        if key:
            found[i] = key
    return found


def _key_facts_by_scan(text: str, starts: list[int]) -> dict[int, list[str]]:
    """`_key_facts_by_entry` from one scan of the whole text."""
    found: dict[int, list[str]] = {}
    incidental: dict[str, bool] = {}  # many facts repeat (a status code, a path): judged once each
    for position, fact in facts.fact_spans(text):
        routine = incidental.get(fact)
        if routine is None:
            routine = incidental[fact] = summarisable(fact)
        if not routine:
            found.setdefault(bisect_right(starts, position) - 1, []).append(fact)
    return found


def _asked_entries(bodies: list[str], query: str) -> set[int]:
    """Entries containing a fact or id-like word (with a digit) of the latest request.

    Short values are too common to single anything out, and so is a term found in more than a tenth of the
    entries (a date every timestamp shares): those pin nothing.
    """
    if not query:
        return set()
    terms = dict.fromkeys(f for f in facts.find_facts(query) if len(f) >= 4)
    for run in _QUERY_RUN_RE.findall(query):
        if 4 <= len(run) <= _QUERY_RUN_MAX:
            terms.update(dict.fromkeys(w for w in _QUERY_ID_RE.findall(run) if len(w) >= 4))
    limit = max(3, len(bodies) // 10)
    asked: set[int] = set()
    for term in terms:
        hits = [i for i, body in enumerate(bodies) if term in body]
        if len(hits) <= limit:
            asked.update(hits)
    return asked


def _describe(entries: list[_Entry], piece: Piece, shapes: dict[int, Shape], first: bool) -> str:
    """The marker's text before its facts. A run: `179 more lines like the one above (lines 3-181): <tmpl>`;
    a stretch: `lines 3-42 folded: 25 like <tmpl>; 15 like <tmpl>`. The range is exactly the folded lines;
    the output's first marker also says how to see them (`first`)."""
    dropped = piece.dropped
    start, end = entries[dropped[0]].start + 1, entries[dropped[-1]].start + len(entries[dropped[-1]].lines)
    where = f"line {start}" if start == end else f"lines {start}-{end}"
    if piece.run:
        # A run's members are neighbouring entries: one line each when they span as many lines as they are.
        top, bottom = entries[piece.members[0]], entries[piece.members[-1]]
        single = bottom.start + len(bottom.lines) - top.start == len(piece.members)
        noun = ("line" if single else "entry") if len(dropped) == 1 else ("lines" if single else "entries")
        hint = "; re-run to see them" if first else ""
        template = summary(shapes[piece.members[0]], [shapes[i] for i in dropped])
        return f"{len(dropped)} more {noun} like the one above ({where}{hint}): {template}"
    templates: dict[str, list[int]] = {}
    for i in dropped:
        templates.setdefault(shapes[i].key, []).append(i)
    census = "; ".join(
        f"{len(group)} like {summary(shapes[group[0]], [shapes[i] for i in group])}"
        for group in templates.values()
    )
    hint = ", re-run to see them" if first else ""
    return f"{where} folded{hint}: {census}"


class _Entry(msgspec.Struct, gc=False):
    """A log entry (a Struct: built in C, a few hundred per log). Not tracked by the cycle collector
    (`gc=False`): it holds a number and a list of strings, so no cycle runs through it, and a few hundred
    tracked objects a call set off collections that cost more than building them."""

    start: int
    """0-based index of the entry's first line."""
    lines: list[str]


def _entries(lines: list[str], skeleton: str | None = None) -> list[_Entry]:
    """Lines grouped into log entries: a header line and its continuation lines (stack frames, wrapped text).

    When most lines carry a timestamp/level prefix, every unprefixed line continues the entry before it;
    otherwise only indented lines and stack-frame shapes do. `skeleton` is the lines' text's
    `facts.digit_skeleton`, when the caller has it.
    """
    blank = [not line.strip() for line in lines]
    # Whether each line opens with a prefix, tested once per line skeleton (the census and the grouping both
    # need it): the prefixes name no digit (a timestamp is digits of any value), so a line and its skeleton
    # (`facts.digit_skeleton`) both open with one or neither, and a log's lines repeat a few skeletons.
    if skeleton is None:
        skeleton = facts.digit_skeleton("\n".join(lines))
    forms = skeleton.split("\n")
    known = {form: _opens(form) for form in dict.fromkeys(forms)}
    opens = list(map(known.__getitem__, forms))
    nonblank = blank.count(False)
    structured = nonblank > 0 and sum(opens) * 2 >= nonblank
    if "Traceback" not in skeleton:  # (a word without digits: the same in the skeleton)
        return _entries_sliced(lines, blank, opens, structured)
    return _entries_walked(lines, blank, opens, structured)


def _entries_sliced(lines: list[str], blank: list[bool], opens: list[bool], structured: bool) -> list[_Entry]:
    """`_entries` of lines without a traceback: whether a line continues the entry before it depends on that
    line and the one before alone, so the entries' first lines are found in one pass and each entry is a slice
    of lines. What `_entries_walked` finds for such lines (a test checks it)."""
    if not lines:
        return []
    after_blank = [True, *blank]
    if structured:
        heads = [
            i
            for i, gap, o in zip(range(len(lines)), map(or_, blank, after_blank), opens, strict=True)
            if gap or o
        ]
    else:
        continuation = _CONTINUATION_RE.match
        heads = [
            i
            for i, gap, line in zip(range(len(lines)), map(or_, blank, after_blank), lines, strict=True)
            if gap or not continuation(line)
        ]
    return [
        _Entry(start, lines[start:end]) for start, end in zip(heads, [*heads[1:], len(lines)], strict=True)
    ]


def _entries_walked(lines: list[str], blank: list[bool], opens: list[bool], structured: bool) -> list[_Entry]:
    """`_entries`, line by line: a Python traceback's closing `ValueError: …` line belongs to the entry its
    `Traceback` line opened."""
    entries: list[_Entry] = []
    current: list[str] = []  # the lines of the last entry, which ends with the line before this one
    traceback = (
        False  # the last entry opens with `Traceback`: the `ValueError: …` line closing it belongs to it
    )
    for index, line in enumerate(lines):
        if index and not blank[index] and not blank[index - 1]:
            continues = not opens[index] if structured else bool(_CONTINUATION_RE.match(line))
            if continues or (traceback and _EXCEPTION_NAME_RE.search(line)):
                current.append(line)
                continue
        current = [line]
        traceback = line.startswith("Traceback")
        entries.append(_Entry(index, current))
    return entries


def _opens(line: str) -> bool:
    """A line that is not blank and starts with a log prefix or a diagnostic's location."""
    return bool(line.strip()) and bool(LOG_PREFIX_RE.match(line) or DIAGNOSTIC_RE.match(line))


def _is_important(body: str) -> bool:
    return (
        _IMPORTANT_RE.search(body) is not None
        or _EXCEPTION_NAME_RE.search(body) is not None
        or _LEVEL_CODE_RE.match(body) is not None
        or _CODE_FRAME_RE.search(body) is not None
    )


# The failing line of a test runner's code frame (Jest, Vitest, Babel): `    > 22 |   expect(x).toBe(1);`.
_CODE_FRAME_RE = re.compile(r"^[ \t]*> \d+ \|", re.MULTILINE)
