"""The `trex` command as a user runs it: `trex dev` in a subprocess, signals, workers, logs, `trex kv`."""

from __future__ import annotations

import array
import base64
import fcntl
import json
import os
import select
import signal
import subprocess
import sys
import termios
import time
import urllib.request
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import pytest

from tests.fakes.upstream import FakeUpstream
from tests.harness import ROOT, WorkerProcess, free_port, write_config


def trex(
    *argv: str, stdin: bytes | None = None, env: dict[str, str] | None = None
) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run(
        [sys.executable, "-m", "worker", *argv],
        cwd=ROOT,
        input=stdin,
        capture_output=True,
        env={**os.environ, **(env or {})},
        timeout=60,
    )


def get(url: str, headers: dict[str, str] | None = None) -> tuple[int, dict[str, str], bytes]:
    req = urllib.request.Request(url, headers=headers or {})
    try:
        with urllib.request.urlopen(req, timeout=10) as r:
            return r.status, dict(r.headers), r.read()
    except urllib.error.HTTPError as e:
        return e.code, dict(e.headers), e.read()


def test_help_lists_commands() -> None:
    out = trex("--help")
    assert out.returncode == 0
    for cmd in ("dev", "kv", "config"):
        assert cmd in out.stdout.decode()
    dev_help = trex("dev", "--help").stdout.decode()
    for opt in (
        "--config",
        "--env",
        "--ip",
        "--port",
        "--persist-to",
        "--kv-url",
        "--workers",
        "--log-format",
    ):
        assert opt in dev_help
    for sub in ("list", "get", "put", "delete"):
        sub_help = trex("kv", sub, "--help").stdout.decode()
        for opt in ("--config", "--env", "--persist-to", "--kv-url", "--json"):
            assert opt in sub_help, (sub, opt)


def test_dev_serves_and_stops_gracefully(tmp_path: Path, spawn_worker: Callable[..., WorkerProcess]) -> None:
    cfg = write_config(tmp_path, {})
    wp = spawn_worker(cfg)
    assert wp.url.startswith("http://127.0.0.1:")
    assert "kv: sqlite:///" in wp.ready_line
    status, _, body = get(wp.url + "/v1/health")
    assert status == 200 and json.loads(body)["status"] == "ok"
    wp.signal(signal.SIGTERM)
    assert wp.wait() == 0
    assert "stopped" in wp.logs()


def test_sigint_also_stops_gracefully(tmp_path: Path, spawn_worker: Callable[..., WorkerProcess]) -> None:
    wp = spawn_worker(write_config(tmp_path, {}))
    wp.signal(signal.SIGINT)
    assert wp.wait() == 0
    assert "Traceback" not in wp.logs()


class StderrPipe:
    """`trex dev` with its stderr (the logs) going to a small pipe that this test reads only when it chooses,
    as a log shipper that stopped reading would."""

    SIZE = 16384

    def __init__(self, tmp_path: Path) -> None:
        self.read_end, write_end = os.pipe()
        # A small pipe, a hundred lines fill it (yet larger than PIPE_BUF: a write of that many bytes waits
        # for room for all of them, which a pipe of that size has only once empty).
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, self.SIZE)
        config = write_config(tmp_path, {})
        self.proc = subprocess.Popen(
            [sys.executable, "-m", "worker", "dev", "--config", str(config), "--port", str(free_port())],
            cwd=ROOT,
            stdout=subprocess.PIPE,
            stderr=write_end,
            env={**os.environ, "PYTHONUNBUFFERED": "1", "TREX_MASTER_KEY": "m" * 40},
            start_new_session=True,
        )
        os.close(write_end)
        assert self.proc.stdout is not None
        ready = self.proc.stdout.readline().decode()  # `ready on …`, or EOF should it fail to start
        assert "ready on " in ready, ready
        self.url = ready.split("ready on ", 1)[1].split()[0]

    def unread(self) -> int:
        count = array.array("i", [0])
        fcntl.ioctl(self.read_end, termios.FIONREAD, count)
        return count[0]

    def fill(self) -> int:
        """Send requests until their access lines fill the pipe (less room left than a write of PIPE_BUF
        bytes needs), then as many again that wait behind it; the number of requests."""
        n = 0
        while self.unread() <= self.SIZE - select.PIPE_BUF and n < 1000:
            assert get(self.url + "/health")[0] == 200
            n += 1
        for _ in range(n):
            assert get(self.url + "/health")[0] == 200
        return 2 * n

    def read_all(self) -> str:
        """Everything written to stderr, until the worker's end closes it."""
        chunks = []
        while chunk := os.read(self.read_end, 65536):
            chunks.append(chunk)
        return b"".join(chunks).decode()

    def close(self) -> None:
        if self.proc.poll() is None:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait(10)
        assert self.proc.stdout is not None
        self.proc.stdout.close()
        os.close(self.read_end)


