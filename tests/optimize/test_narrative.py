"""Narrative compaction: extractive, byte-identical kept text, every fact and constraint kept, code whole."""

from __future__ import annotations

import itertools
import re

import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from worker import tokens
from worker.optimize import facts, narrative, prose_units
from worker.optimize.base import Context
from worker.optimize.narrative import compress, compress_many, score_sentences
from worker.optimize.prose_units import is_hard_constraint, sentences, split_units

SUPPORT = """\
Customer: Hi there, I hope you're having a good day. I'm writing because something went wrong with my \
last order and I'm honestly pretty frustrated about it.

Agent: Hi! Thank you so much for reaching out to us today, and I'm really sorry to hear that you're \
frustrated. I completely understand how annoying this kind of thing can be. I'd be more than happy to \
help you get this sorted out. Could you tell me a bit more about what happened?

Customer: Sure. I ordered a pair of running shoes last week, order ORD-1042, and I was charged $129.99 \
on March 3, 2026. Then this morning I saw a second charge of $129.99 on my card statement. I only placed \
one order. I must not be charged twice for the same order, so I need the duplicate charge reversed.

Agent: Oh no, I'm so sorry about that! That definitely sounds frustrating, and I really appreciate your \
patience while I look into it. Let me just pull up your account real quick. Thanks for bearing with me \
here, it should only take a moment.

Agent: Okay, thanks for waiting! I've got your account open now. I can see the order and everything on \
my screen. Let me take a closer look at the payment history for you.

Agent: Alright, so I can confirm that the payment processor captured the payment twice for ORD-1042, \
once at 09:14 UTC and again at 09:16 UTC. The root cause is a retry in our checkout service after a \
gateway timeout. I've issued a refund of $129.99 to the card ending in 4821, and the refund reference is \
RF-77812.

Customer: Thanks. How long will the refund take? I really need the money back before my rent is due.

Agent: That's a great question, and I totally understand why you'd want to know! Refunds usually show up \
within 5-7 business days, depending on your bank. Your refund should arrive no later than March 12, \
2026. I know waiting isn't fun, and I really appreciate your understanding.

Customer: OK. Please make sure the original order still ships, I still want the shoes.

Agent: Absolutely, of course! I've double-checked and your original order is still active and it will \
ship as normal. You should get a tracking email from us soon. Is there anything else I can help you with \
today?

Customer: No, that's everything. Thanks for your help.

Agent: You're very welcome! It was a pleasure chatting with you today. Please don't hesitate to reach \
out if you have any other questions at all. Have a wonderful rest of your day, and happy running!
"""

CODE_BLOCK = """\
```lua
local tokens = tonumber(redis.call('GET', KEYS[1]) or ARGV[1])
if tokens < tonumber(ARGV[2]) then
  return 0
end
redis.call('DECRBY', KEYS[1], ARGV[2])
return 1
```"""

