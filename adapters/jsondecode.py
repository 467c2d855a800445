"""Decoding JSON that came from an upstream, whose nesting no one bounds.

msgspec decodes recursively: a document nested deeper than it goes (about a thousand levels) raises
`RecursionError`, not `msgspec.DecodeError`. To a reader of an upstream's answer such a document is as
unreadable as malformed JSON, so it is raised as a `DecodeError` here, and every `except msgspec.DecodeError`
that handles an unreadable answer, event or error body handles it too.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar, overload

import msgspec

T = TypeVar("T")


class JsonDecoder(Generic[T]):
    """A `msgspec.json.Decoder` whose too-deep documents raise `msgspec.DecodeError` like malformed ones."""

    __slots__ = ("_decode",)

    @overload
    def __init__(self: JsonDecoder[Any]) -> None: ...

    @overload
    def __init__(self, type: type[T]) -> None: ...

    def __init__(self, type: Any = Any) -> None:
        self._decode = msgspec.json.Decoder(type).decode

    def decode(self, data: bytes | str) -> T:
        try:
            return self._decode(data)  # type: ignore[no-any-return]
        except RecursionError:
            raise msgspec.DecodeError("JSON is nested too deeply") from None
