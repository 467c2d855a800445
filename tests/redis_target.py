"""Where the Redis tests' server listens: 127.0.0.1:6379 (the machine's Redis), or the port in
`TREX_TEST_REDIS_PORT`, so that checkouts tested at the same time on one machine can each start their own
`redis-server` and not flush each other's databases."""

from __future__ import annotations

import os

HOST = "127.0.0.1"
PORT = int(os.environ.get("TREX_TEST_REDIS_PORT", "6379"))


def url(db: int) -> str:
    """The URL of database `db` on the tests' Redis."""
    return f"redis://{HOST}:{PORT}/{db}"
