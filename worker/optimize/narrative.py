"""Extractive narrative compaction for prose: older conversation turns, long documents, support threads.

Nothing is paraphrased. The text is cut into units (`prose_units`) — sentences, markdown bullets and
headings, speaker labels ("Agent:"), and verbatim blocks (fenced or indented code, tables, code-like
paragraphs) — each a byte span of the input. Verbatim blocks are always kept whole. Every sentence or bullet
with a constraint (`facts.is_constraint`) or a fact (`facts.has_fact`) is kept. The rest are ranked by a
score (fact density, constraint and conclusion cues, BM25 relevance to the latest user request, position,
minus a penalty for pleasantries, hedging and filler) and the best are kept until the kept prose is about
50 % (`balanced`) or 30 % (`aggressive`) of the prose tokens. Kept units are byte-identical and keep their
original separators; each run of dropped units becomes one `facts.marker(...)`, which lists any fact the
run contained.

`safe` drops nothing (narrative compaction is lossy), so it, `off`, and texts under ~120 tokens return None.
`compress_many` does the same for several blocks at once (the older turns of a conversation): one ranking
and one budget over all of them, so turns too short to compact alone still lose their small talk.

Text the user typed (`typed`) is instructions, not narrative: an older request ("Put the handler next to
the capture handler. The request body takes an order id and an amount.") is what the agent's later work is
checked against. `balanced` keeps it whole, unless it is longer than `PASTED_TOKENS` (pasted material:
notes, a document, a transcript); `aggressive` compacts it too. Where typed text is compacted, every
directive (`directives.is_directive`: an imperative sentence, "please", "I'd like", "could you" …) is kept
like a constraint.
Courtesy formulas whose only constraint word constrains nothing ("don't hesitate to ask", "how frustrating
this must be") are not treated as constraints (`is_hard_constraint`).
"""

from __future__ import annotations

import math
import re
from collections import Counter
from collections.abc import Callable, Sequence
from itertools import compress as pick
from itertools import repeat
from operator import methodcaller

from .. import tokens
from . import facts
from .base import Compressed, Context
from .bm25 import BM25, tokenize
from .directives import is_directive
from .prose_units import Unit, is_hard_constraint, split_units

STRATEGY = "narrative"
MIN_TOKENS = 120
"""Texts shorter than this are not worth compacting."""
KEEP_RATIO = {"balanced": 0.5, "aggressive": 0.3}
"""The share of prose tokens kept (facts and constraints count towards it, and are kept even beyond it)."""
FLOOR_RATIO = {"balanced": 0.2, "aggressive": 0.08}
"""The best-scoring optional prose kept even when facts and constraints alone exceed the target."""
PASTED_TOKENS = 1000
"""A typed text at least this long is taken for pasted material, which `balanced` compacts (see above)."""

# --- scoring cues ----------------------------------------------------------------------------------------


# The cue patterns below are lowercase and match `text.lower()`: the same as re.IGNORECASE, about three
# times faster (an ignore-case alternation has no literal prefix for the engine to skip ahead with).

