"""JSON tool output: lossless minify in safe mode, record-array folding with full fact retention otherwise."""

from __future__ import annotations

import json
import random
from typing import Any

import msgspec
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from tests.conftest import GatewaySetup
from tests.optimize.kinds._data import (
    FAILED_ORDER_INDEX,
    OUTLIER_ORDER_INDEX,
    missing,
    orders,
    reduction,
    users,
)
from worker import tokens
from worker.optimize import facts
from worker.optimize.base import Context
from worker.optimize.kinds import compress_tool_output, detect, json_output
from worker.optimize.kinds._common import _chunks, pieces_at_least

BALANCED = Context(mode="balanced")


def _markers(value: Any) -> list[str]:
    """Every trex marker string anywhere in a decoded document."""
    if isinstance(value, str):
        return [value] if value.startswith("[trex:") else []
    if isinstance(value, list):
        return [m for item in value for m in _markers(item)]
    if isinstance(value, dict):
        return [m for item in value.values() for m in _markers(item)]
    return []


@pytest.mark.parametrize("indent", [2, None], ids=["pretty", "minified"])
def test_orders_balanced_meets_goal_and_keeps_every_fact(indent: int | None) -> None:
    text = json.dumps(orders(), indent=indent)
    assert detect(text) == "json"
    result = json_output.compress(text, BALANCED)
    assert result is not None and result.strategy == "json-fold"
    assert missing(text, result.text) == []
    assert reduction(text, result.text) >= 0.70
    decoded = json.loads(result.text)  # still valid JSON
    assert decoded["has_more"] is True and decoded["next_cursor"] == "cur_8f3K2mQ1xZ"
    (marker,) = _markers(decoded)
    assert marker.startswith("[trex: folded ")
    assert "status values: paid (" in marker
    assert "same keys: id, order_number, customer, status" in marker


def test_first_last_error_and_outlier_records_stay_whole() -> None:
    doc = orders()
    result = json_output.compress(json.dumps(doc, indent=2), BALANCED)
    assert result is not None
    kept = [item for item in json.loads(result.text)["data"] if isinstance(item, dict)]
    originals = doc["data"]
    for index in (0, FAILED_ORDER_INDEX, OUTLIER_ORDER_INDEX, len(originals) - 1):
        assert originals[index] in kept, index
    assert [item["id"] for item in kept] == sorted(item["id"] for item in kept)  # order preserved


def test_query_names_a_record_it_stays_whole() -> None:
    doc = orders()
    target = doc["data"][150]
    ctx = Context(mode="balanced", query=f"why was {target['order_number']} not shipped?")
    result = json_output.compress(json.dumps(doc), ctx)
    assert result is not None
    assert target in json.loads(result.text)["data"]


def test_key_order_is_preserved() -> None:
    doc = orders()
    result = json_output.compress(json.dumps(doc), BALANCED)
    assert result is not None
    first = json.loads(result.text)["data"][0]
    assert list(first) == list(doc["data"][0])
    assert list(first["customer"]) == list(doc["data"][0]["customer"])


def test_users_array_at_top_level() -> None:
    accounts = users()
    text = json.dumps(accounts, indent=2)
    result = json_output.compress(text, BALANCED)
    assert result is not None
    assert missing(text, result.text) == []
    assert reduction(text, result.text) >= 0.70
    kept = [item for item in json.loads(result.text) if isinstance(item, dict)]
    assert accounts[33] in kept and accounts[151] in kept  # the locked accounts (error key, active=false)


def test_aggressive_is_not_larger_than_balanced() -> None:
    text = json.dumps(orders(), indent=2)
    balanced = json_output.compress(text, BALANCED)
    aggressive = json_output.compress(text, Context(mode="aggressive"))
    assert balanced is not None and aggressive is not None
    assert tokens.count(aggressive.text) <= tokens.count(balanced.text)
    assert missing(text, aggressive.text) == []
    json.loads(aggressive.text)


def test_safe_mode_only_minifies() -> None:
    doc = orders(n=30)
    text = json.dumps(doc, indent=4)
    result = json_output.compress(text, Context(mode="safe"))
    assert result is not None and result.strategy == "json-minify"
    assert json.loads(result.text) == doc
    assert "trex" not in result.text


