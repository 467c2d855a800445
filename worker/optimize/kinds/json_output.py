"""JSON tool output (API responses, `jq` output, JSON Lines).

Safe mode minifies: `msgspec.json.format` re-emits the document without insignificant whitespace, copying
every string and number byte for byte, so nothing but whitespace changes.

Balanced and aggressive modes fold long arrays of records (lists of objects), wherever they sit in the
document. An array keeps its first and last items, the items that stand out (error-like keys or values, an
HTTP status >= 400, a null or a missing key where the others have a value, a rare boolean, a number far
from the median) and the items a selective term of `ctx.query` points at. The other items are replaced by
ONE marker string at the position of the first of them, so the output is still valid JSON:

    "[trex: folded 196 of 200 items (same keys: id, status, total); status values: paid (150), ...;
      kept items at index 0, 1, 57, 199; facts kept: ORD-10001, 2026-02-11T08:15:00Z, ...]"

Fact-retention rule for folded records: a fact is whatever `facts.find_facts` matches (ids, dates, amounts,
e-mails, URLs, paths, 3+-digit numbers, …). Every fact of every folded record is listed verbatim in the
marker, record after record, so an id, a date or an amount a task asks about is still in the text. What a
fold gives up is the key structure around the facts and the values that are not facts (names, small
numbers, flags), summarised as the schema and the value counts of low-cardinality fields. The marker also
names each folded record by its identity field (`id`, `key`, `name`, `slug` …: one every folded record has,
with distinct values) unless those values are all facts it lists anyway, and a minority value of a summary
names its records: `on values: false (9), true (4: dark-mode, one-click, tax-engine, invoice-email)`
answers "which flags are on" without the records. Records whose
full structure a task is likely to need stay whole: the first/last ones, the outliers and the ones the
query names. A fold happens only when its marker is at most `FOLD_RATIO` of the folded records' tokens:
records made mostly of facts (say, a list of ids and timestamps) stay as they are, because listing their
facts would save little and lose which value belonged to which key.
"""

from __future__ import annotations

import math
import re
import sys
from bisect import bisect_left
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from itertools import accumulate, repeat
from itertools import compress as selected
from operator import add, itemgetter
from types import MappingProxyType
from typing import Any, cast

import msgspec

from worker import tokens
from worker.optimize import facts
from worker.optimize.base import Compressed, Context, Mode
from worker.optimize.kinds._common import (
    CHUNK_CHARS,
    FOLD_RATIO,
    NO_LIMIT,
    count,
    fact_list,
    finish,
    pieces_at_least,
    worth_folding,
)
from worker.optimize.kinds._detect import is_json_lines

Scalar = str | int | bool | None | msgspec.Raw


@dataclass(frozen=True, slots=True)
class _Settings:
    min_items: int
    """Arrays shorter than this are left alone."""
    head: int
    tail: int
    outlier_cap: int
    query_cap: int


_SETTINGS: Mapping[Mode, _Settings] = MappingProxyType(
    {
        "balanced": _Settings(min_items=8, head=2, tail=1, outlier_cap=8, query_cap=8),
        "aggressive": _Settings(min_items=6, head=1, tail=1, outlier_cap=4, query_cap=4),
    }
)

_RARE_SHARE = 0.1
"""A signal marks an item as an outlier only if at most this share of the items has it."""
_ERROR_SHARE = 0.5
"""The same for error signals (an error field or value, an HTTP status >= 400): an error in a quarter of the
records still stands out; the `outlier_cap` bounds how many are kept."""
_ERROR_WEIGHT = 3
_FLATTEN_DEPTH = 3
_SUMMARY_MAX_VALUES = 6
_SUMMARY_MAX_FIELDS = 8
_SUMMARY_MAX_LEN = 40
_NAMED_MAX = 8
"""A summarised value held by at most this many folded records (and by fewer than half as many as the most
common value) names them by their identity field."""
_IDENTITY_KEYS = (
    "id", "key", "name", "slug", "uid", "uuid", "handle", "code", "sku", "login", "username", "title",
)  # fmt: skip
_IDENTITY_MAX_LEN = 60
_ROBUST_Z = 6.0
_FLOAT_MAX = sys.float_info.max
_LIST_SCAN_ITEMS = 20
"""Elements of an array field looked at for error-like strings."""

_START, _FACT = itemgetter(0), itemgetter(1)  # of a (start, fact) span

# Floats are kept as their source text (msgspec.Raw), so `1.50` stays `1.50` and never becomes `1.5`.
_DECODER = msgspec.json.Decoder(float_hook=lambda s: msgspec.Raw(s.encode()))

