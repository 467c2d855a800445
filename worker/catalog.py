"""The model catalog, what a key may use, and `smart-auto`.

Built-in entries describe current OpenAI and Anthropic models (context window, maximum output, capabilities,
tier, the sampling parameters they take) as published when `PRICES_TAKEN` was; prices come from
`accounting.pricing`. `[[models]]` entries add models or override these fields (`context_window`,
`max_output`, `capabilities`, `tier`).

`model: "smart-auto"` picks the cheapest catalog chat model the key may use (its provider reachable: bound,
local, or an `X-Upstream-Api-Key` override; allowed by its plan; not drawn from Compute Credits) that fits the
optimized request: input tokens plus requested output within the context window, requested output within the
model's maximum, and the capabilities the request needs (tools, images, JSON output). The other fitting
models, cheapest first, become its fallback chain.
"""

from __future__ import annotations

import fnmatch
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from typing import Any, Literal

from .accounting.pricing import PriceTable
from .config import ConfigError
from .errors import InvalidRequestError
from .quotas import QuotaPlan
from .routing import SMART_AUTO, ModelRoute, Provider, resolve

__all__ = [
    "SMART_AUTO",
    "Entry",
    "ModelInfo",
    "Sampling",
    "build_catalog",
    "needs",
    "plan_allows",
    "sampling_of",
    "smart_auto",
    "usable",
]
CAPABILITIES = ("tools", "vision", "json", "json_schema", "reasoning", "embeddings")
"""`json`: JSON mode (`json_object`); `json_schema`: structured output to a given schema."""
_ALL = frozenset({"tools", "vision", "json", "json_schema", "reasoning"})
_NO_JSON = _ALL - {"json"}  # Claude takes a schema (`output_config.format`) but has no JSON mode

Sampling = Literal["any", "one", "none"]
"""The sampling parameters a model takes: `any` (temperature, top_p, top_k); `one` (Claude Sonnet/Haiku 4.5
and Opus 4.1 on: temperature or top_p, not both; top_k too); `none` (Claude Opus 4.7 removed all three)."""


@dataclass(frozen=True, slots=True)
class ModelInfo:
    name: str
    context_window: int
    max_output: int
    capabilities: frozenset[str]
    tier: str  # "free" or "premium"
    sampling: Sampling = "any"


BUILTIN_CATALOG: tuple[ModelInfo, ...] = (
    ModelInfo("gpt-5.5", 1_000_000, 128_000, _ALL, "premium"),
    ModelInfo("gpt-5.4", 1_000_000, 128_000, _ALL, "premium"),
    ModelInfo("gpt-5.4-mini", 1_000_000, 128_000, _ALL, "free"),
    ModelInfo("gpt-5.4-nano", 1_000_000, 128_000, _ALL, "free"),
    ModelInfo("gpt-5-mini", 400_000, 128_000, _ALL, "free"),
    ModelInfo("gpt-4.1", 1_047_576, 32_768, _ALL - {"reasoning"}, "premium"),
    ModelInfo("gpt-4.1-mini", 1_047_576, 32_768, _ALL - {"reasoning"}, "free"),
    ModelInfo("gpt-4o-mini", 128_000, 16_384, _ALL - {"reasoning"}, "free"),
    ModelInfo("o4-mini", 200_000, 100_000, _ALL, "premium"),
    ModelInfo("claude-opus-4-7", 200_000, 128_000, _NO_JSON, "premium", "none"),
    ModelInfo("claude-sonnet-4-6", 200_000, 64_000, _NO_JSON, "premium", "one"),
    ModelInfo("claude-haiku-4-5", 200_000, 64_000, _NO_JSON, "free", "one"),
    ModelInfo("text-embedding-3-small", 8_191, 0, frozenset({"embeddings"}), "free"),
    ModelInfo("text-embedding-3-large", 8_191, 0, frozenset({"embeddings"}), "free"),
)

_OLDER_SAMPLING: tuple[tuple[str, Sampling], ...] = (
    ("claude-opus-4-6", "one"),
    ("claude-opus-4-5", "one"),
    ("claude-opus-4-1", "one"),
    ("claude-sonnet-4-5", "one"),
)
"""Claude models outside the catalog that clients still name, with the same rule as their successors."""

_SAMPLING: tuple[tuple[str, Sampling], ...] = (
    *((m.name, m.sampling) for m in BUILTIN_CATALOG if m.sampling != "any"),
    *_OLDER_SAMPLING,
)


def sampling_of(upstream_model: str) -> Sampling:
    """The sampling rule of the model a request is sent to, by its upstream id (a dated snapshot such as
    `claude-haiku-4-5-20251001` follows its model)."""
    for prefix, rule in _SAMPLING:
        if upstream_model.startswith(prefix):
            return rule
    return "any"


