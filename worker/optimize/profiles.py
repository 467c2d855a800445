"""Coding-agent profiles (`compression_model`): each agent's tool names and the shape of their output.

Without a profile, a tool result's kind is detected from its content. With one, the tool that produced the
result (`Segment.tool`, found through the call id) decides first, content detection second:

- file reads (`Read`, `read`, `read_file`, `view`) are source the agent is about to edit, quoting exact
  lines back in its edits: they are passed through untouched (trailing blanks included), even when the
  file looks like a log or JSON;
- grep and file searches and globs are search output (dedupe, rank, keep diversity); directory listings
  are detected by content (a tree's indented names are not duplicates of each other: `index.ts` under
  twelve directories is twelve files);
- shell commands (`Bash`, `bash`, `shell`, `run_terminal_cmd`) are detected by content; output that is none
  of the structured kinds (`git log`, `ps`, a YAML file) is only folded where lines repeat exactly: folded
  by template like a log, commits would lose their SHAs and processes their PIDs;
- everything else (web fetches, sub-agents, unknown tools) is detected by content.

Output-shape quirks handled per agent:

- Claude Code: `Read` prefixes every line with a right-aligned line number and a tab or `→` (`     1\t`).
- OpenCode: `read` wraps the file in `<file>` … `</file>` with zero-padded `00001| ` prefixes; `grep` prints
  `Found N matches`, then per file a `path:` line and its `  Line N: content` lines (parsed by `search`).
- Codex: `shell` results can come JSON-wrapped, `{"output": "…", "metadata": {"exit_code": 0, …}}`; the
  profile compresses the `output` string by its own kind and re-wraps it with the metadata unchanged
  (without the profile the wrapper is plain JSON and the command output inside is only minified).
- Cursor: `read_file` prefixes lines with `N|`; `run_terminal_cmd` output is plain command output.

Line-number prefixes need no handling of their own: file reads are passed through, and content detection
already recognises the gutters (`_detect.LINE_GUTTER_RE`).
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any, Literal

import msgspec

from worker.optimize.kinds._detect import Kind

Role = Literal["read", "search", "shell", "other"]
"""What a tool does, which decides how its output is treated (see the module docstring)."""

PROFILES: tuple[str, ...] = ("claude", "opencode", "codex", "cursor")

_TOOLS: Mapping[str, Mapping[str, Role]] = MappingProxyType(
    {
        "claude": MappingProxyType(
            {
                "Read": "read",
                "NotebookRead": "read",
                "Edit": "read",  # answers with a `cat -n` snippet of the edited file
                "MultiEdit": "read",
                "Write": "read",
                "Grep": "search",
                "Glob": "search",
                "LS": "other",
                "Bash": "shell",
                "BashOutput": "shell",
                "WebFetch": "other",
                "WebSearch": "other",
                "Task": "other",
                "TodoWrite": "other",
            }
        ),
        "opencode": MappingProxyType(
            {
                "read": "read",
                "edit": "read",
                "write": "read",
                "patch": "read",
                "grep": "search",
                "glob": "search",
                "list": "other",
                "bash": "shell",
                "webfetch": "other",
                "task": "other",
                "todowrite": "other",
                "todoread": "other",
            }
        ),
        "codex": MappingProxyType(
            {
                "read_file": "read",
                "view_image": "other",
                "apply_patch": "read",
                "grep_files": "search",
                "list_dir": "other",
                "shell": "shell",
                "shell_command": "shell",
                "write_stdin": "shell",
                "local_shell": "shell",
                "exec_command": "shell",
                "unified_exec": "shell",
                "update_plan": "other",
            }
        ),
        "cursor": MappingProxyType(
            {
                "read_file": "read",
                "edit_file": "read",
                "search_replace": "read",
                "grep_search": "search",
                "codebase_search": "search",
                "file_search": "search",
                "list_dir": "other",
                "run_terminal_cmd": "shell",
                "web_search": "other",
                "todo_write": "other",
            }
        ),
    }
)


def role(profile: str | None, tool: str | None) -> Role | None:
    """The role of `tool` in `profile`, or None (no profile, unknown tool, or no tool name)."""
    if profile is None or tool is None:
        return None
    tools = _TOOLS.get(profile)
    return tools.get(tool) if tools is not None else None


def kind_for(profile: str | None, tool: str | None, detected: Callable[[], Kind]) -> Kind:
    """The kind of a tool result: from the tool's role when the profile knows it, else `detected()`."""
    tool_role = role(profile, tool)
    if tool_role == "read":
        return "code"
    if tool_role == "search":
        return "search"
    return detected()


@dataclass(frozen=True, slots=True)
class Wrapped:
    """A tool result whose real output sits inside an envelope (Codex's JSON-wrapped shell output)."""

    inner: str
    rewrap: Callable[[str], str]


_encoder = msgspec.json.Encoder()


def unwrap(profile: str | None, tool: str | None, text: str) -> Wrapped | None:
    """The envelope of `text` for this profile and tool, if it has one."""
    if profile != "codex" or role(profile, tool) != "shell" or not text.startswith("{"):
        return None
    try:
        doc: Any = msgspec.json.decode(text)
    except (msgspec.DecodeError, RecursionError):  # nested too deep: not JSON to us
        return None
    if not isinstance(doc, dict) or not isinstance(doc.get("output"), str):
        return None
    if not set(doc) <= {"output", "metadata"}:
        return None

    def rewrap(output: str) -> str:
        return _encoder.encode({**doc, "output": output}).decode()

    return Wrapped(doc["output"], rewrap)