def test_safe_minify_keeps_number_and_string_spelling() -> None:
    text = (
        '{\n  "total": 1.50,\n  "big": 12345678901234567890123,\n'
        '  "url": "https:\\/\\/x.example\\/a",\n  "e": 1E+3\n}'
    )
    result = json_output.compress(text, Context(mode="safe"))
    assert result is not None
    assert (
        result.text
        == '{"total":1.50,"big":12345678901234567890123,"url":"https:\\/\\/x.example\\/a","e":1E+3}'
    )


def test_float_spelling_survives_folding() -> None:
    records = [{"sku": f"SKU-{i:04d}", "price": "x", "weight": 1.50 + i} for i in range(40)]
    text = json.dumps(records, indent=2).replace('"weight": 1.5\n', '"weight": 1.50\n')
    assert '"weight": 1.50' in text
    result = json_output.compress(text, BALANCED)
    assert result is not None
    assert '"weight":1.50' in result.text  # the first record is kept, its float spelled as in the source


def test_nested_arrays_are_folded_where_they_are() -> None:
    inner = [{"line": i, "sku": "A", "qty": 1, "note": "standard packaging requested"} for i in range(30)]
    doc = {"order": {"id": "ORD-1", "lines": inner}, "meta": {"page": 1}}
    text = json.dumps(doc, indent=2)
    result = json_output.compress(text, BALANCED)
    assert result is not None
    out = json.loads(result.text)
    assert out["meta"] == {"page": 1} and out["order"]["id"] == "ORD-1"
    assert isinstance(out["order"]["lines"][2], str) and out["order"]["lines"][2].startswith(
        "[trex: folded 27 of 30"
    )


def test_short_arrays_are_left_alone() -> None:
    doc = [{"id": i, "name": f"item {i}"} for i in range(5)]
    text = json.dumps(doc, indent=2)
    result = json_output.compress(text, BALANCED)
    assert result is not None and result.strategy == "json-minify"
    assert json.loads(result.text) == doc


def test_fact_dense_records_are_kept_not_folded() -> None:
    # Nothing but an id and a timestamp per record: a marker would be as long as the records themselves.
    doc = [{"id": f"evt_{i:08d}", "at": f"2026-01-{1 + i % 28:02d}T10:{i % 60:02d}:00Z"} for i in range(50)]
    text = json.dumps(doc)
    result = json_output.compress(text, BALANCED)
    assert result is None or json.loads(result.text) == doc


def test_quotes_inside_facts_do_not_break_retention() -> None:
    doc = [{"id": i, "cmd": f'`echo "run {i}"`', "state": "done", "owner": "build-bot"} for i in range(30)]
    text = json.dumps(doc, indent=2)
    result = json_output.compress(text, BALANCED)
    assert result is not None
    assert missing(text, result.text) == []
    json.loads(result.text)


def test_json_lines_are_folded_line_by_line() -> None:
    lines = [
        json.dumps(
            {"ts": f"2026-03-14T09:12:{i % 60:02d}Z", "level": "info", "msg": "request served", "n": i}
        )
        for i in range(60)
    ]
    lines[40] = json.dumps(
        {"ts": "2026-03-14T09:12:40Z", "level": "error", "msg": "upstream timeout", "n": 40}
    )
    text = "\n".join(lines)
    assert detect(text) == "json"
    result = json_output.compress(text, BALANCED)
    assert result is not None
    out = result.text.split("\n")
    assert lines[0] in out and lines[40] in out and lines[-1] in out
    for line in out:
        msgspec.json.decode(line)  # every line is still JSON (the marker is a JSON string)
    assert missing(text, result.text) == []


def test_deterministic() -> None:
    text = json.dumps(orders(), indent=2)
    first = json_output.compress(text, BALANCED)
    second = json_output.compress(text, BALANCED)
    assert first is not None and second is not None and first.text == second.text


