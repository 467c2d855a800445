"""The `trex` entry point, kept light on purpose.

Loading the tokenizer builds a large throw-away rank table next to tiktoken's own copy. Doing that before
aiohttp, the crypto and the worker's modules are imported keeps the process's peak resident memory close to
its steady state (about 25 MB less than loading it last), so `trex dev` and each `--workers` child start by
loading it and only then import the rest.
"""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    import multiprocessing.connection

    from .config import ConfigSource


def _prepare_to_serve() -> None:
    """What a serving process does first: limit malloc's arenas before any thread starts, then load the
    tokenizer before the heavy imports."""
    from . import heap, tokens

    heap.limit_arenas()
    # On failure `trex dev` loads it again while starting and reports the problem properly there.
    with contextlib.suppress(tokens.TokenizerError):
        tokens.preload()


def _serves_itself(dev_args: Sequence[str]) -> bool:
    """False for `trex dev --workers N` (N > 1): that process only supervises, and each child loads the
    tokenizer (about 44 MiB) instead. A value argparse will refuse counts as serving: it reports it later."""
    workers = 1
    for i, arg in enumerate(dev_args):
        name, equals, given = arg.partition("=")
        if len(name) < 3 or not "--workers".startswith(name):  # argparse takes `--work 3` for `--workers 3`
            continue
        value = given if equals else dev_args[i + 1] if i + 1 < len(dev_args) else None
        if value is not None:
            try:
                workers = int(value)  # the last one given counts, as for argparse
            except ValueError:
                return True
    return workers <= 1


def main(argv: Sequence[str] | None = None) -> int:
    args = sys.argv[1:] if argv is None else list(argv)
    try:
        if args[:1] == ["dev"] and _serves_itself(args[1:]):
            _prepare_to_serve()
        from .cli import main as cli_main

        return cli_main(args)
    except KeyboardInterrupt:  # Ctrl-C before the server's own signal handling is in place: a quiet stop
        return 130
    except BrokenPipeError:  # `trex kv list | head`: the reader left; no traceback about it
        with contextlib.suppress(OSError):
            os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        return 1


def child(source: ConfigSource, conn: multiprocessing.connection.Connection) -> None:
    """One `trex dev --workers N` process."""
    with contextlib.suppress(KeyboardInterrupt):  # Ctrl-C reaches the whole group while it starts
        _prepare_to_serve()
        from .server import child as serve_child

        serve_child(source, conn)
