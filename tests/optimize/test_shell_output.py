"""Shell output as coding agents receive it: what the agent's next step needs reaches the model verbatim."""

from __future__ import annotations

import json
from collections.abc import Callable
from typing import Any

import pytest

from tests.optimize._agents import (
    Step,
    call,
    claude,
    codex,
    codex_shell_json,
    codex_shell_text,
    cursor,
    forwarded,
    user,
)
from worker.optimize.pipeline import Options
from worker.optimize.segments import Format

_COMMITS = [
    (
        "1197955e4244c18bdb9b375076bcb6ca05414672",
        "Dana Kim <dana@acme.io>",
        "Bump eslint from 8.56.0 to 8.57.0",
    ),
    ("2f22765d04931a078909145ca628d2264c852d7d", "Lee Wong <lee@acme.io>", "Fix flaky ledger test"),
    ("6b1f53303a732ccc8c6aae6640399827c15250e3", "Dana Kim <dana@acme.io>", "Raise refund cap to 1250.00"),
    ("a625406f6977d45c1391b078f4d3656e0b75bfcb", "Lee Wong <lee@acme.io>", "Add FX cache warmup"),
    ("e4666a670f042877c67a84473a71675ee0950a08", "Dana Kim <dana@acme.io>", "Refactor invoice PDF renderer"),
    ("0c3b9d51f2a84e7d9a6b1c0e5f4d3a2b1c0d9e8f", "Lee Wong <lee@acme.io>", "Update README"),
    ("5d2e8f7a1b4c3d6e9f0a2b5c8d1e4f7a0b3c6d9e", "Dana Kim <dana@acme.io>", "Add retries to gateway client"),
    ("9f8e7d6c5b4a39281706f5e4d3c2b1a098765432", "Lee Wong <lee@acme.io>", "Drop Python 3.9 support"),
]
GIT_LOG = "\n\n".join(
    f"commit {sha}\nAuthor: {author}\nDate:   Mon Mar {18 - i} {10 + i}:0{i}:12 2024 +0100\n\n    {message}"
    for i, (sha, author, message) in enumerate(_COMMITS)
)
PS = "\n".join(
    [
        "USER         PID %CPU %MEM    VSZ   RSS TTY      STAT START   TIME COMMAND",
        *(
            f"dev        {pid}  0.{i % 3}  0.3 412344 {98000 + i * 37} ?        S    {start}   0:0{i % 4} "
            "/repo/.venv/bin/python -m celery -A app worker -l info"
            for i, (pid, start) in enumerate(
                [
                    (48213, "09:14"),
                    (48391, "09:14"),
                    (48392, "09:14"),
                    (51877, "10:41"),
                    (51902, "10:41"),
                    (51903, "10:41"),
                ]
            )
        ),
        "dev        49120  0.0  0.2 300112 61200 ?        S    09:15   0:00 /repo/.venv/bin/python -m celery -A app beat",
        "dev        52011  0.0  0.0   6432   720 pts/3    S+   10:52   0:00 grep celery",
    ]
)

Agent = tuple[str, Format, Callable[[list[Step]], dict[str, Any]], Callable[[str], Any], Callable[[str], str]]
AGENTS: list[Agent] = [
    (
        "claude",
        "messages",
        claude,
        lambda cmd: ("Bash", {"command": cmd, "description": "Run"}),
        lambda out: out,
    ),
    ("codex", "responses", codex, lambda cmd: ("shell", {"command": ["bash", "-lc", cmd]}), codex_shell_text),
    (
        "cursor",
        "chat",
        cursor,
        lambda cmd: ("run_terminal_cmd", {"command": cmd, "is_background": False}),
        lambda out: out,
    ),
]


def _shell(agent: Agent, command: str, output: str, ask: str, mode: str) -> str:
    profile, fmt, build, tool_of, wrap = agent
    tool, args = tool_of(command)
    body = build([user("Look at the repository."), call(tool, args, wrap(output)), user(ask)])
    results, _ = forwarded(fmt, body, Options(mode=mode, profile=profile))  # type: ignore[arg-type]
    return results[-1]


@pytest.mark.parametrize("mode", ["balanced", "aggressive"])
@pytest.mark.parametrize("agent", AGENTS, ids=[a[0] for a in AGENTS])
def test_git_log_keeps_every_commit_with_its_message(agent: Agent, mode: str) -> None:
    """Folded by template, `git log` lost all SHAs but the first and left each message under another commit."""
    out = _shell(agent, "git log -8", GIT_LOG, "Revert the commit that raised the refund cap.", mode)
    for sha, author, message in _COMMITS:
        at = out.index(f"commit {sha}\nAuthor: {author}\n")
        assert out.index(f"    {message}", at) < out.find("commit ", at + 1) or sha == _COMMITS[-1][0]


@pytest.mark.parametrize("mode", ["balanced", "aggressive"])
@pytest.mark.parametrize("agent", AGENTS, ids=[a[0] for a in AGENTS])
def test_ps_keeps_every_process_row(agent: Agent, mode: str) -> None:
    """The agent kills processes by PID, chosen by their start time: each row stays as `ps` printed it."""
    ask = "Kill the stale celery workers from this morning but keep the newer ones and the beat scheduler."
    out = _shell(agent, "ps aux | grep celery", PS, ask, mode)
    for row in PS.split("\n"):
        assert row in out.split("\n")