def test_not_json_and_tiny_inputs() -> None:
    assert json_output.compress("not json", BALANCED) is None
    assert json_output.compress('{"a": ', BALANCED) is None
    assert json_output.compress('{"a":1}', BALANCED) is None  # already minimal: nothing to gain
    assert json_output.compress('{"a": 1}', Context(mode="off")) is None


def test_dispatch_through_compress_tool_output() -> None:
    text = json.dumps(orders(), indent=2)
    result = compress_tool_output(text, BALANCED)
    assert result is not None and result.strategy == "json-fold"
    assert missing(text, result.text) == []


def _cart(n: int = 20) -> list[dict[str, Any]]:
    return [
        {"sku": f"widget-{chr(97 + i % 26)}", "qty": 1 + i % 3, "warnings": [], "errors": []}
        for i in range(n)
    ]


@pytest.mark.parametrize("errors", [1, 3, 5])
def test_records_with_non_empty_error_and_warning_lists_stay_whole(errors: int) -> None:
    items = _cart()
    for j in range(errors):
        items[3 + 3 * j]["errors"] = [f"payment declined: insufficient funds ({j})"]
    items[17]["warnings"] = ["address could not be verified"]
    result = json_output.compress(json.dumps({"results": items}, indent=2), BALANCED)
    assert result is not None and result.strategy == "json-fold"
    kept = [item for item in json.loads(result.text)["results"] if isinstance(item, dict)]
    for index in [*(3 + 3 * j for j in range(errors)), 17]:
        assert items[index] in kept, index


def test_error_like_strings_inside_lists_mark_their_record() -> None:
    items = [
        {"id": f"job-{i}", "state": "done", "events": ["queued", "started", "finished"]} for i in range(20)
    ]
    items[11]["events"] = ["queued", "started", "upload failed: connection refused"]
    result = json_output.compress(json.dumps(items, indent=2), BALANCED)
    assert result is not None and result.strategy == "json-fold"
    assert items[11] in json.loads(result.text)


def test_the_marker_summarises_numbers_and_nulls_with_few_values() -> None:
    items = [
        {
            "name": f"task number {i} of the nightly batch",
            "priority": [1, 2, 3][i % 3],
            "weight": [0.5, 1.5][i % 2],
            "owner": None if i % 4 == 0 else "ops-team",
            "tier": "gold",
        }
        for i in range(24)
    ]
    result = json_output.compress(json.dumps(items, indent=2), BALANCED)
    assert result is not None
    (marker,) = _markers(json.loads(result.text))
    assert "priority values: 3 (7), 1 (7), 2 (7)" in marker
    assert "weight values: 0.5 (11), 1.5 (10)" in marker
    # A minority value names its records (the five without an owner), by their identity field.
    nameless = ", ".join(f"task number {i} of the nightly batch" for i in (4, 8, 12, 16, 20))
    assert f"owner values: ops-team (16), null (5: {nameless})" in marker


def test_the_marker_lists_signed_amounts_and_ids_verbatim() -> None:
    items = [
        {
            "txn": f"txn_{i:04d}",
            "type": "adjustment",
            "amount": (-1250.75 - i) if i % 2 else (42.5 + i),
            "display": f"EUR {1 + i}.234,56" if i % 3 == 0 else "n/a",
            "currency": "EUR",
        }
        for i in range(24)
    ]
    text = json.dumps(items, indent=1)
    result = json_output.compress(text, BALANCED)
    assert result is not None and result.strategy == "json-fold"
    (marker,) = _markers(json.loads(result.text))
    for fact in ("txn_0002", "-1253.75", "EUR 4.234,56", "txn_0022"):
        assert fact in marker
    assert "1253.75" not in marker.replace("-1253.75", "")  # never without its sign


@pytest.mark.parametrize(
    "config",
    ['{"mode": "strict", "mode": "permissive"}', '{"offset": -0}', '{"offsets": [1, -0, 2]}'],
    ids=["duplicate-keys", "negative-zero", "negative-zero-in-array"],
)
def test_a_document_that_does_not_reencode_is_minified_not_folded(config: str) -> None:
    records = ",".join(
        f'{{"id": {i}, "name": "widget", "state": "ok", "note": "routine sync"}}' for i in range(30)
    )
    doc = '{"config": ' + config + ', "items": [' + records + "]}"
    result = json_output.compress(doc, BALANCED)
    assert result is not None and result.strategy == "json-minify"
    assert result.text == msgspec.json.format(doc.encode(), indent=-1).decode()


