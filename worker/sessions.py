"""Cache-safe sessions: bytes already forwarded in a session are replayed, never rewritten.

Providers cache prompt prefixes byte for byte. If every turn re-optimized the whole history, a message
would change as it aged past the protected recent turns and the provider's cache would miss on every
request. So, per (proxy key, session id), the KV keeps for each message of the conversation list the hash
of what the client sent (its TrexID references unexpanded, as the client sends it again next turn) and the
exact JSON that was forwarded for it (expanded). On the next turn the longest matching prefix is replayed
as it was forwarded, and only the new tail is optimized. When the forwarded context passes a token budget,
the whole conversation is optimized afresh once (and the report says so), which starts a new cached prefix;
it is optimized afresh again only once it has grown by half the budget since, so a context that stays
large is not re-optimized (and its cache lost) on every turn.

Bytes are replayed only under the optimizer settings (mode, protected turns, profile) that made them: a
session that switches to `safe` must not be sent what `aggressive` compacted earlier.

`cache_control` is not part of what is matched: agents such as Claude Code move their cache breakpoint to
the newest block each turn, which changes no content (a provider's cache ignores the marker). A replayed
message gets the client's current breakpoints, at the same places in its forwarded form.

The conversation list is `messages` (chat, Messages) or `input` when it is a list (Responses).

A client that names no session (`X-Session-Id`), such as an OpenAI or Anthropic SDK pointed here unchanged,
still gets one: its conversation is matched by its opening exchange, its messages after any system or
developer ones up to and including the model's first reply, which a conversation carries unchanged from its
second turn on (`anchored_id`).
Two conversations of one key that open alike share that state; each turn replays only the prefix that
matches its own messages, so they can take turns overwriting it, never get each other's messages.
"""

from __future__ import annotations

import hashlib
import logging
import time
from dataclasses import dataclass
from dataclasses import field as dataclass_field
from typing import Any

import msgspec

from kv import KVNamespace, KVUnavailableError

from .optimize.pipeline import Options
from .optimize.segments import Format
from .payloads import charge_stored_bytes

log = logging.getLogger("trex.sessions")

_encoder = msgspec.json.Encoder()
_decoder = msgspec.json.Decoder()


class SessionState(msgspec.Struct):
    """What is stored per session."""

    fmt: str
    hashes: list[str]
    forwarded: list[msgspec.Raw]
    forwarded_tokens: int = 0
    reoptimized_at: int = 0
    """The forwarded size right after the last full re-optimization (0: never, or not of this history)."""
    settings: str = ""
    """The optimizer settings the forwarded bytes were made with (`settings_of`)."""


@dataclass(slots=True)
class Replay:
    """The outcome of matching a request against its session."""

    field: str | None
    """The conversation field (`messages` or `input`), or None when the body has no list to replay."""
    hashes: list[str]
    """One per message as the client sent it (before its TrexID references were expanded)."""
    replayed: int
    """How many leading messages are replaced by their forwarded bytes."""
    reoptimize: bool
    """True when the stored context passed the budget: everything is optimized afresh this time."""
    reoptimized_at: int = 0
    """Carried from the stored state (see `SessionState.reoptimized_at`)."""
    settings: str = ""
    """The optimizer settings of this request, stored with what it forwards."""
    prefix: list[Any] = dataclass_field(default_factory=list)
    """The forwarded form of each replayed message, with the client's current breakpoints."""
    sent: list[msgspec.Raw] = dataclass_field(default_factory=list)
    """The bytes stored for the replayed messages."""
    known: bool = False
    """The session was found stored: remembering this turn replaces its entry rather than adding one."""

    def keep_before(self, index: int) -> None:
        """Replay nothing from message `index` on (the worker changed it this turn: a context_ref added to
        a latest user turn that sits before an assistant prefill)."""
        if index < self.replayed:
            self.replayed = index
            del self.prefix[index:], self.sent[index:]

    def apply(self, body: dict[str, Any]) -> None:
        """Put the forwarded prefix in place of the client's leading messages."""
        if self.field is not None and self.replayed:
            body[self.field][: self.replayed] = self.prefix

    def carries(self, text: str) -> bool:
        """Whether `text` is in what the replayed prefix forwarded (a `trex.context_ref` expansion added on an
        earlier turn is not added again)."""
        needle = _encoder.encode(text)[1:-1]  # as it appears inside a JSON string
        return any(needle in bytes(raw) for raw in self.sent)