def test_a_stderr_nobody_reads_cannot_hold_a_graceful_stop(tmp_path: Path) -> None:
    """The worker's log lines were written to stderr on the event loop: with the pipe full, its "shutting
    down" line blocked the loop and SIGTERM never ended the process."""
    stderr = StderrPipe(tmp_path)
    try:
        stderr.fill()
        stderr.proc.send_signal(signal.SIGTERM)
        assert stderr.proc.wait(30) == 0  # without the pipe being read (one bounded wait: 5 s)
        lines = stderr.read_all().split("\n")
        assert lines.pop() == ""  # only whole lines were written
        assert len(lines) > 50 and all(line.startswith("20") and " INFO trex." in line for line in lines)
    finally:
        stderr.close()


def test_a_stderr_read_late_gets_every_line_up_to_stopped(tmp_path: Path) -> None:
    """Lines wait for a slow stderr, a bounded time: none is lost when it drains in that time."""
    stderr = StderrPipe(tmp_path)
    try:
        requests = stderr.fill()
        stderr.proc.send_signal(signal.SIGTERM)
        time.sleep(1)
        lines = stderr.read_all().splitlines()
        assert stderr.proc.wait(30) == 0
        assert sum(" INFO trex.access GET /health 200 " in line for line in lines) == requests
        assert any(" INFO trex.server shutting down: " in line for line in lines)
        assert lines[-1].endswith(" INFO trex.server stopped")
    finally:
        stderr.close()


@pytest.mark.parametrize("fmt", ["text", "json"])
def test_access_log_formats_and_redaction(
    tmp_path: Path, spawn_worker: Callable[..., WorkerProcess], fmt: str
) -> None:
    wp = spawn_worker(write_config(tmp_path, {}), "--log-format", fmt)
    secret = "trex_abcdefghijklmnopqrstuvwxyz0123"
    get(wp.url + "/health", {"X-Request-Id": "log-check-1", "Authorization": f"Bearer {secret}"})
    get(wp.url + "/missing", {"X-Request-Id": "log-check-2", "X-API-Key": secret})
    wp.stop()
    logs = wp.logs()
    assert secret not in logs
    lines = [ln for ln in logs.splitlines() if "log-check-" in ln]
    assert len(lines) == 2
    if fmt == "json":
        first, second = (json.loads(ln) for ln in lines)
        assert first["logger"] == "trex.access" and first["request_id"] == "log-check-1"
        assert (first["method"], first["path"], first["status"]) == ("GET", "/health", 200)
        assert first["latency_ms"] >= 0
        assert second["status"] == 404
    else:
        assert "GET /health 200" in lines[0] and "request_id=log-check-1" in lines[0]
        assert "GET /missing 404" in lines[1]


def test_port_in_use_is_a_clear_error(tmp_path: Path, spawn_worker: Callable[..., WorkerProcess]) -> None:
    port = free_port()
    spawn_worker(write_config(tmp_path, {}), port=port)
    proc = subprocess.run(
        [
            sys.executable,
            "-m",
            "worker",
            "dev",
            "--config",
            str(tmp_path / "wrangler_local.toml"),
            "--port",
            str(port),
        ],
        cwd=ROOT,
        capture_output=True,
        text=True,
        timeout=30,
    )
    assert proc.returncode == 1
    assert f"cannot listen on 127.0.0.1:{port}" in proc.stderr


def _children(pid: int) -> list[int]:
    out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(pid)], capture_output=True, text=True)
    return [int(x) for x in out.stdout.split()]


