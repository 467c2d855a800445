"""Cross-turn dedup: content repeated from an earlier block becomes a reference to it.

Three cases, checked in this order for each block (conversation order, earliest reference wins):

1. Identical: the block's text, trailing whitespace normalised, equals an earlier block's and is at least
   `MIN_CHARS` long → `[trex: identical to the <role> content at <where>; omitted]`, where `<where>` is
   the earlier block's place in the request (`messages[4].content`; without one: its turn and block index).
2. Contains an earlier block: an earlier block (≥ `MIN_CHARS`) occurs in it as a contiguous substring → that
   occurrence becomes `[trex: repeated from the <role> content at <where>; omitted]`,
   the rest of the block stays byte for byte.
3. Edited copy: the block is ≥ 90 % line-identical to an earlier one (a test run repeated after a small
   fix) → a reference plus the changed lines, verbatim, each hunk headed `@@ line N`, so the facts in
   changed lines stay where they are. N counts lines of this block, which the marker says: in a tool output
   that is not a file's line number. (The pipeline never rewrites a file view this way: see
   `pipeline._verbatim`.)

Cases 2 and 3 may both apply; the shorter result wins. Nothing is ever replaced by something larger. Only
blocks left unchanged are indexed as references for cases 2 and 3 (a reader can see their full text); a
block identical to one that was itself rewritten gets that rewrite. Everything runs off hash maps: exact
texts, anchor lines (containment) and bottom-k line-hash sketches (edited copies), so the work is linear
in the total text size rather than quadratic in the number of blocks. A block is sketched only once some
block's line count comes within `NEAR_RATIO` of its own (no edited copy is possible otherwise): tool
outputs mostly differ in length, and most blocks are never sketched. Deterministic: line hashes are
CRC-32, never Python's salted `hash`.
"""

from __future__ import annotations

import heapq
import re
import zlib
from bisect import bisect_left, insort
from dataclasses import dataclass
from difflib import SequenceMatcher
from itertools import accumulate, compress
from operator import methodcaller
from typing import Literal, TypeVar

from .. import tokens

MIN_CHARS = 200
"""Shorter repeats are left alone (a reference would save next to nothing)."""
NEAR_RATIO = 0.9
"""Share of identical lines (of the longer version) for an edited copy."""
SKETCH_SIZE = 16
"""Line hashes per block sketch (bottom-k)."""
MAX_CANDIDATES = 16
"""Earlier blocks remembered per anchor line, prefix or sketch hash (the most recent are kept)."""
MIN_ANCHOR_CHARS = 3
PREFIX_CHARS = 48
"""Key length for finding one- and two-line blocks inside later blocks (at word starts)."""

# Where a repeated block may start inside a later one: the start, or after whitespace or an opening mark.
_BOUNDARY_AFTER = ">:=([{\"',;|"
_BOUNDARY_RE = re.compile(rf"(?:^|(?<=[\s{re.escape(_BOUNDARY_AFTER)}]))(?=\S)")
_DIRECT_PREFIX_KEYS = 32
"""Up to this many prefix keys, `_prefix_hits` searches for each key instead of walking the boundaries."""
_EDIT_LINES = round(1 / (1 - NEAR_RATIO))
"""Below this many lines, `NEAR_RATIO` of a block's lines are all of them (10 lines at 90 %)."""
_T = TypeVar("_T")

Kind = Literal["identical", "repeated", "edited"]


@dataclass(frozen=True, slots=True)
class Block:
    """One content block in conversation order: a tool result, file content, or message text."""

    index: int
    turn: int
    role: str
    text: str
    where: str = ""
    """Where the block is in the request (`messages[4].content`): what a marker points the model to."""


@dataclass(frozen=True, slots=True)
class Replacement:
    """A rewritten block: its new text, how it was rewritten, and the `Block.index` values it refers to."""

    text: str
    kind: Kind
    refs: tuple[int, ...]


def _where(block: Block) -> str:
    if block.where:
        return f"the {block.role} content at {block.where}"
    return f"the {block.role} content in turn {block.turn} (block {block.index})"


def identical_marker(block: Block) -> str:
    """The text that replaces a block identical to `block`."""
    return f"[trex: identical to {_where(block)}; omitted]"


