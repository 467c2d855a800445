"""Cheap content-kind detection for tool output.

Each test looks at a bounded sample (the first `_SAMPLE_LINES` non-blank lines), so detection costs a few
regex passes however large the output is. Tests run from the most to the least specific kind: JSON must
parse, text under a line-number gutter is a file read (`code`, passed through whatever the file holds), a diff
has hunk headers, HTML starts with a tag, diagnostics are `path:line:col: message` lines, grep output is
`path:line:` lines, logs have a timestamp or level prefix, tables are consistently delimited; code and prose
are the fallbacks.
"""

from __future__ import annotations

import re
from collections import Counter
from collections.abc import Callable, Mapping
from itertools import filterfalse
from operator import methodcaller
from typing import Literal

import msgspec

from worker.optimize.facts import digit_skeleton

Kind = Literal["json", "log", "search", "diagnostics", "diff", "html", "table", "code", "prose"]
KINDS: tuple[Kind, ...] = ("json", "log", "search", "diagnostics", "diff", "html", "table", "code", "prose")

_SAMPLE_LINES = 400

# --- diff -------------------------------------------------------------------------------------------
HUNK_RE = re.compile(r"^@@ -(\d+)(?:,(\d+))? \+(\d+)(?:,(\d+))? @@")

# --- search (grep/rg/find) --------------------------------------------------------------------------
# `path:line:content`. The path has no blanks or commas and does not start with a digit, so timestamps
# (`09:12:03 INFO`, `2026-03-14T09:12:03`) and CSV rows are not taken for paths. grep -C context lines
# (`path-line-content`) are only recognised for paths with an extension: `-` is too common otherwise.
GREP_HEAD = r"^(?P<path>(?!\d)[^\s:,]+):(?P<line>\d+)"
"""A grep line's `path:line` (the path does not start with a digit)."""
GREP_LINE_RE = re.compile(GREP_HEAD + r"(?P<sep>[:-])")
GREP_CONTEXT_RE = re.compile(r"^(?P<path>(?!\d)[^\s:,]+?\.[A-Za-z]\w{0,7})-(?P<line>\d+)-")
# `path:content` (grep without -n); `path::name` is a pytest node id, not a match.
GREP_NOLINE_RE = re.compile(r"^(?P<path>[^\s:,]*[\w-]\.[A-Za-z]\w{0,7}):(?!:)(?P<content>.*)$")
HEADING_LINE_RE = re.compile(r"^(?P<line>\d+)(?P<sep>[:-])")
# OpenCode's grep tool: `Found N matches`, then per file a `path:` line and its `  Line N: content` lines.
OPENCODE_LINE_RE = re.compile(r"^  Line (?P<line>\d+): ")
# A whole line of path characters: a path of two segments or more, or a file name. Possessive where giving
# characters back cannot help (a segment ends where a `/` or the line's end follows it), and a file name is
# looked for only in a line made of path characters alone: on a log line each test fails at its first blank.
PATH_ONLY_RE = re.compile(
    r"^(?:\.{0,2}/)?[\w.@+-]++(?:/[\w.@+-]++)++/?$|^(?=[\w.@+-]++$)[\w.@+-]+\.[A-Za-z]\w{0,7}$"
)
# `path:line:col: message` (go vet, staticcheck, eslint's unix format, gcc): a line and a column, then the
# finding. Such output is diagnostics whatever its words (`copylocks: call of fmt.Println copies lock
# value`): every line is a finding to fix, none ranked away as a less relevant grep match. Possessive: a
# run of path characters or digits ends where the colon after it is, so giving characters back cannot help
# (on a grep line, which has no column, the path was given back a character at a time).
LOCATION_LINE_RE = re.compile(r"^(?!\d)[^\s:,]++:\d++:\d++: ?\S")
# Compiler/linter diagnostics without a column look like grep lines, but a level word or a code right after
# the location (`error`, `E501`) says what they are; every line matters: they go to the log compressor.
# Possessive: what follows each run cannot start inside it (a path ends at a colon, the level starts with a
# letter), so giving characters back could only fail again; on a log line that was most of the match's cost.
DIAGNOSTIC_RE = re.compile(
    r"^[^\s:]++:\d++(?::\d++)?+:?\s*+(?:error|warning|note|fatal|[EWFC]\d{2,4}|[A-Z]{1,4}\d{3,4})\b",
    re.IGNORECASE,
)

