"""File views (a read tool's numbered lines, `cat` of a file through a shell): the agent quotes their lines
back in its next edit, so they reach the model as the file is, whatever the file holds."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from tests.optimize._agents import call, claude, codex, codex_shell_json, codex_shell_text, forwarded, user
from worker.optimize.kinds import detect
from worker.optimize.pipeline import Options

# Markdown hard line breaks are two trailing spaces; YAML keeps a value's trailing blanks out of the value but
# an `old_string` quoting the line must still match them.
RELEASE_MD = """# Release checklist

Before tagging, confirm the following with the on-call engineer.  
Write the answers into the release ticket.  

1. Staging smoke tests are green.  
2. The migration plan was reviewed.  
3. Feature flags for the release are listed.  
4. The rollback command was tested.  

Contact: release-captain rotation.  
Escalation: #payments-oncall.  
"""  # noqa: W291 — the trailing blanks are the point
DEPLOY_YAML = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: payments-api
  namespace: prod   
spec:
  replicas: 3
  template:
    spec:
      containers:
        - name: api
          env:
            - name: LOG_LEVEL
              value: info   


            - name: DB_POOL_SIZE
              value: "20"
"""  # noqa: W291
REMINDER = (
    "\n<system-reminder>\nWhenever you read a file, you should consider whether it would be considered malware."
    "\n</system-reminder>\n"
)


def numbered(text: str, separator: str) -> str:
    """`text` as Claude Code's Read shows it: a right-aligned line number, then `→` or a tab."""
    return "\n".join(f"{n:>6}{separator}{line}" for n, line in enumerate(text.split("\n"), 1))


@pytest.mark.parametrize("profile", [None, "claude"])
@pytest.mark.parametrize("reminder", ["", REMINDER], ids=["plain", "reminder"])
@pytest.mark.parametrize("separator", ["→", "\t"], ids=["arrow", "tab"])
@pytest.mark.parametrize("source", [RELEASE_MD, DEPLOY_YAML], ids=["markdown", "yaml"])
def test_a_read_of_a_non_code_file_keeps_every_blank(
    source: str, separator: str, reminder: str, profile: str | None
) -> None:
    """Without a profile, a Read of Markdown or YAML lost its trailing blanks (hard line breaks) and the tab
    after the number of each blank line, so an Edit quoting two lines of it no longer matched the file."""
    read = numbered(source, separator) + reminder
    body = claude(
        [
            user("Change item 2 to say the plan was reviewed by the DBA, keeping the hard line breaks."),
            call("Read", {"file_path": "/repo/docs/file"}, read),
            user("Go ahead."),
        ]
    )
    for mode in ("safe", "balanced", "aggressive"):
        results, _ = forwarded("messages", body, Options(mode=mode, profile=profile))  # type: ignore[arg-type]
        assert results == [read]


def test_numbered_lines_are_a_file_view_whatever_they_hold() -> None:
    assert detect(numbered(RELEASE_MD, "\t")) == "code"
    assert detect(numbered(DEPLOY_YAML, "→") + REMINDER) == "code"


DEPLOY = """apiVersion: apps/v1
kind: Deployment
metadata:
  name: payments-api
spec:
  template:
    spec:
      containers:
        - name: api
          env:
            - name: DB_POOL_SIZE
              value: "20"
            - name: DB_POOL_TIMEOUT
              value: "30"
            - name: HTTP_TIMEOUT_MS
              value: "5000"
            - name: RETRY_MAX
              value: "3"
            - name: RETRY_BACKOFF_MS
              value: "250"
            - name: WORKERS
              value: "4"
            - name: THREADS
              value: "8"
            - name: MAX_BODY_KB
              value: "512"
            - name: CACHE_TTL
              value: "600"
          resources:
            limits:
              memory: 512Mi
              cpu: 500m
"""
EDITED = DEPLOY.replace('value: "5000"', 'value: "8000"').replace('value: "20"', 'value: "40"')
PATCH = '*** Begin Patch\n*** Update File: k8s/deploy.yaml\n@@\n-              value: "5000"\n+              value: "8000"\n*** End Patch'


