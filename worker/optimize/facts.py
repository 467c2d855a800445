"""The exact-preservation catalog: what counts as a fact that must survive optimization byte for byte.

IDs, hashes, UUIDs, amounts and currencies (with their sign, the currency before or after), percentages,
dates, times and ISO-8601 durations, URLs, file paths, e-mail addresses, IPv6 addresses, version numbers
(with pre-release and build metadata), error codes and inline code are found by the patterns below. Whatever a
compressor drops, the facts inside it are listed verbatim in the marker that replaces it (`marker()`), so a
fact is never lost: it is either kept in place or named in the marker. The one documented exception is log
folding (`kinds.logs`): in routine lines folded into a template, incidental values (timestamps, numbers,
hex ids, UUIDs, IPs) are summarised per field instead of listed. Constraint clauses (must, never, only,
deadline, limit, "not through X", "instead of" …) are recognised by `is_constraint` and kept whole by the
narrative compressor.

All patterns are compiled once at import; nothing here is per-request setup.
"""

from __future__ import annotations

import re
from collections.abc import Iterable
from itertools import accumulate, compress

_MONTHS = r"(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Sept|Oct|Nov|Dec)[a-z]*\.?"
_CURRENCY_CODES = "USD|EUR|GBP|JPY|CHF|CAD|AUD|CNY|INR"
# The sign of an amount or a number belongs to it (`-$1,234.50`, `-1253.75`), unless it joins two values
# (`2026-2027`, `10-200`) or is part of a flag or an id (`--1234`, `ORD-1042`).
_SIGN_AFTER = r"[\w.+-]"
_SIGN = rf"(?<!{_SIGN_AFTER})[-+]"
_HEX4 = "[0-9A-Fa-f]{1,4}"
_AMOUNT_AFTER = rf"\b\d[\d,]{{0,24}}(?:\.\d{{1,12}})?\s?(?:{_CURRENCY_CODES}|dollars|euros|pounds)\b"
_PERCENTAGE = r"\b\d+(?:\.\d+)?\s?%"
_NUMBER = r"\b\d{3,}(?:[.,]\d+)*\b"
_UNITS = (
    r"(?:business |working |calendar )?(?:days?|hours?|hrs?|minutes?|mins?|seconds?|secs?|weeks?|months?|"
    r"years?|ms|[KMGT]i?B|[kKMG]b|requests?|tokens?|users?|items?|records?|retries|attempts?|times|nodes?|"
    r"replicas?|cores?|GHz|MHz|rps|qps)"
)
_LOCATION = r"(?::\d{1,7}\b){0,2}"

