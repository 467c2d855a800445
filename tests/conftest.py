"""Shared fixtures: fake upstreams and the real worker (in-process and as a `trex dev` subprocess)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import (
    ROOT,
    ExtraRoutes,
    InProcessWorker,
    WorkerProcess,
    free_port,
    load_test_config,
    write_config,
)


@pytest.fixture
def fake_upstream() -> Iterator[FakeUpstream]:
    fake = FakeUpstream().start()
    yield fake
    fake.stop()


@pytest.fixture
def config_path(tmp_path: Path, fake_upstream: FakeUpstream) -> Path:
    """A config in tmp_path pointing every provider at the fake upstream, KV on a SQLite file in tmp_path."""
    return write_config(tmp_path, fake_upstream.base_urls())


@pytest.fixture
def make_worker(tmp_path: Path, fake_upstream: FakeUpstream) -> Iterator[Callable[..., InProcessWorker]]:
    """Factory: start an in-process worker with extra [vars]/[local] settings and optional extra routes."""
    started: list[InProcessWorker] = []

    def factory(
        variables: dict[str, Any] | None = None,
        local: dict[str, Any] | None = None,
        extra_routes: ExtraRoutes | None = None,
        extra: str = "",
        dev_vars: dict[str, str] | None = None,
    ) -> InProcessWorker:
        path = write_config(
            tmp_path, {**fake_upstream.base_urls(), **(variables or {})}, local, extra, dev_vars
        )
        worker = InProcessWorker(load_test_config(path), extra_routes).start()
        started.append(worker)
        return worker

    yield factory
    for w in started:
        w.stop()


@pytest.fixture
def worker(make_worker: Callable[..., InProcessWorker]) -> InProcessWorker:
    return make_worker()


@pytest.fixture
def spawn_worker(tmp_path: Path) -> Iterator[Callable[..., WorkerProcess]]:
    """Factory: run `trex dev --config <path> --port <free>` plus extra args as a subprocess."""
    procs: list[WorkerProcess] = []

    def factory(
        config: Path, *args: str, port: int | None = None, env: dict[str, str] | None = None
    ) -> WorkerProcess:
        argv = ["--config", str(config), "--port", str(port or free_port()), *args]
        wp = WorkerProcess(argv, cwd=ROOT, env=env or {}, log_path=tmp_path / f"worker-{len(procs)}.log")
        procs.append(wp)
        return wp.start()

    yield factory
    for p in procs:
        p.stop()
