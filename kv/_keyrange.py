"""Byte-order key ranges and opaque list cursors."""

from __future__ import annotations

import base64
import binascii
import re

from kv.errors import InvalidListArgumentError

_CURSOR_ALPHABET = re.compile(r"[A-Za-z0-9_-]+")


def prefix_successor(prefix: bytes) -> bytes | None:
    """Return the smallest byte string above every string starting with ``prefix``.

    None means the range is unbounded above (empty prefix, or one made only of 0xFF bytes).
    """
    # Trailing 0xFF bytes cannot be incremented; carry into the byte before them.
    stripped = prefix.rstrip(b"\xff")
    if not stripped:
        return None
    return stripped[:-1] + bytes([stripped[-1] + 1])


def lower_bound(prefix: bytes, after: bytes | None) -> tuple[bytes, bool]:
    """Return ``(bound, inclusive)`` where a scan for ``prefix`` resuming after ``after`` starts."""
    if after is not None and after >= prefix:
        return after, False
    return prefix, True


def in_range(key: bytes, prefix: bytes, after: bytes | None) -> bool:
    """Whether ``key`` belongs to a scan for ``prefix`` resuming after ``after``."""
    return key.startswith(prefix) and (after is None or key > after)


def encode_cursor(last_key: bytes) -> str:
    """Return an opaque cursor meaning "continue strictly after ``last_key``"."""
    return base64.urlsafe_b64encode(last_key).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: object, max_key_bytes: int) -> bytes | None:
    """Return the key a cursor resumes after; None or "" means "from the start"."""
    if cursor is None or cursor == "":
        return None
    if not isinstance(cursor, str) or not _CURSOR_ALPHABET.fullmatch(cursor):
        raise InvalidListArgumentError(f"malformed list cursor: {cursor!r}")
    try:
        raw = base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4))
    except (binascii.Error, ValueError) as exc:
        raise InvalidListArgumentError(f"malformed list cursor: {cursor!r}") from exc
    # Only cursors this module produced are accepted: canonical base64 of a legal key.
    if encode_cursor(raw) != cursor or not 1 <= len(raw) <= max_key_bytes:
        raise InvalidListArgumentError(f"malformed list cursor: {cursor!r}")
    try:
        raw.decode("utf-8")
    except UnicodeDecodeError as exc:
        raise InvalidListArgumentError(f"malformed list cursor: {cursor!r}") from exc
    return raw
