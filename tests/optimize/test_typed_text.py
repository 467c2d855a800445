"""What the user typed in an older turn is their instructions: a later "do what I asked in my first message"
needs every sentence of it, including the ones without a constraint word."""

from __future__ import annotations

from typing import Any

import pytest

from worker.optimize import facts
from worker.optimize.base import Context
from worker.optimize.directives import is_directive
from worker.optimize.narrative import PASTED_TOKENS, compress_many
from worker.optimize.pipeline import Options, optimize
from worker.optimize.segments import extract

SPEC = (
    "I need a refund endpoint for the checkout service. Some background first: finance has been complaining "
    "that partial refunds are done by hand in the admin and it takes them ages every week, so this is a "
    "fairly high-visibility ticket for us.\n\n"
    "Put the handler in the existing payments blueprint next to the capture handler, and reuse the "
    "idempotency decorator that the capture handler already uses. The request body takes an order id and an "
    "amount. Call the gateway through the GatewayClient wrapper, not through the raw SDK, because the wrapper "
    "adds the tracing headers that the SRE team relies on.\n\n"
    "Return the updated order as the response, in the same serializer the GET order endpoint uses. The audit "
    "log entry should use the actor from the session, and the reason field should be copied from the request "
    "as-is.\n\n"
    "Also, I'd like the error messages to match the tone of the other endpoints; they are all lowercase and "
    "end without a period. Thanks a lot, I really appreciate the help with this one, it's been on my plate "
    "for a while."
)
FOLLOW_UP = "Looks good. Now write tests covering everything I asked for in my first message."
DIRECTIVES = (
    "Put the handler in the existing payments blueprint next to the capture handler, and reuse the "
    "idempotency decorator that the capture handler already uses.",
    "Call the gateway through the GatewayClient wrapper, not through the raw SDK, because the wrapper adds "
    "the tracing headers that the SRE team relies on.",
    "Return the updated order as the response, in the same serializer the GET order endpoint uses.",
    "Also, I'd like the error messages to match the tone of the other endpoints; they are all lowercase and "
    "end without a period.",
)
VIEWS = "\n".join(f"{i:>6}|    line {i} of views" for i in range(1, 40))
DONE = (
    "I added the refund handler next to capture, reusing the idempotency decorator and the GatewayClient "
    "wrapper. The handler validates the amount, calls the gateway, writes the audit entry, and returns the "
    "order."
)


def _cursor() -> dict[str, Any]:
    call = {"id": "call_0001", "type": "function", "function": {"name": "read_file", "arguments": "{}"}}
    return {
        "model": "gpt-4.1",
        "messages": [
            {"role": "system", "content": "You are a coding agent."},
            {"role": "user", "content": SPEC},
            {"role": "assistant", "content": "I'll look at the payments blueprint first."},
            {"role": "assistant", "content": None, "tool_calls": [call]},
            {"role": "tool", "tool_call_id": "call_0001", "content": VIEWS},
            {"role": "assistant", "content": DONE},
            {"role": "user", "content": FOLLOW_UP},
        ],
    }


def _forwarded(fmt: Any, body: dict[str, Any]) -> str:
    return "\n".join(segment.text for segment in extract(fmt, body)[0])


def _claude() -> dict[str, Any]:
    use = {"type": "tool_use", "id": "toolu_01", "name": "Read", "input": {"file_path": "/repo/views.py"}}
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "system": "You are Claude Code.",
        "messages": [
            {"role": "user", "content": [{"type": "text", "text": SPEC}]},
            {"role": "assistant", "content": [{"type": "text", "text": "Reading."}, use]},
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": VIEWS}],
            },
            {"role": "assistant", "content": [{"type": "text", "text": DONE}]},
            {"role": "user", "content": [{"type": "text", "text": FOLLOW_UP}]},
        ],
    }


@pytest.mark.parametrize(
    ("fmt", "build", "profile"), [("chat", _cursor, "cursor"), ("messages", _claude, "claude")]
)
def test_balanced_keeps_an_older_user_spec_whole(fmt: Any, build: Any, profile: str) -> None:
    body = build()
    optimize(fmt, body, Options(mode="balanced", profile=profile))
    assert next(s.text for s in extract(fmt, body)[0] if s.kind == "user") == SPEC


@pytest.mark.parametrize(
    ("fmt", "build", "profile"), [("chat", _cursor, "cursor"), ("messages", _claude, "claude")]
)
def test_aggressive_compacts_user_text_but_keeps_every_directive(fmt: Any, build: Any, profile: str) -> None:
    body = build()
    report = optimize(fmt, body, Options(mode="aggressive", profile=profile))
    forwarded = _forwarded(fmt, body)
    assert report.optimized_tokens < report.original_tokens
    assert "Thanks a lot, I really appreciate the help" not in forwarded  # courtesy may go
    for sentence in DIRECTIVES:
        assert sentence in forwarded


def _pasted(extra: str) -> str:
    notes = " ".join(
        f"During session {i} the team discussed the overall direction at length and shared many views on it."
        for i in range(80)
    )
    return f"Here are the notes from the offsite:\n\n{notes}\n\n{extra}"


def test_pasted_material_is_compacted_in_balanced_but_its_directives_stay() -> None:
    ask = "Summarise them for the on-call team and leave out the catering."
    text = _pasted(ask)
    result = compress_many([text], Context(mode="balanced"), [True])[0]
    assert result is not None and len(result.text) < len(text) / 2
    assert ask in result.text
    # The same text from the model, or typed but short, is treated as before / kept whole.
    assert compress_many([SPEC], Context(mode="balanced"), [True]) == [None]
    assert compress_many([text], Context(mode="balanced"), [False])[0] is not None
    assert PASTED_TOKENS >= 500


def test_a_short_typed_turn_is_not_ranked_with_the_rest() -> None:
    """Kept whole, a typed turn does not lend its length to the minimum the other turns must reach."""
    small = "The deploy went fine and nothing unusual happened today, as far as anyone could tell."
    assert compress_many([SPEC, small], Context(mode="balanced"), [True, False]) == [None, None]


@pytest.mark.parametrize(
    ("sentence", "directive"),
    [
        ("Put the handler next to the capture handler.", True),
        ("Also, reuse the idempotency decorator.", True),
        ("Then, finally, write the tests in tests/test_refunds.py.", True),
        ("- Return the updated order.", True),
        ("I'd like the errors in lowercase.", True),
        ("Could you keep the old endpoint around?", True),
        ("Please don't touch the migrations.", True),
        ("The request body takes an order id and an amount.", False),
        ("I added the refund handler next to capture.", False),
        ("Finance has been complaining for weeks.", False),
        ("Don't-care values are ignored.", False),
    ],
)
def test_directives(sentence: str, directive: bool) -> None:
    assert is_directive(sentence) is directive


@pytest.mark.parametrize(
    "clause",
    [
        "Call the gateway through the wrapper, not through the raw SDK.",
        "Send it via the queue, not via HTTP.",
        "Use the ledger table instead of the cache.",
        "Read from the replica rather than the primary.",
    ],
)
def test_a_way_ruled_out_is_a_constraint(clause: str) -> None:
    assert facts.is_constraint(clause)
