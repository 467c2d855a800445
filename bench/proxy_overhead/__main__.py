"""Proxy overhead benchmark: the same wrk load against a fake OpenAI upstream directly, a minimal aiohttp
pass-through proxy, this worker (auth on) and LiteLLM, non-streaming and streaming, at concurrency 1 and 32.

    python -m bench.proxy_overhead [--duration 5] [--rounds 3] [--skip-litellm] [--no-write]

Everything runs on loopback, one load at a time (so targets do not compete for the two cores), each bounded
by --duration. The upstream, the pass-through and the worker are measured in turns, cell by cell, for
several rounds, and the median round is reported, so machine drift does not skew their ratios. Writes the table into README.md and bench/README.md, and raw numbers into bench/results/.
"""

from __future__ import annotations

import argparse
import json
import os
import re
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import urllib.request
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import redis

from bench import write_section

ROOT = Path(__file__).resolve().parents[2]
LITELLM_START = ROOT.parent / "shared" / "peers" / "litellm" / "start.sh"
RESULTS = ROOT / "bench" / "results" / "proxy_overhead.json"
REDIS_URL = "redis://127.0.0.1:6379/11"
MESSAGES = [{"role": "user", "content": "Say hello to the benchmark."}]


@dataclass
class Run:
    target: str
    mode: str
    concurrency: int
    rps: float
    p50_ms: float
    p99_ms: float
    requests: int
    errors: int


def flush_redis(url: str) -> None:
    client = redis.Redis.from_url(url, socket_connect_timeout=2)
    try:
        client.flushdb()
    finally:
        client.close()


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def wait_http(url: str, timeout: float, headers: dict[str, str] | None = None) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            with urllib.request.urlopen(urllib.request.Request(url, headers=headers or {}), timeout=2):
                return
        except urllib.error.HTTPError as exc:
            if exc.code < 500:
                return  # serving (a 404 or 405 is still an answer)
        except OSError:
            pass
        time.sleep(0.2)
    raise RuntimeError(f"{url} did not come up within {timeout}s")


def start(argv: list[str], log: Path, env: dict[str, str] | None = None) -> subprocess.Popen[bytes]:
    return subprocess.Popen(
        argv,
        cwd=ROOT,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
        env={**os.environ, **(env or {})},
        start_new_session=True,
    )


def stop(proc: subprocess.Popen[bytes]) -> None:
    if proc.poll() is None:
        os.killpg(proc.pid, signal.SIGTERM)
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            os.killpg(proc.pid, signal.SIGKILL)
            proc.wait(5)


def tree_peak_rss_mib(pid: int, field: str = "VmHWM") -> float:
    """Sum of peak (VmHWM) or current (VmRSS) resident set sizes over a process and its descendants."""
    pids, total = [pid], 0
    while pids:
        p = pids.pop()
        try:
            status = Path(f"/proc/{p}/status").read_text()
        except OSError:
            continue
        m = re.search(rf"{field}:\s+(\d+) kB", status)
        total += int(m.group(1)) if m else 0
        out = subprocess.run(["ps", "-o", "pid=", "--ppid", str(p)], capture_output=True, text=True)
        pids += [int(x) for x in out.stdout.split()]
    return total / 1024


_FLOOR_PROBE = """
from worker import tokens
tokens.preload()
import aiohttp.web
import re
status = open("/proc/self/status").read()
print(*(re.search(field + r":\\s+(\\d+) kB", status).group(1) for field in ("VmHWM", "VmRSS")))
"""


def floor_rss_mib() -> tuple[float, float]:
    """(peak, current) RSS of a process holding only Python, aiohttp and the o200k tokenizer."""
    out = subprocess.run([sys.executable, "-c", _FLOOR_PROBE], capture_output=True, text=True, check=True)
    peak, current = (int(x) / 1024 for x in out.stdout.split())
    return peak, current


