"""Plan quotas, model access and Compute Credits (seeds `001_…`, `002_…`).

    [plans.free]
    daily_requests = 200          # per UTC day
    weekly_requests = 1000        # per ISO week (Monday 00:00 UTC)
    daily_tokens = 500000         # billed input + output tokens, counted at reconciliation
    weekly_tokens = 2000000
    models = ["gpt-4o-mini", "gpt-5-mini", "claude-haiku-*"]   # what the plan may use (glob); absent: all
    credit_models = ["gpt-5.5*", "claude-opus-*"]               # drawn from Compute Credits, not the quota
    credit_above_input_tokens = 32000   # long context: past this optimized input, Compute Credits too
    credit_above_concurrent = 4   # high concurrency: past this many in flight (per instance), credits too
    credit_premium = true         # premium-tier catalog models draw on credits
    credit_pinned = false         # any named model but smart-auto and free-tier ones draws on credits
    daily_web_searches = 10       # requests using a provider's web search tool; 0 = not allowed

Checks, in order, before a request is routed: the model must be allowed (403 `model_not_allowed`); a
request using web search needs the plan's allowance (403 `web_search_not_allowed` at 0, 429 `quota_exceeded`
once the day's are used); a request on Compute Credits (a model in `credit_models`, premium with
`credit_premium`, any named model but a free one with `credit_pinned`, any request past
`credit_above_concurrent` in flight, or, once optimized, an input longer than `credit_above_input_tokens`:
long context) holds, once optimized and routed, the most it may cost (`holds`: its input at the input price,
its output cap at the output price) out of what the key has available, its balance less the holds of its
requests in flight (402 `insufficient_balance`, saying what it needed, what is available and what output cap
would fit); when its usage is reconciled the hold is released and the actual cost debited, together. A
fallback holds for the model that serves it. Anything else draws on the quotas: token quotas are checked
against what was already counted, request quotas are counted atomically on admission (429 `quota_exceeded`
with `Retry-After` until the window resets). Keys without a plan, or on a plan without these fields, have
none of these checks and cost no KV round trip; a request on a plan but not on credits costs no hold.

Counters live in the KV (`quota/…`, `credits/…`, `credits_held/…`) and are updated atomically there, so
several instances on one SQLite file or one Redis share them; the charges of reconciled requests (debits and
hold releases) are applied at most once per batch (`accounting/charges.py`), so a batch can be sent again
when Redis leaves its outcome unknown. Credits are kept in micro-dollars (integers).
"""

from __future__ import annotations

import asyncio
import calendar
import dataclasses
import fnmatch
import functools
import logging
import operator
import secrets
import time
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from kv import KVError, KVIndeterminateError, KVNamespace, KVUnavailableError
from kv.batching import CounterBatch, Increment

from .accounting.charges import PendingCharges, token_for
from .auth import KeyRecord
from .config import ConfigError, plan_int
from .context import shared
from .errors import (
    GatewayError,
    PaymentRequiredError,
    PermissionDeniedError,
    RateLimitError,
)
from .grants import MICRO, Grant, grant_credits
from .holds import HOLD_TOKEN_TTL, HOLD_TTL, Estimate, Hold, counters
from .routing import SMART_AUTO

log = logging.getLogger("trex.quotas")

_DAY_TOKENS_TTL = 2 * 86400
_WEEK_TOKENS_TTL = 8 * 86400
"""Token counters outlive their window (charges arrive after the response, possibly past midnight)."""
_COUNTERS = ("daily_requests", "weekly_requests", "daily_tokens", "weekly_tokens", "daily_web_searches")
# Integer plan fields and their least value.
_INTEGER_FIELDS = (
    *((f, 0) for f in _COUNTERS),
    ("credit_above_input_tokens", 1),
    ("credit_above_concurrent", 1),
)