@dataclass(frozen=True, slots=True)
class Entry:
    info: ModelInfo
    route: ModelRoute

    def describe(self, prices: PriceTable, created: int) -> dict[str, Any]:
        """The entry in OpenAI's model shape plus our fields."""
        priced = prices.for_route(self.info.name, self.route.provider, self.route.upstream_model)
        pricing = None
        if priced is not None:
            p = priced[1]
            pricing = {
                "input": p.input,
                "cached_input": p.cached_input,
                "output": p.output,
                "unit": "USD per 1M tokens",
            }
        return {
            "id": self.info.name,
            "object": "model",
            "created": created,
            "owned_by": self.route.provider,
            "provider": self.route.provider,
            "context_window": self.info.context_window,
            "max_output_tokens": self.info.max_output,
            "capabilities": sorted(self.info.capabilities),
            "tier": self.info.tier,
            "pricing": pricing,
        }


def build_catalog(configured: Mapping[str, ModelRoute], raw_models: Any, source: str) -> dict[str, Entry]:
    """Built-in entries plus `[[models]]` (which may override routes and catalog fields)."""
    out = {m.name: Entry(m, resolve(m.name, configured)) for m in BUILTIN_CATALOG}
    extra = {e["name"]: e for e in raw_models if isinstance(e, dict)} if isinstance(raw_models, list) else {}
    for name, route in configured.items():
        base = (
            out[name].info
            if name in out
            else ModelInfo(name, 128_000, 16_384, frozenset({"tools", "json", "json_schema"}), "free")
        )
        fields = extra.get(name, {})
        for field in ("context_window", "max_output"):
            value = fields.get(field)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 0):
                raise ConfigError(source, f"models.{name}.{field}", "must be an integer >= 0")
        caps = fields.get("capabilities")
        if caps is not None and (not isinstance(caps, list) or not set(caps) <= set(CAPABILITIES)):
            raise ConfigError(
                source, f"models.{name}.capabilities", f"must be a list drawn from {CAPABILITIES}"
            )
        tier = fields.get("tier", base.tier)
        if tier not in ("free", "premium"):
            raise ConfigError(source, f"models.{name}.tier", "must be free or premium")
        info = ModelInfo(
            name,
            fields.get("context_window", base.context_window),
            fields.get("max_output", base.max_output),
            # JSON mode implies structured output, as on the OpenAI-compatible servers `[[models]]` name
            # (a table written before `json_schema` was its own capability keeps its meaning).
            frozenset(caps) | ({"json_schema"} if "json" in caps else set())
            if caps is not None
            else base.capabilities,
            tier,
            base.sampling,
        )
        out[name] = Entry(info, route)
    return out


def plan_allows(name: str, plan: QuotaPlan | None) -> bool:
    """Whether a key on `plan` (None: no plan) may use the model `name`."""
    return plan is None or plan.models is None or any(fnmatch.fnmatchcase(name, p) for p in plan.models)


def usable(
    catalog: Mapping[str, Entry], reachable: Iterable[Provider], plan: QuotaPlan | None
) -> list[Entry]:
    """The entries a key can use: a reachable provider and a model its plan allows."""
    providers = set(reachable)
    return [e for e in catalog.values() if e.route.provider in providers and plan_allows(e.info.name, plan)]


def needs(body: dict[str, Any], fmt: str) -> tuple[set[str], int]:
    """(capabilities the request needs, requested output tokens or 0)."""
    need: set[str] = set()
    if body.get("tools"):
        need.add("tools")
    output_format = body.get("response_format")
    text = body.get("text")
    if output_format is None and isinstance(text, dict):  # Responses: text.format
        output_format = text.get("format")
    if output_format is None and fmt == "messages":  # Anthropic structured output
        config = body.get("output_config")
        output_format = (config.get("format") if isinstance(config, dict) else None) or body.get(
            "output_format"
        )
    if isinstance(output_format, dict):
        kind = output_format.get("type")
        if kind == "json_object":
            need.add("json")
        elif kind == "json_schema":
            need.add("json_schema")
    conversation = body.get("messages") if fmt != "responses" else body.get("input")
    if _has_image(conversation) or _any(conversation, _is_pdf):
        need.add("vision")  # a PDF is read as text and page images: a model that reads images reads PDFs
    if body.get("reasoning_effort") or body.get("reasoning") or body.get("thinking"):
        need.add("reasoning")  # a model without it rejects the parameter (a 400 no fallback follows)
    native = _native_provider(body, fmt)
    if native is not None:
        need.add(f"{_ONLY_ON}{native}")
    if fmt == "messages" and _any(body.get("messages"), _pdf_by_url):
        need.add(f"{_ONLY_ON}anthropic|openrouter")  # Chat Completions takes no file by URL; OpenRouter does
    requested = (
        body.get("max_tokens") or body.get("max_completion_tokens") or body.get("max_output_tokens") or 0
    )
    return need, requested if isinstance(requested, int) and not isinstance(requested, bool) else 0


_ONLY_ON = "provider:"
"""A need only some providers meet (`provider:anthropic`, `provider:anthropic|openrouter`): a format's own
features, which no translation carries. A model must meet each such need."""


