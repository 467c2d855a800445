"""The optimizer: one pass over a request body that compacts what the task does not depend on.

Order of work, and what is never touched:
1. System prompts, instructions, tool definitions, tool-call arguments, images, files, documents and
   thinking are not segments at all (see `segments`); images and files are counted by estimate (`opaque`).
   Blocks with `cache_control` are pinned. The latest user turn is kept whole, and it is the query that
   relevance ranking uses; so is an assistant prefill ending the conversation (the model continues that
   exact text).
2. Cross-turn dedup (all modes but `off`): content repeated from an earlier turn becomes a reference.
3. Tool output, from the moment it arrives (the newest tool result is usually the largest and the one no
   provider has cached yet): compacted by content kind (`kinds`).
4. Prose older than the last `protect_recent_turns` turns: extractive narrative compaction (lossy modes);
   what the user typed is kept whole in `balanced` unless it is pasted material (`narrative`).

A change is kept only if it makes its block smaller, so the output is never larger than the input; the
same input always gives the same bytes (every step is deterministic).
"""

from __future__ import annotations

import re
import threading
import time
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any, NamedTuple

import msgspec

from .. import tokens
from . import profiles
from .base import Compressed, Context, Mode
from .commands import command_of, views_file
from .dedup import Block, dedupe_detailed
from .kinds import compress_tool_output, detect
from .narrative import compress_many
from .opaque import PAYLOAD_PART_TYPES, without_payloads
from .profiles import PROFILES
from .segments import Format, Segment, content_fields, extract, instructions

__all__ = ["PROFILES", "Options", "Removal", "Report", "measure", "optimize"]

_encoder = msgspec.json.Encoder()
# tiktoken releases the GIL while it encodes: a large input is counted on one of these threads while this one
# compacts it, so the count costs (almost) no time of its own. Small inputs are counted in line: handing them
# over would cost more than it saves.
_counting = ThreadPoolExecutor(2, thread_name_prefix="trex-count")
_COUNT_ALONGSIDE_CHARS = 16 * 1024
_COUNT_BY_PARTS_CHARS = 4 * tokens.REMEMBERED_MIN_CHARS
"""`measure` counts a request this large by parts: one of them may be long enough to be remembered."""
_START_WAIT_S = 0.002
"""How long this thread waits for the count to start before it compacts. A counting thread needs the GIL to
start; once this one is busy compacting, it gets it only at the interpreter's next forced switch (5 ms), and
the count then ran alongside little of the work. Waiting, this thread lets it in at once; with both counting
threads busy (other requests), it goes on after this much."""


@dataclass(frozen=True, slots=True)
class Options:
    """How to optimize one request."""

    mode: Mode = "balanced"
    protect_recent_turns: int = 2
    profile: str | None = None
    encoding: str = "o200k_base"
    frozen_items: int = 0
    """Leading conversation entries replayed from a session: read for context, never modified."""


@dataclass(frozen=True, slots=True)
class Removal:
    """One thing the optimizer removed or folded, and where."""

    where: str
    what: str


@dataclass(slots=True)
class Report:
    """What the optimizer did to one request."""

    mode: Mode
    original_tokens: int
    optimized_tokens: int
    time_ms: float
    applied_strategies: list[str] = field(default_factory=list)
    removed: list[Removal] = field(default_factory=list)
    technique: str = "auto"
    replayed_items: int = 0
    """Leading conversation entries replayed byte-for-byte from the session."""
    reoptimized: bool = False
    """True when the session's forwarded context passed its budget and was optimized afresh."""

    def note_session(self, replayed: int, reoptimized: bool) -> None:
        """Record what the session layer did, in the strategies the report lists."""
        self.replayed_items, self.reoptimized = replayed, reoptimized
        if reoptimized:
            self.applied_strategies.insert(0, "session_full_reoptimization")
        elif replayed:
            self.applied_strategies.insert(0, "session_prefix_replay")

    @property
    def saved_tokens(self) -> int:
        return self.original_tokens - self.optimized_tokens

    @property
    def compression_rate(self) -> float:
        """The share of input tokens removed (0.19 = 19 % fewer tokens)."""
        return round(self.saved_tokens / self.original_tokens, 4) if self.original_tokens else 0.0


def measure(fmt: Format, body: dict[str, Any], encoding: str = "o200k_base") -> int:
    """Input tokens of the billed content fields of `body` (compact JSON, as a provider receives them), with
    images and files counted by estimate (`opaque`)."""
    text, estimated = _billed(fmt, body)
    if len(text) < _COUNT_BY_PARTS_CHARS:
        return tokens.count(text, encoding) + estimated
    # Large: most of it is what the client sent before (system prompt, tools, earlier turns), counted by parts
    # so those come from the counts remembered (`tokens.count_joined`).
    parts, estimated = _billed_parts(fmt, body)
    return tokens.count_joined(parts, encoding) + estimated