_ERROR_KEY_RE = re.compile(
    r"(?:^|[_\-.])(?:errors?|err|exception|failures?|fault|traceback|stack(?:trace)?|warn(?:ings?)?)$", re.I
)
_ERROR_VALUE_RE = re.compile(
    r"\b(?:errors?|errored|fail(?:ed|ing|ure)?|exception|fatal|panic|crash(?:ed)?|denied|rejected|declined|"
    r"refused|invalid|unauthori[sz]ed|forbidden|time[ds]?[ _-]?out|abort(?:ed)?|unavailable|not[ _]found)\b",
    re.I,
)
# `-0` as a number in minified JSON (a member's or an element's value); decoded, it is the integer 0.
_NEGATIVE_ZERO_RE = re.compile(r"[:,\[]-0(?=[,\]}]|$)")
_STATUS_KEY_RE = re.compile(r"(?:^|[_.])(?:status|status_?code|code|http_?status)$", re.I)
_QUERY_WORD_RE = re.compile(r"[A-Za-z0-9][\w-]{3,}")
_RUN_RE = re.compile(r"[A-Za-z0-9]+")
_STOPWORDS = frozenset(
    (
        "about", "after", "also", "been", "before", "being", "could", "does", "from", "have", "into", "just",
        "like", "make", "more", "most", "much", "only", "other", "over", "same", "should", "show", "some",
        "such", "than", "that", "their", "them", "then", "there", "these", "they", "this", "those", "very",
        "what", "when", "where", "which", "while", "will", "with", "would", "your", "please", "find", "list",
        "give", "tell", "check", "look",
    )
)  # fmt: skip


def compress(text: str, ctx: Context) -> Compressed | None:
    """Minify (safe) or fold record arrays (balanced/aggressive) in a JSON document or JSON Lines text."""
    if ctx.mode == "off":
        return None
    stripped = text.strip()
    if not stripped or stripped[0] not in "[{":
        return None
    try:
        minified = msgspec.json.format(stripped.encode(), indent=-1).decode()
    except (msgspec.DecodeError, RecursionError):  # nested too deep: not JSON to us
        if ctx.mode != "safe" and is_json_lines(stripped):
            return _compress_json_lines(text, stripped, ctx)
        return None
    scan = _Scan.of(text, minified)  # the costliest step: done once for the final check and the markers
    original_facts = fact_list(text) if scan is None else facts.distinct_facts(map(_FACT, scan.spans))
    lossless_note = ["insignificant JSON whitespace"]
    if ctx.mode == "safe":
        return finish(text, minified, "json-minify", lossless_note, original_facts)
    folded = _folded(text, stripped, minified, ctx, original_facts, scan)
    if folded is not None:
        return folded
    # No fold, or one that failed the final check (a fact spelled differently once re-encoded, e.g. with
    # JSON escapes): the lossless minified text is still a valid answer.
    return finish(text, minified, "json-minify", lossless_note, original_facts)


def _folded(
    text: str, stripped: str, minified: str, ctx: Context, original_facts: list[str], scan: _Scan | None
) -> Compressed | None:
    """The document with its long record arrays folded, if that passes the final check."""
    folder = _Folder(_SETTINGS[ctx.mode], _query_terms(ctx.query), scan)
    try:
        doc = _DECODER.decode(stripped)
        new_doc = folder.walk(doc, "$")
    except (msgspec.DecodeError, RecursionError):
        # Minifying copies numbers as text, decoding refuses an integer of thousands of digits; and a document
        # nested hundreds of levels deep is deeper than the walk goes. Both are still minified.
        return None
    if not folder.notes or not _reencodes_faithfully(minified, doc):
        return None
    encoded = msgspec.json.encode(new_doc).decode()
    return finish(text, encoded, "json-fold", folder.notes, original_facts)


def _reencodes_faithfully(minified: str, doc: Any) -> bool:
    """True when encoding the decoded `doc` again changes no value of the document `minified`.

    A fold re-encodes the whole document, and decoding loses two things: the first value of a duplicate
    key, and the sign of `-0`. Either way the document is not folded (it is still minified, which copies
    every token). String escapes may come out spelled differently (`\\u00e9` as `é`), with the same meaning.
    A key ends with `":` in both texts; inside a string that pair is always escaped (`\\":`), so equal
    counts of unescaped ones mean no key was lost.
    """
    if "-0" in minified and _NEGATIVE_ZERO_RE.search(minified):
        return False
    again = msgspec.json.encode(doc).decode()
    return again == minified or _key_count(again) == _key_count(minified)


