"""The services a proxied request needs, built once at start-up (never per request)."""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field

from yarl import URL

from adapters.transport import Timeouts, UpstreamClient
from kv import KVNamespace
from kv.batching import CounterBatch

from .accounting.events import UsageRecorder
from .accounting.plans import parse_plans
from .accounting.pricing import PriceTable, parse_price_overrides
from .agents import AgentStore
from .auth import KeyStore
from .catalog import Entry, build_catalog
from .config import Config, ConfigError, count_var
from .health import Breakers
from .kvcheck import KVCheck
from .limits import Limits, parse_plan_limits, parse_trusted
from .memory import Embeddings
from .optimize.base import MODES
from .payloads import MAX_TTL_SECONDS, MIN_TTL_SECONDS, PayloadStore
from .quotas import Quotas, parse_quota_plans
from .routing import PROVIDER_NAMES, ModelRoute, Provider, parse_model_table
from .sweeper import Sweeper
from .vault import MASTER_KEY_NAME, Vault, VaultError

log = logging.getLogger("trex.server")


@dataclass(frozen=True, slots=True)
class Gateway:
    """Key store, upstream pools, model table and provider endpoints."""

    keys: KeyStore
    agents: AgentStore
    """Signed agents: administration and `verify_agent` for the payload routes."""
    kv: KVNamespace
    upstream: UpstreamClient
    models: Mapping[str, ModelRoute]
    base_urls: Mapping[Provider, str]
    default_max_tokens: int
    anthropic_version: str
    optimize_mode: str
    protect_recent_turns: int
    session_ttl_seconds: int
    session_budget_tokens: int
    usage: UsageRecorder | None
    """None when `USAGE_ACCOUNTING = "off"`."""
    recorder: UsageRecorder
    """Writes the request log (always) and, when accounting is on, the usage events (it is `usage` then)."""
    quotas: Quotas
    breakers: Breakers
    limits: Limits
    catalog: Mapping[str, Entry]
    prices: PriceTable
    payloads: PayloadStore
    sweeper: Sweeper
    """Reclaims the space of expired KV entries in the background (started with the app)."""
    kv_check: KVCheck
    """Whether the KV takes writes, for `GET /health`."""
    max_body_bytes: int = 1 << 20
    """`MAX_BODY_BYTES`: also the most a request may grow to once its TrexID references are expanded."""
    memory_ttl_seconds: int = 7 * 86400
    """How long context stored with `store` / `trex.store_context` lives."""
    embeddings: Embeddings | None = None
    """The endpoint whose vectors stored context uses (`MEMORY_EMBEDDINGS_URL`); None: lexical vectors."""
    retries: int = 1
    """Retries of one route on a retryable failure (429, 502, 503, 504, 529, connect error, timeout)."""
    retry_deadline: float = 30.0
    """Seconds from the first attempt after which no retry or fallback starts."""
    retry_max_wait: float = 2.0
    """The longest wait before a retry (backoff or the upstream's Retry-After); longer means no retry."""
    first_event_wait: float = 5.0
    """`UPSTREAM_FIRST_EVENT_WAIT`: how long a stream's first event is waited for before the client is
    answered; a stream slower than that (a reasoning model) is relayed from what came so far."""
    implicit_sessions: bool = True
    """`IMPLICIT_SESSIONS`: a conversation sent without `X-Session-Id` is matched by its opening exchange."""
    endpoints: dict[tuple[Provider, str], URL | str] = field(default_factory=dict)
    """(provider, wire) → its endpoint URL, parsed once (aiohttp would parse a string on every request)."""

    async def close(self, within: float | None = None) -> None:
        """Stop the KV sweep and any KV check, write the last usage events and release the upstream connection
        pools. What waits on the KV is given up after `within` seconds in all (None: no bound), so a KV that
        stalls cannot hold a shutdown past its grace period; what was not written is logged."""
        self.keys.close()  # no more cache renewals: they would read a KV about to close
        self.breakers.close()
        loop = asyncio.get_running_loop()
        deadline = None if within is None else loop.time() + within
        await self.kv_check.close()
        try:
            async with asyncio.timeout_at(deadline):
                await self.sweeper.close()  # a slice in flight on a stalled KV is cut off: it is redone later
        except TimeoutError:
            log.warning("shutdown: the KV sweep did not stop within %g s; cut off", within)
        await self.recorder.close(None if deadline is None else max(deadline - loop.time(), 0.0))
        if self.recorder.kv is not self.kv:
            await self.recorder.kv.close()
        await self.upstream.close()