# The billed text is counted in parts whose counts add up to the whole's: cut before the first key of each
# entry of a top-level list (a message, an input item, a tool) where the key opens with a letter, as compact
# JSON writes `{"role"…` (not before the request's first entry: a call to the encoder costs about as much as
# encoding 50 characters, and the few characters before it go with it). The pre-tokenizers of o200k_base
# and cl100k_base cut a text into pieces, each encoded on its own, so counts add up across a cut between two
# pieces, if each side alone is cut into the same pieces. The `{` before the cut (after `[` or `,`) can only
# be in a run of punctuation (a piece of letters may open with one such character, but a letter must follow
# it, not a quote); that run takes the quote along and ends at the letter. No piece before the cut looks
# past the quote but that run, which ends there alone as well; no piece after it looks back (neither pattern
# has a look-behind). tests/optimize/test_pipeline.py checks it on random JSON. The optimized request is
# then counted again from the same parts, encoding only those the optimizer changed. (A request counted on
# the counting thread, alongside the compaction, is counted in one call, the parts whose counts are not
# remembered joined: see `optimize`.) Any of the parts in order add up alike, each cut being of the same kind.
_LETTERS = frozenset("abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ")

_MAY_CARRY_PAYLOAD = re.compile(b'"type":"(?:' + b"|".join(t.encode() for t in PAYLOAD_PART_TYPES) + b')"')
"""The part types `opaque` takes payloads out of, as compact JSON writes them: most requests have none, and
are not walked for them."""


def _billed(fmt: Format, body: dict[str, Any]) -> tuple[str, int]:
    """The billed content fields as text without image and file payloads, and the estimate for those.

    In one encode: where no parts are needed (`measure`, the optimizer off), encoding message by message
    costs several times as much for a request of many short messages."""
    fields = {k: body[k] for k in content_fields(fmt) if k in body}
    data = _encoder.encode(fields)
    if _MAY_CARRY_PAYLOAD.search(data) is None:
        return data.decode(), 0
    fields, estimated = without_payloads(fields)
    return _encoder.encode(fields).decode(), estimated


def _billed_parts(fmt: Format, body: dict[str, Any]) -> tuple[list[str], int]:
    """`_billed(fmt, body)`, its text in parts (see above; one part when it carries payloads).

    Each value, and each entry of a list, is encoded alone, and looked at alone for payloads: a match of
    `_MAY_CARRY_PAYLOAD` holds no comma, so it never spans two of them.
    """
    fields = {k: body[k] for k in content_fields(fmt) if k in body}
    encode = _encoder.encode
    pieces: list[tuple[str, list[bytes] | bytes]] = []
    for key, value in fields.items():
        if type(value) is list and value:
            items = list(map(encode, value))
            if any(map(_MAY_CARRY_PAYLOAD.search, items)):
                break
            pieces.append((key, items))
        else:
            data = encode(value)
            if _MAY_CARRY_PAYLOAD.search(data) is not None:
                break
            pieces.append((key, data))
    else:
        return _joined(pieces), 0
    fields, estimated = without_payloads(fields)
    return [encode(fields).decode()], estimated


def _joined(pieces: list[tuple[str, list[bytes] | bytes]]) -> list[str]:
    """The compact JSON object of `pieces` (each key, with its encoded value or its encoded list entries), as
    `_encoder.encode` writes it, cut where `_billed_parts` says."""
    parts: list[str] = []
    part: list[str] = ["{"]
    for n, (key, value) in enumerate(pieces):
        part.append(f"{',' if n else ''}{_encoder.encode(key).decode()}:")
        if isinstance(value, bytes):
            part.append(value.decode())
            continue
        part.append("[")
        for m, data in enumerate(value):
            text = data.decode()
            if m:
                part.append(",")
            if (n or m) and text[2:3] in _LETTERS and text.startswith('{"'):
                part.append('{"')
                parts.append("".join(part))
                part = [text[2:]]
            else:
                part.append(text)
        part.append("]")
    part.append("}")
    parts.append("".join(part))
    return parts


def _count_parts(
    parts: list[str], encoding: str, counts: dict[str, int] | None = None
) -> tuple[int, dict[str, int]]:
    """The tokens of the text `parts` make up, and each distinct part's count (`counts`: those known)."""
    counts = {} if counts is None else counts
    total = 0
    for part in parts:
        known = counts.get(part)
        if known is None:
            known = counts[part] = tokens.count_remembered(part, encoding)
        total += known
    return total, counts