def repeated_marker(block: Block) -> str:
    """The text that replaces an occurrence of `block`'s text inside a later block."""
    return f"[trex: repeated from {_where(block)}; omitted]"


def _lines(raw: list[str]) -> list[str]:
    """The lines of a text (`raw`: the text split at line breaks) with trailing whitespace stripped, without
    the trailing blank lines (one empty line if all are blank): what the line diff and the sketch compare.

    Joined by line breaks, they are the text normalised for the identical-block test: each line without its
    trailing whitespace, the text without its trailing blank lines (what `rstrip` takes off the end of the
    text is the trailing whitespace of its last non-blank line and the blank lines after it, which the lines
    stripped one by one lose too; tests/optimize/test_dedup.py compares the two ways). A block's text is
    split once, for this, containment (`_contained`) and the index (`_Index.add`)."""
    lines = list(map(str.rstrip, raw))
    while len(lines) > 1 and not lines[-1]:
        lines.pop()
    return lines


def _smaller(new: str, old: str) -> bool:
    """`new` has fewer tokens than `old`. A reference marker is short next to the block it replaces: when its
    bytes are fewer than the block's words (`tokens.at_most`, `tokens.at_least`), neither is encoded."""
    if len(new) >= len(old):
        return False
    return tokens.at_most(new) < tokens.at_least(old) or tokens.count(new) < tokens.count(old)


@dataclass(slots=True)
class _Indexed:
    """An unchanged earlier block, as cases 2 and 3 see it."""

    block: Block
    body: str
    """The raw text without surrounding whitespace (what containment looks for)."""
    shape: _Shape
    """Its normalised lines, for the line diff, and their sketch."""


class _Index:
    def __init__(self) -> None:
        self.items: list[_Indexed] = []
        self.anchors: dict[str, list[tuple[int, int]]] = {}
        """inner anchor line → (item, char offset of that line in the item's body)"""
        self.prefixes: dict[str, list[int]] = {}
        """first `PREFIX_CHARS` of the body → items (blocks without a usable inner line)"""
        self.sketches: dict[int, list[int]] = {}
        """sketch hash → items, for the first `sketched` items (see `votes`)"""
        self.sketched = 0
        self.sizes: list[int] = []
        """The items' line counts, sorted."""

    def add(self, block: Block, shape: _Shape, raw: list[str]) -> None:
        """Index `block`, whose normalised lines are `shape`'s (`raw`: its text split at line breaks)."""
        body = block.text.strip()
        if len(body) < MIN_CHARS:
            return
        item = len(self.items)
        self.items.append(_Indexed(block, body, shape))
        insort(self.sizes, len(shape.lines))
        # Containment anchor: the longest inner line, since an inner line of a contained block is a whole line
        # of the container; the first of the longest. Blocks of one or two lines (or without a usable inner
        # line) are found by prefix.
        # The body's lines are the text's from its first non-blank line (`first`) to its last (the last
        # normalised line), the first without its leading whitespace, the last without its trailing one: its
        # inner lines are the text's, whose non-blank widths are the normalised lines' (`shape.widths`).
        lines = shape.lines
        first = next(n for n, line in enumerate(lines) if line)  # there is one: the body is not empty
        last = len(lines) - 1
        k = 0
        if last - first >= 2:
            widths = shape.widths()[first + 1 : last]
            longest = max(widths)
            if longest >= MIN_ANCHOR_CHARS:
                k = 1 + widths.index(longest)
        if k:
            # The body's line k starts after the lines before it, the first of them stripped, and k breaks.
            offset = len(raw[first].lstrip()) + sum(map(len, raw[first + 1 : first + k])) + k
            _append(self.anchors.setdefault(raw[first + k], []), (item, offset))
        else:
            _append(self.prefixes.setdefault(body[:PREFIX_CHARS], []), item)

    def near(self, size: int) -> bool:
        """Some item could be edited into a block of `size` lines (see `_edited`): its line count is within
        `NEAR_RATIO` of `size`, and the two are not both under `_EDIT_LINES` (there, counts that near are
        equal, and `NEAR_RATIO` of the lines identical is all of them: an identical text, not an edit).

        The least count not below `NEAR_RATIO * size` (or `_EDIT_LINES`) is the one to test: a smaller one
        is too small, a larger one further above `size`."""
        low = NEAR_RATIO * size if size >= _EDIT_LINES else _EDIT_LINES
        at = bisect_left(self.sizes, low)
        return at < len(self.sizes) and min(self.sizes[at], size) >= NEAR_RATIO * max(self.sizes[at], size)

    def votes(self, sketch: list[int]) -> dict[int, int]:
        """How many hashes of `sketch` each item's sketch shares (items sharing none are left out).

        Items are sketched here, on the first vote after they were added, in the order they were added: each
        hash's bucket then holds the same items, in the same order, as if each had been sketched when added.
        """
        for item in range(self.sketched, len(self.items)):
            for h in self.items[item].shape.sketch():
                _append(self.sketches.setdefault(h, []), item)
        self.sketched = len(self.items)
        votes: dict[int, int] = {}
        for h in sketch:
            for item in self.sketches.get(h, ()):
                votes[item] = votes.get(item, 0) + 1
        return votes