def test_string_escapes_alone_do_not_stop_a_fold() -> None:
    records = ",".join(
        f'{{"id": {i}, "name": "caf\\u00e9", "state": "ok", "note": "routine sync"}}' for i in range(30)
    )
    result = json_output.compress('{"items": [' + records + "]}", BALANCED)
    assert result is not None and result.strategy == "json-fold"


_FLAG_KEYS = [
    "new-checkout",
    "fast-refunds",
    "fx-cache",
    "dark-mode",
    "ledger-sync",
    "pdf-v2",
    "tax-engine",
    "smart-retry",
    "beta-dashboard",
    "one-click",
    "apple-pay",
    "sepa-debit",
    "invoice-email",
    "audit-trail",
    "webhooks-v2",
    "rate-limit-v3",
]
_FLAGS_ON = {"new-checkout", "dark-mode", "tax-engine", "one-click", "invoice-email", "rate-limit-v3"}


def _flags() -> str:
    items = [
        {
            "key": key,
            "name": key.replace("-", " ").title(),
            "kind": "boolean",
            "on": key in _FLAGS_ON,
            "archived": False,
            "tags": ["payments"],
            "maintainer": "team-payments",
        }
        for key in _FLAG_KEYS
    ]
    return json.dumps({"items": items, "totalCount": len(items)}, indent=2)


@pytest.mark.parametrize("mode", ["balanced", "aggressive"])
def test_a_fold_names_its_records_and_who_holds_a_minority_value(mode: str) -> None:
    """ "Which flags are turned on?": the fold said `on values: false (9), true (4)` and the keys were gone."""
    result = json_output.compress(_flags(), Context(mode=mode, query="Which feature flags are turned on?"))
    assert result is not None and result.strategy == "json-fold"
    doc = json.loads(result.text)
    (marker,) = _markers(doc)
    kept = {item["key"] for item in doc["items"] if isinstance(item, dict)}
    folded = [key for key in _FLAG_KEYS if key not in kept]
    assert f"key of each: {', '.join(folded)};" in marker
    on = [key for key in folded if key in _FLAGS_ON]
    assert f", true ({len(on)}: {', '.join(on)})" in marker
    assert "facts kept" not in marker  # `v2` of `pdf-v2` was listed alone; the key names it already
    for key in _FLAGS_ON:
        assert key in kept or key in marker


def test_numeric_ids_the_marker_lists_as_facts_are_not_listed_twice() -> None:
    text = json.dumps(orders(), indent=2)
    result = json_output.compress(text, BALANCED)
    assert result is not None
    (marker,) = _markers(json.loads(result.text))
    assert "id of each" not in marker and "ORD-10003" in marker


def test_a_fact_inside_a_longer_value_is_listed_as_that_value() -> None:
    items = [
        {"pod": f"payments-api-7d9f8c6b5-{i:05d}", "ready": "1/1", "zone": "eu-west-1a"} for i in range(30)
    ]
    result = json_output.compress(json.dumps(items, indent=2), BALANCED)
    assert result is not None
    (marker,) = _markers(json.loads(result.text))
    listed = marker.partition("facts kept: ")[2].rstrip("]").split(", ")
    assert "payments-api-7d9f8c6b5-00012" in listed and "00012" not in listed


