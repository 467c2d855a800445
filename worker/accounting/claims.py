"""`trex_accounting`: what a client states about a request's usage (seed `000_…`).

    "trex_accounting": {
      "baseline_usage": {"input_tokens": 6184, "output_tokens": 380},
      "actual_usage_override": {"input_tokens": 1887, "cached_input_tokens": 143},
      "cache_write_ttl": "5m",
      "trex": {"original_input_tokens": 6184, "optimized_input_tokens": 1973,
               "request_bytes_before": 18417, "request_bytes_after": 6084}
    }

How each part is used:
- `baseline_usage`: what the provider would have consumed without Trex. It replaces the worker's own baseline
  (billed usage plus the input tokens optimization removed) when pricing the baseline.
- `actual_usage_override`: replaces the upstream's input / cached-input split when pricing the actual cost
  (output still comes from the upstream).
- `cache_write_ttl`: `5m` (default) or `1h`, the rate cache writes are priced at.
- `trex`: optimization the client did before sending (e.g. with the trexapi SDK). `original_input_tokens` and
  `request_bytes_before` replace the worker's own "original" measures, so savings count from the client's
  true starting point; the worker still counts what it forwards itself. All four are kept on the event.

The field is validated (400 naming the field on a bad value) and never forwarded upstream.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from ..errors import InvalidRequestError

_TOP = ("baseline_usage", "actual_usage_override", "cache_write_ttl", "trex")
_BASELINE = ("input_tokens", "output_tokens")
_OVERRIDE = ("input_tokens", "cached_input_tokens")
_TREX = ("original_input_tokens", "optimized_input_tokens", "request_bytes_before", "request_bytes_after")
CACHE_WRITE_TTLS = ("5m", "1h")
MAX_COUNT = 10**9
"""The largest token or byte count a client may claim."""


@dataclass(frozen=True, slots=True)
class Claims:
    """A validated `trex_accounting`; every number is a non-negative int or None when not given."""

    baseline_input_tokens: int | None = None
    baseline_output_tokens: int | None = None
    override_input_tokens: int | None = None
    override_cached_input_tokens: int | None = None
    cache_write_ttl: str = "5m"
    original_input_tokens: int | None = None
    optimized_input_tokens: int | None = None
    request_bytes_before: int | None = None
    request_bytes_after: int | None = None

    @property
    def has_baseline(self) -> bool:
        return self.baseline_input_tokens is not None or self.baseline_output_tokens is not None

    @property
    def has_override(self) -> bool:
        return self.override_input_tokens is not None or self.override_cached_input_tokens is not None

    def client_reported(self) -> dict[str, int] | None:
        """The `trex` numbers the client sent, as given."""
        if self is NO_CLAIMS:
            return None
        out = {name: getattr(self, name) for name in _TREX if getattr(self, name) is not None}
        return out or None


NO_CLAIMS = Claims()


def _object(value: Any, where: str, allowed: tuple[str, ...]) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise InvalidRequestError(f"'{where}' must be an object.", param=where)
    unknown = sorted(set(value) - set(allowed))
    if unknown:
        raise InvalidRequestError(
            f"Unknown field '{where}.{unknown[0]}' ('{where}' takes {', '.join(allowed)}).",
            param=f"{where}.{unknown[0]}",
        )
    return value


def _count(parent: dict[str, Any], name: str, where: str) -> int | None:
    value = parent.get(name)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < 0:
        got = (
            "a negative number"
            if isinstance(value, int) and not isinstance(value, bool)
            else f"{value!r:.60}"
        )
        raise InvalidRequestError(
            f"'{where}.{name}' must be a non-negative integer, got {got}.", param=f"{where}.{name}"
        )
    if value > MAX_COUNT:  # no request is that large; an unbounded count would break pricing and sums
        raise InvalidRequestError(f"'{where}.{name}' must be at most {MAX_COUNT:,}.", param=f"{where}.{name}")
    return value


def parse(raw: Any) -> Claims:
    """Validate the request's `trex_accounting` (absent → NO_CLAIMS)."""
    if raw is None:
        return NO_CLAIMS
    top = _object(raw, "trex_accounting", _TOP)
    fields: dict[str, Any] = {}
    if top.get("baseline_usage") is not None:
        where = "trex_accounting.baseline_usage"
        base = _object(top["baseline_usage"], where, _BASELINE)
        fields["baseline_input_tokens"] = _count(base, "input_tokens", where)
        fields["baseline_output_tokens"] = _count(base, "output_tokens", where)
    if top.get("actual_usage_override") is not None:
        where = "trex_accounting.actual_usage_override"
        over = _object(top["actual_usage_override"], where, _OVERRIDE)
        fields["override_input_tokens"] = _count(over, "input_tokens", where)
        fields["override_cached_input_tokens"] = _count(over, "cached_input_tokens", where)
        inp, cached = fields["override_input_tokens"], fields["override_cached_input_tokens"]
        if inp is not None and cached is not None and cached > inp:
            raise InvalidRequestError(
                "'trex_accounting.actual_usage_override.cached_input_tokens' cannot exceed its input_tokens.",
                param="trex_accounting.actual_usage_override.cached_input_tokens",
            )
    ttl = top.get("cache_write_ttl")
    if ttl is not None:
        if ttl not in CACHE_WRITE_TTLS:
            raise InvalidRequestError(
                f"'trex_accounting.cache_write_ttl' must be 5m or 1h, got {ttl!r}.",
                param="trex_accounting.cache_write_ttl",
            )
        fields["cache_write_ttl"] = ttl
    if top.get("trex") is not None:
        where = "trex_accounting.trex"
        stats = _object(top["trex"], where, _TREX)
        for name in _TREX:
            fields[name] = _count(stats, name, where)
    return Claims(**fields)
