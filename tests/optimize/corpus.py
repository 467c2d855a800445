"""A corpus of realistic requests with planted facts: what a task depends on, which must survive verbatim.

Each case is (name, wire format, body, planted facts, question). Bodies are built deterministically
(fixed seeds) so tests and the optimizer benchmark see the same bytes every run.
"""

from __future__ import annotations

import json
import random
from dataclasses import dataclass
from typing import Any


@dataclass(frozen=True)
class Case:
    name: str
    fmt: str
    body: dict[str, Any]
    facts: tuple[str, ...]


PAYMENTS_PY = '''"""Refund processing for the payments service."""

from decimal import Decimal

MAX_REFUND = Decimal("1250.00")


class RefundError(Exception):
    pass


def refund(order, amount: Decimal) -> Decimal:
    if amount > MAX_REFUND:
        raise RefundError(f"refund {amount} exceeds cap {MAX_REFUND}")
    if order.refunded + amount > order.total:
        raise RefundError("refund larger than the order total")
    order.refunded += amount
    return order.total - order.refunded
''' + "\n".join(f"\n\ndef helper_{i}(x):\n    return x * {i} + {i * 3}" for i in range(40))


def _grep(rng: random.Random) -> str:
    files = [f"src/payments/{n}.py" for n in ("refund", "ledger", "gateway", "fx", "tax", "audit", "api")]
    files += [
        f"tests/test_{n}.py" for n in ("refund", "ledger", "gateway", "fx", "tax", "audit", "api", "cli")
    ]
    lines = []
    for i in range(300):
        f = rng.choice(files)
        word = rng.choice(["refund(order", "Decimal(", "amount", "total", "MAX_REFUND", "ledger.post("])
        lines.append(f"{f}:{rng.randint(1, 400)}:    result = {word}  # step {i % 17}")
    lines.insert(
        137, "src/payments/refund.py:14:    if amount > MAX_REFUND:  # cap enforced for ORD-77812 audit"
    )
    return "\n".join(lines)


def _pytest_output() -> str:
    passed = [f"tests/test_ledger.py::test_post_{i} PASSED" for i in range(160)]
    failure = """
=================================== FAILURES ===================================
______________________ test_refund_respects_cap[ORD-77812] _____________________

    def test_refund_respects_cap():
        order = Order(id="ORD-77812", total=Decimal("1999.00"), refunded=Decimal("800.00"))
>       assert refund(order, Decimal("450.00")) == Decimal("749.00")
E       AssertionError: assert Decimal('1199.00') == Decimal('749.00')

tests/test_refund.py:42: AssertionError
=========================== short test summary info ============================
FAILED tests/test_refund.py::test_refund_respects_cap[ORD-77812] - AssertionError
==================== 1 failed, 160 passed in 3.21s ===================="""
    return (
        "============================= test session starts ==============================\n"
        + "\n".join(passed)
        + failure
    )


def _orders_json(rng: random.Random) -> str:
    records = []
    for i in range(200):
        records.append(
            {
                "id": 5000 + i,
                "status": rng.choice(["paid", "paid", "paid", "shipped"]),
                "currency": "USD",
                "total": round(rng.uniform(20, 900), 2),
                "customer": {
                    "tier": rng.choice(["gold", "silver"]),
                    "country": rng.choice(["US", "DE", "FR"]),
                },
            }
        )
    records[117] = {
        "id": 5117,
        "status": "refund_failed",
        "currency": "USD",
        "total": 1999.0,
        "error": {"code": "REFUND_CAP_EXCEEDED", "order": "ORD-77812", "txn": "txn_8Hq2ZkLp0W"},
        "customer": {"tier": "gold", "country": "US"},
    }
    return json.dumps({"data": records, "has_more": False, "request_id": "req_Q8z2Lx"}, indent=2)


def _service_log(rng: random.Random) -> str:
    lines = []
    for i in range(500):
        ts = f"2026-11-20T10:{i // 60 % 60:02d}:{i % 60:02d}.{rng.randint(0, 999):03d}Z"
        lines.append(f"{ts} INFO  http  GET /healthz 200 {rng.randint(1, 9)}ms")
        if i % 50 == 7:
            lines.append(
                f"{ts} INFO  worker  processed batch {rng.randint(100, 999)} in {rng.randint(10, 90)}ms"
            )
    lines.insert(
        333,
        "2026-11-20T10:05:33.120Z ERROR refunds  refund failed order=ORD-77812 txn=txn_8Hq2ZkLp0W "
        "reason=REFUND_CAP_EXCEEDED amount=$450.00",
    )
    lines.insert(
        334,
        'Traceback (most recent call last):\n  File "/srv/app/payments/refund.py", line 14, in refund\n'
        "    raise RefundError(...)\npayments.refund.RefundError: refund 450.00 exceeds cap 1250.00",
    )
    lines.insert(120, "2026-11-20T10:02:00.001Z WARN  db  slow query 2300ms on ledger_entries")
    return "\n".join(lines)


