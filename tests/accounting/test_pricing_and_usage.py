"""Price lookup and cost arithmetic; billed usage read from provider bodies and streams."""

from __future__ import annotations

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.fakes.upstream import fixture_bytes, fixture_json
from worker.accounting import usage
from worker.accounting.plans import Plan, guarantee_status, parse_plans
from worker.accounting.pricing import Billed, Price, PriceTable, cost, parse_price_overrides
from worker.config import ConfigError


@pytest.mark.parametrize(
    ("model", "entry"),
    [
        ("gpt-4o-mini", "gpt-4o-mini"),
        ("gpt-4o-mini-2024-07-18", "gpt-4o-mini"),
        ("gpt-5-mini", "gpt-5-mini"),
        ("gpt-5.4-nano", "gpt-5.4-nano"),
        ("claude-sonnet-4-5-20250929", "claude-sonnet-4-5"),
        ("claude-3-5-haiku-latest", "claude-3-5-haiku"),
        ("openai/gpt-4o", "gpt-4o"),
        ("anthropic/claude-sonnet-4.5", "claude-sonnet-4-5"),
        ("gpt-5-turbo", None),  # a new name is not priced as its prefix
        ("claude-opus-4-9", None),
        ("llama3", None),
    ],
)
def test_model_lookup(model: str, entry: str | None) -> None:
    found = PriceTable().lookup(model)
    assert (found[0] if found else None) == entry


def test_cost_splits_uncached_cached_and_written_input() -> None:
    price = Price(input=3.0, output=15.0, cached_input=0.3, cache_write=3.75, cache_write_1h=6.0)
    billed = Billed(
        input_tokens=1_000_000, output_tokens=100_000, cached_input_tokens=400_000, cache_write_tokens=100_000
    )
    assert cost(billed, price) == pytest.approx(500_000 * 3e-6 + 400_000 * 0.3e-6 + 100_000 * 3.75e-6 + 1.5)
    assert cost(billed, price, "1h") == pytest.approx(
        500_000 * 3e-6 + 400_000 * 0.3e-6 + 100_000 * 6e-6 + 1.5
    )
    assert cost(billed, None) is None


def test_price_overrides_are_validated() -> None:
    table = PriceTable(parse_price_overrides({"house": {"input": 1, "output": 2}}, "cfg"))
    found = table.lookup("house")
    assert found is not None and found[1].source == "config" and found[1].cached_input is None
    for bad, where in [
        ({"m": {"input": 1}}, "pricing.m"),
        ({"m": {"input": -1, "output": 1}}, "pricing.m.input"),
        ({"m": {"input": "1", "output": 1}}, "pricing.m.input"),
        ({"m": {"input": 1, "output": 1, "cheap": True}}, "pricing.m"),
        ([1], "pricing"),
    ]:
        with pytest.raises(ConfigError) as err:
            parse_price_overrides(bad, "cfg")
        assert err.value.key == where


def test_plans_and_guarantee_status() -> None:
    plans = parse_plans({"pro": {"monthly_price_usd": 49, "guarantee": True}, "free": {}}, "cfg")
    assert guarantee_status(plans["pro"], 48.99) == "tracking"
    assert guarantee_status(plans["pro"], 49.0) == "met"
    assert guarantee_status(plans["free"], 1000) == "not_applicable"
    assert guarantee_status(None, 1000) == "not_applicable"
    assert Plan("x", 0.0, False).tracks_guarantee is False
    with pytest.raises(ConfigError):
        parse_plans({"pro": {"guarantee": True}}, "cfg")
    with pytest.raises(ConfigError):
        parse_plans({"pro": {"monthly_price_usd": "49"}}, "cfg")
    with pytest.raises(
        ConfigError, match="expected one of monthly_price_usd, guarantee, description, daily_requests"
    ):
        parse_plans({"pro": {"daily_request": 5}}, "cfg")  # the message lists the quota fields too