# Order matters only for readability; overlapping matches are resolved longest-first in `find_facts`.
# A run a pattern scans before it can fail (the local part before an `@`, the digits before a currency, the
# name before `.py`) is bounded when matches may start inside it: `a.a.a…` offers a start at every word, and
# an unbounded run scanned again from each start is quadratic (a 100 KB line took minutes). The bounds are
# above any real value (an e-mail's local part is at most 64 characters), so the scan stays linear.
_FACT_PATTERNS: tuple[str, ...] = (
    r"https?://[^\s<>\"'`)\]}]+[^\s<>\"'`)\]}.,;:!?]",  # URLs
    r"\b[\w.+-]{1,64}@[\w-]{1,63}(?:\.[\w-]{1,63}){1,8}\b",  # e-mail addresses
    r"\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b",  # UUIDs
    # IPv6: eight groups, or `::` after a first group of 2+ digits (`fe80::1ff:fe23`, `2001:db8::`; no `1::2`)
    rf"\b(?:(?:{_HEX4}:){{7}}{_HEX4}|[0-9A-Fa-f]{{2,4}}:(?:{_HEX4}:){{0,6}}:(?:{_HEX4}(?::{_HEX4}){{0,5}})?)(?![\w:])",
    r"\b(?=[0-9a-f]*[a-f])(?=[0-9a-f]*\d)[0-9a-f]{7,64}\b",  # hex hashes (git, sha)
    r"\b0x[0-9a-fA-F]+\b",  # hex literals, addresses
    r"`[^`\n]{1,200}`",  # inline code
    r"\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?",  # ISO dates/times
    r"\b\d{1,2}/\d{1,2}/\d{2,4}\b",  # 03/14/2026
    rf"\b{_MONTHS} \d{{1,2}}(?:st|nd|rd|th)?(?:,? \d{{4}})?\b",  # March 14, 2026
    rf"\b\d{{1,2}} {_MONTHS}(?: \d{{4}})?\b",  # 14 March 2026
    # times: 10:30, 10:30:05 PM UTC, 5pm, 11 a.m.
    r"\b\d{1,2}(?::\d{2}(?::\d{2})?(?:\s?[AaPp][Mm])?(?:\s?(?:UTC|GMT|[A-Z]{2,4}T))?|\s?(?:[AaPp][Mm]\b|[ap]\.m\.))",
    # ISO-8601 durations: P3D, PT15M, P1Y2M3DT4H
    r"\bP(?=\d|T\d)(?:\d{1,9}(?:[.,]\d{1,9})?[YMWD]){0,4}(?:T(?:\d{1,9}(?:[.,]\d{1,9})?[HMS]){1,3})?\b",
    rf"(?:{_SIGN})?[$€£¥₹]\s?\d[\d,]*(?:\.\d+)?(?:\s?(?:[kKmMbB]n?|million|billion))?",  # $1,234.50, -$5
    rf"\b(?:{_CURRENCY_CODES})\s?[-+]?\d(?:[\d.,]{{0,24}}\d)?",  # EUR 1.234,56, JPY 5000
    _AMOUNT_AFTER,  # 1,200 EUR
    _PERCENTAGE,
    rf"\b\d+(?:\.\d+)?(?:\s?[-–]\s?\d+(?:\.\d+)?)?\s?{_UNITS}\b",  # quantities with units  # noqa: RUF001
    r"\bv?\d+\.\d+(?:\.\d+)+(?:-[\w.]{1,64})?(?:\+[\w.]{1,64})?\b|\bv\d+(?:\.\d+)?\b",  # 1.2.3-rc.1+b.5, v2
    # paths: ./x, ~/x, or /a/b (two segments or more, so a closing HTML tag is not a path), with the `:line`
    # or `:line:col` of a compiler's or grep's location taken along (and left out of the fact: `_LOCATED`)
    rf"(?:(?:~|\.{{1,2}})/(?:[\w.@-]+/)*[\w.@-]+|/(?:[\w.@-]+/)+[\w.@-]+"
    rf"|\b[\w.@-]{{1,64}}/(?:[\w.@-]+/)*[\w.@-]*\.\w{{1,8}}\b){_LOCATION}",
    r"\b[A-Za-z]:\\(?:[\w .-]+\\)*[\w .-]+",  # Windows paths
    r"\b[\w-]{1,64}\.(?:py|js|ts|tsx|jsx|go|rs|java|kt|rb|php|c|h|cc|cpp|hpp|cs|swift|json|yaml|yml|toml|ini|"
    rf"cfg|md|txt|log|csv|sql|sh|html|css|lock|xml|proto)\b{_LOCATION}",  # file names
    r"\b[A-Z][A-Z0-9]{0,31}(?:[-_][A-Z0-9]{1,31}){0,7}[-_]\d[\w-]{0,63}\b",  # ORD-1042, INV_2026_07, JIRA-88
    # cus_9fK2LmQ, txn_0042 style ids (a digit: not snake_case words)
    r"\b[a-z]{2,8}_(?:(?=[A-Za-z]*\d)[A-Za-z0-9]{6,}|\d{3,})\b",
    r"#\d{2,}\b",  # #1234
    r"\b(?:E|ERR|ERROR|HTTP|TS|CS|PY)[-_]?\d{2,6}\b",  # E501, ERR-404, TS2345
    r"\bE[A-Z]{4,}\b",  # ECONNREFUSED, ENOENT
    r"\b[A-Z][A-Z0-9]+(?:_[A-Z0-9]+)+\b",  # NOT_FOUND, MAX_RETRIES
    _NUMBER,  # other numbers of 3+ digits (counts, ports, line numbers, ids)
    # The same three with their sign: a pattern of its own, so that the unsigned ones keep their leading `\b`
    # (which `_combine` factors) and the signed ones are tried only where a sign is (`_FIRST_CHARS`).
    rf"[-+](?<!{_SIGN_AFTER}[-+])(?:{_AMOUNT_AFTER[2:]}|{_PERCENTAGE[2:]}|{_NUMBER[2:]})",
)


