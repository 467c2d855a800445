"""Randomized check (fixed seed, no hypothesis): over a few hundred small inputs of every kind, every
compressor — called directly or through `compress_tool_output` — never grows the text, keeps every fact
(log folding: every fact but the incidental values of folded routine lines, see `logs`), keeps JSON
parseable and gives the same answer twice."""

from __future__ import annotations

import difflib
import json
import random
from collections.abc import Callable

import msgspec

from tests.optimize.kinds._data import missing, missing_from_log
from worker import tokens
from worker.optimize.base import Compressed, Context
from worker.optimize.kinds import compress_tool_output, diffs, json_output, logs, markup, search

_WORDS = [
    "order", "refund", "user", "retry", "cache", "worker", "queue", "batch", "token", "session", "request",
    "response", "payment", "invoice", "status", "pending", "active", "failed", "shipped", "timeout", "limit",
    "config", "handler", "service", "region", "latency",
]  # fmt: skip
_COMPRESSORS: list[Callable[[str, Context], Compressed | None]] = [
    compress_tool_output,
    json_output.compress,
    logs.compress,
    search.compress,
    diffs.compress,
    markup.compress,
]
_MODES = (Context(mode="safe"), Context(mode="balanced"), Context(mode="aggressive", query="refund ORD-1042"))


def _fact(rnd: random.Random) -> str:
    choices: list[Callable[[], str]] = [
        lambda: f"ORD-{rnd.randint(1000, 1100)}",
        lambda: f"2026-0{rnd.randint(1, 9)}-{rnd.randint(10, 28)}",
        lambda: f"2026-03-14T09:{rnd.randint(10, 59)}:{rnd.randint(10, 59)}Z",
        lambda: f"{rnd.choice(_WORDS)}{rnd.randint(1, 99)}@example.com",
        lambda: f"https://api.example.com/v2/{rnd.choice(_WORDS)}/{rnd.randint(1, 999)}",
        lambda: f"${rnd.randint(1, 9999)}.{rnd.randint(10, 99)}",
        lambda: f"{rnd.getrandbits(40):010x}",
        lambda: f"src/{rnd.choice(_WORDS)}/{rnd.choice(_WORDS)}.py",
        lambda: f"{rnd.randint(1, 99)}%",
        lambda: f"v{rnd.randint(1, 3)}.{rnd.randint(0, 20)}.{rnd.randint(0, 9)}",
        lambda: str(rnd.randint(100, 99999)),
        lambda: rnd.choice(["ECONNREFUSED", "NOT_FOUND", "E501", "ERR-404"]),
    ]
    return rnd.choice(choices)()


def _words(rnd: random.Random, low: int, high: int) -> str:
    return " ".join(
        rnd.choice(_WORDS) if rnd.random() < 0.8 else _fact(rnd) for _ in range(rnd.randint(low, high))
    )


def _json(rnd: random.Random) -> str:
    keys = rnd.sample(_WORDS, 5)
    items: list[object] = []
    for _ in range(rnd.randint(0, 30)):
        item: dict[str, object] = {}
        for key in keys:
            roll = rnd.random()
            if roll < 0.3:
                item[key] = _fact(rnd)
            elif roll < 0.5:
                item[key] = rnd.choice(_WORDS)
            elif roll < 0.65:
                item[key] = rnd.randint(0, 50)
            elif roll < 0.75:
                item[key] = rnd.random() < 0.5
            elif roll < 0.85:
                item[key] = None
            else:
                item[key] = {"note": _words(rnd, 1, 4), "n": rnd.randint(1, 9)}
        items.append(item)
    doc: object = items if rnd.random() < 0.5 else {"data": items, "next": _fact(rnd)}
    if rnd.random() < 0.2:
        return "\n".join(json.dumps(item) for item in items)  # JSON Lines
    return json.dumps(doc, indent=rnd.choice([None, 2, 4]))


def _log(rnd: random.Random) -> str:
    lines: list[str] = []
    for i in range(rnd.randint(1, 60)):
        ts = f"2026-03-14 09:{12 + i // 60:02d}:{i % 60:02d}"
        level = rnd.choices(["INFO", "DEBUG", "WARN", "ERROR"], [70, 20, 6, 4])[0]
        line = f"{ts} {level} app.{rnd.choice(_WORDS)}: {_words(rnd, 2, 8)}"
        lines.extend([line] * (rnd.randint(2, 5) if rnd.random() < 0.1 else 1))
        if level == "ERROR" and rnd.random() < 0.5:
            lines += [
                "Traceback (most recent call last):",
                f'  File "{_fact(rnd)}", line 12, in run',
                "ValueError: bad",
            ]
    return "\n".join(lines)


