"""The thread that serves the in-process worker and the fakes (tests/fakes/threaded.py): a shutdown that does
not end in time fails the test with where it waits, not with a bare TimeoutError that says nothing."""

from __future__ import annotations

import asyncio

import pytest
from aiohttp import web

from tests.fakes.threaded import ThreadedServer


def test_a_shutdown_that_hangs_says_what_it_waits_for() -> None:
    released = asyncio.Event()

    async def waits_for_a_store_that_never_answers(app: web.Application) -> None:
        await released.wait()

    async def factory() -> web.Application:
        app = web.Application()
        app.on_cleanup.append(waits_for_a_store_that_never_answers)
        return app

    server = ThreadedServer(factory).start()
    try:
        with pytest.raises(TimeoutError) as stuck:
            server.stop(timeout=0.5)
        assert f"port {server.port} did not shut down within 0.5 s" in str(stuck.value)
        assert "waits_for_a_store_that_never_answers" in str(stuck.value)
    finally:
        server.call(_set(released))
        server.stop()


async def _set(event: asyncio.Event) -> None:
    event.set()
