"""TokenZip payloads behind TrexIDs (seed `000_…`): validate, store, read, describe and revoke.

A push (`POST /v1/payloads`, signed by an agent) carries the seed's body:

    {"tzp_version": "1.0",
     "payload": {"vector_seq_b64": ["AAECAwQ="], "quant_params": {"min": -1, "max": 1, "method": "uniform"},
                 "dimensions": 384, "chunk_count": 1, "summary": "demo payload"},
     "metadata": {"ttl_seconds": 86400, "allowed_receivers": ["agent_xxx"]}}

It is decoded and validated by msgspec in one pass (a bad field is a 400 naming it), then checked: the
version is `1.0` or `1.0.0` (else `unsupported_tzp_version`), there are `chunk_count` vectors, each is
standard base64 of 1 to `dimensions` bytes (one uniformly quantized byte per dimension; a shorter vector
leaves the rest zero, as the seed's own 5-byte example for 384 dimensions does), and `min` < `max`.

Stored under `payloads/<trex_id>` with the sender, `created_at`, `expires_at` and a checksum: sha256 over
the canonical encoding of `payload` (JSON with sorted keys, no whitespace, UTF-8). Expiry is decided by the
store's clock on every read (the KV entry also expires, a minute later, to reclaim space); a delete removes
the entry, so a revocation is seen by every instance at once. Payloads stored by the gateway for a proxy key
(`trex.store_context`, on `/v1/compress` or a proxied request) carry extra fields: the preserved facts and the
original. What one sender stores is counted per UTC day (`payloads_bytes/<sender>/<day>`); past
`PAYLOAD_BYTES_PER_DAY` a store is a 429 `storage_quota_exceeded` until midnight UTC.
"""

from __future__ import annotations

import base64
import binascii
import hashlib
import math
import re
import secrets
import time
from collections.abc import Callable, Sequence
from typing import Any, Literal

import msgspec

from kv import MAX_VALUE_BYTES, KVNamespace

from .errors import (
    InvalidRequestError,
    NotFoundError,
    PayloadTooLargeError,
    PermissionDeniedError,
    RateLimitError,
)

TZP_VERSIONS = ("1.0", "1.0.0")
TREX_ID_PREFIX = "tzp_"
MAX_DIMENSIONS = 4096
MAX_CHUNKS = 10_000
MAX_VECTOR_CELLS = 1 << 21
"""chunk_count times dimensions: each vector is ranked at full width (zero-padded), in pure Python."""
MIN_TTL_SECONDS = 60
MAX_TTL_SECONDS = 365 * 86400
DEFAULT_TTL_SECONDS = 86400
_SLOT = "payloads/"
_BYTES_SLOT = "payloads_bytes/"  # per sender and UTC day: what it stored


class StorageQuotaError(RateLimitError):
    default_code = "storage_quota_exceeded"


_REVOKED = "payloads_revoked/"
"""A revocation claim, so concurrent DELETEs of one payload (on any instance) revoke it once."""


class UnsupportedVersionError(InvalidRequestError):
    default_code = "unsupported_tzp_version"


class NotAReceiverError(PermissionDeniedError):
    default_code = "not_a_receiver"


class NotTheSenderError(PermissionDeniedError):
    default_code = "not_the_sender"


class PayloadNotFoundError(NotFoundError):
    default_code = "payload_not_found"


class QuantParams(msgspec.Struct, forbid_unknown_fields=True):
    # int | float: a number is kept as sent, so the canonical encoding (and the checksum) match the client's.
    min: int | float
    max: int | float
    method: Literal["uniform"]


class Payload(msgspec.Struct, forbid_unknown_fields=True, omit_defaults=True):
    vector_seq_b64: list[str]
    quant_params: QuantParams
    dimensions: int
    chunk_count: int
    summary: str = ""
    # Set by the gateway when it stores optimized context for a proxy key.
    embedding: str | None = None
    """What made the vectors: `lexical-hash-384`, or `provider:<model>`."""
    facts: list[str] = []
    original: str | None = None
    chunks: list[str] = []
    """The text of each chunk, in vector order (gateway-stored payloads)."""


class Metadata(msgspec.Struct, forbid_unknown_fields=True):
    ttl_seconds: int = DEFAULT_TTL_SECONDS
    allowed_receivers: list[str] = []


class PushRequest(msgspec.Struct, forbid_unknown_fields=True):
    tzp_version: str
    payload: Payload
    metadata: Metadata = msgspec.field(default_factory=Metadata)


