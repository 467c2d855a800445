"""HTML to text and table folding."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.optimize.kinds._data import (
    csv_invoices,
    html_page,
    kubectl_pods,
    markdown_services,
    missing,
    reduction,
)
from worker import tokens
from worker.optimize.base import Context
from worker.optimize.kinds import compress_tool_output, detect, markup

BALANCED = Context(mode="balanced")
AGGRESSIVE = Context(mode="aggressive")


# --- HTML -------------------------------------------------------------------------------------------


def test_html_detected() -> None:
    assert detect(html_page()) == "html"
    assert detect("<div><p>Hello</p><p>World</p><a href='/x'>x</a></div>") == "html"


def test_html_to_text_keeps_content_and_every_fact() -> None:
    text = html_page()
    result = markup.compress(text, BALANCED)
    assert result is not None and result.strategy == "html-text"
    out = result.text
    assert missing(text, out) == []
    assert reduction(text, out) >= 0.40
    lines = out.split("\n")
    assert "Title: Orders API v2.4.1 — Reference" in lines
    assert "# Orders API" in lines and "## Endpoints" in lines and "## Errors" in lines
    assert "- [Create Refund](/docs/api/v2/endpoints/create-refund) — returns 5 fields" in lines
    assert "429 | Rate limit exceeded (600 requests/min) | yes" in lines
    assert "Code | Meaning | Retry" in lines
    assert "`Authorization: Bearer <key>`" in out  # entities decoded, inline code marked
    assert "     https://api.example.com/v2/orders?limit=50" in lines  # <pre> keeps its indentation
    # Boilerplate is gone as text; what it carried survives only as facts in the closing marker.
    assert "gtag(" not in out and "font-family" not in out and "Sign in" not in out
    assert lines[-1].startswith("[trex: dropped HTML markup")


VUE_COMPONENT = """<template>
  <div class="cart">
    <span v-if="items.length === 0">Empty</span>
    <ul>
      <li v-for="item in items" :key="item.id">{{ item.name }}</li>
    </ul>
  </div>
</template>

<script setup>
import { computed } from 'vue'
const props = defineProps({ items: Array })
const total = computed(() => props.items.reduce((sum, it) => sum + it.price * it.qty, 0))
</script>

<style scoped>
.cart { display: flex; gap: 4px; }
</style>
"""
SVELTE_COMPONENT = """<script>
  export let name;
  let count = 0;
</script>

<main>
  <h1>Hello {name}!</h1>
  <button on:click={() => count++}>Clicked {count} times</button>
  <p>Visit the <a href="https://svelte.dev/tutorial">Svelte tutorial</a></p>
</main>

