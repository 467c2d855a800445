"""Workers-style bindings (`Env`) and `ExecutionContext.wait_until`.

`wait_until(coro)` runs work after the response without delaying it. Tasks are held in a `TaskRegistry`
(never a bare `create_task` nobody holds), each is bounded by a timeout, one failing does not cancel the
others, and `drain()` waits for the rest at shutdown within a grace period.
"""

from __future__ import annotations

import asyncio
import functools
import logging
from collections.abc import Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, TypeVar

from kv import KVNamespace, KVUnavailableError

from .config import Config

log = logging.getLogger("trex.wait_until")

T = TypeVar("T")


@dataclass(frozen=True, slots=True)
class Env:
    """What a handler can reach: the KV binding, `[vars]` and secrets, as `env` is in a Worker."""

    kv: KVNamespace
    vars: Mapping[str, str]
    secrets: Mapping[str, str]
    config: Config


_CANCELLED_WAIT_S = 1.0
"""How long a drain waits for the tasks it cancelled to stop."""


class TaskRegistry:
    """Holds every `wait_until` task until it finishes, so none is lost or garbage-collected mid-flight."""

    def __init__(self, task_timeout: float) -> None:
        self._tasks: set[asyncio.Task[None]] = set()
        self._task_timeout = task_timeout
        self.completed = 0
        self.failed = 0

    def __len__(self) -> int:
        return len(self._tasks)

    def spawn(self, coro: Coroutine[Any, Any, Any], name: str | None = None) -> asyncio.Task[None]:
        """Schedule `coro` now; it is bounded by the task timeout and its failure is logged, not raised."""
        task = asyncio.get_running_loop().create_task(self._run(coro), name=name)
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)
        return task

    async def _run(self, coro: Coroutine[Any, Any, Any]) -> None:
        try:
            async with asyncio.timeout(self._task_timeout):
                await coro
        except TimeoutError:
            self.failed += 1
            log.error("wait_until task timed out after %.1fs", self._task_timeout)
        except asyncio.CancelledError:
            self.failed += 1
            raise
        except KVUnavailableError as exc:
            # The store is down (or stalled): an outage, not a fault of the task; no traceback for each one.
            self.failed += 1
            log.warning("wait_until task not done, the KV is unavailable: %s", exc)
        except Exception:
            self.failed += 1
            log.exception("wait_until task failed")
        else:
            self.completed += 1

    async def drain(self, grace: float) -> int:
        """Wait up to `grace` seconds for pending tasks (including ones they spawn), cancel the rest.

        Returns how many were cancelled.
        """
        loop = asyncio.get_running_loop()
        deadline = loop.time() + grace
        while self._tasks:
            remaining = deadline - loop.time()
            if remaining <= 0:
                break
            await asyncio.wait(set(self._tasks), timeout=remaining)
        leftover = set(self._tasks)
        for task in leftover:
            task.cancel()
        if leftover:
            # A task that holds out against its cancellation (it catches it, or waits on a thread) is left
            # behind after a moment: the rest of the shutdown must not wait for it without end.
            _, stubborn = await asyncio.wait(leftover, timeout=_CANCELLED_WAIT_S)
            log.warning("shutdown: cancelled %d wait_until task(s) after %.1fs grace", len(leftover), grace)
            if stubborn:
                log.warning(
                    "shutdown: %d cancelled wait_until task(s) did not stop: left behind", len(stubborn)
                )
        return len(leftover)


class ExecutionContext:
    """The per-request `ctx` of a Worker: `wait_until` hands work to the registry."""

    __slots__ = ("_registry",)

    def __init__(self, registry: TaskRegistry) -> None:
        self._registry = registry

    def wait_until(self, coro: Coroutine[Any, Any, Any]) -> None:
        """Run `coro` after (or alongside) the response without delaying it."""
        self._registry.spawn(coro)


async def shared(future: asyncio.Future[T]) -> T:
    """The outcome of `future`, which other requests wait for too: as with `asyncio.shield`, a waiter that is
    cancelled (its client went away) does not cancel it for the others. Cheaper than `shield` (no
    `ensure_future`, one callback, no outer future's bookkeeping), which counts when a cache refresh has every
    request in flight waiting for the same read."""
    if future.done():
        return future.result()
    waiter: asyncio.Future[T] = future.get_loop().create_future()
    future.add_done_callback(functools.partial(_pass_on, waiter))
    return await waiter


def _pass_on(waiter: asyncio.Future[T], future: asyncio.Future[T]) -> None:
    if waiter.done():  # cancelled meanwhile
        return
    if future.cancelled():
        waiter.cancel()
    elif (exc := future.exception()) is not None:
        waiter.set_exception(exc)
    else:
        waiter.set_result(future.result())
