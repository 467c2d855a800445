"""Proxy keys, provider-key bindings and request authentication.

A proxy key (`trex_` + 32 random bytes, base64url) is shown once at creation; only its SHA-256 is stored.
SHA-256 is enough here because the key is 256 bits of randomness: there is nothing to brute-force, so a slow
password hash would only cost latency on every request. Provider keys are sealed by the `Vault`.

KV layout:
    keys/<id>               the key record (JSON)
    keyhash/<sha256 hex>    → <id>
    keyused/<id>            last-used epoch seconds (kept apart so it never races a state change)
    keys_revoked/<id>       a revoke, kept for good: the key is revoked whatever its record says
    bindings/<id>/<provider> the sealed provider key

A change reads a record and writes it back whole, so a plan change or an activation on another instance,
racing a revoke, can write back a record that is not revoked. The revoke therefore also writes its own entry,
which no other change touches: every load of a record for authentication (once per cache load, not per
request) and every admin read reports the key revoked when it is there, and a change that finds it after
writing puts `revoked` back.

Lookups go through a short-lived per-process cache (1 s by default) so the hot path rarely touches the KV,
while a state change or a new binding is still seen by every instance within that second. An entry requests
read is loaded again in the background shortly before it expires, so that under steady traffic no request
waits for the KV (a load that a change on this instance overtook is not cached).
"""

from __future__ import annotations

import asyncio
import functools
import hashlib
import hmac
import secrets
import time
from collections.abc import Callable, Coroutine
from typing import Any, Generic, TypeVar

import msgspec

from kv import KVNamespace

from .context import shared
from .errors import AuthenticationError, ConflictError, GatewayError, InvalidRequestError
from .headernames import AUTHORIZATION, X_API_KEY
from .optimize.base import MODES
from .vault import Vault, VaultError

PROVIDERS = ("openai", "anthropic", "openrouter", "local")
KEY_PREFIX = "trex_"
KEY_STATES = ("active", "inactive", "suspended", "revoked")

T = TypeVar("T")


class KeyRecord(msgspec.Struct, omit_defaults=True):
    """A proxy key as stored (never the key itself)."""

    id: str
    name: str
    hash: str
    prefix: str
    created: int
    state: str = "active"
    plan: str | None = None
    optimize_mode: str | None = None
    """This key's default optimizer mode (None: the configured OPTIMIZE_MODE)."""


class KeyNotFoundError(GatewayError):
    """No proxy key with that id."""

    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    default_code = "key_not_found"


class MissingProviderKeyError(GatewayError):
    """No bound provider key and no `X-Upstream-Api-Key` override."""

    status = 400
    openai_type = "invalid_request_error"
    anthropic_type = "invalid_request_error"
    default_code = "missing_provider_key"


class MasterKeyError(GatewayError):
    """The master key is missing or does not match what sealed the stored secrets."""

    status = 500
    openai_type = "server_error"
    anthropic_type = "api_error"
    default_code = "master_key_error"


class _TTLCache(Generic[T]):
    """A tiny bounded TTL cache owned by one KeyStore (not module state)."""

    def __init__(self, ttl: float, max_entries: int = 10_000, clock: Callable[[], float] = time.monotonic):
        self.ttl = ttl
        self._max = max_entries
        self._clock = clock
        self._data: dict[str, tuple[float, T]] = {}
        self.used: set[str] = set()
        """The entries read since they were last loaded: the ones worth loading again before they expire."""
        self.drops = 0
        """How many entries were dropped so far: a load that began before a drop must not put back what it
        read (see `KeyStore._finished_loading`)."""

    def get(self, key: str) -> tuple[bool, T | None]:
        hit = self._data.get(key)
        if hit is None or hit[0] < self._clock():
            return False, None
        self.used.add(key)
        return True, hit[1]

    def put(self, key: str, value: T) -> None:
        if len(self._data) >= self._max:
            self._data.clear()  # crude but bounded; entries live one TTL anyway
            self.used.clear()
        self._data[key] = (self._clock() + self.ttl, value)
        self.used.discard(key)

    def drop(self, key: str) -> None:
        self.drops += 1
        self._data.pop(key, None)