DESIGN = f"""\
# Rate limiter redesign

## Background

Over the last few months the team has talked a lot about the rate limiter, and there have been many \
opinions about what a better version could look like. Some of those discussions happened in the weekly \
sync, and others happened in various chat threads, so it is worth collecting the main points in one \
place. The current limiter was written a long time ago, when traffic was much smaller and the product \
looked quite different. It has served us reasonably well overall, although it has started to show its \
age in several ways. Nobody on the current team wrote the original code, which makes it somewhat harder \
to reason about. In general, people agree that it is time to revisit the design.

The limiter currently lives inside the API gateway process and keeps its counters in local memory. \
Because each gateway instance keeps its own counters, a client that is spread across 12 instances can \
effectively send twelve times its quota. This was noticed during the incident on 2026-01-14, when one \
tenant sent 48,000 requests in a minute.

## Goals

The new limiter must enforce quotas globally across all gateway instances. Decisions must be made in \
under 2 ms at p99, measured at the gateway. It should degrade gracefully: if the shared store is \
unavailable, the gateway must fail open and fall back to local counters rather than rejecting traffic. \
We also want the design to be simple enough that a new engineer could understand it in an afternoon, \
which is something that has not really been true of the old code.

## Options considered

We looked at a few different approaches before settling on one. The first option was a centralized \
limiter service that every gateway calls on each request. This is conceptually simple, and it is a \
pattern that many companies use. However, it adds a network hop to every request, and it creates a new \
critical dependency that we would have to operate and scale. The second option was a token bucket stored \
in Redis, updated with a Lua script so the read-modify-write happens atomically. The third option was to \
gossip counters between gateway instances, which sounds elegant in theory but seemed quite complex in \
practice. There was a fair amount of back and forth about the trade-offs between these options, and \
people had different intuitions about which one would be easiest to run. Honestly, we could probably \
have made any of them work with enough effort.

## Decision

We decided to use a Redis token bucket with a Lua script, keyed by tenant and route. The gateway will \
batch increments locally for at most 50 ms before flushing them, which keeps the load on Redis low. The \
script is small:

{CODE_BLOCK}

The default quota is 600 requests per minute per tenant, and enterprise tenants can be raised to 6,000. \
Keys expire after 120 seconds of inactivity.

## Monitoring

We talked for a while about what we would want to see on the dashboards once this is live. Most people \
felt that the existing dashboards are a bit cluttered and that it would be nice to clean them up at some \
point. There were also some ideas about alerting, although nobody felt very strongly about the details. \
The limiter will export the number of allowed and rejected requests per tenant, and the Redis round-trip \
latency. An alert fires when more than 5% of requests from a single tenant are rejected for 10 minutes.

## Rollout

The rollout will happen gradually, and we will keep a close eye on the dashboards the whole time. We \
will start by running the new limiter in shadow mode, where it records decisions but does not enforce \
them. After that, we will enable enforcement for internal tenants, and then for everyone else. The \
migration must be finished before the v3.2.0 release on 2026-04-30. Ana owns the Redis changes, and Ben \
owns the gateway changes. As mentioned earlier, we will revisit this if anything looks off.

## Open questions

It is not entirely clear yet how we want to handle tenants that are very close to their limits for long \
periods of time. Some people suggested that we might want to notify them proactively, but others were \
not so sure that this would be useful. We can probably figure this out later, once we have some real \
data from shadow mode. In summary, the new limiter enforces global quotas with a Redis token bucket, \
fails open, and ships before v3.2.0.
"""

MEETING = """\
Weekly sync - platform team

Attendees: Ana, Ben, Chloe, Dev

Ana opened the meeting by saying thanks to everyone for joining on short notice. She mentioned that it \
has been a busy week and that people are a bit tired. Ben agreed and said it would be good to keep the \
meeting short today. Chloe said she was happy to go first.

Chloe reported that the nightly build has been flaky since Tuesday. She thinks it is related to the new \
test containers, but she is not completely sure yet. After some digging, the root cause turned out to be \
a race in the fixture that starts the database. The fix is to wait for the health check before running \
migrations, and it landed in PR #4411.

Dev talked about the on-call rotation. He said that the last rotation was pretty quiet overall, which \
was nice. There were a couple of pages, but nothing serious happened. He also mentioned that he would \
like to improve the runbooks at some point, although it is not urgent. Everyone agreed that better \
runbooks would be nice to have.

Ben brought up the database upgrade. The upgrade to Postgres 16.2 must happen before the end of support \
on 2026-06-30. We decided that Ben will run the upgrade on staging next week, and production only after \
a full backup has been verified. Ana asked whether there were any risks, and Ben said there were \
probably some, but nothing he was especially worried about.

Action items: Ben runs the staging upgrade by 2026-03-20. Chloe writes up the flaky build postmortem. \
Dev updates the paging runbook.

The meeting ended a few minutes early. Everyone said goodbye and went back to work.
"""

