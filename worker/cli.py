"""The `trex` command.

Every subcommand that touches state takes the same `--config`, `--env`, `--persist-to` and `--kv-url` as
`trex dev`, so it works on the same KV as the server without the server running, and `--json` for
machine-readable output. Exit codes: 0 ok, 1 runtime failure, 2 bad usage or bad configuration.
"""

from __future__ import annotations

import argparse
import asyncio
import base64
import os
import sys
import time
from collections.abc import Awaitable, Callable, Sequence
from pathlib import Path
from typing import Any

import msgspec

from kv import KVClosedError, KVError, KVNamespace, KVUnavailableError, open_kv

from .accounting.events import GROUP_BYS, UsageRecorder
from .accounting.plans import parse_plans
from .accounting.pricing import PriceTable
from .auth import PROVIDERS, KeyStore
from .cli_agents import add_agents_parser, agents_command
from .cli_credits import add_credits_parser, credits_command
from .config import Config, ConfigError, ConfigSource, Overrides, redacted_url
from .errors import GatewayError
from .gateway import optimize_mode
from .handlers.health import VERSION
from .handlers.usage import resolve_range
from .limits import parse_plan_limits
from .optimize.base import MODES
from .optimize.pipeline import PROFILES, optimize
from .optimize.segments import detect_format
from .optimizing import compression_object, resolve_options, validate_payload
from .quotas import parse_quota_plans
from .server import run
from .tokens import preload
from .vault import MASTER_KEY_NAME, Vault, VaultError, ensure_master_key

EXIT_OK, EXIT_FAIL, EXIT_USAGE = 0, 1, 2


def _state_options() -> argparse.ArgumentParser:
    """The options shared by every subcommand that reads or writes state."""
    p = argparse.ArgumentParser(add_help=False)
    p.add_argument("--config", metavar="FILE", help="config file (default: ./wrangler_local.toml if present)")
    p.add_argument("--env", metavar="NAME", help="use the [env.NAME] section of the config")
    p.add_argument("--persist-to", metavar="DIR", help="directory for local state (default .wrangler/state)")
    p.add_argument(
        "--kv-url", metavar="URL", help="KV backend: memory://, sqlite:///PATH or redis://HOST:PORT/DB"
    )
    p.add_argument("--json", action="store_true", help="machine-readable output")
    return p