def _key_count(text: str) -> int:
    return text.count('":') - text.count('\\":')


def _compress_json_lines(text: str, stripped: str, ctx: Context) -> Compressed | None:
    """JSON Lines: the lines are the records; kept lines stay byte for byte, the marker is a JSON string."""
    lines = [line.strip() for line in stripped.split("\n") if line.strip()]
    items = [_DECODER.decode(line) for line in lines]
    settings = _SETTINGS[ctx.mode]
    if len(items) < settings.min_items or not all(isinstance(item, dict) for item in items):
        return None
    plan = _plan_fold(items, lines, settings, _query_terms(ctx.query))
    if plan is None:
        return None
    out: list[str] = []
    placed = False
    for i, line in enumerate(lines):
        if i in plan.keep:
            out.append(line)
        elif not placed:
            out.append(msgspec.json.encode(plan.marker).decode())
            placed = True
    note = f"JSON Lines: folded {len(lines) - len(plan.keep)} of {len(lines)} records"
    return finish(text, "\n".join(out), "json-fold", [note])


@dataclass(frozen=True, slots=True)
class _Scan:
    """The fact matches of the minified document (`facts.fact_spans`), which the final check and the markers
    of folded records both read: one scan instead of one of the input and another of the folded records.

    Without a backtick, no fact crosses a JSON structural character or the whitespace around one: inline
    code is the only fact that may hold a quote, a brace or a bracket, a fact holds a blank only before a
    letter, a digit, `%`, a dash or a currency sign and after a digit, a letter or a currency sign (none of
    which JSON puts on both sides of the whitespace between tokens), and no look-around reaches past the
    quote, colon, comma, bracket or brace next to a fact. So the minified text (strings copied byte for
    byte, the whitespace between tokens dropped) holds the facts of the input, and the input's lines, which
    break only between tokens, each hold theirs: `fact_list` finds the same facts when it cuts the input
    only at line breaks, that is when no line is longer than its chunks (tests/optimize/kinds/
    test_json_output.py compares them). The facts one run of a longer fact may leave out (`distinct_facts`)
    are inside that fact: checking it checks them.
    """

    text: str
    spans: list[tuple[int, str]]
    starts: list[int]

    @classmethod
    def of(cls, text: str, minified: str) -> _Scan | None:
        if "`" in minified or _has_longer_line(text, CHUNK_CHARS):
            return None
        spans = _member_spans(minified)
        return cls(minified, spans, list(map(_START, spans)))


def _has_longer_line(text: str, size: int) -> bool:
    """True when a line of `text` is longer than `size` characters: a search per `size` characters (the last
    line break within reach of each line start), not a split of the text into its lines."""
    start = 0
    while len(text) - start > size:
        cut = text.rfind("\n", start, start + size + 1)
        if cut < 0:
            return True  # the line starting at `start` runs past `size`
        start = cut + 1  # every line up to `cut` fits
    return False


_MEMBER_SEAM = ',"'
_DISTINCT_MEMBERS_SHARE = 0.25
"""`_member_spans` scans each skeleton once when at most this share of the pieces has one of its own."""


def _member_spans(minified: str) -> list[tuple[int, str]]:
    r"""`facts.fact_spans(minified)` of a minified document without a backtick, each piece's digit skeleton
    (`facts.digit_skeleton`) scanned once: records repeat a few keys and value shapes, so a document of
    hundreds of members has a few dozen skeletons.

    The pieces are cut between a comma and a double quote (`,"`: before a member or a string element, or
    after a string ending with a comma), each piece taking the comma. No fact holds a double quote (inline
    code alone may, and there is no backtick), so none reaches across a cut. No look-around sees past one
    either: a piece opens with the quote, which no fact starts with, and the one- and two-character
    look-behinds of a fact starting after it see the same quote; a piece ends with the comma, after which
    the text's end passes every look-ahead that the quote passes and fails every one the quote fails (a
    word boundary, `(?![\w:])`, a plain number's `,"` or `,$`), and a run that takes a comma (a number's
    `[.,]\d`, an amount's `[\d,]`) needs a digit or a currency word after it, which neither offers.
    tests/optimize/kinds/test_json_output.py compares this with the plain scan.
    """
    if "0x" in minified:  # `0x` tells digits apart (`digit_skeleton`)
        return facts.fact_spans(minified)
    # Each piece's skeleton is as long as the piece: where the pieces start comes from the skeletons.
    forms = facts.digit_skeleton(minified).split(_MEMBER_SEAM)
    last = len(forms) - 1
    if last < 2:
        return facts.fact_spans(minified)
    middle = forms[1:last]
    distinct = dict.fromkeys(middle)
    if len(distinct) > _DISTINCT_MEMBERS_SHARE * len(forms):
        return facts.fact_spans(minified)
    # skeleton -> (start, end) of each fact of a middle piece, relative to the piece without its quote
    known = {form: [(a - 1, a - 1 + len(f)) for a, f in facts.fact_spans(f'"{form},')] for form in distinct}
    # where piece i + 1 starts: past piece i and the seam
    after_seam = list(accumulate(map(add, map(len, forms[:-1]), repeat(len(_MEMBER_SEAM)))))
    spans = facts.fact_spans(minified[: len(forms[0])] + ",")
    places = known.__getitem__
    spans += [
        (start + a, minified[start + a : start + b])  # (a fact may end with the piece's comma)
        for i in selected(range(1, last), map(places, middle))  # the pieces with a fact
        for start in (after_seam[i - 1],)
        for a, b in places(forms[i])
    ]
    spans += [
        (after_seam[-1] - 1 + a, fact) for a, fact in facts.fact_spans('"' + minified[after_seam[-1] :])
    ]
    return spans