_RENEW_AT = 0.8
"""When, in a cache entry's lifetime, it is loaded again if requests read it since it was loaded: an entry in
use is renewed before it expires, and no request waits for the KV read (with a 1 s TTL, every request in
flight would otherwise wait for it once a second); what a request is answered with is never older than the
TTL, as before. An entry nobody read since its load is left to expire."""


def hash_key(token: str) -> str:
    """The stored form of a proxy key."""
    return hashlib.sha256(token.encode()).hexdigest()


def credential_from_headers(headers: Any) -> str | None:
    """The proxy key a client sent: `Authorization: Bearer …`, `x-api-key` (Anthropic SDK) or `X-API-Key`."""
    auth = headers.get(AUTHORIZATION)
    if auth:
        scheme, _, value = auth.partition(" ")
        if scheme.lower() == "bearer":
            value = value.strip()
            if value:
                return _printable(value)
    key = headers.get(X_API_KEY)
    return _printable(key.strip()) if key and key.strip() else None


def _printable(token: str) -> str:
    """A presented credential as given, or "" (matches no key: 401) when it is not printable ASCII, which
    every proxy key is. Raw non-UTF-8 header bytes reach us as surrogates, which could not be hashed."""
    return str(token) if token.isascii() and token.isprintable() else ""


_MAX_KEY_ID_CHARS = 64
_MAX_DIGESTS = 10_000
_MAX_PROVIDER_KEY_CHARS = 4096


def _digest(token: str | None) -> str:
    """The hash of a presented proxy key, or AuthenticationError (401) when none was presented."""
    if not token:
        raise AuthenticationError(
            "Missing proxy key: send 'Authorization: Bearer <key>' or 'x-api-key: <key>'.",
            code="missing_api_key",
        )
    return hash_key(token)


def _active(record: KeyRecord | None, digest: str) -> KeyRecord:
    """`record` when it is the active key with this hash, else AuthenticationError (401)."""
    if record is None or not hmac.compare_digest(record.hash, digest):
        raise AuthenticationError("Invalid proxy key.", code="invalid_api_key")
    if record.state != "active":
        raise AuthenticationError(f"This proxy key is {record.state}.", code=f"key_{record.state}")
    return record


def _revoked_slot(key_id: str) -> str:
    return f"keys_revoked/{key_id}"


def _revoked_conflict(key_id: str) -> ConflictError:
    return ConflictError(f"Proxy key {key_id} is revoked; a revoked key cannot change state again.")


