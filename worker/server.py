"""Serving like `wrangler dev`: one process, or N processes sharing one port through SO_REUSEPORT.

Shutdown on SIGINT/SIGTERM is graceful: stop accepting, let in-flight requests finish, then drain the
`wait_until` tasks, all bounded by the configured grace period.
"""

from __future__ import annotations

import asyncio
import contextlib
import gc
import logging
import os
import signal
import socket
import sys
from collections.abc import Callable
from typing import TYPE_CHECKING, Any

import uvloop
from aiohttp import web

from kv import KVError

from . import entry, heap, tokens
from .app import create_app
from .appkeys import CONFIG
from .config import Config, ConfigError, ConfigSource, redacted_url
from .connection import GatewayRunner, ReadTimeouts
from .logs import serving_logs, setup_logging
from .vault import MASTER_KEY_NAME, ensure_master_key

if TYPE_CHECKING:
    import multiprocessing.connection

log = logging.getLogger("trex.server")


class ServeError(Exception):
    """The server could not start (port taken, KV unreachable …)."""


async def serve(
    config: Config, *, reuse_port: bool = False, on_ready: Callable[[str], None] | None = None
) -> None:
    """Serve until SIGINT or SIGTERM, then shut down gracefully."""
    # The tokenizer every proxied request counts with: loaded before the first request, not during it.
    try:
        await asyncio.to_thread(tokens.preload)
    except tokens.TokenizerError as exc:
        raise ServeError(f"cannot load the tokenizer: {exc}") from exc
    try:
        app = await create_app(config)
    except KVError as exc:
        raise ServeError(f"cannot open KV {redacted_url(config.kv_url)}: {exc}") from exc
    runner = make_runner(app, config.shutdown_grace_seconds)
    await runner.setup()
    site = web.TCPSite(runner, config.ip, config.port, reuse_port=reuse_port, backlog=2048)
    try:
        await site.start()
    except OSError as exc:
        await runner.cleanup()
        raise ServeError(f"cannot listen on {config.ip}:{config.port}: {exc.strerror}") from exc

    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGINT, signal.SIGTERM):
        loop.add_signal_handler(sig, stop.set)
    # Everything loaded so far lives for the whole process: keep it out of the cyclic GC's scans, which
    # otherwise walk every imported module's objects on each full collection (a latency spike under load).
    gc.collect()
    gc.freeze()
    # Importing the modules and building the app freed about 3 MiB in holes of malloc's heap (the import
    # system's buffers, start-up garbage); glibc keeps those pages resident unless asked.
    heap.give_back()
    # A request allocates a few hundred containers that nearly all die with it; at the default threshold
    # (700) the young generation is scanned every few requests, mostly finding live in-flight objects and
    # promoting them. Scanning every 20,000 allocations instead lets them die first: about 3% of the CPU
    # a proxied request costs (callgrind), and the same cyclic garbage is still collected.
    gc.set_threshold(20_000, 50, 100)
    port = _bound_port(site, config.port)
    if on_ready is not None:
        on_ready(f"http://{config.ip}:{port}")
    await stop.wait()
    log.info("shutting down: no new connections, finishing in-flight requests")
    await runner.cleanup()
    log.info("stopped")


def make_runner(app: web.Application, shutdown_timeout: float) -> web.AppRunner:
    """The runner the worker is served by (tests serve it the same way).

    `handler_cancellation`: a client that hangs up cancels its handler at once, so a request waiting on a slow
    upstream stops that call instead of paying for an answer nobody reads (aiohttp's default lets it run);
    handlers that change state run to their end anyway (`app.runs_to_completion`). Connections are
    `connection.GatewayProtocol`: requests aiohttp cannot parse are refused in JSON, a request head must
    arrive within `[local] header_timeout_seconds` and a body may not stall for `body_idle_timeout_seconds`.
    """
    config = app[CONFIG]
    return GatewayRunner(
        app,
        timeouts=ReadTimeouts(
            header=config.header_timeout_seconds, body_idle=config.body_idle_timeout_seconds
        ),
        access_log=None,
        handle_signals=False,
        # aiohttp waits this long for in-flight handlers to finish, then asks them to stop (which a handler
        # waiting on its upstream does not notice) and waits as long again before cancelling them: a quarter
        # each, so in-flight requests are cut off at half the grace period and wait_until tasks drain in the
        # other half.
        shutdown_timeout=shutdown_timeout / 4,
        handler_cancellation=True,
        # After answering a request whose body it did not read (a 413), aiohttp keeps reading and discarding
        # for this long so the client sees the answer; its default of 10 s let a sender push gigabytes.
        lingering_time=1.0,
    )