_CONCLUSION_RE = facts.gated_words(
    r"therefore|thus|hence|in summary|to summari[sz]e|in conclusion|conclusions?|the fix|"
    r"fix(?:ed)? (?:is|was|by)|root cause|decided|decision|we will|we'll|results?|resulted|answer|"
    r"the solution|resolved|outcome|takeaways?|next steps?|action items?|owns|owner|assigned to|"
    r"responsible for"
)
# Weaker cues: "So, …", "…, so we …", "agreed".
# (The look-ahead admits what each alternative starts with — `s` of `^so`, the punctuation, the `a` of
# "agreed" — so that other positions fail at once.)
_SO_RE = re.compile(r"(?=[s,;:a])(?:(?:^|[,;:]\s*)so\b|\bagreed\b)")
# Pleasantries, small talk and conversational filler.
_FILLER_RE = facts.gated_words(
    r"i think|i guess|i believe|i feel like|i hope|i'm not sure|i am not sure|it seems|let me|let's see|"
    r"(?<!make )(?<!be )sure|of course|happy to help|glad to help|happy to|glad to|as (?:i )?mentioned|"
    r"as (?:we )?discussed|as noted|great question|good question|thanks|thank you|no problem|no worries|"
    r"absolutely|certainly|basically|actually|honestly|kind of|sort of|you know|i mean|"
    r"hope (?:this|that) helps|feel free|(?:don't|do not) hesitate|apologi[sz]e|sorry|hi|hello|hey|"
    r"good (?:morning|afternoon|evening)|have a (?:great|nice|good|wonderful)|okay|ok|alright|awesome|"
    r"perfect|wonderful|great|maybe|perhaps|probably|just wanted|appreciate|bear with me|bearing with me|"
    r"one moment|hang on|hold on|quick question|just checking|circling back|touching base|"
    r"(?:you're|you are) (?:very |most |so )?welcome|my pleasure|a pleasure|oh no|goodbye|bye|cheers"
)
# Vague or hedging wording: a milder penalty.
_VAGUE_RE = facts.gated_words(
    r"in general|generally|overall|a lot|lots of|somewhat|reasonably|quite|a bit|a fair amount|"
    r"at some point|pretty|various|really|totally|completely|definitely|in theory|more or less|"
    r"for the most part|some time|a while|it is worth|it's worth|a few|many|several|"
    r"not (?:entirely |completely |really )?(?:clear|sure)"
)
# Capitalised words past the first: names, products, places — specifics rather than narrative.
_ENTITY_RE = re.compile(r"(?<=[\s,(/])[A-Z][A-Za-z0-9]+")
# Requests that bind like constraints without `facts.is_constraint`'s words: ranked as high, not mandatory.
_REQUEST_RE = re.compile(r"\b(?:make sure|ensure|be sure to|guarantee)\b")
MIN_SCORE = 1.0
"""Optional prose scoring below this is not kept even when the budget has room."""

# Unit kinds: verbatim blocks are always kept; prose units are selected; labels and headings follow them.
_VERBATIM = frozenset({"code", "raw"})
_PROSE = frozenset({"sentence", "bullet"})


# --- scoring ---------------------------------------------------------------------------------------------


def score_sentences(
    units: Sequence[str],
    query: str = "",
    counts: Sequence[int] | None = None,
    cues: Sequence[str] | None = None,
) -> list[float]:
    """Content scores of `units` (higher = keep first), without the positional boosts.

    `counts` are the units' token counts (computed if omitted); `cues[i]` is extra text whose conclusion
    cues also count for unit i (its speaker or list label, e.g. "Action items:").
    """
    counts = list(counts) if counts is not None else [tokens.count(u) for u in units]
    fact_counts = [facts.fact_count(u) for u in units]
    constraints = [is_hard_constraint(u) for u in units]
    return _scores(units, query, counts, fact_counts, constraints, cues)


def _scores(
    units: Sequence[str],
    query: str,
    counts: Sequence[int],
    fact_counts: Sequence[int],
    constraints: Sequence[bool],
    cues: Sequence[str] | None,
    needed: Sequence[bool] | None = None,
) -> list[float]:
    """`score_sentences`; with `needed`, units whose score is not needed get 0.0 and skip the cue scans.

    Every unit still counts towards the ranking statistics (BM25 and topicality normalise over all of them),
    so the scores of the needed units are exactly what they would be without `needed`.
    """
    terms_of = {u: tokenize(u) for u in dict.fromkeys(units)}  # a repeated unit is tokenized once
    docs = list(map(terms_of.__getitem__, units))
    relevance = [0.0] * len(units)
    query_terms = tokenize(query) if query else []
    if query_terms and units:
        raw = BM25(docs).scores(query_terms)
        top = max(raw)
        if top > 0:
            relevance = [r / top for r in raw]
    # Topicality: terms shared with other units mark what the text is about.
    df: dict[str, int] = {}
    unique_of = {u: list(dict.fromkeys(terms)) for u, terms in terms_of.items()}
    for u, times in Counter(units).items():  # a repeated unit adds its terms as often as it occurs
        for term in unique_of[u]:
            df[term] = df.get(term, 0) + times
    log, df_of = math.log, df.__getitem__
    topic_of = {
        u: sum(map(log, map(df_of, terms))) / math.sqrt(len(terms) + 2) for u, terms in unique_of.items()
    }
    top_topic = max(topic_of.values(), default=0.0)
    out: list[float] = []
    # A unit's score depends on its text, cue, counts and constraint flag alone (the statistics above are
    # shared): a repeated unit is scored once.
    scored: dict[tuple[str, str, int, int, bool], float] = {}
    labels = cues if cues is not None else repeat("")
    wanted = needed if needed is not None else repeat(True)
    for unit, label, unit_count, unit_facts, constraint, want, rel in zip(
        units, labels, counts, fact_counts, constraints, wanted, relevance, strict=False
    ):
        if not want:
            out.append(0.0)
            continue
        key = (unit, label, unit_count, unit_facts, constraint)
        known = scored.get(key)
        if known is not None:
            out.append(known)
            continue
        low = unit.lower()
        cue = f"{label.lower()} {low}" if label else low
        density = unit_facts / max(unit_count, 1)
        score = 4.0 * min(1.0, density * 4.0)
        if constraint or _REQUEST_RE.search(low):
            score += 3.0
        if _CONCLUSION_RE.search(cue):
            score += 2.0
        elif _SO_RE.search(low):
            score += 1.0
        score += 3.0 * rel
        score += min(1.0, len(unique_of[unit]) / 10.0)
        score += topic_of[unit] / top_topic if top_topic > 0 else 0.0
        score += 0.25 * min(3, len(_ENTITY_RE.findall(unit)))
        score -= 1.5 * min(2, len(_FILLER_RE.findall(low)))
        score -= 0.5 * min(3, len(_VAGUE_RE.findall(low)))
        scored[key] = score
        out.append(score)
    return out