class Stored(msgspec.Struct, omit_defaults=True):
    trex_id: str
    tzp_version: str
    sender: str
    created_at: float
    expires_at: float
    checksum: str
    size_bytes: int
    payload: Payload
    metadata: Metadata
    sent: list[str] = []
    """Optional payload fields the sender wrote out, default values included: part of the payload as sent."""


class _SentKeys(msgspec.Struct):
    payload: dict[str, msgspec.Raw] = {}


_OPTIONAL_FIELDS = Payload.__struct_fields__[
    len(Payload.__struct_fields__) - len(Payload.__struct_defaults__) :
]
_sent_decoder = msgspec.json.Decoder(_SentKeys)


_push_decoder = msgspec.json.Decoder(PushRequest)
_stored_decoder = msgspec.json.Decoder(Stored)
_encoder = msgspec.json.Encoder()


def decode_push(body: bytes) -> PushRequest:
    """The push body, validated (400 naming the field, or `unsupported_tzp_version`)."""
    try:
        push = _push_decoder.decode(body)
    except msgspec.ValidationError as exc:
        message = str(exc)
        raise InvalidRequestError(f"Invalid payload: {message}", param=_param_of(message)) from None
    except msgspec.DecodeError as exc:
        raise InvalidRequestError(f"Malformed JSON body: {exc}", code="invalid_json") from None
    check(push)
    return push


_FIELD_RE = re.compile(r"(?:unknown|missing required) field `([^`]+)`")


def _param_of(message: str) -> str | None:
    """The field a msgspec validation message is about: `Object missing required field `dimensions` - at
    `$.payload`` names `payload.dimensions`, not its parent."""
    where = message.rsplit("at `$.", 1)[-1].rstrip("`") if "at `$." in message else ""
    field = _FIELD_RE.search(message)
    if field is not None:
        return f"{where}.{field[1]}" if where else field[1]
    return where or None


def check(push: PushRequest) -> None:
    """What the types cannot say (see the module docstring)."""
    if push.tzp_version not in TZP_VERSIONS:
        raise UnsupportedVersionError(
            f"tzp_version {push.tzp_version!r} is not supported; use one of {', '.join(TZP_VERSIONS)}.",
            param="tzp_version",
        )
    p, meta = push.payload, push.metadata
    if not 1 <= p.dimensions <= MAX_DIMENSIONS:
        raise InvalidRequestError(
            f"payload.dimensions must be from 1 to {MAX_DIMENSIONS}.", param="payload.dimensions"
        )
    if not 1 <= p.chunk_count <= MAX_CHUNKS:
        raise InvalidRequestError(
            f"payload.chunk_count must be from 1 to {MAX_CHUNKS}.", param="payload.chunk_count"
        )
    if p.chunk_count * p.dimensions > MAX_VECTOR_CELLS:
        # A one-byte vector stands for `dimensions` floats: without this a 70 KB push is 41M floats to rank.
        raise InvalidRequestError(
            f"payload.chunk_count * payload.dimensions must be at most {MAX_VECTOR_CELLS:,} "
            f"({p.chunk_count:,} * {p.dimensions:,} given).",
            param="payload.chunk_count",
        )
    if len(p.vector_seq_b64) != p.chunk_count:
        raise InvalidRequestError(
            f"payload.vector_seq_b64 has {len(p.vector_seq_b64)} vectors for chunk_count {p.chunk_count}.",
            param="payload.vector_seq_b64",
        )
    for i, encoded in enumerate(p.vector_seq_b64):
        where = f"payload.vector_seq_b64[{i}]"
        try:
            size = len(base64.b64decode(encoded, validate=True))
        except (binascii.Error, ValueError):
            raise InvalidRequestError(f"{where} is not valid base64.", param=where) from None
        if not 1 <= size <= p.dimensions:
            raise InvalidRequestError(
                f"{where} holds {size} bytes; a vector has 1 to dimensions ({p.dimensions}) bytes.",
                param=where,
            )
    if not p.quant_params.min < p.quant_params.max:
        raise InvalidRequestError(
            "payload.quant_params.min must be below max.", param="payload.quant_params.min"
        )
    if not math.isfinite(p.quant_params.max - p.quant_params.min):  # dequantizing would give NaN scores
        raise InvalidRequestError(
            "payload.quant_params: max - min must be a finite number.", param="payload.quant_params.max"
        )
    if p.chunks and len(p.chunks) != p.chunk_count:
        raise InvalidRequestError("payload.chunks must have one text per vector.", param="payload.chunks")
    if not MIN_TTL_SECONDS <= meta.ttl_seconds <= MAX_TTL_SECONDS:
        raise InvalidRequestError(
            f"metadata.ttl_seconds must be from {MIN_TTL_SECONDS} to {MAX_TTL_SECONDS}.",
            param="metadata.ttl_seconds",
        )
    if not all(isinstance(r, str) and r for r in meta.allowed_receivers):
        raise InvalidRequestError(
            "metadata.allowed_receivers must be agent ids.", param="metadata.allowed_receivers"
        )


