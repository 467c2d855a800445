"""Cross-turn dedup: exact repeats, repeats inside a later block, and edited copies become references."""

from __future__ import annotations

import heapq
import random
import re
import zlib

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from worker import tokens
from worker.optimize import dedup, facts
from worker.optimize.dedup import (
    MIN_CHARS,
    PREFIX_CHARS,
    Block,
    _prefix_hits,
    dedupe,
    dedupe_detailed,
    identical_marker,
    repeated_marker,
)

SOURCE = "\n".join(
    [
        '"""Billing helpers: invoices, refunds and the retry policy for the payment gateway."""',
        "",
        "from __future__ import annotations",
        "",
        "import logging",
        "from decimal import Decimal",
        "",
        "log = logging.getLogger(__name__)",
        "MAX_RETRIES = 3",
        'GATEWAY_URL = "https://payments.example.com/v2/charges"',
        "",
        "",
        "def refund(order_id: str, amount: Decimal) -> None:",
        '    """Refund `amount` for `order_id`; never twice for the same charge."""',
        '    log.info("refund %s %s", order_id, amount)',
        "    _post(GATEWAY_URL, {'order': order_id, 'amount': str(amount)})",
        "",
        "",
        "def invoice_total(lines: list[tuple[str, Decimal]]) -> Decimal:",
        "    total = Decimal(0)",
        "    for _sku, price in lines:",
        "        total += price",
        "    return total",
        "",
        "",
        "def _post(url: str, payload: dict[str, str]) -> None:",
        "    for attempt in range(MAX_RETRIES):",
        '        log.debug("attempt %d to %s", attempt, url)',
        "        if _send(url, payload):",
        "            return",
        '    raise RuntimeError("payment gateway unavailable")',
        "",
    ]
)


def _blocks(*texts: tuple[str, str]) -> list[Block]:
    return [Block(index=i, turn=i + 1, role=role, text=text) for i, (role, text) in enumerate(texts)]


def test_exact_repeat_becomes_a_reference_to_the_first_occurrence() -> None:
    blocks = _blocks(
        ("tool_result", SOURCE),
        ("assistant", "I read the file."),
        ("tool_result", SOURCE),
        ("tool_result", SOURCE + "\n\n   \n"),  # trailing whitespace does not matter
    )
    out = dedupe(blocks)
    expected = "[trex: identical to the tool_result content in turn 1 (block 0); omitted]"
    assert out == [None, None, expected, expected]
    assert identical_marker(blocks[0]) == expected


def test_trailing_whitespace_on_lines_is_normalised() -> None:
    spaced = "\n".join(line + "  " for line in SOURCE.split("\n"))
    out = dedupe(_blocks(("tool_result", SOURCE), ("tool_result", spaced)))
    assert out[1] == "[trex: identical to the tool_result content in turn 1 (block 0); omitted]"


def test_short_repeats_are_left_alone() -> None:
    short = "Tests passed: 42 of 42 in 3.1s.\n" * 3
    assert len(short.rstrip()) < MIN_CHARS
    assert dedupe(_blocks(("tool_result", short), ("tool_result", short), ("user", short))) == [
        None,
        None,
        None,
    ]


def test_the_role_and_turn_in_the_marker_are_the_earlier_blocks() -> None:
    text = "Customer note: please ship to the new address. " * 6
    blocks = [Block(7, 2, "user", text), Block(9, 5, "assistant", text)]
    assert dedupe(blocks) == [None, "[trex: identical to the user content in turn 2 (block 7); omitted]"]


def test_a_file_read_twice_around_an_edit_becomes_a_line_diff() -> None:
    edited = SOURCE.replace("MAX_RETRIES = 3", "MAX_RETRIES = 5  # ticket PAY-2291")
    blocks = _blocks(
        ("tool_result", SOURCE), ("assistant", "Raising the retry limit."), ("tool_result", edited)
    )
    detailed = dedupe_detailed(blocks)
    result = detailed[2]
    assert result is not None and result.kind == "edited" and result.refs == (0,)
    text = result.text
    assert text.startswith("[trex: edited copy of the tool_result content in turn 1 (block 0);")
    assert "@@ line 9 (replaces earlier line 9)\nMAX_RETRIES = 5  # ticket PAY-2291" in text
    assert "def invoice_total" not in text  # unchanged lines are not repeated
    assert "PAY-2291" in text  # the fact in the changed line stays
    assert len(text) < len(edited) and tokens.count(text) < tokens.count(edited)
    assert dedupe(blocks)[2] == text


