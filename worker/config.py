"""Configuration: `wrangler_local.toml` + `.dev.vars` + the process environment → one frozen `Config`.

The file mirrors wrangler.toml (`name`, `main`, `compatibility_date`, `[vars]`, `[[kv_namespaces]]`,
`[dev]`, `[env.NAME]`) plus a project table `[local]`. Precedence, lowest first: built-in defaults, the top
level of the file, the selected `[env.NAME]` section, process environment variables, command-line options.

Secrets never live in `[vars]`: they come from `.dev.vars` (dotenv, beside the config) or the environment.
"""

from __future__ import annotations

import os
import re
import tomllib
from collections.abc import Mapping
from dataclasses import dataclass, field
from pathlib import Path
from types import MappingProxyType
from typing import Any
from urllib.parse import urlsplit, urlunsplit

from dotenv import dotenv_values

DEFAULT_CONFIG_FILE = "wrangler_local.toml"
DEV_VARS_FILE = ".dev.vars"
KV_BINDING = "TREX_KV"

DEFAULT_VARS: Mapping[str, str] = MappingProxyType(
    {
        "OPENAI_BASE_URL": "https://api.openai.com/v1",
        "ANTHROPIC_BASE_URL": "https://api.anthropic.com",
        "OPENROUTER_BASE_URL": "https://openrouter.ai/api/v1",
        "LOCAL_BASE_URL": "http://127.0.0.1:11434/v1",
        "MAX_BODY_BYTES": str(1024 * 1024),
        "UPSTREAM_CONNECT_TIMEOUT": "10",
        "UPSTREAM_FIRST_BYTE_TIMEOUT": "300",
        "UPSTREAM_IDLE_TIMEOUT": "120",
        "UPSTREAM_FIRST_EVENT_WAIT": "5",
        "UPSTREAM_TOTAL_TIMEOUT": "900",
        "UPSTREAM_RETRIES": "1",
        "UPSTREAM_RETRY_DEADLINE": "30",
        "UPSTREAM_RETRY_MAX_WAIT": "2",
        "BREAKER_FAILURES": "5",
        "BREAKER_COOLDOWN_SECONDS": "60",
        "RATE_LIMIT": "on",
        "RATE_LIMIT_PER_MINUTE": "100",
        "RATE_LIMIT_IP_PER_MINUTE": "100",
        "RATE_LIMIT_MAX_CONCURRENT": "32",
        "RATE_LIMIT_FAIL": "open",
        "TRUSTED_PROXIES": "",
        "DEFAULT_MAX_TOKENS": "4096",
        "ANTHROPIC_VERSION": "2023-06-01",
        "OPTIMIZE_MODE": "balanced",
        "PROTECT_RECENT_TURNS": "2",
        "SESSION_TTL_SECONDS": "86400",
        "SESSION_REOPTIMIZE_TOKENS": "100000",
        "IMPLICIT_SESSIONS": "on",
        "USAGE_ACCOUNTING": "on",
        "USAGE_FLUSH_SECONDS": "1",
        "USAGE_RETENTION_DAYS": "90",
        "LOG_RETENTION_DAYS": "30",
        "KV_SWEEP_SECONDS": "60",
        "AGENT_SIGNATURE_SKEW_SECONDS": "300",
        "MEMORY_TTL_SECONDS": str(7 * 86400),
        "PAYLOAD_BYTES_PER_DAY": str(256 * 1024 * 1024),
        "MEMORY_EMBEDDINGS_URL": "",
        "MEMORY_EMBEDDINGS_MODEL": "text-embedding-3-small",
    }
)
# Vars that must parse as positive numbers; checked at load so nothing fails later on a request.
NUMERIC_VARS = frozenset(
    {
        "MAX_BODY_BYTES",
        "UPSTREAM_CONNECT_TIMEOUT",
        "UPSTREAM_FIRST_BYTE_TIMEOUT",
        "UPSTREAM_IDLE_TIMEOUT",
        "UPSTREAM_FIRST_EVENT_WAIT",
        "UPSTREAM_TOTAL_TIMEOUT",
        "UPSTREAM_RETRY_DEADLINE",
        "UPSTREAM_RETRY_MAX_WAIT",
        "BREAKER_COOLDOWN_SECONDS",
        "DEFAULT_MAX_TOKENS",
        "SESSION_TTL_SECONDS",
        "SESSION_REOPTIMIZE_TOKENS",
        "USAGE_FLUSH_SECONDS",
        "USAGE_RETENTION_DAYS",
        "LOG_RETENTION_DAYS",
        "KV_SWEEP_SECONDS",
        "AGENT_SIGNATURE_SKEW_SECONDS",
        "MEMORY_TTL_SECONDS",
    }
)