# The pieces tokens are made of, in ASCII: words, contractions, digit runs, punctuation, blanks, line breaks
# (a piece takes the slashes after its line breaks) and control characters.
_ASCII_PARTS = [
    *["paid", "USD", "it's", "O'Neil", "'", "''", "s", "camelCase", "ABCdef", "x", "e", "E"],
    *["5000", "854.12", "1", "12", "1234567", "-0", "1e+30", "0x1f", "v2"],
    *['{"', '":', '","', '":"', "},{", "[", "]", ",", ":", "-", "_", "/", "//", "\\n", '\\"', "!?"],
    *[" ", "  ", "\t", "\n", "\r\n", "\n/", "\v", "\f", "\x00", "\x01", "\x1c", "\x1f", "\x7f"],
]


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(_ASCII_PARTS), min_size=1, max_size=40))
def test_the_token_floor_of_folded_records_is_never_above_their_count(parts: list[str]) -> None:
    """A fold is judged worth it from a floor of the folded records' tokens; above the count, a fold that
    saves too little would pass."""
    text = "".join(parts)
    assert pieces_at_least(text) <= tokens.count(text)


def test_records_with_a_lone_backtick_each_fold_like_any_others() -> None:
    """The folded records' facts come from one scan of them all: a backtick in one record and one in the
    next are not an inline-code fact (which, holding quotes, would keep both records whole)."""
    records = [{"id": f"job-{i}", "note": "press ` to retry", "state": "done"} for i in range(30)]
    result = json_output.compress(json.dumps(records, indent=2), BALANCED)
    assert result is not None and result.strategy == "json-fold"
    doc = json.loads(result.text)
    assert len([item for item in doc if isinstance(item, dict)]) == 3  # the first two and the last
    (marker,) = _markers(doc)
    assert marker.startswith("[trex: folded 27 of 30 items")


def _jobs(size: str) -> str:
    records = [f'{{"id": {i}, "state": "done", "size": {size if i == 5 else i * 1000}}}' for i in range(40)]
    return "[\n  " + ",\n  ".join(records) + "\n]"


@pytest.mark.parametrize(
    ("text", "kept"),
    [
        (_jobs("9" * 400), "9" * 400),
        ('{\n  "a": ' * 600 + '"ORD-77812"' + "\n}" * 600, "ORD-77812"),
    ],
    ids=["integer-past-float-range", "nested-600-deep"],
)
def test_json_the_fold_cannot_handle_is_still_forwarded_minified(
    gateway: GatewaySetup, text: str, kept: str
) -> None:
    """A tool result whose records hold an integer of 400 digits failed the whole request (the outlier test
    turned it into a float), and so did a document nested 600 levels deep (deeper than the fold's walk goes).
    """
    call = {"id": "call_1", "type": "function", "function": {"name": "list_jobs", "arguments": "{}"}}
    messages: list[Any] = [
        {"role": "user", "content": "Which job is the largest?"},
        {"role": "assistant", "content": None, "tool_calls": [call]},
        {"role": "tool", "tool_call_id": "call_1", "content": text},
    ]
    raw = gateway.openai().chat.completions.with_raw_response.create(
        model="gpt-4o-mini", messages=messages, extra_body={"trex": {"optimize": {"mode": "balanced"}}}
    )
    assert raw.parse().choices[0].message.content
    assert int(raw.headers["X-Trex-Saved-Tokens"]) > 0
    forwarded = gateway.fake.last().json["messages"][-1]["content"]
    assert kept in forwarded and len(forwarded) < len(text)


def test_an_integer_the_decoder_refuses_is_still_minified() -> None:
    """Minifying copies numbers as text; decoding refuses an integer of thousands of digits (content
    detection does too, so only a caller of this compressor meets it)."""
    text = _jobs("9" * 5000)
    result = json_output.compress(text, BALANCED)
    assert result is not None and result.strategy == "json-minify"
    assert "9" * 5000 in result.text


# Values whose facts sit at the edges of strings and numbers, next to the quotes, commas, colons and blanks
# that pretty printing moves (amounts, units, times, dates, ids, paths, signs, escapes, line breaks).
_FACTY_STRINGS = [
    *["ORD-1042", "2026-03-14T10:00:00Z", "$1,234.50", "EUR 5", "5 EUR", "v1.2.3", "a.py:12", "10 ms", "5pm"],
    *["12 %", "-12%", "https://x.io/a?b=1", "e@x.io", "0x1f", "7f3a9c2e", "#1234", "E501", "NOT_FOUND"],
    *["cus_9fK2LmQ", "~/a/b", "/srv/app/x.log", "C:\\x\\y", "March 14, 2026", "P3D", "fe80::1ff:fe23", "ms"],
    *["", " ", "  x", "x.", "a\nb", '"', "\\", "é", "10-200", "1,200", "pm", "UTC", "-", "+5", "12:"],
]