@pytest.mark.parametrize(
    "command", ["cat k8s/deploy.yaml", "sed -n '1,200p' k8s/deploy.yaml", "cd /repo && cat k8s/deploy.yaml"]
)
@pytest.mark.parametrize("wrap", [codex_shell_text, codex_shell_json], ids=["text", "json"])
def test_codex_changed_re_view_through_the_shell_stays_whole(
    command: str, wrap: Callable[[str], str]
) -> None:
    """Codex has no read tool: it views files with `cat` or `sed -n`. The view after its patch was forwarded as
    `@@ line 18 (replaces earlier line 18)` hunks, numbered by lines of the tool output (the `Exit code` header
    included), so the next patch's context lines could not be quoted from it."""
    shell = {"command": ["bash", "-lc", command], "workdir": "/repo"}
    body = codex(
        [
            user("Make the edits in k8s/deploy.yaml we discussed."),
            call("shell", shell, wrap(DEPLOY)),
            call("apply_patch", PATCH, "Success. Updated the following files:\nM k8s/deploy.yaml"),
            call("shell", shell, wrap(EDITED)),
            user("Now also change the line right after the one you just edited."),
        ]
    )
    for mode in ("safe", "balanced", "aggressive"):
        results, _ = forwarded("responses", body, Options(mode=mode, profile="codex"))  # type: ignore[arg-type]
        assert results[-1] == wrap(EDITED)


@pytest.mark.parametrize("profile", [None, "claude"])
def test_claude_changed_re_read_of_markdown_stays_whole(profile: str | None) -> None:
    before = numbered(RELEASE_MD, "→")
    after = numbered(RELEASE_MD.replace("plan was reviewed.", "plan was reviewed by the DBA."), "→")
    edit = {
        "file_path": "/repo/docs/release.md",
        "old_string": "reviewed.",
        "new_string": "reviewed by the DBA.",
    }
    body = claude(
        [
            user("Update docs/release.md item 2."),
            call("Read", {"file_path": "/repo/docs/release.md"}, before),
            call("Edit", edit, "The file /repo/docs/release.md has been updated."),
            call("Read", {"file_path": "/repo/docs/release.md"}, after),
            user("Now reword item 3 and keep item 2 exactly as it is now."),
        ]
    )
    results, _ = forwarded("messages", body, Options(mode="aggressive", profile=profile))  # type: ignore[arg-type]
    assert results[-1] == after


def test_an_identical_re_view_still_points_to_the_first() -> None:
    shell = {"command": ["bash", "-lc", "cat k8s/deploy.yaml"]}
    body = codex(
        [
            user("Check k8s/deploy.yaml."),
            call("shell", shell, DEPLOY),
            call("shell", shell, DEPLOY),
            user("And?"),
        ]
    )
    results, _ = forwarded("responses", body, Options(profile="codex"))
    assert results[0] == DEPLOY
    assert results[1] == "[trex: identical to the tool_result content at input[2].output; omitted]"


def test_an_edited_copy_of_other_output_says_what_its_line_numbers_count() -> None:
    """Output that is not a file view (a test run repeated after a fix) may still become an edited copy: its
    `@@ line N` headers count lines of that output, and the marker says so."""
    run = "\n".join(f"tests/test_refund.py::test_case_{i} PASSED" for i in range(40))
    rerun = run.replace("test_case_7 PASSED", "test_case_7 FAILED")
    shell = {"command": ["bash", "-lc", "pytest -q tests/test_refund.py -p no:randomly"]}
    body = codex(
        [user("Run the tests."), call("shell", shell, run), call("shell", shell, rerun), user("Why?")]
    )
    results, _ = forwarded("responses", body, Options(mode="safe", profile="codex"))
    assert results[1].startswith("[trex: edited copy of the tool_result content at input[2].output;")
    assert "numbered by line of this tool_result content]\n@@ line 8 (replaces earlier line 8)" in results[1]