def alternatives(pattern: str) -> list[str]:
    """The top-level `|` alternatives of a regex pattern (one item when there is no top-level `|`)."""
    parts: list[str] = []
    depth, start, i = 0, 0, 0
    in_class = False
    while i < len(pattern):
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        if in_class:
            in_class = c != "]"
        elif c == "[":
            in_class = True
            if pattern[i + 1 : i + 2] == "]":  # a literal ] first in a class
                i += 1
        elif c == "(":
            depth += 1
        elif c == ")":
            depth -= 1
        elif c == "|" and depth == 0:
            parts.append(pattern[start:i])
            start = i + 1
        i += 1
    parts.append(pattern[start:])
    return parts


def _top_level_alternation(pattern: str) -> bool:
    return len(alternatives(pattern)) > 1


def _group_end(pattern: str) -> int:
    """The index just past the group that `pattern` opens with (escaped parentheses are not counted)."""
    depth, i = 0, 0
    while True:
        c = pattern[i]
        if c == "\\":
            i += 2
            continue
        depth += (c == "(") - (c == ")")
        i += 1
        if depth == 0:
            return i


def _first_letters(alternative: str) -> set[str]:
    """The letters `alternative` can start with (past leading look-behinds; into a leading `(?:…)` group)."""
    while alternative.startswith("(?<"):
        alternative = alternative[_group_end(alternative) :]
    if alternative.startswith("(?:"):
        inner = alternative[3 : _group_end(alternative) - 1]
        return {x for alt in alternatives(inner) for x in _first_letters(alt)}
    if not alternative[:1].isalpha():
        raise ValueError(f"cannot tell the first letter of {alternative!r}")
    return {alternative[0]}


def gated_words(body: str) -> re.Pattern[str]:
    r"""`\b(?:body)\b`, with a look-ahead for the letters its alternatives can start with.

    The engine tries every alternative at every word boundary; the one-character class check first rejects
    most boundaries at once (about 1.5x faster on prose). It matches exactly what the ungated pattern does.
    """
    letters = "".join(sorted({x for alt in alternatives(body) for x in _first_letters(alt)}))
    return re.compile(rf"\b(?=[{letters}])(?:{body})\b")


def _combine(patterns: tuple[str, ...]) -> str:
    r"""One alternation of `patterns`, in order, with the `\b` of each run of word-boundary patterns factored.

    Python's `re` tries every alternative at every position; a leading `\b` fails fast, but twenty of them
    per position cost most of the scan. `\b(?:a|b)` matches exactly what `\ba|\bb` matches, and keeping
    the order keeps which alternative wins, so the facts found are the same and the scan is 1.5x faster.
    """
    parts: list[str] = []
    run: list[str] = []
    for p in patterns:
        if p.startswith(r"\b") and not _top_level_alternation(p):
            run.append(p[2:])
            continue
        if run:
            parts.append(r"\b(?:" + "|".join(f"(?:{q})" for q in run) + ")")
            run = []
        parts.append(f"(?:{p})")
    if run:
        parts.append(r"\b(?:" + "|".join(f"(?:{q})" for q in run) + ")")
    return "|".join(parts)


