"""Argument checks enforcing the Workers KV limits, shared by every backend."""

from __future__ import annotations

import math
from typing import TypeGuard

import msgspec

from kv.errors import (
    InvalidExpirationError,
    InvalidKeyError,
    InvalidListArgumentError,
    InvalidMetadataError,
    ValueTooLargeError,
)

MAX_KEY_BYTES = 512
MAX_VALUE_BYTES = 25 * 1024 * 1024
MAX_METADATA_BYTES = 1024
MIN_EXPIRATION_TTL = 60
MAX_LIST_LIMIT = 1000


def _is_int(value: object) -> TypeGuard[int]:
    # bool is an int subclass, but True as a TTL is certainly a caller bug.
    return isinstance(value, int) and not isinstance(value, bool)


def encode_key(key: object) -> bytes:
    """Return the UTF-8 bytes of ``key`` after checking it is a legal KV key."""
    if not isinstance(key, str):
        raise InvalidKeyError(f"key must be a str, got {type(key).__name__}")
    if key in (".", ".."):
        raise InvalidKeyError(f'key must not be "." or "..", got {key!r}')
    try:
        raw = key.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidKeyError(f"key is not encodable as UTF-8: {exc}") from exc
    if not raw:
        raise InvalidKeyError("key must not be empty")
    if len(raw) > MAX_KEY_BYTES:
        raise InvalidKeyError(f"key is {len(raw)} bytes in UTF-8; the maximum is {MAX_KEY_BYTES}")
    return raw


def encode_value(value: object) -> bytes:
    """Return ``value`` as bytes (str is encoded as UTF-8) after checking its size."""
    if type(value) is bytes:  # the common case: taken as it is (bytes(value) would return it too)
        raw = value
    elif isinstance(value, str):
        raw = value.encode("utf-8")
    elif isinstance(value, (bytes, bytearray, memoryview)):  # a tuple: `X | Y` builds a union every call
        raw = bytes(value)
    else:
        raise TypeError(f"value must be bytes or str, got {type(value).__name__}")
    if len(raw) > MAX_VALUE_BYTES:
        raise ValueTooLargeError(f"value is {len(raw)} bytes; the maximum is {MAX_VALUE_BYTES} (25 MiB)")
    return raw


def encode_metadata(metadata: object) -> bytes | None:
    """Serialize ``metadata`` to JSON, checking it is a dict within the size limit."""
    if metadata is None:
        return None
    if not isinstance(metadata, dict):
        raise InvalidMetadataError(f"metadata must be a dict, got {type(metadata).__name__}")
    try:
        raw = msgspec.json.encode(metadata)
    except (TypeError, ValueError, RecursionError, msgspec.EncodeError) as exc:
        raise InvalidMetadataError(f"metadata is not JSON-serializable: {exc}") from exc
    if len(raw) > MAX_METADATA_BYTES:
        raise InvalidMetadataError(
            f"metadata is {len(raw)} bytes when serialized; the maximum is {MAX_METADATA_BYTES}"
        )
    return raw


class EncodedMetadata(bytes):
    """Metadata already encoded, as `struct_metadata` makes it: the JSON of an object. `put_many` stores it
    as it is (a writer of many entries of one shape encodes them faster from a `msgspec.Struct` than from a
    dict). Plain bytes are not taken as metadata: only this type says they were encoded here."""

    __slots__ = ()


_struct_encoder = msgspec.json.Encoder()


def struct_metadata(value: msgspec.Struct) -> EncodedMetadata:
    """A KV entry's metadata from a `msgspec.Struct` (msgspec writes it as a JSON object, valid UTF-8)."""
    raw = _struct_encoder.encode(value)
    if not raw.startswith(b"{"):
        raise InvalidMetadataError(f"metadata must encode as a JSON object, {type(value).__name__} does not")
    return EncodedMetadata(raw)


def encoded_metadata(raw: EncodedMetadata) -> bytes:
    """Check metadata `struct_metadata` encoded: within the size limit."""
    if len(raw) > MAX_METADATA_BYTES:
        raise InvalidMetadataError(
            f"metadata is {len(raw)} bytes when serialized; the maximum is {MAX_METADATA_BYTES}"
        )
    return raw


MAX_EXPIRATION = 253402300799
"""9999-12-31T23:59:59Z: every backend stores it (SQLite integers, Redis millisecond expirations) and every
clock turns it into a date; a later expiration is refused rather than overflowing half-way through a write."""
MAX_EXPIRATION_TTL = 100 * 365 * 86400
"""The largest TTL accepted as such (a century), well inside MAX_EXPIRATION."""


def resolve_expiration(now: float, expiration_ttl: object, expiration: object) -> int | None:
    """Turn the ``expiration_ttl``/``expiration`` pair into an absolute epoch second, or None."""
    if expiration_ttl is not None and expiration is not None:
        raise InvalidExpirationError("pass either expiration_ttl or expiration, not both")
    if expiration_ttl is not None:
        if not _is_int(expiration_ttl):
            raise InvalidExpirationError(
                f"expiration_ttl must be an int, got {type(expiration_ttl).__name__}"
            )
        if expiration_ttl < MIN_EXPIRATION_TTL:
            raise InvalidExpirationError(
                f"expiration_ttl must be at least {MIN_EXPIRATION_TTL} seconds, got {expiration_ttl}"
            )
        if expiration_ttl > MAX_EXPIRATION_TTL:
            raise InvalidExpirationError(f"expiration_ttl must be at most {MAX_EXPIRATION_TTL} seconds")
        # Rounding up guarantees the key lives at least the requested TTL.
        return math.ceil(now) + expiration_ttl
    if expiration is not None:
        if not _is_int(expiration):
            raise InvalidExpirationError(
                f"expiration must be an int (epoch seconds), got {type(expiration).__name__}"
            )
        if expiration < now + MIN_EXPIRATION_TTL:
            raise InvalidExpirationError(
                f"expiration {expiration} must be at least {MIN_EXPIRATION_TTL} seconds in the future "
                f"(now is {now:.0f})"
            )
        if expiration > MAX_EXPIRATION:
            raise InvalidExpirationError(f"expiration must be at most {MAX_EXPIRATION} (epoch seconds)")
        return expiration
    return None


def check_limit(limit: object) -> int:
    """Return ``limit`` after checking it is an int in 1..1000."""
    if not _is_int(limit):
        raise InvalidListArgumentError(f"limit must be an int, got {type(limit).__name__}")
    if not 1 <= limit <= MAX_LIST_LIMIT:
        raise InvalidListArgumentError(f"limit must be between 1 and {MAX_LIST_LIMIT}, got {limit}")
    return limit


def encode_prefix(prefix: object) -> bytes:
    """Return the UTF-8 bytes of a list prefix."""
    if not isinstance(prefix, str):
        raise InvalidListArgumentError(f"prefix must be a str, got {type(prefix).__name__}")
    try:
        return prefix.encode("utf-8")
    except UnicodeEncodeError as exc:
        raise InvalidListArgumentError(f"prefix is not encodable as UTF-8: {exc}") from exc