def sent_fields(body: bytes) -> list[str]:
    """The optional payload fields a (valid) push body writes out, whatever their values."""
    written = _sent_decoder.decode(body).payload  # nested values are not parsed again
    return [name for name in _OPTIONAL_FIELDS if name in written]


def _as_sent(payload: Payload, sent: Sequence[str] = ()) -> dict[str, Any]:
    """The payload as its sender wrote it: an optional field sent with its default value (`"summary": ""`)
    is part of it, though the struct leaves defaults out."""
    doc: dict[str, Any] = msgspec.to_builtins(payload)
    for name in sent:
        if name not in doc:
            doc[name] = msgspec.to_builtins(getattr(payload, name))
    return doc


def canonical(payload: Payload, sent: Sequence[str] = ()) -> bytes:
    """The payload's canonical encoding: JSON, keys sorted, no whitespace, UTF-8."""
    return msgspec.json.encode(_as_sent(payload, sent), order="sorted")


def iso(epoch: float) -> str:
    """RFC 3339 UTC with milliseconds, as the seed writes timestamps."""
    whole = int(epoch)
    return time.strftime("%Y-%m-%dT%H:%M:%S", time.gmtime(whole)) + f".{int((epoch - whole) * 1000):03d}Z"


class PayloadStore:
    """TokenZip payloads in the KV. `clock` decides expiry (tests move it)."""

    def __init__(
        self, kv: KVNamespace, clock: Callable[[], float] = time.time, bytes_per_day: int = 0
    ) -> None:
        self.kv = kv
        self.clock = clock
        self.bytes_per_day = bytes_per_day
        """What one sender (a proxy key or an agent) may store per UTC day; 0: no limit."""

    async def put(self, sender: str, push: PushRequest, sent: Sequence[str] = ()) -> Stored:
        """Store a push; `sent` (`sent_fields`) keeps the checksum on the payload exactly as it was sent."""
        now = self.clock()
        trex_id = TREX_ID_PREFIX + secrets.token_hex(16)
        body = canonical(push.payload, sent)
        stored = Stored(
            trex_id=trex_id,
            tzp_version=push.tzp_version,
            sender=sender,
            created_at=now,
            expires_at=now + push.metadata.ttl_seconds,
            checksum="sha256:" + hashlib.sha256(body).hexdigest(),
            size_bytes=len(body),
            payload=push.payload,
            metadata=push.metadata,
            sent=list(sent),
        )
        value = _encoder.encode(stored)
        if len(value) > MAX_VALUE_BYTES:  # the KV would refuse it: the client's 413, not a 500
            raise PayloadTooLargeError(
                f"The payload to store is {len(value):,} bytes once encoded; a stored payload is at most "
                f"{MAX_VALUE_BYTES:,} bytes (the KV's value limit)."
            )
        if self.bytes_per_day:
            await self._charge(sender, len(value), now)
        # The KV entry outlives `expires_at` by a minute: reads decide expiry by the clock above.
        await self.kv.put(_SLOT + trex_id, value, expiration_ttl=push.metadata.ttl_seconds + 60)
        return stored

    async def _charge(self, sender: str, size: int, now: float) -> None:
        wait = await charge_stored_bytes(self.kv, sender, size, self.bytes_per_day, now)
        if wait is not None:
            raise StorageQuotaError(
                f"Storing this payload ({size:,} bytes) would pass the {self.bytes_per_day:,} bytes a sender "
                "may store per day (PAYLOAD_BYTES_PER_DAY); retry after midnight UTC.",
                headers={"Retry-After": str(wait)},
            )

    async def get(self, trex_id: str) -> Stored:
        """The live payload, or 404 (missing, expired or revoked: the same answer)."""
        raw = await self.kv.get(_SLOT + trex_id) if _well_formed(trex_id) else None
        stored = None if raw is None else _stored_decoder.decode(raw)
        # A revoke claims the payload, then deletes it: one cut off between the two (a KV outage) has still
        # revoked it, on every instance.
        if (
            stored is None
            or stored.expires_at <= self.clock()
            or await self.kv.get(_REVOKED + trex_id) is not None
        ):
            raise PayloadNotFoundError(f"No payload {trex_id!r}: it does not exist, expired or was revoked.")
        return stored

    async def readable(self, trex_id: str, reader: str) -> Stored:
        """The payload if `reader` sent it or is one of its receivers (403 otherwise)."""
        stored = await self.get(trex_id)
        if reader != stored.sender and reader not in stored.metadata.allowed_receivers:
            raise NotAReceiverError(f"{reader} is not among the receivers of {trex_id}.")
        return stored

    async def revoke(self, trex_id: str, requester: str) -> None:
        try:
            stored = await self.get(trex_id)
        except PayloadNotFoundError:
            # A revoke cut off between its claim and its delete: the next attempt deletes what it left.
            if _well_formed(trex_id) and await self.kv.get(_REVOKED + trex_id) is not None:
                await self.kv.delete(_SLOT + trex_id)
            raise
        if requester != stored.sender:
            raise NotTheSenderError(f"Only the sender of {trex_id} can revoke it.")
        # One revocation wins, on any instance: the others find it already revoked (404), not a second 204.
        ttl = max(60, math.ceil(stored.expires_at - self.clock()) + 60)
        if not await self.kv.put_if_absent(_REVOKED + trex_id, b"1", expiration_ttl=ttl):
            raise PayloadNotFoundError(f"No payload {trex_id!r}: it does not exist, expired or was revoked.")
        await self.kv.delete(_SLOT + trex_id)