# What a task over each tool output depends on (the bench's per-kind "planted facts"): the failing record,
# the error and warning lines, the one relevant grep match, the changed lines.
JSON_FACTS = (
    "5117",
    "refund_failed",
    "REFUND_CAP_EXCEEDED",
    "ORD-77812",
    "txn_8Hq2ZkLp0W",
    "req_Q8z2Lx",
    "1999.0",
)
LOG_FACTS = (
    "2026-11-20T10:05:33.120Z ERROR refunds  refund failed order=ORD-77812 txn=txn_8Hq2ZkLp0W "
    "reason=REFUND_CAP_EXCEEDED amount=$450.00",
    'File "/srv/app/payments/refund.py", line 14, in refund',
    "payments.refund.RefundError: refund 450.00 exceeds cap 1250.00",
    "2026-11-20T10:02:00.001Z WARN  db  slow query 2300ms on ledger_entries",
)
GREP_FACTS = ("src/payments/refund.py:14:    if amount > MAX_REFUND:  # cap enforced for ORD-77812 audit",)
DIFF_FACTS = (
    "-    if order.refunded + amount > order.total:",
    "+    if order.refunded + amount > order.total - order.fees:",
    "index 3f9a2c1..7b41d0e 100644",
    "@@ -10,12 +10,12 @@ class RefundError(Exception):",
)

DIFF = "\n".join(
    [
        "diff --git a/src/payments/refund.py b/src/payments/refund.py",
        "index 3f9a2c1..7b41d0e 100644",
        "--- a/src/payments/refund.py",
        "+++ b/src/payments/refund.py",
        "@@ -10,12 +10,12 @@ class RefundError(Exception):",
        *[f" line {i} unchanged context of the refund module" for i in range(6)],
        "-    if order.refunded + amount > order.total:",
        "+    if order.refunded + amount > order.total - order.fees:",
        *[f" line {i} more unchanged context" for i in range(6, 12)],
    ]
)


def coding_session() -> Case:
    rng = random.Random(7)
    messages: list[dict[str, Any]] = [
        {"role": "system", "content": "You are a careful coding agent working in the payments repository."},
        {
            "role": "user",
            "content": "Fix the failing refund test. The refund for order ORD-77812 must not exceed $1,250.00 "
            "and the fix must ship before 2026-12-01. Do not change MAX_REFUND.",
        },
    ]
    tools = [
        ("read_file", {"path": "src/payments/refund.py"}, PAYMENTS_PY),
        ("grep", {"pattern": "refund|MAX_REFUND"}, _grep(rng)),
        ("run_tests", {"path": "tests/"}, _pytest_output()),
        ("http_get", {"url": "https://api.internal.example.com/v2/orders?limit=200"}, _orders_json(rng)),
        ("read_logs", {"service": "refunds"}, _service_log(rng)),
        ("git_diff", {}, DIFF),
        ("read_file", {"path": "src/payments/refund.py"}, PAYMENTS_PY),  # read again: dedup
    ]
    for i, (name, args, output) in enumerate(tools):
        call_id = f"call_{i:02d}{name[:4]}"
        messages.append(
            {
                "role": "assistant",
                "content": f"I'll use {name} next. Let me take a look at what it shows so that we can make progress "
                "on the task, and I will report back what I find in detail once it finishes running.",
                "tool_calls": [
                    {
                        "id": call_id,
                        "type": "function",
                        "function": {"name": name, "arguments": json.dumps(args)},
                    }
                ],
            }
        )
        messages.append({"role": "tool", "tool_call_id": call_id, "content": output})
    messages.append({"role": "assistant", "content": "The cap check is wrong: fees are not subtracted."})
    messages.append({"role": "user", "content": "Now write the fix for ORD-77812 and explain it briefly."})
    body = {
        "model": "gpt-4o-mini",
        "messages": messages,
        "tools": [
            {"type": "function", "function": {"name": n, "parameters": {"type": "object", "properties": {}}}}
            for n in ("read_file", "grep", "run_tests", "http_get", "read_logs", "git_diff")
        ],
        "temperature": 0.2,
    }
    facts = (
        "ORD-77812",
        "$1,250.00",
        "2026-12-01",
        "MAX_REFUND",
        'Decimal("1250.00")',
        "txn_8Hq2ZkLp0W",
        "REFUND_CAP_EXCEEDED",
        "AssertionError: assert Decimal('1199.00') == Decimal('749.00')",
        "tests/test_refund.py:42",
        "+    if order.refunded + amount > order.total - order.fees:",
        "-    if order.refunded + amount > order.total:",
        "slow query 2300ms",
        "req_Q8z2Lx",
        "5117",
        "https://api.internal.example.com/v2/orders?limit=200",
    )
    return Case("coding_session", "chat", body, facts)