def build_parser() -> argparse.ArgumentParser:
    """The full argument parser (exposed for tests and `--help`)."""
    parser = argparse.ArgumentParser(prog="trex", description="Trex LLM edge gateway.")
    parser.add_argument("--version", action="version", version=f"trex {VERSION}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    state = _state_options()

    dev = sub.add_parser("dev", parents=[state], help="serve the worker locally (like wrangler dev)")
    dev.add_argument("--ip", help="address to bind (default [dev] ip, 127.0.0.1)")
    dev.add_argument("--port", type=int, help="port to bind (default [dev] port, 8787; 0 picks a free one)")
    dev.add_argument("--workers", type=int, default=1, help="processes sharing the port via SO_REUSEPORT")
    dev.add_argument("--log-format", choices=["text", "json"], help="access/error log format")
    dev.add_argument("--grace-seconds", type=float, help="shutdown grace for in-flight work (default 10)")

    kv = sub.add_parser("kv", help="read and write the configured KV namespace")
    kv_sub = kv.add_subparsers(dest="kv_command", metavar="ACTION", required=True)
    kv_list = kv_sub.add_parser("list", parents=[state], help="list keys")
    kv_list.add_argument("--prefix", default="")
    kv_list.add_argument("--limit", type=int, default=1000)
    kv_list.add_argument("--cursor", help="continue a listing from the cursor the previous page gave")
    kv_get = kv_sub.add_parser("get", parents=[state], help="print a value")
    kv_get.add_argument("key")
    kv_put = kv_sub.add_parser("put", parents=[state], help="store a value (from the argument or stdin)")
    kv_put.add_argument("key")
    kv_put.add_argument("value", nargs="?", help="the value; read from stdin when omitted")
    kv_put.add_argument("--ttl", type=int, help="expiration_ttl in seconds (>= 60)")
    kv_del = kv_sub.add_parser("delete", parents=[state], help="delete a key")
    kv_del.add_argument("key")

    keys = sub.add_parser("keys", help="manage proxy keys and their provider-key bindings")
    keys_sub = keys.add_subparsers(dest="keys_command", metavar="ACTION", required=True)
    k_create = keys_sub.add_parser("create", parents=[state], help="create a proxy key (printed once)")
    k_create.add_argument("--name", required=True)
    k_create.add_argument("--plan", help="plan name (see [plans])")
    k_create.add_argument("--optimize", choices=list(MODES), help="this key's default optimizer mode")
    keys_sub.add_parser("list", parents=[state], help="list proxy keys")
    k_bind = keys_sub.add_parser(
        "bind", parents=[state], help="bind a provider key (read from stdin) to a proxy key, encrypted"
    )
    k_bind.add_argument("key_id")
    k_bind.add_argument("--provider", required=True, choices=list(PROVIDERS))
    for action, verb in (("suspend", "suspend"), ("activate", "activate"), ("revoke", "revoke (final)")):
        k_state = keys_sub.add_parser(action, parents=[state], help=f"{verb} a proxy key")
        k_state.add_argument("key_id")
    k_plan = keys_sub.add_parser("set-plan", parents=[state], help="put a proxy key on a plan")
    k_plan.add_argument("key_id")
    k_plan.add_argument("plan", help="a [plans.NAME] of the config, or 'none'")

    add_agents_parser(sub, state)

    comp = sub.add_parser(
        "compress", parents=[state], help="optimize a request payload (chat, Responses or Messages) offline"
    )
    comp.add_argument("file", help="a JSON payload file, or - for stdin")
    comp.add_argument("--mode", choices=list(MODES), help="optimizer mode (default OPTIMIZE_MODE, balanced)")
    comp.add_argument("--compression-model", choices=list(PROFILES), help="coding-agent profile")
    comp.add_argument(
        "--protect-recent-turns", type=int, help="prose turns kept whole at the end (default 2)"
    )

    use = sub.add_parser("usage", parents=[state], help="usage totals: tokens, costs and savings")
    use.add_argument("--key", metavar="KEY_ID", help="one proxy key (default: every key)")
    use.add_argument(
        "--from",
        dest="start",
        metavar="WHEN",
        help="YYYY-MM-DD, ISO date-time or epoch (default: 1st of this month)",
    )
    use.add_argument(
        "--to", dest="end", metavar="WHEN", help="YYYY-MM-DD, ISO date-time or epoch (default: now)"
    )
    use.add_argument("--group-by", choices=list(GROUP_BYS), help="one row per model, day or provider")

    add_credits_parser(sub, state)

    logs = sub.add_parser("logs", parents=[state], help="a proxy key's request log, newest first")
    logs.add_argument("key_id")
    logs.add_argument("--limit", type=int, default=50, help="entries to print (1-1000, default 50)")

    sub.add_parser("config", parents=[state], help="print the resolved configuration (secrets redacted)")
    return parser


def _overrides(args: argparse.Namespace) -> Overrides:
    return Overrides(
        env=args.env,
        ip=getattr(args, "ip", None),
        port=getattr(args, "port", None),
        persist_to=args.persist_to,
        kv_url=args.kv_url,
        log_format=getattr(args, "log_format", None),
        shutdown_grace_seconds=getattr(args, "grace_seconds", None),
    )


def _print(args: argparse.Namespace, obj: Any, text: str) -> None:
    print(msgspec.json.encode(obj).decode() if args.json else text)


async def _with_kv(url: str, action: Callable[[KVNamespace], Awaitable[int]]) -> int:
    kv = await open_kv(url)
    try:
        return await action(kv)
    finally:
        await kv.close()


def _kv_command(args: argparse.Namespace, url: str) -> int:
    async def act(kv: KVNamespace) -> int:
        if args.kv_command == "list":
            result = await kv.list(prefix=args.prefix, limit=args.limit, cursor=args.cursor)
            rows = [{"name": k.name, "expiration": k.expiration, "metadata": k.metadata} for k in result.keys]
            names = [k.name for k in result.keys]
            if not result.list_complete:  # say so: the page stopped at --limit, more keys follow
                names.append(f"(more keys: --cursor {result.cursor})")
            _print(
                args,
                {"keys": rows, "list_complete": result.list_complete, "cursor": result.cursor},
                "\n".join(names),
            )
        elif args.kv_command == "get":
            value = await kv.get(args.key)
            if value is None:
                print(f"trex kv get: no such key: {args.key}", file=sys.stderr)
                return EXIT_FAIL
            if args.json:
                try:
                    doc = {"key": args.key, "value": value.decode("utf-8"), "encoding": "utf-8"}
                except UnicodeDecodeError:  # bytes that are not text: base64, so none are lost
                    doc = {"key": args.key, "value": base64.b64encode(value).decode(), "encoding": "base64"}
                _print(args, doc, "")
            else:
                sys.stdout.buffer.write(value)
                sys.stdout.flush()
        elif args.kv_command == "put":
            # An argument is stored as the bytes it was given (os.fsencode: not UTF-8 text either).
            value = os.fsencode(args.value) if args.value is not None else sys.stdin.buffer.read()
            await kv.put(args.key, value, expiration_ttl=args.ttl)
            _print(args, {"key": args.key, "stored": True}, f"stored {args.key}")
        elif args.kv_command == "delete":
            await kv.delete(args.key)
            _print(args, {"key": args.key, "deleted": True}, f"deleted {args.key}")
        return EXIT_OK

    return asyncio.run(_with_kv(url, act))


_STATE_ACTIONS = {"suspend": "suspended", "activate": "active", "revoke": "revoked"}


def _configured_plans(config: Config) -> set[str]:
    """The config's plan names, after the checks `trex dev` makes of them (ConfigError otherwise)."""
    raw = config.tables.get("plans")
    parse_plans(raw, config.source)
    parse_plan_limits(raw, config.source)
    parse_quota_plans(raw, config.source)
    return set(raw) if isinstance(raw, dict) else set()


def _keys_command(args: argparse.Namespace, config: Config) -> int:
    vault = None
    provider_key = ""
    if args.keys_command == "bind":
        provider_key = sys.stdin.readline().strip()  # read first: no master key is made for nothing
        if not provider_key:
            print("trex keys bind: no provider key on stdin", file=sys.stderr)
            return EXIT_USAGE
        try:
            vault = Vault(ensure_master_key(config))
        except VaultError as exc:
            raise ConfigError(str(config.dev_vars_path), MASTER_KEY_NAME, str(exc)) from None
    plans = _configured_plans(config) if args.keys_command in ("create", "set-plan") else set()

    async def act(kv: KVNamespace) -> int:
        store = KeyStore(kv, vault)
        if args.keys_command == "create":
            if args.plan is not None and args.plan not in plans:
                # A typo must not give a key without the plan's quotas and model limits.
                print(f"trex keys create: no [plans.{args.plan}] in {config.source}", file=sys.stderr)
                return EXIT_USAGE
            record, token = await store.create(args.name, plan=args.plan, optimize_mode=args.optimize)
            doc = {"id": record.id, "name": record.name, "key": token, "prefix": record.prefix}
            text = f"id:  {record.id}\nkey: {token}\n(store the key now: it is not shown again)"
            _print(args, doc, text)
        elif args.keys_command == "list":
            rows = [
                {
                    "id": r.id,
                    "name": r.name,
                    "state": r.state,
                    "plan": r.plan,
                    "created": r.created,
                    "last_used": used,
                    "prefix": r.prefix,
                    "optimize_mode": r.optimize_mode,
                }
                for r, used in await store.list_keys()
            ]
            lines = [f"{'ID':<22} {'NAME':<20} {'STATE':<10} {'CREATED':<20} {'LAST USED':<20} PREFIX"]
            for row in rows:
                lines.append(
                    f"{row['id']:<22} {row['name']:<20} {row['state']:<10} {_when(row['created']):<20} "
                    f"{_when(row['last_used']):<20} {row['prefix']}…"
                )
            _print(args, {"keys": rows}, "\n".join(lines))
        elif args.keys_command in _STATE_ACTIONS:
            record = await store.set_state(args.key_id, _STATE_ACTIONS[args.keys_command])
            _print(args, {"id": record.id, "state": record.state}, f"{record.id} is now {record.state}")
        elif args.keys_command == "set-plan":
            plan = None if args.plan == "none" else args.plan
            if plan is not None and plan not in plans:
                print(f"trex keys set-plan: no [plans.{plan}] in {config.source}", file=sys.stderr)
                return EXIT_USAGE
            record = await store.set_plan(args.key_id, plan)
            _print(
                args,
                {"id": record.id, "plan": record.plan},
                f"{record.id} is now on plan {record.plan or 'none'}",
            )
        elif args.keys_command == "bind":
            await store.bind(args.key_id, args.provider, provider_key)
            _print(
                args,
                {"id": args.key_id, "provider": args.provider, "bound": True},
                f"bound {args.provider} key to {args.key_id} (encrypted)",
            )
        return EXIT_OK

    return asyncio.run(_with_kv(config.kv_url, act))


_USAGE_COLUMNS = (
    ("requests", "REQUESTS", "{:,}"),
    ("original_input_tokens", "ORIGINAL", "{:,}"),
    ("optimized_input_tokens", "OPTIMIZED", "{:,}"),
    ("billed_input_tokens", "BILLED IN", "{:,}"),
    ("billed_output_tokens", "BILLED OUT", "{:,}"),
    ("saved_tokens", "SAVED", "{:,}"),
    ("baseline_cost_usd", "BASELINE $", "{:.4f}"),
    ("actual_cost_usd", "ACTUAL $", "{:.4f}"),
    ("savings_usd", "SAVINGS $", "{:.4f}"),
)


def _usage_command(args: argparse.Namespace, config: Config) -> int:
    start, end = resolve_range(args.start, args.end, time.time())

    async def act(kv: KVNamespace) -> int:
        recorder = UsageRecorder(
            kv,
            PriceTable(),
            {},
            retention_seconds=86400,
            flush_seconds=3600,
        )
        result = await recorder.totals(args.key, start, end, args.group_by)
        if args.key is not None and not result["totals"]["requests"]:
            await KeyStore(kv, None).get(args.key)  # a mistyped id is an error, not an empty table
        label = args.group_by.upper() if args.group_by else ""
        rows = [(g[args.group_by], g) for g in result.get("groups", [])] + [("TOTAL", result["totals"])]
        width = max([len(label), *(len(str(name)) for name, _ in rows)]) + 2
        lines = [f"{label:<{width}}" + "".join(f"{title:>14}" for _, title, _ in _USAGE_COLUMNS)]
        for name, row in rows:
            lines.append(
                f"{name!s:<{width}}"
                + "".join(f"{fmt.format(row[field]):>14}" for field, _, fmt in _USAGE_COLUMNS)
            )
        stamp = "%Y-%m-%d %H:%M"
        when = f"{time.strftime(stamp, time.gmtime(start))} to {time.strftime(stamp, time.gmtime(end))} UTC"
        unpriced = result["totals"]["unpriced_requests"]
        note = (
            f"\n{unpriced} request(s) on models without a price are not in the $ columns." if unpriced else ""
        )
        doc = {"key_id": args.key, "from": start, "to": end, "group_by": args.group_by, **result}
        _print(args, doc, f"usage {when}\n" + "\n".join(lines) + note)
        return EXIT_OK

    return asyncio.run(_with_kv(config.kv_url, act))


def _logs_command(args: argparse.Namespace, config: Config) -> int:
    if not 1 <= args.limit <= 1000:
        print("trex logs: --limit must be from 1 to 1000", file=sys.stderr)
        return EXIT_USAGE

    async def act(kv: KVNamespace) -> int:
        recorder = UsageRecorder(kv, PriceTable(), {}, retention_seconds=86400, flush_seconds=3600)
        entries, _ = await recorder.logs(args.key_id, args.limit, None)
        if not entries:  # a mistyped id is an error; a deleted key's history stays readable
            await KeyStore(kv, None).get(args.key_id)
        lines = [
            f"{'TIME':<20} {'STATUS':>6} {'MS':>8} {'METHOD':<6} {'ROUTE':<24} {'MODEL':<24} "
            f"{'TOKENS':>15}  REQUEST"
        ]
        for e in entries:
            tokens = (
                f"{e.get('original_input_tokens', '')}→{e.get('optimized_input_tokens', '')}"
                if "model" in e
                else ""
            )
            lines.append(
                f"{time.strftime('%Y-%m-%d %H:%M:%S', time.gmtime(e['time'])):<20} {e['status']:>6} "
                f"{e['latency_ms']:>8.1f} {e['method']:<6} {e['route'][:24]:<24} "
                f"{str(e.get('model', ''))[:24]:<24} {tokens:>15}  {e['request_id']}"
            )
        _print(args, {"key_id": args.key_id, "data": entries}, "\n".join(lines))
        return EXIT_OK

    return asyncio.run(_with_kv(config.kv_url, act))


def _when(epoch: object) -> str:
    return time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(epoch)) if isinstance(epoch, int) else "never"