DOCS = {"support": SUPPORT, "design": DESIGN, "meeting": MEETING}
QUERIES = {
    "support": "When will my refund arrive?",
    "design": "",
    "meeting": "what about the database upgrade",
}
LOSSY = ("balanced", "aggressive")
MARKER_RE = re.compile(r"\[trex: [^\]]*\]")


def _run(name: str, mode: str) -> str:
    result = compress(DOCS[name], Context(mode=mode, query=QUERIES[name]))  # type: ignore[arg-type]
    assert result is not None
    assert result.strategy == "narrative"
    return result.text


def _prose(text: str) -> list[str]:
    return [text[u.start : u.end] for u in split_units(text) if u.kind in ("sentence", "bullet")]


# --- modes and sizes -------------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DOCS))
def test_safe_and_off_drop_nothing(name: str) -> None:
    assert compress(DOCS[name], Context(mode="safe")) is None
    assert compress(DOCS[name], Context(mode="off")) is None


def test_short_texts_are_not_worth_it() -> None:
    short = (
        "Sure! Let me check that for you. I think it should be fine, honestly. Thanks so much for waiting!"
    )
    assert tokens.count(short) < 120
    assert compress(short, Context(mode="aggressive")) is None
    assert compress("", Context(mode="aggressive")) is None


@pytest.mark.parametrize("name", ["support", "design"])
def test_balanced_saves_at_least_40_percent_and_aggressive_saves_more(name: str) -> None:
    before = tokens.count(DOCS[name])
    balanced = tokens.count(_run(name, "balanced"))
    aggressive = tokens.count(_run(name, "aggressive"))
    assert 1 - balanced / before >= 0.40, (before, balanced)
    assert aggressive < balanced


@pytest.mark.parametrize("name", sorted(DOCS))
@pytest.mark.parametrize("mode", LOSSY)
def test_never_larger_and_deterministic(name: str, mode: str) -> None:
    first = _run(name, mode)
    assert first == _run(name, mode)
    assert tokens.count(first) < tokens.count(DOCS[name])
    assert len(first) < len(DOCS[name])


# --- what must survive -----------------------------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DOCS))
@pytest.mark.parametrize("mode", LOSSY)
def test_every_fact_is_in_the_output_verbatim(name: str, mode: str) -> None:
    out = _run(name, mode)
    found = facts.find_facts(DOCS[name])
    assert found  # the fixtures do plant facts
    assert [f for f in found if f not in out] == []


@pytest.mark.parametrize("name", sorted(DOCS))
@pytest.mark.parametrize("mode", LOSSY)
def test_constraint_and_fact_sentences_are_kept_byte_identical(name: str, mode: str) -> None:
    out = _run(name, mode)
    for sentence in _prose(DOCS[name]):
        if is_hard_constraint(sentence) or facts.has_fact(sentence):
            assert sentence in out, sentence


def test_constraint_sentences_of_the_transcript() -> None:
    """The customer's constraint, verbatim — and the courtesy formulas that only look like constraints go."""
    for mode in LOSSY:
        out = _run("support", mode)
        assert (
            "I must not be charged twice for the same order, so I need the duplicate charge reversed." in out
        )
        assert "Your refund should arrive no later than March 12, 2026." in out
        assert "I only placed one order." in out
        assert "Please make sure the original order still ships" in out  # a request, ranked like a constraint
        assert "Please don't hesitate to reach out" not in out  # "don't" here constrains nothing
        assert "it should only take a moment" not in out
    constraint_sentences = [s for s in _prose(SUPPORT) if facts.is_constraint(s)]
    exempt = [s for s in constraint_sentences if not is_hard_constraint(s)]
    assert len(exempt) == 2  # exactly the two courtesy formulas above