@dataclass(slots=True)
class _Plan:
    keep: set[int]
    marker: str


@dataclass(slots=True)
class _Folder:
    settings: _Settings
    query_terms: list[str]
    scan: _Scan | None = None
    notes: list[str] = field(default_factory=list)

    def walk(self, value: Any, path: str) -> Any:
        """`value` with its long record arrays folded (recursively, top-down; key order preserved)."""
        if isinstance(value, dict):
            return {key: self.walk(child, f"{path}.{key}") for key, child in value.items()}
        if isinstance(value, list):
            if len(value) >= self.settings.min_items and all(isinstance(item, dict) for item in value):
                return self._fold(value, path)
            return [self.walk(item, f"{path}[{i}]") for i, item in enumerate(value)]
        return value

    def _fold(self, items: list[Any], path: str) -> list[Any]:
        encoded = [msgspec.json.encode(item).decode() for item in items]
        plan = _plan_fold(items, encoded, self.settings, self.query_terms, self.scan)
        if plan is None:
            return [self.walk(item, f"{path}[{i}]") for i, item in enumerate(items)]
        out: list[Any] = []
        placed = False
        for i, item in enumerate(items):
            if i in plan.keep:
                out.append(self.walk(item, f"{path}[{i}]"))
            elif not placed:
                out.append(plan.marker)
                placed = True
        self.notes.append(f"{path}: folded {len(items) - len(plan.keep)} of {len(items)} items")
        return out


def _plan_fold(
    items: list[Any],
    encoded: list[str],
    settings: _Settings,
    query_terms: list[str],
    scan: _Scan | None = None,
) -> _Plan | None:
    """Which records of an array stay, and the marker for the rest; None when folding is not worth it."""
    n = len(items)
    fields = _Fields.of(items)
    keep = set(range(min(settings.head, n))) | set(range(max(0, n - settings.tail), n))
    keep.update(_outliers(fields, n)[: settings.outlier_cap])
    keep.update(_query_hits(encoded, query_terms)[: settings.query_cap])
    # Each fact with the whole word it is part of, which the marker lists (`pdf-v2`, not `v2`).
    item_facts = _facts_in_words(encoded, [i for i in range(n) if i not in keep], scan)
    # A fact with a quote or backslash would come out escaped inside the marker string, no longer verbatim.
    # Without a backslash in a scanned document (no backtick), its strings hold no escape, hence no quote, no
    # backslash and no backtick, and encoding them writes none: no fact holds a quote or a backslash.
    if scan is None or "\\" in scan.text:
        keep.update(i for i, found in item_facts.items() if any('"' in f or "\\" in f for f, _ in found))
    folded = [i for i in range(n) if i not in keep]
    if len(folded) < 2:
        return None
    # The words the marker lists, and their alphanumeric runs: `10003` is shown by `ORD-10003` (a word that
    # is one ASCII run is its own only run).
    listed = {word for i in folded for _, word in item_facts[i]}
    runs_of = [word for word in listed if not (word.isascii() and word.isalnum())]
    listed.update(run for word in runs_of for run in _RUN_RE.findall(word))
    what, named = _describe(items, fields, folded, sorted(keep), n, listed)
    # The marker re-reads facts from each record's fact list (found once above), not the whole record; a
    # word the description already names (an identity) is not listed again.
    words = (word for i in folded for _, word in item_facts[i] if word not in named)
    marker_text = facts.listing_marker(what, words, limit_chars=NO_LIMIT)
    if not _worth_folding(marker_text, [encoded[i] for i in folded]):
        return None
    return _Plan(keep=keep, marker=marker_text)


