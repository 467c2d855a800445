"""Exception hierarchy shared by every KV backend."""

from __future__ import annotations


class KVError(Exception):
    """Base class of every error raised by a KV namespace."""


class InvalidKeyError(KVError):
    """The key is not a 1..512-byte UTF-8 string, or is "." or ".."."""


class ValueTooLargeError(KVError):
    """The value is larger than the 25 MiB Workers KV limit."""


class InvalidMetadataError(KVError):
    """The metadata is not a JSON-serializable dict of at most 1024 serialized bytes."""


class InvalidExpirationError(KVError):
    """The expiration or expiration TTL is malformed, too short, or both were given."""


class InvalidListArgumentError(KVError):
    """A ``list`` argument (prefix, limit or cursor) is malformed."""


class KVUnavailableError(KVError):
    """The storage backend cannot be reached or opened."""


class KVIndeterminateError(KVUnavailableError):
    """The backend stopped answering after the operation was sent (a reply timed out, the connection broke
    mid-reply): it may or may not have been applied. Retrying an increment could apply it twice; an
    `incr_many_once` sent again with the same token cannot."""


class KVClosedError(KVError):
    """The namespace was used after ``close()``."""