# --- logs -------------------------------------------------------------------------------------------
LOG_PREFIX_RE = re.compile(
    r"^\s{0,2}(?:"
    r"\[?\d{4}[-/]\d{2}[-/]\d{2}[T ]\d{2}:\d{2}"  # ISO date-time
    r"|\[?\d{2}:\d{2}:\d{2}"  # time of day
    r"|[A-Z][a-z]{2} [ \d]\d \d{2}:\d{2}:\d{2}"  # syslog
    r"|[IWEF]\d{4} \d{2}:\d{2}:\d{2}"  # glog/klog
    r"|\d{1,2}:\d{2}[AP]M [A-Z]{3}\b"  # zerolog console: 3:04PM INF
    r"|\d{2}-\d{2} \d{2}:\d{2}:\d{2}\.\d{3}\s"  # logcat threadtime
    r"|[VDIWEFA]/[\w.$-]+(?:\(\s*\d+\))?:"  # logcat brief: E/Tag( 123):
    r"|\d{10}(?:\.\d+)?\s"  # epoch seconds
    r"|\d{1,3}(?:\.\d{1,3}){3} - \S+ \["  # access log
    r"|(?:time|ts|level|lvl|t)=\S"  # logfmt
    r"|\[?(?:TRACE|DEBUG|INFO|NOTICE|WARN|WARNING|ERROR|FATAL|CRITICAL|SEVERE)\b[\]:]?"  # level first
    r"|(?:PASS|FAIL|ok|---|===|SKIP)\b|\S+::\S+ (?:PASSED|FAILED|SKIPPED|ERROR|XFAIL)\b"  # test runners
    r")"
)

# --- html -------------------------------------------------------------------------------------------
# Leading comments: each read up to its first `-->` and never re-split (possessive), so a run of `<!---->`
# costs its length, not twice as much per comment as `(?:<!--.*?-->\s*)*` did.
_LEADING_COMMENTS = r"^\s*+(?:<!--(?:(?!-->).)*+-->\s*+)*+"
_HTML_START_RE = re.compile(
    _LEADING_COMMENTS + r"<(?:!doctype\s+html|html|head|body)\b", re.IGNORECASE | re.DOTALL
)
# A single-file component (Vue, Svelte, Astro): top-level <template>, <script> or <style> blocks. Source code,
# however many tags it holds: converted to text, its template and script would be dropped.
_COMPONENT_RE = re.compile(_LEADING_COMMENTS + r"<(?:template|script|style)\b", re.IGNORECASE | re.DOTALL)
_HTML_TAG_RE = re.compile(
    r"</?(?:html|head|body|div|span|p|a|ul|ol|li|table|tr|td|th|h[1-6]|script|style|meta|link|section|"
    r"article|nav|header|footer|main|br|img|form|input|button|pre|code|em|strong)\b[^<>]*>",
    re.IGNORECASE,
)

# --- tables -----------------------------------------------------------------------------------------
MD_SEPARATOR_RE = re.compile(r"^\s*\|?\s*:?-{3,}:?\s*(?:\|\s*:?-{3,}:?\s*)*\|?\s*$")
# `NAME   READY   STATUS` (kubectl, docker ps): upper-case column names separated by 2+ spaces.
_COLUMN = r"[A-Z][A-Z0-9_()%/.#-]*(?: [A-Z][A-Z0-9_()%/.#-]*)*"
ALIGNED_HEADER_RE = re.compile(rf"^{_COLUMN}(?: {{2,}}{_COLUMN})+$")