class _Counts(dict[str, int]):
    """Token counts of one request's texts, each distinct text encoded once: sentences, turns and markers
    repeat (a one-sentence turn is its own sentence; a turn dropped whole becomes its marker)."""

    def __missing__(self, text: str) -> int:
        count = self[text] = tokens.count(text)
        return count


def _memo(memo: dict[str, bool], text: str, test: Callable[[str], bool]) -> bool:
    """`test(text)`, computed once per distinct text in `memo`."""
    known = memo.get(text)
    if known is None:
        known = memo[text] = test(text)
    return known


# --- compression -----------------------------------------------------------------------------------------


def _plural(n: int) -> str:
    return f"{n} sentence" if n == 1 else f"{n} sentences"


def _select(
    docs: Sequence[tuple[str, list[Unit]]], ctx: Context, typed: Sequence[bool], counted: _Counts
) -> tuple[list[list[bool]], list[list[bool]]]:
    """Which units of each text to keep, ranked and budgeted over all the texts together; and which units
    were found to hold no fact (their markers need not scan them again). The directives of `typed` texts
    are kept like constraints."""
    keeps: list[list[bool]] = []
    fact_free: list[list[bool]] = []
    prose: list[tuple[int, int]] = []  # (text, unit) of each prose unit, in order
    texts: list[str] = []
    cues: list[str] = []
    firsts: list[bool] = []
    for d, (text, units) in enumerate(docs):
        keeps.append([u.kind in _VERBATIM for u in units])
        fact_free.append([False] * len(units))
        labels = {u.group: text[u.start : u.end] for u in units if u.kind == "label"}
        for i, u in enumerate(units):
            if u.kind in _PROSE:
                prose.append((d, i))
                texts.append(text[u.start : u.end])
                cues.append(labels.get(u.group, ""))
                firsts.append(u.first)
    if not prose:
        return keeps, fact_free
    # A conversation repeats itself (greetings, sign-offs, boilerplate pasted twice): each distinct unit is
    # counted and scanned once.
    distinct = {t: (counted[t], facts.fact_count(t), is_hard_constraint(t)) for t in dict.fromkeys(texts)}
    counts, fact_counts, constraints = map(list, zip(*map(distinct.__getitem__, texts), strict=True))
    for (d, i), f in zip(prose, fact_counts, strict=True):
        fact_free[d][i] = f == 0
    directives: dict[str, bool] = {}
    mandatory = [
        c or f > 0 or (typed[d] and _memo(directives, t, is_directive))
        for c, f, (d, _), t in zip(constraints, fact_counts, prose, texts, strict=True)
    ]
    # Mandatory units are kept whatever they score: only the optional ones are ranked.
    content = _scores(texts, ctx.query, counts, fact_counts, constraints, cues, [not m for m in mandatory])
    scores = [score + 0.5 if first else score for score, first in zip(content, firsts, strict=True)]
    for k in {d: k for k, (d, _) in enumerate(prose)}.values():
        scores[k] += 0.5  # the closing sentence of a text
    for (d, i), m in zip(prose, mandatory, strict=True):
        if m:
            keeps[d][i] = True
    # The budget counts the markers too: a kept sentence inside a dropped run splits it (one marker more),
    # one that fills the only gap between kept units removes one. Labels and headings follow later.
    seqs = [[i for i, u in enumerate(units) if u.kind in _PROSE or u.kind in _VERBATIM] for _, units in docs]
    where = [{i: p for p, i in enumerate(seq)} for seq in seqs]
    mcost = counted[facts.marker("omitted 10 sentences")] + 1
    markers = sum(
        1
        for d, seq in enumerate(seqs)
        for p, i in enumerate(seq)
        if not keeps[d][i] and (p == 0 or keeps[d][seq[p - 1]])
    )
    total = sum(counts)
    mandatory_tokens = sum(pick(counts, mandatory))
    optional_tokens = total - mandatory_tokens
    budget = max(
        KEEP_RATIO[ctx.mode] * total - mandatory_tokens - markers * mcost,
        FLOOR_RATIO[ctx.mode] * optional_tokens,
    )
    used = 0
    # Best score first, ties in text order (a stable sort in reverse keeps equal keys in their order).
    ranked = [k for k, m in enumerate(mandatory) if not m and content[k] >= MIN_SCORE]
    for k in sorted(ranked, key=scores.__getitem__, reverse=True):
        d, i = prose[k]
        seq, keep = seqs[d], keeps[d]
        p = where[d][i]
        dropped_left = p > 0 and not keep[seq[p - 1]]
        dropped_right = p + 1 < len(seq) and not keep[seq[p + 1]]
        cost = counts[k] + mcost * (
            1 if dropped_left and dropped_right else 0 if dropped_left or dropped_right else -1
        )
        if used + cost <= budget:
            keep[i] = True
            used += cost
    for (_, units), keep in zip(docs, keeps, strict=True):
        _follow(units, keep)
    return keeps, fact_free