# The characters each pattern can start with, by class: D a digit (`\d`), L an ASCII lower-case letter, U an
# ASCII upper-case letter, O anything else but whitespace (no fact starts with a blank, so the indentation of
# pretty JSON or code costs one failed look-ahead per class). A superset is always safe (see `_dispatch`).
_FIRST_CHARS: tuple[str, ...] = (
    "L",  # URLs
    "DLUO",  # e-mail addresses
    "DLU",  # UUIDs
    "DLU",  # IPv6
    "DL",  # hex hashes
    "D",  # hex literals
    "O",  # inline code
    "D",  # ISO dates/times
    "D",  # 03/14/2026
    "U",  # March 14, 2026
    "D",  # 14 March 2026
    "D",  # times
    "U",  # PT15M
    "O",  # $1,234.50
    "U",  # EUR 1.234,56
    "D",  # 1,200 EUR
    "D",  # percentages
    "D",  # quantities with units
    "DL",  # versions
    "DLUO",  # paths
    "LU",  # Windows paths
    "DLUO",  # file names
    "U",  # ORD-1042
    "L",  # cus_9fK2LmQ
    "O",  # #1234
    "U",  # E501
    "U",  # ECONNREFUSED
    "U",  # NOT_FOUND
    "D",  # numbers of 3+ digits
    "O",  # -1,200 EUR, -12%, -1253.75
)
_CLASS_LOOKAHEAD = {"D": r"(?=\d)", "L": r"(?=[a-z])", "U": r"(?=[A-Z])", "O": r"(?![a-zA-Z\d\s])"}


# A plain number (`5117`, `854.12`) is the commonest fact, and the number pattern comes last of the sixteen a
# digit can start: every other one failed first, 2 us a number. Followed by a JSON closer or quote, a comma
# that a quote, a bracket, a blank and no letter follow, or a blank that no letter, `%` or dash follows, a
# run of 3+ digits (with decimals) is what the plain alternation finds too: an e-mail, UUID, IPv6 address,
# hash, path or file name needs `@ - : / .` or a letter where the number ends, a date or a time a separator
# after at most 4 digits, a version a second dot, an amount a currency word and a quantity a unit or a
# range after at most one blank, and the number pattern itself stops there. Tried first, it matches the
# same text at once (tests/optimize/test_facts.py compares the two on random text).
_PLAIN_NUMBER = r"\b\d{3,}+(?:\.\d++)?+(?=[\]}\"]|,(?:[\"{\[]|\s(?![A-Za-z])|$)|\s(?![A-Za-z%\-\u2013])|$)"


def _dispatch(patterns: tuple[str, ...], first_chars: tuple[str, ...]) -> str:
    """`_combine(patterns)` split by the class of the character at the match start.

    At a position whose character is in class K, only the patterns that can start with a K character can
    match, and within each class the patterns keep their order, so the first pattern that matches — the
    one the plain alternation picks — is the same. The scan tries one cheap look-ahead per class instead
    of every pattern at every position. A digit tries `_PLAIN_NUMBER` first.
    """
    branches = []
    for cls in "DLUO":
        members = tuple(p for p, first in zip(patterns, first_chars, strict=True) if cls in first)
        shortcut = f"{_PLAIN_NUMBER}|" if cls == "D" else ""
        branches.append(f"{_CLASS_LOOKAHEAD[cls]}(?:{shortcut}{_combine(members)})")
    return "|".join(branches)


_FACT_RE = re.compile(_dispatch(_FACT_PATTERNS, _FIRST_CHARS))
# For scanning a whole text: stretches that cannot start a fact are stepped over in one go instead of trying
# the catalog at each of their characters — a lowercase word, a capitalised word that is not a month, or an
# all-caps word not starting with E, when it ends at a space, quote, comma, semicolon, bracket, parenthesis,
# `=`, `<`, `>` or full stop (no pattern starts inside such a word or matches it whole), and runs of
# whitespace, JSON punctuation and the punctuation of code and prose no fact starts with (`;=()<>!?*|&%^\'`).
# A lowercase or capitalised word also ends at `!`, `?`, an apostrophe or the end of the text: no pattern that
# could start inside one runs on through these ("question!", "everyone's", a sentence's last word).
# Facts are group 1; the other matches are empty. Same matches as `_FACT_RE` (tests/optimize/test_facts.py
# checks it); about 3x faster on JSON.
_WORD_END = r"(?=[\s\",;()\[\]{}=<>!?']|\.(?:\s|$)|$)"
# An all-caps word followed by a number may be a currency code (`JPY 5000`): not stepped over.
_CAPS_END = r"(?=[\",;()\[\]{}=<>]|\s(?![-+]?\d)|\.(?:\s|$))"
# One match steps over a whole run of such stretches (possessive: the run ends where none matches, exactly
# where a lone stretch's match would have ended), so the caller sees a few matches per fact, not one per word.
# A word is stepped over only when at most 64 letters long: a word's letters are taken possessively and the
# end test then passes or fails once, and the bound keeps a run of thousands of letters that does not end at
# such a character (the scan retries at each of its positions) from costing its length at each of them, which
# made the scan quadratic. A longer word is scanned like any other text; no pattern matches inside it either.
_SCAN_RE = re.compile(
    rf"(?:[a-z]{{1,64}}+{_WORD_END}|(?!(?:Jan|Feb|Mar|Apr|May|Jun|Jul|Aug|Sep|Oct|Nov|Dec))[A-Z][a-z]{{1,63}}+"
    rf"{_WORD_END}|(?!E)[A-Z]{{2,64}}+{_CAPS_END}|[\s\",:;=(){{}}\[\]<>!?*|&%^\\']+)++|({_FACT_RE.pattern})"
)
_RUN_RE = re.compile(r"[A-Za-z0-9]+")