PACKAGE_JSON = """{
  "name": "@acme/checkout-web",
  "version": "3.8.1",
  "private": true,
  "type": "module",
  "scripts": {
    "dev": "vite",
    "build": "tsc -b && vite build",
    "test": "vitest run",
    "lint": "eslint . --max-warnings 0"
  },
  "dependencies": {
    "@tanstack/react-query": "^5.28.4",
    "axios": "^1.6.8",
    "react": "^18.2.0",
    "react-dom": "^18.2.0",
    "zod": "^3.22.4"
  },
  "devDependencies": {
    "@types/react": "^18.2.66",
    "eslint": "^8.57.0",
    "typescript": "^5.4.2",
    "vite": "^5.1.6",
    "vitest": "^1.4.0"
  }
}
"""


@pytest.mark.parametrize(
    "agent", [*AGENTS, (*AGENTS[1][:4], codex_shell_json)], ids=["claude", "codex", "cursor", "codex-json"]
)
def test_a_json_file_viewed_through_the_shell_keeps_its_lines(agent: Agent) -> None:
    """`cat package.json` was minified to one line: the next edit (Edit's old_string, apply_patch's context
    lines) could not quote `"lint": "eslint . --max-warnings 0"\\n  },` from it."""
    profile, fmt, build, tool_of, wrap = agent
    tool, args = tool_of("cat package.json")
    body = build(
        [
            user("Add a `typecheck` script running `tsc --noEmit`, right after `lint`."),
            call(tool, args, wrap(PACKAGE_JSON)),
            user("Go on."),
        ]
    )
    for options in (
        Options(mode="balanced", profile=profile),
        Options(mode="safe"),
        Options(mode="aggressive"),
    ):
        results, _ = forwarded(fmt, body, options)  # type: ignore[arg-type]
        assert results == [wrap(PACKAGE_JSON)]


def test_json_from_an_api_is_still_minified() -> None:
    """The same document printed by `curl` is an API response, read and not edited: it is still compacted."""
    tool, args = AGENTS[0][3]("curl -s https://registry.npmjs.org/@acme%2fcheckout-web/latest")
    body = claude([user("Which version is published?"), call(tool, args, PACKAGE_JSON), user("Go on.")])
    results, report = forwarded("messages", body, Options(profile="claude"))
    assert results[0] == json.dumps(json.loads(PACKAGE_JSON), separators=(",", ":"))
    assert report.applied_strategies == ["json-minify"]


CHECKOUT_HTML = """<!DOCTYPE html>
<html lang="en">
<head>
  <meta charset="utf-8">
  <title>Acme Checkout</title>
  <link rel="stylesheet" href="/assets/index-4f9c2a1b.css">
  <script type="module" crossorigin src="/assets/index-9e8d7c6b.js"></script>
</head>
<body>
  <div id="root"><main class="checkout"><h1>Checkout</h1><form id="pay-form" action="/api/pay" method="post"><input type="hidden" name="csrf" value=""><button type="submit" disabled>Pay now</button></form></main></div>
  <script>window.__INITIAL_STATE__ = {"cart":{"id":"cart_7Hk2Lm9Q","items":2,"currency":"EUR"},"user":null};</script>
</body>
</html>"""
_MARKUP = [
    '<button type="submit" disabled>',
    '<input type="hidden" name="csrf" value="">',
    "window.__INITIAL_STATE__",
]


@pytest.mark.parametrize("profile", ["claude", None])
@pytest.mark.parametrize(
    "command",
    ["curl -s http://localhost:3000/checkout", "cat public/index.html", "cat public/index.html | head -40"],
)
def test_html_a_shell_printed_keeps_its_markup(command: str, profile: str | None) -> None:
    """Converted to text, the SSR output lost `disabled`, the empty csrf value and the inline state: what a
    question about the markup is about."""
    ask = "The Pay button is dead in production and the csrf token seems empty. What's wrong with the form markup?"
    body = claude(
        [user("Check the checkout page."), call("Bash", {"command": command}, CHECKOUT_HTML), user(ask)]
    )
    for mode in ("balanced", "aggressive"):
        results, _ = forwarded("messages", body, Options(mode=mode, profile=profile))  # type: ignore[arg-type]
        assert all(markup in results[0] for markup in _MARKUP)


@pytest.mark.parametrize("wrap", [codex_shell_json, codex_shell_text], ids=["json", "text"])
def test_codex_keeps_the_markup_of_a_file_it_printed(wrap: Callable[[str], str]) -> None:
    shell = {"command": ["bash", "-lc", "cat public/index.html"]}
    body = codex(
        [
            user("Enable the Pay button in public/index.html."),
            call("shell", shell, wrap(CHECKOUT_HTML)),
            user("Go."),
        ]
    )
    results, _ = forwarded("responses", body, Options(mode="aggressive", profile="codex"))
    assert results == [wrap(CHECKOUT_HTML)]


def test_a_fetched_web_page_is_still_converted_to_text() -> None:
    fetch = {"url": "https://shop.acme.io/checkout", "prompt": "What does the page say?"}
    body = claude(
        [user("Read the checkout page."), call("WebFetch", fetch, CHECKOUT_HTML), user("Summarise it.")]
    )
    results, report = forwarded("messages", body, Options(profile="claude"))
    assert "html-text" in report.applied_strategies and results[0].startswith("Title: Acme Checkout")