def _append(bucket: list[_T], value: _T) -> None:
    """Remember `value`, forgetting the oldest entry past `MAX_CANDIDATES` (recent versions match best)."""
    if len(bucket) >= MAX_CANDIDATES:
        del bucket[0]
    bucket.append(value)


_UTF8 = methodcaller("encode", "utf-8", "surrogatepass")


def _widths(lines: list[str]) -> list[int]:
    """How many non-blank characters each line holds (`_sketch_and_widths` without the sketch)."""
    distinct = dict.fromkeys(lines)
    if len(distinct) * 2 <= len(lines):  # most lines repeat one (pretty JSON): each is measured once
        width = dict(zip(distinct, map(len, map(str.strip, distinct)), strict=True))
        return list(map(width.__getitem__, lines))
    return list(map(len, map(str.strip, lines)))


def _sketch(lines: list[str], joined: str | None = None) -> list[int]:
    """The smallest hashes of the lines with at least `MIN_ANCHOR_CHARS` non-blank characters (`joined`: the
    lines joined by line breaks, when the caller has them)."""
    return _sketch_and_widths(lines, joined)[0]


def _sketch_and_widths(lines: list[str], joined: str | None = None) -> tuple[list[int], list[int]]:
    """`_sketch(lines, joined)`, and how many non-blank characters each line holds (which the index reads).

    crc32, not hash(): the sketch must be the same in every process (same input, same bytes). Mapped, not
    looped: a block has thousands of lines, and every step here runs in C. The lines are encoded as one text
    and split: UTF-8 writes a line break as that one byte and no other character with it, so the pieces are
    each line's own bytes. The sketch is a set: where most lines repeat an earlier one, only the distinct
    lines are tested and hashed, each encoded on its own.
    """
    distinct = list(dict.fromkeys(lines))
    if len(distinct) * 2 <= len(lines):  # most lines repeat one (pretty JSON): each is looked at once
        width = dict(zip(distinct, map(len, map(str.strip, distinct)), strict=True))
        kept = compress(distinct, map(MIN_ANCHOR_CHARS.__le__, width.values()))
        sketch = heapq.nsmallest(SKETCH_SIZE, set(map(zlib.crc32, map(_UTF8, kept))))
        return sketch, list(map(width.__getitem__, lines))
    widths = list(map(len, map(str.strip, lines)))
    encoded = _UTF8("\n".join(lines) if joined is None else joined).split(b"\n")
    usable = compress(encoded, map(MIN_ANCHOR_CHARS.__le__, widths))
    return heapq.nsmallest(SKETCH_SIZE, set(map(zlib.crc32, usable))), widths


@dataclass(slots=True)
class _Shape:
    """A block's `_lines` and their `joined` text, with their widths and sketch (`_sketch_and_widths`)
    measured when first read: most blocks are never sketched (see the module docstring), and only indexed
    ones are measured."""

    lines: list[str]
    joined: str
    _widths: list[int] | None = None
    _sketch: list[int] | None = None

    def widths(self) -> list[int]:
        if self._widths is None:
            self._widths = _widths(self.lines)
        return self._widths

    def sketch(self) -> list[int]:
        if self._sketch is None:
            # Measures the widths again where `widths` did (a block indexed before any came near it): rare.
            self._sketch, self._widths = _sketch_and_widths(self.lines, self.joined)
        return self._sketch