def test_workers_share_one_port_and_one_sqlite_file(
    tmp_path: Path, spawn_worker: Callable[..., WorkerProcess], fake_upstream: FakeUpstream
) -> None:
    cfg = write_config(tmp_path, fake_upstream.base_urls(), dev_vars={"TREX_MASTER_KEY": "w" * 40})
    created = json.loads(trex("keys", "create", "--config", str(cfg), "--name", "w", "--json").stdout)
    wp = spawn_worker(cfg, "--workers", "2")
    assert "workers: 2" in wp.ready_line
    assert wp.proc is not None
    children = _children(wp.proc.pid)
    # Exactly two serving processes (multiprocessing may add a resource-tracker child beside them).
    serving = [c for c in children if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    assert len(serving) == 2
    # Authenticated traffic from many connections: both processes read keys from (and record use in) one
    # SQLite file concurrently.
    with ThreadPoolExecutor(8) as pool:
        results = list(pool.map(lambda _: _chat(wp.url, created["key"]), range(40)))
    assert results == [200] * 40
    wp.signal(signal.SIGTERM)
    assert wp.wait() == 0
    time.sleep(0.2)
    for c in children:
        assert not Path(f"/proc/{c}").exists() or "zombie" in Path(f"/proc/{c}/status").read_text()


def _rss_mib(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(status.split("VmRSS:")[1].split()[0]) / 1024


@pytest.mark.parametrize("workers", [("--workers", "2"), ("--work=2",)])
def test_the_supervisor_of_worker_processes_does_not_load_the_tokenizer(
    tmp_path: Path, spawn_worker: Callable[..., WorkerProcess], workers: tuple[str, ...]
) -> None:
    """Only the serving children count tokens; the supervisor held the o200k tokenizer (about 44 MiB) too.
    (`--work=2` is `--workers 2` to argparse, which takes an option's unambiguous abbreviation.)"""
    wp = spawn_worker(write_config(tmp_path, {}), *workers)
    assert wp.proc is not None
    serving = [c for c in _children(wp.proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    assert len(serving) == 2
    assert _rss_mib(wp.proc.pid) < min(_rss_mib(c) for c in serving) - 30


def test_a_crashed_worker_process_stops_the_others_and_fails(
    tmp_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    """A child that dies on its own is a failure (exit 1), so a supervisor restarting on failure restarts it."""
    wp = spawn_worker(write_config(tmp_path, {}), "--workers", "2")
    assert wp.proc is not None
    serving = [c for c in _children(wp.proc.pid) if "spawn_main" in Path(f"/proc/{c}/cmdline").read_text()]
    os.kill(serving[0], signal.SIGKILL)
    assert wp.wait() == 1


def _chat(url: str, key: str) -> int:
    req = urllib.request.Request(
        url + "/v1/chat/completions",
        data=json.dumps({"model": "gpt-4o-mini", "messages": [{"role": "user", "content": "hi"}]}).encode(),
        headers={
            "Authorization": f"Bearer {key}",
            "X-Upstream-Api-Key": "sk-x",
            "Content-Type": "application/json",
        },
    )
    with urllib.request.urlopen(req, timeout=10) as r:
        return int(r.status)


def test_kv_commands_share_state_across_processes(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, {}))
    assert trex("kv", "put", "--config", cfg, "greeting", "hello").returncode == 0
    assert trex("kv", "put", "--config", cfg, "blob", stdin=b"\x00\x01bytes").returncode == 0
    got = trex("kv", "get", "--config", cfg, "greeting")
    assert got.returncode == 0 and got.stdout == b"hello"
    assert trex("kv", "get", "--config", cfg, "blob").stdout == b"\x00\x01bytes"
    # --json gives text as text and any other bytes as base64, saying which: nothing is lost either way.
    assert json.loads(trex("kv", "get", "--config", cfg, "blob", "--json").stdout) == {
        "key": "blob",
        "value": "\x00\x01bytes",
        "encoding": "utf-8",
    }
    raw = b"\xff\xfe\x00not text \x80"
    assert trex("kv", "put", "--config", cfg, "raw", stdin=raw).returncode == 0
    doc = json.loads(trex("kv", "get", "--config", cfg, "raw", "--json").stdout)
    assert doc["encoding"] == "base64" and base64.b64decode(doc["value"], validate=True) == raw
    assert trex("kv", "delete", "--config", cfg, "raw").returncode == 0
    listed = json.loads(trex("kv", "list", "--config", cfg, "--json").stdout)
    assert [k["name"] for k in listed["keys"]] == ["blob", "greeting"] and listed["list_complete"] is True
    # A page cut at --limit says so, and --cursor continues it.
    first = trex("kv", "list", "--config", cfg, "--limit", "1")
    assert (
        first.stdout.decode().splitlines()[0] == "blob" and "(more keys: --cursor " in first.stdout.decode()
    )
    cursor = json.loads(trex("kv", "list", "--config", cfg, "--limit", "1", "--json").stdout)["cursor"]
    rest = trex("kv", "list", "--config", cfg, "--limit", "1", "--cursor", cursor)
    assert rest.returncode == 0 and rest.stdout.decode().splitlines() == ["greeting"]
    assert (tmp_path / "state" / "kv.sqlite3").exists()
    assert trex("kv", "delete", "--config", cfg, "greeting").returncode == 0
    missing = trex("kv", "get", "--config", cfg, "greeting")
    assert missing.returncode == 1 and b"no such key" in missing.stderr
    bad = trex("kv", "put", "--config", cfg, "k", "v", "--ttl", "5")
    assert bad.returncode == 2 and b"kv error" in bad.stderr  # a TTL the KV refuses: bad usage


def test_kv_commands_take_persist_to_and_kv_url(tmp_path: Path) -> None:
    cfg = str(write_config(tmp_path, {}))
    other = tmp_path / "elsewhere"
    assert trex("kv", "put", "--config", cfg, "--persist-to", str(other), "k", "v").returncode == 0
    assert (other / "kv.sqlite3").exists()
    assert trex("kv", "get", "--config", cfg, "k").returncode == 1  # not in the default location
    assert trex("kv", "get", "--config", cfg, "--persist-to", str(other), "k").stdout == b"v"
    url = f"sqlite:///{tmp_path / 'explicit.db'}"
    assert trex("kv", "put", "--config", cfg, "--kv-url", url, "x", "1").returncode == 0
    assert json.loads(trex("kv", "get", "--config", cfg, "--kv-url", url, "x", "--json").stdout) == {
        "key": "x",
        "value": "1",
        "encoding": "utf-8",
    }


def test_a_second_multi_worker_server_cannot_join_a_taken_port(
    tmp_path: Path, spawn_worker: Callable[..., WorkerProcess]
) -> None:
    """The workers share their port with SO_REUSEPORT, which would also let them join another server on it
    and split its traffic: a taken port is an error, as for one worker."""
    port = free_port()
    first = tmp_path / "a"
    first.mkdir()
    spawn_worker(write_config(first, {}), "--workers", "2", port=port)
    second = tmp_path / "b"
    second.mkdir()
    proc = trex("dev", "--config", str(write_config(second, {})), "--port", str(port), "--workers", "2")
    assert proc.returncode == 1 and f"cannot listen on 127.0.0.1:{port}" in proc.stderr.decode()


def test_unreadable_secrets_and_bad_tables_are_one_line_config_errors(tmp_path: Path) -> None:
    """A `.dev.vars` that is a directory or not UTF-8, a config that is not UTF-8, a `plans` that is not a
    table: exit 2 and one line naming the file, never a traceback; bad KV-URL syntax likewise."""
    config = write_config(tmp_path, {})
    dev_vars = tmp_path / ".dev.vars"
    dev_vars.unlink(missing_ok=True)
    dev_vars.mkdir()
    for argv, stdin in ((["config"], None), (["keys", "bind", "key_x", "--provider", "openai"], b"sk-x\n")):
        proc = trex(*argv, "--config", str(config), stdin=stdin)
        assert proc.returncode == 2 and b"Traceback" not in proc.stderr and b".dev.vars" in proc.stderr, argv
    dev_vars.rmdir()
    dev_vars.write_bytes(b"TREX_MASTER_KEY=\xff\xfeabc\n")
    proc = trex("config", "--config", str(config))
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr and b"UTF-8" in proc.stderr
    dev_vars.unlink()
    proc = trex("config", "--config", str(config), env={"TREX_KV_URL": "redis://u:pw@[bad/0"})
    assert b"Traceback" not in proc.stderr and b"pw" not in proc.stdout + proc.stderr
    proc = trex(
        "config", "--config", str(config), env={"TREX_KV_URL": "redis://127.0.0.1:1/0?password=s3cretpw"}
    )
    assert proc.returncode == 0 and b"s3cretpw" not in proc.stdout and b"password=***" in proc.stdout
    for plans in ("plans = 5\n", 'plans = "free"\n', '[plans.free]\ndaily_requests = "x"\n'):
        broken = tmp_path / "plans" / str(len(plans))
        broken.mkdir(parents=True)
        path = write_config(broken, {}, extra=plans)
        proc = trex("keys", "create", "--name", "k", "--plan", "free", "--config", str(path))
        assert proc.returncode == 2 and b"Traceback" not in proc.stderr, plans
    latin = tmp_path / "latin"
    latin.mkdir()
    path = write_config(latin, {})
    path.write_bytes(path.read_bytes() + b"# caf\xe9\n")
    proc = trex("config", "--config", str(path))
    assert proc.returncode == 2 and b"Traceback" not in proc.stderr


def test_kv_put_stores_an_argument_that_is_not_utf8_as_its_bytes(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, {}))
    value = os.fsdecode(b"\xff\xfe")
    assert trex("kv", "put", "k", value, "--config", config).returncode == 0
    assert trex("kv", "get", "k", "--config", config).stdout == b"\xff\xfe"


def test_compress_refuses_a_bad_optimize_mode_as_dev_does(tmp_path: Path) -> None:
    config = str(write_config(tmp_path, {"OPTIMIZE_MODE": "bogus"}))
    payload = tmp_path / "p.json"
    payload.write_text('{"model": "m", "messages": [{"role": "user", "content": "hi"}]}')
    proc = trex("compress", str(payload), "--config", config)
    assert proc.returncode == 2 and b"OPTIMIZE_MODE" in proc.stderr