def _native_provider(body: dict[str, Any], fmt: str) -> str | None:
    """The provider a request can only go to: Anthropic for Messages search results, documents asking for
    citations, files from its Files API, server tools, MCP servers or a container; OpenAI for a file id of its
    Files API (chat or Responses), Responses built-in tools (web search, file search …) and background
    responses."""
    tools = body.get("tools")
    typed_tools = [t for t in tools if isinstance(t, dict)] if isinstance(tools, list) else []
    if fmt == "messages":
        if body.get("mcp_servers") or body.get("container"):
            return "anthropic"
        if any(t.get("type") not in (None, "custom") for t in typed_tools):
            return "anthropic"
        if _has_block(body.get("messages"), ("search_result",)) or _any(body.get("messages"), _claude_only):
            return "anthropic"
    elif _any(body.get("messages") if fmt == "chat" else body.get("input"), _file_id):
        return "openai"  # an upload to OpenAI's Files API: another provider cannot read it
    if fmt == "responses":
        if body.get("background") not in (None, False):  # only OpenAI runs and stores one
            return "openai"
        if any(t.get("type") not in (None, "function") for t in typed_tools):
            return "openai"
    return None


def _any(value: Any, test: Callable[[dict[str, Any]], bool]) -> bool:
    """Whether `test` holds for an object anywhere in `value`."""
    if isinstance(value, dict):
        if test(value):
            return True
        return any(_any(v, test) for v in value.values() if isinstance(v, list | dict))
    if isinstance(value, list):
        return any(_any(v, test) for v in value)
    return False


def _has_block(value: Any, kinds: tuple[str, ...]) -> bool:
    return _any(value, lambda block: block.get("type") in kinds)


def _source_type(block: dict[str, Any]) -> Any:
    source = block.get("source")
    return source.get("type") if isinstance(source, dict) else None


def _is_pdf(block: dict[str, Any]) -> bool:
    """A file the model reads (a chat `file` part, a Responses `input_file`, a Messages document that is not
    a text or content source, which are text)."""
    kind = block.get("type")
    return kind in ("file", "input_file") or (
        kind == "document" and _source_type(block) not in ("text", "content")
    )


def _pdf_by_url(block: dict[str, Any]) -> bool:
    return block.get("type") == "document" and _source_type(block) == "url"


def _claude_only(block: dict[str, Any]) -> bool:
    """A Messages block no other provider can be sent: a file from Anthropic's Files API, or a document asking
    for citations (only Claude answers with them)."""
    if block.get("type") not in ("document", "image"):
        return False
    citations = block.get("citations")
    return _source_type(block) == "file" or (isinstance(citations, dict) and citations.get("enabled") is True)


def _file_id(block: dict[str, Any]) -> bool:
    """A chat `file` part or a Responses `input_file` / `input_image` naming an upload by `file_id`."""
    kind = block.get("type")
    if kind == "file":
        spec = block.get("file")
        return isinstance(spec, dict) and spec.get("file_id") is not None
    return kind in ("input_file", "input_image") and block.get("file_id") is not None


def _has_image(value: Any) -> bool:
    return _has_block(value, ("image_url", "image", "input_image"))


def smart_auto(
    entries: list[Entry],
    prices: PriceTable,
    input_tokens: int,
    need: set[str],
    requested_output: int,
    credit_models: tuple[str, ...],
) -> list[ModelRoute]:
    """Fitting chat models, cheapest first (400 `no_model_fits` when none does)."""
    fitting: list[tuple[float, str, ModelRoute]] = []
    only_on = [set(n.removeprefix(_ONLY_ON).split("|")) for n in need if n.startswith(_ONLY_ON)]
    need = {n for n in need if not n.startswith(_ONLY_ON)}
    for e in entries:
        info = e.info
        if "embeddings" in info.capabilities or not need <= info.capabilities:
            continue
        if any(e.route.provider not in providers for providers in only_on):
            continue
        if any(fnmatch.fnmatchcase(info.name, p) for p in credit_models):
            continue
        if (
            requested_output > info.max_output
            or input_tokens + max(requested_output, 1) > info.context_window
        ):
            continue
        priced = prices.for_route(info.name, e.route.provider, e.route.upstream_model)
        if priced is None:
            continue  # an unpriced model cannot be compared on cost
        p = priced[1]
        # Cost of a typical turn: the input as sent plus a quarter as much output.
        fitting.append(
            (
                p.input * input_tokens + p.output * max(requested_output, input_tokens // 4, 1),
                info.name,
                e.route,
            )
        )
    if not fitting:
        raise InvalidRequestError(
            "smart-auto found no model this key may use that fits the request "
            f"({input_tokens} input tokens, {requested_output or 'default'} output tokens"
            + (f", needs {', '.join(sorted(need))}" if need else "")
            + ").",
            param="model",
            code="no_model_fits",
        )
    fitting.sort(key=lambda t: (t[0], t[1]))
    return [route for _, _, route in fitting]