def test_line_diff_reports_insertions_and_deletions_with_positions() -> None:
    lines = SOURCE.split("\n")
    changed = [*lines[:4], "import json", *lines[4:20], *lines[22:]]  # one line added, two removed
    out = dedupe(_blocks(("tool_result", SOURCE), ("tool_result", "\n".join(changed))))[1]
    assert out is not None
    assert "@@ line 5 (added)\nimport json" in out
    assert "@@ line 22 (earlier lines 21-22 removed)" in out


def test_blocks_below_90_percent_similarity_are_not_diffed() -> None:
    lines = SOURCE.split("\n")
    rewritten = "\n".join(
        line + "  # reviewed" if i % 4 == 0 and line else line for i, line in enumerate(lines)
    )
    assert dedupe(_blocks(("tool_result", SOURCE), ("tool_result", rewritten))) == [None, None]


def test_a_repeat_inside_a_later_block_becomes_a_reference() -> None:
    later = f"$ cat billing.py\n{SOURCE}\n$ pytest -q\n3 passed in 0.41s\n"
    blocks = _blocks(("tool_result", SOURCE), ("tool_result", later))
    detailed = dedupe_detailed(blocks)
    result = detailed[1]
    assert result is not None and result.kind == "repeated" and result.refs == (0,)
    marker = repeated_marker(blocks[0])
    assert marker == "[trex: repeated from the tool_result content in turn 1 (block 0); omitted]"
    # The rest of the block is byte for byte what it was.
    assert result.text == later.replace(SOURCE.rstrip(), marker)
    assert result.text.startswith("$ cat billing.py\n[trex: repeated from")
    assert result.text.endswith("\n$ pytest -q\n3 passed in 0.41s\n")


def test_a_repeat_starting_mid_line_is_found() -> None:
    prose = (
        "The refund policy says: orders over $500.00 need a second approval; refunds are issued to the "
        "original card only; a customer must never be refunded twice for the same charge; disputes go to "
        "billing@example.com within 14 days."
    )
    later = f"Quoting the policy again> {prose}\nPlease confirm."
    out = dedupe(_blocks(("user", prose), ("assistant", later)))[1]
    marker = "[trex: repeated from the user content in turn 1 (block 0); omitted]"
    assert out == f"Quoting the policy again> {marker}\nPlease confirm."
    later_file = "Contents follow: " + SOURCE + "\n(end)"
    out = dedupe(_blocks(("tool_result", SOURCE), ("tool_result", later_file)))[1]
    marker = "[trex: repeated from the tool_result content in turn 1 (block 0); omitted]"
    assert out == f"Contents follow: {marker}\n\n(end)"


def test_repeats_of_several_earlier_blocks_in_one_block() -> None:
    other = "\n".join(
        f"2026-03-0{d} 10:0{d}:00 INFO worker-{d} processed batch {d * 100} in {d * 7} ms"
        for d in range(1, 8)
    )
    combined = f"== billing.py ==\n{SOURCE}\n== worker.log ==\n{other}\n== end ==\n"
    out = dedupe(_blocks(("tool_result", SOURCE), ("tool_result", other), ("tool_result", combined)))[2]
    assert out is not None
    assert "(block 0)" in out and "(block 1)" in out
    assert out.startswith("== billing.py ==\n[trex: repeated from") and out.endswith("== end ==\n")


def test_identical_to_a_rewritten_block_gets_the_same_rewrite() -> None:
    edited = SOURCE.replace("MAX_RETRIES = 3", "MAX_RETRIES = 4")
    out = dedupe(_blocks(("tool_result", SOURCE), ("tool_result", edited), ("tool_result", edited)))
    assert out[1] is not None and out[1].startswith("[trex: edited copy")
    assert out[2] == out[1]  # refers to block 0, which the reader can see in full