def _recount(fmt: Format, body: dict[str, Any], encoding: str, counts: dict[str, int]) -> int:
    """`measure(fmt, body, encoding)`, encoding only the parts (`_billed_parts`) not in `counts`."""
    parts, estimated = _billed_parts(fmt, body)
    return _count_parts(parts, encoding, counts)[0] + estimated


def optimize(fmt: Format, body: dict[str, Any], options: Options) -> Report:
    """Optimize `body` in place and report what changed."""
    started = time.perf_counter()
    if options.mode == "off":  # nothing changes: the count alone (what every request pays with it off)
        original = measure(fmt, body, options.encoding)
        return Report(
            mode="off", original_tokens=original, optimized_tokens=original, time_ms=_elapsed(started)
        )
    found = _find(fmt, body)
    if not found.candidates:  # e.g. a first turn: nothing the optimizer may change, the count in one call
        original = measure(fmt, body, options.encoding)
        return Report(
            mode=options.mode, original_tokens=original, optimized_tokens=original, time_ms=_elapsed(started)
        )
    billed, estimated = _billed_parts(fmt, body)  # taken before anything changes `body`
    pending: Future[int] | None = None
    parts: dict[str, int] | None = None
    # Only a large request may be counted alongside: a smaller one is counted here, by parts, each long part
    # looked up once (`tokens.count_remembered`), not looked up first to decide.
    known, original, unknown = (
        _split_remembered(billed, options.encoding)
        if sum(map(len, billed)) >= _COUNT_ALONGSIDE_CHARS
        else ({}, 0, [])
    )
    if sum(map(len, unknown)) >= _COUNT_ALONGSIDE_CHARS:
        # What is not remembered is counted in one call (the parts are cut so that any of them in order add
        # up): the counting thread holds the GIL only to start and to end it. Counted by parts, it would wait
        # for the GIL after each while this thread compacts (up to the interpreter's 5 ms switch interval
        # each time), and finish long after the compaction: with its longest part counted apart, to be
        # remembered, bench.optimizer's coding session took a fifth longer. Long parts are remembered when
        # forwarded unchanged, and when `measure` counts what the client sent (a session's next turn).
        running = threading.Event()
        pending = _counting.submit(_count_running, running, "".join(unknown), options.encoding)
        running.wait(_START_WAIT_S)
    else:
        original, parts = _count_parts(billed, options.encoding, known)
    original += estimated
    report = Report(mode=options.mode, original_tokens=original, optimized_tokens=original, time_ms=0.0)
    undo: list[tuple[Segment, str]] = []
    optimized = 0
    try:
        _compact(found, options, report, undo)
        if undo and parts is None:  # counted alongside: the request as forwarded, by parts (`count_joined`)
            # Counted before the counting thread's result is asked for: a thread done encoding needs the GIL
            # back to return its count, and gets it while this one encodes (tiktoken lets it go), instead of
            # being woken for it, and waking this one in turn, once this one waits.
            forwarded, estimated = _billed_parts(fmt, body)
            optimized = tokens.count_joined(forwarded, options.encoding) + estimated
    finally:
        if pending is not None:
            original = report.original_tokens = report.optimized_tokens = original + pending.result()
    if undo:
        if parts is not None:
            optimized = _recount(fmt, body, options.encoding, parts)
        if optimized >= original:  # shorter text is almost always fewer tokens; if not, forward the original
            for seg, old in reversed(undo):
                seg.set(old)
            report.removed.clear()
        else:
            report.optimized_tokens = optimized
    if report.removed:  # else the list it was made with, empty
        report.applied_strategies = list(dict.fromkeys(r.what.split(":", 1)[0] for r in report.removed))
    report.time_ms = _elapsed(started)
    return report


def _split_remembered(parts: list[str], encoding: str) -> tuple[dict[str, int], int, list[str]]:
    """The long parts whose counts are remembered (`tokens.remembered`) with their counts, the sum of those
    counts over `parts`, and the other parts in order."""
    known: dict[str, int] = {}
    if not any(len(part) >= tokens.REMEMBERED_MIN_CHARS for part in parts):
        return known, 0, parts
    total = 0
    unknown: list[str] = []
    for part in parts:
        n = known.get(part)
        if n is None and len(part) >= tokens.REMEMBERED_MIN_CHARS:
            n = tokens.remembered(part, encoding)
            if n is not None:
                known[part] = n
        if n is None:
            unknown.append(part)
        else:
            total += n
    return known, total, unknown


