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


def test_shell_output_that_is_not_a_log_folds_only_exact_repeats() -> None:
    """Command output that has no timestamps or levels (`git log`, `ps`, a build's progress) is not folded by
    template: its varying values are what tell its lines apart (a commit's SHA, a process's PID)."""
    lines = [
        f"Compiling module {i} of 40 with the release profile, {i * 7 % 90 + 10}ms elapsed" for i in range(40)
    ]
    lines += ["Waiting for the build lock"] * 5 + ["Finished release build of 40 modules"]
    text = "\n".join(lines)
    for profile in ("claude", None):
        folded = compress_tool_output(text, Context(mode="balanced", profile=profile), "Bash")
        assert folded is not None and folded.strategy == "prose-dedupe"
        assert folded.text == "\n".join(
            [*lines[:41], "[trex: previous line repeated 4 more times]", lines[-1]]
        )


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


def test_codex_local_shell_output_is_compressed_as_command_output() -> None:
    """The hosted `local_shell` tool: its call has no name and its output names the call by `id` (the API
    reference) or `call_id` (what Codex sends); either way the profile knows it is shell output."""
    wrapped = json.dumps({"output": LOG, "metadata": {"exit_code": 1}})
    for id_field in ("id", "call_id"):
        body = {
            "model": "codex-mini-latest",
            "input": [
                {"role": "user", "content": "Check the service log."},
                {
                    "type": "local_shell_call",
                    "id": "lsh_1",
                    "call_id": "call_1",
                    "status": "completed",
                    "action": {"type": "exec", "command": ["cat", "logs/app.log"], "env": {}},
                },
                {"type": "local_shell_call_output", id_field: "call_1", "output": wrapped},
                {"role": "user", "content": "Why did the refund fail?"},
            ],
        }
        segments, _ = extract("responses", body)
        assert [(s.kind, s.tool) for s in segments if s.kind == "tool_result"] == [
            ("tool_result", "local_shell")
        ]
        report = optimize("responses", body, Options(profile="codex"))
        doc = msgspec.json.decode(body["input"][2]["output"])
        assert doc["metadata"] == {"exit_code": 1}
        assert len(doc["output"]) < len(LOG) // 2
        assert missing_from_log(LOG, doc["output"]) == []
        assert "log-template" in report.applied_strategies
        assert body["input"][1]["action"]["command"] == ["cat", "logs/app.log"]


def test_shell_tool_stdout_and_stderr_are_optimized_outcome_untouched() -> None:
    """The `shell` tool (GPT-5.1 and later): its output is a list of {stdout, stderr, outcome} chunks."""
    body = {
        "model": "gpt-5.1",
        "input": [
            {"role": "user", "content": "Run the tests."},
            {
                "type": "shell_call",
                "call_id": "call_9",
                "status": "completed",
                "action": {"commands": ["cat logs/app.log"]},
            },
            {
                "type": "shell_call_output",
                "call_id": "call_9",
                "output": [
                    {
                        "stdout": LOG,
                        "stderr": "warning: stale cache\n",
                        "outcome": {"type": "exit", "exit_code": 0},
                    }
                ],
            },
            {"role": "user", "content": "Why did the refund fail?"},
        ],
    }
    segments, _ = extract("responses", body)
    assert [(s.where, s.tool) for s in segments if s.kind == "tool_result"] == [
        ("input[2].output[0].stdout", "shell"),
        ("input[2].output[0].stderr", "shell"),
    ]
    report = optimize("responses", body, Options(profile="codex"))
    chunk = body["input"][2]["output"][0]
    assert len(chunk["stdout"]) < len(LOG) // 2 and missing_from_log(LOG, chunk["stdout"]) == []
    assert chunk["stderr"] == "warning: stale cache\n"
    assert chunk["outcome"] == {"type": "exit", "exit_code": 0}
    assert report.optimized_tokens < report.original_tokens


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


def _tree(widgets: int = 12) -> str:
    lines = ["Absolute path: /repo/src/components"]
    for i in range(widgets):
        lines += [f"Widget{i}/", f"  Widget{i}.tsx", "  index.ts", "  styles.css"]
    return "\n".join(lines)


def test_a_directory_listing_keeps_every_file_of_every_directory() -> None:
    """`index.ts` under twelve directories is twelve files: a listing is not deduplicated like search output."""
    tree = _tree()
    for profile, tool in (
        ("codex", "list_dir"),
        ("opencode", "list"),
        ("cursor", "list_dir"),
        ("claude", "LS"),
    ):
        result = compress_tool_output(tree, Context(mode="balanced", profile=profile), tool)
        kept = tree if result is None else result.text
        assert kept.count("index.ts") == 12 and kept.count("styles.css") == 12, profile


def _claude_session(first_user: list[dict[str, Any]], later: list[dict[str, Any]]) -> dict[str, Any]:
    return {"model": "claude-sonnet-4-6", "system": "You are Claude Code.", "messages": [*first_user, *later]}