def test_usage_from_bodies_of_each_wire() -> None:
    chat = fixture_json("openai/chat_text.json")["usage"]
    assert usage.from_body("chat", fixture_bytes("openai/chat_text.json")) == Billed(
        chat["prompt_tokens"], chat["completion_tokens"], chat["prompt_tokens_details"]["cached_tokens"], 0
    )
    msg = fixture_json("anthropic/message_text.json")["usage"]
    read, write = msg["cache_read_input_tokens"], msg["cache_creation_input_tokens"]
    assert usage.from_body("messages", fixture_bytes("anthropic/message_text.json")) == Billed(
        msg["input_tokens"] + read + write, msg["output_tokens"], read, write
    )
    resp = fixture_json("openai/responses_text.json")["usage"]
    assert usage.from_body("responses", fixture_bytes("openai/responses_text.json")) == Billed(
        resp["input_tokens"], resp["output_tokens"], resp["input_tokens_details"]["cached_tokens"], 0
    )
    emb = fixture_json("openai/embeddings.json")["usage"]
    assert usage.from_body("embeddings", fixture_bytes("openai/embeddings.json")) == Billed(
        emb["prompt_tokens"]
    )
    assert usage.from_body("chat", b"not json") is None
    assert usage.from_body("chat", b'{"id": "x"}') is None
    for not_usage in (b"[1, 2]", b'"text"', b'{"usage": 5}', b'{"usage": null}', b'{"usage": [1]}'):
        assert usage.from_body("chat", not_usage) is None, not_usage
    # Only `usage` is read; a large answer around it changes nothing (and is not built into Python objects).
    big = b'{"choices": [{"message": {"content": "' + b"x" * 100_000 + b'"}}], "usage": {"prompt_tokens": 7}}'
    assert usage.from_body("chat", big) == Billed(7, 0, 0, 0)
    # A count that is not one (a boolean, a negative number) makes the report unusable: none is taken from it.
    assert usage.from_body("chat", b'{"usage": {"prompt_tokens": true, "completion_tokens": -3}}') is None


@pytest.mark.parametrize(
    ("wire", "fixture"),
    [
        ("chat", "openai/chat_text.sse"),
        ("chat", "openai/chat_tool_calls.sse"),
        ("chat", "openai/chat_multiline_data.sse"),
        ("messages", "anthropic/message_text.sse"),
        ("messages", "anthropic/message_tool_use.sse"),
        ("responses", "openai/responses_text.sse"),
        ("responses", "openai/responses_function_call.sse"),
        ("chat", "openrouter/chat_text.sse"),
    ],
)
def test_usage_read_at_the_end_of_a_stream_equals_a_full_decode(wire: usage.Wire, fixture: str) -> None:
    raw = fixture_bytes(fixture)
    # Split at arbitrary points: neither path may depend on chunk boundaries.
    chunks = [raw[i : i + 37] for i in range(0, len(raw), 37)]
    fast = usage.from_stream(wire, chunks)
    full = usage._decode_stream(wire, chunks)
    assert fast.billed is not None and fast.billed == full.billed
    assert fast.billed.input_tokens > 0 and fast.billed.output_tokens > 0
    assert full.output_text  # the full decode also recovers what was generated


def test_a_cut_stream_has_text_but_no_usage() -> None:
    raw = fixture_bytes("openai/chat_text.sse")
    observed = usage.from_stream("chat", [raw[: len(raw) // 2]])
    assert observed.billed is None and observed.output_text.startswith("Hello")


_VALUES = st.one_of(
    st.integers(min_value=-(2**70), max_value=2**70),
    st.booleans(),
    st.none(),
    st.floats(allow_nan=False, allow_infinity=False),
    st.text(max_size=3),
)


@settings(max_examples=300, deadline=None)
@given(
    st.dictionaries(
        st.sampled_from(["prompt_tokens", "completion_tokens", "total_tokens", "prompt_tokens_details", "x"]),
        st.one_of(
            _VALUES,
            st.dictionaries(
                st.sampled_from(["cached_tokens", "cache_write_tokens", "audio_tokens"]), _VALUES
            ),
        ),
    )
    | st.none()
    | st.integers()
)
def test_chat_body_usage_reads_like_the_decoded_document(found: object) -> None:
    """The typed fast path for Chat Completions bodies gives what reading the decoded usage gives, for
    well-formed and malformed counts alike."""
    body = msgspec.json.encode({"id": "c", "usage": found})
    expected = usage.from_doc("chat", {"usage": found}) if isinstance(found, dict) else None
    assert usage.from_body("chat", body) == expected


def test_openrouter_cache_writes_are_billed_from_a_chat_body_and_stream() -> None:
    """OpenRouter reports prompt-cache writes (Anthropic models) in `prompt_tokens_details.cache_write_tokens`;
    they are priced at the cache-write rate on the same-format path, not as plain input."""
    counts = {"prompt_tokens": 3000, "completion_tokens": 10, "total_tokens": 3010}
    details = {"cached_tokens": 500, "cache_write_tokens": 2000}
    expected = Billed(input_tokens=3000, output_tokens=10, cached_input_tokens=500, cache_write_tokens=2000)
    body = msgspec.json.encode({"id": "gen-1", "usage": {**counts, "prompt_tokens_details": details}})
    assert usage.from_body("chat", body) == expected
    chunk = {"id": "gen-1", "choices": [], "usage": {**counts, "prompt_tokens_details": details}}
    stream = b"data: " + msgspec.json.encode(chunk) + b"\n\ndata: [DONE]\n\n"
    assert usage.usage_at_the_end("chat", stream) == expected
