"""Prose units: the byte spans narrative compaction ranks and keeps or drops (`narrative`).

A text is cut into sentences, markdown bullets and headings, speaker labels ("Agent:", "**Customer:**",
"[10:32] Maria:"), and verbatim blocks (fenced or indented code, tables, rules, paragraphs dense in code
punctuation). Every non-whitespace character of the text is in exactly one unit, so the kept units with
their original separators are the text itself, minus what was dropped.

Sentence ends: `.`, `!` and `?` (with the closing quotes, brackets and emphasis after them) before
whitespace, and the CJK full stop, full-width `!` and `?`, after which no space comes; a period after a
known abbreviation, an initialism or an initial does not end a sentence, nor does one inside inline code.
A line break ends a sentence unless it looks like a soft wrap.

A line opening with a short name and a colon is a speaker label, unless the label is itself a constraint
clause (`is_hard_constraint`: it must stay with its clause) or holds a fact.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from itertools import accumulate, count
from operator import add

from . import facts

# --- block structure -------------------------------------------------------------------------------------

_FENCE_RE = re.compile(r"[ ]{0,3}(`{3,}|~{3,})")
_HEADING_RE = re.compile(r"[ ]{0,3}#{1,6}(?:[ \t]|$)")
_BULLET_RE = re.compile(r"[ \t]*(?:[-*+•]|\d{1,3}[.)])[ \t]+\S")
_RULE_RE = re.compile(r"[ ]{0,3}([-*_])(?:[ \t]*\1){2,}\s*$")
_TABLE_RE = re.compile(r"[ \t]*\|")
_INDENTED_RE = re.compile(r"(?: {4}|\t)")
# "Agent:", "**Customer:**", "[10:32] Maria:", "Dr. Lee (billing):" — a short name and a colon, then text.
# The name's words are possessive: a word ends where a blank or a character outside the class follows, and
# a colon (or `**`) can only come there, or after `__` the word took along, which leaves the match the same;
# so giving characters or words back could only fail again. A sentence opening with a capital word (most
# lines) was backtracked through word by word, three times slower.
_LABEL_RE = re.compile(
    r"[ \t]*(?:\[[^\]\n]{1,25}\][ \t]*)?(?:\*\*|__)?[A-Z][\w.'()#-]*+(?:[ \t][\w.'()#-]++){0,2}+"
    r"(?:\*\*|__)?:(?:\*\*|__)?[ \t]+(?=\S)"
)
_STAMP_RE = re.compile(r"^[ \t]*\[[^\]\n]*\]")
_CODE_CHARS = "{}[]();=<>$\\|"
_CODE_CHAR_RE = re.compile(f"[{re.escape(_CODE_CHARS)}]")
# What a block-structure line (fence, heading, bullet, rule, table) can open with, past its indentation (and
# any decimal digit): most prose lines start with none of these, and skip the block patterns.
_BLOCK_FIRST = frozenset("`~#-*+•_|")

# --- sentence boundaries ---------------------------------------------------------------------------------

_CLOSERS = "\"'\u2019\u201d)]*_"  # closing quotes, brackets and emphasis after the end punctuation
_CJK_ENDS = "\u3002\uff01\uff1f"  # the ideographic full stop, full-width ! and ?: no space follows them
# `[.!?]+<closers>(?=\s)|[<CJK ends>]+<closers>`, where a non-space character comes after (group 1: there is
# no sentence to end before otherwise), written to open with one character class: the engine then skips to
# the next end punctuation in one step (a pattern opening with a repeat or an alternation is tried at every
# position, five times slower on prose). The look-behind tells which of the two the first character was; the
# atomic group keeps each match as long as the plain pattern's, so the look-ahead cannot shorten it. The
# matches are the same (tests/optimize/test_narrative.py checks it).
_PUNCT_RE = re.compile(
    rf"[.!?{_CJK_ENDS}](?>(?<=[.!?])[.!?]*[{re.escape(_CLOSERS)}]*(?=\s)|(?<=[{_CJK_ENDS}])[{_CJK_ENDS}]*"
    rf"[{re.escape(_CLOSERS)}]*)(?=\s*(\S))"
)
_INLINE_CODE_RE = re.compile(r"`[^`\n]+`")
_INITIALISM_RE = re.compile(r"(?:[a-z]\.)+[a-z]")
_ABBREVIATIONS_TEXT = """
    mr mrs ms mx dr prof sr jr st vs al cf approx appx est dept fig figs eq eqs ref refs sec vol
    inc ltd co corp llc bros no nos jan feb mar apr jun jul aug sep sept oct nov dec mon tue tues wed thu
    thur thurs fri sat sun gen col capt lt sgt rev hon pres gov sen rep ave blvd rd mt ft approx min max
