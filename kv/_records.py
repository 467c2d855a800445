"""Raw records exchanged between the validating front end and the backends."""

from __future__ import annotations

from dataclasses import dataclass


@dataclass(frozen=True, slots=True)
class StoredValue:
    """A live value as a backend returns it: raw bytes plus serialized metadata."""

    value: bytes
    metadata: bytes | None


@dataclass(frozen=True, slots=True)
class StoredKey:
    """A live key as a backend's scan returns it, before decoding."""

    key: bytes
    expiration: int | None
    metadata: bytes | None


@dataclass(frozen=True, slots=True)
class Write:
    """A validated write, ready for a backend to persist."""

    key: bytes
    value: bytes
    expiration: int | None
    metadata: bytes | None