SMALL_TALK = [
    "Thanks so much for reaching out to us today, I really appreciate your patience while I look into this.",
    "I completely understand how frustrating this must be, and I'm here to help you get it sorted out.",
    "Let me just pull up your account details real quick so I can take a closer look at everything.",
    "Great question! I'm always happy to help with anything else you might need along the way.",
    "I hope the rest of your week goes smoothly and that you have a wonderful time with your family.",
]


def support_conversation() -> Case:
    rng = random.Random(11)
    turns: list[dict[str, Any]] = []
    facts_turns = [
        "My order ORD-55120 was charged twice on 2026-11-02: two charges of €89.90 each.",
        "The duplicate transaction id is txn_3Kd9QwX2 and it must be refunded, not credited.",
        "I was told on the phone that refunds take 5-7 business days, but it has been 14 days.",
        "Please never send the refund to the old card ending 4242; use the card ending 1881 instead.",
    ]
    for i in range(10):
        user_text = " ".join(rng.sample(SMALL_TALK, 2))
        if i < len(facts_turns):
            user_text = facts_turns[i] + " " + user_text
        turns.append({"role": "user", "content": user_text})
        turns.append({"role": "assistant", "content": " ".join(rng.sample(SMALL_TALK, 4))})
    turns.append({"role": "user", "content": "So when exactly will I get the €89.90 back for ORD-55120?"})
    body = {
        "model": "claude-sonnet-4-6",
        "max_tokens": 512,
        "system": "You are a billing support agent. Be precise about amounts and dates.",
        "messages": turns,
    }
    facts = (
        "ORD-55120",
        "2026-11-02",
        "€89.90",
        "txn_3Kd9QwX2",
        "must be refunded, not credited",
        "4242",
        "1881",
        "14 days",
        "5-7 business days",
    )
    return Case("support_conversation", "messages", body, facts)


def long_document() -> Case:
    rng = random.Random(3)
    filler = [
        "The team discussed the overall direction at length and shared many perspectives on the roadmap.",
        "Several participants noted that the previous quarter had been busy and full of interesting work.",
        "There was general agreement that communication could always be improved across the organisation.",
        "It was mentioned that the office coffee machine had been replaced, which everyone appreciated.",
        "Some time was spent reviewing slides from earlier meetings to refresh everyone's memory.",
    ]
    key = [
        "Decision: the migration to Postgres 16.4 is scheduled for 2027-01-15 and must finish by 06:00 UTC.",
        "The rollback budget is limited to 30 minutes; the on-call owner is dana@example.com.",
        "Customer-facing downtime must not exceed 0.5% of the January SLA window.",
        "The runbook lives at https://wiki.example.com/ops/runbooks/pg-16-migration and version v3.2.1 applies.",
    ]
    paragraphs = []
    for i in range(24):
        sentences = rng.sample(filler, 4)
        if i % 6 == 2:
            sentences.insert(2, key[i // 6])
        paragraphs.append(" ".join(sentences))
    doc = "\n\n".join(paragraphs)
    body = {
        "model": "gpt-4o-mini",
        "instructions": "Answer from the meeting notes only.",
        "input": [
            {"role": "user", "content": "Here are the notes from the planning offsite:\n\n" + doc},
            {"role": "assistant", "content": "Thanks, I have read the notes."},
            {"role": "user", "content": "Summarize the notes for the on-call team."},
            {"role": "assistant", "content": "Sure, here is a summary focused on operations."},
            {"role": "user", "content": "What is the rollback budget and who owns it?"},
        ],
    }
    facts = (
        "Postgres 16.4",
        "2027-01-15",
        "06:00 UTC",
        "30 minutes",
        "dana@example.com",
        "0.5%",
        "https://wiki.example.com/ops/runbooks/pg-16-migration",
        "v3.2.1",
    )
    return Case("long_document", "responses", body, facts)


def all_cases() -> list[Case]:
    return [coding_session(), support_conversation(), long_document()]
