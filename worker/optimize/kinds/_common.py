"""Helpers shared by the tool-output compressors: text normalisation, fact checks, markers and size guards.

Every compressor ends with `finish()`, which enforces the contract of `worker.optimize.base` on the
candidate it built: it must differ from the input, be strictly smaller in tokens, and keep every fact of
the input verbatim (in place or in a marker; the log compressor passes the facts its rule requires). A
candidate that fails any check is discarded, so a bug in one folding rule can cost compression but never a
fact. Compressors that drop whole lines scan the input for facts once (`facts_by_line`, `facts.fact_spans`)
and use the same matches for their markers and for the final check.
"""

from __future__ import annotations

import re
import string
from bisect import bisect_right
from collections.abc import Iterable, Mapping, Sequence

from worker import tokens
from worker.optimize import facts
from worker.optimize.base import Compressed

COUNT_CHECK_SHARE = 0.8
"""A candidate at most this share of its input's characters is taken as smaller without counting tokens."""

NO_LIMIT = 1 << 40
"""`limit_chars` for `facts.marker`: our callers decide up front whether a fold is worth its fact list
(`worth_folding`), so a marker they emit always lists every fact instead of counting some."""

FOLD_RATIO = 0.7
"""A fold must shrink what it replaces to at most this share of its tokens; when the dropped content is
mostly facts, the marker would be nearly as long and would only lose the context around them."""

# Big texts are scanned in chunks of lines (facts never span lines in practice, so chunking finds the same
# facts). A very long line (one-line JSON) is cut before a `,"` or `, "` (a JSON member or element
# boundary), which only an inline-code fact could contain. A piece still longer than a chunk (a JSON array
# of numbers, a CSV row) is cut after a comma, at most once per chunk: a number with thousands separators
# cut there is checked as its two parts, which stay verbatim wherever the whole does.
CHUNK_CHARS = 8000
_LONG_LINE_CUT_RE = re.compile(r'(?:(?<=,)|(?<=, ))(?=")')

# CSI sequences (colours, cursor moves), OSC sequences (titles, hyperlinks) and two-byte escapes.
_ANSI_RE = re.compile(r"\x1b\[[0-?]*[ -/]*[@-~]|\x1b\][^\x07\x1b]*(?:\x07|\x1b\\)|\x1b[@-Z\\-_]")
_BLANK_RUN_RE = re.compile(r"\n{3,}")

# Translation tables for `pieces_at_least`: one class of ASCII characters kept as one character (letters;
# digits; punctuation and control characters, with line breaks apart), all else a blank.
_LETTER_RUNS = bytes(ord("a") if chr(c) in string.ascii_letters else ord(" ") for c in range(256))
_DIGIT_RUNS = bytes(ord("0") if chr(c) in string.digits else ord(" ") for c in range(256))
_PUNCTUATION_RUNS = bytes(
    ord("\n") if chr(c) in "\r\n" else ord(" ") if chr(c).isalnum() or chr(c) in " \t\v\f" else ord(".")
    for c in range(256)
)
_SEARCHED_FACTS_MAX = 512
"""`missing_facts` searches for at most this many facts as text instead of scanning the output for facts."""
_LISTED_FACTS_MIN = 32
"""From this many facts on, `missing_facts` first looks each up among the items a marker lists."""


def strip_ansi(text: str) -> str:
    """`text` without terminal escape sequences (they style output; they are not content)."""
    if "\x1b" not in text:
        return text
    return _ANSI_RE.sub("", text)


def strip_trailing_ws(text: str, blanks: str = " \t") -> str:
    """`text` with CRLF line ends turned into LF and `blanks` (spaces and tabs) at line ends removed."""
    # A character is looked for with memchr, two with a slower search: the rarer one first.
    if "\r" in text and "\r\n" in text:
        text = text.replace("\r\n", "\n")
    if all(c not in text or f"{c}\n" not in text for c in blanks) and not text.endswith(tuple(blanks)):
        return text  # nothing to strip: a substring search or two instead of a regex pass
    # Line by line, not `[ \t]+$`: the regex tries every space of indented text as a run's start.
    return "\n".join([line.rstrip(blanks) for line in text.split("\n")])