def _ms(value: str) -> float:
    m = re.fullmatch(r"([\d.]+)(us|ms|s|m)", value)
    if not m:
        raise ValueError(value)
    number, unit = float(m.group(1)), m.group(2)
    return number * {"us": 0.001, "ms": 1.0, "s": 1000.0, "m": 60000.0}[unit]


def wrk(
    url: str, body: dict[str, object], headers: dict[str, str], concurrency: int, duration: float
) -> dict[str, float]:
    with tempfile.NamedTemporaryFile("w", suffix=".lua", delete=False) as fh:
        fh.write('wrk.method = "POST"\n')
        fh.write(f"wrk.body = {json.dumps(json.dumps(body))}\n")
        fh.write('wrk.headers["Content-Type"] = "application/json"\n')
        for k, v in headers.items():
            fh.write(f"wrk.headers[{json.dumps(k)}] = {json.dumps(v)}\n")
        script = fh.name
    try:
        out = subprocess.run(
            [
                "wrk",
                "-t1",
                f"-c{concurrency}",
                f"-d{max(1, round(duration))}s",
                "--timeout",
                "10s",
                "--latency",
                "-s",
                script,
                url,
            ],
            capture_output=True,
            text=True,
            timeout=duration + 30,
        ).stdout
    finally:
        os.unlink(script)
    rps = float(re.search(r"Requests/sec:\s+([\d.]+)", out).group(1))  # type: ignore[union-attr]
    p50 = _ms(re.search(r"^\s+50%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    p99 = _ms(re.search(r"^\s+99%\s+(\S+)\s*$", out, re.M).group(1))  # type: ignore[union-attr]
    requests = int(re.search(r"(\d+) requests in", out).group(1))  # type: ignore[union-attr]
    non2xx = re.search(r"Non-2xx or 3xx responses: (\d+)", out)
    sock = re.search(r"Socket errors: connect (\d+), read (\d+), write (\d+), timeout (\d+)", out)
    errors = (int(non2xx.group(1)) if non2xx else 0) + (sum(int(x) for x in sock.groups()) if sock else 0)
    return {"rps": rps, "p50": p50, "p99": p99, "requests": requests, "errors": errors}


CELLS = tuple((mode, conc) for mode in ("non-stream", "stream") for conc in (1, 32))


@dataclass
class Target:
    name: str
    url: str
    model: str
    headers: dict[str, str]
    cells: tuple[tuple[str, int], ...] = ()


def _body(model: str, mode: str) -> dict[str, object]:
    body: dict[str, object] = {"model": model, "messages": MESSAGES}
    if mode == "stream":
        body["stream"] = True
    return body


def run_cell(t: Target, mode: str, conc: int, duration: float) -> Run:
    r = wrk(t.url, _body(t.model, mode), t.headers, conc, duration)
    print(
        f"  {t.name:<12} {mode:<10} c={conc:<3} {r['rps']:>9.1f} rps  p50 {r['p50']:.2f} ms  "
        f"p99 {r['p99']:.2f} ms  errors {int(r['errors'])}",
        flush=True,
    )
    return Run(t.name, mode, conc, r["rps"], r["p50"], r["p99"], int(r["requests"]), int(r["errors"]))


def warm_up(t: Target) -> None:
    for mode in ("non-stream", "stream"):
        wrk(t.url, _body(t.model, mode), t.headers, 8, 1.0)  # pools, caches, lazy imports


def measure_interleaved(targets: list[Target], duration: float, rounds: int) -> list[Run]:
    """Each cell for every target back to back, repeated `rounds` times; the median round per cell is kept.

    The machine's speed drifts over minutes (two cores, shared); measuring the targets a ratio compares
    within seconds of each other, several times, keeps that drift out of the ratios.
    """
    for t in targets:
        warm_up(t)
    samples: dict[tuple[str, str, int], list[Run]] = {}
    for i in range(rounds):
        print(f"round {i + 1}/{rounds}", flush=True)
        for mode, conc in CELLS:
            for t in targets:
                if (mode, conc) not in (t.cells or CELLS):
                    continue
                samples.setdefault((t.name, mode, conc), []).append(run_cell(t, mode, conc, duration))
    runs = []
    for t in targets:
        for mode, conc in t.cells or CELLS:
            ordered = sorted(samples[(t.name, mode, conc)], key=lambda r: r.rps)
            runs.append(ordered[len(ordered) // 2])
    return runs


def setup_trex(
    tmp: Path,
    upstream: str,
    accounting: bool = True,
    checks: bool = True,
    kv_url: str | None = None,
    access_log: bool = True,
    optimize: str = "balanced",
) -> tuple[Path, str]:
    """A worker's config and a bound proxy key. With `checks`, the key is on a plan with request and token
    quotas and rate limits are on (high enough never to refuse the load, but every request is counted);
    without, rate limits are off and the key has no plan. Authentication is always on."""
    tmp.mkdir(parents=True, exist_ok=True)
    cfg = tmp / "wrangler_local.toml"
    cfg.write_text(
        f'name = "bench"\n[vars]\nOPENAI_BASE_URL = "{upstream}/v1"\n'
        f'USAGE_ACCOUNTING = "{"on" if accounting else "off"}"\nOPTIMIZE_MODE = "{optimize}"\n'
        "RATE_LIMIT_PER_MINUTE = 100000000\nRATE_LIMIT_IP_PER_MINUTE = 100000000\n"
        f'RATE_LIMIT = "{"on" if checks else "off"}"\n'
        "[plans.bench]\ndaily_requests = 1000000000000\ndaily_tokens = 1000000000000\n"
        f'[local]\npersist_to = "{tmp / "state"}"\naccess_log = {"true" if access_log else "false"}\n'
        + (f'kv_url = "{kv_url}"\n' if kv_url else "")
    )
    (tmp / ".dev.vars").write_text("TREX_MASTER_KEY=" + "b" * 48 + "\n")
    cli = [sys.executable, "-m", "worker"]
    created = json.loads(
        subprocess.run(
            [*cli, "keys", "create", "--config", str(cfg), "--name", "bench", "--json"]
            + (["--plan", "bench"] if checks else []),
            cwd=ROOT,
            capture_output=True,
            check=True,
        ).stdout
    )
    subprocess.run(
        [*cli, "keys", "bind", created["id"], "--provider", "openai", "--config", str(cfg)],
        cwd=ROOT,
        input=b"sk-bench-upstream\n",
        capture_output=True,
        check=True,
    )
    return cfg, created["key"]


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=5.0)
    ap.add_argument("--rounds", type=int, default=3, help="interleaved rounds; the median is reported")
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/README.md alone")
    ap.add_argument(
        "--redis",
        default=REDIS_URL,
        help="a Redis database the bench may empty, for the Redis rows ('' to skip them)",
    )
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2

    tmp = Path(tempfile.mkdtemp(prefix="trex-bench-"))
    procs: list[subprocess.Popen[bytes]] = []
    runs: list[Run] = []
    rss: dict[str, float] = {}
    try:
        up_port = free_port()
        upstream = f"http://127.0.0.1:{up_port}"
        procs.append(
            start([sys.executable, "-m", "bench.proxy_overhead.upstream", str(up_port)], tmp / "upstream.log")
        )
        wait_http(upstream + "/health", 20)  # 404 means it is serving
        print(f"upstream on {upstream}", flush=True)
        local = [Target("upstream", upstream + "/v1/chat/completions", "gpt-4o-mini", {})]
        port = free_port()
        argv = [sys.executable, "-m", "bench.proxy_overhead.passthrough", str(port), upstream + "/v1"]
        procs.append(start(argv, tmp / "passthrough.log"))
        wait_http(f"http://127.0.0.1:{port}/v1/chat/completions", 30)
        local.append(Target("passthrough", f"http://127.0.0.1:{port}/v1/chat/completions", "gpt-4o-mini", {}))

        def launch(name: str, cells: tuple[tuple[str, int], ...] = CELLS, **setup: Any) -> None:
            cfg, key = setup_trex(tmp / name, upstream, **setup)
            port = free_port()
            argv = [sys.executable, "-m", "worker", "dev", "--config", str(cfg), "--port", str(port)]
            procs.append(start(argv, tmp / f"{name}.log"))
            wait_http(f"http://127.0.0.1:{port}/health", 30)
            url = f"http://127.0.0.1:{port}/v1/chat/completions"
            local.append(Target(name, url, "gpt-4o-mini", {"Authorization": f"Bearer {key}"}, cells))

        launch("trex")
        # The same worker with usage accounting off: what accounting costs on the hot path.
        launch("trex-noacct", accounting=False)
        # Rate limits off and a key without a plan: what the per-request limit and quota checks cost.
        launch("trex-nochecks", checks=False)
        # The same pair on Redis (a database of its own, emptied first), at the cell the goal is about.
        if args.redis:
            flush_redis(args.redis)
            launch("trex-redis", cells=(("non-stream", 32),), kv_url=args.redis)
            launch("trex-redis-nochecks", cells=(("non-stream", 32),), kv_url=args.redis, checks=False)
        print(", ".join(t.name for t in local), "ready", flush=True)
        # Idle targets use no CPU, so all of them stay up and are measured in turns.
        runs += measure_interleaved(local, args.duration, args.rounds)
        names = [t.name for t in local]
        for name, proc in zip(names, procs, strict=True):
            rss[name] = tree_peak_rss_mib(proc.pid)
            rss[name + ":steady"] = tree_peak_rss_mib(proc.pid, "VmRSS")
        for proc in procs[1:]:
            stop(proc)
        del procs[1:]
        rss["floor"], rss["floor:steady"] = floor_rss_mib()

        if not args.skip_litellm:
            # LiteLLM is two orders of magnitude slower and its own process tree is large: one pass, alone.
            port = free_port()
            proc = start(["bash", str(LITELLM_START), upstream + "/v1", str(port), "1"], tmp / "litellm.log")
            procs.append(proc)
            peer_auth = {"Authorization": "Bearer sk-peer-master-1234"}
            wait_http(f"http://127.0.0.1:{port}/health/liveliness", 300, peer_auth)
            print("litellm ready", flush=True)
            lite = Target("litellm", f"http://127.0.0.1:{port}/v1/chat/completions", "mock-gpt", peer_auth)
            warm_up(lite)
            runs += [run_cell(lite, mode, conc, args.duration) for mode, conc in CELLS]
            rss["litellm"] = tree_peak_rss_mib(proc.pid)
            rss["litellm:steady"] = tree_peak_rss_mib(proc.pid, "VmRSS")
    finally:
        for proc in procs:
            stop(proc)

    report = render(runs, rss, args.duration, args.rounds)
    print(report)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps({"runs": [asdict(r) for r in runs], "peak_rss_mib": rss}, indent=2) + "\n"
        )
        write_section("proxy_overhead", report)
    return 0


def render(runs: list[Run], rss: dict[str, float], duration: float, rounds: int) -> str:
    by = {(r.target, r.mode, r.concurrency): r for r in runs}
    up = {(m, c): by[("upstream", m, c)] for m in ("non-stream", "stream") for c in (1, 32)}
    lines = [
        f"Run on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, wrk -t1, {duration:g} s per cell, one "
        f"load at a time against the same fake upstream; upstream, pass-through, trex, trex with usage "
        f"accounting off (trex-noacct), trex with rate limits off and a key without a plan (trex-nochecks), "
        f"and that pair on Redis (trex-redis, trex-redis-nochecks; non-stream c=32 only) measured in turns, "
        f"{rounds} rounds, median round per cell; LiteLLM one round, alone. trex's key is on a plan with "
        f"request and token quotas and rate limits are on (high enough never to refuse the load).",
        "",
        "| target | mode | conc. | RPS | p50 ms | p99 ms | added p50 ms | errors | peak RSS MiB | RSS after MiB |",
        "| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: | ---: |",
    ]
    for r in runs:
        added = "—" if r.target == "upstream" else f"{r.p50_ms - up[(r.mode, r.concurrency)].p50_ms:+.2f}"
        lines.append(
            f"| {r.target} | {r.mode} | {r.concurrency} | {r.rps:,.0f} | {r.p50_ms:.2f} | {r.p99_ms:.2f} | "
            f"{added} | {r.errors} | {rss.get(r.target, 0):.0f} | {rss.get(r.target + ':steady', 0):.0f} |"
        )
    lines += ["", "Goals (ratios from this run):", ""]
    trex = {(m, c): by.get(("trex", m, c)) for m in ("non-stream", "stream") for c in (1, 32)}
    goals: list[tuple[str, str, bool]] = []
    lite_ns, lite_s = by.get(("litellm", "non-stream", 32)), by.get(("litellm", "stream", 32))
    t_ns, t_s, t_c1 = trex[("non-stream", 32)], trex[("stream", 32)], trex[("non-stream", 1)]
    pt_ns = by.get(("passthrough", "non-stream", 32))
    if t_ns and lite_ns:
        ratio = t_ns.rps / lite_ns.rps
        goals.append(("non-stream c=32 vs LiteLLM >= 30x", f"{ratio:.1f}x", ratio >= 30))
    if t_s and lite_s:
        ratio = t_s.rps / lite_s.rps
        goals.append(("stream c=32 vs LiteLLM >= 20x", f"{ratio:.1f}x", ratio >= 20))
    if t_ns and pt_ns:
        ratio = t_ns.rps / pt_ns.rps
        goals.append(("non-stream c=32 vs pass-through >= 60%", f"{ratio:.0%}", ratio >= 0.6))
    off_ns = by.get(("trex-noacct", "non-stream", 32))
    if t_ns and off_ns:
        ratio = t_ns.rps / off_ns.rps
        goals.append(("non-stream c=32, accounting on vs off >= 90%", f"{ratio:.0%}", ratio >= 0.9))
    for kv, on, off in (
        ("SQLite", "trex", "trex-nochecks"),
        ("Redis", "trex-redis", "trex-redis-nochecks"),
    ):
        checked, unchecked = by.get((on, "non-stream", 32)), by.get((off, "non-stream", 32))
        if checked and unchecked:
            ratio = checked.rps / unchecked.rps
            goals.append(
                (
                    f"non-stream c=32, limit and quota checks on vs off >= 90% ({kv})",
                    f"{ratio:.0%}",
                    ratio >= 0.9,
                )
            )
    if t_c1:
        added = t_c1.p50_ms - up[("non-stream", 1)].p50_ms
        goals.append(("added p50 at c=1 <= 1 ms", f"{added:.2f} ms", added <= 1.0))
    if "trex" in rss:
        goals.append(("peak RSS <= 80 MiB", f"{rss['trex']:.0f} MiB", rss["trex"] <= 80))
    lines += ["| goal | measured | met |", "| --- | ---: | :---: |"]
    lines += [f"| {g} | {v} | {'yes' if ok else 'no'} |" for g, v, ok in goals]
    if "floor" in rss:
        lines += [
            "",
            f"Memory floor in this run: a process holding only Python, aiohttp and tiktoken's o200k tokenizer "
            f"(which every request is counted with) holds {rss['floor:steady']:.0f} MiB "
            f"({rss['floor']:.0f} MiB peak while the tokenizer loads), before any gateway code.",
        ]
    return "\n".join(lines)


if __name__ == "__main__":
    sys.exit(main())