def _worth_folding(marker_text: str, dropped: list[str]) -> bool:
    """`worth_folding`, without counting the folded records when a lower bound of their tokens is enough.

    Minified records hold no spaces, so `worth_folding`'s cheap bound (one token a word) says nothing and it
    counts thousands of tokens; `pieces_at_least` bounds them in a few C-speed passes. The answer is the
    same: when the marker is within `FOLD_RATIO` of the bound, it is within `FOLD_RATIO` of the count.
    """
    joined = "\n".join(dropped)
    if joined.isascii():
        enough = FOLD_RATIO * pieces_at_least(joined)
        if tokens.at_most(marker_text) <= enough or count(marker_text) <= enough:
            return True
    return worth_folding(marker_text, dropped)


def _facts_in_words(
    encoded: list[str], wanted: list[int], scan: _Scan | None = None
) -> dict[int, list[tuple[str, str]]]:
    """`facts.facts_in_words` of each `wanted` record, from one fact scan of them all.

    The records are scanned as one text, joined by line breaks: an encoded record holds no line break (JSON
    escapes it in strings) and starts with `{` and ends with `}`, which no fact starts or ends with, so no
    match and no word (`facts.whole_token`) reaches across a seam, and each record's facts are the ones a
    scan of it alone finds. One scan instead of one per record saves the per-call cost hundreds of times.
    When the minified document was scanned (`scan`, without a backtick) and holds the array's records as
    they are encoded, joined by commas, their facts are read from that scan: the same seams, by the same
    argument.
    """
    joined = ",".join(encoded)
    at = scan.text.find(joined) if scan is not None and wanted else -1
    records: Iterable[int]
    if scan is not None and at >= 0:
        text, spans, starts = scan.text, scan.spans, scan.starts
        records = range(len(encoded))  # all of them, one after the other in the minified document
    else:
        text = joined = "\n".join(encoded[i] for i in wanted)
        spans = facts.fact_spans(text)
        starts = list(map(_START, spans))
        at, records = 0, wanted
    k = bisect_left(starts, at)
    found: dict[int, list[tuple[str, str]]] = {}
    begin = at
    wanted_now = set(wanted)
    n = len(spans)
    # `distinct_facts` leaves out a fact that is an alphanumeric run of a longer fact of its record. Where no
    # fact of a record is a run of a longer fact of any of these records, it leaves out nothing (the common
    # case: an id and an amount), and the record's facts are distinct as found.
    runs = _runs_of_longer(list(map(_FACT, spans[k : bisect_left(starts, at + len(joined), k)])))
    for i in records:
        end = begin + len(encoded[i])
        first: dict[str, int] = {}
        while k < n and spans[k][0] < end:  # the record's facts, each at its first place
            start, fact = spans[k]
            if fact not in first:
                first[fact] = start
            k += 1
        if i in wanted_now:
            distinct = list(first) if first.keys().isdisjoint(runs) else facts.distinct_facts(first)
            found[i] = [(fact, _word(text, first[fact], fact)) for fact in distinct]
        begin = end + 1  # past the comma or the line break after the record
    return found


def _runs_of_longer(found: list[str]) -> set[str]:
    """The alphanumeric runs of the facts of `found` that are not one run themselves (`distinct_facts`); found
    in them joined by blanks, which no run holds."""
    return set(_RUN_RE.findall(" ".join([fact for fact in found if not (fact.isalnum() and fact.isascii())])))


def _word(text: str, start: int, fact: str) -> str:
    """`facts.whole_token`, answered at once for a whole JSON value: a fact after a quote, bracket, brace,
    comma or a key's colon and before a quote, bracket, brace or comma has no joiner tying it to more."""
    before = text[start - 1]
    if text[start + len(fact)] in '"]},' and (before in '"[{,' or (before == ":" and text[start - 2] == '"')):
        return fact
    return facts.whole_token(text, start, fact)


