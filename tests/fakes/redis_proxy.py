"""A TCP proxy to the machine's Redis that can cut one connection the way a network partition does.

`cut(pattern, lose=...)` arms it: the first command whose bytes contain `pattern` is either lost on the way
(`lose="command"`: Redis never gets it, or anything after it on that connection) or applied with its reply
lost (`lose="reply"`: Redis gets it, the client never hears back). Either way the client times out not
knowing whether the command was applied, which is what `KVIndeterminateError` means; the connections opened
after the cut pass through untouched. `stalled = True` holds back every reply on every connection.
`refuse()` closes every connection and refuses new ones (Redis is down: nothing is sent) until `accept()`;
`cut(..., then_refuse=True)` does that at the cut (Redis went away with that command). `fail(pattern, error)`
answers the next command containing `pattern` with a Redis error reply, as Redis does when it refuses a
command (`OOM command not allowed …`, `READONLY …`, `MISCONF …`), without forwarding it.

It runs on a thread of its own with its own event loop, so sync tests (an in-process worker) and async tests
can both use it.
"""

from __future__ import annotations

import asyncio
import contextlib
import threading
from typing import Literal

from tests import redis_target

REDIS = (redis_target.HOST, redis_target.PORT)


class _Cut:
    __slots__ = ("error", "lose", "pattern", "then_refuse")

    def __init__(
        self,
        pattern: bytes,
        lose: Literal["command", "reply"] | None,
        then_refuse: bool = False,
        error: bytes = b"",
    ) -> None:
        self.pattern = pattern
        self.lose = lose
        self.then_refuse = then_refuse
        self.error = error


class RedisProxy:
    """Forwards 127.0.0.1:`port` to Redis; see the module docstring."""

    def __init__(self, target: tuple[str, int] = REDIS) -> None:
        self.target = target
        """Where Redis listens."""
        self.stalled = False
        self.port = 0
        self.cuts = 0
        """How many connections were cut so far."""
        self._armed: _Cut | None = None
        self._lock = threading.Lock()
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._server: asyncio.Server | None = None
        self._writers: list[asyncio.StreamWriter] = []
        self._tasks: set[asyncio.Task[None]] = set()

    def url(self, db: int) -> str:
        """A Redis URL through the proxy, with a short reply timeout (a cut is noticed in half a second)."""
        return f"redis://127.0.0.1:{self.port}/{db}?socket_timeout=0.5"

    def start(self) -> RedisProxy:
        self._thread.start()
        asyncio.run_coroutine_threadsafe(self._listen(0), self._loop).result(10)
        return self

    def cut(self, pattern: bytes, lose: Literal["command", "reply"], *, then_refuse: bool = False) -> None:
        """Cut the connection that next sends a command containing `pattern` (once); `then_refuse`: and from
        then on refuse every connection, as `refuse()`, until `accept()`."""
        with self._lock:
            self._armed = _Cut(pattern, lose, then_refuse)

    def fail(self, pattern: bytes, error: str) -> None:
        """Answer the next command containing `pattern` with the Redis error reply `error` (once)."""
        with self._lock:
            self._armed = _Cut(pattern, None, error=b"-" + error.encode() + b"\r\n")

    def refuse(self) -> None:
        """Close every connection and stop listening: connecting is refused until `accept()`."""
        asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(10)

    def accept(self) -> None:
        """Listen again, on the same port."""
        asyncio.run_coroutine_threadsafe(self._listen(self.port), self._loop).result(10)

    def _take(self, data: bytes) -> _Cut | None:
        with self._lock:
            armed = self._armed
            if armed is None or armed.pattern not in data:
                return None
            self._armed = None
            self.cuts += 1
            return armed

    async def _listen(self, port: int) -> None:
        self._server = await asyncio.start_server(self._accept, "127.0.0.1", port)
        self.port = int(self._server.sockets[0].getsockname()[1])

    def _accept(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        task = self._loop.create_task(self._serve(reader, writer))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def _serve(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        self._writers.append(writer)  # closed by `_close_all` even when this task is cancelled right here
        try:
            up_reader, up_writer = await asyncio.open_connection(*self.target)
        except OSError:  # Redis cannot be reached: hang up on the client
            writer.close()
            return
        self._writers.append(up_writer)
        cut: list[_Cut] = []  # this connection's cut, once it happened

        async def commands() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await reader.read(65536):
                    if not cut and (taken := self._take(data)) is not None:
                        if taken.error:  # refused by "Redis": answered, the connection stays usable
                            writer.write(taken.error)
                            await writer.drain()
                            continue
                        cut.append(taken)
                        if taken.then_refuse:
                            self._loop.create_task(self._close_all())
                    if cut and cut[0].lose == "command":
                        continue  # lost on the way, and everything after it
                    up_writer.write(data)
                    await up_writer.drain()
            up_writer.close()  # the client hung up (a timed-out command drops its connection)

        async def replies() -> None:
            with contextlib.suppress(ConnectionError):
                while data := await up_reader.read(65536):
                    if not (self.stalled or cut):
                        writer.write(data)
                        await writer.drain()
            writer.close()

        with contextlib.suppress(asyncio.CancelledError):
            await asyncio.gather(commands(), replies())

    async def _close_all(self) -> None:
        server, self._server = self._server, None
        if server is not None:
            server.close()  # stops listening at once
        for task in list(self._tasks):
            task.cancel()
        await asyncio.gather(*self._tasks, return_exceptions=True)
        for writer in self._writers:
            writer.close()
            with contextlib.suppress(ConnectionError):
                await writer.wait_closed()
        self._writers.clear()
        if server is not None:
            await server.wait_closed()

    def stop(self) -> None:
        if self._loop.is_closed():
            return
        asyncio.run_coroutine_threadsafe(self._close_all(), self._loop).result(10)
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()