@dataclasses.dataclass(frozen=True, slots=True)
class QuotaPlan:
    name: str
    daily_requests: int | None = None
    weekly_requests: int | None = None
    daily_tokens: int | None = None
    weekly_tokens: int | None = None
    models: tuple[str, ...] | None = None
    credit_models: tuple[str, ...] = ()
    daily_web_searches: int | None = None
    credit_above_input_tokens: int | None = None
    credit_above_concurrent: int | None = None
    credit_premium: bool = False
    credit_pinned: bool = False

    @property
    def active(self) -> bool:
        return (
            any(getattr(self, name) is not None for name in _COUNTERS)
            or self.models is not None
            or bool(self.credit_models)
            or self.daily_web_searches is not None
            or self.credit_above_input_tokens is not None
            or self.credit_above_concurrent is not None
            or self.credit_premium
            or self.credit_pinned
        )


def parse_quota_plans(raw: Any, source: str) -> dict[str, QuotaPlan]:
    """The quota fields of `[plans.NAME]` (the other fields are validated in `accounting.plans`)."""
    if not isinstance(raw, dict):
        return {}
    out: dict[str, QuotaPlan] = {}
    for name, entry in raw.items():
        if not isinstance(entry, dict):
            continue  # accounting.plans reports it
        values: dict[str, Any] = {}
        bounds = [
            *((f, 0) for f in _COUNTERS),
            ("credit_above_input_tokens", 1),
            ("credit_above_concurrent", 1),
        ]
        for field, least in bounds:
            value = plan_int(source, name, entry, field, least)
            if value is not None:
                values[field] = value
        for field in ("models", "credit_models"):
            value = entry.get(field)
            if value is None:
                continue
            if not isinstance(value, list) or not all(isinstance(v, str) and v for v in value):
                raise ConfigError(
                    source, f"plans.{name}.{field}", "must be a list of model names or patterns"
                )
            values[field] = tuple(value)
        for field in ("credit_premium", "credit_pinned"):
            flag = entry.get(field)
            if flag is not None:
                if not isinstance(flag, bool):
                    raise ConfigError(source, f"plans.{name}.{field}", "must be true or false")
                values[field] = flag
        plan = QuotaPlan(name, **values)
        if plan.active:
            out[name] = plan
    return out


class QuotaExceededError(RateLimitError):
    default_code = "quota_exceeded"


class InsufficientBalanceError(PaymentRequiredError):
    default_code = "insufficient_balance"


class WebSearchNotAllowedError(PermissionDeniedError):
    default_code = "web_search_not_allowed"


def uses_web_search(body: Mapping[str, Any]) -> str | None:
    """The field with which a chat, Responses or Messages request asks the provider to search the web, or
    None: chat's `web_search_options`, or a `web_search*` tool (OpenAI `web_search`/`web_search_preview`,
    Anthropic `web_search_20250305`)."""
    if body.get("web_search_options") is not None:
        return "web_search_options"
    tools = body.get("tools")
    if isinstance(tools, list):
        for i, t in enumerate(tools):
            if isinstance(t, dict) and str(t.get("type", "")).startswith("web_search"):
                return f"tools[{i}]"
    return None


class ModelNotAllowedError(PermissionDeniedError):
    default_code = "model_not_allowed"


@dataclasses.dataclass(frozen=True, slots=True)
class Admission:
    """How an admitted request is charged once its usage is known."""

    key_id: str
    plan: QuotaPlan
    credits: bool
    tokens: tuple[tuple[str, int], ...]
    """(counter, TTL) of the plan's token quotas in the request's day and week, charged its billed tokens."""
    counted: tuple[tuple[str, int | None], ...] = ()
    """The uses counted on admission (request quotas, web searches): given back if the request is refused
    before it reaches an upstream (`Quotas.give_back`)."""
    reason: str = ""
    """Why the request draws on Compute Credits (how its 402 message starts)."""
    hold: Hold | None = None
    """What it holds of the key's credits (`Quotas.hold`), released when its usage is reconciled."""


_TOKENS_FRESH_S = 1.0