def _bound_port(site: web.TCPSite, configured: int) -> int:
    server: Any = site._server  # the asyncio Server; aiohttp has no public accessor for the bound port
    if server is not None and server.sockets:
        return int(server.sockets[0].getsockname()[1])
    return configured


def run(source: ConfigSource, workers: int) -> int:
    """Run `trex dev`: in this process for one worker, else supervise `workers` child processes."""
    config = source.load()
    if not config.secret(MASTER_KEY_NAME):
        ensure_master_key(config)  # writes .dev.vars once, so every worker process reads the same key
        config = source.load()
    setup_logging(config.log_format)  # lines while not serving (a supervisor's) are written at once
    if workers <= 1:
        try:
            with serving_logs(config.log_format):
                uvloop.run(serve(config, on_ready=lambda url: _announce(url, config, 1)))
        except ServeError as exc:
            print(f"trex dev: error: {exc}", file=sys.stderr)
            return 1
        return 0
    if config.port == 0:
        print("trex dev: error: --workers > 1 needs a fixed --port", file=sys.stderr)
        return 2
    # The workers share the port with SO_REUSEPORT, which also lets them join another server already on
    # it (another `trex dev --workers`), silently splitting its traffic: make sure the port is free first.
    try:
        with socket.create_server((config.ip, config.port)):
            pass
    except OSError as exc:
        print(f"trex dev: error: cannot listen on {config.ip}:{config.port}: {exc.strerror}", file=sys.stderr)
        return 1
    return _supervise(source, config, workers)


def _announce(url: str, config: Config, workers: int) -> None:
    env = f", env: {config.env_name}" if config.env_name else ""
    print(
        f"trex dev: ready on {url} (kv: {redacted_url(config.kv_url)}, workers: {workers}{env})", flush=True
    )


def child(source: ConfigSource, conn: multiprocessing.connection.Connection) -> None:
    config = source.load()

    def ready(url: str) -> None:
        conn.send(url)
        conn.close()

    try:
        with serving_logs(config.log_format):
            uvloop.run(serve(config, reuse_port=True, on_ready=ready))
    except ServeError as exc:
        print(f"trex dev: worker error: {exc}", file=sys.stderr)
        sys.exit(1)
    except ConfigError as exc:  # found while building the gateway (plans, models, the master key …)
        print(f"trex: config error: {exc}", file=sys.stderr)
        sys.exit(2)


def _supervise(source: ConfigSource, config: Config, workers: int) -> int:
    # Imported here, not at the top: a single-process worker never needs it (about 0.5 MiB resident).
    import multiprocessing
    import multiprocessing.connection

    ctx = multiprocessing.get_context("spawn")
    procs: list[Any] = []
    conns: list[multiprocessing.connection.Connection] = []
    for _ in range(workers):
        parent_end, child_end = ctx.Pipe(duplex=False)
        # The target lives in a light module so each child loads the tokenizer before the heavy imports.
        proc = ctx.Process(target=entry.child, args=(source, child_end), daemon=False)
        proc.start()
        child_end.close()
        procs.append(proc)
        conns.append(parent_end)

    stopping = False

    def forward(signum: int, _frame: object) -> None:
        nonlocal stopping
        stopping = True
        for proc in procs:
            if proc.is_alive() and proc.pid is not None:
                with contextlib.suppress(ProcessLookupError):
                    os.kill(proc.pid, signum)

    signal.signal(signal.SIGINT, forward)
    signal.signal(signal.SIGTERM, forward)

    url = None
    for proc, conn in zip(procs, conns, strict=True):
        try:
            url = conn.recv() if conn.poll(30) else None
        except EOFError:  # it is exiting: let it finish (and report why) before stopping the others
            url = None
            proc.join(10)
        if url is None:
            print("trex dev: error: a worker process failed to start", file=sys.stderr)
            forward(signal.SIGTERM, None)
            _join(procs)
            return 2 if proc.exitcode == 2 else 1  # 2: a config error
    assert url is not None
    _announce(url, config, workers)
    # Wait for any child to exit; if one dies on its own, stop the others rather than run degraded silently.
    multiprocessing.connection.wait([p.sentinel for p in procs])
    crashed = not stopping  # no signal asked for it: a failure, whatever stopping the others does next
    if crashed:
        print("trex dev: a worker process exited; stopping the others", file=sys.stderr)
        forward(signal.SIGTERM, None)
    _join(procs)
    return 1 if crashed else 0


def _join(procs: list[Any]) -> None:
    for proc in procs:
        proc.join()