# Where a fact may run across a line break: the `\s?` between a number and its unit, currency, percent sign,
# range or time zone, or between a currency and its amount, meeting a line break. What may stand on either
# side of it is listed (a superset: a unit's first letters, any capital before a digit). No other pattern
# matches a line break, and to every look-around a line break is what the start and the end of a text are (a
# blank, a word boundary), so where none of these occurs each line holds, scanned alone, the facts a scan of
# the whole text finds on it (`may_cross_lines`). A look-behind for any character that may stand before the
# line break comes first: at most line breaks (after a letter or a full stop) it fails at once, where the
# five look-behinds were tried one after another.
_ACROSS_LINES_RE = re.compile(
    r"\n(?<=[\d,Mm$€£¥₹A-Z\-\u2013]\n)(?:"
    rf"(?<=[\d,]\n)(?=[A-Za-z%\-\u2013])(?:[AaPp][Mm]|[ap]\.m\.|[A-Z]{{2,4}}T|UTC|GMT|[kKmMbB]|%|[-\u2013]\s?\d|{_CURRENCY_CODES}|dollars|"
    rf"euros|pounds|{_UNITS})"
    r"|(?<=[Mm]\n)(?:UTC|GMT|[A-Z]{2,4}T)|(?<=[$€£¥₹]\n)\d|(?<=[A-Z]\n)[-+]?\d|(?<=[-\u2013]\n)\d"
    r")"
)

_WEEKDAY = r"(?:mon|tues|wednes|thurs|fri|satur|sun)day"
# A compact lexicon: English, then the German, French and Spanish words for must/never/only/forbidden, then
# Chinese (no word boundaries in CJK text, so those are matched anywhere).
_CONSTRAINT_WORDS = (
    r"must(?:\s+not)?|mustn't|never|only|always|do\s+not|don't|does\s+not|cannot|can't|shall(?:\s+not)?|"
    r"should(?:\s+not)?|shouldn't|required?|requires|mandatory|forbidden|prohibited|not\s+allowed|deadline|"
    r"due|no\s+later\s+than|no\s+(?:more|fewer|less)\s+than|avoid(?:ing)?|refrain|"
    rf"(?:by|before)\s+(?:end\s+of|EOD|COB|{_WEEKDAY}|tomorrow|tonight|noon|midnight)|limit(?:ed|s)?|"
    r"at\s+(?:most|least)|maximum|minimum|exactly|until|unless|except|without|"
    # A way ruled out: "through the wrapper, not through the raw SDK", "instead of", "rather than".
    r"not\s+(?:through|via|using|over|from|into|inside|directly|any|the)|instead\s+of|rather\s+than|"
    r"darf|dürfen|muss|müssen|niemals|nie|nur|immer|verboten|keinesfalls|"  # German
    r"doit|doivent|devez|jamais|interdit|obligatoire|uniquement|toujours|"  # French
    r"debe[ns]?|nunca|jamás|siempre|prohibido|obligatorio|solamente|únicamente"  # Spanish
)
_CONSTRAINT_CJK = "不能|不得|不可|不要|禁止|严禁|切勿|必须|务必|绝不|只能|永远不"  # Chinese
_CONSTRAINT_RE = re.compile(rf"\b(?:{_CONSTRAINT_WORDS})\b|{_CONSTRAINT_CJK}", re.IGNORECASE)
# The same on lower-cased ASCII text: an ignore-case alternation gives the engine no literal to skip ahead
# with; for ASCII, lower-casing the text (same length, same word boundaries) gives the same matches. ASCII
# text holds none of the Chinese words, which the engine would try at every character; the rest is gated by
# the words' first letters (`gated_words`). About 3x faster on prose.
_CONSTRAINT_LOWER_RE = gated_words(_CONSTRAINT_WORDS.replace("EOD|COB", "eod|cob"))