@dataclasses.dataclass(slots=True)
class _Window:
    """A key's quota counters in one second: their names, the request counts to make (counter, TTL, limit)
    and the admission of a request that counted them all."""

    now: int
    plan: QuotaPlan
    day_left: int
    week_left: int
    credit_rules: bool
    """Whether the plan has any rule that makes a request draw on Compute Credits (`_credit_reason`)."""
    tokens: tuple[tuple[str, int], ...]
    token_limits: tuple[tuple[str, int, int, str, int], ...]
    """(counter, TTL, limit, what, seconds left) of each token quota of the plan, the daily one first."""
    requests: tuple[tuple[str, int, int], ...]
    limits: tuple[int, ...]
    """The limits of `requests`, in their order."""
    what: tuple[str, ...]
    admission: Admission


@functools.lru_cache(maxsize=2)
def _windows(now: int) -> tuple[str, str, int, int]:
    """(day id, week id, seconds to the day's end, seconds to the week's end), UTC; cached per second."""
    t = time.gmtime(now)
    midnight = calendar.timegm((t.tm_year, t.tm_mon, t.tm_mday, 0, 0, 0))
    day_left = midnight + 86400 - now
    week_left = day_left + (6 - t.tm_wday) * 86400
    year, week, _ = time.strftime("%G %V %u", t).split()
    return time.strftime("%Y%m%d", t), f"{year}W{week}", max(1, day_left), max(1, week_left)


def _matches(model: str, patterns: tuple[str, ...]) -> bool:
    return any(fnmatch.fnmatchcase(model, p) for p in patterns)


def _credit_reason(plan: QuotaPlan, model: str, tier: str | None, in_flight: int) -> str | None:
    """Why a request for `model` draws on Compute Credits under `plan` (how its 402 message starts)."""
    if plan.credit_models and _matches(model, plan.credit_models):
        return f"The model {model!r} draws"
    if model != SMART_AUTO and plan.credit_premium and tier == "premium":
        return f"The premium model {model!r} draws"
    if model != SMART_AUTO and plan.credit_pinned and tier != "free":
        return f"Naming the model {model!r} (not smart-auto or a free model) draws"
    if plan.credit_above_concurrent is not None and in_flight > plan.credit_above_concurrent:
        return (
            f"With {in_flight} requests in flight (over {plan.credit_above_concurrent} on the "
            f"{plan.name!r} plan) this request draws"
        )
    return None


