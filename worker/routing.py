"""Which provider serves a model, and under which upstream model id.

Built-in rules: `gpt-*`, `chatgpt-*`, `o1*`, `o3*`, `o4*`, `text-embedding-*` → OpenAI; `claude-*` →
Anthropic; `local/NAME` → the local OpenAI-compatible server as `NAME`; any other `vendor/model` →
OpenRouter. `[[models]]` entries in the config add names or override these rules.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Literal

from .config import ConfigError
from .errors import GatewayError, InvalidRequestError

Provider = Literal["openai", "anthropic", "openrouter", "local"]
WireFormat = Literal["chat", "messages"]
PROVIDER_NAMES: tuple[Provider, ...] = ("openai", "anthropic", "openrouter", "local")
WIRE: Mapping[Provider, WireFormat] = {
    "openai": "chat",
    "anthropic": "messages",
    "openrouter": "chat",
    "local": "chat",
}
_OPENAI_PREFIXES = (
    "gpt-",
    "chatgpt-",
    "o1",
    "o3",
    "o4",
    "text-embedding-",
    "omni-moderation",
    "davinci",
    "babbage",
)


SMART_AUTO = "smart-auto"
"""Not a model: the gateway picks one (see `catalog`)."""


class ModelNotFoundError(GatewayError):
    """No provider serves this model name."""

    status = 404
    openai_type = "invalid_request_error"
    anthropic_type = "not_found_error"
    default_code = "model_not_found"


@dataclass(frozen=True, slots=True)
class ModelRoute:
    """Where a requested model goes."""

    model: str
    provider: Provider
    upstream_model: str

    @property
    def wire(self) -> WireFormat:
        return WIRE[self.provider]


_MODEL_KEYS = frozenset(
    {"name", "provider", "upstream_model", "context_window", "max_output", "capabilities", "tier"}
)
"""A `[[models]]` entry's fields: its route here, its catalog fields in `worker.catalog`."""


def parse_model_table(raw: Any, source: str) -> dict[str, ModelRoute]:
    """Validate `[[models]]` (name, provider, optional upstream_model) into a lookup table."""
    if raw is None:
        return {}
    if not isinstance(raw, list):
        raise ConfigError(source, "models", "must be an array of tables ([[models]])")
    table: dict[str, ModelRoute] = {}
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict):
            raise ConfigError(source, f"models[{i}]", "must be a table")
        unknown = sorted(set(entry) - _MODEL_KEYS)
        if unknown:  # a typo (`contxt_window`) would otherwise be ignored without a word
            raise ConfigError(
                source,
                f"models[{i}].{unknown[0]}",
                f"unknown field; expected one of {', '.join(sorted(_MODEL_KEYS))}",
            )
        name, provider = entry.get("name"), entry.get("provider")
        if not isinstance(name, str) or not name:
            raise ConfigError(source, f"models[{i}].name", "required non-empty string")
        if name == SMART_AUTO:
            raise ConfigError(source, f"models[{i}].name", f"'{SMART_AUTO}' is the router's own name")
        if provider not in PROVIDER_NAMES:
            raise ConfigError(source, f"models[{i}].provider", f"expected one of {', '.join(PROVIDER_NAMES)}")
        upstream = entry.get("upstream_model", name)
        if not isinstance(upstream, str) or not upstream:
            raise ConfigError(source, f"models[{i}].upstream_model", "must be a non-empty string")
        table[name] = ModelRoute(name, provider, upstream)
    return table


MAX_MODEL_CHARS = 256


def checked_model(value: Any, param: str = "model") -> str:
    """A request's model id: a non-empty string of printable characters (it is echoed in response
    headers, where a control character cannot go), at most MAX_MODEL_CHARS long; else a 400 naming `param`."""
    if not isinstance(value, str) or not value:
        raise InvalidRequestError(f"'{param}' is required and must be a non-empty string.", param=param)
    if len(value) > MAX_MODEL_CHARS or not value.isprintable():
        raise InvalidRequestError(
            f"'{param}' must be at most {MAX_MODEL_CHARS} printable characters (no control characters).",
            param=param,
        )
    return value


def checked_stream(value: Any) -> bool:
    """A request's `stream`: a boolean, or absent/null for no stream; else a 400 naming it. Read as a truthy
    value instead, a `"stream": 1` would be answered as one answer by the worker but streamed by an upstream
    that reads it as the client meant it (or refused there with an error about a field the client cannot
    see went wrong); the providers themselves take only a boolean."""
    if value is None or isinstance(value, bool):
        return value is True
    raise InvalidRequestError(f"'stream' must be a boolean, got {type(value).__name__}.", param="stream")


def resolve(model: str, table: Mapping[str, ModelRoute]) -> ModelRoute:
    """The route for `model`, or ModelNotFoundError naming it."""
    configured = table.get(model)
    if configured is not None:
        return configured
    return _built_in(model)


@lru_cache(maxsize=1024)
def _built_in(model: str) -> ModelRoute:
    """The route of `model` by the built-in rules (a pure function of the name, remembered for the names in
    use: a frozen dataclass costs several attribute writes to build, on every request)."""
    if model.startswith("local/") and len(model) > 6:
        return ModelRoute(model, "local", model[6:])
    if model.startswith("claude-"):
        return ModelRoute(model, "anthropic", model)
    if model.startswith(_OPENAI_PREFIXES):
        return ModelRoute(model, "openai", model)
    vendor, sep, name = model.partition("/")
    if sep and vendor and name:
        return ModelRoute(model, "openrouter", model)
    raise ModelNotFoundError(
        f"The model {model!r} does not exist or no provider serves it. Use an OpenAI (gpt-*, o*), Anthropic "
        "(claude-*), OpenRouter (vendor/model) or local (local/NAME) model, or add it under [[models]].",
        param="model",
    )