# --- code -------------------------------------------------------------------------------------------
# Line-number gutters of file-read tools (`cat -n`, `   12→`), stripped before judging code-ness.
# `cat -n` right-aligns its numbers in six columns before the tab; an unpadded `12<TAB>` starts a TSV row.
LINE_GUTTER_RE = re.compile(r"^\s*\d+(?:→|: |\| )|^ +\d+\t|^\d{6,}\t")
_CODE_KEYWORD_RE = re.compile(
    r"^\s*(?:def|class|import|from|return|if|elif|else|for|while|try|except|finally|with|async|await|"
    r"function|const|let|var|export|package|func|fn|pub|use|impl|struct|enum|interface|type|public|private|"
    r"protected|static|#include|#define|namespace|template|switch|case|break|continue|throw|catch|yield|"
    r"raise|assert|module|require|using|val|match|mod|extern|unsafe|void|int|char|bool)\b"
)
# A call is `name(…)` with no other parenthesis inside (`f(g(x))` counts by `g(x)`): each try reads only up to
# the next parenthesis, so a line of `a(a(a(…` costs its length, not its length at each `(`.
_CODE_SHAPE_RE = re.compile(
    r"[{};(\[,:]\s*$|^\s*[})\]]|^\s*(?://|/\*|\*|#)|\w\([^()\n]*+\)|\s(?:=|==|=>|->|:=|\+=)\s"
)