class Quotas:
    """Admission checks and charges for keys on plans with quotas, model lists or credit models."""

    def __init__(
        self,
        kv: KVNamespace,
        plans: Mapping[str, QuotaPlan],
        counters: CounterBatch | None = None,
        clock: Callable[[], float] = time.time,
        *,
        hold_credits: bool = True,
    ) -> None:
        self.kv = kv
        self.counters = counters or CounterBatch(kv)
        self.pending = PendingCharges(clock)
        """Charges waiting to be applied, each batch once: those of reconciled requests (the usage recorder
        adds and applies them at every flush) and give-backs the KV could not take when they were made."""
        self.hold_credits = hold_credits
        """False with usage accounting off: nothing would release a hold (or debit the cost), so a request on
        credits is only checked against what is available."""
        self._tokens: dict[str, tuple[int, float]] = {}  # token counter -> (value, fresh until)
        self._reading: dict[str, asyncio.Future[int]] = {}  # token counters being read again
        self.plans = plans
        self._clock = clock
        self._windows: dict[str, _Window] = {}  # key id -> its counters and admission in the current second

    def applies(self, key: KeyRecord) -> bool:
        """Whether `key` is on a plan: else `admit` has nothing to check or count (it answers None)."""
        return self._plan_of(key) is not None

    def _plan_of(self, key: KeyRecord) -> QuotaPlan | None:
        return self.plans.get(key.plan) if key.plan else None

    async def admit(
        self,
        key: KeyRecord,
        model: str,
        *,
        web_search: str | None = None,
        tier: str | None = None,
        in_flight: int = 0,
    ) -> Admission | None:
        """Raise the error that refuses this request, or return how to charge it (None: nothing to do).

        `web_search`: the field with which the request asks the provider to search the web; `tier`: the
        model's catalog tier (None: not in the catalog); `in_flight`: the key's requests in flight here, this
        one included."""
        plan = self._plan_of(key)
        if plan is None:
            return None
        # smart-auto only ever picks models the plan allows.
        if plan.models is not None and model != SMART_AUTO and not _matches(model, plan.models):
            raise ModelNotAllowedError(
                f"The model {model!r} is not available on the {plan.name!r} plan.", param="model"
            )
        # Uses counted for this request: given back if it is refused, which uses nothing up (a request over
        # the daily quota must not eat into the weekly one).
        counted: list[tuple[str, int | None]] = []
        try:
            now = int(self._clock())
            window = self._windows.get(key.id)
            if window is None or window.now != now or window.plan is not plan:
                window = self._window(key.id, plan, now)
            if web_search is not None and plan.daily_web_searches is not None:
                if plan.daily_web_searches == 0:
                    raise WebSearchNotAllowedError(
                        f"Web search is not available on the {plan.name!r} plan.", param=web_search
                    )
                day_left = window.day_left
                searches = f"quota/{key.id}/d{_windows(now)[0]}/web_searches"
                (used,) = await self.counters.count([(searches, day_left + 3600, plan.daily_web_searches)])
                if used > plan.daily_web_searches:
                    raise self._exceeded("daily web search", plan.daily_web_searches, day_left)
                counted.append((searches, day_left + 3600))
            why = _credit_reason(plan, model, tier, in_flight) if window.credit_rules else None
            if why is not None:
                # What it may cost is known once its input is optimized and its model routed: it holds it
                # then.
                return Admission(key.id, plan, True, window.tokens, tuple(counted), why)
            # Token quotas: the values read at most once a second (`_tokens_used`), found without a coroutine
            # while fresh.
            for counter, ttl, limit, what, left in window.token_limits:
                cached = self._tokens.get(counter)
                used = (
                    cached[0]
                    if cached is not None and cached[1] > time.monotonic()
                    else await self._tokens_used(counter, ttl)
                )
                if used >= limit:
                    raise self._exceeded(what, limit, left)
            if window.requests:
                # Counted like the rate limits: shared round trips, and leases while far from the quota (most
                # requests take their positions from a lease, without a coroutine).
                positions = self.counters.take(window.requests)
                if positions is None:
                    positions = await self.counters.count(window.requests)
                if not all(map(operator.le, positions, window.limits)):
                    raise self._over(window, positions, counted)
                if not counted:
                    # Nothing counted but the request quotas (the common case): the admission this second's
                    # requests of this key share (it is immutable).
                    return window.admission
                counted += window.admission.counted
        except BaseException:  # refused, the KV failing midway (a 503), or the client gone
            await self._uncount(counted)
            raise
        if not counted:
            return window.admission
        return Admission(key.id, plan, False, window.tokens, tuple(counted))

    async def give_back(self, admission: Admission | None, *, release: bool = True) -> None:
        """Give back what an admitted request counted, when it is refused before reaching an upstream (a bad
        TrexID, option or input found after admission): a refused request uses nothing up. Its credit hold is
        released too, unless `release` is False: its usage event releases it when reconciled."""
        if admission is not None:
            await self._uncount(admission.counted, admission.hold if release else None)

    async def _uncount(self, counted: Sequence[tuple[str, int | None]], hold: Hold | None = None) -> None:
        back = [(counter, -1, ttl) for counter, ttl in counted]
        if hold is not None:
            back.append(hold.release())
        await self._give_back(back)

    async def _give_back(self, back: Sequence[Increment]) -> None:
        """Apply increments that undo what a refused request counted or held. The refusal is the answer,
        whatever the KV does: when it cannot be reached (a request refused because the KV went down, most
        often) the give-back waits with the plan charges, applied once when the KV is back (`pending`). One
        whose outcome is unknown (sent, its Redis reply lost) is settled there too, sent again under its
        round trip's token: applied once, never twice (see `kv.batching`)."""
        if not back:
            return
        try:
            await self.counters.incr(back)
        except KVIndeterminateError as exc:
            log.warning(
                "%d counts of a refused request are given back once the KV answers: %s", len(back), exc
            )
        except KVUnavailableError:
            self.pending.add(back)
        except KVError as exc:
            log.error("could not give back %d counts of a refused request: %s", len(back), exc)

    def _window(self, key_id: str, plan: QuotaPlan, now: int) -> _Window:
        """The counter names, counts and admission of a key's requests in this second (built once a second
        per key, not for every request: `admit` finds it built)."""
        day, week, day_left, week_left = _windows(now)
        # Counter names are built only for the windows the plan limits (most plans limit one or two).
        requests: list[tuple[str, int, int]] = []
        what: list[str] = []
        if plan.daily_requests is not None:
            requests.append((f"quota/{key_id}/d{day}/requests", day_left + 3600, plan.daily_requests))
            what.append("daily request")
        if plan.weekly_requests is not None:
            requests.append((f"quota/{key_id}/w{week}/requests", week_left + 3600, plan.weekly_requests))
            what.append("weekly request")
        token_limits: list[tuple[str, int, int, str, int]] = []
        if plan.daily_tokens is not None:
            daily = f"quota/{key_id}/d{day}/tokens"
            token_limits.append((daily, _DAY_TOKENS_TTL, plan.daily_tokens, "daily token", day_left))
        if plan.weekly_tokens is not None:
            weekly = f"quota/{key_id}/w{week}/tokens"
            token_limits.append((weekly, _WEEK_TOKENS_TTL, plan.weekly_tokens, "weekly token", week_left))
        tokens = tuple((counter, ttl) for counter, ttl, *_ in token_limits)
        window = _Window(
            now,
            plan,
            day_left,
            week_left,
            bool(
                plan.credit_models
                or plan.credit_premium
                or plan.credit_pinned
                or plan.credit_above_concurrent is not None
            ),
            tokens,
            tuple(token_limits),
            tuple(requests),
            tuple(limit for _, _, limit in requests),
            tuple(what),
            Admission(key_id, plan, False, tokens, tuple((c, ttl) for c, ttl, _ in requests)),
        )
        if len(self._windows) >= 4096:  # many keys: start over rather than scan them every second
            self._windows.clear()
        self._windows[key_id] = window
        return window

    async def admit_fallback(
        self,
        key: KeyRecord,
        admission: Admission | None,
        model: str,
        *,
        tier: str | None,
        in_flight: int,
        estimate: Callable[[], Estimate],
    ) -> Admission | None:
        """The plan's checks for a fallback model, whose request is already counted: a model outside the
        plan's list is refused (403), and one that draws on Compute Credits (or a request on credits already)
        holds what the fallback may cost, `estimate()` (worked out only then), in place of what it held (402
        when that does not fit), so a fallback to a dearer model is covered too. Without these a fallback
        would serve what the plan forbids, unpaid."""
        if admission is None:
            return None
        plan = admission.plan
        if plan.models is not None and not _matches(model, plan.models):
            raise ModelNotAllowedError(
                f"The model {model!r} is not available on the {plan.name!r} plan.", param="model"
            )
        why = _credit_reason(plan, model, tier, in_flight)
        if why is None and not admission.credits:
            return admission
        return await self.hold(
            dataclasses.replace(admission, credits=True, reason=why or admission.reason), estimate()
        )

    def long_context(self, admission: Admission | None, input_tokens: int) -> Admission | None:
        """Once the optimized size is known: past the plan's `credit_above_input_tokens` the request draws on
        Compute Credits instead of the token quota (it holds what it may cost once routed: `hold`); its
        request is already counted. No I/O (and no coroutine)."""
        if admission is None or admission.credits:
            return admission
        limit = admission.plan.credit_above_input_tokens
        if limit is None or input_tokens <= limit:
            return admission
        why = f"This request's {input_tokens:,} input tokens are long context (over {limit:,}); it draws"
        return dataclasses.replace(admission, credits=True, reason=why)

    async def hold(self, admission: Admission, estimate: Estimate) -> Admission:
        """Hold what a request on credits may cost at most (`estimate`) before it goes upstream, in place of
        what it held before (a fallback's), or raise the 402 that says what it needed and what is available.

        One round trip: the hold is added to the key's current hold counter, and the values that increment
        returns, with the previous hour's holds and the balance read alongside (increments of 0), decide: the
        balance less every other hold must cover it. Not covered, the increment is taken back. See `holds`."""
        key_id = admission.key_id
        current, previous = counters(key_id, self._clock())
        amount = estimate.micro if self.hold_credits else 0
        deltas = {current: amount, previous: 0}
        old = admission.hold
        if old is not None:
            deltas[old.counter] = deltas.get(old.counter, 0) - old.micro
        increments = [(f"credits/{key_id}", 0, None), *((c, d, HOLD_TTL) for c, d in deltas.items())]
        if any(deltas.values()):
            balance, held_now, held_before, *_ = await self._hold_once(increments, deltas)
        else:  # nothing held (accounting off): only a read, in a shared round trip
            balance, held_now, held_before, *_ = await self.counters.incr(increments)
        others = held_now + held_before - amount  # the key's other requests in flight
        available = balance - others
        if available <= 0 or available < estimate.micro:
            await self._undo(deltas)
            affordable = estimate.affordable_output(available) > 0
            raise InsufficientBalanceError(
                f"{estimate.refusal(admission.reason, balance, others)} "
                f"Add credits with `trex credits add {key_id} AMOUNT`.",
                param=estimate.output_field if affordable else "model",
            )
        return dataclasses.replace(admission, hold=Hold(current, amount) if amount else None)

    async def _hold_once(self, increments: Sequence[Increment], deltas: Mapping[str, int]) -> list[int]:
        """The hold's round trip, applied at most once under a token of its own: when its outcome is unknown
        (Redis took it and its reply was lost; the caller cancelled while it was on its way) the request is
        refused, and the hold, which it may or may not have made, is settled with the plan charges — sent
        again under its token, then released. Left, it would hold part of the balance until it lapsed."""
        batch_id = secrets.token_hex(16)
        sent_at = self._clock()
        try:
            values = await self.kv.incr_many_once(
                token_for(batch_id),
                [counter for counter, _, _ in increments],
                [delta for _, delta, _ in increments],
                expiration_ttl=[ttl for _, _, ttl in increments],
                token_ttl=HOLD_TOKEN_TTL,
            )
        except (KVIndeterminateError, asyncio.CancelledError):
            undo = [(counter, -delta, HOLD_TTL) for counter, delta in deltas.items() if delta]
            self.pending.settle(batch_id, sent_at, increments, undo)
            raise
        if values is None:  # a token of 128 random bits, never sent before
            raise KVError(f"the hold token {batch_id} was applied before")
        return list(values)

    async def _undo(self, deltas: Mapping[str, int]) -> None:
        await self._give_back([(counter, -delta, HOLD_TTL) for counter, delta in deltas.items() if delta])

    @classmethod
    def _over(
        cls, window: _Window, positions: Sequence[int], counted: list[tuple[str, int | None]]
    ) -> GatewayError:
        """The 429 of the first request quota a position is past; the counts within their limit are added to
        `counted`, given back with the refusal."""
        exceeded = None
        for (counter, ttl, limit), position, what in zip(
            window.requests, positions, window.what, strict=True
        ):
            if position > limit:
                exceeded = exceeded or cls._exceeded(what, limit, ttl - 3600)
            else:
                counted.append((counter, ttl))
        assert exceeded is not None, "called with a position past its limit"
        return exceeded

    @staticmethod
    def _exceeded(what: str, limit: int, retry_after: int) -> GatewayError:
        return QuotaExceededError(
            f"The {what} quota of this key's plan ({limit:,}) is used up; it resets in {retry_after} s.",
            headers={"Retry-After": str(retry_after)},
        )

    async def _tokens_used(self, counter: str, ttl: int) -> int:
        """A token counter's value, read at most once a second per instance (tokens are charged after the
        response anyway); this instance's own charges update it at once. The read creates a missing counter,
        with the TTL its charges give it (a counter keeps the expiration it was created with). Requests that
        find the value stale while it is being read again wait for that read."""
        cached = self._tokens.get(counter)
        if cached is not None and cached[1] > time.monotonic():
            return cached[0]
        reading = self._reading.get(counter)
        if reading is None:
            reading = self._reading[counter] = asyncio.ensure_future(self._read_tokens(counter, ttl))
            reading.add_done_callback(functools.partial(self._read_done, counter))
        return await shared(reading)

    def _read_done(self, counter: str, reading: asyncio.Future[int]) -> None:
        self._reading.pop(counter, None)
        if not reading.cancelled():
            reading.exception()  # retrieved: every request that waited for it may have gone already

    async def _read_tokens(self, counter: str, ttl: int) -> int:
        now = time.monotonic()
        (value,) = await self.counters.incr([(counter, 0, ttl)])
        if len(self._tokens) >= 4096:
            self._tokens = {k: v for k, v in self._tokens.items() if v[1] > now}
        self._tokens[counter] = (value, now + _TOKENS_FRESH_S)
        return value

    async def _read(self, counter: str) -> int:
        raw = await self.kv.get(counter)
        return int(raw) if raw else 0

    @staticmethod
    def charges(admission: Admission, billed_tokens: int, cost_usd: float | None) -> list[Increment]:
        """What reconciliation adds: a request on credits has its cost debited and its hold released (in the
        same batch, so both are applied once), any other has its tokens counted against the quotas. A failed
        request is charged nothing (`billed_tokens` 0, `cost_usd` None) and only releases its hold."""
        if admission.credits:
            out: list[Increment] = []
            if cost_usd:
                out.append((f"credits/{admission.key_id}", -round(cost_usd * MICRO), None))
            if admission.hold is not None:
                out.append(admission.hold.release())
            return out
        if billed_tokens > 0:
            return [(counter, billed_tokens, ttl) for counter, ttl in admission.tokens]
        return []

    async def charge(
        self, token: str, totals: Mapping[str, tuple[int, int | None]], *, token_ttl: int
    ) -> None:
        """Apply a batch of charges (counter → (delta, expiration TTL)) in one round trip, at most once per
        `token`: sent again after an error that leaves its outcome unknown, it is not applied twice."""
        counters = list(totals)
        values = await self.kv.incr_many_once(
            token,
            counters,
            [totals[c][0] for c in counters],
            expiration_ttl=[totals[c][1] for c in counters],
            token_ttl=token_ttl,
        )
        if values is None:
            return  # applied before (its reply was lost): this instance's token counts are re-read in 1 s
        fresh = time.monotonic() + _TOKENS_FRESH_S
        for counter, value in zip(counters, values, strict=True):
            if counter in self._tokens:
                self._tokens[counter] = (value, fresh)

    async def balance(self, key_id: str) -> float:
        """The key's Compute Credits in USD."""
        return await self._read(f"credits/{key_id}") / MICRO

    async def add_credits(self, key_id: str, usd: float, *, idempotency_key: str | None = None) -> Grant:
        """Add (or, negative, remove) credits; the new balance in USD, applied at most once per
        `idempotency_key` when one is given (see the `grants` module).

        Balances are micro-dollars in a 64-bit counter: a grant, and the balance it leaves, stay far inside it
        (an overflow would corrupt the counter for good), else a 400 naming `amount_usd`.
        """
        return await grant_credits(self.kv, key_id, usd, idempotency_key)