def collapse_blank_lines(text: str) -> str:
    """Runs of blank lines reduced to one blank line (whitespace only; nothing else changes)."""
    return _BLANK_RUN_RE.sub("\n\n", text) if "\n\n\n" in text else text


def count(text: str) -> int:
    """Tokens in `text` (o200k_base)."""
    return tokens.count(text)


def _chunks(text: str, size: int = CHUNK_CHARS) -> Iterable[str]:
    """`text` in pieces of about `size` characters: each the most whole lines that fit, or one line cut before
    JSON members when the line alone is longer."""
    start = 0
    while len(text) - start > size:
        # The last line end that keeps this chunk within `size`: found with one search, not line by line.
        cut = text.rfind("\n", start, start + size + 1)
        after = text.find("\n", cut + 1) if cut >= 0 else -1
        if cut < 0 or (after if after >= 0 else len(text)) - cut - 1 > size:
            # A line longer than a chunk is cut into pieces, and its first pieces may share this chunk.
            yield from _chunks_by_line(text[start:], size)
            return
        yield text[start:cut]
        start = cut + 1
    yield text[start:]


def _chunks_by_line(text: str, size: int) -> Iterable[str]:
    """What `_chunks` yields, built line by line, with lines longer than `size` cut into pieces."""
    buffer: list[str] = []
    used = 0
    for line in text.split("\n"):
        pieces = _LONG_LINE_CUT_RE.split(line) if len(line) > size else [line]
        for piece in (cut for whole in pieces for cut in _cut_after_commas(whole, size)):
            if used + len(piece) > size and buffer:
                yield "\n".join(buffer)
                buffer, used = [], 0
            buffer.append(piece)
            used += len(piece) + 1
    if buffer:
        yield "\n".join(buffer)


def _cut_after_commas(piece: str, size: int) -> list[str]:
    """`piece` cut after its last comma within each `size` characters (after the first comma past them when
    there is none within); uncut when it fits or has no comma. Two neighbouring cuts never fit in one chunk
    together, so `_chunks_by_line` never joins them with a line break that is not in the text."""
    if len(piece) <= size:
        return [piece]
    cuts: list[str] = []
    start = 0
    while len(piece) - start > size:
        comma = piece.rfind(",", start, start + size)
        if comma < 0:
            comma = piece.find(",", start + size)
            if comma < 0:
                break
        cuts.append(piece[start : comma + 1])
        start = comma + 1
    cuts.append(piece[start:])
    return cuts


def fact_list(text: str) -> list[str]:
    """The facts of `text` (as `facts.find_facts` finds them), unique, in order, computed in chunks."""
    if len(text) <= CHUNK_CHARS:
        return facts.find_facts(text)
    seen: dict[str, None] = {}
    for chunk in _chunks(text):
        for fact in facts.find_facts(chunk):
            seen.setdefault(fact, None)
    return list(seen)


def facts_by_line(text: str) -> dict[int, list[str]]:
    """The facts of `text` by the index of the line each starts on, from one scan (not de-duplicated).

    For compressors that drop whole lines: the facts of the dropped lines feed their markers, and all of
    them together are the final check's `original_facts`, without a second scan.
    """
    starts = [0]
    position = text.find("\n")
    while position >= 0:
        starts.append(position + 1)
        position = text.find("\n", position + 1)
    found: dict[int, list[str]] = {}
    for offset, fact in facts.fact_spans(text):
        found.setdefault(bisect_right(starts, offset) - 1, []).append(fact)
    return found