def optimize_mode(config: Config) -> str:
    """`OPTIMIZE_MODE`, checked (ConfigError naming it otherwise)."""
    mode = config.var("OPTIMIZE_MODE") or "balanced"
    if mode not in MODES:
        raise ConfigError(
            config.source, "vars.OPTIMIZE_MODE", f"expected one of {', '.join(MODES)}, got {mode!r}"
        )
    return mode


def build_gateway(config: Config, kv: KVNamespace) -> Gateway:
    """Everything derived from the config once: vault key derivation, model table, base URLs, pools."""
    master = config.secret(MASTER_KEY_NAME)
    try:
        vault = Vault(master) if master else None
    except VaultError as exc:
        raise ConfigError(str(config.dev_vars_path), MASTER_KEY_NAME, str(exc)) from None
    base_urls: dict[Provider, str] = {
        p: (config.var(f"{p.upper()}_BASE_URL") or "").rstrip("/") for p in PROVIDER_NAMES
    }
    mode = optimize_mode(config)
    accounting = _on_off(config, "USAGE_ACCOUNTING")
    implicit_sessions = _on_off(config, "IMPLICIT_SESSIONS")
    # Every table is validated before anything is built on the KV.
    models = parse_model_table(config.tables.get("models"), config.source)
    prices = PriceTable(parse_price_overrides(config.tables.get("pricing"), config.source))
    plans = parse_plans(config.tables.get("plans"), config.source)
    # Rate-limit and quota counters of concurrent requests share round trips.
    counters = CounterBatch(kv)
    # With accounting off no usage is reconciled to release a credit hold: requests are only checked.
    quotas = Quotas(
        kv,
        parse_quota_plans(config.tables.get("plans"), config.source),
        counters,
        hold_credits=accounting,
    )
    # A count whose Redis reply was lost is settled with the plan charges: sent again, then taken back.
    counters.settle_with(quotas.pending)
    # One recorder writes usage events and the request log in the same batches; with accounting off it
    # still writes the request log, and `usage` is None so no request creates an event.
    recorder = UsageRecorder(
        kv.independent(),
        prices,
        plans,
        retention_seconds=max(60, int(config.number("USAGE_RETENTION_DAYS") * 86400)),
        flush_seconds=config.number("USAGE_FLUSH_SECONDS"),
        log_retention_seconds=max(60, int(config.number("LOG_RETENTION_DAYS") * 86400)),
        quotas=quotas,
    )
    usage = recorder if accounting else None
    timeouts = Timeouts(
        connect=config.number("UPSTREAM_CONNECT_TIMEOUT"),
        first_byte=config.number("UPSTREAM_FIRST_BYTE_TIMEOUT"),
        idle=config.number("UPSTREAM_IDLE_TIMEOUT"),
        total=config.number("UPSTREAM_TOTAL_TIMEOUT"),
    )
    upstream = UpstreamClient(timeouts)
    embeddings_url = (config.var("MEMORY_EMBEDDINGS_URL") or "").strip()
    if embeddings_url and not embeddings_url.startswith(("http://", "https://")):
        raise ConfigError(
            config.source, "vars.MEMORY_EMBEDDINGS_URL", f"not an http(s) URL: {embeddings_url!r}"
        )
    embeddings = (
        Embeddings(
            upstream,
            embeddings_url,
            config.var("MEMORY_EMBEDDINGS_MODEL") or "text-embedding-3-small",
            config.secret("MEMORY_EMBEDDINGS_API_KEY"),
        )
        if embeddings_url
        else None
    )
    return Gateway(
        keys=KeyStore(kv, vault),
        agents=AgentStore(kv, vault, max_skew_seconds=config.number("AGENT_SIGNATURE_SKEW_SECONDS")),
        kv=kv,
        upstream=upstream,
        models=models,
        base_urls=base_urls,
        default_max_tokens=int(config.number("DEFAULT_MAX_TOKENS")),
        anthropic_version=config.var("ANTHROPIC_VERSION") or "2023-06-01",
        optimize_mode=mode,
        protect_recent_turns=int(config.number("PROTECT_RECENT_TURNS")),  # 0..1000, checked at load
        session_ttl_seconds=max(60, int(config.number("SESSION_TTL_SECONDS"))),
        session_budget_tokens=int(config.number("SESSION_REOPTIMIZE_TOKENS")),
        implicit_sessions=implicit_sessions,
        usage=usage,
        recorder=recorder,
        quotas=quotas,
        catalog=build_catalog(models, config.tables.get("models"), config.source),
        prices=prices,
        payloads=PayloadStore(kv, bytes_per_day=_count(config, "PAYLOAD_BYTES_PER_DAY", 2**50)),
        embeddings=embeddings,
        max_body_bytes=config.max_body_bytes,
        memory_ttl_seconds=min(
            MAX_TTL_SECONDS, max(MIN_TTL_SECONDS, int(config.number("MEMORY_TTL_SECONDS")))
        ),
        limits=_limits(config, kv, counters),
        breakers=Breakers(
            kv, _count(config, "BREAKER_FAILURES", 1000), int(config.number("BREAKER_COOLDOWN_SECONDS"))
        ),
        retries=_count(config, "UPSTREAM_RETRIES", 10),
        retry_deadline=config.number("UPSTREAM_RETRY_DEADLINE"),
        retry_max_wait=config.number("UPSTREAM_RETRY_MAX_WAIT"),
        first_event_wait=config.number("UPSTREAM_FIRST_EVENT_WAIT"),
        # On the background writer's connection: on SQLite, requests never queue behind a slice.
        sweeper=Sweeper(recorder.kv, config.number("KV_SWEEP_SECONDS")),
        kv_check=KVCheck(kv),
    )