def _follow(units: list[Unit], keep: list[bool]) -> None:
    """Labels follow their speaker turn, headings their section."""
    followers = [i for i, u in enumerate(units) if u.kind == "label" or u.kind == "heading"]
    if not followers:
        return  # plain prose (most texts): nothing follows anything
    kept_groups = {u.group for u, k in zip(units, keep, strict=True) if k and u.kind != "label"}
    section_units: dict[int, bool] = {}
    for u, k in zip(units, keep, strict=True):
        if u.kind != "heading":
            section_units[u.section] = section_units.get(u.section, False) or k
    for i in followers:
        u = units[i]
        if u.kind == "label":
            keep[i] = u.group in kept_groups
        else:
            keep[i] = section_units.get(u.section, True)


def _runs(keep: list[bool]) -> list[tuple[int, int]]:
    """The [start, end) of each run of False in `keep` (each bound found by a search in C)."""
    runs: list[tuple[int, int]] = []
    n = len(keep)
    i = 0
    while i < n:
        try:
            i = keep.index(False, i)
        except ValueError:
            break
        try:
            j = keep.index(True, i)
        except ValueError:
            j = n
        runs.append((i, j))
        i = j
    return runs


def _run_marker(
    text: str, units: list[Unit], a: int, b: int, fact_free: list[bool], count: int
) -> str | None:
    """The marker for dropped units a..b (`count` of them not labels), or None if it could not list all their
    facts."""
    found = [
        pair
        for k in range(a, b)
        if not fact_free[k]
        for pair in facts.facts_in_words(text[units[k].start : units[k].end])
    ]
    marker = facts.listing_marker(f"omitted {_plural(count)}", [word for _, word in found])
    listed = marker[marker.find("; facts kept: ") :]
    if any(fact not in listed for fact, _ in found):
        return None
    return marker


def _words_at_least(text: str) -> int:
    """A lower bound of `tokens.at_least(text)`, so of the tokens of `text` and of any text it begins, in a
    few passes in C.

    `at_least` counts the runs between spaces and tabs that hold more than whitespace, word by word in
    Python. Each such run holds one whitespace-separated word (`str.split`) or more, and only another
    whitespace character (a line break, mostly) puts a second one in it: the words less those characters.
    """
    words = text.split()
    other_space = len(text) - len("".join(words)) - text.count(" ") - text.count("\t")
    return len(words) - other_space