@pytest.mark.parametrize(
    ("sentence", "binding"),
    [
        ("The refund must be issued today.", True),
        ("You must be logged in; this is confusing otherwise.", True),
        ("Frustrating as it is, you must be logged in.", True),
        ("Never retry a charge without the idempotency key.", True),
        ("Please don't hesitate to reach out if you have questions.", False),
        ("Feel free to ping me any time, I'm always happy to help.", False),
        ("I completely understand how frustrating this must be.", False),
        ("That must have been really annoying!", False),
        ("Thanks for bearing with me, it should only take a moment.", False),
        ("Don't hesitate to ask, but never share your password.", True),
    ],
)
def test_courtesy_formulas_are_not_constraints(sentence: str, binding: bool) -> None:
    assert facts.is_constraint(sentence)
    assert is_hard_constraint(sentence) is binding


@pytest.mark.parametrize("mode", LOSSY)
def test_fenced_code_is_kept_whole(mode: str) -> None:
    assert CODE_BLOCK in _run("design", mode)


def test_code_inside_prose_is_never_split_or_dropped() -> None:
    text = (
        "Some narrative that goes on for a while about nothing much at all, really, in general terms. " * 6
        + "\n\n```python\n# Note. This comment has sentences. They stay together.\nprint('x')\n```\n\n"
        + "Indented blocks are verbatim too:\n\n    def f():\n        return 1. Next\n\n"
        + "| col | value |\n|-----|-------|\n| a | 1 |\n\n"
        + "More narrative that is mostly filler and does not say anything of substance, honestly. " * 6
    )
    units = split_units(text)
    kinds = [u.kind for u in units]
    assert kinds.count("code") == 1
    assert kinds.count("raw") == 2
    out = compress(text, Context(mode="aggressive"))
    assert out is not None
    assert "```python\n# Note. This comment has sentences. They stay together.\nprint('x')\n```" in out.text
    assert "    def f():\n        return 1. Next" in out.text
    assert "| col | value |\n|-----|-------|\n| a | 1 |" in out.text


# --- extractive, ordered, one marker per run -------------------------------------------------------------


@pytest.mark.parametrize("name", sorted(DOCS))
@pytest.mark.parametrize("mode", LOSSY)
def test_output_is_extractive_in_order_with_one_marker_per_dropped_run(name: str, mode: str) -> None:
    text = DOCS[name]
    out = _run(name, mode)
    markers = MARKER_RE.findall(out)
    assert markers, "something was dropped"
    assert all(re.fullmatch(r"\[trex: omitted \d+ sentences?(?:; facts kept: .*)?\]", m) for m in markers)
    assert not re.search(r"\]\s*\[trex:", out), "two markers in a row"
    # What is not a marker is the source, byte for byte, in the source's order.
    cursor = 0
    for piece in MARKER_RE.split(out):
        piece = piece.strip()
        if not piece:
            continue
        found = text.find(piece, cursor)
        assert found >= 0, piece
        cursor = found + len(piece)


def test_markers_count_the_dropped_sentences() -> None:
    out = _run("support", "balanced")
    dropped = sum(int(n) for n in re.findall(r"\[trex: omitted (\d+) sentences?", out))
    kept = sum(1 for s in _prose(SUPPORT) if s in out)
    assert dropped + kept == len(_prose(SUPPORT))


def test_dropped_facts_are_listed_in_the_marker() -> None:
    """A speaker turn dropped whole takes its time-stamped label with it; the stamp is named in the marker."""
    filler = (
        "[10:31] Maria: Thanks so much for your patience, I really appreciate it! Let me just check on that. "
        "Sure, happy to help, I think it is quick. Okay, thanks again for bearing with me here!"
    )
    text = (
        f"{filler}\n\n"
        "[10:35] Maria: Your replacement card ending 4821 was shipped on 2026-03-04 "
        "and arrives within 3 days.\n\n"
        f"{filler.replace('10:31', '10:40')}\n"
    )
    out = compress(text, Context(mode="balanced"))
    assert out is not None
    assert "[10:35] Maria: Your replacement card" in out.text
    assert "Let me just check on that" not in out.text
    assert "facts kept: 10:31" in out.text and "10:40" in out.text
    assert [f for f in facts.find_facts(text) if f not in out.text] == []


