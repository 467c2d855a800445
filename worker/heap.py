"""The C allocator (glibc's malloc) asked to keep a serving worker's resident memory down.

A no-op where the C library lacks it (musl, macOS): the function is looked up in the symbols the
process already has (`CDLL(None)`), not found by name on disk, which would run `ldconfig` in a subprocess.
"""

from __future__ import annotations

import contextlib
import ctypes
import sys


def _libc() -> ctypes.CDLL | None:
    if not sys.platform.startswith("linux"):
        return None
    try:
        return ctypes.CDLL(None)
    except OSError:
        return None


def give_back() -> None:
    """Return the free memory malloc holds to the system (after a large, short-lived allocation)."""
    libc = _libc()
    if libc is not None:
        with contextlib.suppress(AttributeError):
            libc.malloc_trim(0)
