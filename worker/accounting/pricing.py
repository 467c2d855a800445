"""Model prices in USD per 1M tokens, and the cost of one request's usage.

The built-in table was taken on `PRICES_TAKEN` from the providers' published pricing (OpenAI: input, cached
input, output; Anthropic: base input, 5-minute and 1-hour cache writes, cache hits, output). Prices change;
`[pricing."MODEL"]` tables in `wrangler_local.toml` override or add entries, e.g.

    [pricing."gpt-5.4-mini"]
    input = 0.75
    cached_input = 0.075
    output = 4.50

A model is matched exactly, then by the longest table entry it extends with a dated or numbered snapshot
suffix (`gpt-4o-mini-2024-07-18` → `gpt-4o-mini`, `claude-sonnet-4-5-20250929` → `claude-sonnet-4-5`); an
OpenRouter id (`openai/gpt-4o`, `anthropic/claude-sonnet-4.5`) by its model part. A model that matches
nothing has no price: its costs are `null`, never 0.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import msgspec

from ..config import ConfigError

PRICES_TAKEN = "2026-11-22"


@dataclass(frozen=True, slots=True)
class Price:
    """USD per 1M tokens. A missing cache rate falls back to the input rate (no discount known)."""

    input: float
    output: float
    cached_input: float | None = None
    cache_write: float | None = None
    """5-minute cache writes (Anthropic); OpenAI does not charge for cache writes separately."""
    cache_write_1h: float | None = None
    source: str = "built-in"
    """`built-in` (taken on PRICES_TAKEN) or `config`."""


def _openai(inp: float, cached: float, out: float) -> Price:
    return Price(input=inp, output=out, cached_input=cached, cache_write=inp, cache_write_1h=inp)


def _anthropic(inp: float, out: float) -> Price:
    # Anthropic's multipliers on base input: cache hits 0.1x, 5-minute writes 1.25x, 1-hour writes 2x.
    return Price(
        input=inp, output=out, cached_input=inp * 0.1, cache_write=inp * 1.25, cache_write_1h=inp * 2.0
    )


BUILTIN_PRICES: Mapping[str, Price] = {
    # OpenAI
    "gpt-5.5": _openai(5.00, 0.50, 30.00),
    "gpt-5.4": _openai(2.50, 0.25, 15.00),
    "gpt-5.4-mini": _openai(0.75, 0.075, 4.50),
    "gpt-5.4-nano": _openai(0.20, 0.02, 1.25),
    "gpt-5.2": _openai(1.75, 0.175, 14.00),
    "gpt-5.1": _openai(1.25, 0.125, 10.00),
    "gpt-5": _openai(1.25, 0.125, 10.00),
    "gpt-5-mini": _openai(0.25, 0.025, 2.00),
    "gpt-5-nano": _openai(0.05, 0.005, 0.40),
    "gpt-4.1": _openai(2.00, 0.50, 8.00),
    "gpt-4.1-mini": _openai(0.40, 0.10, 1.60),
    "gpt-4.1-nano": _openai(0.10, 0.025, 0.40),
    "gpt-4o": _openai(2.50, 1.25, 10.00),
    "gpt-4o-mini": _openai(0.15, 0.075, 0.60),
    "o1": _openai(15.00, 7.50, 60.00),
    "o3": _openai(2.00, 0.50, 8.00),
    "o3-mini": _openai(1.10, 0.55, 4.40),
    "o4-mini": _openai(1.10, 0.275, 4.40),
    "text-embedding-3-small": _openai(0.02, 0.02, 0.0),
    "text-embedding-3-large": _openai(0.13, 0.13, 0.0),
    # Anthropic
    "claude-opus-5": _anthropic(5.00, 25.00),
    "claude-opus-4-8": _anthropic(5.00, 25.00),
    "claude-opus-4-7": _anthropic(5.00, 25.00),
    "claude-opus-4-6": _anthropic(5.00, 25.00),
    "claude-opus-4-5": _anthropic(5.00, 25.00),
    "claude-opus-4-1": _anthropic(15.00, 75.00),
    "claude-opus-4": _anthropic(15.00, 75.00),
    "claude-sonnet-4-6": _anthropic(3.00, 15.00),
    "claude-sonnet-4-5": _anthropic(3.00, 15.00),
    "claude-sonnet-4": _anthropic(3.00, 15.00),
    "claude-haiku-4-5": _anthropic(1.00, 5.00),
    "claude-3-5-haiku": _anthropic(0.80, 4.00),
}

_SNAPSHOT_SUFFIX = re.compile(r"-(?:\d{4}-\d{2}-\d{2}|\d{8}|\d{4}|latest)$")
_FIELDS = ("input", "output", "cached_input", "cache_write", "cache_write_1h")


class PriceTable:
    """Built-in prices plus config overrides, with the model-id matching described in the module doc."""

    def __init__(self, overrides: Mapping[str, Price] | None = None) -> None:
        self._overrides: dict[str, Price] = dict(overrides or {})
        self._table: dict[str, Price] = {**BUILTIN_PRICES, **self._overrides}
        self._cache: dict[str, tuple[str, Price] | None] = {}
        self._routes: dict[tuple[str, str, str], tuple[str, Price] | None] = {}

    def for_route(self, model: str, provider: str, upstream_model: str) -> tuple[str, Price] | None:
        """The price of a request for `model` that `provider` serves as `upstream_model`, wherever it is
        needed (events, the catalog, smart-auto): a `[pricing."…"]` entry for either name first; a local
        model has no other price (no one bills it, whatever it is called); else the table's match for the
        upstream model, then for the name. Every proxied request asks: the answer for a route is kept (one
        dict lookup instead of four, and two calls fewer)."""
        route = (model, provider, upstream_model)
        try:
            return self._routes[route]
        except KeyError:  # a route not priced yet (None is an answer too: no price)
            pass
        found = self._for_route(model, provider, upstream_model)
        if len(self._routes) < 4096:  # model ids come from clients: bound what we remember
            self._routes[route] = found
        return found

    def _for_route(self, model: str, provider: str, upstream_model: str) -> tuple[str, Price] | None:
        for name in (model, upstream_model):
            if name in self._overrides:
                return name, self._overrides[name]
        if provider == "local":
            return None
        return self.lookup(upstream_model) or self.lookup(model)

    def lookup(self, model: str) -> tuple[str, Price] | None:
        """(the table entry's name, its price), or None for a model without a known price."""
        if model in self._cache:
            return self._cache[model]
        found = self._find(model)
        if len(self._cache) < 4096:  # model ids come from clients: bound what we remember
            self._cache[model] = found
        return found

    def _find(self, model: str) -> tuple[str, Price] | None:
        candidates = [model]
        if "/" in model:  # OpenRouter: vendor/model, with dots in Anthropic version numbers
            vendor, _, name = model.partition("/")
            candidates.append(name.replace(".", "-") if vendor == "anthropic" else name)
        for name in candidates:
            if name in self._table:
                return name, self._table[name]
            stripped = name
            while True:
                shorter = _SNAPSHOT_SUFFIX.sub("", stripped)
                if shorter == stripped:
                    break
                stripped = shorter
                if stripped in self._table:
                    return stripped, self._table[stripped]
        return None


def parse_price_overrides(raw: Any, source: str) -> dict[str, Price]:
    """Validate `[pricing."MODEL"]` tables."""
    if raw is None:
        return {}
    if not isinstance(raw, dict):
        raise ConfigError(source, "pricing", 'must be a table of tables ([pricing."MODEL"])')
    out: dict[str, Price] = {}
    for model, entry in raw.items():
        where = f"pricing.{model}"
        if not isinstance(entry, dict):
            raise ConfigError(source, where, "must be a table")
        unknown = set(entry) - set(_FIELDS)
        if unknown:
            raise ConfigError(source, where, f"unknown field(s) {', '.join(sorted(unknown))}; use {_FIELDS}")
        values: dict[str, float] = {}
        for name in _FIELDS:
            value = entry.get(name)
            if value is None:
                continue
            if isinstance(value, bool) or not isinstance(value, int | float) or value < 0:
                raise ConfigError(source, f"{where}.{name}", "must be a number >= 0 (USD per 1M tokens)")
            values[name] = float(value)
        if "input" not in values or "output" not in values:
            raise ConfigError(source, where, "needs at least input and output (USD per 1M tokens)")
        out[model] = Price(**values, source="config")
    return out


class Billed(msgspec.Struct, frozen=True):
    """Input and output tokens as the provider bills them, split by price class (a Struct: one is built
    for every request, several times faster than a frozen dataclass)."""

    input_tokens: int = 0
    """Every input token, cached and cache-written ones included."""
    output_tokens: int = 0
    cached_input_tokens: int = 0
    cache_write_tokens: int = 0
    cache_write_1h_tokens: int = 0
    """The part of the cache writes the provider reports as 1-hour ones (Anthropic); the rest are priced at
    the rate `cache_write_ttl` names."""
    reported_cost_usd: float | None = None
    """What the upstream says the request cost (OpenRouter's `usage.cost`): the price of a model the price
    table does not know."""

    @property
    def uncached_input_tokens(self) -> int:
        return max(0, self.input_tokens - self.cached_input_tokens - self.cache_write_tokens)


def cost(billed: Billed, price: Price | None, cache_write_ttl: str = "5m") -> float | None:
    """USD for `billed` at `price`; without a price, what the upstream reported it cost, or None."""
    if price is None:
        return billed.reported_cost_usd
    cached = price.cached_input if price.cached_input is not None else price.input
    write = price.cache_write_1h if cache_write_ttl == "1h" else price.cache_write
    write = write if write is not None else price.input
    write_1h = price.cache_write_1h if price.cache_write_1h is not None else price.input
    hour = min(billed.cache_write_1h_tokens, billed.cache_write_tokens)
    total = (
        billed.uncached_input_tokens * price.input
        + billed.cached_input_tokens * cached
        + (billed.cache_write_tokens - hour) * write
        + hour * write_1h
        + billed.output_tokens * price.output
    )
    return round(total / 1_000_000, 9)
