"""A real in-memory KV that counts the reads reaching it, each answered after an optional round trip."""

from __future__ import annotations

import asyncio

from kv import MemoryKV


class CountingKV(MemoryKV):
    def __init__(self, round_trip: float = 0.0) -> None:
        super().__init__()
        self.reads = 0
        self.round_trip = round_trip

    async def get(self, key: str) -> bytes | None:
        self.reads += 1
        if self.round_trip:
            await asyncio.sleep(self.round_trip)
        return await super().get(key)