def _located(fact: str) -> str:
    """A path or file name without the `:line` or `:line:col` its pattern took along (`post.go:70:26` is the
    fact `post.go`: a line and a column are not a time of day, nor a number worth listing on their own)."""
    if not fact[-1].isdigit() or ":" not in fact or "://" in fact:
        return fact
    head, _, last = fact.rpartition(":")
    if not last.isdigit():
        return fact
    before, _, mid = head.rpartition(":")
    if before and mid.isdigit():
        head = before
    # Times, dates and IPv6 addresses end in digits after a colon too, but hold no `/` and no `.`.
    return head if ("/" in head or "." in head) and head[-1] not in ".:/" else fact


def find_facts(text: str) -> list[str]:
    """Every fact in `text`, verbatim, unique, in order of first appearance.

    Linear in the text. A fact that is one alphanumeric run (`2026`, `5404`) is left out when the same run
    is a whole token of a longer fact (`2026-03-14`, `ORD-5404`): the longer fact carries it. A run that only
    occurs inside another token (`5404` in `ORD-15404`) is a different value and stays.
    """
    by_line = _spans_by_line(text)
    if by_line is not None:
        return distinct_facts(fact for _, fact in by_line)
    return distinct_facts(_located(fact) for fact in map(str.strip, _SCAN_RE.findall(text)) if len(fact) >= 2)


def fact_spans(text: str) -> list[tuple[int, str]]:
    """Every fact match of `text` with its start offset, in order (not de-duplicated).

    For callers that scan a text once and attribute facts to its pieces by position.
    """
    by_line = _spans_by_line(text)
    return by_line if by_line is not None else _scanned_spans(text)


def _scanned_spans(text: str) -> list[tuple[int, str]]:
    """`fact_spans` from one scan of `text`."""
    spans: list[tuple[int, str]] = []
    for match in _SCAN_RE.finditer(text):
        found = match.group(1)
        if found is not None:
            fact = found.strip()
            if len(fact) >= 2:
                spans.append((match.start(), _located(fact)))
    return spans


def digit_skeleton(text: str) -> str:
    """`text` with every ASCII digit written `1`.

    No pattern of the catalog tells one digit from another (they tell digits from other characters), except
    `0x`: texts without `0x` that have the same skeleton have their facts at the same places, each as long.
    """
    return text.translate(_DIGITS_AS_ONE)


_DIGITS_AS_ONE = str.maketrans("0123456789", "1111111111")
_REPEATED_LINES_SHARE = 0.75
"""`_spans_by_line` pays when at most this share of a text's lines have a skeleton of their own ..."""
_MEAN_LINE_CHARS = 32
"""... and its lines are this long on average: short lines (pretty JSON) scan faster than they are visited."""


