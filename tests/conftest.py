"""Shared fixtures: fake upstreams and the real worker (in-process and as a `trex dev` subprocess)."""

from __future__ import annotations

from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol, TextIO, TypeVar

import anthropic
import openai
import pytest

from tests.fakes.redis_proxy import RedisProxy
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
from worker.appkeys import GATEWAY

pytest_plugins = ["pytester", "tests.socket_guard"]


@pytest.fixture
def proxy() -> Iterator[RedisProxy]:
    """A TCP proxy to the machine's Redis that a test can cut, stall or refuse (tests/fakes/redis_proxy.py)."""
    proxy = RedisProxy().start()
    yield proxy
    proxy.stop()


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
        access_stream: TextIO | None = None,
    ) -> InProcessWorker:
        path = write_config(
            tmp_path, {**fake_upstream.base_urls(), **(variables or {})}, local, extra, dev_vars
        )
        worker = InProcessWorker(load_test_config(path), extra_routes, access_stream).start()
        started.append(worker)
        return worker

    yield factory
    failures: list[BaseException] = []
    for w in started:  # every one, even after one failed: a worker left running leaks into later tests
        try:
            w.stop()
        except Exception as exc:  # noqa: BLE001 - raised below, once the others are stopped
            failures.append(exc)
    if failures:
        raise failures[0]


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


MASTER_KEY = "test-master-key-0123456789abcdef0123456789abcdef"
UPSTREAM_KEYS = {
    "openai": "sk-openai-upstream-test-000000000000",
    "anthropic": "sk-ant-upstream-test-000000000000",
    "openrouter": "sk-or-upstream-test-000000000000",
}


@dataclass
class GatewaySetup:
    """A running worker pointed at a fake upstream, with one proxy key bound to every provider."""

    worker: InProcessWorker
    fake: FakeUpstream
    key: str
    key_id: str
    clients: list[Any] = field(default_factory=list)

    def openai(self, key: str | None = None, **kw: Any) -> openai.OpenAI:
        """An OpenAI SDK client pointed at the worker (closed at teardown)."""
        client = openai.OpenAI(api_key=key or self.key, base_url=self.worker.url + "/v1", max_retries=0, **kw)
        self.clients.append(client)
        return client

    def anthropic(self, key: str | None = None, **kw: Any) -> anthropic.Anthropic:
        """An Anthropic SDK client pointed at the worker (closed at teardown)."""
        client = anthropic.Anthropic(api_key=key or self.key, base_url=self.worker.url, max_retries=0, **kw)
        self.clients.append(client)
        return client

    def close(self) -> None:
        for client in self.clients:
            client.close()

    def new_key(self, name: str = "unbound") -> tuple[str, str]:
        """Another proxy key, with no provider bindings: (key id, key)."""
        record, token = self.worker.call(self.worker.app[GATEWAY].keys.create(name))
        return record.id, token


@pytest.fixture
def gateway(
    make_worker: Callable[..., InProcessWorker], fake_upstream: FakeUpstream
) -> Iterator[GatewaySetup]:
    setup_ = with_key(make_worker(dev_vars={"TREX_MASTER_KEY": MASTER_KEY}), fake_upstream)
    yield setup_
    setup_.close()


class _Closeable(Protocol):
    def close(self) -> None: ...


C = TypeVar("C", bound=_Closeable)
_TO_CLOSE: list[_Closeable] = []


def closed_after_test(closeable: C) -> C:
    """`closeable` (a `GatewaySetup` and its SDK clients, an SDK client), closed when the test ends: for what a
    test's helpers make themselves. A client left open keeps its pooled connection open until garbage
    collection, which fails a later test with a `ResourceWarning` (tests/socket_guard.py)."""
    _TO_CLOSE.append(closeable)
    return closeable


@pytest.fixture(autouse=True)
def _close_setups() -> Iterator[None]:
    yield
    while _TO_CLOSE:
        _TO_CLOSE.pop().close()


def with_key(
    worker: InProcessWorker, fake_upstream: FakeUpstream, name: str = "test", plan: str | None = None
) -> GatewaySetup:
    """`worker` (started with `TREX_MASTER_KEY = MASTER_KEY`) with one proxy key, on `plan` if given, bound to
    every provider."""
    keys = worker.app[GATEWAY].keys

    async def setup() -> tuple[str, str]:
        record, token = await keys.create(name, plan=plan)
        for provider, secret in UPSTREAM_KEYS.items():
            await keys.bind(record.id, provider, secret)
        return record.id, token

    key_id, token = worker.call(setup())
    return GatewaySetup(worker, fake_upstream, token, key_id)
