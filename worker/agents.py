"""Signed agents: the HMAC authorization mode of the payload routes (seed `000_…`).

An agent (`agent_` + 16 hex) holds a secret (`tsk_` + 32 random bytes, base64url) that is shown once at
creation and stored sealed by the `Vault` (the KV key is the associated data, so a sealed secret copied to
another agent does not decrypt). Unlike a proxy key it cannot be stored hashed: the server needs the secret
itself to recompute the HMAC.

A signed request carries

    Authorization: Bearer <agent_id>:<timestamp>:<nonce>:<signature>

where `signature` is base64url without padding (Node's `digest('base64url')`) of
HMAC-SHA256(secret, "METHOD\\nPATH\\nTIMESTAMP\\nNONCE"), PATH is the request path as sent (no query string)
and TIMESTAMP is ISO-8601 with a zone, as `new Date().toISOString()` gives (`2026-03-12T10:30:00.000Z`).
The timestamp holds colons itself, so the header is split at its first and last two colons.

KV layout:
    agents/<agent id>             the agent record (JSON, the secret sealed inside)
    agents_revoked/<agent id>     a revoke, kept for good: the agent is revoked whatever its record says
    nonce/<agent id>/<nonce>      a used nonce, kept long enough to cover the whole skew window

A state change reads the record and writes it back whole, so an activation on another instance racing a revoke
could write back an active record; the revoke's own entry, which no other change touches, keeps it revoked:
every load of a record (for verification, once per cache load) reports it, and a change that finds it after
writing puts `revoked` back.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import math
import re
import secrets
import time
from datetime import UTC, datetime
from typing import Any

import msgspec
from aiohttp import web

from kv import KVNamespace

from .auth import MasterKeyError, _TTLCache
from .errors import AuthenticationError, ConflictError, GatewayError, InvalidRequestError
from .vault import Vault, VaultError

AGENT_PREFIX = "agent_"
SECRET_PREFIX = "tsk_"
AGENT_STATES = ("active", "suspended", "revoked")
DEFAULT_MAX_SKEW_SECONDS = 300.0
SKEW_VAR = "AGENT_SIGNATURE_SKEW_SECONDS"

_AGENT_ID_RE = re.compile(r"agent_[A-Za-z0-9_-]{1,64}")
# Nonces become part of a KV key: a bounded length and a charset without '/' and ':' keep that unambiguous.
_NONCE_RE = re.compile(r"[A-Za-z0-9._~+=-]{1,128}")
_SIGNATURE_RE = re.compile(r"[A-Za-z0-9_-]{1,128}")
# What `Date.prototype.toISOString()` gives, and the same with fewer fraction digits or a numeric offset.
_TIMESTAMP_RE = re.compile(r"\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}(?:\.\d{1,6})?(?:Z|[+-]\d{2}:\d{2})")


class AgentRecord(msgspec.Struct, omit_defaults=True):
    """An agent as stored. `secret` is the Vault's sealed form, never the secret itself."""

    id: str
    name: str
    created: int
    prefix: str
    """The first characters of the secret, to tell secrets apart in a listing."""
    secret: dict[str, Any]
    state: str = "active"


class AgentNotFoundError(GatewayError):
    """No agent with that id (administration; a signed request gets a 401 instead)."""

    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    default_code = "agent_not_found"


def _agent_slot(agent_id: str) -> str:
    return f"agents/{agent_id}"


def _revoked_slot(agent_id: str) -> str:
    return f"agents_revoked/{agent_id}"


def _revoked_conflict(agent_id: str) -> ConflictError:
    return ConflictError(f"Agent {agent_id} is revoked; a revoked agent cannot change state again.")


def canonical_string(method: str, path: str, timestamp: str, nonce: str) -> str:
    """The signed text: `[method, path, timestamp, nonce].join('\\n')` as in the seed's Node example."""
    return "\n".join((method, path, timestamp, nonce))


