"""Coding-agent profiles: the tool that produced a result decides its kind before content detection does."""

from __future__ import annotations

import copy
import json
from typing import Any

import msgspec

from tests.optimize.kinds._data import app_log, missing_from_log
from worker.optimize import profiles
from worker.optimize.base import Context
from worker.optimize.kinds import compress_tool_output
from worker.optimize.pipeline import Options, optimize
from worker.optimize.segments import extract

LOG = app_log(200)


def _messages_body(tool: str, output: str) -> dict[str, Any]:
    """An Anthropic Messages request in which `tool` returned `output`, followed by a new question."""
    return {
        "model": "claude-sonnet-4-6",
        "system": "You are a coding agent.",
        "messages": [
            {"role": "user", "content": "Look at the service log in logs/app.log."},
            {
                "role": "assistant",
                "content": [
                    {"type": "text", "text": "Reading it."},
                    {
                        "type": "tool_use",
                        "id": "toolu_01",
                        "name": tool,
                        "input": {"file_path": "logs/app.log"},
                    },
                ],
            },
            {
                "role": "user",
                "content": [{"type": "tool_result", "tool_use_id": "toolu_01", "content": output}],
            },
            {"role": "user", "content": "Why did the refund for ORD-20417 fail?"},
        ],
    }


def _tool_output(body: dict[str, Any]) -> str:
    content = body["messages"][2]["content"][0]["content"]
    assert isinstance(content, str)
    return content


def test_segments_know_the_tool_of_each_result_in_every_format() -> None:
    chat = {
        "messages": [
            {"role": "user", "content": "go"},
            {
                "role": "assistant",
                "content": None,
                "tool_calls": [
                    {"id": "c1", "type": "function", "function": {"name": "read_file", "arguments": "{}"}},
                    {
                        "id": "c2",
                        "type": "function",
                        "function": {"name": "run_terminal_cmd", "arguments": "{}"},
                    },
                ],
            },
            {"role": "tool", "tool_call_id": "c2", "content": "ok"},
            {"role": "tool", "tool_call_id": "c1", "content": "x = 1"},
            {"role": "tool", "tool_call_id": "unknown", "content": "?"},
        ]
    }
    segments, _ = extract("chat", chat)
    assert [(s.text, s.tool) for s in segments if s.kind == "tool_result"] == [
        ("ok", "run_terminal_cmd"),
        ("x = 1", "read_file"),
        ("?", None),
    ]
    segments, _ = extract("messages", _messages_body("Read", "content"))
    assert [s.tool for s in segments if s.kind == "tool_result"] == ["Read"]
    assert all(s.tool is None for s in segments if s.kind != "tool_result")
    responses = {
        "input": [
            {"type": "function_call", "call_id": "fc1", "name": "shell", "arguments": "{}"},
            {"type": "function_call_output", "call_id": "fc1", "output": "done"},
        ]
    }
    segments, _ = extract("responses", responses)
    assert [(s.text, s.tool) for s in segments] == [("done", "shell")]


def test_claude_read_of_a_log_file_is_passed_through() -> None:
    body = _messages_body("Read", LOG)
    plain = copy.deepcopy(body)
    optimize("messages", plain, Options())
    assert len(_tool_output(plain)) < len(LOG) // 2  # without a profile the log is folded
    profiled = copy.deepcopy(body)
    optimize("messages", profiled, Options(profile="claude"))
    assert _tool_output(profiled) == LOG  # the agent will quote these lines in an Edit: kept exactly


def test_a_tool_unknown_to_the_profile_is_detected_by_content() -> None:
    body = _messages_body("read_logs", LOG)
    plain, profiled = copy.deepcopy(body), copy.deepcopy(body)
    optimize("messages", plain, Options())
    optimize("messages", profiled, Options(profile="claude"))
    assert _tool_output(profiled) == _tool_output(plain) != LOG
    # The same name means different tools to different agents: `read_file` reads files for Codex only.
    assert profiles.role("codex", "read_file") == "read" and profiles.role("claude", "read_file") is None


def test_shell_output_that_looks_like_prose_is_folded_as_command_output() -> None:
    lines = [
        f"Compiling module {i} of 40 with the release profile, {i * 7 % 90 + 10}ms elapsed" for i in range(40)
    ]
    lines.append("Finished release build of 40 modules")
    text = "\n".join(lines)
    ctx = Context(mode="balanced", profile="claude")
    assert (
        compress_tool_output(text, Context(mode="balanced"), "Bash") is None
    )  # prose: nothing repeats exactly
    folded = compress_tool_output(text, ctx, "Bash")
    assert folded is not None and folded.strategy == "log-template"
    assert "Finished release build of 40 modules" in folded.text
    assert missing_from_log(text, folded.text) == []


def test_codex_shell_output_is_unwrapped_compressed_and_rewrapped() -> None:
    wrapped = json.dumps({"output": LOG, "metadata": {"exit_code": 1, "duration_seconds": 0.4}})
    body = {
        "model": "gpt-5-codex",
        "instructions": "You are Codex.",
        "input": [
            {"role": "user", "content": "Check the service log."},
            {
                "type": "function_call",
                "call_id": "fc_1",
                "name": "shell",
                "arguments": '{"command":["cat","x"]}',
            },
            {"type": "function_call_output", "call_id": "fc_1", "output": wrapped},
            {"role": "user", "content": "Why did the refund fail?"},
        ],
    }
    plain, profiled = copy.deepcopy(body), copy.deepcopy(body)
    optimize("responses", plain, Options())
    report = optimize("responses", profiled, Options(profile="codex"))
    plain_doc = msgspec.json.decode(plain["input"][2]["output"])
    doc = msgspec.json.decode(profiled["input"][2]["output"])
    assert plain_doc["output"] == LOG  # without the profile it is JSON: minified, the log inside untouched
    assert doc["metadata"] == {"exit_code": 1, "duration_seconds": 0.4}
    assert len(doc["output"]) < len(LOG) // 2
    assert missing_from_log(LOG, doc["output"]) == []
    assert "log-template" in report.applied_strategies


def test_profiles_are_deterministic_and_never_grow() -> None:
    for tool in ("Read", "Grep", "Bash", "WebFetch", "Unknown"):
        body = _messages_body(tool, LOG)
        first, second = copy.deepcopy(body), copy.deepcopy(body)
        r1 = optimize("messages", first, Options(profile="claude"))
        optimize("messages", second, Options(profile="claude"))
        assert first == second
        assert r1.optimized_tokens <= r1.original_tokens


def test_a_claude_read_keeps_its_trailing_blanks() -> None:
    """The agent's next edit quotes the file's exact lines; a stripped blank would make it miss."""
    source = "     1\tdef f(x):   \n     2\t    return x  \n     3\t\n" * 40
    ctx = Context(mode="aggressive", profile="claude")
    assert compress_tool_output(source, ctx, "Read") is None
