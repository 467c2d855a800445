"""Markup: HTML pages and tables (markdown, CSV/TSV, column-aligned CLI tables).

HTML (balanced/aggressive) becomes text: script, style, nav and similar boilerplate are dropped, headings
become `#` lines, list items `- ` lines, table rows ` | `-joined cells, links `[text](url)`; text in `<pre>`
keeps its whitespace. Whatever the conversion leaves out (tags, attributes, dropped elements) is checked
for facts afterwards, and every fact of the page not in the text is listed in one closing marker. Safe mode
leaves HTML alone: converting it is not lossless.

Tables: safe mode trims the padding around markdown cells (the table reads the same). Balanced/aggressive
fold the body of long tables: the header, the first and last rows and the rows that stand out (an error-like
cell, a term of `ctx.query` that few rows contain, a value that few rows of its column share where most
share one: the pod with `7 (2m ago)` restarts among `0`s, the `0/1` among `1/1`) stay; the other rows become
one marker with their count, the value counts of low-cardinality columns (a minority value naming its rows
by their first cell) and every fact they contained (`facts.marker`).
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from html.parser import HTMLParser
from types import MappingProxyType

from worker.optimize.base import Compressed, Context, Mode
from worker.optimize.kinds._common import (
    FactLedger,
    collapse_blank_lines,
    finish,
    fold_marker,
    missing_facts,
    worth_folding,
)
from worker.optimize.kinds._detect import (
    ALIGNED_HEADER_RE,
    MD_SEPARATOR_RE,
    is_html,
    split_delimited,
    table_delimiter,
)

# ---------------------------------------------------------------------------------------------------
# HTML

_SKIP_TAGS = frozenset(
    {"script", "style", "noscript", "template", "svg", "nav", "iframe", "canvas", "object", "embed"}
)
_BLOCK_TAGS = frozenset(
    {
        "p", "div", "section", "article", "main", "header", "footer", "aside", "ul", "ol", "table",
        "blockquote", "hr", "dl", "dt", "dd", "figure", "figcaption", "form", "fieldset", "details",
        "summary", "address", "body", "html", "head",
    }
)  # fmt: skip
_VOID_TAGS = frozenset({"br", "img", "hr", "meta", "link", "input", "source", "wbr", "area", "col", "base"})
_HEADINGS: Mapping[str, int] = MappingProxyType({"h1": 1, "h2": 2, "h3": 3, "h4": 4, "h5": 5, "h6": 6})
_SPACE_RE = re.compile(r"[ \t\r\n\f\v]+")
_HTML_MARKER = "dropped HTML markup, attributes and boilerplate (script, style, nav)"
# Marks the start of a line inside <pre>, whose indentation must survive the final per-line strip.
_PRE_LINE = "\x02"


class _TextExtractor(HTMLParser):
    """Collects the readable text of an HTML document as markdown-ish lines."""

    def __init__(self) -> None:
        super().__init__(convert_charrefs=True)
        self._out: list[str] = []
        self._skip_depth = 0
        self._skip_tag: str | None = None
        self._pre = 0
        self._links: list[tuple[str | None, list[str], int]] = []
        """Open <a> elements: href, the buffer their text goes to, and where in it the text starts."""
        self._title: list[str] = []
        self._in_title = False
        self._row: list[str] | None = None
        self._cell: list[str] | None = None

    # Text goes either into the current table cell or into the output stream.
    def _emit(self, text: str) -> None:
        if self._cell is not None:
            self._cell.append(text)
        else:
            self._out.append(text)

    def _newline(self) -> None:
        if self._cell is not None:
            self._cell.append(" ")
        else:
            self._out.append("\n")

    def _buffer(self) -> list[str]:
        return self._cell if self._cell is not None else self._out

    # HTML lets </td> and </tr> be omitted: a new cell or row closes the open one.
    def _close_cell(self) -> None:
        if self._cell is None:
            return
        text = _SPACE_RE.sub(" ", "".join(self._cell)).strip()
        self._cell = None
        if self._row is not None:
            self._row.append(text)
        elif text:
            self._out.append(" " + text + " ")

    def _close_row(self) -> None:
        self._close_cell()
        if self._row:
            self._out.append("\n" + " | ".join(self._row))
        self._row = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        if self._skip_depth:
            if tag == self._skip_tag and tag not in _VOID_TAGS:
                self._skip_depth += 1
            return
        if tag == "title":
            self._in_title = True
            return
        if tag in _SKIP_TAGS:
            self._skip_tag = tag
            self._skip_depth = 1
            return
        if tag in _HEADINGS:
            self._newline()
            self._emit("#" * _HEADINGS[tag] + " ")
        elif tag == "li":
            self._newline()
            self._emit("- ")
        elif tag == "tr":
            self._close_row()
            self._row = []
        elif tag in ("td", "th"):
            self._close_cell()
            self._cell = []
        elif tag == "br":
            self._newline()
        elif tag == "pre":
            self._newline()
            self._emit(_PRE_LINE)
            self._pre += 1
        elif tag == "a":
            buffer = self._buffer()
            self._links.append((dict(attrs).get("href"), buffer, len(buffer)))
        elif tag == "code" and not self._pre:
            self._emit("`")
        elif tag == "img":
            alt = dict(attrs).get("alt")
            if alt:
                self._emit(f"[image: {alt}]")
        elif tag in _BLOCK_TAGS:
            self._newline()

    def handle_endtag(self, tag: str) -> None:
        if self._skip_depth:
            if tag == self._skip_tag:
                self._skip_depth -= 1
            return
        if tag == "title":
            self._in_title = False
        elif tag in ("td", "th"):
            self._close_cell()
        elif tag in ("tr", "thead", "tbody", "tfoot"):
            self._close_row()
        elif tag == "table":
            self._close_row()
            self._newline()
        elif tag in _HEADINGS or tag in _BLOCK_TAGS:
            self._newline()
        elif tag == "pre":
            self._pre = max(0, self._pre - 1)
            self._newline()
        elif tag == "code" and not self._pre:
            self._emit("`")
        elif tag == "a" and self._links:
            href, buffer, start = self._links.pop()
            if not href or href.startswith(("#", "javascript:")) or buffer is not self._buffer():
                return  # in-page or script links carry no address worth keeping
            label = _SPACE_RE.sub(" ", "".join(buffer[start:])).strip()
            del buffer[start:]
            if not label or label == href:
                self._emit(href)
            else:
                self._emit(f"[{label}]({href})")

    def handle_data(self, data: str) -> None:
        if self._skip_depth:
            return
        if self._in_title:
            self._title.append(data)
            return
        self._emit(data.replace("\n", "\n" + _PRE_LINE) if self._pre else _SPACE_RE.sub(" ", data))

    def text(self) -> str:
        """The collected text: one block per line, pre-formatted lines with their indentation."""
        self._close_row()
        lines: list[str] = []
        title = _SPACE_RE.sub(" ", "".join(self._title)).strip()
        if title:
            lines.append(f"Title: {title}")
        for raw in "".join(self._out).split("\n"):
            if raw.startswith(_PRE_LINE):
                lines.append(raw.replace(_PRE_LINE, "").rstrip())
            else:
                lines.append(raw.replace(_PRE_LINE, "").strip())
        return collapse_blank_lines("\n".join(lines)).strip()


def html_to_text(html: str) -> str:
    """The readable text of an HTML document (no fact check; see `compress`)."""
    parser = _TextExtractor()
    parser.feed(html)
    parser.close()
    return parser.text()


def _compress_html(text: str) -> Compressed | None:
    body = html_to_text(text)
    missing = missing_facts(text, body)
    if missing:
        body = f"{body}\n{fold_marker(_HTML_MARKER, missing)}"
    return finish(text, body, "html-text", ["HTML converted to text (markup, scripts, styles, nav dropped)"])


# ---------------------------------------------------------------------------------------------------
# Tables


@dataclass(frozen=True, slots=True)
class _TableSettings:
    min_rows: int
    head: int
    tail: int
    interesting_cap: int


_TABLE_SETTINGS: Mapping[Mode, _TableSettings] = MappingProxyType(
    {
        "balanced": _TableSettings(min_rows=12, head=3, tail=2, interesting_cap=10),
        "aggressive": _TableSettings(min_rows=8, head=1, tail=1, interesting_cap=5),
    }
)
_ERROR_CELL_RE = re.compile(
    r"\b(?:error|errors|failed|failure|fail|fatal|exception|crashloopbackoff|evicted|oomkilled|denied|"
    r"rejected|invalid|timeout|unhealthy|degraded|down)\b",
    re.IGNORECASE,
)
_QUERY_WORD_RE = re.compile(r"[A-Za-z0-9][\w.-]{2,}")
_MD_CELL_PAD_RE = re.compile(r" *(?<!\\)\| *")  # an escaped pipe (`\|`) is cell text, not a border
_DASH_RUN_RE = re.compile(r"-{3,}")
_ALIGNED_SPLIT_RE = re.compile(r"\s{2,}")
_SUMMARY_MAX_VALUES = 6
_SUMMARY_MAX_FIELDS = 6
_NAMED_MAX = 8
"""A summarised value held by at most this many folded rows (and by fewer than half as many as the most
common value) names them by their first cell."""


@dataclass(slots=True)
class _Table:
    kind: str
    """"markdown", "delimited" or "aligned"."""
    header: list[str]
    """Header line(s) kept verbatim (markdown: header + separator)."""
    rows: list[str]
    columns: list[str]
    cells: list[list[str]]


def _parse_table(lines: list[str]) -> _Table | None:
    if len(lines) < 3:
        return None
    if lines[0].lstrip().startswith("|") and MD_SEPARATOR_RE.match(lines[1]):
        rows = lines[2:]
        if not all(row.lstrip().startswith("|") for row in rows):
            return None
        cells = [_md_cells(row) for row in rows]
        return _Table("markdown", lines[:2], rows, _md_cells(lines[0]), cells)
    if ALIGNED_HEADER_RE.match(lines[0].strip()):
        columns = _ALIGNED_SPLIT_RE.split(lines[0].strip())
        return _Table(
            "aligned", lines[:1], lines[1:], columns, [_ALIGNED_SPLIT_RE.split(r.strip()) for r in lines[1:]]
        )
    delim = table_delimiter(lines)
    if delim is None:
        return None
    columns = split_delimited(lines[0], delim)
    cells = [split_delimited(row, delim) for row in lines[1:]]
    return _Table("delimited", lines[:1], lines[1:], columns, cells)


def _md_cells(line: str) -> list[str]:
    stripped = line.strip()
    if stripped.startswith("|"):
        stripped = stripped[1:]
    if stripped.endswith("|"):
        stripped = stripped[:-1]
    return [cell.strip() for cell in stripped.split("|")]


def _normalise_markdown(lines: list[str]) -> list[str]:
    """Markdown table lines without cell padding (the table renders identically)."""
    out: list[str] = []
    for line in lines:
        if line.lstrip().startswith("|"):
            line = _MD_CELL_PAD_RE.sub(" | ", line.strip()).strip()
            if MD_SEPARATOR_RE.match(line):
                line = _DASH_RUN_RE.sub("---", line)
        out.append(line)
    return out


def _compress_table(text: str, ctx: Context) -> Compressed | None:
    lines = text.strip("\n").split("\n")
    table = _parse_table(lines)
    if table is None:
        return None
    if table.kind == "markdown":
        lines = _normalise_markdown(lines)
        table = _parse_table(lines) or table
    if ctx.mode == "safe":
        return finish(text, "\n".join(lines), "table-whitespace", ["markdown cell padding"])
    settings = _TABLE_SETTINGS[ctx.mode]
    n = len(table.rows)
    if n < settings.min_rows:
        return finish(text, "\n".join(lines), "table-whitespace", ["markdown cell padding"])
    keep = set(range(min(settings.head, n))) | set(range(max(0, n - settings.tail), n))
    keep.update(_interesting_rows(table, ctx.query)[: settings.interesting_cap])
    folded = [i for i in range(n) if i not in keep]
    if len(folded) < 2:
        return None
    dropped = [table.rows[i] for i in folded]
    kept_text = "\n".join(table.header + [table.rows[i] for i in sorted(keep)])
    what = f"folded {len(folded)} of {n} rows" + "".join(f"; {s}" for s in _column_summaries(table, folded))
    marker_text, _ = FactLedger(kept_text).marker(what, dropped)
    if not worth_folding(marker_text, dropped):
        return None
    out = list(table.header)
    placed = False
    for i, row in enumerate(table.rows):
        if i in keep:
            out.append(row)
        elif not placed:
            out.append(marker_text)
            placed = True
    return finish(text, "\n".join(out), "table-fold", [f"folded {len(folded)} of {n} table rows"])


def _interesting_rows(table: _Table, query: str) -> list[int]:
    """Rows with an error-like cell, then rows containing a query word that few rows contain, then rows with
    a rare value in a column where most rows share one value (rarest first)."""
    n = len(table.rows)
    rare = max(1, n // 10)
    hits: dict[int, None] = {}
    errors = [i for i, row in enumerate(table.rows) if _ERROR_CELL_RE.search(row)]
    if len(errors) <= max(rare, 3):
        hits.update(dict.fromkeys(errors))
    lowered = [row.lower() for row in table.rows]
    for word in dict.fromkeys(w.lower() for w in _QUERY_WORD_RE.findall(query)):
        matches = [i for i in range(n) if word in lowered[i]]
        if 0 < len(matches) <= rare:
            hits.update(dict.fromkeys(matches))
    hits.update(dict.fromkeys(_rare_value_rows(table, rare)))
    return list(hits)


def _rare_value_rows(table: _Table, rare: int) -> list[int]:
    """Rows holding a value shared by at most `rare` rows of a column whose most common value most rows hold
    (a column of ids or free text, where every value is rare, marks nothing); rarest first."""
    n = len(table.rows)
    found: dict[int, int] = {}
    for c in range(len(table.columns)):
        values = [cells[c] if c < len(cells) else "" for cells in table.cells]
        counts: dict[str, int] = {}
        for v in values:
            counts[v] = counts.get(v, 0) + 1
        if max(counts.values()) * 2 <= n:
            continue
        for i, v in enumerate(values):
            if counts[v] <= rare:
                found[i] = min(found.get(i, n), counts[v])
    return sorted(found, key=lambda i: (found[i], i))


def _column_summaries(table: _Table, folded: list[int]) -> list[str]:
    """`column values: a (40), b (3: x, y, z)` for columns with few distinct values among the folded rows;
    a minority value names its rows by their first cell when the first cells of the folded rows differ."""
    firsts = [table.cells[i][0] for i in folded]
    names = dict(zip(folded, firsts, strict=True)) if len(set(firsts)) == len(firsts) else {}
    out: list[str] = []
    for c, name in enumerate(table.columns):
        holders: dict[str, list[int]] = {}
        for i in folded:
            if c < len(table.cells[i]):
                holders.setdefault(table.cells[i][c], []).append(i)
        total = sum(len(rows) for rows in holders.values())
        if total < 3 or len(holders) > _SUMMARY_MAX_VALUES or len(holders) * 2 > total:
            continue
        if any(not v or len(v) > 40 for v in holders):
            continue
        ordered = sorted(holders.items(), key=lambda kv: -len(kv[1]))
        shown = []
        for v, rows in ordered:
            named = c > 0 and names and len(rows) <= _NAMED_MAX and len(rows) * 2 < len(ordered[0][1])
            shown.append(f"{v} ({len(rows)}{': ' + ', '.join(names[i] for i in rows) if named else ''})")
        out.append(f"{name.strip() or f'column {c + 1}'} values: " + ", ".join(shown))
        if len(out) >= _SUMMARY_MAX_FIELDS:
            break
    return out


# ---------------------------------------------------------------------------------------------------


def compress(text: str, ctx: Context) -> Compressed | None:
    """HTML to text, or table folding; None for other content or when nothing shrinks."""
    if ctx.mode == "off":
        return None
    if is_html(text.strip()):
        if ctx.mode == "safe":
            return None
        return _compress_html(text)
    return _compress_table(text, ctx)
