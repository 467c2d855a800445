"""Shell commands behind tool results: which command a call ran, and whether it only showed a file.

A coding agent that views a file through its shell (`cat k8s/deploy.yaml`, `sed -n '1,80p' app.py`,
`nl -ba src/x.ts | sed -n '40,90p'`) quotes that output back in its next edit exactly as it does a read
tool's: the output is the file, and it passes through as it is (`kinds.compress_tool_output`), and a later
view of the changed file is never rewritten as a patch against the earlier one (`pipeline`).

Every agent spells its shell call differently: Claude Code and Cursor send `{"command": "…"}`, Codex
`{"command": ["bash", "-lc", "…"]}` (or an argv), its `exec_command` `{"cmd": "…"}`, the Responses API's
hosted shells an `action` with `command` (an argv) or `commands`. `command_of` reads them all; parsing
is by `shlex`, never by a pattern over the whole command.
"""

from __future__ import annotations

import re
import shlex
from typing import Any

import msgspec

_SHELLS = frozenset({"bash", "sh", "zsh", "dash", "/bin/bash", "/bin/sh", "/bin/zsh", "/usr/bin/bash"})
_MAX_COMMAND_CHARS = 4096
"""A longer command line is a script, not a file view: not parsed."""
# What separates the commands of a line, and what makes a command line more than viewing files.
_SEPARATORS = frozenset({"&&", ";", "||"})
_NOT_A_VIEW = frozenset({">", ">>", "<", "<<", "<<<", "&", "|&", "(", ")", ">&", "<&", "&>"})
# `sed -n` scripts that only print lines: `40,90p`, `1p`, `$p`, `10,$p`, several joined by `;`.
_SED_PRINT_RE = re.compile(r"(?:\d+|\$)(?:,(?:\d+|\$))?p")
_OPTIONS_WITH_VALUE = {"head": {"-n", "-c"}, "tail": {"-n", "-c"}, "nl": {"-b", "-w", "-s", "-v", "-i"}}


def command_of(args: Any) -> str | None:
    """The command line a tool call ran, from its arguments (see the module docstring), or None."""
    if isinstance(args, str):
        if not args.lstrip().startswith("{"):
            return None
        try:
            args = msgspec.json.decode(args)
        except (msgspec.DecodeError, RecursionError):
            return None
    if not isinstance(args, dict):
        return None
    for key in ("command", "cmd"):
        value = args.get(key)
        if isinstance(value, str):
            return value
        if isinstance(value, list) and value and all(isinstance(part, str) for part in value):
            if len(value) == 3 and value[0] in _SHELLS and value[1] in ("-c", "-lc"):
                return str(value[2])  # `bash -lc "<script>"`: the script is the command line
            return shlex.join(value)
    commands = args.get("commands")
    if isinstance(commands, list) and len(commands) == 1 and isinstance(commands[0], str):
        return commands[0]
    return None


def views_file(command: str) -> bool:
    """True when `command` only prints files: `cat`, `nl`, `head`, `tail` or `sed -n '…p'` of named files,
    optionally piped through more of those and preceded by `cd`."""
    if len(command) > _MAX_COMMAND_CHARS:
        return False
    lexer = shlex.shlex(command, posix=True, punctuation_chars=True)
    lexer.whitespace_split = True
    try:
        tokens = list(lexer)
    except ValueError:  # an unclosed quote
        return False
    if not tokens or any(token in _NOT_A_VIEW or token.startswith(("$(", "`")) for token in tokens):
        return False
    commands: list[list[str]] = [[]]
    for token in tokens:
        if token in _SEPARATORS:
            commands.append([])
        else:
            commands[-1].append(token)
    views = 0
    for words in commands:
        if words[:1] == ["cd"] and len(words) <= 2:
            continue
        stages: list[list[str]] = [[]]
        for word in words:
            if word == "|":
                stages.append([])
            else:
                stages[-1].append(word)
        if not _prints(stages[0], needs_file=True) or not all(
            _prints(stage, needs_file=False) for stage in stages[1:]
        ):
            return False
        views += 1
    return views > 0


def _prints(words: list[str], needs_file: bool) -> bool:
    """`words` is a command that prints its input lines (a named file's when `needs_file`), unchanged but for
    a line-number prefix or a range."""
    if not words:
        return False
    name, rest = words[0], words[1:]
    if name not in ("cat", "nl", "head", "tail", "sed"):
        return False
    files: list[str] = []
    skip = False
    printing = name != "sed"
    for k, word in enumerate(rest):
        if skip:
            skip = False
        elif name == "sed":
            if word == "-n":
                continue
            if word.startswith("-"):
                return False  # -i edits, -e/-f bring scripts of their own
            if not printing:
                if "-n" not in rest[:k] or not all(_SED_PRINT_RE.fullmatch(part) for part in word.split(";")):
                    return False
                printing = True
            else:
                files.append(word)
        elif word in ("-f", "-F", "--follow") and name == "tail":
            return False  # follows a growing file: a log, not a view
        elif word.startswith("-") and word != "-":
            skip = word in _OPTIONS_WITH_VALUE.get(name, ())
        else:
            files.append(word)
    if not printing:
        return False
    return bool(files) and "-" not in files if needs_file else not files
