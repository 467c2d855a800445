"""Compiler, vet and linter diagnostics (`path:line:col: message`): every finding is kept, none ranked away
like a grep match; a line and a column after a path are never read as a time of day."""

from __future__ import annotations

import random

import pytest

from worker.optimize import facts
from worker.optimize.base import Context
from worker.optimize.kinds import compress_tool_output, detect, search
from worker.optimize.pipeline import Options, optimize

_FILES = (
    "internal/ledger/post.go",
    "internal/ledger/reverse.go",
    "internal/fx/cache.go",
    "cmd/server/main.go",
)
_FINDINGS = (
    "printf: fmt.Sprintf format %d has arg id of wrong type string",
    "copylocks: call of fmt.Println copies lock value: sync.Mutex",
    "unusedresult: result of errors.New call not used",
    'shadow: declaration of "err" shadows declaration at line 41',
    "composites: github.com/shopspring/decimal.Decimal struct literal uses unkeyed fields",
)


def go_vet(n: int = 40, seed: int = 5) -> str:
    rnd = random.Random(seed)
    return "\n".join(
        f"{_FILES[i % len(_FILES)]}:{rnd.randint(10, 300)}:{rnd.randint(2, 30)}: {rnd.choice(_FINDINGS)}"
        for i in range(n)
    )


GO_BUILD = """\
# github.com/acme/payments/internal/ledger
internal/ledger/post.go:52:9: undefined: txnKey
internal/ledger/post.go:88:21: cannot use amt (variable of type float64) as decimal.Decimal value
internal/ledger/reverse.go:140:2: too many arguments in call to fx.Convert
\thave (context.Context, string, string, decimal.Decimal)
\twant (string, string, decimal.Decimal)
internal/ledger/reverse.go:171:14: l.store.Put undefined (type *Ledger has no field or method store)
internal/ledger/reverse.go:203:1: missing return"""
STATICCHECK = "\n".join(
    f"pkg/billing/invoice.go:{10 * i + 3}:2: should omit nil check; len() for nil slices is zero (S1009)"
    for i in range(12)
)
ESLINT_UNIX = "\n".join(
    f"/repo/src/components/Cart{i}.tsx:{i + 4}:7: 'total' is assigned a value but never used. "
    "[Error/@typescript-eslint/no-unused-vars]"
    for i in range(12)
)


@pytest.mark.parametrize(
    "text", [go_vet(), GO_BUILD, STATICCHECK, ESLINT_UNIX], ids=["vet", "build", "sc", "es"]
)
@pytest.mark.parametrize("mode", ["safe", "balanced", "aggressive"])
def test_every_diagnostic_is_kept(text: str, mode: str) -> None:
    """`go vet` output was taken for grep matches and BM25-ranked: balanced dropped 15 of 40 findings,
    aggressive 30, behind markers reading `facts kept: 70:26, 161, 172`."""
    assert detect(text) == "diagnostics"
    ctx = Context(mode=mode, query="Make the build and go vet pass.", profile="claude")
    assert compress_tool_output(text, ctx, "Bash") is None  # nothing to take away


@pytest.mark.parametrize("mode", ["balanced", "aggressive"])
def test_go_vet_through_the_pipeline(mode: str) -> None:
    vet = go_vet()
    use = {"type": "tool_use", "id": "toolu_01", "name": "Bash", "input": {"command": "go vet ./..."}}
    body = {
        "model": "claude-sonnet-4-5",
        "max_tokens": 1024,
        "messages": [
            {"role": "user", "content": "Make the build and go vet pass."},
            {"role": "assistant", "content": [{"type": "text", "text": "Running go vet."}, use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": vet}]},
        ],
    }
    optimize("messages", body, Options(mode=mode, profile="claude"))
    assert body["messages"][2]["content"][0]["content"] == vet


def test_repeated_findings_are_counted() -> None:
    line = "internal/fx/cache.go:94:29: copylocks: call of fmt.Println copies lock value: sync.Mutex"
    result = compress_tool_output("\n".join([line] * 6 + [go_vet(4)]), Context(mode="balanced"))
    assert result is not None and result.strategy == "diagnostics-dedupe"
    assert result.text.split("\n")[:2] == [line, "[trex: previous line repeated 5 more times]"]


def test_a_line_and_column_after_a_path_are_not_facts_of_their_own() -> None:
    assert facts.find_facts("internal/ledger/post.go:70:26: copylocks") == ["internal/ledger/post.go"]
    assert facts.find_facts("see main.go:161 at 10:30 UTC") == ["main.go", "10:30 UTC"]
    assert facts.find_facts("src/a.py:12:5") == [fact for _, fact in facts.fact_spans("src/a.py:12:5")]
    # Elsewhere they stay what they were: a time, a port, an IPv6 address, a URL with its port.
    assert facts.find_facts("at 11:21 on localhost:8080") == ["11:21", "8080"]
    assert facts.find_facts("fe80::1ff:fe23:4567 and http://host:8080/a/b.py:12") == [
        "fe80::1ff:fe23:4567",
        "http://host:8080/a/b.py:12",
    ]


def test_rg_column_output_folds_without_line_numbers_as_facts() -> None:
    """`rg --column` (grep matches with a column) stays search output when the agent's search tool made it;
    its markers list the facts of the folded matches, not their line and column numbers."""
    rnd = random.Random(3)
    lines = [
        f"src/payments/module_{i % 6}.py:{rnd.randint(100, 400)}:{rnd.randint(1, 40)}:"
        f"    retry_count = settings.retry_{i}  # retry"
        for i in range(60)
    ]
    text = "\n".join(lines)
    result = search.compress(text, Context(mode="balanced", query="where is the retry count set?"))
    assert result is not None and result.strategy == "search-rank"
    markers = [line for line in result.text.split("\n") if line.startswith("[trex:")]
    assert markers
    for marker in markers:
        listed = marker.partition("facts kept: ")[2]
        assert not any(ch.isdigit() for ch in listed.replace("retry_", "").replace("module_", ""))
