"""Compute Credits grants (`POST /admin/v1/keys/{id}/credits`, `trex credits add`), at most once per
idempotency key.

A grant whose KV reply never came (a Redis timeout after the command went out) may have been applied; the
admin saw a 503 and sends it again. Sent with an idempotency key, the grant and a record of that key are
written in one atomic step (`incr_many_once`), so within `IDEMPOTENCY_WINDOW_SECONDS` a repeat applies nothing
and answers what the first answered. The record (`grants/<key digest>/<request digest>`) names the request
the key was first used for, so the key reused for another key id or amount is refused rather than taken for
that one: its value is 1 while the grant stands, 0 once it was taken back for passing the bound, and its
metadata holds the balance the first answer gave.
"""

from __future__ import annotations

import asyncio
import hashlib
import math
from dataclasses import dataclass

from kv import KVNamespace, KVUnavailableError

from .errors import InvalidRequestError

MICRO = 1_000_000
"""Balances are counted in micro-dollars."""
MAX_CREDITS_USD = 1e9
"""The largest credit grant, and balance, either way (far inside a 64-bit micro-dollar counter)."""
IDEMPOTENCY_WINDOW_SECONDS = 86400
"""How long an idempotency key is remembered."""
MAX_IDEMPOTENCY_KEY = 255
"""The longest idempotency key, in characters."""


@dataclass(frozen=True, slots=True)
class Grant:
    """A grant's answer: the balance after it, and whether this was a repeat that applied nothing."""

    balance_usd: float
    replayed: bool = False


def _over_bound() -> InvalidRequestError:
    return InvalidRequestError(
        f"A balance may not exceed {MAX_CREDITS_USD:,.0f} USD either way.", param="amount_usd"
    )


def _checked(key: str) -> str:
    """The key as given, or a 400 when it is empty or longer than `MAX_IDEMPOTENCY_KEY`."""
    if not key.strip() or len(key) > MAX_IDEMPOTENCY_KEY:
        raise InvalidRequestError(
            f"An Idempotency-Key must be 1 to {MAX_IDEMPOTENCY_KEY} characters.",
            code="invalid_idempotency_key",
        )
    return key


async def grant_credits(
    kv: KVNamespace, key_id: str, usd: float, idempotency_key: str | None = None
) -> Grant:
    """Add `usd` (negative removes) to the key's balance; see the module docstring for `idempotency_key`.

    Added first and taken back if the balance went past the bound (a check before the add would let grants
    made at the same moment pass it together): a 400 naming `amount_usd`, as is a grant past the bound.
    """
    if not math.isfinite(usd) or abs(usd) > MAX_CREDITS_USD:
        raise InvalidRequestError(
            f"'amount_usd' must be a finite number of at most {MAX_CREDITS_USD:,.0f} either way.",
            param="amount_usd",
        )
    delta = round(usd * MICRO)
    counter = f"credits/{key_id}"
    if idempotency_key is None:
        balance = await kv.incr(counter, delta)
        if abs(balance) > MAX_CREDITS_USD * MICRO:
            await kv.incr(counter, -delta)
            raise _over_bound()
        return Grant(balance / MICRO)
    digest = hashlib.sha256(_checked(idempotency_key).encode("utf-8", "surrogateescape")).hexdigest()
    request = hashlib.sha256(f"{key_id}\n{delta}".encode()).hexdigest()[:32]
    grant = _Once(kv, digest, f"grants/{digest}/{request}", counter, delta)
    values = await kv.incr_many_once(
        f"grant/{digest}",
        [counter, grant.record],
        [delta, 1],
        expiration_ttl=[None, IDEMPOTENCY_WINDOW_SECONDS],
        token_ttl=IDEMPOTENCY_WINDOW_SECONDS,
    )
    if values is not None:
        return await grant.conclude(values[0], replayed=False)
    return await grant.replay()


@dataclass(frozen=True, slots=True)
class _Once:
    """One grant sent with an idempotency key: its KV record and how a repeat is answered."""

    kv: KVNamespace
    digest: str
    record: str
    counter: str
    delta: int

    async def conclude(self, balance: int, *, replayed: bool) -> Grant:
        """The grant is applied and `balance` follows from it: keep it, or take it back if past the bound
        (once, whoever concludes: a repeat may conclude a grant whose first answer was lost)."""
        if abs(balance) > MAX_CREDITS_USD * MICRO:
            await self.kv.incr_many_once(
                f"grant/{self.digest}/undo",
                [self.counter, self.record],
                [-self.delta, -1],
                expiration_ttl=[None, IDEMPOTENCY_WINDOW_SECONDS],
                token_ttl=IDEMPOTENCY_WINDOW_SECONDS,
            )
            raise _over_bound()
        answer = Grant(balance / MICRO, replayed)
        await self.kv.put(
            self.record,
            "1",
            metadata={"balance_usd": answer.balance_usd},
            expiration_ttl=IDEMPOTENCY_WINDOW_SECONDS,
        )
        return answer

    async def replay(self) -> Grant:
        """A repeat (the key's grant was applied before): the first answer again."""
        state, metadata = await self.kv.get_with_metadata(self.record)
        if state is None:
            raise InvalidRequestError(
                "This Idempotency-Key was used for another grant (another key or amount) within a day.",
                code="idempotency_key_reused",
                status=422,
            )
        if int(state) <= 0:
            raise _over_bound()  # taken back: the first answer was this
        if metadata is not None and isinstance(balance := metadata.get("balance_usd"), int | float):
            return Grant(float(balance), replayed=True)
        # The first never answered (its reply was lost before it could): the balance now, checked as it would
        # have been.
        return await self.conclude(int(await self.kv.get(self.counter) or 0), replayed=True)


async def grant_credits_retrying(
    kv: KVNamespace, key_id: str, usd: float, idempotency_key: str, *, attempts: int = 3, pause: float = 0.5
) -> Grant:
    """`grant_credits`, sent again with the same key after a KV failure (a lost reply included): safe, since
    the key makes it apply once. For callers that retry on their own, such as `trex credits add`."""
    for attempt in range(1, attempts + 1):
        try:
            return await grant_credits(kv, key_id, usd, idempotency_key)
        except KVUnavailableError:
            if attempt == attempts:
                raise
            await asyncio.sleep(pause * attempt)
    raise AssertionError("unreachable: the last attempt returns or raises")
