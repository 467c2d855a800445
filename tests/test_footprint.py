"""What a serving worker keeps out of its memory: modules only other paths need are not imported, and its
threads share one malloc arena.

Checked in a fresh interpreter (this one has imported everything pytest and the other tests use), importing
what `trex dev` imports before it serves.
"""

from __future__ import annotations

import itertools
import json
import os
import subprocess
import sys
import urllib.request
from collections.abc import Callable
from importlib.metadata import version
from pathlib import Path
from typing import Any

import aiohttp
import pytest

from tests.harness import ROOT, InProcessWorker, WorkerProcess, write_config

_PROBE = """
import json, sys
import worker.cli, worker.server, worker.app
print(json.dumps(sorted(name for name in {names!r} if name in sys.modules)))
"""


def _probe(code: str) -> Any:
    """What `code`, run in a fresh interpreter on this checkout, prints (as JSON)."""
    out = subprocess.run(
        [sys.executable, "-c", code],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    return json.loads(out.stdout)


def _imported_by_trex_dev(*names: str) -> list[str]:
    return list(_probe(_PROBE.format(names=names)))


def test_serving_does_not_import_package_metadata() -> None:
    """The version comes from `worker.__version__`: `importlib.metadata` (with `email`, `zipfile`, `csv`
    and a listing of every `sys.path` directory) held about 1 MiB of a serving worker for one string."""
    assert _imported_by_trex_dev("importlib.metadata", "zipfile", "csv") == []


def test_a_single_process_worker_does_not_import_multiprocessing() -> None:
    """Only `trex dev --workers N` (N > 1) supervises child processes."""
    assert _imported_by_trex_dev("multiprocessing", "multiprocessing.connection") == []


def test_serving_does_not_import_cryptography() -> None:
    """The vault's AES-GCM and HKDF come from pycryptodome: `cryptography`'s Rust extension, which links its
    own OpenSSL, held about 8 MiB of a serving worker."""
    assert _imported_by_trex_dev("cryptography", "cryptography.hazmat.bindings._rust") == []


async def test_health_reports_the_installed_version(worker: InProcessWorker) -> None:
    async with aiohttp.ClientSession() as s, s.get(worker.url + "/health") as r:
        assert r.status == 200
        assert await r.json() == {"status": "ok", "version": version("trex-worker"), "kv": "ok"}


_TOKENIZER_PROBE = """
import json, sys
from worker import tokens
tokens.preload()
print(json.dumps(sorted(name for name in ("ctypes.util", "subprocess") if name in sys.modules)))
"""


def test_loading_the_tokenizer_runs_no_subprocess() -> None:
    """malloc_trim is looked up in the process's own symbols: `ctypes.util.find_library` ran `ldconfig -p` in
    a subprocess at every start, and imported `subprocess` just before the tokenizer's load, when the process
    is at its peak."""
    assert _probe(_TOKENIZER_PROBE) == []


def _thread_arenas(pid: int) -> int:
    """glibc's per-thread malloc arenas in a process: each is a 64 MiB reservation at a 64 MiB-aligned address,
    read-write as far as it has grown and inaccessible beyond."""
    spans: list[tuple[int, int, str]] = []
    for line in Path(f"/proc/{pid}/maps").read_text().splitlines():
        fields = line.split()
        start, end = (int(x, 16) for x in fields[0].split("-"))
        if len(fields) == 5:  # anonymous
            spans.append((start, end, fields[1]))
    size = 64 << 20
    return sum(
        1
        for (start, end, perms), (nstart, nend, nperms) in itertools.pairwise(spans)
        if start % size == 0
        and perms.startswith("rw")
        and nperms == "---p"
        and end == nstart
        and nend - start == size
    )


@pytest.mark.skipif(not sys.platform.startswith("linux"), reason="glibc's arenas, read from /proc")
def test_a_serving_worker_keeps_one_malloc_arena_for_all_its_threads(
    tmp_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    """Each thread that allocates (the SQLite connection's, the access log's, the executor's) had an arena of
    its own, each keeping what its thread freed: about 2 MiB of a worker under load."""
    wp = spawn_worker(write_config(tmp_path, {}))
    assert wp.proc is not None
    for _ in range(20):  # the SQLite thread reads and writes the KV, the access log thread writes a line
        with urllib.request.urlopen(wp.url + "/health") as r:
            assert r.status == 200
    assert len(list(Path(f"/proc/{wp.proc.pid}/task").iterdir())) > 1
    assert _thread_arenas(wp.proc.pid) == 0