def missing_facts(original: str, output: str, original_facts: Sequence[str] | None = None) -> list[str]:
    """Facts of `original` that do not occur verbatim in `output` (pass `original_facts` if known).

    With a few facts, each is searched for as text: a substring search runs at C speed, about a thousand
    times faster per character than the fact scan, so up to `_SEARCHED_FACTS_MAX` searches cost less than
    one scan. With more, one scan of `output` finds most of them and only a distinct fact it did not find is
    searched for (one substring search per fact over the whole output was quadratic: seconds for a large
    table). Both give the same answer: every fact the scan finds is a substring of `output`."""
    found = fact_list(original) if original_facts is None else original_facts
    searched_one_by_one = len(found) <= _SEARCHED_FACTS_MAX
    if len(found) >= _LISTED_FACTS_MIN:
        # A marker lists facts between commas and blanks: most facts of the dropped content are whole items
        # of the output split there, each found by one set lookup instead of a search of the whole output
        # (an item is a piece of the output: a fact it is, the output holds).
        listed = set(output.split(", "))
        found = [fact for fact in found if fact not in listed]
    if searched_one_by_one:
        return [fact for fact in found if fact not in output]
    seen = {fact for _, fact in facts.fact_spans(output)}
    searched: dict[str, bool] = {}
    missing: list[str] = []
    for fact in found:
        if fact in seen:
            continue
        there = searched.get(fact)
        if there is None:
            there = searched[fact] = fact in output
        if not there:
            missing.append(fact)
    return missing


def fold_marker(what: str, dropped: Iterable[str]) -> str:
    """The marker replacing `dropped`: `what`, then every fact of the dropped pieces, verbatim."""
    return facts.marker(what, dropped, limit_chars=NO_LIMIT)


class FactLedger:
    """Facts already visible in the output, so that a marker lists only the facts not shown elsewhere.

    Built from the text a compressor keeps verbatim; every marker made through it adds its facts. A fact that
    is already in the output verbatim needs no second copy: the contract is that each fact is present, and
    repeating e.g. the same timestamp in five markers would cost tokens for nothing.
    """

    __slots__ = ("_listed", "_visible")

    def __init__(self, visible: str) -> None:
        self._visible = visible
        self._listed: set[str] = set()

    def marker(self, what: str, dropped: Sequence[str]) -> tuple[str, list[str]]:
        """`fold_marker(what, …)` over the facts of `dropped` not visible yet, and those facts.

        A fact that is part of a longer word is listed as that word (`facts.whole_token`): the pod name
        `payments-api-7d9f8c6b5-16790`, not `16790`. Pass the facts to `commit()` once the marker is really
        used.
        """
        pairs = [pair for chunk in dropped for pair in facts.facts_in_words(chunk)]
        words: dict[str, str] = {}
        for fact, word in pairs:
            words.setdefault(fact, word)
        return self.marker_of(what, [fact for fact, _ in pairs], words)

    def marker_of(
        self, what: str, dropped_facts: Sequence[str], words: Mapping[str, str] | None = None
    ) -> tuple[str, list[str]]:
        """Like `marker()`, for facts the caller already found (and filtered) in the dropped content; `words`
        maps a fact to the whole word the marker lists for it."""
        fresh: dict[str, None] = {}
        for fact in dropped_facts:
            if fact not in self._listed and fact not in fresh and fact not in self._visible:
                fresh.setdefault(fact, None)
        listed = list(fresh)
        shown = listed if words is None else [words.get(fact, fact) for fact in listed]
        return facts.listing_marker(what, shown, limit_chars=NO_LIMIT), listed

    def commit(self, listed: Sequence[str]) -> None:
        """Record that a marker listing `listed` is in the output."""
        self._listed.update(listed)


def worth_folding(marker_text: str, dropped: Sequence[str], counted: dict[str, int] | None = None) -> bool:
    """True when `marker_text` is at most FOLD_RATIO of the dropped pieces' tokens.

    A long run is judged on a prefix first: when the marker is already small next to the first pieces
    (a few times its length), counting the whole run — often most of the input — cannot change the answer
    (token counts of joined pieces add up, give or take a token at each seam). `counted` keeps the markers'
    counts across the calls of one compressor: its markers repeat (`[trex: 4 unchanged lines]`).
    """
    if not dropped:
        return False
    # A marker whose bytes are few next to the words it replaces is worth it without counting either (joined
    # by line breaks, the last word of a piece and the first of the next may make one word). Joined by a
    # space, the pieces have exactly their words, counted in one call.
    words = tokens.at_least(" ".join(dropped)) - (len(dropped) - 1)
    if tokens.at_most(marker_text) <= FOLD_RATIO * words:
        return True
    # A marker is short: counting it is cheap, unlike the dropped pieces.
    marker_tokens = counted.get(marker_text) if counted is not None else None
    if marker_tokens is None:
        marker_tokens = count(marker_text)
        if counted is not None:
            counted[marker_text] = marker_tokens
    if marker_tokens <= FOLD_RATIO * words:
        return True  # the pieces have at least `words` tokens
    if len(dropped) > 8:
        size, k = 0, 0
        while k < len(dropped) and size < 4 * len(marker_text):
            size += len(dropped[k]) + 1
            k += 1
        if k < len(dropped) and _within(marker_tokens, "\n".join(dropped[:k]), k):
            return True
    return _within(marker_tokens, "\n".join(dropped), 0)