def test_kept_speaker_turns_keep_their_label() -> None:
    out = _run("support", "balanced")
    assert "Customer: Sure. I ordered a pair of running shoes" in out or "Customer: " in out
    # Every kept sentence of an agent turn still has an "Agent:" or "Customer:" label on its line.
    for line in out.splitlines():
        if line.strip() and not line.startswith("[trex:"):
            assert line.startswith(("Agent:", "Customer:")), line


# --- scoring ---------------------------------------------------------------------------------------------


def test_relevance_to_the_query_outranks_a_similar_irrelevant_sentence() -> None:
    units = [
        "The nightly export job writes the invoices table to the archive bucket.",
        "The nightly export job writes the audit table to the archive bucket.",
    ]
    scores = score_sentences(units, query="why is the invoices export missing rows?")
    assert scores[0] > scores[1]
    scores = score_sentences(units, query="audit table")
    assert scores[1] > scores[0]
    assert score_sentences(units) == score_sentences(units)


def test_the_sentence_matching_the_query_is_the_one_kept() -> None:
    tables = ["invoices", "audit", "customers", "shipments", "refunds", "sessions", "products", "coupons"]
    text = (
        " ".join(
            f"The nightly export job copies the {name} table into the archive bucket for the analysts."
            for name in tables
        )
        + " Everyone in the room agreed that the export process works, more or less, for the most part."
    )
    unranked = compress(text, Context(mode="aggressive"))
    assert unranked is not None
    for name in ("sessions", "coupons"):
        assert f"copies the {name} table" not in unranked.text
        out = compress(
            text, Context(mode="aggressive", query=f"why are rows missing from the {name} export?")
        )
        assert out is not None
        assert f"copies the {name} table" in out.text
        assert sum(f"copies the {other} table" in out.text for other in tables) < len(tables) // 2


def test_conclusions_outrank_filler_and_hedging() -> None:
    units = [
        "Sure, happy to help, thanks so much for asking!",
        "I think it might maybe be something with the network, but I'm not sure.",
        "The root cause was a stale connection pool in the worker.",
        "In summary, we will move the pool into the request scope.",
    ]
    scores = score_sentences(units)
    assert min(scores[2], scores[3]) > max(scores[0], scores[1])
    assert scores[0] < 0


def test_balanced_keeps_the_decisions_of_the_meeting() -> None:
    out = _run("meeting", "balanced")  # asked about the database upgrade
    assert "After some digging, the root cause turned out to be a race in the fixture" in out
    assert "Ben brought up the database upgrade." in out
    assert "Chloe writes up the flaky build postmortem. Dev updates the paging runbook." in out
    assert "Action items: Ben runs the staging upgrade by 2026-03-20." in out
    assert "Everyone said goodbye" not in out


