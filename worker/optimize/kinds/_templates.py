"""Log templates: an entry's text with its varying values as slots, and which neighbouring entries fold.

An entry's template (`shape`) is its text with timestamps, short hex values, IP addresses, numbers and test
ids replaced by slots; ids stay text (`is_id`), so entries that differ in one never share a template.
Folding never reorders: `fold_pieces` takes runs of neighbouring entries, and the stretches between the
entries that stay. `summary` writes a template with what its folded entries hold in each slot.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass
from operator import attrgetter, itemgetter

import msgspec

from worker.optimize import facts
from worker.optimize.kinds._detect import LOG_PREFIX_RE

# Slots that turn an entry into its template, tried left to right at each position (a UUID before its hex
# parts, a timestamp before its numbers). Test ids (`tests/test_a.py::test_x PASSED`, `--- PASS: TestX`)
# make one template for all passing tests.
# A test id is tried only where a word starts (a match inside a word would have started at its beginning):
# tried at each position of a long word instead, `\S+::` cost the word's length at each of them.
_TEST_SLOT = r"(?P<test>(?<!\S)\S+::\S+|(?<=^--- PASS: )\S+|(?<=^ok  \t)\S+)|"
_VALUE_SLOTS = (
    r"(?P<uuid>\b[0-9a-fA-F]{8}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{4}-[0-9a-fA-F]{12}\b)"
    r"|(?P<ts>\d{4}[-/]\d{2}[-/]\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2})?(?:[.,]\d+)?(?:Z|[+-]\d{2}:?\d{2})?)?"
    r"|\b\d{1,2}/[A-Z][a-z]{2}/\d{4}(?::\d{2}:\d{2}:\d{2})?(?: [+-]\d{4})?"
    r"|\b\d{2}:\d{2}:\d{2}(?:[.,]\d+)?)"
    r"|(?P<ip>\b\d{1,3}(?:\.\d{1,3}){3}(?::\d+)?\b)"
    r"|(?P<hex>\b0x[0-9a-fA-F]+\b|\b(?=[0-9a-fA-F]*\d)(?=[0-9a-fA-F]*[a-fA-F])[0-9a-fA-F]{6,}\b)"
    r"|(?P<n>\d+(?:\.\d+)?)"
)
_SLOT_RE = re.compile(_TEST_SLOT + _VALUE_SLOTS, re.MULTILINE)
# Most entries hold no test id; `\S+::` retried at every position is most of the cost of the slot scan.
# Words starting with a letter past f step over in one match: no value slot starts with such a letter, nor
# inside a word (the hex and UUID slots need a word start; the rest start with a digit, where the step ends).
# So do the blanks and punctuation around them (no slot starts with a non-word character): one step covers
# `  INFO  http  GET /healthz ` instead of four, and fewer matches cost fewer turns of the Python loop.
_VALUE_SLOT_RE = re.compile(r"(?P<skip>(?:[g-zG-Z_][A-Za-z_]*|\W)+)|" + _VALUE_SLOTS, re.MULTILINE)
_BLANKS_RE = re.compile(r"[ \t]+")  # column padding that varies with the width of a number

_LISTED_VALUES = 3
"""A slot with at most this many distinct values in a folded group lists them all."""


class Shape(msgspec.Struct, frozen=True, gc=False):
    """An entry split into its template (`key`) and the values of its slots, in order. Not tracked by the
    cycle collector (`gc=False`): it holds strings and tuples of strings, so no cycle runs through it, and a
    log has hundreds of them (see `logs._Entry`)."""

    key: str
    parts: tuple[str, ...]
    """Literal text and slot values alternating, starting and ending with literal text."""
    kinds: tuple[str, ...]
    """The kind of each slot (`ts`, `n`, `hex`, …)."""


def shape(body: str) -> Shape:
    """The template of one entry and the values of its slots."""
    cuts, kinds = _cuts(body)
    parts = tuple(map(body.__getitem__, cuts))
    return Shape(_key(parts[::2], kinds), parts, kinds)


def shapes_of(bodies: list[str], forms: list[str | None], indices: Iterable[int]) -> dict[int, Shape]:
    """`shape(bodies[i])` for each of `indices`, with the slot scan done once per skeleton.

    A log repeats a few line skeletons with other numbers in them: every health check is the same line with
    another timestamp and latency. Where each slot is, of what kind, and which values are ids depend only on
    which characters are digits, not on which digits (no pattern here names a digit, but for `0x`), so
    entries with the same text once every ASCII digit is written `1` have their slots at the same places.
    The slot scan runs once per such skeleton (`forms`: each body's `skeleton`); entries holding `0x` are
    scanned on their own.
    """
    found: dict[int, Shape] = {}
    known: dict[str, tuple[Callable[[str], tuple[str, ...]], tuple[str, ...], str | None]] = {}
    for i in indices:
        body, form = bodies[i], forms[i]
        if form is None:
            found[i] = shape(body)
            continue
        seen = known.get(form)
        if seen is None:
            cuts, kinds = _cuts(body)
            literal = [form[cut] for cut in cuts[::2]]
            # The template text of a skeleton whose literal text holds no digit is every such entry's.
            shared = None if any("1" in text for text in literal) else _key(literal, kinds)
            # The parts of every entry of the skeleton, cut in one C call (a lone cut, no slot, is the body).
            pick: Callable[[str], tuple[str, ...]] = itemgetter(*cuts) if len(cuts) > 1 else _whole
            seen = known[form] = (pick, kinds, shared)
        cut, kinds, shared = seen
        parts = cut(body)
        found[i] = Shape(_key(parts[::2], kinds) if shared is None else shared, parts, kinds)
    return found


def _whole(body: str) -> tuple[str, ...]:
    return (body,)


def skeleton(body: str) -> str | None:
    """`body` with every ASCII digit written `1`, or None when it holds `0x`.

    The slot patterns here, the fact catalog (`facts`) and the incidental-value test of `logs` tell digits
    from other characters but never one digit from another, except in `0x`: texts with the same skeleton
    have their matches at the same places, of the same kinds.
    """
    return None if "0x" in body else facts.digit_skeleton(body)


def skeletons(text: str, bodies: list[str], starts: list[int], whole: str | None = None) -> list[str | None]:
    """`skeleton()` of each of `bodies`, which start at `starts` in `text`: one translation of the whole text
    (translating each body on its own cost forty times as much), or `whole`, that translation, if given."""
    if whole is None:
        whole = facts.digit_skeleton(text)
    return [
        None if "0x" in body else whole[start : start + len(body)]
        for body, start in zip(bodies, starts, strict=True)
    ]


def _cuts(body: str) -> tuple[tuple[slice, ...], tuple[str, ...]]:
    """Where `body` splits into literal text and slot values (alternating, literal first and last), and the
    kind of each slot."""
    cuts: list[slice] = []
    kinds: list[str] = []
    pos = 0
    maybe_test = "::" in body or "--- PASS: " in body or "ok  \t" in body
    for match in (_SLOT_RE if maybe_test else _VALUE_SLOT_RE).finditer(body):
        kind = match.lastgroup or "n"
        if kind == "skip":
            continue
        start, end = match.span()
        if is_id(body, kind, start, end):
            continue  # part of the template's text: entries with another id are another template
        cuts.append(slice(pos, start))
        cuts.append(slice(start, end))
        kinds.append(kind)
        pos = end
    cuts.append(slice(pos, None))
    return tuple(cuts), tuple(kinds)


def _key(literal: Sequence[str], kinds: tuple[str, ...]) -> str:
    """The template: the literal text between the slots with blank runs as one space, and the slots' kinds."""
    return _BLANKS_RE.sub(" ", "\x00".join(literal)) + "\x01" + " ".join(kinds)


# A leading word and the blanks after it (`dev        48213 …` in `ps` output: the number is the PID column).
_LEADING_WORD_RE = re.compile(r"[ \t]*[A-Za-z_][\w.-]*[ \t]+")
_LEADING_FIELD_CHARS = 64
_PID_LABELS = ("pid=", "pid:", "pid ", "pid: ")


def is_id(body: str, kind: str, start: int, end: int) -> bool:
    """The slot value at `start:end` identifies something (see the module docstring): never summarised."""
    if kind == "uuid":
        return True
    if kind == "hex":
        digits = end - start - (2 if body.startswith("0x", start) else 0)
        if digits >= 7:
            return True
    elif kind != "n":
        return False
    if start >= 2 and body[start - 1] == "[" and body[end : end + 1] == "]" and body[start - 2].isalnum():
        return True  # `sshd[1234]`
    if body[max(0, start - 5) : start].lower().endswith(_PID_LABELS):
        return True
    if start > _LEADING_FIELD_CHARS or LOG_PREFIX_RE.match(body):
        return False  # a log line starts with its timestamp or level: those vary, they are not ids
    prefix = body[:start]
    return not prefix.strip(" \t[(#") or _LEADING_WORD_RE.fullmatch(prefix) is not None


_PARTS = attrgetter("parts")


def summary(example: Shape, folded: list[Shape]) -> str:
    """The template of a group with each slot written as what the folded entries hold there.

    A slot every folded entry shares with the example shows that value; one other slot with at most
    `_LISTED_VALUES` distinct values lists them, `{a|b|c}`; the others show `{first … last}` for timestamps,
    `{min..max}` for numbers, or `{N distinct <kind>}`. Lists in two slots would suggest combinations of
    values that never occurred together (`{09|10}:{14|41}` for 09:14 and 10:41); ranges and counts describe
    each slot on its own.
    """
    out: list[str] = []
    # The folded entries share the example's template, so their parts line up: one column per part.
    columns = list(zip(*map(_PARTS, folded), strict=True)) or [() for _ in example.parts]
    slots = [list(dict.fromkeys(columns[2 * k + 1])) for k in range(len(example.kinds))]
    listable = [
        k
        for k, values in enumerate(slots)
        if values != [example.parts[2 * k + 1]] and len(values) <= _LISTED_VALUES
    ]
    for k, kind in enumerate(example.kinds):
        out.append(example.parts[2 * k])
        values = slots[k]
        if values == [example.parts[2 * k + 1]]:
            out.append(values[0])
        elif listable == [k]:
            out.append("{" + "|".join(values) + "}")
        elif kind == "ts":
            out.append(f"{{{folded[0].parts[2 * k + 1]} … {folded[-1].parts[2 * k + 1]}}}")
        elif kind == "n":
            low = min(values, key=float)
            high = max(values, key=float)
            out.append(f"{{{low}..{high}}}")
        else:
            out.append(f"{{{len(values)} distinct {kind}}}")
    out.append(example.parts[-1])
    return _BLANKS_RE.sub(" ", "".join(out)).replace("\n", " ↵ ")


_LONG_RUN = 8
"""In a stretch of several templates, a run of one template this long folds on its own (see `_pieces`)."""


@dataclass(frozen=True, slots=True)
class Piece:
    """Neighbouring entries folded under one marker: a run of one template, whose first entry stays as the
    example (`run`), or a stretch of several templates, all folded (a census of its templates)."""

    members: list[int]
    run: bool

    @property
    def dropped(self) -> list[int]:
        return self.members[1:] if self.run else self.members


def stretches(shapes: dict[int, Shape], count: int) -> list[list[int]]:
    """Maximal runs of neighbouring foldable entries (a pinned or blank entry, not in `shapes`, ends one)."""
    stretches: list[list[int]] = []
    current: list[int] = []
    for i in range(count):
        if i in shapes:
            current.append(i)
        elif current:
            stretches.append(current)
            current = []
    if current:
        stretches.append(current)
    return stretches


def fold_pieces(stretches: list[list[int]], shapes: dict[int, Shape], min_group: int) -> list[Piece]:
    """What may fold, in order. A stretch of one template is a run when it has `min_group` entries. In a
    stretch of several, runs of `_LONG_RUN` entries fold as runs (their example shows a real line) and the
    parts between them as a census, when at least `min_group` entries long and a template repeats in them
    (short runs fold in the census: interleaved output, a busy service's log, has few long runs)."""
    pieces: list[Piece] = []
    for stretch in stretches:
        runs: list[list[int]] = []
        for i in stretch:
            if runs and shapes[runs[-1][0]].key == shapes[i].key:
                runs[-1].append(i)
            else:
                runs.append([i])
        long_run = min_group if len(runs) == 1 else max(min_group, _LONG_RUN)
        mixed: list[int] = []
        for run in [*runs, []]:
            if len(run) >= long_run or not run:
                keys = {shapes[i].key for i in mixed}
                if len(mixed) >= min_group and len(keys) < len(mixed):
                    pieces.append(Piece(mixed, run=False))
                mixed = []
                if run:
                    pieces.append(Piece(run, run=True))
            else:
                mixed.extend(run)
    return pieces