def _grep(rnd: random.Random) -> str:
    files = [f"src/{rnd.choice(_WORDS)}/{w}.py" for w in rnd.sample(_WORDS, 4)]
    lines = [
        f"{rnd.choice(files)}:{rnd.randint(1, 400)}:    {_words(rnd, 2, 9)}"
        for _ in range(rnd.randint(1, 50))
    ]
    if lines and rnd.random() < 0.3:
        lines += lines[: rnd.randint(1, len(lines))]
    return "\n".join(lines)


def _diff(rnd: random.Random) -> str:
    old = [f"    {_words(rnd, 3, 12)}" for _ in range(rnd.randint(3, 40))]
    new = list(old)
    for _ in range(rnd.randint(1, 4)):
        i = rnd.randrange(len(new))
        if rnd.random() < 0.5:
            new[i] = f"    {_words(rnd, 1, 7)}"
        else:
            new.insert(i, f"    {_words(rnd, 1, 7)}")
    path = f"src/{rnd.choice(_WORDS)}.py"
    body = "\n".join(difflib.unified_diff(old, new, f"a/{path}", f"b/{path}", lineterm="", n=3))
    return f"diff --git a/{path} b/{path}\n{body}" if body else "--- a\n+++ b"


def _table(rnd: random.Random) -> str:
    columns = rnd.sample(_WORDS, rnd.randint(3, 5))
    rows = [
        ",".join(_fact(rnd) if rnd.random() < 0.4 else rnd.choice(_WORDS[:4]) for _ in columns)
        for _ in range(rnd.randint(2, 40))
    ]
    if rnd.random() < 0.5:
        return ",".join(columns) + "\n" + "\n".join(rows)
    header = "| " + " | ".join(columns) + " |\n|" + "---|" * len(columns)
    pad = " " * rnd.randint(1, 3)
    return header + "\n" + "\n".join(f"|{pad}" + row.replace(",", f"{pad}|{pad}") + f"{pad}|" for row in rows)


def _html(rnd: random.Random) -> str:
    parts = [
        "<html><head><title>" + _words(rnd, 1, 4) + "</title><style>p { color: #333; }</style></head><body>"
    ]
    for _ in range(rnd.randint(1, 12)):
        tag = rnd.choice(["p", "li", "h2", "td", "div"])
        parts.append(
            f'<{tag} class="c{rnd.randint(1, 9)}"><a href="{_fact(rnd)}">{_words(rnd, 1, 6)}</a></{tag}>'
        )
    parts.append(f"<script>track('{_fact(rnd)}')</script></body></html>")
    return "\n".join(parts)


def _prose(rnd: random.Random) -> str:
    return "\n\n".join(_words(rnd, 5, 30) + "." for _ in range(rnd.randint(1, 4))) + " " * rnd.randint(0, 3)


def _summarised_only_from_folded_lines(text: str, output: str, where: str) -> None:
    """A fact missing from a log-template output occurs only in lines that were folded (not in the output),
    and never in a warning or error line."""
    kept = set(output.split("\n"))
    for fact in missing(text, output):
        for line in text.split("\n"):
            if fact in line:
                assert line not in kept, (where, fact, line)
                assert " WARN " not in line and " ERROR " not in line, (where, fact, line)


_GENERATORS = [_json, _log, _grep, _diff, _table, _html, _prose]


def test_random_inputs_never_grow_and_keep_every_fact() -> None:
    rnd = random.Random(20260314)
    checked = 0
    for round_ in range(280):
        text = _GENERATORS[round_ % len(_GENERATORS)](rnd)
        for ctx in _MODES:
            for compress in _COMPRESSORS:
                result = compress(text, ctx)
                if result is None:
                    continue
                checked += 1
                where = f"{compress.__module__}.{compress.__name__} {ctx.mode} round {round_}"
                assert tokens.count(result.text) < tokens.count(text), where
                if result.strategy == "log-template":
                    # Folded routine entries may summarise incidental values; nothing else may go.
                    assert missing_from_log(text, result.text) == [], where
                    _summarised_only_from_folded_lines(text, result.text, where)
                else:
                    assert missing(text, result.text) == [], where
                if result.strategy.startswith("json"):
                    if "\n" in result.text:
                        for line in result.text.split("\n"):
                            msgspec.json.decode(line)
                    else:
                        msgspec.json.decode(result.text)
                if compress is compress_tool_output:
                    again = compress(text, ctx)
                    assert again is not None and again.text == result.text, where
    assert checked > 300  # the check saw real compressions, not just None
