"""File views (a read tool's numbered lines, `cat` of a file through a shell): the agent quotes their lines
back in its next edit, so they reach the model as the file is, whatever the file holds."""

from __future__ import annotations

import pytest

from tests.optimize._agents import call, claude, forwarded, user
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
