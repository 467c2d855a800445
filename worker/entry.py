"""The `trex` entry point, kept light on purpose.

Loading the tokenizer builds a large throw-away rank table next to tiktoken's own copy. Doing that before
aiohttp, the crypto and the worker's modules are imported keeps the process's peak resident memory close to
its steady state (about 25 MB less than loading it last), so `trex dev` and each `--workers` child start by
loading it and only then import the rest.
"""

from __future__ import annotations

import contextlib
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import multiprocessing.connection

    from .config import ConfigSource


def _preload_tokenizer() -> None:
    from . import tokens

    # On failure `trex dev` loads it again while starting and reports the problem properly there.
    with contextlib.suppress(tokens.TokenizerError):
        tokens.preload()


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    if args[:1] == ["dev"]:
        _preload_tokenizer()
    from .cli import main as cli_main

    return cli_main(args)


def child(source: ConfigSource, conn: multiprocessing.connection.Connection) -> None:
    """One `trex dev --workers N` process."""
    _preload_tokenizer()
    from .server import child as serve_child

    serve_child(source, conn)