def test_never_larger_and_unique_blocks_untouched() -> None:
    rng = random.Random(7)
    words = ["alpha", "beta", "gamma", "delta", "ORD-1042", "$19.99", "2026-03-14", "error", "retry", "ok"]
    pool = [" ".join(rng.choice(words) for _ in range(rng.randint(10, 120))) for _ in range(25)]
    blocks = [
        Block(i, i // 2, rng.choice(["tool_result", "user", "assistant"]), rng.choice(pool))
        for i in range(120)
    ]
    out = dedupe(blocks)
    earlier: set[str] = set()
    for block, result in zip(blocks, out, strict=True):
        norm = block.text.rstrip()
        if result is not None:
            assert len(result) < len(block.text)
            assert tokens.count(result) < tokens.count(block.text)
        elif len(norm) >= MIN_CHARS:
            assert norm not in earlier  # every long exact repeat is replaced
        earlier.add(norm)
    assert any(r is not None for r in out)
    assert any(r is None and len(b.text) < MIN_CHARS for b, r in zip(blocks, out, strict=True))


def test_facts_of_a_replaced_block_remain_in_the_block_it_refers_to() -> None:
    edited = SOURCE.replace("MAX_RETRIES = 3", "MAX_RETRIES = 5")
    blocks = _blocks(("tool_result", SOURCE), ("tool_result", SOURCE), ("tool_result", edited))
    out = dedupe(blocks)
    visible = "\n".join(r if r is not None else b.text for b, r in zip(blocks, out, strict=True))
    for block in blocks:
        assert [f for f in facts.find_facts(block.text) if f not in visible] == []


def test_a_thousand_blocks_complete_and_are_deterministic() -> None:
    rng = random.Random(11)
    files = [
        SOURCE.replace("billing", f"module{n}").replace("MAX_RETRIES = 3", f"MAX_RETRIES = {n}")
        for n in range(40)
    ]
    blocks = []
    for i in range(1000):
        roll = rng.random()
        if roll < 0.4:
            text = rng.choice(files)
        elif roll < 0.6:
            text = rng.choice(files).replace("total = Decimal(0)", f"total = Decimal({i})")
        elif roll < 0.7:
            text = f"$ cat f.py\n{rng.choice(files)}\n$ echo done {i}"
        else:
            text = f"short note {i}"
        blocks.append(Block(i, i // 3, "tool_result", text))
    first = dedupe(blocks)
    assert first == dedupe(blocks)
    kinds = {r.kind for r in dedupe_detailed(blocks) if r is not None}
    assert kinds == {"identical", "repeated", "edited"}
    assert sum(r is not None for r in first) > 500


def test_empty_and_trivial_inputs() -> None:
    assert dedupe([]) == []
    assert dedupe(_blocks(("user", ""), ("user", ""))) == [None, None]
    assert dedupe(_blocks(("user", " " * 500), ("user", " " * 500))) == [None, None]


@settings(max_examples=300, deadline=None)
@given(
    st.text(alphabet="ab \n\t\u00a0\u2028>:=([{\"',;|.-", min_size=1, max_size=160),
    st.lists(st.integers(min_value=0, max_value=159), max_size=40),
)
@example("::", [1])  # a key cut short by the end of the text matches only there
def test_prefix_hits_are_the_boundaries_where_a_key_starts(text: str, starts: list[int]) -> None:
    """Searching for each key finds the positions the boundary walk finds, for any number of keys."""
    keys = {text[i : i + PREFIX_CHARS]: [0] for i in starts if i < len(text) and not text[i].isspace()}
    walked = [
        (m.start(), text[m.start() : m.start() + PREFIX_CHARS])
        for m in re.finditer(r"(?:^|(?<=[\s>:=(\[{\"',;|]))(?=\S)", text)
        if text[m.start() : m.start() + PREFIX_CHARS] in keys
    ]
    assert _prefix_hits(text, keys) == walked


def test_lines_joined_are_the_text_normalised_and_sketched_line_by_line() -> None:
    """Dedup normalises a block as its stripped lines joined, and sketches their bytes from one encoding of
    that text: the same as stripping each line and the whole text, and encoding each line on its own."""
    rng = random.Random(5)
    alphabet = [
        "a",
        "bc",
        " ",
        "\t",
        "\n",
        "\r",
        "\x0b",
        "\x1c",
        "\x85",
        "\u2028",
        "\u3000",
        "é",
        "中",
        "\ud800",
    ]
    for _ in range(3_000):
        text = "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 30)))
        lines = dedup._lines(text.split("\n"))
        assert "\n".join(lines) == "\n".join(map(str.rstrip, text.split("\n"))).rstrip(), repr(text)
        usable = [line for line in lines if len(line.strip()) >= dedup.MIN_ANCHOR_CHARS]
        crcs = {zlib.crc32(line.encode("utf-8", "surrogatepass")) for line in usable}
        assert dedup._sketch(lines, "\n".join(lines)) == heapq.nsmallest(dedup.SKETCH_SIZE, crcs), repr(text)


def test_a_block_whose_lines_mostly_repeat_is_sketched_as_line_by_line() -> None:
    """`_sketch` hashes each distinct line once where most lines repeat one (pretty JSON): the same sketch."""
    rng = random.Random(6)
    alphabet = ["a", "bc", " ", "\t", "\x1c", "\x85", "\u3000", "é", "中", "\ud800", "}", ",", "1"]
    repeated = 0
    for _ in range(3_000):
        pool = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 8))) for _ in range(rng.randint(1, 8))
        ]
        lines = [rng.choice(pool).rstrip() for _ in range(rng.randint(0, 40))]
        usable = [line for line in lines if len(line.strip()) >= dedup.MIN_ANCHOR_CHARS]
        crcs = {zlib.crc32(line.encode("utf-8", "surrogatepass")) for line in usable}
        assert dedup._sketch(lines, "\n".join(lines)) == heapq.nsmallest(dedup.SKETCH_SIZE, crcs), lines
        repeated += len(set(lines)) * 2 <= len(lines)
    assert repeated > 2_000