def _well_formed(trex_id: str) -> bool:
    """`tzp_` and 32 lower-case hex digits, as `put` makes them: anything else cannot exist (and an over-long
    id must not reach the KV, whose keys are bounded)."""
    digits = trex_id[len(TREX_ID_PREFIX) :]
    return (
        trex_id.startswith(TREX_ID_PREFIX)
        and len(digits) == 32
        and all(c in "0123456789abcdef" for c in digits)
    )


def receipt(stored: Stored) -> dict[str, Any]:
    """The 201 body of a push."""
    return {
        "trex_id": stored.trex_id,
        "expires_at": iso(stored.expires_at),
        "checksum": stored.checksum,
        "created_at": iso(stored.created_at),
        "size_bytes": stored.size_bytes,
    }


def document(stored: Stored) -> dict[str, Any]:
    """The GET body: the payload and its metadata."""
    return {
        "trex_id": stored.trex_id,
        "tzp_version": stored.tzp_version,
        "payload": _as_sent(stored.payload, stored.sent),
        "metadata": {
            **msgspec.to_builtins(stored.metadata),
            "sender": stored.sender,
            "created_at": iso(stored.created_at),
            "expires_at": iso(stored.expires_at),
            "checksum": stored.checksum,
            "size_bytes": stored.size_bytes,
        },
    }


def headers(stored: Stored) -> dict[str, str]:
    """The HEAD answer."""
    return {
        "X-Trex-Id": stored.trex_id,
        "X-Trex-Checksum": stored.checksum,
        "X-Trex-Expires-At": iso(stored.expires_at),
        "X-Trex-Sender": stored.sender,
        "X-Trex-Chunk-Count": str(stored.payload.chunk_count),
        "X-Trex-Dimensions": str(stored.payload.dimensions),
    }


async def charge_stored_bytes(kv: KVNamespace, sender: str, size: int, limit: int, now: float) -> int | None:
    """Count `size` stored bytes against the sender's UTC day (atomically, shared by every instance): None
    when they fit in `limit`, else they are given back and the seconds until the day ends are returned. A
    stream of cheap requests cannot fill the KV's disk (payloads, sessions)."""
    day = int(now // 86400)
    counter = f"{_BYTES_SLOT}{sender}/{day}"
    used = await kv.incr(counter, size, expiration_ttl=2 * 86400)
    if used <= limit:
        return None
    await kv.incr(counter, -size, expiration_ttl=2 * 86400)
    return max(1, (day + 1) * 86400 - int(now))