def test_agent_instructions_in_user_turns_are_never_compacted_nor_taken_for_the_request() -> None:
    """Claude Code puts CLAUDE.md in a `<system-reminder>` block of a user turn, Codex its AGENTS.md in a user
    item: instructions, kept whole. A reminder after a tool result is not the request search output is
    ranked against: the question the person typed is."""
    rules = " ".join(
        f"Rule {i}: keep the thing number {i} as it is, thank you very much for that." for i in range(12)
    )
    claude_md = f"<system-reminder>\nAs you answer, follow CLAUDE.md:\n{rules}\n</system-reminder>"
    agents_md = f"# AGENTS.md instructions for /repo\n\n<INSTRUCTIONS>\n{rules}\n</INSTRUCTIONS>"
    grep = "\n".join(
        [
            f"src/shop/module{f}/service{f}.py:{10 + k * 9}:    total = compute(order, line_{k})"
            for f in range(40)
            for k in range(4)
        ]
        + [
            f"src/shop/refunds/partial.py:{88 + k * 5}:    total = compute(order, refund_partial_line{k})"
            for k in range(4)
        ]
    )
    use = {"type": "tool_use", "id": "toolu_1", "name": "Grep", "input": {"pattern": "total ="}}
    body = _claude_session(
        [
            {
                "role": "user",
                "content": [{"type": "text", "text": claude_md}, {"type": "text", "text": "hello"}],
            },
            {"role": "assistant", "content": "Hi."},
        ],
        [
            {"role": "user", "content": "Why does refund_partial compute the wrong total?"},
            {"role": "assistant", "content": [use]},
            {
                "role": "user",
                "content": [
                    {"type": "tool_result", "tool_use_id": "toolu_1", "content": grep},
                    {
                        "type": "text",
                        "text": "<system-reminder>\nThe TodoWrite tool hasn't been used.\n</system-reminder>",
                    },
                ],
            },
        ],
    )
    for profile in ("claude", None):
        out = copy.deepcopy(body)
        optimize("messages", out, Options(mode="aggressive", protect_recent_turns=0, profile=profile))
        assert out["messages"][0]["content"][0]["text"] == claude_md
        result = out["messages"][-1]["content"][0]["content"]
        assert all(f"refund_partial_line{k})" in result for k in range(4)), profile
    codex = {
        "model": "gpt-5",
        "input": [
            {"role": "user", "content": [{"type": "input_text", "text": agents_md}]},
            {"role": "user", "content": [{"type": "input_text", "text": "small talk " * 40}]},
            {"role": "assistant", "content": [{"type": "output_text", "text": "ok " * 40}]},
            {"role": "user", "content": [{"type": "input_text", "text": "now fix it"}]},
        ],
    }
    optimize("responses", codex, Options(mode="aggressive", protect_recent_turns=0, profile="codex"))
    assert codex["input"][0]["content"][0]["text"] == agents_md


def test_a_result_of_only_terminal_escapes_is_not_emptied() -> None:
    spinner = "\x1b[?25l\x1b[2K\x1b[?25h"
    assert compress_tool_output(spinner, Context(mode="balanced")) is None
    assert compress_tool_output(spinner, Context(mode="balanced", profile="claude"), "Bash") is None


def test_codex_shell_command_output_is_command_output() -> None:
    """`shell_command` (the current codex-rs default) and `write_stdin` run commands like `shell`."""
    assert profiles.role("codex", "shell_command") == profiles.role("codex", "write_stdin") == "shell"
    output = "Exit code: 1\nWall time: 2.1 seconds\nOutput:\n" + LOG
    as_shell = compress_tool_output(output, Context(mode="balanced", profile="codex"), "shell")
    as_command = compress_tool_output(output, Context(mode="balanced", profile="codex"), "shell_command")
    assert as_shell is not None and as_command is not None and as_command.text == as_shell.text


def test_a_changed_re_read_of_a_file_is_not_turned_into_a_patch() -> None:
    """The agent quotes its latest read of a file in its next edit: that read stays as the file is, not as a
    patch against the read before it."""
    source = "\n".join(
        f"{i:>6}→def handler_{i}(request):\n       return respond(request, {i})" for i in range(1, 40)
    )
    edited = source.replace("respond(request, 7)", "respond(request, 70)")

    def read(call_id: str, text: str) -> list[dict[str, Any]]:
        use = {"type": "tool_use", "id": call_id, "name": "Read", "input": {"file_path": "app.py"}}
        return [
            {"role": "assistant", "content": [use]},
            {"role": "user", "content": [{"type": "tool_result", "tool_use_id": call_id, "content": text}]},
        ]

    body = _claude_session(
        [{"role": "user", "content": "read app.py"}], [*read("t1", source), *read("t2", edited)]
    )
    body["messages"].append({"role": "user", "content": "now change handler 8"})
    for profile in ("claude", None):
        out = copy.deepcopy(body)
        optimize("messages", out, Options(mode="aggressive", profile=profile))
        assert out["messages"][4]["content"][0]["content"] == edited


def test_every_failing_tests_code_frame_is_kept() -> None:
    """Jest prints the failing source line of each failure as `> 22 |  expect(…)`: kept for every failure, not
    folded into one template under the first."""
    lines = [f"PASS src/orders/order{i}.test.ts" for i in range(40)] + ["FAIL src/refunds/refund.test.ts"]
    for j, name in enumerate(["partial refund", "currency refund", "rounding refund", "tax refund"]):
        lines += [
            f"  \u25cf refund \u203a {name}",
            "",
            "    expect(received).toBe(expected) // Object.is equality",
            "",
        ]
        lines += [f"    Expected: {100 + j}", f"    Received: {120 + j}", ""]
        lines += [f"      {11 + j * 10} |   const r = refund(order, 20);"]
        lines += [
            f"    > {12 + j * 10} |   expect(r.remaining).toBe({100 + j});",
            "         |                       ^",
            "",
        ]
        lines += [f"      at Object.<anonymous> (src/refunds/refund.test.ts:{12 + j * 10}:23)", ""]
    lines += ["Tests:       4 failed, 120 passed, 124 total"]
    text = "\n".join(lines)
    for mode in ("balanced", "aggressive"):
        result = compress_tool_output(text, Context(mode=mode, profile="claude"), "Bash")
        kept = text if result is None else result.text
        assert all(f"> {12 + j * 10} |   expect(r.remaining).toBe({100 + j});" in kept for j in range(4))