def _random_value(rng: random.Random, depth: int) -> Any:
    roll = rng.random()
    if depth < 3 and roll < 0.15:
        return {
            rng.choice(["id", "total", "ms", "at", "-5", "pm", "a b"]): _random_value(rng, depth + 1)
            for _ in range(3)
        }
    if depth < 3 and roll < 0.25:
        size = rng.choice([2, 9, 12])
        return [
            {"id": i, "v": _random_value(rng, depth + 1), "n": _random_value(rng, depth + 1)}
            for i in range(size)
        ]
    if roll < 0.55:
        return " ".join(rng.choice(_FACTY_STRINGS) for _ in range(rng.randint(0, 3)))
    if roll < 0.8:
        return rng.choice([0, 5, -5, 10, 854, -1253, 1234567, 12.5, -0.25, 1e21, 5000])
    return rng.choice([True, False, None])


def _printed(rng: random.Random, doc: Any) -> str:
    """`doc` as JSON, minified or pretty, with blanks before and after colons and commas."""
    indent = rng.choice([None, 0, 1, 2, 4, "\t"])
    separators = rng.choice([(",", ":"), (", ", ": "), (" ,", " : "), (",\n", ":\n")])
    return json.dumps(doc, indent=indent, separators=separators, ensure_ascii=rng.random() < 0.5)


def test_the_facts_of_the_minified_document_are_the_facts_of_the_input() -> None:
    """The final check of a JSON fold and its markers read the facts of one scan of the minified document
    (`json_output._Scan`): without a backtick, and cut only at line breaks, the input holds the same facts."""
    rng = random.Random(17)
    compared = 0
    for _ in range(1_500):
        text = _printed(rng, {"data": _random_value(rng, 0), "x": _random_value(rng, 1)})
        minified = msgspec.json.format(text.encode(), indent=-1).decode()
        scan = json_output._Scan.of(text, minified)
        assert scan is not None  # no backtick, no line of over 8,000 characters
        in_input = {fact for chunk in _chunks(text) for _, fact in facts.fact_spans(chunk)}
        assert {fact for _, fact in scan.spans} == in_input, text
        compared += bool(in_input)
    assert compared > 1_000


# Values that end or start next to a `,"` cut: a string ending with a comma puts one right before its
# closing quote, and facts may end with a comma (`$5,`) or stop before one (a URL, a plain number).
_SEAM_PARTS = [
    *["$5,", "1,200,", "EUR 1,", "https://x.io/a,", "5 -", "12", "ORD-1042,", "a", "10:30,", " PM", "USD"],
    *["5%", ",", "-5", "+5,", "e@x.io,", "v1.2,", "/a/b,", "ERROR,", "MAX_X,", "12,5", "1,2,3,", '"', "\\"],
    *["5 ms,", "Mar 5,", "é,", "7f3a9c2e,", "#12,", " "],
]


