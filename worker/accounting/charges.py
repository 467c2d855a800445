"""Plan charges waiting to be applied: token quota increments and Compute Credits debits of reconciled
requests, applied in batches, each at most once.

A batch gets a random id when it is formed and keeps it until it is known to be applied. The KV applies a
batch's increments and records its id in one atomic step (`KVNamespace.incr_many_once`), and a batch whose
id it has recorded changes nothing. So a batch whose outcome is unknown — Redis took the command and its
reply never came, `KVIndeterminateError` — is simply sent again at the next pass, with the same id and the
same increments: applied once if the first was lost, not again if it was applied. A batch that never
reached the KV (`KVUnavailableError`: a refused connection) is kept as well, and takes in the charges that
arrive meanwhile until it is first sent, so an outage holds one batch per few hundred counters, not one per
pass. The ids are random (128 bits), so instances sharing one Redis never take each other's batches for
their own.

Sending again is bounded: a batch whose outcome is still unknown `RETRY_SECONDS` after it was first sent is
dropped with an error (it may not have been applied). The KV keeps a batch's id for `TOKEN_TTL`, well past
that, so a batch is never sent again once the KV may have forgotten it: that would charge twice.

The same settles a credit hold whose outcome is unknown (`settle`): the hold was sent with a once-token of its
own; it is sent again under that token (applied only if it was lost), and once that is known applied, a batch
of its own releases it. A release never goes without its hold: dropped with it. Rate-limit and request-quota
counts on Redis are settled the same way (`kv.batching.CounterBatch.settle_with`): a round trip of them whose
reply was lost is sent again under its token, then what it counted is taken back.
"""

from __future__ import annotations

import logging
import secrets
from collections.abc import Callable, Iterable
from dataclasses import dataclass, field
from typing import TYPE_CHECKING

from kv import ONCE_MAX_KEYS, KVError, KVIndeterminateError, KVUnavailableError
from kv.batching import Increment

if TYPE_CHECKING:
    from ..quotas import Quotas

log = logging.getLogger("trex.usage")

TOKEN_TTL = 2 * 3600
"""How long the KV remembers that a batch was applied."""
RETRY_SECONDS = 3600
"""How long a batch whose outcome is unknown is sent again; far inside TOKEN_TTL, so that a command held up
on its way (a slow network, a busy Redis) finds the record of a later copy that was applied."""


@dataclass(slots=True, eq=False)
class _Batch:
    id: str
    totals: dict[str, tuple[int, int | None]] = field(default_factory=dict)
    """Counter → (delta, expiration TTL)."""
    charges: int = 0
    """Charges (one request adds up to two) merged into it, for the logs."""
    sent_at: float | None = None
    """When it was first sent without learning the outcome; None while it never reached the KV."""
    after: str | None = None
    """The batch that must be applied before this one (a hold before its release); set, it takes no other
    charges, and it is dropped if that batch is."""

    @property
    def token(self) -> str:
        return token_for(self.id)


def token_for(batch_id: str) -> str:
    """The once-token a batch is applied under."""
    return f"charges/{batch_id}"


class PendingCharges:
    """Charges not applied yet, in batches (see the module docstring). One per usage recorder."""

    def __init__(self, clock: Callable[[], float]) -> None:
        self._clock = clock
        self._batches: list[_Batch] = []
        self._failing = False
        """Whether the last pass stopped at a batch the KV did not take: an outage is logged when it begins,
        not at every pass."""

    def __len__(self) -> int:
        """The charges waiting."""
        return sum(batch.charges for batch in self._batches)

    def add(self, increments: Iterable[Increment]) -> None:
        """Queue charges: into the newest batch while it has never been sent and has room, else a new one."""
        for counter, delta, ttl in increments:
            batch = self._batches[-1] if self._batches else None
            if (
                batch is None
                or batch.sent_at is not None
                or batch.after is not None
                or (counter not in batch.totals and len(batch.totals) >= ONCE_MAX_KEYS)
            ):
                batch = _Batch(secrets.token_hex(16))
                self._batches.append(batch)
            before, first_ttl = batch.totals.get(counter, (0, ttl))
            batch.totals[counter] = (before + delta, first_ttl)  # a counter keeps the TTL it was created with
            batch.charges += 1

    def token(self, batch_id: str) -> str:
        """The once-token a batch of this id is sent under (`token_for`): what `settle` sends again."""
        return token_for(batch_id)

    def settle(
        self, batch_id: str, sent_at: float, increments: Iterable[Increment], undo: Iterable[Increment]
    ) -> None:
        """Settle increments sent at `sent_at` as `incr_many_once(token_for(batch_id), …)` whose outcome is
        unknown: send them again under that token until the KV answers (applied once), then apply `undo`."""
        first = _Batch(batch_id, sent_at=sent_at, charges=1)
        for counter, delta, ttl in increments:
            first.totals[counter] = (delta, ttl)
        then = _Batch(secrets.token_hex(16), charges=1, after=batch_id)
        for counter, delta, ttl in undo:
            then.totals[counter] = (delta, ttl)
        self._batches += (first, then)

    def _warn(self, message: str, *args: object) -> None:
        log.log(logging.DEBUG if self._failing else logging.WARNING, message, *args)
        self._failing = True

    async def apply(self, quotas: Quotas) -> None:
        """Send the batches in order, stopping at the first the KV did not take (it is likely down: the
        others wait with it for the next pass)."""
        batches, self._batches = self._batches, []  # a concurrent pass sends only what arrives meanwhile
        done = 0
        dropped: set[str] = set()
        try:
            for batch in batches:
                if batch.after in dropped:
                    log.error(
                        "%d charges (batch %s) dropped with the batch before them", batch.charges, batch.id
                    )
                    dropped.add(batch.id)
                    done += 1
                    continue
                if batch.sent_at is not None and self._clock() - batch.sent_at > RETRY_SECONDS:
                    log.error(
                        "%d charges (batch %s) dropped: Redis never confirmed them in %d s, and "
                        "they may not have been applied",
                        batch.charges,
                        batch.id,
                        RETRY_SECONDS,
                    )
                    dropped.add(batch.id)
                    done += 1
                    continue
                never_sent = batch.sent_at is None
                if never_sent:
                    batch.sent_at = self._clock()  # from here on its id is out: it takes no more charges
                try:
                    await quotas.charge(batch.token, batch.totals, token_ttl=TOKEN_TTL)
                except KVIndeterminateError as exc:
                    self._warn(
                        "%d charges (batch %s) may not have been applied; sent again at the next pass: %s",
                        batch.charges,
                        batch.id,
                        exc,
                    )
                    return
                except KVUnavailableError as exc:
                    if never_sent:
                        batch.sent_at = None  # it never reached the KV
                    self._warn("could not apply %d charges to their plans yet: %s", batch.charges, exc)
                    return
                except KVError as exc:  # a counter that is not a number: sending again would not help
                    log.error("could not apply %d charges to their plans: %s", batch.charges, exc)
                    dropped.add(batch.id)
                if self._failing:
                    self._failing = False
                    log.info("charges to plans applied again")
                done += 1
        finally:  # also when cut off (a shutdown): a batch on its way counts as sent, and is kept
            self._batches = batches[done:] + self._batches