def settings_of(options: Options) -> str:
    """What decides the bytes the optimizer forwards for a message, besides the message itself."""
    return f"{options.mode}/{options.protect_recent_turns}/{options.profile or ''}"


def conversation_field(fmt: Format, body: dict[str, Any]) -> str | None:
    """The name of the list that holds the conversation, if the body has one."""
    name = "input" if fmt == "responses" else "messages"
    return name if isinstance(body.get(name), list) else None


_CACHE_CONTROL = b'"cache_control"'


def _hash(item: Any) -> str:
    """The hash of an item's content, its `cache_control` breakpoints left out."""
    data = _encoder.encode(item)
    if _CACHE_CONTROL in data:
        data = _encoder.encode(_without_breakpoints(item))
    return hashlib.sha256(data).hexdigest()[:32]


def _without_breakpoints(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _without_breakpoints(v) for k, v in value.items() if k != "cache_control"}
    if isinstance(value, list):
        return [_without_breakpoints(v) for v in value]
    return value


def _breakpoints(value: Any, path: tuple[Any, ...] = ()) -> list[tuple[tuple[Any, ...], Any]]:
    """Where `cache_control` sits in an item: (path of the object holding it, its value), in order."""
    found: list[tuple[tuple[Any, ...], Any]] = []
    if isinstance(value, dict):
        for k, v in value.items():
            if k == "cache_control":
                found.append((path, v))
            else:
                found += _breakpoints(v, (*path, k))
    elif isinstance(value, list):
        for i, v in enumerate(value):
            found += _breakpoints(v, (*path, i))
    return found


def _with_breakpoints(forwarded: Any, client: Any) -> Any | None:
    """The forwarded form of an item with the client's current breakpoints; None if one has no place."""
    wanted = _breakpoints(client)
    if _breakpoints(forwarded) == wanted:
        return forwarded  # unchanged: the very bytes forwarded before
    out = _without_breakpoints(forwarded)
    for path, value in wanted:
        holder = out
        for step in path:
            ok = (isinstance(holder, dict) and step in holder) or (
                isinstance(holder, list) and isinstance(step, int) and step < len(holder)
            )
            if not ok:
                return None
            holder = holder[step]
        if not isinstance(holder, dict):
            return None
        holder["cache_control"] = value
    return out


_SYSTEM_ROLES = frozenset({"system", "developer"})


def _is_system(item: Any) -> bool:
    """Whether `item` is a system or developer message (a role of any JSON type may come in: a list or an
    object cannot be looked up in a set, and is no system role)."""
    return isinstance(item, dict) and isinstance(role := item.get("role"), str) and role in _SYSTEM_ROLES


_CLIENT_ITEM_TYPES = frozenset({"message", "item_reference"})
"""Responses item types the client writes (with the `…_output` ones); any other type is the model's."""


def _from_the_model(item: Any) -> bool:
    """Whether a conversation item is the model's: an assistant message, or a Responses output item (a
    function call, reasoning …) that carries no role."""
    if not isinstance(item, dict):
        return False
    role = item.get("role")
    if role is not None:
        return bool(role == "assistant")
    kind = item.get("type")
    return isinstance(kind, str) and kind not in _CLIENT_ITEM_TYPES and not kind.endswith("_output")


def anchored_id(key_id: str, fmt: Format, body: dict[str, Any]) -> tuple[str, list[str]] | None:
    """The session id of a conversation sent without one, from its opening exchange (module doc): its items
    from the first after the leading system and developer ones up to and including the model's first reply,
    which is the conversation's own where what comes before it may be the same in every conversation of an
    agent (its instructions, the environment); with the hashes of all its items, for `lookup`. None for a
    conversation that has not had its first exchange yet (nothing of it could be replayed next turn). The key
    is part of the hash, so the id names nothing another key could look up, and does not fingerprint the
    messages across keys."""
    field = conversation_field(fmt, body)
    if field is None:
        return None
    items: list[Any] = body[field]
    start = 0
    while start < len(items) and _is_system(items[start]):
        start += 1
    reply = next((i for i in range(start + 1, len(items) - 1) if _from_the_model(items[i])), None)
    if reply is None:  # no reply yet with a new message after it
        return None
    hashes = [_hash(item) for item in items]
    seed = "\n".join([key_id, fmt, *hashes[start : reply + 1]])
    return "sess_" + hashlib.sha256(seed.encode()).hexdigest()[:32], hashes


def _key(key_id: str, session: str) -> str:
    return f"session/{key_id}/{hashlib.sha256(session.encode()).hexdigest()[:40]}"


