"""Raw records exchanged between the validating front end and the backends (Structs: several are built
for every request, and a Struct is several times cheaper to build than a frozen dataclass)."""

from __future__ import annotations

import msgspec


class StoredValue(msgspec.Struct, frozen=True):
    """A live value as a backend returns it: raw bytes plus serialized metadata."""

    value: bytes
    metadata: bytes | None


class StoredKey(msgspec.Struct, frozen=True):
    """A live key as a backend's scan returns it, before decoding."""

    key: bytes
    expiration: int | None
    metadata: bytes | None


class Write(msgspec.Struct, frozen=True):
    """A validated write, ready for a backend to persist."""

    key: bytes
    value: bytes
    expiration: int | None
    metadata: bytes | None