# Names that are secrets wherever they appear; any other name matching SECRET_NAME_RE is treated the same.
SECRET_NAMES = frozenset({"TREX_MASTER_KEY", "TREX_ADMIN_TOKEN", "MEMORY_EMBEDDINGS_API_KEY"})
# Ending in KEY (APIKEY, API_KEY), TOKEN, SECRET or PASSWORD, with or without an underscore before it.
SECRET_NAME_RE = re.compile(r"(?:KEY|TOKEN|SECRET|PASSWORD|PASSWD)$", re.IGNORECASE)

# Like wrangler: these are not inherited by `[env.NAME]` sections.
NON_INHERITABLE = frozenset({"vars", "kv_namespaces", "models"})
TOP_LEVEL_KEYS = frozenset(
    {
        "name",
        "main",
        "compatibility_date",
        "vars",
        "kv_namespaces",
        "dev",
        "local",
        "env",
        "models",
        "pricing",
        "plans",
    }
)
LOG_FORMATS = ("text", "json")
KV_SCHEMES = ("memory://", "sqlite:///", "redis://", "rediss://")


class ConfigError(Exception):
    """A configuration problem, named by file, key and what is wrong. The CLI exits with code 2 on it."""

    def __init__(self, source: str, key: str, problem: str) -> None:
        self.source = source
        self.key = key
        self.problem = problem
        super().__init__(f"{source}: {key}: {problem}" if key else f"{source}: {problem}")


@dataclass(frozen=True, slots=True)
class KVBinding:
    """One `[[kv_namespaces]]` entry."""

    binding: str
    id: str


@dataclass(frozen=True, slots=True)
class Overrides:
    """Command-line options that win over everything else. None means "not given"."""

    env: str | None = None
    ip: str | None = None
    port: int | None = None
    persist_to: str | None = None
    kv_url: str | None = None
    log_format: str | None = None
    shutdown_grace_seconds: float | None = None


@dataclass(frozen=True, slots=True)
class Config:
    """The resolved configuration of one worker. Immutable: build a new one to change it."""

    source: str
    root: Path
    name: str
    main: str
    compatibility_date: str
    env_name: str | None
    vars: Mapping[str, str]
    secrets: Mapping[str, str] = field(repr=False)
    kv_namespaces: tuple[KVBinding, ...]
    ip: str
    port: int
    persist_to: Path
    kv_url: str
    log_format: str
    access_log: bool
    shutdown_grace_seconds: float
    wait_until_timeout_seconds: float
    header_timeout_seconds: float
    """How long a connection may take to send a request's head: from its accept, or from the head's first
    byte on a kept-alive connection."""
    body_idle_timeout_seconds: float
    """The longest a request body that is still arriving may go without a byte."""
    client_read_timeout_seconds: float
    """The longest a streamed response waits for a client that has stopped reading (its buffers full)."""
    max_body_bytes: int
    tables: Mapping[str, Any] = field(repr=False)
    """The merged raw tables (after env selection), for modules that own their own sections."""

    @property
    def dev_vars_path(self) -> Path:
        """Where `.dev.vars` lives for this config (next to the config file)."""
        return self.root / DEV_VARS_FILE

    def var(self, name: str, default: str | None = None) -> str | None:
        """A `[vars]` value (after environment overrides)."""
        return self.vars.get(name, default)

    def number(self, name: str) -> float:
        """A numeric `[vars]` value (validated at load time)."""
        return float(self.vars[name])

    def secret(self, name: str) -> str | None:
        """A secret from `.dev.vars` or the environment; None if unset or empty."""
        value = self.secrets.get(name)
        return value or None


