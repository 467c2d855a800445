"""Charges applied to Redis when its reply never comes: the increments may have been applied, so they are
not applied again (a retry charged Compute Credits and token quotas twice). Uses the machine's Redis through
a proxy that can hold back Redis's replies, as a stalled or partitioned Redis does."""

from __future__ import annotations

import asyncio
import contextlib
import uuid
from collections.abc import AsyncIterator

import pytest

from kv import KVIndeterminateError, KVUnavailableError
from kv.redis import RedisKV
from worker.accounting.events import UsageRecorder
from worker.accounting.pricing import PriceTable
from worker.quotas import Quotas

REDIS = ("127.0.0.1", 6379)


class _Proxy:
    """A TCP proxy to Redis whose replies can be held back (`stalled`): commands still reach Redis."""

    def __init__(self) -> None:
        self.stalled = False
        self.server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    async def start(self) -> int:
        self.server = await asyncio.start_server(self._accept, "127.0.0.1", 0)
        return int(self.server.sockets[0].getsockname()[1])

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = asyncio.get_running_loop().create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        up_reader, up_writer = await asyncio.open_connection(*REDIS)
        self._writers += [writer, up_writer]

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter, replies: bool) -> None:
            with contextlib.suppress(ConnectionError):
                while data := await src.read(65536):
                    if not (replies and self.stalled):
                        dst.write(data)
                        await dst.drain()

        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(pipe(reader, up_writer, False), pipe(up_reader, writer, True))

    async def stop(self) -> None:
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        if self.server is not None:
            self.server.close()
            await self.server.wait_closed()


@pytest.fixture
async def proxied() -> AsyncIterator[tuple[_Proxy, RedisKV, RedisKV]]:
    namespace = f"test-indeterminate-{uuid.uuid4().hex[:8]}"
    proxy = _Proxy()
    port = await proxy.start()
    through = RedisKV(f"redis://127.0.0.1:{port}/13", namespace=namespace, socket_timeout=0.5)
    direct = RedisKV("redis://127.0.0.1:6379/13", namespace=namespace)
    yield proxy, through, direct
    await through.close()
    await direct.close()
    await proxy.stop()


async def test_a_reply_that_never_comes_is_indeterminate_and_a_refused_connection_is_not(
    proxied: tuple[_Proxy, RedisKV, RedisKV],
) -> None:
    proxy, through, direct = proxied
    assert await through.incr("c", 1) == 1
    proxy.stalled = True
    with pytest.raises(KVIndeterminateError):
        await through.incr("c", 5)
    assert await direct.get("c") == b"6"  # it was applied all the same
    refused = RedisKV("redis://127.0.0.1:1/13", connect_timeout=0.5)
    with pytest.raises(KVUnavailableError) as err:
        await refused.incr("c", 1)
    assert not isinstance(err.value, KVIndeterminateError)  # never sent: safe to retry
    await refused.close()


async def test_charges_whose_reply_never_came_are_not_applied_twice(
    proxied: tuple[_Proxy, RedisKV, RedisKV],
) -> None:
    proxy, through, direct = proxied
    recorder = UsageRecorder(
        direct, PriceTable(), {}, retention_seconds=86400, flush_seconds=3600, quotas=Quotas(through, {})
    )
    counter = "quota/key_x/d20261206/tokens"
    assert await through.incr(counter, 0) == 0  # the connection is open before Redis stalls
    proxy.stalled = True
    recorder._charges = [(counter, 1200, 86400)]
    await recorder._apply_charges()  # Redis applied it; its reply never came
    proxy.stalled = False
    await recorder._apply_charges()  # the next pass
    assert await direct.get(counter) == b"1200"  # once, not twice
