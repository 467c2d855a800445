"""`trex agents …`: signed agents for the payload routes, managed directly on the configured KV."""

from __future__ import annotations

import argparse
import asyncio
import time
from typing import Any

import msgspec

from kv import open_kv

from .agents import AgentRecord, AgentStore
from .config import Config, ConfigError
from .vault import MASTER_KEY_NAME, Vault, VaultError, ensure_master_key

_STATE_ACTIONS = {"suspend": "suspended", "activate": "active", "revoke": "revoked"}


def add_agents_parser(sub: Any, state: argparse.ArgumentParser) -> None:
    """Add `agents create|list|suspend|activate|revoke` to the `trex` subcommands."""
    agents = sub.add_parser("agents", help="manage signed agents (HMAC mode of the payload routes)")
    agents_sub = agents.add_subparsers(dest="agents_command", metavar="ACTION", required=True)
    create = agents_sub.add_parser("create", parents=[state], help="create an agent (secret printed once)")
    create.add_argument("--name", required=True)
    agents_sub.add_parser("list", parents=[state], help="list agents")
    for action, verb in (("suspend", "suspend"), ("activate", "activate"), ("revoke", "revoke (final)")):
        change = agents_sub.add_parser(action, parents=[state], help=f"{verb} an agent")
        change.add_argument("agent_id")


def _row(record: AgentRecord) -> dict[str, Any]:
    return {
        "agent_id": record.id,
        "name": record.name,
        "state": record.state,
        "created": record.created,
        "prefix": record.prefix,
    }


def agents_command(args: argparse.Namespace, config: Config) -> int:
    """Run one `trex agents` action; returns the exit code (errors raise, as in the other commands)."""
    vault = None
    if args.agents_command == "create":
        try:
            vault = Vault(ensure_master_key(config))
        except VaultError as exc:
            raise ConfigError(str(config.dev_vars_path), MASTER_KEY_NAME, str(exc)) from None

    async def act() -> tuple[Any, str]:
        kv = await open_kv(config.kv_url)
        try:
            store = AgentStore(kv, vault)
            if args.agents_command == "create":
                record, secret = await store.create(args.name)
                doc = {**_row(record), "secret": secret}
                text = (
                    f"agent_id: {record.id}\nsecret:   {secret}\n"
                    "(store the secret now: it is not shown again)"
                )
                return doc, text
            if args.agents_command == "list":
                rows = [_row(r) for r in await store.list_agents()]
                lines = [f"{'AGENT ID':<24} {'NAME':<20} {'STATE':<10} {'CREATED':<20} SECRET PREFIX"]
                for row in rows:
                    created = time.strftime("%Y-%m-%d %H:%M:%S", time.gmtime(row["created"]))
                    lines.append(
                        f"{row['agent_id']:<24} {row['name']:<20} {row['state']:<10} {created:<20} "
                        f"{row['prefix']}…"
                    )
                return {"agents": rows}, "\n".join(lines)
            record = await store.set_state(args.agent_id, _STATE_ACTIONS[args.agents_command])
            return {"agent_id": record.id, "state": record.state}, f"{record.id} is now {record.state}"
        finally:
            await kv.close()

    doc, text = asyncio.run(act())
    print(msgspec.json.encode(doc).decode() if args.json else text)
    return 0