def load_config(
    path: str | os.PathLike[str] | None = None,
    overrides: Overrides | None = None,
    environ: Mapping[str, str] | None = None,
) -> Config:
    """Load and validate the configuration.

    `path` None means `./wrangler_local.toml` if it exists, else the built-in defaults. An explicit path that
    does not exist is an error. Raises `ConfigError` for anything invalid.
    """
    overrides = overrides or Overrides()
    environ = os.environ if environ is None else environ
    if path is None:
        candidate = Path(DEFAULT_CONFIG_FILE)
        file_path: Path | None = candidate if candidate.is_file() else None
    else:
        file_path = Path(path)
        if not file_path.is_file():
            raise ConfigError(str(path), "", "config file not found")
    source = str(file_path) if file_path else "<defaults>"
    root = (file_path.parent if file_path else Path.cwd()).resolve()
    raw = _read_toml(file_path) if file_path else {}
    tables = _select_env(raw, overrides.env, source)
    return _build(tables, source, root, overrides, environ)


def _read_toml(path: Path) -> dict[str, Any]:
    try:
        with path.open("rb") as fh:
            return tomllib.load(fh)
    except (tomllib.TOMLDecodeError, UnicodeDecodeError) as exc:
        raise ConfigError(str(path), "", f"invalid TOML: {exc}") from None
    except OSError as exc:
        raise ConfigError(str(path), "", f"cannot read: {exc.strerror}") from None


def _select_env(raw: dict[str, Any], env_name: str | None, source: str) -> dict[str, Any]:
    unknown = sorted(set(raw) - TOP_LEVEL_KEYS)
    if unknown:
        raise ConfigError(
            source, unknown[0], f"unknown key (expected one of {', '.join(sorted(TOP_LEVEL_KEYS))})"
        )
    envs = raw.get("env", {})
    if not isinstance(envs, dict):
        raise ConfigError(source, "env", "must be a table of [env.NAME] sections")
    merged = {k: v for k, v in raw.items() if k != "env"}
    if env_name is None:
        return merged
    if env_name not in envs:
        known = ", ".join(sorted(envs)) or "none defined"
        raise ConfigError(source, f"env.{env_name}", f"no such environment ({known})")
    section = envs[env_name]
    if not isinstance(section, dict):
        raise ConfigError(source, f"env.{env_name}", "must be a table")
    for key in NON_INHERITABLE:
        merged.pop(key, None)
    for key, value in section.items():
        if key not in TOP_LEVEL_KEYS or key == "env":
            raise ConfigError(source, f"env.{env_name}.{key}", "unknown key")
        if key in ("local", "dev") and isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = {**merged[key], **value}
        else:
            merged[key] = value
    merged["__env__"] = env_name
    return merged


