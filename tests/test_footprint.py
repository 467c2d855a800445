"""What a serving worker keeps out of its memory: modules only other paths need are not imported.

Checked in a fresh interpreter (this one has imported everything pytest and the other tests use), importing
what `trex dev` imports before it serves.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from importlib.metadata import version

import aiohttp

from tests.harness import ROOT, InProcessWorker

_PROBE = """
import json, sys
import worker.cli, worker.server, worker.app
print(json.dumps(sorted(name for name in {names!r} if name in sys.modules)))
"""


def _imported_by_trex_dev(*names: str) -> list[str]:
    out = subprocess.run(
        [sys.executable, "-c", _PROBE.format(names=names)],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    return list(json.loads(out.stdout))


def test_serving_does_not_import_package_metadata() -> None:
    """The version comes from `worker.__version__`: `importlib.metadata` (with `email`, `zipfile`, `csv`
    and a listing of every `sys.path` directory) held about 1 MiB of a serving worker for one string."""
    assert _imported_by_trex_dev("importlib.metadata", "zipfile", "csv") == []


def test_a_single_process_worker_does_not_import_multiprocessing() -> None:
    """Only `trex dev --workers N` (N > 1) supervises child processes."""
    assert _imported_by_trex_dev("multiprocessing", "multiprocessing.connection") == []


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
    out = subprocess.run(
        [sys.executable, "-c", _TOKENIZER_PROBE],
        cwd=ROOT,
        capture_output=True,
        text=True,
        check=True,
        env={**os.environ, "PYTHONPATH": str(ROOT)},
        timeout=60,
    )
    assert json.loads(out.stdout) == []