def _compress_command(args: argparse.Namespace, config: Config) -> int:
    try:
        raw = sys.stdin.buffer.read() if args.file == "-" else Path(args.file).read_bytes()
    except OSError as exc:
        print(f"trex compress: cannot read {args.file}: {exc.strerror}", file=sys.stderr)
        return EXIT_USAGE
    try:
        body = msgspec.json.decode(raw)
    except msgspec.DecodeError as exc:
        print(f"trex compress: {args.file}: not valid JSON: {exc}", file=sys.stderr)
        return EXIT_USAGE
    if not isinstance(body, dict):
        print(f"trex compress: {args.file}: the payload must be a JSON object", file=sys.stderr)
        return EXIT_USAGE
    fmt = detect_format(body)
    trex = body.pop("trex", None)
    if args.mode or args.protect_recent_turns is not None:
        trex = dict(trex) if isinstance(trex, dict) else {}
        opt = dict(trex.get("optimize") or {})
        if args.mode:
            opt["mode"] = args.mode
        if args.protect_recent_turns is not None:
            opt["protect_recent_turns"] = args.protect_recent_turns
        trex["optimize"] = opt
    try:
        validate_payload(fmt, body)
        options = resolve_options(
            trex,
            {},
            optimize_mode(config),
            int(config.number("PROTECT_RECENT_TURNS")),
            profile=args.compression_model or body.get("compression_model"),
        )
    except GatewayError as exc:
        print(f"trex compress: {exc.message}", file=sys.stderr)
        return EXIT_USAGE
    preload(options.encoding)  # loaded first: the time reported is the engine's, not the tokenizer's load
    report = optimize(fmt, body, options)
    body["compression"] = compression_object(report)
    if args.json:
        print(msgspec.json.encode(body).decode())
        return EXIT_OK
    compression = body.pop("compression")
    print(msgspec.json.encode(body).decode())
    print(
        f"format {fmt}, mode {report.mode}: {report.original_tokens} → {report.optimized_tokens} tokens "
        f"({report.compression_rate:.1%} saved) in {report.time_ms:.1f} ms; "
        f"strategies: {', '.join(compression['applied_strategies']) or 'none'}",
        file=sys.stderr,
    )
    for removal in report.removed:
        print(f"  {removal.where}: {removal.what}", file=sys.stderr)
    return EXIT_OK