def _spans_by_line(text: str) -> list[tuple[int, str]] | None:
    """`fact_spans(text)` with each line skeleton (`digit_skeleton`) scanned once, or None where that would
    not pay or could differ: most lines of pretty JSON, logs and test output repeat a few skeletons, and
    unless a fact can cross a line break (`may_cross_lines`) each line holds, scanned alone, the facts the
    whole scan finds on it. A line holding `0x` is scanned as it is."""
    if "\n" not in text:
        return None
    lines = text.split("\n")
    if len(text) < _MEAN_LINE_CHARS * len(lines):
        return None
    forms = digit_skeleton(text).split("\n")
    distinct = dict.fromkeys(forms)
    if len(distinct) > _REPEATED_LINES_SHARE * len(lines) or may_cross_lines(text):
        return None
    # skeleton -> (start, end) of each of its facts (`form_spans`, in line: one call fewer per skeleton)
    known = {form: [(start, start + len(fact)) for start, fact in _scanned_spans(form)] for form in distinct}
    # Only the lines with a fact are visited (picked in C), each with the characters before it.
    chars_before = [0, *accumulate(map(len, lines[:-1]))]
    visited: Iterable[int] = compress(range(len(lines)), map(bool, map(known.__getitem__, forms)))
    with_0x = {i for i, line in enumerate(lines) if "0x" in line} if "0x" in text else set()
    if with_0x:
        visited = sorted(with_0x.union(visited))
    spans: list[tuple[int, str]] = []
    for i in visited:
        line, offset = lines[i], chars_before[i] + i
        if i in with_0x:
            spans += [(offset + start, fact) for start, fact in _scanned_spans(line)]
        else:
            spans += [(offset + a, line[a:b]) for a, b in known[forms[i]]]
    return spans


def form_spans(form: str) -> list[tuple[int, int]]:
    """(start, end) of each fact of a digit skeleton (`digit_skeleton`): where every text without `0x` that
    has this skeleton holds its facts (`fact_spans`; a fact is where its match starts, no fact starting with
    a blank: see `_CLASS_LOOKAHEAD`), each as long."""
    return [(start, start + len(fact)) for start, fact in _scanned_spans(form)]


# A fact that a joiner ties to more word characters is part of a longer word: `16790` of the pod name
# `payments-api-7d9f8c6b5-16790`, `v2` of the flag `pdf-v2`, `8080` of `localhost:8080`.
_JOINERS = "-_./:@"
_TOKEN_SPAN = 64
"""How far a fact's word is followed on each side; a longer run (a blob) keeps the fact alone."""


def _word_char(c: str) -> bool:
    return c.isalnum() or c == "_"


def whole_token(text: str, start: int, fact: str) -> str:
    """The word of `text` that the fact found at `start` is part of (see `_JOINERS`), or the fact itself.

    What a marker lists: a fragment alone (`16790`, `v2`) names nothing the reader can look for. Leading and
    trailing joiners (a sentence's full stop, a location's colon) are not part of the word.
    """
    end = start + len(fact)
    n = len(text)
    left = start > 1 and text[start - 1] in _JOINERS and _word_char(text[start - 2])
    right = end + 1 < n and text[end] in _JOINERS and _word_char(text[end + 1])
    if not (left or right):
        return fact
    a, b = start, end
    while a > 0 and (_word_char(text[a - 1]) or text[a - 1] in _JOINERS):
        a -= 1
        if start - a > _TOKEN_SPAN:
            return fact
    while b < n and (_word_char(text[b]) or text[b] in _JOINERS):
        b += 1
        if b - end > _TOKEN_SPAN:
            return fact
    token = text[a:b].strip(_JOINERS)
    return token if fact in token else fact


def facts_in_words(text: str) -> list[tuple[str, str]]:
    """`find_facts(text)`, each with the whole word it is part of (`whole_token`, at its first occurrence)."""
    first: dict[str, int] = {}
    for start, fact in fact_spans(text):
        first.setdefault(fact, start)
    return [(fact, whole_token(text, first[fact], fact)) for fact in distinct_facts(first)]


def distinct_facts(found: Iterable[str]) -> list[str]:
    """`found` unique, in order, minus one-run facts that are a whole token of a longer one (`find_facts`).

    A run is ASCII letters and digits, so only a fact that is one such run can be a token of another. With
    few of them and few other facts (the facts of one record or one log entry), a substring test of each
    pair usually shows that none is inside another, and no fact's runs need to be found.
    """
    seen = dict.fromkeys(found)
    alone: list[str] = []  # one alphanumeric run, the fact itself (most numbers and words)
    longer: list[str] = []
    for fact in seen:
        (alone if fact.isalnum() and fact.isascii() else longer).append(fact)
    if not alone or not longer:
        return list(seen)
    if len(alone) * len(longer) <= _PAIRS_TESTED and not any(run in fact for fact in longer for run in alone):
        return list(seen)
    # A longer fact is never one ASCII run, so each of its runs is a token of it; no run holds a blank, so the
    # runs of the longer facts joined by blanks are theirs (found in one call, not one per fact).
    tokens_of_longer = set(_RUN_RE.findall(" ".join(longer)))
    return [f for f in seen if f not in tokens_of_longer]


