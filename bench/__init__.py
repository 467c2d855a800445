"""Benchmarks. Each writes its results table between markers in README.md and bench/README.md."""

from __future__ import annotations

from pathlib import Path

_ROOT = Path(__file__).resolve().parent.parent
READMES = (_ROOT / "README.md", _ROOT / "bench" / "README.md")


def write_section(name: str, text: str) -> None:
    """Replace what stands between `<!-- name:start -->` and `<!-- name:end -->` in every README that has them."""
    start, end = f"<!-- {name}:start -->", f"<!-- {name}:end -->"
    for readme in READMES:
        doc = readme.read_text()
        if start not in doc:
            continue
        head, _, rest = doc.partition(start)
        _, _, tail = rest.partition(end)
        readme.write_text(head + start + "\n" + text + "\n" + end + tail)


def publish(name: str, text: str, write: bool) -> None:
    """Print a benchmark's report and, with `write`, put it in the READMEs' `name` section."""
    print(text)
    if write:
        write_section(name, text)