# --- the sentence splitter -------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "expected"),
    [
        (
            "Dr. Smith approved it, e.g. for Redis. The team agreed, i.e. nobody objected.",
            ["Dr. Smith approved it, e.g. for Redis.", "The team agreed, i.e. nobody objected."],
        ),
        (
            "Mr. and Mrs. Lee met Prof. Ortiz vs. the board. Done.",
            ["Mr. and Mrs. Lee met Prof. Ortiz vs. the board.", "Done."],
        ),
        (
            "Latency fell 3.5 times. Throughput rose 12.25%. Done.",
            ["Latency fell 3.5 times.", "Throughput rose 12.25%.", "Done."],
        ),
        (
            "Upgrade to v1.2.3 first. Then v2.0.0-rc.1 follows.",
            ["Upgrade to v1.2.3 first.", "Then v2.0.0-rc.1 follows."],
        ),
        (
            "See https://example.com/docs/v2.1/guide.html. It explains www.example.org too.",
            ["See https://example.com/docs/v2.1/guide.html.", "It explains www.example.org too."],
        ),
        (
            "Run ./scripts/build.sh now. It reads config/app.prod.yaml and ~/.env.local first.",
            ["Run ./scripts/build.sh now.", "It reads config/app.prod.yaml and ~/.env.local first."],
        ),
        (
            "Call `obj.method(). Next()` twice. Then stop.",
            ["Call `obj.method(). Next()` twice.", "Then stop."],
        ),
        ("It failed! Why? Nobody knows...", ["It failed!", "Why?", "Nobody knows..."]),
        ('He said "stop." Then he left.', ['He said "stop."', "Then he left."]),
        ("J. R. R. Tolkien wrote it. It sold well.", ["J. R. R. Tolkien wrote it.", "It sold well."]),
        (
            "See fig. 3 and No. 7 on Jan. 5 at 5 p.m. sharp. Then go.",
            ["See fig. 3 and No. 7 on Jan. 5 at 5 p.m. sharp.", "Then go."],
        ),
        ("The answer is no. Next question.", ["The answer is no.", "Next question."]),
        (
            "etc. is fine mid-sentence, etc. and so on. Next.",
            ["etc. is fine mid-sentence, etc. and so on.", "Next."],
        ),
        (
            "生产数据库绝对不能删除。请先备份\uff01可以吗\uff1f好的。",
            ["生产数据库绝对不能删除。", "请先备份\uff01", "可以吗\uff1f", "好的。"],
        ),
        ("Done. 生产数据库绝对不能删除。 Thanks.", ["Done.", "生产数据库绝对不能删除。", "Thanks."]),
    ],
)
def test_sentence_splitting(text: str, expected: list[str]) -> None:
    assert sentences(text) == expected


def test_markdown_bullets_headings_and_labels_are_units() -> None:
    text = (
        "# Title\n"
        "Intro sentence one. Intro two.\n"
        "- first bullet. It has two sentences.\n"
        "- second bullet\n"
        "  continued on an indented line.\n"
        "1. numbered item\n"
        "## Section\n"
        "A paragraph that is hard wrapped at a fairly long column width so that the line\n"
        "continues here. A short line\n"
        "Another line\n"
        "Customer: Hello there. I need help.\n"
        "Agent: Sure thing.\n"
    )
    units = split_units(text)
    got = [(u.kind, text[u.start : u.end]) for u in units]
    assert got == [
        ("heading", "# Title"),
        ("sentence", "Intro sentence one."),
        ("sentence", "Intro two."),
        ("bullet", "- first bullet. It has two sentences."),
        ("bullet", "- second bullet\n  continued on an indented line."),
        ("bullet", "1. numbered item"),
        ("heading", "## Section"),
        (
            "sentence",
            "A paragraph that is hard wrapped at a fairly long column width so that the line\n"
            "continues here.",
        ),
        ("sentence", "A short line"),
        ("sentence", "Another line"),
        ("label", "Customer:"),
        ("sentence", "Hello there."),
        ("sentence", "I need help."),
        ("label", "Agent:"),
        ("sentence", "Sure thing."),
    ]


def test_units_cover_every_non_space_character_exactly_once() -> None:
    for text in DOCS.values():
        units = split_units(text)
        covered = "".join(text[u.start : u.end] for u in units)
        assert re.sub(r"\s", "", covered) == re.sub(r"\s", "", text)
        assert all(a.end <= b.start for a, b in itertools.pairwise(units))


def test_unclosed_fence_runs_to_the_end() -> None:
    text = "Intro sentence.\n```\ncode. More code.\n\nStill code. Yes."
    assert sentences(text) == ["Intro sentence.", "```\ncode. More code.\n\nStill code. Yes."]


# --- several blocks at once ------------------------------------------------------------------------------

