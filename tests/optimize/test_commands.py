"""Which shell command a tool call ran, and whether it only printed files."""

from __future__ import annotations

import pytest

from worker.optimize.commands import command_of, views_file


def test_the_command_of_each_agent_s_shell_call() -> None:
    assert (
        command_of({"command": "cat a.py", "description": "Show a.py"}) == "cat a.py"
    )  # Claude Code, Cursor
    assert command_of('{"command": ["bash", "-lc", "cat a.py"], "workdir": "/repo"}') == "cat a.py"  # Codex
    assert command_of('{"command": ["cat", "my file.py"]}') == "cat 'my file.py'"  # an argv
    assert command_of('{"cmd": "nl -ba a.py"}') == "nl -ba a.py"  # Codex exec_command
    assert command_of({"type": "exec", "command": ["cat", "logs/app.log"], "env": {}}) == "cat logs/app.log"
    assert command_of({"commands": ["cat a.py"]}) == "cat a.py"  # the hosted shell tool's action
    for args in ({"file_path": "a.py"}, "*** Begin Patch", "{not json", None, {"commands": ["ls", "pwd"]}):
        assert command_of(args) is None


@pytest.mark.parametrize(
    "command",
    [
        "cat k8s/deploy.yaml",
        "cat -n app.py",
        "cd /repo && cat package.json",
        "sed -n '1,80p' app.py",
        "sed -n '1,40p;120,$p' app.py",
        "nl -ba src/x.ts | sed -n '40,90p'",
        "head -n 50 README.md",
        "tail -20 CHANGELOG.md",
        "cat a.py; cat b.py",
        'cat "docs/my notes.md"',
    ],
)
def test_file_views(command: str) -> None:
    assert views_file(command)


@pytest.mark.parametrize(
    "command",
    [
        "cat",  # standard input
        "cat a.py | grep refund",  # a search
        "tail -f logs/app.log",
        "cat a.py > b.py",
        "cat <<'EOF'",
        "sed -i 's/a/b/' a.py",
        "sed -n '/start/,/end/p' a.py",
        "echo $(cat a.py)",
        "curl -s http://localhost:3000/",
        "git show HEAD:a.py",
        "cd /repo",
        "cat 'unclosed",
        "cat a.py " * 1000,
    ],
)
def test_not_file_views(command: str) -> None:
    assert not views_file(command)
