"""ExecutionContext.wait_until: never delays the response; failures isolated; bounded; drained at shutdown."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Awaitable, Callable
from pathlib import Path

import aiohttp
import pytest
from aiohttp import web

from kv import open_kv
from tests.harness import InProcessWorker
from worker.appkeys import CTX, ENV, TASKS
from worker.context import TaskRegistry, shared
from worker.jsonio import json_response


class Probe:
    """Test routes closed over per-test events (no state set on a running app)."""

    def __init__(self) -> None:
        self.gate = asyncio.Event()  # binds to the worker's loop on first use
        self.slow_started = threading.Event()

    def routes(self) -> list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]:
        return [
            ("GET", "/_test/bg", self.background),
            ("GET", "/_test/release", self.release),
            ("GET", "/_test/mixed", self.mixed),
            ("GET", "/_test/slow-write", self.slow_write),
            ("GET", "/_test/slow", self.slow_response),
        ]

    async def background(self, request: web.Request) -> web.StreamResponse:
        """Registers work that waits for /_test/release, then writes to KV."""
        kv = request.app[ENV].kv

        async def later() -> None:
            await self.gate.wait()
            await kv.put("bg-done", b"1")

        request[CTX].wait_until(later())
        return json_response({"pending": len(request.app[TASKS])})

    async def release(self, request: web.Request) -> web.StreamResponse:
        self.gate.set()
        return json_response({})

    async def mixed(self, request: web.Request) -> web.StreamResponse:
        kv = request.app[ENV].kv

        async def fails() -> None:
            raise ValueError("background failure")

        async def writes(key: str) -> None:
            await asyncio.sleep(0.05)
            await kv.put(key, b"ok")

        ctx = request[CTX]
        ctx.wait_until(writes("a"))
        ctx.wait_until(fails())
        ctx.wait_until(writes("b"))
        return json_response({})

    async def slow_write(self, request: web.Request) -> web.StreamResponse:
        kv = request.app[ENV].kv

        async def later() -> None:
            await asyncio.sleep(0.3)
            await kv.put("drained", b"yes")

        async def forever() -> None:
            await asyncio.Event().wait()

        request[CTX].wait_until(later())
        request[CTX].wait_until(forever())
        return json_response({})

    async def slow_response(self, request: web.Request) -> web.StreamResponse:
        self.slow_started.set()
        await asyncio.sleep(0.5)
        return json_response({"finished": True})


async def _kv_get(w: InProcessWorker, key: str) -> bytes | None:
    return w.call(w.app[ENV].kv.get(key))  # type: ignore[no-any-return]


async def test_response_does_not_wait_for_background_work(
    make_worker: Callable[..., InProcessWorker],
) -> None:
    probe = Probe()
    w = make_worker(extra_routes=probe.routes())
    async with aiohttp.ClientSession() as s:
        async with s.get(w.url + "/_test/bg") as r:
            # The response is complete while the task is provably still blocked on the gate.
            assert r.status == 200 and (await r.json())["pending"] == 1
        assert await _kv_get(w, "bg-done") is None
        assert len(w.app[TASKS]) == 1
        async with s.get(w.url + "/_test/release") as r:
            assert r.status == 200
    for _ in range(100):
        if await _kv_get(w, "bg-done") == b"1":
            break
        await asyncio.sleep(0.02)
    assert await _kv_get(w, "bg-done") == b"1"
    assert len(w.app[TASKS]) == 0


async def test_one_failure_does_not_cancel_the_others(make_worker: Callable[..., InProcessWorker]) -> None:
    w = make_worker(extra_routes=Probe().routes())
    async with aiohttp.ClientSession() as s, s.get(w.url + "/_test/mixed") as r:
        assert r.status == 200
    for _ in range(100):
        if await _kv_get(w, "a") and await _kv_get(w, "b"):
            break
        await asyncio.sleep(0.02)
    assert await _kv_get(w, "a") == b"ok" and await _kv_get(w, "b") == b"ok"
    assert w.app[TASKS].failed == 1 and w.app[TASKS].completed == 2


async def test_task_timeout_bounds_each_task() -> None:
    registry = TaskRegistry(task_timeout=0.1)
    registry.spawn(asyncio.Event().wait())
    done = asyncio.Event()

    async def quick() -> None:
        done.set()

    registry.spawn(quick())
    assert await registry.drain(grace=5) == 0  # the stuck one timed out on its own, nothing left to cancel
    assert done.is_set() and registry.failed == 1 and registry.completed == 1


async def test_drain_waits_for_tasks_spawned_by_tasks() -> None:
    registry = TaskRegistry(task_timeout=5)
    seen: list[str] = []

    async def child() -> None:
        await asyncio.sleep(0.05)
        seen.append("child")

    async def parent() -> None:
        await asyncio.sleep(0.05)
        registry.spawn(child())
        seen.append("parent")

    registry.spawn(parent())
    assert await registry.drain(grace=5) == 0
    assert seen == ["parent", "child"]


def test_shutdown_drains_tasks_and_cancels_stragglers(
    make_worker: Callable[..., InProcessWorker], tmp_path: Path
) -> None:
    db = tmp_path / "drain.sqlite3"
    w = make_worker(
        extra_routes=Probe().routes(), local={"kv_url": f"sqlite:///{db}", "shutdown_grace_seconds": 1}
    )

    async def hit() -> int:
        async with aiohttp.ClientSession() as s, s.get(w.url + "/_test/slow-write") as r:
            return r.status

    assert asyncio.run(hit()) == 200
    registry = w.app[TASKS]
    w.stop()  # graceful: the 0.3 s task completes, the endless one is cancelled after the 1 s grace
    assert registry.completed == 1 and registry.failed == 1

    async def read() -> bytes | None:
        kv = await open_kv(f"sqlite:///{db}")
        try:
            return await kv.get("drained")
        finally:
            await kv.close()

    assert asyncio.run(read()) == b"yes"


def test_in_flight_request_finishes_during_shutdown(make_worker: Callable[..., InProcessWorker]) -> None:
    probe = Probe()
    w = make_worker(extra_routes=probe.routes())
    result: dict[str, object] = {}

    def client() -> None:
        async def go() -> None:
            async with aiohttp.ClientSession() as s, s.get(w.url + "/_test/slow") as r:
                result["status"] = r.status
                result["body"] = await r.json()

        asyncio.run(go())

    t = threading.Thread(target=client)
    t.start()
    assert probe.slow_started.wait(10)  # the request is in flight
    w.stop()
    t.join(10)
    assert result == {"status": 200, "body": {"finished": True}}


async def test_drain_returns_cancelled_count() -> None:
    grace = 0.2
    registry = TaskRegistry(task_timeout=60)
    registry.spawn(asyncio.Event().wait())
    registry.spawn(asyncio.Event().wait())
    assert await registry.drain(grace) == 2
    assert len(registry) == 0


async def test_drain_does_not_wait_without_end_for_a_task_that_holds_out_against_its_cancellation() -> None:
    release = asyncio.Event()

    async def stubborn() -> None:
        try:
            await asyncio.Event().wait()
        except asyncio.CancelledError:
            await release.wait()  # goes on regardless (a shutdown used to wait for it however long it took)

    registry = TaskRegistry(task_timeout=60)
    task = registry.spawn(stubborn())
    await asyncio.sleep(0)
    async with asyncio.timeout(10):
        assert await registry.drain(0.1) == 1
    release.set()
    await task


async def test_shared_gives_every_waiter_the_outcome_and_a_waiter_leaving_cancels_nothing() -> None:
    loop = asyncio.get_running_loop()
    read: asyncio.Future[int] = loop.create_future()
    leaver = asyncio.ensure_future(shared(read))
    stayer = asyncio.ensure_future(shared(read))
    await asyncio.sleep(0)
    leaver.cancel()
    await asyncio.sleep(0)
    assert not read.cancelled()
    read.set_result(7)
    assert await stayer == 7
    assert await shared(read) == 7  # done already: no waiting
    assert leaver.cancelled()


async def test_shared_passes_on_a_failure_and_a_cancellation() -> None:
    loop = asyncio.get_running_loop()
    failing: asyncio.Future[int] = loop.create_future()
    waiter = asyncio.ensure_future(shared(failing))
    await asyncio.sleep(0)
    failing.set_exception(KeyError("gone"))
    with pytest.raises(KeyError):
        await waiter
    cancelled: asyncio.Future[int] = loop.create_future()
    waiter = asyncio.ensure_future(shared(cancelled))
    await asyncio.sleep(0)
    cancelled.cancel()
    with pytest.raises(asyncio.CancelledError):
        await waiter