def _build(
    tables: dict[str, Any], source: str, root: Path, ov: Overrides, environ: Mapping[str, str]
) -> Config:
    env_name = tables.pop("__env__", None)
    name = _str(tables.get("name", "trex-worker"), source, "name")
    main = _str(tables.get("main", "worker/app.py"), source, "main")
    compat = _str(tables.get("compatibility_date", "2026-11-01"), source, "compatibility_date")
    if not re.fullmatch(r"\d{4}-\d{2}-\d{2}", compat):
        raise ConfigError(source, "compatibility_date", f"expected YYYY-MM-DD, got {compat!r}")

    variables = _vars(tables.get("vars", {}), source, environ)
    secrets = _secrets(root / DEV_VARS_FILE, environ)
    kv_namespaces = _kv_namespaces(
        tables.get("kv_namespaces", [{"binding": KV_BINDING, "id": "trex-local"}]), source
    )

    dev = _table(tables.get("dev", {}), source, "dev")
    local = _table(tables.get("local", {}), source, "local")
    for table, known in (("dev", _DEV_KEYS), ("local", _LOCAL_KEYS)):
        unknown = sorted(set(tables.get(table, {})) - known)
        if unknown:  # a typo (`prot`, `kv_ur`) would otherwise be ignored without a word
            raise ConfigError(
                source,
                f"{table}.{unknown[0]}",
                f"unknown setting; expected one of {', '.join(sorted(known))}",
            )
    ip = ov.ip or _str(dev.get("ip", "127.0.0.1"), source, "dev.ip")
    port = ov.port if ov.port is not None else dev.get("port", 8787)
    if isinstance(port, bool) or not isinstance(port, int) or not 0 <= port <= 65535:
        raise ConfigError(
            "--port" if ov.port is not None else source, "dev.port", f"expected 0..65535, got {port!r}"
        )

    persist_raw = ov.persist_to or _str(
        local.get("persist_to", ".wrangler/state"), source, "local.persist_to"
    )
    persist_to = (root / persist_raw).resolve() if not Path(persist_raw).is_absolute() else Path(persist_raw)
    kv_url = ov.kv_url or environ.get("TREX_KV_URL") or local.get("kv_url")
    if kv_url is None:
        kv_url = f"sqlite:///{persist_to / 'kv.sqlite3'}"
    kv_url = _str(kv_url, source, "local.kv_url")
    sqlite_path = kv_url.removeprefix("sqlite:///") if kv_url.startswith("sqlite:///") else None
    if sqlite_path and not Path(sqlite_path).is_absolute():
        # Relative to the config file, like persist_to: every command run from anywhere opens the same file.
        kv_url = f"sqlite:///{(root / sqlite_path).resolve()}"
    if not kv_url.startswith(KV_SCHEMES):
        raise ConfigError(
            source, "local.kv_url", f"unsupported URL {kv_url!r} (memory://, sqlite:///PATH, redis://)"
        )

    log_format = ov.log_format or _str(local.get("log_format", "text"), source, "local.log_format")
    if log_format not in LOG_FORMATS:
        raise ConfigError(source, "local.log_format", f"expected one of {LOG_FORMATS}, got {log_format!r}")
    access_log = local.get("access_log", True)
    if not isinstance(access_log, bool):
        raise ConfigError(source, "local.access_log", f"expected true or false, got {access_log!r}")
    grace = _positive(
        ov.shutdown_grace_seconds
        if ov.shutdown_grace_seconds is not None
        else local.get("shutdown_grace_seconds", 10),
        "--grace-seconds" if ov.shutdown_grace_seconds is not None else source,
        "local.shutdown_grace_seconds",
    )
    wait_timeout = _positive(
        local.get("wait_until_timeout_seconds", 30), source, "local.wait_until_timeout_seconds"
    )
    header_timeout = _positive(
        local.get("header_timeout_seconds", 20), source, "local.header_timeout_seconds"
    )
    body_idle_timeout = _positive(
        local.get("body_idle_timeout_seconds", 60), source, "local.body_idle_timeout_seconds"
    )
    client_read_timeout = _positive(
        local.get("client_read_timeout_seconds", 120), source, "local.client_read_timeout_seconds"
    )

    for key in sorted(NUMERIC_VARS):
        _positive_var(variables, key, source, environ)
    # What a request may ask for, too.
    count_var(variables["PROTECT_RECENT_TURNS"], "PROTECT_RECENT_TURNS", 1000, source=source, environ=environ)
    max_body = _int_var(variables, "MAX_BODY_BYTES", source, environ)
    if max_body < 1024:
        raise ConfigError(source, "vars.MAX_BODY_BYTES", f"must be at least 1024, got {max_body}")

    return Config(
        source=source,
        root=root,
        name=name,
        main=main,
        compatibility_date=compat,
        env_name=env_name,
        vars=MappingProxyType(variables),
        secrets=MappingProxyType(secrets),
        kv_namespaces=kv_namespaces,
        ip=ip,
        port=port,
        persist_to=persist_to,
        kv_url=kv_url,
        log_format=log_format,
        access_log=access_log,
        shutdown_grace_seconds=grace,
        wait_until_timeout_seconds=wait_timeout,
        header_timeout_seconds=header_timeout,
        body_idle_timeout_seconds=body_idle_timeout,
        client_read_timeout_seconds=client_read_timeout,
        max_body_bytes=max_body,
        tables=MappingProxyType(tables),
    )