@dataclass(frozen=True, slots=True)
class _Fields:
    """The leaves of an array's records, by dotted path (nested objects up to `_FLATTEN_DEPTH` levels), as
    columns: every step that compares records (outliers, value summaries, marker order) reads these instead
    of walking the records again."""

    scalars: dict[str, dict[int, Scalar]]
    """The scalar leaves: for each path, each holding record's value by its index, in record order."""
    arrays: dict[str, dict[int, list[Any]]]
    """The array fields, likewise."""
    shapes: list[tuple[str, ...]]
    """Each record's scalar paths in its own order (the value summaries follow the folded records' order)."""

    @classmethod
    def of(cls, items: list[Any]) -> _Fields:
        fields = cls({}, {}, [])
        for i, item in enumerate(items):
            names: list[str] = []
            fields._collect(item, i, "", 1, names)
            fields.shapes.append(tuple(names))
        return fields

    def _collect(self, item: dict[str, Any], i: int, prefix: str, depth: int, names: list[str]) -> None:
        scalars, arrays = self.scalars, self.arrays
        for key, value in item.items():
            name = prefix + key if prefix else key
            kind = type(value)
            if kind is dict:
                if depth < _FLATTEN_DEPTH:
                    self._collect(value, i, name + ".", depth + 1, names)
                continue
            if kind is list:
                columns: dict[str, dict[int, Any]] = arrays
            else:
                columns = scalars
                names.append(name)
            column = columns.get(name)
            if column is None:
                columns[name] = {i: value}
            else:  # (a dotted key and a nested object may spell the same path: the later one counts)
                column[i] = value


def _error_text(value: list[Any]) -> bool:
    """True when an array holds an error-like string (`["payment declined"]`), also in its objects' fields."""
    for element in value[:_LIST_SCAN_ITEMS]:
        texts = element.values() if isinstance(element, dict) else (element,)
        if any(isinstance(t, str) and len(t) <= 200 and _ERROR_VALUE_RE.search(t) for t in texts):
            return True
    return False


def _error_strings(strings: Mapping[int, str]) -> list[int]:
    """The records of `strings` whose value is error-like, searched once per distinct value; the common
    answer, none, from one search of them all (joined by line breaks, which no error word spans). The distinct
    values are found in C, then the long ones left out: the same values, in the same order."""
    distinct = [v for v in dict.fromkeys(strings.values()) if len(v) <= 200]
    if not distinct or _ERROR_VALUE_RE.search("\n".join(distinct)) is None:
        return []
    errors = {v for v in distinct if _ERROR_VALUE_RE.search(v)}
    return [i for i, v in strings.items() if v in errors]


def _raw_number(value: msgspec.Raw) -> float | None:
    try:
        number = float(bytes(value))
    except ValueError:
        return None
    return number if math.isfinite(number) else None


def _outliers(fields: _Fields, n: int) -> list[int]:
    """Indices of records that stand out from the rest, most remarkable first (ties: document order).

    A non-empty `errors`/`warnings` array field, or one holding an error-like string, marks its record like
    an error field or value does; a rare non-empty array where the others are empty (or missing) marks it
    like a rare value.
    """
    rare = max(1, int(n * _RARE_SHARE))
    score = [0] * n

    errors_rare = max(1, int(n * _ERROR_SHARE))

    def mark(hits: list[int], weight: int) -> None:
        # Error signals (weight 3) stand out until they are the rule; milder signals only when rare.
        if 0 < len(hits) <= (errors_rare if weight >= _ERROR_WEIGHT else rare):
            for i in hits:
                score[i] += weight

    for path, column in fields.scalars.items():
        leaf = path.rsplit(".", 1)[-1]
        if _ERROR_KEY_RE.search(leaf):
            mark([i for i, v in column.items() if v not in (None, "", False, 0)], _ERROR_WEIGHT)
        if len(column) < n and n - len(column) <= rare:
            mark([i for i in range(n) if i not in column], 1)
        # msgspec decodes to exactly these types, no subclasses. A column of strings (names, states, codes),
        # the commonest, can only hold error-like values; others are sorted by type in one pass.
        kinds = set(map(type, column.values()))
        if kinds == {str}:
            mark(_error_strings(cast(dict[int, str], column)), _ERROR_WEIGHT)
            continue
        if kinds in (_INTEGERS, _FLOATS):
            # A column of numbers alone (ids, amounts, counts), the next commonest: converted in one pass.
            numbers = (
                _numbers(column) if kinds == _INTEGERS else _floats(cast(dict[int, msgspec.Raw], column))
            )
            if _STATUS_KEY_RE.search(leaf):
                mark([i for i, v in column.items() if type(v) is int and 400 <= v <= 599], _ERROR_WEIGHT)
            if len(numbers) >= 5:
                _mark_numeric_outliers(numbers, mark)
            continue
        nones: list[int] = []
        strings: dict[int, str] = {}
        bools: list[tuple[int, bool]] = []
        numbers = []
        for i, v in column.items():
            if type(v) is str:
                strings[i] = v
            elif type(v) is int:
                if -_FLOAT_MAX <= v <= _FLOAT_MAX:  # hundreds of digits have no float: not compared
                    numbers.append((i, float(v)))
            elif type(v) is bool:
                bools.append((i, v))
            elif v is None:
                nones.append(i)
            elif isinstance(v, msgspec.Raw) and (x := _raw_number(v)) is not None:
                numbers.append((i, x))
        mark(nones, 1)
        mark(_error_strings(strings), _ERROR_WEIGHT)
        if _STATUS_KEY_RE.search(leaf):
            mark([i for i, v in column.items() if type(v) is int and 400 <= v <= 599], _ERROR_WEIGHT)
        if bools and len(bools) == len(column):
            trues = [i for i, v in bools if v]
            falses = [i for i, v in bools if not v]
            mark(trues if len(trues) < len(falses) else falses, 1)
        if len(numbers) >= 5:
            _mark_numeric_outliers(numbers, mark)
    for path, arrays in fields.arrays.items():
        filled = [(i, value) for i, value in arrays.items() if value]
        if not filled:
            continue
        mark([i for i, _ in filled], _ERROR_WEIGHT if _ERROR_KEY_RE.search(path.rsplit(".", 1)[-1]) else 1)
        mark([i for i, value in filled if _error_text(value)], _ERROR_WEIGHT)
    ranked = sorted((i for i in range(n) if score[i] > 0), key=lambda i: (-score[i], i))
    return ranked