def test_the_containment_anchor_is_the_first_longest_inner_line_of_the_body() -> None:
    """`_Index.add` finds the body's inner lines, their non-blank widths and offsets in the text's lines and the
    normalised lines' widths (`_Shape.widths`) instead of splitting the stripped text: the anchor is the same,
    leading blank lines and Unicode blanks included."""
    rng = random.Random(7)
    alphabet = ["a", "bc", " ", "\t", "\n", "\n\n", "\x1c", "\u3000", "é", "}", "defgh"]
    anchored = 0
    for _ in range(3_000):
        pool = [
            "".join(rng.choice(alphabet) for _ in range(rng.randint(0, 6))) for _ in range(rng.randint(1, 6))
        ]
        text = "".join(rng.choice(pool) for _ in range(rng.randint(0, 60)))
        raw = text.split("\n")
        lines = dedup._lines(raw)
        index = dedup._Index()
        index.add(Block(0, 0, "tool_result", text), dedup._Shape(lines, "\n".join(lines)), raw)
        body = text.strip()
        if len(body) < dedup.MIN_CHARS:
            assert not index.items
            continue
        inner = [len(line.strip()) for line in body.split("\n")[1:-1]]
        if inner and max(inner) >= dedup.MIN_ANCHOR_CHARS:
            k = 1 + inner.index(max(inner))
            line = body.split("\n")[k]
            offset = len("\n".join(body.split("\n")[:k])) + 1
            assert index.anchors == {line: [(0, offset)]}, repr(text)
            anchored += 1
        else:
            assert index.prefixes == {body[: dedup.PREFIX_CHARS]: [0]}, repr(text)
    assert anchored > 300


def test_blocks_sketched_only_near_in_line_count_dedupe_as_if_all_were(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """A block is sketched, and the earlier ones voted on, only when some earlier block's line count is near
    its own (`_Index.near`): the rewrites are those of sketching and voting on every block. Line counts on
    either side of `NEAR_RATIO`, and of `_EDIT_LINES` (9 and 10 lines), are among them."""
    rng = random.Random(8)
    pool = [f"line {n}: {'x' * (n % 7)} value={n * 37 % 101}" for n in range(60)]

    def version(base: list[str]) -> str:
        lines = base[:]
        for _ in range(rng.randint(0, 3)):  # an edit: a line changed, added or removed
            at = rng.randrange(len(lines))
            roll = rng.random()
            if roll < 0.4:
                lines[at] = f"changed {rng.randint(0, 9)} " + lines[at]
            elif roll < 0.7:
                lines.insert(at, rng.choice(pool))
            elif len(lines) > 1:
                del lines[at]
        return "\n".join(lines) + "\n" * rng.randint(0, 2)

    cases = []
    for _ in range(400):
        bases = [rng.sample(pool, rng.choice([1, 2, 8, 9, 10, 11, 19, 20, 21, 30])) for _ in range(3)]
        cases.append(
            [Block(i, i, "tool_result", version(rng.choice(bases))) for i in range(rng.randint(2, 12))]
        )
    lazy = [dedupe_detailed(blocks) for blocks in cases]
    monkeypatch.setattr(dedup._Index, "near", lambda self, size: True)
    eager = [dedupe_detailed(blocks) for blocks in cases]
    assert lazy == eager
    assert sum(r is not None and r.kind == "edited" for rs in lazy for r in rs) > 300