def fresh(fmt: Format, body: dict[str, Any], settings: str = "", *, remembered: bool = True) -> Replay:
    """The replay of a session seen for the first time (nothing to look up).

    A one-item conversation under a generated id is not remembered (the proxy stores nothing to replay for
    it), so its hash is not computed; nor are any when the caller will not remember this turn
    (`remembered` False: a generated id with implicit sessions on, whose conversation is found again by its
    opening exchange instead), which spares hashing every message of every request with optimization off.
    """
    field = conversation_field(fmt, body)
    items = body[field] if field is not None else []
    hashes = [_hash(item) for item in items] if remembered and len(items) > 1 else []
    return Replay(field, hashes, 0, False, settings=settings)


async def lookup(
    kv: KVNamespace,
    key_id: str,
    session: str,
    fmt: Format,
    body: dict[str, Any],
    budget_tokens: int,
    settings: str = "",
    hashes: list[str] | None = None,
) -> Replay:
    """The longest prefix of the conversation, as the client sent it, that was forwarded before, with its
    forwarded bytes; `Replay.apply` puts them in place (after the rest's TrexID references are expanded).
    `hashes`: the conversation's `item_hashes`, when the caller has them already."""
    field = conversation_field(fmt, body)
    if field is None:
        return Replay(None, [], 0, False, settings=settings)
    items: list[Any] = body[field]
    if hashes is None:
        hashes = [_hash(item) for item in items]
    try:
        raw = await kv.get(_key(key_id, session))
    except KVUnavailableError:  # the KV is down: the turn is optimized afresh rather than refused
        raw = None
    if raw is None:
        return Replay(field, hashes, 0, False, settings=settings)
    state = msgspec.json.decode(raw, type=SessionState)
    if state.fmt != fmt or state.settings != settings:  # made another way: optimized afresh
        return Replay(field, hashes, 0, False, settings=settings, known=True)
    if (
        state.forwarded_tokens > budget_tokens
        and state.forwarded_tokens - state.reoptimized_at > budget_tokens // 2
    ):
        return Replay(field, hashes, 0, True, settings=settings, known=True)
    n = 0
    for new, old in zip(hashes, state.hashes, strict=False):
        if new != old:
            break
        n += 1
    # A conversation that no longer holds all of the stored one (a client that compacted or edited its
    # history) is not the one last re-optimized: its growth is measured afresh, not from the old mark.
    reoptimized_at = state.reoptimized_at if n == len(state.hashes) else 0
    # The last message is always new work (the latest turn); replaying it too would skip its optimization.
    n = min(n, len(items) - 1)
    prefix: list[Any] = []
    for i in range(n):
        item = _with_breakpoints(_decoder.decode(state.forwarded[i]), items[i])
        if item is None:
            break
        prefix.append(item)
    replayed = len(prefix)
    return Replay(
        field,
        hashes,
        replayed,
        False,
        reoptimized_at,
        settings,
        prefix,
        state.forwarded[:replayed],
        known=True,
    )


async def remember(
    kv: KVNamespace,
    key_id: str,
    session: str,
    fmt: Format,
    body: dict[str, Any],
    rep: Replay,
    forwarded_tokens: int,
    ttl_seconds: int,
    bytes_per_day: int = 0,
) -> None:
    """Store what was forwarded for each message the client sent (run after the response, via wait_until).
    A message the worker added after them (a `trex.context_ref` expansion after a tool result) is not kept:
    it has no message of the client's to be matched with. A session not stored yet counts against the key's
    `bytes_per_day` of stored bytes (0: no limit); past it, it is not stored (its next turn is not
    replayed)."""
    if rep.field is None:
        return
    forwarded = [msgspec.Raw(_encoder.encode(item)) for item in body[rep.field][: len(rep.hashes)]]
    state = SessionState(
        fmt=fmt,
        hashes=rep.hashes,
        forwarded=forwarded,
        forwarded_tokens=forwarded_tokens,
        reoptimized_at=forwarded_tokens if rep.reoptimize else rep.reoptimized_at,
        settings=rep.settings,
    )
    value = _encoder.encode(state)
    if (
        bytes_per_day
        and not rep.known
        and await charge_stored_bytes(kv, key_id, len(value), bytes_per_day, time.time()) is not None
    ):
        log.info("session %s not stored: key %s is past PAYLOAD_BYTES_PER_DAY", session[:12], key_id)
        return
    await kv.put(_key(key_id, session), value, expiration_ttl=ttl_seconds)