def _share_at_least(lines: list[str], test: Callable[[str], object], tenths: int, least: int = 0) -> bool:
    """True when at least `tenths` tenths of `lines` (and at least `least` of them) pass `test`: the answer
    of counting them all, found as soon as it is known (a sample of 400 log lines is not grep output after
    its first 161 misses)."""
    need = max(least, -(-len(lines) * tenths // 10))
    misses_left = len(lines) - need
    if misses_left < 0:
        return False
    hits = 0
    for line in lines:
        if test(line):
            hits += 1
            if hits >= need:
                return True
        else:
            misses_left -= 1
            if misses_left < 0:
                return False
    return hits >= need


def _sample(text: str) -> list[str]:
    """The first `_SAMPLE_LINES` non-blank lines of `text` (picked in C).

    Only as many lines as are still needed are split off at a time (the rest stays one string): splitting a
    log of thousands of lines to keep its first 400 cost most of the sampling.
    """
    lines: list[str] = []
    rest: str | None = text
    while rest is not None and len(lines) < _SAMPLE_LINES:
        need = _SAMPLE_LINES - len(lines)
        pieces = rest.split("\n", need)
        rest = pieces.pop() if len(pieces) > need else None  # what follows the `need` lines, unsplit
        lines += filter(str.strip, pieces)
    return lines


def is_json(stripped: str) -> bool:
    """`stripped` is one JSON document, or JSON Lines (one object per line)."""
    if not stripped or stripped[0] not in "[{":
        return False
    try:
        msgspec.json.decode(stripped)
        return True
    except (msgspec.DecodeError, RecursionError):  # nested too deep: not JSON to us
        pass
    return is_json_lines(stripped)


def is_json_lines(stripped: str) -> bool:
    """Every non-blank line of `stripped` is a JSON object (at least two lines)."""
    lines = [line for line in stripped.split("\n") if line.strip()]
    if len(lines) < 2:
        return False
    for line in lines:
        s = line.strip()
        if not (s.startswith("{") and s.endswith("}")):
            return False
        try:
            msgspec.json.decode(s)
        except (msgspec.DecodeError, RecursionError):  # nested too deep: not JSON to us
            return False
    return True


def is_diff(lines: list[str], joined: str) -> bool:
    """Unified diff: a `diff --git` header, or a hunk header together with a `+++ ` file header.

    `joined` is the lines joined by line breaks, or its digit skeleton: the lines that start with a header
    hold it (digits apart), and most samples hold none.
    """
    if "diff --git " not in joined and ("@@ -" not in joined or "+++ " not in joined):
        return False
    has_hunk = has_plus = False
    for line in lines:
        if line.startswith("diff --git "):
            return True
        if HUNK_RE.match(line):
            has_hunk = True
        elif line.startswith("+++ "):
            has_plus = True
        if has_hunk and has_plus:
            return True
    return False


def is_html(text: str) -> bool:
    """An HTML document or fragment: starts like one, or is dense with HTML tags and starts with a tag."""
    head = text[:4000]
    if _HTML_START_RE.match(head):
        return True
    if not head.lstrip().startswith("<"):
        return False
    tags = _HTML_TAG_RE.findall(head)
    return len(tags) >= 4


def is_search(lines: list[str]) -> bool:
    """grep/rg `path:line:` output (also rg's and OpenCode's heading modes), or a `find`/`ls`-style list of
    paths (`_is_search` of the lines' census, as `detect` takes it)."""
    return _is_search(Counter(digit_skeleton("\n".join(lines)).split("\n")))


def _is_search(census: Counter[str]) -> bool:
    """`is_search` of the lines that `census` counts.

    No test here tells one digit from another (a line number, a timestamp are digits of any value), so a
    line and its digit skeleton (`facts.digit_skeleton`) pass the same tests: each distinct skeleton is
    tested once and counted as often as it occurs (a log or a test run repeats a few). grep's `--` group
    separators are not counted.
    """
    if "--" in census:
        census = census.copy()
        del census["--"]
    body = census.total()
    if body < 2:
        return False
    if _census_share(census, DIAGNOSTIC_RE.match, 3):
        return False
    if _census_share(census, _grep_line, 6):
        return True
    numbered = _census_matching(census, HEADING_LINE_RE.match)
    paths = _census_matching(census, _path_line) if numbered else None
    if numbered and paths and (numbered + paths) * 10 >= body * 9:
        return True
    opencode = _census_matching(census, OPENCODE_LINE_RE.match)
    if opencode:
        headings = _census_matching(census, _heading_line)
        if headings and (opencode + headings) * 10 >= body * 8:
            return True
    if body < 3:
        return False
    if paths is None:
        paths = _census_matching(census, _path_line)
    return paths * 10 >= body * 8


def _census_share(census: Counter[str], test: Callable[[str], object], tenths: int, least: int = 0) -> bool:
    """`_share_at_least` of the lines that `census` counts (each distinct line tested once)."""
    total = census.total()
    need = max(least, -(-total * tenths // 10))
    misses_left = total - need
    if misses_left < 0:
        return False
    hits = 0
    for line, times in census.items():
        if test(line):
            hits += times
            if hits >= need:
                return True
        else:
            misses_left -= times
            if misses_left < 0:
                return False
    return hits >= need


def _census_matching(census: Mapping[str, int], test: Callable[[str], object]) -> int:
    """How many of the lines that `census` counts pass `test` (each distinct line tested once)."""
    return sum(times for line, times in census.items() if test(line))


def _path_line(line: str) -> bool:
    """A path alone (`PATH_ONLY_RE`); a line with a blank never is."""
    return " " not in line and PATH_ONLY_RE.match(line) is not None


def _heading_line(line: str) -> bool:
    """A path alone followed by a colon: the heading of OpenCode's matches in a file."""
    return line.endswith(":") and PATH_ONLY_RE.match(line[:-1]) is not None


def _lines_matching(pattern: re.Pattern[str], lines: list[str]) -> int:
    """How many of `lines` `pattern` matches at their start (counted in C)."""
    return sum(map(bool, map(pattern.match, lines)))


_HAS_BLANK = methodcaller("__contains__", " ")


def _path_lines(lines: list[str]) -> int:
    """How many of `lines` are a path alone (PATH_ONLY_RE): a line with a blank never is, and most lines of
    a log have one (ruled out by a substring test instead of a match)."""
    return _lines_matching(PATH_ONLY_RE, list(filterfalse(_HAS_BLANK, lines)))


def _grep_line(line: str) -> bool:
    return bool(GREP_LINE_RE.match(line) or GREP_NOLINE_RE.match(line) or GREP_CONTEXT_RE.match(line))


def is_diagnostics(census: Counter[str]) -> bool:
    """Most lines are `path:line:col: message` findings (a compiler's, a vet tool's or a linter's)."""
    return _census_share(census, LOCATION_LINE_RE.match, 6, least=2)


def is_log(census: Counter[str]) -> bool:
    """Most lines start with a timestamp or a level (or are compiler diagnostics / test-runner lines)."""
    if census.total() < 2:
        return False
    return _census_share(census, _log_line, 4)


def _log_line(line: str) -> bool:
    return bool(LOG_PREFIX_RE.match(line) or DIAGNOSTIC_RE.match(line))


def is_table(lines: list[str]) -> bool:
    """A markdown table, CSV/TSV with a constant column count, or a column-aligned CLI table."""
    if len(lines) < 3:
        return False
    piped = sum(1 for line in lines if line.lstrip().startswith("|"))
    if piped * 10 >= len(lines) * 8 and any(MD_SEPARATOR_RE.match(line) for line in lines[:4]):
        return True
    if ALIGNED_HEADER_RE.match(lines[0].strip()):
        return True
    return table_delimiter(lines) is not None


def table_delimiter(lines: list[str]) -> str | None:
    """The delimiter of a CSV/TSV sample: most lines split into the same number (>= 2 or 3) of fields."""
    for delim, minimum in (("\t", 2), (",", 3), (";", 3)):
        widths = [split_delimited(line, delim) for line in lines]
        counts: dict[int, int] = {}
        for fields in widths:
            counts[len(fields)] = counts.get(len(fields), 0) + 1
        width, hits = max(counts.items(), key=lambda kv: (kv[1], kv[0]))
        if width >= minimum and hits * 10 >= len(lines) * 9 and len(widths[0]) == width:
            return delim
    return None


def split_delimited(line: str, delim: str) -> list[str]:
    """Fields of one CSV/TSV line, honouring double quotes (a quoted field may contain the delimiter)."""
    if '"' not in line or delim not in line:
        return line.split(delim)  # what the walk below gives a line without quotes or delimiters, in C
    fields: list[str] = []
    cur: list[str] = []
    quoted = False
    for ch in line:
        if ch == '"':
            quoted = not quoted
            cur.append(ch)
        elif ch == delim and not quoted:
            fields.append("".join(cur))
            cur = []
        else:
            cur.append(ch)
    fields.append("".join(cur))
    return fields


_REMINDER = "<system-reminder>"


def has_gutter(lines: list[str], skeleton: str, census: Counter[str]) -> bool:
    """Most lines start with a file-read line-number gutter (`cat -n`, `   12→`), not counting the
    `<system-reminder>` block Claude Code appends to a read (a short file would fall under the share).
    `skeleton` and `census` are the lines' digit skeleton and its census (`detect`): the gutter pattern does
    not tell one digit from another."""
    if skeleton.startswith(_REMINDER) or f"\n{_REMINDER}" in skeleton:  # one search in C rules it out
        end = next(k for k, line in enumerate(lines) if line.startswith(_REMINDER))
        return end > 0 and _share_at_least(lines[:end], LINE_GUTTER_RE.match, 8)
    return _census_share(census, LINE_GUTTER_RE.match, 8)


def is_code(lines: list[str]) -> bool:
    """Source code: many lines start with a keyword or have code punctuation, and some are indented.

    The lines have no file-read gutter (`detect` has told such a read apart first)."""
    if not lines:
        return False
    codeish = sum(1 for line in lines if _CODE_KEYWORD_RE.match(line) or _CODE_SHAPE_RE.search(line))
    indented = sum(1 for line in lines if line[:1] in (" ", "\t"))
    if len(lines) < 3:
        return codeish == len(lines) and bool(_CODE_KEYWORD_RE.match(lines[0]))
    return codeish * 10 >= len(lines) * 5 and indented * 10 >= len(lines)


def detect(text: str) -> Kind:
    """The kind of a tool output: json, diff, html, diagnostics, search, log, table, code or prose (the
    fallback)."""
    stripped = text.strip()
    if not stripped:
        return "prose"
    if is_json(stripped):
        return "json"
    lines = _sample(stripped)
    # The tests up to the log's judge each line by its digit skeleton, none telling one digit from another:
    # each distinct skeleton is tested once and counted as often as it occurs (most lines of a log or of a
    # test run repeat a few; 400 lines of a service log have 8).
    skeleton = digit_skeleton("\n".join(lines))
    census = Counter(skeleton.split("\n"))
    if has_gutter(lines, skeleton, census):
        # A file read with line numbers: what the agent will edit, quoting its lines back exactly (a Markdown
        # hard break's trailing blanks, the tab after the number of a blank line). Passed through as it is,
        # whatever the file holds.
        return "code"
    if is_diff(lines, skeleton):
        return "diff"
    if _COMPONENT_RE.match(stripped):
        return "code"
    if is_html(stripped):
        return "html"
    if is_diagnostics(census):
        return "diagnostics"
    if _is_search(census):
        return "search"
    if is_log(census):
        return "log"
    if is_table(lines):
        return "table"
    if is_code(lines):
        return "code"
    return "prose"
