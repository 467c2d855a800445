"""Requests as coding agents send them: one tool call and its result per step, in each agent's wire format
and tool names, for tests of what reaches the model after optimization."""

from __future__ import annotations

import copy
import json
from dataclasses import dataclass
from typing import Any

from worker.optimize.pipeline import Options, Report, optimize
from worker.optimize.segments import Format, extract


@dataclass(frozen=True, slots=True)
class Step:
    """A user message, or a tool call (`tool`, its arguments) with the text it returned."""

    text: str
    tool: str | None = None
    args: Any = None


def user(text: str) -> Step:
    return Step(text)


def call(tool: str, args: Any, output: str) -> Step:
    return Step(output, tool, args)


def claude(steps: list[Step]) -> dict[str, Any]:
    """Claude Code: Anthropic Messages, `tool_use` blocks with `input` objects."""
    messages: list[dict[str, Any]] = []
    for n, step in enumerate(steps):
        if step.tool is None:
            messages.append({"role": "user", "content": [{"type": "text", "text": step.text}]})
            continue
        use = {"type": "tool_use", "id": f"toolu_{n:04d}", "name": step.tool, "input": step.args}
        messages.append({"role": "assistant", "content": [{"type": "text", "text": "Checking."}, use]})
        result = {"type": "tool_result", "tool_use_id": f"toolu_{n:04d}", "content": step.text}
        messages.append({"role": "user", "content": [result]})
    return {
        "model": "claude-sonnet-4-5",
        "max_tokens": 4096,
        "system": "You are Claude Code.",
        "messages": messages,
    }


def codex(steps: list[Step]) -> dict[str, Any]:
    """Codex: Responses input items; `shell` calls carry `{"command": [...]}`, `apply_patch` is a custom tool."""
    items: list[dict[str, Any]] = []
    for n, step in enumerate(steps):
        if step.tool is None:
            items.append(
                {"type": "message", "role": "user", "content": [{"type": "input_text", "text": step.text}]}
            )
        elif step.tool == "apply_patch":
            items.append(
                {
                    "type": "custom_tool_call",
                    "call_id": f"call_{n}",
                    "name": "apply_patch",
                    "input": step.args,
                }
            )
            items.append({"type": "custom_tool_call_output", "call_id": f"call_{n}", "output": step.text})
        else:
            arguments = json.dumps(step.args)
            items.append(
                {"type": "function_call", "call_id": f"call_{n}", "name": step.tool, "arguments": arguments}
            )
            items.append({"type": "function_call_output", "call_id": f"call_{n}", "output": step.text})
    return {"model": "gpt-5-codex", "instructions": "You are Codex.", "input": items}


def cursor(steps: list[Step]) -> dict[str, Any]:
    """Cursor: Chat Completions, `tool_calls` with JSON-encoded arguments."""
    messages: list[dict[str, Any]] = [{"role": "system", "content": "You are a coding agent."}]
    for n, step in enumerate(steps):
        if step.tool is None:
            messages.append({"role": "user", "content": step.text})
            continue
        function = {"name": step.tool, "arguments": json.dumps(step.args)}
        messages.append(
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [{"id": f"call_{n}", "type": "function", "function": function}],
            }
        )
        messages.append({"role": "tool", "tool_call_id": f"call_{n}", "content": step.text})
    return {"model": "gpt-4.1", "messages": messages}


def codex_shell_text(output: str, exit_code: int = 0) -> str:
    """Codex's plain-text shell result: a header, then the command's output."""
    return f"Exit code: {exit_code}\nWall time: 0.1 seconds\nOutput:\n{output}"


def codex_shell_json(output: str) -> str:
    """Codex's JSON-wrapped shell result."""
    return json.dumps({"output": output, "metadata": {"exit_code": 0, "duration_seconds": 0.1}})


def forwarded(fmt: Format, body: dict[str, Any], options: Options) -> tuple[list[str], Report]:
    """The tool results of `body` as the model receives them after optimization, and the report."""
    out = copy.deepcopy(body)
    report = optimize(fmt, out, options)
    return [s.text for s in extract(fmt, out)[0] if s.kind == "tool_result"], report