SMALL_TALK = [
    "Thanks so much for reaching out to us today, I really appreciate your patience while I look into this.",
    "I hope the rest of your week goes smoothly and that you have a wonderful time with your family.",
    "Great question! I'm always happy to help with anything else you might need along the way.",
    "I completely understand how frustrating this must be, and I'm here to help you get it sorted out.",
]
TURNS = [
    f"My order ORD-55120 was charged twice on 2026-11-02: two charges of €89.90 each. {SMALL_TALK[0]}",
    f"{SMALL_TALK[2]} {SMALL_TALK[3]}",
    f"The duplicate transaction id is txn_3Kd9QwX2 and it must be refunded, not credited. {SMALL_TALK[1]}",
    f"{SMALL_TALK[0]} {SMALL_TALK[1]} {SMALL_TALK[3]}",
    "Okay.",
    f"Please never send the refund to the old card ending 4242. {SMALL_TALK[2]} {SMALL_TALK[1]}",
]


def test_short_turns_are_compacted_together() -> None:
    assert all(tokens.count(t) < 120 for t in TURNS)
    assert all(compress(t, Context(mode="balanced")) is None for t in TURNS)  # each alone is too short
    results = compress_many(TURNS, Context(mode="balanced", query="when do I get the €89.90 back?"))
    assert len(results) == len(TURNS)
    outs = [r.text if r is not None else t for r, t in zip(results, TURNS, strict=True)]
    before = sum(tokens.count(t) for t in TURNS)
    after = sum(tokens.count(o) for o in outs)
    assert 1 - after / before >= 0.4
    assert results[4] is None  # "Okay." is not worth a marker
    joined = "\n".join(outs)
    assert [f for f in facts.find_facts("\n".join(TURNS)) if f not in joined] == []
    for turn, out in zip(TURNS, outs, strict=True):
        for sentence in _prose(turn):
            if is_hard_constraint(sentence) or facts.has_fact(sentence):
                assert sentence in out
        assert len(MARKER_RE.findall(out)) <= 2
    assert outs[1] == "[trex: omitted 3 sentences]"  # a turn of nothing but small talk
    assert compress_many(TURNS, Context(mode="balanced")) == compress_many(TURNS, Context(mode="balanced"))


def test_many_respects_modes_and_the_total_minimum() -> None:
    assert compress_many(TURNS, Context(mode="safe")) == [None] * len(TURNS)
    assert compress_many([], Context(mode="balanced")) == []
    assert compress_many(["Thanks!", "Sure, happy to help."], Context(mode="aggressive")) == [None, None]
    single = compress_many([DESIGN], Context(mode="balanced"))[0]
    assert single == compress(DESIGN, Context(mode="balanced"))


_CUE_PIECES = st.lists(
    st.sampled_from(
        [
            "i think",
            "make sure",
            "be sure",
            "sure",
            "thanks",
            "so",
            "also",
            ", so",
            "; so ",
            "agreed",
            "the fix is",
            "root cause",
            "a lot",
            "not really clear",
            "you're very welcome",
            "don't hesitate",
            "apologise",
            "okay",
            "ok",
            " ",
            "\n",
            ",",
            "'",
            "x",
        ]
    )
    | st.text(alphabet="abcdefghijklmnopqrstuvwxyz ,;:'\n", max_size=6),
    max_size=25,
)


@settings(max_examples=300, deadline=None)
@given(_CUE_PIECES)
def test_gated_cue_patterns_match_exactly_what_the_plain_patterns_match(parts: list[str]) -> None:
    text = "".join(parts)
    for gated in (narrative._CONCLUSION_RE, narrative._FILLER_RE, narrative._VAGUE_RE):
        body = gated.pattern.split("(?:", 1)[1][: -len(")\\b")]
        plain = re.compile(rf"\b(?:{body})\b")
        assert gated.findall(text) == plain.findall(text)
    plain_so = re.compile(r"(?:^|[,;:]\s*)so\b|\bagreed\b")
    assert [m.span() for m in narrative._SO_RE.finditer(text)] == [m.span() for m in plain_so.finditer(text)]


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet=".!?\u3002\uff01\uff1f\"'\u2019\u201d)]*_ \n\tab", max_size=30))
def test_end_punctuation_pattern_matches_what_the_plain_pattern_matches_before_text(text: str) -> None:
    closers = re.escape(prose_units._CLOSERS)
    cjk = prose_units._CJK_ENDS
    plain = re.compile(rf"[.!?]+[{closers}]*(?=\s)|[{cjk}]+[{closers}]*")
    followed = [
        (m.span(), text[m.end() :].split()[0][0]) for m in plain.finditer(text) if text[m.end() :].strip()
    ]
    assert [(m.span(), m.group(1)) for m in prose_units._PUNCT_RE.finditer(text)] == followed


