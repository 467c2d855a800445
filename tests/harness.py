"""Start the real worker for tests: in-process (fast, on a background thread) or as a `trex dev` subprocess.

Both are pointed at fake upstreams through the `*_BASE_URL` vars of a `wrangler_local.toml` written into the
test's temporary directory, with the KV on a real SQLite file there unless a test says otherwise.
"""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TextIO

from aiohttp import web

from tests.fakes.threaded import ThreadedServer
from worker.app import create_app
from worker.config import Config, Overrides, load_config
from worker.server import make_runner

ROOT = Path(__file__).resolve().parent.parent
ExtraRoutes = list[tuple[str, str, Callable[[web.Request], Awaitable[web.StreamResponse]]]]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def _toml_value(v: Any) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, int | float):
        return str(v)
    if isinstance(v, str):
        return '"' + v.replace("\\", "\\\\").replace('"', '\\"') + '"'
    if isinstance(v, list):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    if isinstance(v, dict):
        return "{" + ", ".join(f"{k} = {_toml_value(x)}" for k, x in v.items()) + "}"
    raise TypeError(v)


def write_config(
    directory: Path,
    variables: Mapping[str, Any] | None = None,
    local: Mapping[str, Any] | None = None,
    extra: str = "",
    dev_vars: Mapping[str, str] | None = None,
) -> Path:
    """Write `wrangler_local.toml` (and `.dev.vars`) into `directory`; return the config path."""
    local = {"persist_to": str(directory / "state"), **(local or {})}
    lines = [
        'name = "trex-test"',
        'main = "worker/app.py"',
        'compatibility_date = "2026-11-01"',
        "",
        "[vars]",
    ]
    # Test clients fire bursts from one address: generous per-minute limits unless a test sets its own
    # (tests/test_limits.py checks the product defaults and the limits themselves).
    variables = {"RATE_LIMIT_PER_MINUTE": 100_000, "RATE_LIMIT_IP_PER_MINUTE": 100_000, **(variables or {})}
    lines += [f"{k} = {_toml_value(v)}" for k, v in variables.items()]
    lines += ["", "[[kv_namespaces]]", 'binding = "TREX_KV"', 'id = "test"', "", "[dev]", 'ip = "127.0.0.1"']
    lines += ["port = 8787", "", "[local]"]
    lines += [f"{k} = {_toml_value(v)}" for k, v in local.items()]
    path = directory / "wrangler_local.toml"
    path.write_text("\n".join(lines) + "\n" + extra)
    if dev_vars:
        (directory / ".dev.vars").write_text("".join(f"{k}={v}\n" for k, v in dev_vars.items()))
    return path


class InProcessWorker:
    """The worker app served on a background thread. `url` is the base URL (no `/v1`)."""

    def __init__(
        self, config: Config, extra_routes: ExtraRoutes | None = None, access_stream: TextIO | None = None
    ) -> None:
        self.config = config

        async def factory() -> web.Application:
            app = await create_app(config, access_stream=access_stream)
            for method, path, handler in extra_routes or []:
                app.router.add_route(method, path, handler)
            return app

        self._server = ThreadedServer(
            factory, shutdown_timeout=config.shutdown_grace_seconds, runner=make_runner
        )

    @property
    def url(self) -> str:
        return self._server.url

    @property
    def app(self) -> web.Application:
        assert self._server.app is not None
        return self._server.app

    def call(self, coro: Awaitable[Any], timeout: float = 30) -> Any:
        """Run a coroutine on the worker's own loop (e.g. to inspect its KV)."""
        return self._server.call(coro, timeout)

    def start(self) -> InProcessWorker:
        self._server.start()
        return self

    def stop(self) -> None:
        self._server.stop()


def load_test_config(path: Path, **overrides: Any) -> Config:
    """Load a test config without picking up this process's environment."""
    return load_config(path, Overrides(**overrides), environ={})


@dataclass
class WorkerProcess:
    """A `trex dev` subprocess. Its stderr (the logs) goes to `log_path`."""

    args: list[str]
    cwd: Path
    env: dict[str, str] = field(default_factory=dict)
    proc: subprocess.Popen[bytes] | None = None
    url: str = ""
    log_path: Path | None = None
    ready_line: str = ""

    def start(self, timeout: float = 20) -> WorkerProcess:
        self.log_path = self.log_path or self.cwd / f"trex-dev-{time.monotonic_ns()}.log"
        env = {**os.environ, "PYTHONUNBUFFERED": "1", **self.env}
        self._log = self.log_path.open("wb")
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "dev", *self.args],
            cwd=self.cwd,
            stdout=subprocess.PIPE,
            stderr=self._log,
            env=env,
            start_new_session=True,
        )
        assert self.proc.stdout is not None
        deadline = time.monotonic() + timeout
        os.set_blocking(self.proc.stdout.fileno(), False)
        buf = b""
        while time.monotonic() < deadline:
            chunk = self.proc.stdout.read()
            if chunk:
                buf += chunk
                for line in buf.decode(errors="replace").splitlines():
                    if "ready on " in line:
                        self.ready_line = line
                        self.url = line.split("ready on ", 1)[1].split()[0]
                        return self
            if self.proc.poll() is not None:
                break
            time.sleep(0.02)
        self.stop()
        raise AssertionError(f"trex dev did not become ready: stdout={buf!r} log={self.logs()!r}")

    def logs(self) -> str:
        return self.log_path.read_text(errors="replace") if self.log_path and self.log_path.exists() else ""

    def signal(self, sig: int) -> None:
        assert self.proc is not None
        self.proc.send_signal(sig)

    def wait(self, timeout: float = 20) -> int:
        assert self.proc is not None
        return self.proc.wait(timeout)

    def stop(self, timeout: float = 20) -> int | None:
        if self.proc is None:
            return None
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGTERM)
            try:
                self.proc.wait(timeout)
            except subprocess.TimeoutExpired:
                os.killpg(self.proc.pid, signal.SIGKILL)
                self.proc.wait(5)
        if self.proc.stdout:
            self.proc.stdout.close()
        self._log.close()
        return self.proc.returncode


def flush_redis_db(url: str) -> None:
    """Empty a Redis test database: a failure under CI=true when Redis is unreachable, a skip elsewhere."""
    import pytest
    import redis

    client = redis.Redis.from_url(url, socket_connect_timeout=1)
    try:
        client.flushdb()
    except redis.exceptions.ConnectionError as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"Redis is required under CI=true: {exc}")
        pytest.skip(f"Redis unreachable: {exc}")
    finally:
        client.close()


def wait_for_a_fresh_minute() -> None:
    """Rate limits count in fixed one-minute windows: start a test that counts a few requests against a small
    limit early in a minute, so all of them fall in one window (sleeps up to 15 s, only past second 45)."""
    into = time.time() % 60
    if into > 45:
        time.sleep(61 - into)
