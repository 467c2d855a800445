"""Plans from `[plans.NAME]` in the config, and the savings-guarantee status of a key.

    [plans.pro_edge]
    monthly_price_usd = 49.0
    guarantee = true

A key on a plan with a monthly price and `guarantee = true` has its savings tracked per cycle (the calendar
month, UTC): `X-Trex-Guarantee-Status` is `met` once the cycle's savings reach the price, else `tracking`.
Keys without a plan, or on any other plan, get `not_applicable`.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

from ..config import ConfigError

_FIELDS = ("monthly_price_usd", "guarantee", "description")
# Plan fields validated by the modules that use them (worker/quotas.py, worker/limits.py).
QUOTA_FIELDS = (
    "daily_requests",
    "weekly_requests",
    "daily_tokens",
    "weekly_tokens",
    "models",
    "credit_models",
    "daily_web_searches",
    "credit_above_input_tokens",
    "credit_above_concurrent",
    "credit_premium",
    "credit_pinned",
    "requests_per_minute",
    "max_concurrent",
)


@dataclass(frozen=True, slots=True)
class Plan:
    name: str
    monthly_price_usd: float | None = None
    guarantee: bool = False
    description: str = ""

    @property
    def tracks_guarantee(self) -> bool:
        return self.guarantee and self.monthly_price_usd is not None and self.monthly_price_usd > 0


def parse_plans(raw: Any, source: str) -> dict[str, Plan]:
    """Validate `[plans.NAME]` tables."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(source, "plans", "must be a table of tables ([plans.NAME])")
    out: dict[str, Plan] = {}
    for name, entry in raw.items():
        where = f"plans.{name}"
        if not isinstance(entry, dict):
            raise ConfigError(source, where, "must be a table")
        unknown = sorted(set(entry) - set(_FIELDS) - set(QUOTA_FIELDS))
        if unknown:
            expected = ", ".join((*_FIELDS, *QUOTA_FIELDS))
            raise ConfigError(
                source, where, f"unknown field(s) {', '.join(unknown)}; expected one of {expected}"
            )
        price = entry.get("monthly_price_usd")
        if price is not None and (isinstance(price, bool) or not isinstance(price, int | float) or price < 0):
            raise ConfigError(source, f"{where}.monthly_price_usd", "must be a number >= 0")
        guarantee = entry.get("guarantee", False)
        if not isinstance(guarantee, bool):
            raise ConfigError(source, f"{where}.guarantee", "must be true or false")
        if guarantee and not price:
            raise ConfigError(source, f"{where}.guarantee", "needs a monthly_price_usd above 0 to be met")
        description = entry.get("description", "")
        if not isinstance(description, str):
            raise ConfigError(source, f"{where}.description", "must be a string")
        out[name] = Plan(name, None if price is None else float(price), guarantee, description)
    return out


def guarantee_status(plan: Plan | None, cycle_savings_usd: float) -> str:
    """`met`, `tracking` or `not_applicable`."""
    if plan is None or not plan.tracks_guarantee:
        return "not_applicable"
    assert plan.monthly_price_usd is not None
    return "met" if cycle_savings_usd >= plan.monthly_price_usd else "tracking"


def plan_for(plans: Mapping[str, Plan], name: str | None) -> Plan | None:
    return plans.get(name) if name else None