class KeyStore:
    """Creates, lists and resolves proxy keys and their provider bindings on a KV namespace."""

    def __init__(
        self,
        kv: KVNamespace,
        vault: Vault | None,
        cache_ttl: float = 1.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._kv = kv
        self._vault = vault
        self._records: _TTLCache[KeyRecord | None] = _TTLCache(cache_ttl, clock=clock)
        self._digests: dict[str, str] = {}
        """The hashes of the keys that last authenticated (see `authenticate_cached`)."""
        self._provider_keys: _TTLCache[str | None] = _TTLCache(cache_ttl, clock=clock)
        self._last_used_written: dict[str, float] = {}
        # Changes read a record and write it back whole: two at once (a revoke and a plan change) would
        # undo each other, a revoked key come back active. One at a time in this process; across instances
        # the `keys_revoked/` entry keeps a revoke (see the module docstring).
        self._changes = asyncio.Lock()
        self._loading: dict[str, tuple[asyncio.Future[Any], int]] = {}
        """Cache entries being loaded, and the cache's `drops` when each load began (see `_load`)."""
        self._renewals: dict[str, asyncio.TimerHandle] = {}  # when each loaded entry is looked at again
        self._closed = False

    # ---- administration --------------------------------------------------------------------------------

    async def create(
        self, name: str, plan: str | None = None, optimize_mode: str | None = None
    ) -> tuple[KeyRecord, str]:
        """Create a key; returns the record and the key itself (shown once, never stored)."""
        if not name.strip():
            raise InvalidRequestError("A key needs a non-empty name.", param="name")
        if optimize_mode is not None and optimize_mode not in MODES:
            raise InvalidRequestError(
                f"optimize mode must be one of {', '.join(MODES)}.", param="optimize_mode"
            )
        token = KEY_PREFIX + secrets.token_urlsafe(32)
        record = KeyRecord(
            id="key_" + secrets.token_hex(8),
            name=name.strip(),
            hash=hash_key(token),
            prefix=token[:12],
            created=int(time.time()),
            plan=plan,
            optimize_mode=optimize_mode,
        )
        await self._kv.put(f"keyhash/{record.hash}", record.id)
        await self._kv.put(f"keys/{record.id}", msgspec.json.encode(record))
        return record, token

    async def get(self, key_id: str) -> KeyRecord:
        """The record for `key_id`, or KeyNotFoundError."""
        # Ids are `key_` and 16 hex digits: a far longer one cannot exist, and must not reach the KV, whose
        # keys are bounded.
        raw = await self._kv.get(f"keys/{key_id}") if len(key_id) <= _MAX_KEY_ID_CHARS else None
        if raw is None:
            raise KeyNotFoundError(f"No proxy key with id {key_id!r}.")
        return await self._with_revoke(msgspec.json.decode(raw, type=KeyRecord))

    async def _with_revoke(self, record: KeyRecord) -> KeyRecord:
        """`record`, revoked if a revoke was ever written for it (see the module docstring)."""
        if record.state != "revoked" and await self._kv.get(_revoked_slot(record.id)) is not None:
            return msgspec.structs.replace(record, state="revoked")
        return record

    async def _revoked_ids(self) -> set[str]:
        return {name.partition("/")[2] for name in await self._kv.names("keys_revoked/")}

    async def list_keys(self) -> list[tuple[KeyRecord, int | None]]:
        """Every key with its last-used time (epoch seconds or None)."""
        out: list[tuple[KeyRecord, int | None]] = []
        revoked = await self._revoked_ids()
        cursor: str | None = None
        while True:
            page = await self._kv.list(prefix="keys/", cursor=cursor)
            for info in page.keys:
                raw = await self._kv.get(info.name)
                if raw is None:
                    continue
                record = msgspec.json.decode(raw, type=KeyRecord)
                if record.id in revoked:
                    record = msgspec.structs.replace(record, state="revoked")
                out.append((record, await self.last_used(record.id)))
            if page.list_complete or page.cursor is None:
                return out
            cursor = page.cursor

    async def last_used(self, key_id: str) -> int | None:
        """When the key was last used (epoch seconds), or None."""
        used = await self._kv.get(f"keyused/{key_id}")
        return int(used) if used else None

    async def set_state(self, key_id: str, state: str) -> KeyRecord:
        """Change a key's state. `revoked` is final; every instance sees a change within its 1 s cache."""
        if state not in KEY_STATES:
            raise InvalidRequestError(f"state must be one of {', '.join(KEY_STATES)}.", param="state")
        async with self._changes:
            record = await self.get(key_id)
            if record.state == "revoked" and state != "revoked":
                raise _revoked_conflict(key_id)
            if state == "revoked":  # first the entry no racing change can overwrite, then the record
                await self._kv.put(_revoked_slot(key_id), str(int(time.time())))
            written = await self._write(msgspec.structs.replace(record, state=state))
            if written.state != state:  # revoked on another instance while this change was made
                raise _revoked_conflict(key_id)
            return written

    async def set_plan(self, key_id: str, plan: str | None) -> KeyRecord:
        """Put a key on a plan (None: no plan)."""
        async with self._changes:
            return await self._write(msgspec.structs.replace(await self.get(key_id), plan=plan))

    async def _write(self, record: KeyRecord) -> KeyRecord:
        """Store `record` whole; revoked again if a revoke (on any instance) came in meanwhile."""
        await self._kv.put(f"keys/{record.id}", msgspec.json.encode(record))
        self._records.drop(record.hash)
        checked = await self._with_revoke(record)
        if checked is not record:
            await self._kv.put(f"keys/{record.id}", msgspec.json.encode(checked))
            self._records.drop(record.hash)
        return checked

    async def delete(self, key_id: str) -> None:
        """Remove a key, its hash index, its bindings and its last-used mark (its usage history stays)."""
        async with self._changes:
            record = await self.get(key_id)
            for provider in await self.bound_providers(key_id):
                await self._kv.delete(f"bindings/{key_id}/{provider}")
                self._provider_keys.drop(f"bindings/{key_id}/{provider}")
            await self._kv.delete(f"keyhash/{record.hash}")
            await self._kv.delete(f"keyused/{key_id}")
            await self._kv.delete(f"keys/{key_id}")
            await self._kv.delete(_revoked_slot(key_id))  # last: the record it guards is gone
            self._records.drop(record.hash)

    async def unbind(self, key_id: str, provider: str) -> bool:
        """Remove the key's binding for `provider`; False if there was none."""
        async with self._changes:
            await self.get(key_id)
            slot = f"bindings/{key_id}/{provider}"
            existed = await self._kv.get(slot) is not None
            await self._kv.delete(slot)
            self._provider_keys.drop(slot)
            return existed

    async def bind(self, key_id: str, provider: str, provider_key: str) -> None:
        """Store `provider_key` sealed for (`key_id`, `provider`), replacing any earlier binding."""
        if provider not in PROVIDERS:
            raise InvalidRequestError(
                f"Unknown provider {provider!r}; expected one of {', '.join(PROVIDERS)}."
            )
        if not provider_key.strip():
            raise InvalidRequestError("The provider key is empty.")
        secret = provider_key.strip()
        # It goes out in a request header: a control character or a space would break every request made
        # with it, so it is refused here rather than as a failure of each of them.
        if (
            len(secret) > _MAX_PROVIDER_KEY_CHARS
            or not (secret.isascii() and secret.isprintable())
            or " " in secret
        ):
            raise InvalidRequestError(
                f"The provider key must be printable ASCII without spaces, at most {_MAX_PROVIDER_KEY_CHARS} "
                "characters."
            )
        slot = f"bindings/{key_id}/{provider}"
        sealed = self._require_vault().seal(secret, slot)
        async with self._changes:
            await self.get(key_id)
            await self._kv.put(slot, msgspec.json.encode(sealed))
            self._provider_keys.drop(slot)
            if await self._kv.get(f"keys/{key_id}") is None:  # deleted meanwhile (by another process)
                await self._kv.delete(slot)
                raise KeyNotFoundError(f"No proxy key with id {key_id!r}.")

    async def bound_providers(self, key_id: str) -> list[str]:
        """Providers with a binding for this key."""
        page = await self._kv.list(prefix=f"bindings/{key_id}/")
        return [info.name.rsplit("/", 1)[1] for info in page.keys]

    # ---- request path ------------------------------------------------------------------------------------

    async def authenticate(self, token: str | None, digest: str | None = None) -> KeyRecord:
        """The active key record for a presented proxy key, or AuthenticationError (401). (`digest`: the
        token's, when the caller has it from `authenticate_cached`.)"""
        if digest is None:
            digest = _digest(token)
        hit, record = self._records.get(digest)
        if not hit:
            # Unknown keys are cached too: a flood of bad keys stays cheap.
            record = await shared(self._load(self._records, digest, self._load_by_hash, digest))
        return _active(record, digest)

    def authenticate_cached(self, token: str | None) -> tuple[KeyRecord | None, str]:
        """What `authenticate` answers when the key's record is in the cache (the 401s included), or None
        when only `authenticate` can tell (it reads the KV); and the token's digest, to pass it. Most requests
        are answered here, with no coroutine.

        The hash of a key that authenticated is remembered (for at most `_MAX_DIGESTS` keys): the same few
        keys make nearly every request, and hashing one (an OpenSSL digest set up and hex-encoded) costs more
        than the rest of this lookup. Only active keys' hashes are kept, so a flood of bad keys cannot fill
        it."""
        remembered = self._digests.get(token) if token else None
        digest = remembered or _digest(token)
        hit, record = self._records.get(digest)
        if not hit:
            return None, digest
        key = _active(record, digest)
        if remembered is None and token:
            if len(self._digests) >= _MAX_DIGESTS:
                self._digests.clear()  # bounded like the caches: the keys in use come back at once
            self._digests[token] = digest
        return key, digest

    async def _load_by_hash(self, digest: str) -> KeyRecord | None:
        key_id = await self._kv.get(f"keyhash/{digest}")
        if key_id is None:
            return None
        raw = await self._kv.get(f"keys/{key_id.decode()}")
        return None if raw is None else await self._with_revoke(msgspec.json.decode(raw, type=KeyRecord))

    def cached_provider_key(self, key_id: str, provider: str) -> tuple[bool, str | None]:
        """(True, what `provider_key` answers) when the cache holds it, else (False, None)."""
        return self._provider_keys.get(f"bindings/{key_id}/{provider}")

    async def provider_key(self, key_id: str, provider: str) -> str | None:
        """The plaintext provider key bound to this proxy key, or None."""
        slot = f"bindings/{key_id}/{provider}"
        hit, value = self.cached_provider_key(key_id, provider)
        if hit:
            return value
        return await shared(self._load(self._provider_keys, slot, self._load_provider_key, slot, provider))

    async def _load_provider_key(self, slot: str, provider: str) -> str | None:
        raw = await self._kv.get(slot)
        plaintext = None
        if raw is not None:
            try:
                plaintext = self._require_vault().unseal(msgspec.json.decode(raw), slot)
            except VaultError as exc:
                raise MasterKeyError(f"Cannot decrypt the bound {provider} key: {exc}.") from exc
        return plaintext

    def _load(
        self, cache: _TTLCache[T], key: str, load: Callable[..., Coroutine[Any, Any, T]], *args: Any
    ) -> asyncio.Future[T]:
        """`load(*args)` for `key` of `cache`, put into the cache when it succeeds; the load in flight if
        there is one, so that it runs once for all the requests that miss the cache at the same moment (a
        burst on a cold or just-expired entry would otherwise make one KV round trip per request). The load is
        a task of its own: a requester that goes away does not cancel it for the others (await it with
        `shared`). Once loaded, an entry is renewed before it expires if requests read it (`_RENEW_AT`)."""
        loading = self._loading.get(key)
        if loading is not None and loading[1] == cache.drops:
            return loading[0]
        # None in flight, or one that began before a change on this instance (a revocation, a new binding):
        # its read may be from before the change, so a request that comes after it does not wait for it.
        task = asyncio.ensure_future(load(*args))
        self._loading[key] = (task, cache.drops)
        task.add_done_callback(functools.partial(self._finished_loading, cache, key, cache.drops, load, args))
        return task

    def _finished_loading(
        self,
        cache: _TTLCache[Any],
        key: str,
        drops: int,
        load: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
        task: asyncio.Future[Any],
    ) -> None:
        loading = self._loading.get(key)
        if loading is not None and loading[0] is task:
            del self._loading[key]
        # Retrieved here: every requester may have gone already (a renewal has none). A failed load leaves the
        # entry to expire; the next request then loads it, and meets the failure itself.
        if task.cancelled() or task.exception() is not None:
            return
        if cache.drops != drops:  # a change on this instance may have come after the read: not cached
            return
        cache.put(key, task.result())
        pending = self._renewals.pop(key, None)
        if pending is not None:  # one renewal per entry: the entry was loaded again before its timer came
            pending.cancel()
        if not self._closed:
            self._renewals[key] = asyncio.get_running_loop().call_later(
                cache.ttl * _RENEW_AT, self._renew, cache, key, load, args
            )

    def _renew(
        self,
        cache: _TTLCache[Any],
        key: str,
        load: Callable[..., Coroutine[Any, Any, Any]],
        args: tuple[Any, ...],
    ) -> None:
        """Load `key` again if requests read it since its last load (see `_RENEW_AT`)."""
        self._renewals.pop(key, None)
        if key in cache.used and not self._closed:
            self._load(cache, key, load, *args)

    def close(self) -> None:
        """Stop renewing cache entries (at shutdown: no KV read is started after it)."""
        self._closed = True
        for handle in self._renewals.values():
            handle.cancel()
        self._renewals.clear()

    def touch(self, key_id: str, now: float | None = None) -> Coroutine[Any, Any, None] | None:
        """The write recording use of `key_id`, or None when it was recorded in the last minute.

        Checked synchronously so the hot path creates no coroutine or task at all in the common case.
        """
        now = time.time() if now is None else now
        if now - self._last_used_written.get(key_id, 0.0) < 60:
            return None
        self._last_used_written[key_id] = now
        return self._kv.put(f"keyused/{key_id}", str(int(now)))

    def _require_vault(self) -> Vault:
        if self._vault is None:
            raise MasterKeyError(
                "TREX_MASTER_KEY is not set; provider keys cannot be encrypted or decrypted."
            )
        return self._vault