_INTEGERS: frozenset[type] = frozenset((int,))
_STRINGS: frozenset[type] = frozenset((str,))
_FLOATS: frozenset[type] = frozenset((msgspec.Raw,))


def _numbers(column: Mapping[int, Any]) -> list[tuple[int, float]]:
    """The integers of a column as floats (hundreds of digits have no float: not compared)."""
    return [(i, float(v)) for i, v in column.items() if -_FLOAT_MAX <= v <= _FLOAT_MAX]


def _floats(column: Mapping[int, msgspec.Raw]) -> list[tuple[int, float]]:
    """The finite numbers of a column of floats (`_raw_number` of each)."""
    try:
        xs = list(map(float, map(bytes, column.values())))
    except ValueError:
        return [
            (i, x) for i, x in zip(column, map(_raw_number, column.values()), strict=True) if x is not None
        ]
    return [(i, x) for i, x in zip(column, xs, strict=True) if -_FLOAT_MAX <= x <= _FLOAT_MAX]


def _mark_numeric_outliers(numbers: list[tuple[int, float]], mark: Callable[[list[int], int], None]) -> None:
    """Numbers far from the median (robust z-score on the median absolute deviation)."""
    xs = sorted(x for _, x in numbers)
    median = _median(xs)
    mad = _median(sorted(abs(x - median) for x in xs))
    if mad == 0:
        mark([i for i, x in numbers if x != median], 1)
        return
    mark([i for i, x in numbers if 0.6745 * abs(x - median) / mad > _ROBUST_Z], 2)


def _median(xs: list[float]) -> float:
    mid = len(xs) // 2
    return xs[mid] if len(xs) % 2 else (xs[mid - 1] + xs[mid]) / 2


def _query_terms(query: str) -> list[str]:
    """Facts and distinctive words (4+ characters, not stopwords) of the user's request."""
    terms: dict[str, None] = {}
    for fact in facts.find_facts(query):
        terms.setdefault(fact, None)
    for word in _QUERY_WORD_RE.findall(query):
        low = word.lower()
        if low not in _STOPWORDS:
            terms.setdefault(low, None)
    return list(terms)


def _query_hits(encoded: list[str], terms: list[str]) -> list[int]:
    """Records containing a query term that few records contain (a term in every record selects nothing)."""
    if not terms:
        return []
    n = len(encoded)
    limit = max(1, int(n * _RARE_SHARE))
    lowered = [text.lower() for text in encoded]
    hits: dict[int, None] = {}
    for term in terms:
        low = term.lower()
        matches = [i for i in range(n) if low in lowered[i]]
        if 0 < len(matches) <= limit:
            for i in matches:
                hits.setdefault(i, None)
    return list(hits)