_line_breaks = methodcaller("count", "\n")


def _render(
    text: str, units: list[Unit], keep: list[bool], before: int, fact_free: list[bool], counted: _Counts
) -> Compressed | None:
    """The kept units with their separators, each dropped run replaced by one marker; None if no smaller."""
    # A run whose marker costs as much as the run itself is kept instead. The marker is counted (most read
    # "omitted 1 sentence"), the run only where its words do not outnumber that.
    markers: list[tuple[int, int, str, int]] = []  # (first unit, end unit, marker, sentences) of each run
    kinds = [u.kind for u in units]
    for a, b in _runs(keep):
        count = b - a - kinds[a:b].count("label")
        marker = _run_marker(text, units, a, b, fact_free, count)
        if marker is not None:
            cost = counted[marker]
            start, end = units[a].start, units[b - 1].end
            # The bound of a prefix bounds the run too: a dozen characters per token of the marker are enough.
            words = _words_at_least(text[start : min(end, start + 12 * cost)])
            if cost < words or cost < tokens.count(text[start:end]):
                markers.append((a, b, marker, count))
                continue
        keep[a:b] = [True] * (b - a)
    if not markers:
        return None
    # Each stretch of kept units is copied with its separators in one slice.
    out: list[str] = [text[: units[0].start]]
    dropped_units = 0
    kept_from = 0  # the first unit of the kept stretch before the next run
    n = len(units)
    for a, b, marker, count in markers:
        if a > kept_from:
            out.append(text[units[kept_from].start : units[a].start])
        out.append(marker)
        dropped_units += count
        # The separator after the run: the widest break inside it or after it (keeps paragraph breaks).
        if b == n:
            out.append(text[units[-1].end :])
        else:
            gaps = [text[units[k].end : units[k + 1].start] for k in range(a, b)]
            out.append(max(reversed(gaps), key=_line_breaks))
        kept_from = b
    if kept_from < n:
        out.append(text[units[kept_from].start :])
    result = "".join(out)
    after = counted[result]
    if after >= before:
        return None
    note = (
        f"{_plural(dropped_units)} of low-signal narrative in {len(markers)} spans ({before - after} tokens)"
    )
    return Compressed(result, STRATEGY, [note])


def compress_many(
    texts: Sequence[str], ctx: Context, typed: Sequence[bool] | None = None
) -> list[Compressed | None]:
    """Compact several prose blocks (e.g. the older turns of one conversation) as one text.

    Ranking (BM25, topicality) and the keep budget span all the blocks, so short turns of small talk can go
    even though each alone is under `MIN_TOKENS`; the `MIN_TOKENS` floor applies to their total. Each block
    is rewritten on its own (markers never span blocks); None for blocks left as they are. `typed[i]` marks
    a block the user typed (see the module docstring).
    """
    if ctx.mode not in KEEP_RATIO or not texts:
        return [None] * len(texts)
    marks = list(typed) if typed is not None else [False] * len(texts)
    # Typed text below the pasted-material size is the user's instructions: balanced leaves it out entirely
    # (not even ranked alongside the rest, nor counted when it is too short to reach that size).
    open_typed = ctx.mode == "aggressive"
    counted = _Counts()
    befores: dict[int, int] = {}
    chosen: list[int] = []
    for i, text in enumerate(texts):
        if marks[i] and not open_typed and tokens.at_most(text) < PASTED_TOKENS:
            continue
        befores[i] = counted[text]
        if not marks[i] or open_typed or befores[i] >= PASTED_TOKENS:
            chosen.append(i)
    out: list[Compressed | None] = [None] * len(texts)
    if sum(befores[i] for i in chosen) < MIN_TOKENS:
        return out
    docs = [(texts[i], split_units(texts[i])) for i in chosen]
    keeps, fact_free = _select(docs, ctx, [marks[i] for i in chosen], counted)
    for i, (text, units), keep, free in zip(chosen, docs, keeps, fact_free, strict=True):
        out[i] = _render(text, units, keep, befores[i], free, counted) if units else None
    return out


def compress(text: str, ctx: Context) -> Compressed | None:
    """Compact the low-signal narrative of `text` (see the module docstring); None if nothing to gain."""
    return compress_many([text], ctx)[0]