<style>
  h1 { color: #ff3e00; }
</style>
"""


@pytest.mark.parametrize("component", [VUE_COMPONENT, SVELTE_COMPONENT])
def test_a_single_file_component_is_source_code_and_passes_through(component: str) -> None:
    """Converted to text, a Vue or Svelte file lost its template, script and style: a Vue file came out empty
    (an empty text block, which Anthropic refuses)."""
    assert detect(component) == "code"
    for mode in ("balanced", "aggressive"):
        assert compress_tool_output(component, Context(mode=mode)) is None
        assert compress_tool_output(component, Context(mode=mode, profile="claude"), "Bash") is None


def test_markup_that_converts_to_nothing_is_kept_as_it_is() -> None:
    page = (
        "<html><body><script>track()</script><style>p{}</style><nav><a href='/'>Home</a></nav></body></html>"
    )
    assert compress_tool_output(page, BALANCED) is None


def test_html_safe_mode_is_untouched() -> None:
    assert markup.compress(html_page(), Context(mode="safe")) is None


def test_html_deterministic() -> None:
    first = markup.compress(html_page(), BALANCED)
    second = markup.compress(html_page(), BALANCED)
    assert first is not None and second is not None and first.text == second.text


# --- tables -----------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("make", "standout"),
    [
        (csv_invoices, ",failed,"),
        (markdown_services, "| degraded |"),
        (kubectl_pods, "CrashLoopBackOff"),
    ],
    ids=["csv", "markdown", "kubectl"],
)
def test_long_tables_fold_but_keep_header_edges_standouts_and_facts(
    make: Callable[[], str], standout: str
) -> None:
    text = make()
    assert detect(text) == "table"
    result = markup.compress(text, BALANCED)
    assert result is not None and result.strategy == "table-fold"
    assert missing(text, result.text) == []
    assert reduction(text, result.text) >= 0.45
    out = result.text.split("\n")
    assert any(standout in line for line in out)
    assert sum(1 for line in out if line.startswith("[trex: folded ")) == 1
    aggressive = markup.compress(text, AGGRESSIVE)
    assert aggressive is not None
    assert tokens.count(aggressive.text) <= tokens.count(result.text)
    assert missing(text, aggressive.text) == []


def test_table_marker_summarises_low_cardinality_columns() -> None:
    result = markup.compress(csv_invoices(), BALANCED)
    assert result is not None
    (marker,) = [line for line in result.text.split("\n") if line.startswith("[trex:")]
    assert "plan values: " in marker and "currency values: USD (" in marker
    assert result.text.split("\n")[0] == "invoice_id,customer,plan,status,amount,currency,issued_on"


def test_query_selects_rows() -> None:
    ctx = Context(mode="balanced", query="what is the amount on INV-2026050?")
    result = markup.compress(csv_invoices(), ctx)
    assert result is not None
    assert any(line.startswith("INV-2026050,") for line in result.text.split("\n"))


def test_markdown_safe_mode_trims_padding_only() -> None:
    text = markdown_services(8)
    result = markup.compress(text, Context(mode="safe"))
    assert result is not None and result.strategy == "table-whitespace"
    out = result.text.split("\n")
    assert out[0] == "| Service | Region | Status | p99 latency |"
    assert out[1] == "| --- | --- | --- | --- |"

    def cells(line: str) -> list[str]:
        return [c.strip() for c in line.strip().strip("|").split("|")]

    original = text.split("\n")
    assert [cells(line) for line in out[2:]] == [cells(line) for line in original[2:]]


def test_short_tables_are_not_folded() -> None:
    text = csv_invoices(6)
    assert markup.compress(text, BALANCED) is None


def test_csv_is_not_mistaken_for_search_output() -> None:
    assert detect(csv_invoices()) == "table"


def test_dispatch_through_compress_tool_output() -> None:
    html = compress_tool_output(html_page(), BALANCED)
    table = compress_tool_output(kubectl_pods(), BALANCED)
    assert html is not None and html.strategy == "html-text"
    assert table is not None and table.strategy == "table-fold"


def test_safe_mode_keeps_escaped_pipes_and_empty_trailing_tsv_fields() -> None:
    """Safe mode is lossless: an escaped pipe stays cell text (not a new column) and a trailing tab is an
    empty last field, not padding. A TSV numbered by its first column is a table, not a `cat -n` read."""
    md = (
        "| Operator   | Meaning                     |\n|------------|-----------------------------|\n"
        "| a \\| b     | either a or b, escaped pipe |\n| x          | plain value here            |\n"
    )
    result = compress_tool_output(md, Context(mode="safe"))
    assert result is not None and "| a \\| b | either a or b, escaped pipe |" in result.text.split("\n")
    tsv = "id\tname\tnote\tspare\n" + "\n".join(
        f"{i}\titem{i}\t{'' if i % 2 else 'ok'}\t" for i in range(1, 15)
    )
    assert detect(tsv) == "table"
    for mode in ("safe", "balanced"):
        out = compress_tool_output(tsv, Context(mode=mode))
        kept = tsv if out is None else out.text
        rows = [line for line in kept.split("\n") if line and not line.startswith("[trex")]
        assert all(line.count("\t") == 3 for line in rows), kept


_PODS_HEADER = "NAME                                READY   STATUS             RESTARTS        AGE"
_POD_SUFFIXES = [
    "cfcd2",
    "c4ca4",
    "c81e7",
    "eccbc",
    "a87ff",
    "e4da3",
    "16790",
    "8f14e",
    "c9f0f",
    "45c48",
    "d3d94",
    "6512b",
    "c20ad",
    "c51ce",
]


def _pods(ready: dict[str, str], restarts: dict[str, str]) -> str:
    lines = [_PODS_HEADER]
    for suffix in _POD_SUFFIXES:
        name = f"payments-api-7d9f8c6b5-{suffix}"
        lines.append(
            f"{name:<36}{ready.get(suffix, '1/1'):<8}{'Running':<19}{restarts.get(suffix, '0'):<16}3h"
        )
    for suffix in ["f8991", "38b3e", "ec895", "6974c", "c9e10", "65b9e"]:
        lines.append(f"{'ledger-worker-5c4b7d9f8-' + suffix:<36}{'1/1':<8}{'Running':<19}{'0':<16}3h")
    return "\n".join(lines)


@pytest.mark.parametrize("mode", ["balanced", "aggressive"])
def test_the_row_with_a_rare_value_in_its_column_stays(mode: str) -> None:
    """ "One of the payments-api pods keeps restarting": the restarting pod was folded, and the marker said
    `RESTARTS values: 0 (14), 7 (2m ago) (1)` without its name; a pod not ready (`0/1`) went the same way."""
    text = _pods({"a87ff": "0/1"}, {"45c48": "7 (2m ago)"})
    ctx = Context(mode=mode, query="One of the payments-api pods keeps restarting. Get its previous logs.")
    result = compress_tool_output(text, ctx, "Bash")
    assert result is not None and result.strategy == "table-fold"
    lines = text.split("\n")
    out = result.text.split("\n")
    for suffix in ("45c48", "a87ff"):
        (row,) = [line for line in lines if suffix in line]
        assert row in out


def test_a_minority_value_of_the_folded_rows_names_them() -> None:
    text = _pods({}, {"c81e7": "1", "e4da3": "1", "8f14e": "2", "d3d94": "1", "c20ad": "3", "c51ce": "1"})
    result = markup.compress(text, Context(mode="aggressive"))
    assert result is not None
    (marker,) = [line for line in result.text.split("\n") if line.startswith("[trex:")]
    assert "RESTARTS values: 0 (" in marker
    assert "1 (4: payments-api-7d9f8c6b5-c81e7, payments-api-7d9f8c6b5-e4da3," in marker


def test_the_marker_lists_a_folded_pod_by_its_whole_name() -> None:
    """The marker listed `facts kept: 16790`, a fragment of `payments-api-7d9f8c6b5-16790`."""
    result = markup.compress(_pods({}, {}), Context(mode="balanced"))
    assert result is not None
    (marker,) = [line for line in result.text.split("\n") if line.startswith("[trex:")]
    assert marker.endswith("; facts kept: payments-api-7d9f8c6b5-16790]")
