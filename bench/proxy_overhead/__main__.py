"""Proxy overhead benchmark: the same wrk load against a fake OpenAI upstream directly, a minimal aiohttp
pass-through proxy, this worker (auth on) and LiteLLM, non-streaming and streaming, at concurrency 1 and 32.

    python -m bench.proxy_overhead [--duration 5] [--skip-litellm] [--no-write]

Everything runs on loopback, one target at a time (so targets do not compete for the two cores), each
bounded by --duration. Writes the table into README.md and bench/README.md, and raw numbers into bench/results/.
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

from bench import write_section

ROOT = Path(__file__).resolve().parents[2]
LITELLM_START = ROOT.parent / "shared" / "peers" / "litellm" / "start.sh"
RESULTS = ROOT / "bench" / "results" / "proxy_overhead.json"
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


def measure(target: str, url: str, model: str, headers: dict[str, str], duration: float) -> list[Run]:
    runs = []
    for mode in ("non-stream", "stream"):
        body: dict[str, object] = {"model": model, "messages": MESSAGES}
        if mode == "stream":
            body["stream"] = True
        wrk(url, body, headers, 8, 1.0)  # warm-up: pools, caches, JIT-free but lazy imports
        for conc in (1, 32):
            r = wrk(url, body, headers, conc, duration)
            runs.append(
                Run(target, mode, conc, r["rps"], r["p50"], r["p99"], int(r["requests"]), int(r["errors"]))
            )
            print(
                f"  {target:<12} {mode:<10} c={conc:<3} {r['rps']:>9.1f} rps  p50 {r['p50']:.2f} ms  "
                f"p99 {r['p99']:.2f} ms  errors {int(r['errors'])}",
                flush=True,
            )
    return runs


def setup_trex(tmp: Path, upstream: str) -> tuple[Path, str]:
    cfg = tmp / "wrangler_local.toml"
    cfg.write_text(
        f'name = "bench"\n[vars]\nOPENAI_BASE_URL = "{upstream}/v1"\n'
        f'[local]\npersist_to = "{tmp / "state"}"\n'
    )
    (tmp / ".dev.vars").write_text("TREX_MASTER_KEY=" + "b" * 48 + "\n")
    cli = [sys.executable, "-m", "worker"]
    created = json.loads(
        subprocess.run(
            [*cli, "keys", "create", "--config", str(cfg), "--name", "bench", "--json"],
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
    ap.add_argument("--skip-litellm", action="store_true")
    ap.add_argument("--no-write", action="store_true", help="print only; leave bench/README.md alone")
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
        runs += measure("upstream", upstream + "/v1/chat/completions", "gpt-4o-mini", {}, args.duration)

        targets: list[tuple[str, list[str], str, str, dict[str, str], str, dict[str, str]]] = []
        port = free_port()
        targets.append(
            (
                "passthrough",
                [sys.executable, "-m", "bench.proxy_overhead.passthrough", str(port), upstream + "/v1"],
                f"http://127.0.0.1:{port}",
                "gpt-4o-mini",
                {},
                "/v1/chat/completions",
                {},
            )
        )
        cfg, key = setup_trex(tmp, upstream)
        port = free_port()
        targets.append(
            (
                "trex",
                [sys.executable, "-m", "worker", "dev", "--config", str(cfg), "--port", str(port)],
                f"http://127.0.0.1:{port}",
                "gpt-4o-mini",
                {"Authorization": f"Bearer {key}"},
                "/health",
                {},
            )
        )
        if not args.skip_litellm:
            port = free_port()
            targets.append(
                (
                    "litellm",
                    ["bash", str(LITELLM_START), upstream + "/v1", str(port), "1"],
                    f"http://127.0.0.1:{port}",
                    "mock-gpt",
                    {"Authorization": "Bearer sk-peer-master-1234"},
                    "/health/liveliness",
                    {},
                )
            )

        for name, argv, base, model, headers, ready_path, env in targets:
            proc = start(argv, tmp / f"{name}.log", env)
            procs.append(proc)
            wait_http(base + ready_path, 300 if name == "litellm" else 30, headers)
            print(f"{name} ready on {base}", flush=True)
            runs += measure(name, base + "/v1/chat/completions", model, headers, args.duration)
            rss[name] = tree_peak_rss_mib(proc.pid)
            rss[name + ":steady"] = tree_peak_rss_mib(proc.pid, "VmRSS")
            stop(proc)
            procs.remove(proc)
        rss["upstream"] = tree_peak_rss_mib(procs[0].pid)
        rss["floor"], rss["floor:steady"] = floor_rss_mib()
    finally:
        for proc in procs:
            stop(proc)

    report = render(runs, rss, args.duration)
    print(report)
    if not args.no_write:
        RESULTS.parent.mkdir(parents=True, exist_ok=True)
        RESULTS.write_text(
            json.dumps({"runs": [asdict(r) for r in runs], "peak_rss_mib": rss}, indent=2) + "\n"
        )
        write_section("proxy_overhead", report)
    return 0


def render(runs: list[Run], rss: dict[str, float], duration: float) -> str:
    by = {(r.target, r.mode, r.concurrency): r for r in runs}
    up = {(m, c): by[("upstream", m, c)] for m in ("non-stream", "stream") for c in (1, 32)}
    lines = [
        f"Run on {time.strftime('%Y-%m-%d')}, {os.cpu_count()} cores, wrk -t1, {duration:g} s per cell, "
        "one target at a time against the same fake upstream.",
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