def _count_running(running: threading.Event, text: str, encoding: str) -> int:
    """`tokens.count(text, encoding)`, on a counting thread that first tells `running` it has started."""
    running.set()
    return tokens.count(text, encoding)


class _Found(NamedTuple):
    """A request's segments, as the optimizer sees them before changing anything."""

    turns: int
    typed: list[Segment]
    """What a person wrote (user text that is not an agent's instructions)."""
    latest_user_turn: int
    candidates: list[Segment]
    """What the optimizer may change: not pinned, not the latest user turn, not a prefill."""


def _find(fmt: Format, body: dict[str, Any]) -> _Found:
    segments, turns = extract(fmt, body)
    typed = [s for s in segments if s.kind == "user" and not instructions(s.text)]  # what a person wrote
    latest_user_turn = max((s.turn for s in typed), default=-1)
    # A conversation ending with the model's own turn is a prefill: the model continues that exact text.
    prefill = turns - 1 if any(s.kind == "assistant" and s.turn == turns - 1 for s in segments) else -2
    candidates = [s for s in segments if not s.pinned and s.turn not in (latest_user_turn, prefill)]
    return _Found(turns, typed, latest_user_turn, candidates)


def _compact(found: _Found, options: Options, report: Report, undo: list[tuple[Segment, str]]) -> None:
    """Dedup, tool output by kind, older prose: every change applied to the request's body (through its
    segments) and noted in `undo`."""
    turns, typed, latest_user_turn, candidates = found
    query = "\n".join(s.text for s in typed if s.turn == latest_user_turn)
    ctx = Context(mode=options.mode, query=query, profile=options.profile)
    frozen = {id(s) for s in candidates if s.item < options.frozen_items}
    prose_horizon = turns - options.protect_recent_turns

    # Dedup covers tool output of any age and prose outside the protected recent turns. A block that another
    # one now refers to stays exactly as it is, so every reference keeps pointing at real text.
    dedupable = [s for s in candidates if s.kind == "tool_result" or s.turn < prose_horizon]
    blocks = [Block(i, s.turn, s.kind, s.text, s.where) for i, s in enumerate(dedupable)]
    done: set[int] = set()
    for seg, rep in zip(dedupable, dedupe_detailed(blocks), strict=True):
        if (
            rep is not None
            and id(seg) not in frozen
            and (rep.kind == "identical" or not _verbatim(seg, options.profile))
        ):
            _apply(seg, Compressed(rep.text, "cross_turn_dedup", [f"{rep.kind} content"]), report, undo)
            done.add(id(seg))
            done.update(id(dedupable[r]) for r in rep.refs)
    rest = [s for s in candidates if id(s) not in done and id(s) not in frozen]
    for seg in rest:
        if seg.kind == "tool_result":
            result = compress_tool_output(seg.text, ctx, seg.tool, command_of(seg.args))
            if result is not None:
                _apply(seg, result, report, undo)
    if options.mode not in ("safe", "off"):
        # Older prose is ranked as one text, so many short turns of small talk can go together. What the user
        # typed is their instructions, compacted only as `narrative` allows.
        prose = [s for s in rest if s.kind != "tool_result" and s.turn < prose_horizon]
        results = compress_many([s.text for s in prose], ctx, [s.kind == "user" for s in prose])
        for seg, prose_result in zip(prose, results, strict=True):
            if prose_result is not None:
                _apply(seg, prose_result, report, undo)


def _verbatim(seg: Segment, profile: str | None) -> bool:
    """A file view (the agent's read tool, numbered lines or source code by content, or a shell command
    that only prints files): the agent's current view of a file, which it quotes back exactly in its edits.
    An identical later view may point to it, but a changed one is never turned into a patch against the
    older view (the agent would have to apply it in its head before quoting a line, and count lines of a
    tool output where it needs the file's)."""
    if seg.kind != "tool_result":
        return False
    if profiles.role(profile, seg.tool) == "read":
        return True
    command = command_of(seg.args)
    return (command is not None and views_file(command)) or detect(seg.text) == "code"


def _apply(seg: Segment, result: Compressed, report: Report, undo: list[tuple[Segment, str]]) -> None:
    """Replace the segment's text if the result is shorter (and not empty); remember the old text to undo."""
    if len(result.text) >= len(seg.text) or not result.text.strip():
        return
    undo.append((seg, seg.text))
    seg.set(result.text)
    notes = result.removed or ["compacted"]
    report.removed.extend(Removal(seg.where, f"{result.strategy}: {note}") for note in notes)


def _elapsed(started: float) -> float:
    return round((time.perf_counter() - started) * 1000, 3)