_PAIRS_TESTED = 64
"""`distinct_facts` tests up to this many (run, longer fact) pairs as substrings before finding runs."""


def may_cross_lines(text: str) -> bool:
    """False when no fact of `text` can run across one of its line breaks: then each line, or each run of
    whole lines, scanned on its own holds exactly the facts (`fact_spans`) a scan of the whole text finds in
    it, at the same places."""
    return _ACROSS_LINES_RE.search(text) is not None


_ACROSS_LINES_REACH = 17
"""How far past a line break `_ACROSS_LINES_RE` reads: `calendar ` and a unit of 8 letters (`attempts`);
before it, one character."""


def may_cross_line_breaks(skeleton: str, line_starts: Iterable[int]) -> bool:
    """`may_cross_lines` of a text whose digit skeleton (`digit_skeleton`) is `skeleton`, its lines past the
    first starting at `line_starts`, with the pattern tried once on each distinct stretch around a line break:
    the character before it and the `_ACROSS_LINES_REACH` after it. Lines that open alike (grep's paths, a
    log's timestamps) make few stretches.

    The pattern tells no digit from another, reads no further from a line break, and holds no anchor, word
    boundary or negative look-around, which a text around a stretch could fail: it matches the text where it
    matches one of the stretches."""
    # A line break put before the text (where no look-behind of the pattern holds, as at the text's start)
    # spares each stretch a test for the text's first character.
    padded = "\n" + skeleton
    stretches = {padded[start - 1 : start + _ACROSS_LINES_REACH + 1] for start in line_starts}
    return any(map(_ACROSS_LINES_RE.search, stretches))


def has_fact(text: str) -> bool:
    """True if `text` contains at least one fact."""
    return _FACT_RE.search(text) is not None


def fact_count(text: str) -> int:
    """How many fact matches `text` has (cheap density signal; not deduplicated)."""
    found = _SCAN_RE.findall(text)  # one string per match: the fact, or "" for a stretch stepped over
    return len(found) - found.count("")


def is_constraint(text: str) -> bool:
    """True for clauses that constrain the task (must, never, only, deadline, limit …)."""
    if text.isascii():
        return is_constraint_lower(text.lower())
    return _CONSTRAINT_RE.search(text) is not None


def is_constraint_lower(low: str) -> bool:
    """`is_constraint` of an ASCII text already lower-cased (the same answer, about 10x faster; not for other
    text, whose Chinese constraint words this does not look for)."""
    return _CONSTRAINT_LOWER_RE.search(low) is not None


def marker(what: str, dropped_text: Iterable[str] = (), limit_chars: int = 2000) -> str:
    """The text that replaces dropped content: what was removed, plus every fact it contained, verbatim.

    `limit_chars` bounds the fact list; facts past it are counted rather than listed, so a caller that must
    keep every fact passes a large enough limit (the compressors' final check rejects any loss).
    """
    return listing_marker(what, [fact for chunk in dropped_text for fact in find_facts(chunk)], limit_chars)


def listing_marker(what: str, found: Iterable[str], limit_chars: int = 2000) -> str:
    """`marker()` for facts the caller already found in the dropped content (listed once each, in order)."""
    facts = list(dict.fromkeys(found))
    if not facts:
        return f"[trex: {what}]"
    listed: list[str] = []
    size = 0
    if sum(map(len, facts)) + 2 * len(facts) <= limit_chars:
        listed = facts  # no fact reaches the limit: the loop below would list them all
    else:
        for fact in facts:
            if size + len(fact) > limit_chars:
                break
            listed.append(fact)
            size += len(fact) + 2
    rest = len(facts) - len(listed)
    tail = f" (+{rest} more)" if rest else ""
    return f"[trex: {what}; facts kept: {', '.join(listed)}{tail}]"