def _prefix_hits(text: str, prefixes: dict[str, list[int]]) -> list[tuple[int, str]]:
    """(position, key) of every boundary of `text` (see `_BOUNDARY_RE`) where a prefix key starts, in order.

    With few keys, each is searched for directly (a C substring search per key) and its hits checked for a
    boundary; with many, the boundaries are walked and each looked up (linear in the text whatever the
    number of keys). Both give the same list.
    """
    if len(prefixes) > _DIRECT_PREFIX_KEYS:
        hits = []
        for match in _BOUNDARY_RE.finditer(text):
            at = match.start()
            key = text[at : at + PREFIX_CHARS]
            if key in prefixes:
                hits.append((at, key))
        return hits
    found: list[tuple[int, str]] = []
    for key in prefixes:  # a key starts with a non-blank: the body it comes from is stripped
        # A key shorter than PREFIX_CHARS is the slice at `at` only where it runs to the end of the text.
        short = len(key) < PREFIX_CHARS
        at = text.rfind(key) if short else text.find(key)
        while at >= 0:
            if (not short or at + len(key) == len(text)) and (
                at == 0 or text[at - 1] in _BOUNDARY_AFTER or text[at - 1].isspace()
            ):
                found.append((at, key))
            at = -1 if short else text.find(key, at + 1)
    found.sort()
    return found


def _contained(block: Block, index: _Index, lines: list[str]) -> Replacement | None:
    """Case 2: replace occurrences of earlier blocks inside this one (`lines`: its text split at line
    breaks)."""
    text = block.text
    found: dict[tuple[int, int], None] = {}
    budget = 4 * len(text) + 4 * MIN_CHARS  # verification work stays linear in the block size
    size = len(text.strip())

    def verify(item: int, at: int) -> bool:
        nonlocal budget
        body = index.items[item].body
        if at < 0 or len(body) > size or (at, item) in found:
            return True
        budget -= len(body)
        if budget < 0:
            return False
        if text.startswith(body, at):
            found[(at, item)] = None
        return True

    if not index.anchors.keys().isdisjoint(lines):  # most blocks hold no anchor line: no walk over them
        chars_before = [0, *accumulate(map(len, lines[:-1]))]  # a line starts after them and `number` breaks
        for number, line in enumerate(lines):
            for item, offset in index.anchors.get(line, ()):
                if not verify(item, chars_before[number] + number - offset):
                    break
            if budget < 0:
                break
    if index.prefixes and budget >= 0:
        for at, key in _prefix_hits(text, index.prefixes):
            for item in index.prefixes[key]:
                if not verify(item, at):
                    break
            if budget < 0:
                break
    if not found:
        return None
    # Longest first, then earliest position; occurrences may not overlap.
    chosen: list[tuple[int, int, int]] = []
    for at, item in sorted(found, key=lambda f: (-len(index.items[f[1]].body), f[0], f[1])):
        end = at + len(index.items[item].body)
        if all(end <= a or at >= b for a, b, _ in chosen):
            chosen.append((at, end, item))
    chosen.sort()
    parts: list[str] = []
    cursor = 0
    for at, end, item in chosen:
        parts.append(text[cursor:at])
        parts.append(repeated_marker(index.items[item].block))
        cursor = end
    parts.append(text[cursor:])
    refs = tuple(dict.fromkeys(index.items[item].block.index for _, _, item in chosen))
    return Replacement("".join(parts), "repeated", refs)


def _span(a: int, b: int) -> str:
    return f"line {a + 1}" if b - a == 1 else f"lines {a + 1}-{b}"


