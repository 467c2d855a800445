"""`trex credits add|show`: Compute Credits balances, changed directly on the configured KV."""

from __future__ import annotations

import argparse
import asyncio
import sys
import uuid
from typing import Any

import msgspec

from kv import KVUnavailableError, open_kv

from .auth import KeyStore
from .config import Config
from .grants import grant_credits_retrying
from .quotas import Quotas


def add_credits_parser(sub: Any, state: argparse.ArgumentParser) -> None:
    """Add `credits add|show` to the `trex` subcommands."""
    credits = sub.add_parser("credits", help="Compute Credits: a USD balance per proxy key")
    credits_sub = credits.add_subparsers(dest="credits_command", metavar="ACTION", required=True)
    c_add = credits_sub.add_parser("add", parents=[state], help="add credits (negative to remove)")
    c_add.add_argument("key_id")
    c_add.add_argument("amount", type=float, help="USD")
    c_add.add_argument(
        "--idempotency-key",
        metavar="KEY",
        help="apply at most once per KEY within a day, however often run (default: a fresh one per run, "
        "reused on the run's own retries)",
    )
    c_show = credits_sub.add_parser("show", parents=[state], help="a key's balance")
    c_show.add_argument("key_id")


def credits_command(args: argparse.Namespace, config: Config) -> int:
    """Run one `trex credits` action; returns the exit code (errors raise, as in the other commands)."""

    async def act() -> float:
        kv = await open_kv(config.kv_url)
        try:
            await KeyStore(kv, None).get(args.key_id)  # an unknown key is an error, not a new balance
            if args.credits_command != "add":
                return await Quotas(kv, {}).balance(args.key_id)
            # Retried on a KV failure with the same key: a grant whose reply was lost is not applied twice.
            once = args.idempotency_key or f"cli-{uuid.uuid4().hex}"
            try:
                return (await grant_credits_retrying(kv, args.key_id, args.amount, once)).balance_usd
            except KVUnavailableError:
                print(f"trex: to retry without granting twice: --idempotency-key {once}", file=sys.stderr)
                raise
        finally:
            await kv.close()

    balance = asyncio.run(act())
    doc = {"key_id": args.key_id, "balance_usd": balance}
    print(msgspec.json.encode(doc).decode() if args.json else f"{args.key_id}: ${balance:,.6f}")
    return 0