def test_gate_letters_come_from_every_alternative() -> None:
    assert facts._first_letters("(?<!make )(?<!be )sure") == {"s"}
    assert facts._first_letters("(?:you're|you are) welcome") == {"y"}
    assert facts.gated_words("in general|a lot|(?:x|y)z").pattern.startswith(r"\b(?=[aixy])")
    with pytest.raises(ValueError, match="first letter"):
        facts.gated_words("[ab]c|d")


_FILLER = (
    "Thanks so much for getting back to me so quickly, I really appreciate it. "
    "I hope you had a great weekend and that the weather was nice where you are. "
    "It has been a pretty busy week over here with lots of meetings and various things going on. "
    "Anyway, I wanted to give you a bit of background on the project before we dive in. "
)


@pytest.mark.parametrize(
    "clause",
    [
        "Die Produktionsdatenbank darf niemals gelöscht werden.",
        "Vous ne devez jamais supprimer la base de production.",
        "Nunca borres la base de datos de producción.",
        "生产数据库绝对不能删除。",
        "Use no more than two replicas of the worker.",
        "Ship it before Friday.",
        "Avoid touching the billing tables.",
        "Please refrain from pushing to main.",
        "Keep the retention window at PT15M.",
        "The gateway listens on fe80::1ff:fe23:abcd:890a now.",
        "The standup moves to 5pm.",
    ],
)
@pytest.mark.parametrize("mode", ["balanced", "aggressive"])
def test_constraints_in_other_languages_and_phrasings_are_kept(clause: str, mode: str) -> None:
    text = _FILLER + clause + " " + _FILLER
    result = compress(text, Context(mode=mode))
    assert result is not None  # the filler goes
    assert clause in result.text


def test_before_and_avoid_alone_are_not_constraints() -> None:
    assert not facts.is_constraint("I wanted to give you some background before we dive in.")
    assert facts.is_constraint("Deploy before Friday.") and facts.is_constraint("Avoid the billing tables.")


@settings(max_examples=500, deadline=None)
@given(st.text(alphabet="ab.!/ \t\n\r\x0b\x0c\x1c\x85\xa0\u2028\u3000", max_size=40))
def test_quick_word_bound_never_exceeds_at_least(text: str) -> None:
    assert narrative._words_at_least(text) <= tokens.at_least(text) <= tokens.count(text)


@settings(max_examples=1000, deadline=None)
@given(
    st.lists(
        st.sampled_from(
            ["Agent", "Dr.", " Lee", " (billing)", " x", "A", "_", "__", "**", ":", ": ", " hi", "\t"]
        )
        | st.sampled_from(
            ["[10:32] ", "[", "]", "-", "'", ".", "é", "1", "\n", "Ab_", "a__b", "*", "#", " "]
        ),
        max_size=10,
    )
)
def test_label_pattern_matches_what_the_backtracking_pattern_matches(parts: list[str]) -> None:
    """`_LABEL_RE` takes a name's words possessively (no backtracking): the same matches as without."""
    text = "".join(parts)
    plain = re.compile(
        r"[ \t]*(?:\[[^\]\n]{1,25}\][ \t]*)?(?:\*\*|__)?[A-Z][\w.'()#-]*(?:[ \t][\w.'()#-]+){0,2}"
        r"(?:\*\*|__)?:(?:\*\*|__)?[ \t]+(?=\S)"
    )
    found, expected = prose_units._LABEL_RE.match(text), plain.match(text)
    assert (found and found.span()) == (expected and expected.span()), text