def _within(marker_tokens: int, text: str, seams: int) -> bool:
    """`marker_tokens <= FOLD_RATIO * (count(text) - seams)`, without encoding an ASCII `text` when its
    `pieces_at_least` (never above the count, and found in a fraction of an encode's time) is enough."""
    if text.isascii() and marker_tokens <= FOLD_RATIO * (pieces_at_least(text) - seams):
        return True
    return marker_tokens <= FOLD_RATIO * (count(text) - seams)


def pieces_at_least(text: str) -> int:
    """A number of tokens the ASCII `text` has at least, from the pieces tiktoken's pre-tokenizer cuts.

    o200k_base (and cl100k_base) cut text into pieces before merging, and each piece is one token or more. A
    piece holds letters of one run only, after one optional leading character (a contraction, `it's`, holds
    two runs: hence one run less for each apostrophe, in a contraction or not); digits in pieces of one to
    three that hold nothing else; punctuation in pieces of its own, except the one character a letter piece
    may lead with, and the slashes a piece takes after its line breaks. So each run of letters holds at
    least one piece (a CamelCase run holds two), each 3-digit piece of a run of digits is one, and each run
    of two or more punctuation characters not right after a line break holds at least one: their number is
    a lower bound.
    """
    data = text.encode()
    letter_runs = len(data.translate(_LETTER_RUNS).split()) - data.count(b"'")
    # A run of n digits is ceil(n / 3) pieces: the non-overlapping `000` in the run with `00` appended (the
    # runs joined by `00 `, counted in C instead of one generator step per number of a JSON document).
    digit_pieces = (b"00 ".join(data.translate(_DIGIT_RUNS).split()) + b"00").count(b"000")
    punctuation_runs = (b" " + data.translate(_PUNCTUATION_RUNS)).count(b" ..")
    return letter_runs + digit_pieces + punctuation_runs


def finish(
    original: str,
    text: str,
    strategy: str,
    removed: list[str],
    original_facts: Sequence[str] | None = None,
) -> Compressed | None:
    """`Compressed(text, …)` if `text` is a valid replacement for `original`, else None.

    Valid means: different, shorter (strictly fewer tokens, counted when the cut is small), and every fact
    of `original` present verbatim.
    `original_facts` (from `fact_list(original)`) saves recomputing them when a caller checks twice.
    """
    if text == original or len(text) >= len(original) or not text.strip():
        return None  # nothing left is never a replacement (providers also refuse an empty text block)
    # Counting both sides costs two full encodes. A cut of over a fifth of the characters has never come out
    # with as many tokens (our outputs are the input's own text minus parts, plus short markers), and the
    # pipeline measures the whole request afterwards and forwards the original if it did not shrink.
    if len(text) > COUNT_CHECK_SHARE * len(original) and count(text) >= count(original):
        return None
    if missing_facts(original, text, original_facts):
        return None
    return Compressed(text=text, strategy=strategy, removed=removed)


def fold_exact_repeats(lines: Sequence[str]) -> tuple[list[str], int]:
    """Consecutive identical non-blank lines folded to one line plus a count marker (lossless).

    Returns the new lines and how many lines were folded. Only runs of 3+ are folded: a marker costs more
    than a single repeat.
    """
    out: list[str] = []
    folded = 0
    i = 0
    while i < len(lines):
        j = i + 1
        while j < len(lines) and lines[j] == lines[i]:
            j += 1
        run = j - i
        out.append(lines[i])
        if run >= 3 and lines[i].strip():
            out.append(fold_marker(f"previous line repeated {run - 1} more times", ()))
            folded += run - 1
        else:
            out.extend(lines[i + 1 : j])
        i = j
    return out, folded