def count_var(
    raw: str, name: str, most: int, *, least: int = 0, source: str, environ: Mapping[str, str] | None = None
) -> int:
    """A `[vars]` value that must be a whole number from `least` to `most` (ASCII digits only)."""
    text = raw.strip()
    if not (text.isascii() and text.isdigit()) or not least <= int(text) <= most:
        where = "environment" if environ is not None and name in environ else source
        raise ConfigError(where, f"vars.{name}", f"expected an integer from {least} to {most}, got {text!r}")
    return int(text)


def redacted_url(url: str) -> str:
    """`url` fit to print: the credentials in it are replaced by `***` — a password (`redis://:pw@host`), a
    user name given alone (`https://TOKEN@host`, how a token is often passed) and a query parameter that names
    a secret (`?password=`, `?pass=`, `?key=`, `?api_key=`, `?token=`, `?client_secret=` …)."""
    try:
        parts = urlsplit(url)
        password = parts.password
    except ValueError:  # not a URL one can take apart (`[bad`): nothing of it is printed
        return "(an unparsable URL)"
    query = "&".join(_redacted_field(field) for field in parts.query.split("&")) if parts.query else ""
    _, at, host = parts.netloc.rpartition("@")
    if not at:
        return url if query == parts.query else urlunsplit(parts._replace(query=query))
    user = "***" if password is None else f"{parts.username or ''}:***"
    return urlunsplit(parts._replace(netloc=f"{user}@{host}", query=query))


def _redacted_field(field: str) -> str:
    name, sep, _ = field.partition("=")
    secret = name.lower() in ("pass", "passwd") or SECRET_NAME_RE.search(name) is not None
    return f"{name}=***" if sep and secret else field


def is_secret_name(name: str) -> bool:
    """True for names that must only come from `.dev.vars` or the environment."""
    return name in SECRET_NAMES or bool(SECRET_NAME_RE.search(name))


def _vars(raw: Any, source: str, environ: Mapping[str, str]) -> dict[str, str]:
    table = _table(raw, source, "vars")
    variables = dict(DEFAULT_VARS)
    for key, value in table.items():
        if is_secret_name(key):
            raise ConfigError(
                source, f"vars.{key}", "looks like a secret: put it in .dev.vars or the environment"
            )
        if isinstance(value, bool):
            variables[key] = "true" if value else "false"
        elif isinstance(value, str | int | float):
            variables[key] = str(value)
        else:
            raise ConfigError(
                source, f"vars.{key}", f"expected a string, number or boolean, got {type(value).__name__}"
            )
    for key in variables:
        if key in environ:
            variables[key] = environ[key]
    return variables


def _secrets(dev_vars: Path, environ: Mapping[str, str]) -> dict[str, str]:
    secrets: dict[str, str] = {}
    if dev_vars.exists():
        if not dev_vars.is_file():
            raise ConfigError(str(dev_vars), "", "cannot read: not a file")
        try:
            values = dotenv_values(dev_vars)
        except (OSError, UnicodeDecodeError) as exc:
            problem = exc.strerror if isinstance(exc, OSError) else f"not UTF-8 text ({exc.reason})"
            raise ConfigError(str(dev_vars), "", f"cannot read: {problem}") from None
        secrets.update({k: v for k, v in values.items() if v is not None})
    for key in SECRET_NAMES:
        if environ.get(key, "").strip():  # an exported but empty variable does not hide the file's value
            secrets[key] = environ[key]
    return secrets