def _describe(
    items: list[Any],
    fields: _Fields,
    folded: list[int],
    kept: list[int],
    n: int,
    listed: set[str],
) -> tuple[str, set[str]]:
    """The marker's description: counts, schema, the folded records' identities (unless `listed`, the facts
    the marker lists, already holds them all), low-cardinality value counts, kept indices; and the
    identities it names."""
    # Records of an array mostly share one key order: each distinct one is looked at once.
    key_orders = dict.fromkeys(map(tuple, map(items.__getitem__, folded)))
    keys = dict.fromkeys(key for order in key_orders for key in order)
    label = "same keys" if len({tuple(sorted(order)) for order in key_orders}) == 1 else "keys"
    parts = [f"folded {len(folded)} of {n} items ({label}: {', '.join(keys)})"]
    identity = _identity(items, folded)
    names: dict[int, str] = {}
    named: set[str] = set()
    if identity is not None:
        key, values = identity
        names = dict(zip(folded, values, strict=True))
        if any(value not in listed for value in values):
            parts.append(f"{key} of each: {', '.join(values)}")
            named.update(values)
    parts.extend(_value_summaries(fields, folded, names))
    parts.append("kept items at index " + ", ".join(str(i) for i in kept))
    return "; ".join(parts), named


def _identity(items: list[Any], folded: list[int]) -> tuple[str, list[str]] | None:
    """The identity field of the folded records and its values: the first of `_IDENTITY_KEYS` (any case)
    that every one of them has, as a short string or an integer, with no value repeated."""
    first = {str(key).lower(): key for key in items[folded[0]]}
    for candidate in _IDENTITY_KEYS:
        key = first.get(candidate)
        if key is None:
            continue
        values = _identities([items[i].get(key) for i in folded])
        if values is not None and len(set(values)) == len(values):
            return str(key), values
    return None


def _identities(found: list[Any]) -> list[str] | None:
    """`found` as shown, if each is a string or an integer (not a boolean) of 1 to `_IDENTITY_MAX_LEN`
    characters shown; one type check and one length check of them all when they are all of one type."""
    kinds = set(map(type, found))
    if kinds in (_STRINGS, _INTEGERS):
        shown = cast(list[str], found) if kinds == _STRINGS else list(map(str, found))
        lengths = list(map(len, shown))
        return shown if min(lengths) > 0 and max(lengths) <= _IDENTITY_MAX_LEN else None
    values: list[str] = []
    for value in found:
        if isinstance(value, bool) or not isinstance(value, str | int):
            return None
        text = str(value)
        if not 0 < len(text) <= _IDENTITY_MAX_LEN:
            return None
        values.append(text)
    return values


def _shown(value: Scalar) -> str:
    """A scalar as the summary writes it: JSON spelling for literals, numbers as written, strings bare."""
    if value is None:
        return "null"
    if isinstance(value, bool):
        return "true" if value else "false"
    if isinstance(value, msgspec.Raw):
        return bytes(value).decode()
    return str(value)


def _value_summaries(fields: _Fields, folded: list[int], names: dict[int, str]) -> list[str]:
    """`field values: a (120), b (3: x, y, z)` for scalar fields with few distinct values (folded items).

    Strings, booleans, numbers (floats as written) and null; a field holding an object or array is left out.
    A minority value (`_NAMED_MAX`) lists the `names` of its records, when the records have them.
    """
    paths = dict.fromkeys(
        path for shape in dict.fromkeys(map(fields.shapes.__getitem__, folded)) for path in shape
    )
    is_folded = [False] * len(fields.shapes)
    for i in folded:
        is_folded[i] = True
    summaries: list[str] = []
    for path in paths:
        holders = _holders(fields.scalars[path], is_folded)
        if holders is None:
            continue
        total = sum(len(members) for members in holders.values())
        if total < 3 or len(holders) * 2 > total:
            continue
        if any(len(v) > _SUMMARY_MAX_LEN or not v for v in holders):
            continue
        ordered = sorted(holders.items(), key=lambda kv: -len(kv[1]))  # stable: ties keep first-seen order
        top = len(ordered[0][1])
        shown_values = []
        for v, members in ordered:
            named = names and len(members) <= _NAMED_MAX and len(members) * 2 < top
            who = ": " + ", ".join(names[i] for i in members) if named else ""
            shown_values.append(f"{v} ({len(members)}{who})")
        summaries.append(f"{path} values: " + ", ".join(shown_values))
        if len(summaries) >= _SUMMARY_MAX_FIELDS:
            break
    return summaries


def _holders(column: dict[int, Scalar], is_folded: list[bool]) -> dict[str, list[int]] | None:
    """The folded records of a column by shown value, in first-seen order; None as soon as there are more than
    `_SUMMARY_MAX_VALUES` values (an id or an amount: no summary, and no need to look further)."""
    holders: dict[str, list[int]] = {}
    for i, value in column.items():
        if not is_folded[i]:
            continue
        shown = value if type(value) is str else _shown(value)
        members = holders.get(shown)
        if members is not None:
            members.append(i)
        elif len(holders) == _SUMMARY_MAX_VALUES:
            return None
        else:
            holders[shown] = [i]
    return holders