def _config_command(args: argparse.Namespace, source: ConfigSource) -> int:
    config = source.load()
    doc: dict[str, object] = {
        "source": config.source,
        "env": config.env_name,
        "name": config.name,
        "ip": config.ip,
        "port": config.port,
        "persist_to": str(config.persist_to),
        "kv_url": redacted_url(config.kv_url),
        # Any URL-valued var (`*_BASE_URL`, `MEMORY_EMBEDDINGS_URL` …) may carry credentials too.
        "vars": {name: redacted_url(v) if "://" in v else v for name, v in config.vars.items()},
        "secrets": sorted(config.secrets),  # names only, never values
    }
    text = "\n".join(f"{k} = {v}" for k, v in doc.items())
    _print(args, doc, text)
    return EXIT_OK


def main(argv: Sequence[str] | None = None) -> int:
    """Entry point of the `trex` console script."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return EXIT_USAGE
    source = ConfigSource(path=args.config, overrides=_overrides(args))
    try:
        if args.command == "dev":
            if args.workers < 1:
                parser.error("--workers must be at least 1")
            return run(source, args.workers)
        if args.command == "kv":
            return _kv_command(args, source.load().kv_url)
        if args.command == "config":
            return _config_command(args, source)
        if args.command == "compress":
            return _compress_command(args, source.load())
        if args.command == "keys":
            return _keys_command(args, source.load())
        if args.command == "agents":
            return agents_command(args, source.load())
        if args.command == "usage":
            return _usage_command(args, source.load())
        if args.command == "logs":
            return _logs_command(args, source.load())
        if args.command == "credits":
            return credits_command(args, source.load())
    except ConfigError as exc:
        print(f"trex: config error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KVError as exc:
        print(f"trex: kv error: {exc}", file=sys.stderr)
        # A key, value, TTL or listing argument the KV refuses is bad usage (2); a KV that fails is not (1).
        return EXIT_FAIL if isinstance(exc, KVUnavailableError | KVClosedError) else EXIT_USAGE
    except GatewayError as exc:
        print(f"trex: error: {exc.message}", file=sys.stderr)
        return EXIT_USAGE if exc.status in (400, 422) else EXIT_FAIL  # an argument was refused
    parser.error(f"unknown command {args.command}")
    return EXIT_USAGE  # unreachable: parser.error exits