def _count(config: Config, name: str, most: int, least: int = 0) -> int:
    return count_var(config.var(name) or "0", name, most, least=least, source=config.source)


def _on_off(config: Config, name: str) -> bool:
    """A switch var (`on` unless set): True for on; a ConfigError for anything but on or off."""
    switch = (config.var(name) or "on").strip().lower()
    if switch not in ("on", "off"):
        raise ConfigError(config.source, f"vars.{name}", f"expected on or off, got {switch!r}")
    return switch == "on"


def _limits(config: Config, kv: KVNamespace, counters: CounterBatch) -> Limits:
    fail = (config.var("RATE_LIMIT_FAIL") or "open").strip().lower()
    if fail not in ("open", "closed"):
        raise ConfigError(config.source, "vars.RATE_LIMIT_FAIL", f"expected open or closed, got {fail!r}")
    return Limits(
        kv,
        enabled=_on_off(config, "RATE_LIMIT"),
        # 0 a minute would refuse everything (it silently meant 1); RATE_LIMIT = "off" turns the limits off.
        key_per_minute=_count(config, "RATE_LIMIT_PER_MINUTE", 10**9, least=1),
        ip_per_minute=_count(config, "RATE_LIMIT_IP_PER_MINUTE", 10**9, least=1),
        max_concurrent=_count(config, "RATE_LIMIT_MAX_CONCURRENT", 10**6),
        trusted=parse_trusted(config.var("TRUSTED_PROXIES") or "", config.source),
        fail_open=fail == "open",
        plans=parse_plan_limits(config.tables.get("plans"), config.source),
        counters=counters,
    )