def sign(secret: str, method: str, path: str, timestamp: str, nonce: str) -> str:
    """`crypto.createHmac('sha256', secret).update(canonical).digest('base64url')`: base64url, no padding."""
    mac = hmac.new(
        secret.encode(), canonical_string(method, path, timestamp, nonce).encode(), hashlib.sha256
    ).digest()
    return base64.urlsafe_b64encode(mac).rstrip(b"=").decode()


def iso_timestamp(epoch: float) -> str:
    """`new Date(epoch * 1000).toISOString()`: UTC, milliseconds, `Z`."""
    millis = math.floor(epoch * 1000)
    stamp = datetime.fromtimestamp(millis // 1000, UTC).strftime("%Y-%m-%dT%H:%M:%S")
    return f"{stamp}.{millis % 1000:03d}Z"


def authorization_header(
    agent_id: str,
    secret: str,
    method: str,
    path: str,
    *,
    timestamp: str | None = None,
    nonce: str | None = None,
) -> str:
    """A complete `Authorization` value for one request (a client-side helper; tests use it too)."""
    timestamp = timestamp or iso_timestamp(time.time())
    nonce = nonce or secrets.token_urlsafe(16)
    return f"Bearer {agent_id}:{timestamp}:{nonce}:{sign(secret, method, path, timestamp, nonce)}"


class ParsedAuthorization(msgspec.Struct, frozen=True):
    """The four parts of a signed `Authorization` header, and the timestamp as epoch seconds."""

    agent_id: str
    timestamp: str
    nonce: str
    signature: str
    epoch: float


def parse_authorization(value: str | None) -> ParsedAuthorization:
    """Split and check the shape of the header; 401 `missing_signature` or `malformed_signature`."""
    if value is None or not value.strip():
        raise AuthenticationError(
            "Missing signature: send 'Authorization: Bearer <agent_id>:<timestamp>:<nonce>:<signature>'.",
            code="missing_signature",
        )
    scheme, _, credentials = value.strip().partition(" ")
    parts = credentials.strip().split(":")
    if scheme.lower() != "bearer" or len(parts) < 4:
        raise _malformed("expected 'Bearer <agent_id>:<timestamp>:<nonce>:<signature>'")
    agent_id, timestamp, nonce, signature = parts[0], ":".join(parts[1:-2]), parts[-2], parts[-1]
    if not _AGENT_ID_RE.fullmatch(agent_id):
        raise _malformed("the agent id must look like 'agent_…'")
    if not _NONCE_RE.fullmatch(nonce):
        raise _malformed("the nonce must be 1-128 characters of A-Z a-z 0-9 . _ ~ + = -")
    if not _SIGNATURE_RE.fullmatch(signature):
        raise _malformed("the signature must be base64url without padding")
    if not _TIMESTAMP_RE.fullmatch(timestamp):
        raise _malformed("the timestamp must be ISO-8601 with a zone, e.g. 2026-03-12T10:30:00.000Z")
    try:
        epoch = datetime.fromisoformat(timestamp).timestamp()
    except ValueError:
        raise _malformed("the timestamp is not a valid date and time") from None
    return ParsedAuthorization(agent_id, timestamp, nonce, signature, epoch)


def _malformed(why: str) -> AuthenticationError:
    return AuthenticationError(f"Malformed signature header: {why}.", code="malformed_signature")


class AgentStore:
    """Creates, lists and changes agents on a KV namespace, and verifies signed requests.

    Shared by the CLI, the admin API and the payload routes. Record lookups on the request path go through a
    1 s per-process cache, so a state change is seen by every instance within that second.
    """

    def __init__(
        self,
        kv: KVNamespace,
        vault: Vault | None,
        *,
        max_skew_seconds: float = DEFAULT_MAX_SKEW_SECONDS,
        cache_ttl: float = 1.0,
    ) -> None:
        if not max_skew_seconds > 0:
            raise ValueError("max_skew_seconds must be positive")
        self._kv = kv
        self._vault = vault
        self.max_skew_seconds = max_skew_seconds
        # A nonce must outlive every moment its request could still be accepted: a timestamp up to `skew`
        # in the future stays acceptable until `skew` in the past, so both directions are covered.
        self.nonce_ttl = max(60, math.ceil(2 * max_skew_seconds) + 1)
        self._cache: _TTLCache[tuple[AgentRecord, str] | None] = _TTLCache(cache_ttl)
        # One read-and-write-back at a time in this process; across instances the `agents_revoked/` entry
        # keeps a revoke (see the module docstring).
        self._changes = asyncio.Lock()

    # ---- administration --------------------------------------------------------------------------------

    async def create(self, name: str) -> tuple[AgentRecord, str]:
        """Create an agent; returns the record and its secret (shown once; stored only sealed)."""
        if not name.strip():
            raise InvalidRequestError("An agent needs a non-empty name.", param="name")
        vault = self._require_vault()
        agent_id = AGENT_PREFIX + secrets.token_hex(8)
        secret = SECRET_PREFIX + secrets.token_urlsafe(32)
        record = AgentRecord(
            id=agent_id,
            name=name.strip(),
            created=int(time.time()),
            prefix=secret[:12],
            secret=vault.seal(secret, _agent_slot(agent_id)),
        )
        await self._kv.put(_agent_slot(agent_id), msgspec.json.encode(record))
        return record, secret

    async def get(self, agent_id: str) -> AgentRecord:
        """The record for `agent_id`, or AgentNotFoundError."""
        record = await self._load(agent_id) if _AGENT_ID_RE.fullmatch(agent_id) else None
        if record is None:
            raise AgentNotFoundError(f"No agent with id {agent_id!r}.")
        return record

    async def list_agents(self) -> list[AgentRecord]:
        """Every agent, in id order."""
        out: list[AgentRecord] = []
        revoked = await self._revoked_ids()
        cursor: str | None = None
        while True:
            page = await self._kv.list(prefix="agents/", cursor=cursor)
            for info in page.keys:
                raw = await self._kv.get(info.name)
                if raw is not None:
                    record = msgspec.json.decode(raw, type=AgentRecord)
                    if record.id in revoked:
                        record = msgspec.structs.replace(record, state="revoked")
                    out.append(record)
            if page.list_complete or page.cursor is None:
                return out
            cursor = page.cursor

    async def _revoked_ids(self) -> set[str]:
        return {name.partition("/")[2] for name in await self._kv.names("agents_revoked/")}

    async def set_state(self, agent_id: str, state: str) -> AgentRecord:
        """Change an agent's state. `revoked` is final; instances see a change within their 1 s cache."""
        if state not in AGENT_STATES:
            raise InvalidRequestError(f"state must be one of {', '.join(AGENT_STATES)}.", param="state")
        async with self._changes:
            record = await self.get(agent_id)
            if record.state == "revoked" and state != "revoked":
                raise _revoked_conflict(agent_id)
            if state == "revoked":  # first the entry no racing change can overwrite, then the record
                await self._kv.put(_revoked_slot(agent_id), str(int(time.time())))
            updated = msgspec.structs.replace(record, state=state)
            await self._kv.put(_agent_slot(agent_id), msgspec.json.encode(updated))
            self._cache.drop(agent_id)
            if state != "revoked" and await self._kv.get(_revoked_slot(agent_id)) is not None:
                # Revoked on another instance while this change was made: the revoke stands.
                revoked = msgspec.structs.replace(updated, state="revoked")
                await self._kv.put(_agent_slot(agent_id), msgspec.json.encode(revoked))
                self._cache.drop(agent_id)
                raise _revoked_conflict(agent_id)
            return updated

    async def delete(self, agent_id: str) -> None:
        """Remove an agent (its used nonces expire on their own)."""
        async with self._changes:
            await self.get(agent_id)
            await self._kv.delete(_agent_slot(agent_id))
            await self._kv.delete(_revoked_slot(agent_id))  # last: the record it guards is gone
            self._cache.drop(agent_id)

    # ---- request path ------------------------------------------------------------------------------------

    async def verify(
        self, method: str, path: str, authorization: str | None, *, now: float | None = None
    ) -> AgentRecord:
        """The active agent that signed this request, or a 401 `AuthenticationError` saying why not.

        Cheapest rejections first: header shape, then the clock, then the agent (one cached KV read), then
        the HMAC. The nonce is consumed last, so only a correctly signed request can use one up — a forged
        header cannot burn a legitimate client's nonces.
        """
        parsed = parse_authorization(authorization)
        now = time.time() if now is None else now
        if abs(now - parsed.epoch) > self.max_skew_seconds:
            raise AuthenticationError(
                f"The signature timestamp {parsed.timestamp} is more than {self.max_skew_seconds:g} seconds "
                "away from the server's clock.",
                code="timestamp_out_of_range",
            )
        hit, found = self._cache.get(parsed.agent_id)
        if not hit:
            found = await self._load_with_secret(parsed.agent_id)
            self._cache.put(parsed.agent_id, found)  # unknown agents too: a flood of bad ids stays cheap
        if found is None:
            raise AuthenticationError(f"Unknown agent {parsed.agent_id}.", code="unknown_agent")
        record, secret = found
        if record.state != "active":
            raise AuthenticationError(f"Agent {record.id} is {record.state}.", code=f"agent_{record.state}")
        expected = sign(secret, method, path, parsed.timestamp, parsed.nonce)
        if not hmac.compare_digest(expected.encode(), parsed.signature.encode()):
            raise AuthenticationError("Invalid signature.", code="invalid_signature")
        fresh = await self._kv.put_if_absent(
            f"nonce/{record.id}/{parsed.nonce}", parsed.timestamp, expiration_ttl=self.nonce_ttl
        )
        if not fresh:
            raise AuthenticationError(
                "This nonce was already used; sign every request with a new one.", code="nonce_reused"
            )
        return record

    async def _load(self, agent_id: str) -> AgentRecord | None:
        """The stored record, revoked if a revoke was ever written for it (see the module docstring)."""
        raw = await self._kv.get(_agent_slot(agent_id))
        if raw is None:
            return None
        record = msgspec.json.decode(raw, type=AgentRecord)
        if record.state != "revoked" and await self._kv.get(_revoked_slot(agent_id)) is not None:
            return msgspec.structs.replace(record, state="revoked")
        return record

    async def _load_with_secret(self, agent_id: str) -> tuple[AgentRecord, str] | None:
        record = await self._load(agent_id)
        if record is None:
            return None
        try:
            secret = self._require_vault().unseal(record.secret, _agent_slot(agent_id))
        except VaultError as exc:
            raise MasterKeyError(f"Cannot decrypt the secret of agent {agent_id}: {exc}.") from exc
        return record, secret

    def _require_vault(self) -> Vault:
        if self._vault is None:
            raise MasterKeyError(
                "TREX_MASTER_KEY is not set; agent secrets cannot be encrypted or decrypted."
            )
        return self._vault


async def verify_agent(request: web.Request, store: AgentStore, *, now: float | None = None) -> AgentRecord:
    """Authenticate a payload-route request signed by an agent; the dependency those handlers call first.

    Raises 401 `AuthenticationError` with code `missing_signature`, `malformed_signature`,
    `timestamp_out_of_range`, `unknown_agent`, `agent_suspended`/`agent_revoked`, `invalid_signature` or
    `nonce_reused`. The signed path is the path as sent, without the query string.
    """
    path = request.rel_url.raw_path  # as sent (percent-encoding kept), without the query string
    return await store.verify(request.method, path, request.headers.get("Authorization"), now=now)