def _diff(a: list[str], b: list[str]) -> tuple[list[tuple[str, int, int, int, int]], int]:
    """Line diff opcodes of a → b (SequenceMatcher on what lies between the common head and tail), and the
    number of identical lines."""
    limit = min(len(a), len(b))
    head = 0
    while head < limit and a[head] == b[head]:
        head += 1
    tail = 0
    while tail < limit - head and a[len(a) - 1 - tail] == b[len(b) - 1 - tail]:
        tail += 1
    mid_a = a[head : len(a) - tail]
    mid_b = b[head : len(b) - tail]
    matcher = SequenceMatcher(None, mid_a, mid_b, autojunk=len(mid_b) > 2000)
    ops: list[tuple[str, int, int, int, int]] = [
        (tag, i1 + head, i2 + head, j1 + head, j2 + head) for tag, i1, i2, j1, j2 in matcher.get_opcodes()
    ]
    same = head + tail + sum(i2 - i1 for tag, i1, i2, _, _ in ops if tag == "equal")
    return ops, same


def _edited(block: Block, index: _Index, shape: _Shape) -> Replacement | None:
    """Case 3: a line diff against the most similar earlier block (`shape`: the block's)."""
    lines = shape.lines
    if not index.near(len(lines)):  # nothing to sketch: no earlier block could pass the line count test below
        return None
    sketch = shape.sketch()
    if not sketch:
        return None
    raw = block.text.rstrip().split("\n")
    votes = index.votes(sketch)
    # Most shared sketch hashes first, then the most recent earlier block (the closest version).
    ranked = sorted(votes, key=lambda item: (-votes[item], -item))[:2]
    best: Replacement | None = None
    for item in ranked:
        if votes[item] * 2 < len(sketch):
            break
        earlier = index.items[item]
        a = earlier.shape.lines
        if min(len(a), len(lines)) < NEAR_RATIO * max(len(a), len(lines)):
            continue
        ops, same = _diff(a, lines)
        if same < NEAR_RATIO * max(len(a), len(lines)) or same == len(a) == len(lines):
            continue
        out = [
            f"[trex: edited copy of {_where(earlier.block)}; unchanged lines omitted, "
            f"changed lines of this version below, numbered by line of this {earlier.block.role} content]"
        ]
        for tag, i1, i2, j1, j2 in ops:
            if tag == "replace":
                out.append(f"@@ line {j1 + 1} (replaces earlier {_span(i1, i2)})")
            elif tag == "insert":
                out.append(f"@@ line {j1 + 1} (added)")
            elif tag == "delete":
                out.append(f"@@ line {j1 + 1} (earlier {_span(i1, i2)} removed)")
            else:
                continue
            out.extend(raw[j1:j2])
        candidate = Replacement("\n".join(out), "edited", (earlier.block.index,))
        if best is None or len(candidate.text) < len(best.text):
            best = candidate
    return best


def dedupe_detailed(blocks: list[Block]) -> list[Replacement | None]:
    """Like `dedupe`, with the kind of each rewrite and the blocks it refers to."""
    results: list[Replacement | None] = []
    first: dict[str, int] = {}  # normalised text → position of its first block
    index = _Index()
    last = len(blocks) - 1
    for pos, block in enumerate(blocks):
        result: Replacement | None = None
        shape: _Shape | None = None  # set for the first block of each normalised text
        # Only an earlier block can be referred to: with none long enough so far, the last block is left
        # as it is without being looked at, and no block is indexed for a later one that does not exist.
        raw = block.text.split("\n") if pos < last or first else []
        lines = _lines(raw)
        norm = "\n".join(lines)  # the normalised text: no trailing whitespace on a line or at the end
        if len(norm) >= MIN_CHARS:
            seen = first.get(norm)
            if seen is not None:
                earlier = results[seen]
                if earlier is None:
                    result = Replacement(identical_marker(blocks[seen]), "identical", (blocks[seen].index,))
                else:
                    result = earlier  # the same rewrite, which refers to a block the reader can see
            else:
                first[norm] = pos
                shape = _Shape(lines, norm)
                if index.items:
                    found = (_contained(block, index, raw), _edited(block, index, shape))
                    options = [r for r in found if r is not None]
                    if options:
                        result = min(options, key=lambda r: len(r.text))
        if result is not None and not _smaller(result.text, block.text):
            result = None
        results.append(result)
        if result is None and pos < last and shape is not None:
            index.add(block, shape, raw)
    return results


def dedupe(blocks: list[Block]) -> list[str | None]:
    """For each block, its replacement text, or None if it stays as it is (see the module docstring)."""
    return [r.text if r is not None else None for r in dedupe_detailed(blocks)]
