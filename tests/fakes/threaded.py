"""Run an aiohttp application on 127.0.0.1:<free port> in a background thread with its own event loop.

Fake upstreams and the in-process worker both run this way, so a test may talk to them with blocking
clients (the official sync SDKs) as well as async ones without deadlocking its own loop.
"""

from __future__ import annotations

import asyncio
import sys
import threading
import traceback
from collections.abc import Awaitable, Callable
from concurrent.futures import Future
from typing import Any, TypeVar

from aiohttp import web

T = TypeVar("T")


class ThreadedServer:
    """An aiohttp app served from a daemon thread; `url` is ready once `start()` returns."""

    def __init__(
        self,
        app_factory: Callable[[], Awaitable[web.Application]],
        shutdown_timeout: float = 5.0,
        runner: Callable[[web.Application, float], web.AppRunner] | None = None,
    ):
        self._factory = app_factory
        self._shutdown_timeout = shutdown_timeout
        self._make_runner = runner
        self._loop = asyncio.new_event_loop()
        self._thread = threading.Thread(target=self._loop.run_forever, daemon=True)
        self._runner: web.AppRunner | None = None
        self.app: web.Application | None = None
        self.port = 0

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def call(self, coro: Awaitable[T], timeout: float = 30) -> T:
        """Run a coroutine on the server's loop and wait for its result."""
        fut: Future[T] = asyncio.run_coroutine_threadsafe(coro, self._loop)  # type: ignore[arg-type]
        return fut.result(timeout)

    def start(self) -> ThreadedServer:
        self._thread.start()
        self.call(self._start())
        return self

    async def _start(self) -> None:
        self.app = await self._factory()
        if self._make_runner is not None:
            self._runner = self._make_runner(self.app, self._shutdown_timeout)
        else:  # a fake that sees a client hang up mid-handler, as the worker does
            self._runner = web.AppRunner(
                self.app, access_log=None, shutdown_timeout=self._shutdown_timeout, handler_cancellation=True
            )
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        server: Any = site._server
        self.port = server.sockets[0].getsockname()[1]

    def stop(self, timeout: float = 30) -> None:
        """Shut down gracefully (like the real server) and end the thread; safe to call twice. A shutdown that
        takes over `timeout` seconds is a TimeoutError saying where the server's loop and its tasks wait."""
        if self._loop.is_closed():
            return
        if self._runner is not None:
            try:
                self.call(self._runner.cleanup(), timeout)
            except TimeoutError:
                raise TimeoutError(
                    f"the server on port {self.port} did not shut down within {timeout:g} s:\n{self.waits()}"
                ) from None
            self._runner = None
        self._loop.call_soon_threadsafe(self._loop.stop)
        self._thread.join(10)
        self._loop.close()

    def waits(self) -> str:
        """Where the loop's thread is, and where each of its tasks waits, down the chain of what it awaits
        (read from this thread: a report, not exact; what a stuck shutdown is stuck on)."""
        lines = ["the loop's thread:\n"]
        frame = sys._current_frames().get(self._thread.ident or -1)
        lines += traceback.format_stack(frame)[-3:] if frame is not None else ["  (not running)\n"]
        for task in asyncio.all_tasks(self._loop):
            lines.append(f"{task.get_name()}:\n")
            awaited: Any = task.get_coro()
            while awaited is not None:
                frame = getattr(awaited, "cr_frame", None) or getattr(awaited, "gi_frame", None)
                if frame is None:  # a future, or a coroutine done
                    lines.append(f"  awaiting {awaited!r}\n")
                    break
                code = frame.f_code
                lines.append(f'  File "{code.co_filename}", line {frame.f_lineno}, in {code.co_name}\n')
                awaited = getattr(awaited, "cr_await", None) or getattr(awaited, "gi_yieldfrom", None)
        return "".join(lines)
