"""Two settings of the C allocator (glibc's malloc) that keep a serving worker's resident memory down.

Both are no-ops where the C library lacks them (musl, macOS): the functions are looked up in the symbols the
process already has (`CDLL(None)`), not found by name on disk, which would run `ldconfig` in a subprocess.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys

_M_ARENA_MAX = -8  # mallopt parameter (malloc.h)


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def limit_arenas() -> None:
    """One malloc arena for all threads; called before the process starts any.

    glibc gives each thread that allocates an arena of its own (up to eight per core), and an arena keeps
    what its thread freed for that thread's later allocations. The worker's threads (the SQLite
    connection's, the access log's, the token counters', the executor's) allocate little and seldom at the
    same moment, yet held about 2 MiB of a worker under load that way. glibc's per-thread cache still serves
    most small allocations without taking the arena's lock.
    """
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.mallopt(_M_ARENA_MAX, 1)


def give_back() -> None:
    """Return the free memory malloc holds to the system (after a large, short-lived allocation)."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.malloc_trim(0)
