"""Which proxy key made each object OpenAI stores for the gateway.

OpenAI keeps stored responses and stored chat completions per OpenAI project, and several proxy keys may be
bound to the same OpenAI key. So the gateway records, for every such object made through it, the proxy key
that made it (`stored/<kind>/<id>` → key id, for as long as OpenAI keeps the object by default), and the
follow-up routes (`handlers.stored`) serve an id only to that key: to any other, and for an id the gateway
never saw made, they answer OpenAI's own not-found, so whether the object exists is not given away.

The record is written after the response with `ctx.wait_until`: from a JSON answer's `id`, or from the id in a
stream's first event (`response.created`, the first chunk) the moment it passes, never holding the stream.
Only a request that asked OpenAI to store something costs a write; an ordinary chat completion costs nothing.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING, Any, Literal

import msgspec

from adapters.jsondecode import JsonDecoder
from adapters.sse import COMMENT, SSEEvent
from kv import KVNamespace

from .errors import GatewayError, InvalidRequestError

if TYPE_CHECKING:
    from .context import ExecutionContext
    from .proxy import Relay

Kind = Literal["response", "chat_completion"]

OWNER_TTL_SECONDS = 30 * 86400
"""How long a record is kept: OpenAI keeps stored responses and chat completions 30 days by default."""

ID_RE = re.compile(r"[A-Za-z0-9][A-Za-z0-9_\-]{0,255}")
"""What OpenAI's ids (`resp_…`, `chatcmpl-…`) are made of: never a `/`, `.` or `%`."""


def _slot(kind: Kind, ident: str) -> str:
    return f"stored/{kind}/{ident}"


def kind_made(wire: str, body: dict[str, Any]) -> Kind | None:
    """What OpenAI stores for a request forwarded to it as sent (`wire` is its format): a response unless
    `store` is false (Responses store by default; background ones must), a chat completion only when `store`
    is true."""
    store = body.get("store")
    if wire == "responses":
        return "response" if store is not False else None
    return "chat_completion" if store is True and wire == "chat" else None


class _Made(msgspec.Struct):
    id: Any = None
    store: Any = None


class _Event(msgspec.Struct):
    id: Any = None
    response: _Made | None = None


_made = JsonDecoder(_Made)
_event = JsonDecoder(_Event)


def _checked(ident: Any, store: Any) -> str | None:
    """The id if it is an OpenAI id of an object OpenAI says it stored (a Responses answer says `store`)."""
    if store is False or not isinstance(ident, str) or not ID_RE.fullmatch(ident):
        return None
    return ident


async def remember(kv: KVNamespace, kind: Kind, ident: str, key_id: str) -> None:
    """Record `key_id` as the maker of `ident`."""
    await kv.put(_slot(kind, ident), key_id, expiration_ttl=OWNER_TTL_SECONDS)


async def remember_answer(kv: KVNamespace, kind: Kind, answer: bytes, key_id: str) -> None:
    """Record `key_id` as the maker of the object a JSON answer describes (decoded here, after the
    response: only `id` and `store` are read)."""
    try:
        made = _made.decode(answer)
    except msgspec.DecodeError:  # also msgspec.ValidationError, its subclass
        return
    ident = _checked(made.id, made.store)
    if ident is not None:
        await remember(kv, kind, ident, key_id)


def id_in_event(data: str) -> str | None:
    """The id of the object a stream's first event announces: a Responses event's `response.id`, a chat
    chunk's `id`."""
    try:
        event = _event.decode(data)
    except msgspec.DecodeError:  # also msgspec.ValidationError, its subclass
        return None
    if event.response is not None:
        return _checked(event.response.id, event.response.store)
    return _checked(event.id, None)


async def forget(kv: KVNamespace, kind: Kind, ident: str) -> None:
    """Drop the record of an object OpenAI has deleted."""
    await kv.delete(_slot(kind, ident))


async def made_by(kv: KVNamespace, kind: Kind, ident: str, key_id: str) -> bool:
    """True when `key_id` made `ident` through the gateway (and OpenAI may still keep it)."""
    if not ID_RE.fullmatch(ident):
        return False  # not an OpenAI id: nobody made it
    maker = await kv.get(_slot(kind, ident))
    return maker is not None and maker.decode() == key_id


class NotStoredError(GatewayError):
    """404 as OpenAI words it for an id it does not have: no code, no param."""

    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"


def not_found(kind: Kind, ident: str) -> NotStoredError:
    """OpenAI's own 404 for an id it does not have, for each kind of object."""
    if kind == "response":
        message = f"Response with id '{ident}' not found."
    else:
        message = f"No chat completion found with id '{ident}'."
    return NotStoredError(message, headers={"X-Trex-Upstream-Provider": "openai"})


def previous_not_found(ident: str) -> InvalidRequestError:
    """OpenAI's 400 for a `previous_response_id` it does not have."""
    return InvalidRequestError(
        f"Previous response with id '{ident}' not found.",
        param="previous_response_id",
        code="previous_response_not_found",
    )


class OwnedStream:
    """A relay that records `key_id` as the maker of the object its stream's first event announces, as that
    event passes (with `ctx.wait_until`: the write goes on alongside the rest of the stream, so a client that
    cancels a background response mid-stream finds it recorded), and otherwise relays as `relay` does."""

    __slots__ = ("_ctx", "_key_id", "_kind", "_kv", "_relay", "_watching")

    def __init__(self, relay: Relay, ctx: ExecutionContext, kv: KVNamespace, kind: Kind, key_id: str) -> None:
        self._relay = relay
        self._ctx = ctx
        self._kv = kv
        self._kind = kind
        self._key_id = key_id
        self._watching = True

    @property
    def done(self) -> bool:
        return self._relay.done

    @property
    def failed(self) -> bool:
        return self._relay.failed

    @property
    def finished(self) -> bool:
        return self._relay.finished

    def feed(self, event: SSEEvent) -> bytes:
        if self._watching and event.event != COMMENT:
            self._watching = False  # the object is announced first, or not at all (an error)
            ident = id_in_event(event.data)
            if ident is not None:
                self._ctx.wait_until(remember(self._kv, self._kind, ident, self._key_id))
        return self._relay.feed(event)

    def end(self) -> bytes:
        return self._relay.end()

    def fail(self, message: str) -> bytes:
        return self._relay.fail(message)