def test_the_scan_of_the_minified_document_by_member_skeletons_is_the_plain_scan(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """`json_output._member_spans` (the document cut at `,"`, each digit skeleton scanned once) finds the facts
    of one scan of the whole text, at the same places; here it cuts every document, however few of its
    pieces share a skeleton."""
    rng = random.Random(29)
    for doc in (orders(), users()):  # records: few skeletons, each scanned once
        text = json.dumps(doc, separators=(",", ":"))
        forms = facts.digit_skeleton(text).split(',"')
        assert len(set(forms)) <= json_output._DISTINCT_MEMBERS_SHARE * len(forms)
        assert json_output._member_spans(text) == facts.fact_spans(text)
    monkeypatch.setattr(json_output, "_DISTINCT_MEMBERS_SHARE", 1.0)
    compared = 0
    for _ in range(4_000):
        if rng.random() < 0.5:
            rows = [{"id": f"r-{i}", "v": _random_value(rng, 2)} for i in range(rng.randint(0, 20))]
            doc: Any = {"data": _random_value(rng, 0), "rows": rows}
        else:
            values = [
                "".join(rng.choice(_SEAM_PARTS) for _ in range(rng.randint(0, 4)))
                if rng.random() < 0.7
                else rng.choice([5, -12, 1200, 3.5, None])
                for _ in range(rng.randint(0, 12))
            ]
            doc = {"".join(rng.choice(_SEAM_PARTS) for _ in range(rng.randint(0, 2))): values, "k": values}
        minified = msgspec.json.format(json.dumps(doc).encode(), indent=-1).decode()
        if "`" in minified:
            continue
        spans = facts.fact_spans(minified)
        assert json_output._member_spans(minified) == spans, minified
        compared += bool(spans) and "0x" not in minified and minified.count(',"') >= 2
    assert compared > 2_000


def test_the_facts_of_each_record_are_its_own_facts_in_words() -> None:
    """`_facts_in_words` reads each record's facts from one scan (of the document or of the records), and
    takes a record's facts as distinct where none is a run of a longer fact of the records: what
    `facts.facts_in_words` of each record alone gives."""
    rng = random.Random(31)
    values = ["5117", "5117.0", "ORD-5117", "txn_5117ab", "17", "2026-03-14", "2026", "v2", "pdf-v2", "a b"]
    values += ["$5,117.00", "117", "51", "ORD-1042", "1042", "x", "E501", "501", "10:30", "30"]
    compared = 0
    for _ in range(600):
        records = [
            {
                key: rng.choice([*values, rng.randint(0, 9999), rng.random() * 1000])
                for key in ("id", "a", "b")
            }
            for _ in range(rng.randint(1, 12))
        ]
        doc = {"data": records, "n": rng.choice(values)}
        minified = msgspec.json.encode(doc).decode()
        scan = json_output._Scan.of(minified, minified)
        encoded = [msgspec.json.encode(record).decode() for record in records]
        wanted = sorted(rng.sample(range(len(records)), rng.randint(0, len(records))))
        expected = {i: facts.facts_in_words(encoded[i]) for i in wanted}
        assert json_output._facts_in_words(encoded, wanted, scan) == expected, minified
        assert json_output._facts_in_words(encoded, wanted) == expected, minified
        compared += sum(len(found) != len(facts.fact_spans(encoded[i])) for i, found in expected.items())
    assert compared > 100  # records where a fact is left out as a run of another, or found twice


@pytest.mark.parametrize("mode", ["safe", "balanced", "aggressive"])
def test_folding_from_the_scan_of_the_minified_document_changes_nothing(
    mode: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The same output as scanning the input for the final check and the folded records for the markers."""
    rng = random.Random(23)
    cases = []
    for _ in range(300):
        doc = {
            "data": _random_value(rng, 0),
            "rows": [{"id": f"r-{i}", "v": _random_value(rng, 2)} for i in range(12)],
        }
        cases.append(_printed(rng, doc))
    cases += [json.dumps(orders(), indent=2), json.dumps(users()), json.dumps(orders())]
    ctx = Context(mode=mode, query="ORD-1042 refund 5pm")  # type: ignore[arg-type]
    shared = [json_output.compress(text, ctx) for text in cases]
    monkeypatch.setattr(json_output._Scan, "of", classmethod(lambda cls, text, minified: None))
    apart = [json_output.compress(text, ctx) for text in cases]
    assert shared == apart
    expected = "json-minify" if mode == "safe" else "json-fold"
    assert sum(r is not None and r.strategy == expected for r in shared) > 100


@settings(max_examples=500, deadline=None)
@given(st.lists(st.sampled_from(["a", "bb", "cccc", "\n", "\n\n"]), max_size=60), st.integers(0, 12))
def test_a_line_longer_than_a_chunk_is_found_without_splitting_the_text(parts: list[str], size: int) -> None:
    text = "".join(parts)
    assert json_output._has_longer_line(text, size) == (max(map(len, text.split("\n"))) > size)