def _kv_namespaces(raw: Any, source: str) -> tuple[KVBinding, ...]:
    if not isinstance(raw, list):
        raise ConfigError(source, "kv_namespaces", "must be an array of tables ([[kv_namespaces]])")
    out: list[KVBinding] = []
    for i, entry in enumerate(raw):
        if not isinstance(entry, dict) or not isinstance(entry.get("binding"), str):
            raise ConfigError(source, f"kv_namespaces[{i}].binding", "required string")
        out.append(KVBinding(binding=entry["binding"], id=str(entry.get("id", entry["binding"]))))
    if not any(b.binding == KV_BINDING for b in out):
        raise ConfigError(source, "kv_namespaces", f"a namespace with binding = {KV_BINDING!r} is required")
    return tuple(out)


def _int_var(variables: Mapping[str, str], key: str, source: str, environ: Mapping[str, str]) -> int:
    value = variables[key]
    try:
        return int(value)
    except ValueError:
        where = "environment" if key in environ else source
        raise ConfigError(where, f"vars.{key}", f"expected an integer, got {value!r}") from None


_DEV_KEYS = frozenset({"ip", "port"})
_LOCAL_KEYS = frozenset(
    {
        "persist_to",
        "kv_url",
        "log_format",
        "access_log",
        "shutdown_grace_seconds",
        "wait_until_timeout_seconds",
        "header_timeout_seconds",
        "body_idle_timeout_seconds",
        "client_read_timeout_seconds",
    }
)
_MAX_NUMBER = 1e9
"""The largest numeric `[vars]` value: 31 years in seconds, a gigabyte as a body limit."""


def _positive_var(variables: Mapping[str, str], key: str, source: str, environ: Mapping[str, str]) -> float:
    value = variables[key]
    try:
        number = float(value)
    except ValueError:
        number = -1.0
    where = "environment" if key in environ else source
    if not number > 0:
        raise ConfigError(where, f"vars.{key}", f"expected a positive number, got {value!r}")
    if not number <= _MAX_NUMBER:  # `inf` and values no timer, TTL or counter can hold
        raise ConfigError(where, f"vars.{key}", f"expected a number up to {_MAX_NUMBER:.0e}, got {value!r}")
    return number


def _table(value: Any, source: str, key: str) -> dict[str, Any]:
    if not isinstance(value, dict):
        raise ConfigError(source, key, f"must be a table, got {type(value).__name__}")
    return value


def _str(value: Any, source: str, key: str) -> str:
    if not isinstance(value, str) or not value:
        raise ConfigError(source, key, f"expected a non-empty string, got {value!r}")
    return value


def _positive(value: Any, source: str, key: str) -> float:
    if isinstance(value, bool) or not isinstance(value, int | float) or not 0 < value <= _MAX_NUMBER:
        raise ConfigError(source, key, f"expected a positive number up to {_MAX_NUMBER:.0e}, got {value!r}")
    return float(value)


@dataclass(frozen=True, slots=True)
class ConfigSource:
    """How to rebuild the config in a child process (Config itself holds unpicklable mapping proxies)."""

    path: str | None
    overrides: Overrides

    def load(self) -> Config:
        return load_config(self.path, self.overrides)


def plan_int(source: str, plan: str, entry: Mapping[str, Any], field: str, minimum: int) -> int | None:
    """`[plans.PLAN].field` as an integer >= `minimum`, None when absent; ConfigError naming it otherwise."""
    value = entry.get(field)
    if value is None:
        return None
    if isinstance(value, bool) or not isinstance(value, int) or value < minimum:
        raise ConfigError(source, f"plans.{plan}.{field}", f"must be an integer >= {minimum}")
    return value