"""
_ABBREVIATIONS = frozenset(_ABBREVIATIONS_TEXT.split())
# A period after more letters than this closes no abbreviation, initialism or initial.
_LONG_WORD = max(map(len, _ABBREVIATIONS)) + 1
_NEEDS_DIGIT = frozenset({"no", "nos", "vol", "fig", "figs", "eq", "eqs", "sec", "ref", "refs"})

# --- constraint clauses ----------------------------------------------------------------------------------

_FEELING = r"(?:frustrat|annoy|upset|stressful|disappoint|inconvenien|confus|worr)"
# Courtesy formulas that contain a constraint word but constrain nothing ("Don't hesitate to ask").
_BOILERPLATE_RE = re.compile(
    r"\b(?:(?:don't|do not) (?:hesitate|worry)|feel free|never mind|always (?:happy|glad|here)|"
    r"only too (?:happy|glad)|(?:should|will|'ll) only take a (?:moment|minute|second|sec)|"
    r"(?:always|never) (?:a|been a) pleasure)\b"
    # Sympathy, where "must" guesses a feeling: "how frustrating this must be", "that must be annoying".
    rf"|\bmust (?:be|have been)(?= (?:\w+ ){{0,2}}{_FEELING})"
    rf"|\b{_FEELING}\w*(?: \w+){{0,2}} must (?:be|have been)\b",
    re.IGNORECASE,
)
# The same for lower-cased ASCII text (see `facts.is_constraint_lower`); the pattern is lower-case already.
_BOILERPLATE_LOWER_RE = re.compile(_BOILERPLATE_RE.pattern)
# Every match of it holds one of these: text without any (most sentences) is not scanned.
_BOILERPLATE_WORDS = ("must", "don't", "do not", "free", "mind", "always", "only t", "pleasure")


def is_hard_constraint(sentence: str) -> bool:
    """A constraint clause, not counting courtesy formulas such as "don't hesitate to reach out"."""
    if sentence.isascii():
        low = sentence.lower()
        if any(word in low for word in _BOILERPLATE_WORDS):
            low = _BOILERPLATE_LOWER_RE.sub(" ", low)
        return facts.is_constraint_lower(low)
    return facts.is_constraint(_BOILERPLATE_RE.sub(" ", sentence))


# --- units -----------------------------------------------------------------------------------------------


@dataclass(slots=True)
class Unit:
    """One byte span of the input: a sentence, bullet, heading, speaker label, or verbatim block."""

    start: int
    end: int
    kind: str
    """`sentence`, `bullet`, `heading`, `label`, `code` (fenced/indented) or `raw` (tables, code-like)."""
    group: int
    """Paragraph/speaker-turn id: a label is kept iff a unit of its group is."""
    section: int
    """Heading id: a heading is kept iff a unit of its section is (or its section is empty)."""
    first: bool = False
    """First prose unit of its paragraph or speaker turn."""


def _trim(text: str, a: int, b: int) -> tuple[int, int]:
    """The span `text[a:b]` without leading and trailing whitespace (empty at `b` if it is all whitespace).

    `str.strip` skips exactly the characters `str.isspace` accepts, in C: no loop over them here."""
    if a >= b:
        return a, b
    piece = text[a:b]
    body = piece.lstrip()
    if not body:
        return b, b
    a += len(piece) - len(body)
    return a, a + len(body.rstrip())


def _may_open_block(line: str) -> bool:
    """False if `line` cannot match any block-structure pattern (a prose line, most often)."""
    first = line.lstrip(" \t")[:1]
    return first in _BLOCK_FIRST or first.isdigit()


def _block_start(line: str) -> bool:
    return _may_open_block(line) and bool(
        _FENCE_RE.match(line)
        or _HEADING_RE.match(line)
        or _BULLET_RE.match(line)
        or _TABLE_RE.match(line)
        or _RULE_RE.match(line)
    )


def _label(line: str) -> re.Match[str] | None:
    """The speaker label opening the line, if any (not one that is itself a constraint, which must stay with
    its clause)."""
    label = _LABEL_RE.match(line)
    if label is None:
        return None
    name = _STAMP_RE.sub("", label.group(0))  # a "[10:32]" stamp may be a fact; the name must not be
    return label if not is_hard_constraint(name) and not facts.has_fact(name) else None


def _code_like(text: str) -> bool:
    """A paragraph dense in code punctuation (JSON, pasted code) is verbatim; inline code is not counted."""
    if not any(map(text.__contains__, _CODE_CHARS)):
        return False  # prose, most often: one search in C per code character, 5x faster than the pattern
    if "`" in text:
        text = _INLINE_CODE_RE.sub(" ", text)
    code = len(_CODE_CHAR_RE.findall(text))
    if not code:  # all of them inside inline code
        return False
    nonspace = len("".join(text.split()))
    if nonspace < 20:
        return False
    return code / nonspace > 0.08


def _period_ends_sentence(seg: str, punct_start: int, nxt: str) -> bool:
    """Whether a '.' at `punct_start` followed by whitespace and `nxt` ends a sentence."""
    if nxt.islower():
        return False
    if punct_start >= _LONG_WORD and seg[punct_start - _LONG_WORD : punct_start].isalpha():
        return True  # the end of a long word (most sentence ends)
    # The word before it: the last run of non-space in the 40 characters before (a line break right before
    # the period is passed over, as `(\S+)$` would).
    before = seg[max(0, punct_start - 40) : punct_start]
    if before[-1:] == "\n":
        before = before[:-1]
    if not before or before[-1].isspace():
        return True
    word = before.rsplit(None, 1)[-1].lstrip("([{\"'\u201c\u2018*_")
    low = word.lower()
    if low in _ABBREVIATIONS:
        return low in _NEEDS_DIGIT and not nxt.isdigit()
    if "." in low and _INITIALISM_RE.fullmatch(low):  # e.g, i.e, u.s, a.m
        return False
    return not (len(word) == 1 and word.isalpha() and word.isupper())  # an initial: "J. Smith"


def _sentence_spans(text: str, a: int, b: int) -> list[tuple[int, int]]:
    """Sentence spans (absolute, trimmed) of text[a:b], a run of prose lines."""
    seg = text[a:b]
    code_starts: list[int] = []
    code_ends: list[int] = []
    if "`" in seg:
        for m in _INLINE_CODE_RE.finditer(seg):
            code_starts.append(m.start())
            code_ends.append(m.end())
    cuts: list[int] = []
    for m in _PUNCT_RE.finditer(seg):
        start, end = m.span()
        if code_starts:
            k = bisect.bisect_right(code_starts, start) - 1
            if k >= 0 and start < code_ends[k]:
                continue  # inside inline code
        punct = seg[start:end]
        if "!" in punct or "?" in punct or punct[0] in _CJK_ENDS:
            cuts.append(end)
            continue
        nxt = m.group(1)
        # The two commonest answers of `_period_ends_sentence`, without the call: a lower-case word next (no
        # end), the end of a long word (an end).
        if nxt.islower():
            continue
        if (start >= _LONG_WORD and seg[start - _LONG_WORD : start].isalpha()) or _period_ends_sentence(
            seg, start, nxt
        ):
            cuts.append(end)
    # Line breaks: a break is a boundary unless it looks like a soft wrap inside a sentence.
    ordered = True  # the punctuation cuts come in order, each once; a line break's may fall between them
    line_start = 0
    while True:
        nl = seg.find("\n", line_start)
        if nl < 0:
            break
        prev = seg[line_start:nl].strip()
        nxt_end = seg.find("\n", nl + 1)
        nxt = seg[nl + 1 : nxt_end if nxt_end >= 0 else len(seg)].strip()
        line_start = nl + 1
        if not prev or not nxt or prev.rstrip(_CLOSERS)[-1:] in (".", "!", "?"):
            continue  # terminal punctuation is the punctuation rule's decision
        if nxt[0].islower() or prev[-1] in ",;(&-\u2013\u2014/" or len(prev) >= 60:
            continue
        cuts.append(nl)
        ordered = False
    spans: list[tuple[int, int]] = []
    start = 0
    for cut in [*(cuts if ordered else sorted(set(cuts))), len(seg)]:
        piece = seg[start:cut]
        body = piece.lstrip()
        if body:  # `_trim`, inline
            s = a + cut - len(body)
            spans.append((s, s + len(body.rstrip())))
        start = cut
    return spans


def _paragraph(text: str, lines: list[tuple[int, str]], units: list[Unit], group: int, section: int) -> int:
    """Units of one paragraph (consecutive prose lines); returns the next free group id."""
    a, b = _trim(text, lines[0][0], lines[-1][0] + len(lines[-1][1]))
    if _code_like(text[a:b]):
        units.append(Unit(a, b, "raw", group, section))
        return group + 1
    # Speaker turns: a line starting with a label opens a new group.
    chunks: list[tuple[re.Match[str] | None, list[tuple[int, str]]]] = []
    for line in lines:
        label = _label(line[1])
        if not chunks or label is not None:
            chunks.append((label, [line]))
        else:
            chunks[-1][1].append(line)
    for label, chunk in chunks:
        start = chunk[0][0]
        end = chunk[-1][0] + len(chunk[-1][1])
        if label is not None:
            ls, le = _trim(text, start, start + label.end())
            units.append(Unit(ls, le, "label", group, section))
            start += label.end()
        first = True
        for s, e in _sentence_spans(text, start, end):
            units.append(Unit(s, e, "sentence", group, section, first))
            first = False
        group += 1
    return group


def split_units(text: str) -> list[Unit]:
    """The units of `text`, in order; every non-whitespace character is in exactly one unit."""
    parts = text.split("\n")
    # (start, line): a line starts after the lines before it and a line break each
    lines = list(zip(map(add, accumulate(map(len, parts), initial=0), count()), parts, strict=False))
    units: list[Unit] = []
    group = 0
    section = 0
    i = 0
    n = len(lines)
    prev_blank = True
    while i < n:
        start, line = lines[i]
        if not line.strip():
            i += 1
            prev_blank = True
            continue
        block = _may_open_block(line)
        fence = _FENCE_RE.match(line) if block else None
        if fence is not None:
            mark = fence.group(1)
            close = re.compile(rf"[ ]{{0,3}}{re.escape(mark[0])}{{{len(mark)},}}\s*$")
            j = i + 1
            while j < n and not close.match(lines[j][1]):
                j += 1
            j = min(j, n - 1)
            a, b = _trim(text, start, lines[j][0] + len(lines[j][1]))
            units.append(Unit(a, b, "code", group, section))
            group += 1
            i = j + 1
        elif block and _HEADING_RE.match(line):
            section += 1
            a, b = _trim(text, start, start + len(line))
            units.append(Unit(a, b, "heading", group, section))
            group += 1
            i += 1
        elif block and _RULE_RE.match(line):
            a, b = _trim(text, start, start + len(line))
            units.append(Unit(a, b, "raw", group, section))
            group += 1
            i += 1
        elif (block and _TABLE_RE.match(line)) or (prev_blank and _INDENTED_RE.match(line)):
            table = block and _TABLE_RE.match(line) is not None
            j = i + 1
            while j < n:
                nxt = lines[j][1]
                if table and not _TABLE_RE.match(nxt):
                    break
                if not table and nxt.strip() and not _INDENTED_RE.match(nxt):
                    break
                j += 1
            a, b = _trim(text, start, lines[j - 1][0] + len(lines[j - 1][1]))
            units.append(Unit(a, b, "raw", group, section))
            group += 1
            i = j
        elif block and _BULLET_RE.match(line):
            j = i + 1
            while j < n and lines[j][1].strip() and not _block_start(lines[j][1]):
                j += 1
            a, b = _trim(text, start, lines[j - 1][0] + len(lines[j - 1][1]))
            units.append(Unit(a, b, "bullet", group, section, True))
            group += 1
            i = j
        else:
            j = i + 1
            while j < n and lines[j][1].strip() and not _block_start(lines[j][1]):
                j += 1
            group = _paragraph(text, lines[i:j], units, group, section)
            i = j
        prev_blank = False
    return units


def sentences(text: str) -> list[str]:
    """The text of every unit of `text` (sentences, bullets, headings, labels, verbatim blocks), in order."""
    return [text[u.start : u.end] for u in split_units(text)]
