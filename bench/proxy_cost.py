"""CPU cost per proxied request, counted in instructions by callgrind: what each part of the worker costs.

    python -m bench.proxy_cost [--requests 1000] [--jobs 2] [--no-write] [--targets passthrough,trex,...]

Wall-clock throughput on a shared two-core machine drifts by tens of percent between runs; the number of
instructions a process executes for the same requests drifts far less (callgrind counts them whatever else
the machine is doing). It is not fully independent of load: under callgrind the worker serves only a few
dozen requests a second, so work done once a second (cache refreshes with one-second lifetimes, usage
flushes, the access-log thread) falls on a share of requests that depends on how fast the machine runs it.
The same code has measured a few percent apart alone and beside another target: compare versions side by
side in one run. Each target runs under `valgrind --tool=callgrind` against
the fake OpenAI upstream of `bench.proxy_overhead`; after a warm-up its counters are zeroed, `--requests`
non-streaming chat completions are sent 32 at a time, background work (usage flushes) is given time to run,
and the counters are dumped. Every thread of the process is counted; the kernel's share (socket system
calls) is not, and is about the same for every target.

Targets: the minimal aiohttp pass-through (the Python ceiling), the worker as `bench.proxy_overhead` runs it
(quota plan, rate limits, usage accounting, access log, balanced optimizer), and the worker with one part
turned off at a time, then with all of them off. The pass-through's count as a share of the worker's is
the throughput ratio the worker could reach on a CPU-bound machine.
"""

from __future__ import annotations

import argparse
import asyncio
import concurrent.futures
import json
import re
import shutil
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import aiohttp

from bench import publish
from bench.proxy_overhead.__main__ import _body, free_port, setup_trex, start, stop, wait_http

WARM_UP = 300
CONCURRENCY = 32
SETTLE_SECONDS = 2.5  # > USAGE_FLUSH_SECONDS: the requests' usage and log entries are written in the count


@dataclass
class Variant:
    name: str
    what: str
    setup: dict[str, Any] = field(default_factory=dict)


VARIANTS = (
    Variant("trex", "as benchmarked: quota plan, rate limits, usage accounting, access log, optimizer"),
    Variant("trex, access log off", "`[local] access_log = false`", {"access_log": False}),
    Variant("trex, accounting off", '`USAGE_ACCOUNTING = "off"`', {"accounting": False}),
    Variant("trex, checks off", "rate limits off, key without a plan", {"checks": False}),
    Variant(
        "trex, optimizer off", '`OPTIMIZE_MODE = "off"` (input tokens still counted)', {"optimize": "off"}
    ),
    Variant(
        "trex, all four off",
        "access log, accounting, checks and optimizer off: authentication, routing and the request log",
        {"access_log": False, "accounting": False, "checks": False, "optimize": "off"},
    ),
)

# Short names for --targets (a partial run, to compare two versions of the worker quickly).
SHORT_NAMES = {
    "passthrough": "passthrough",
    "trex": "trex",
    "trex-log-off": "trex, access log off",
    "trex-accounting-off": "trex, accounting off",
    "trex-checks-off": "trex, checks off",
    "trex-optimizer-off": "trex, optimizer off",
    "trex-all-off": "trex, all four off",
}


async def _load(url: str, headers: dict[str, str], n: int) -> None:
    body = json.dumps(_body("gpt-4o-mini", "non-stream")).encode()
    left = n
    async with aiohttp.ClientSession(connector=aiohttp.TCPConnector(limit=0)) as session:

        async def one_by_one() -> None:
            nonlocal left
            while left > 0:
                left -= 1
                async with session.post(
                    url, data=body, headers={"Content-Type": "application/json", **headers}
                ) as r:
                    await r.read()
                    if r.status != 200:
                        raise RuntimeError(f"{url} answered {r.status}")

        await asyncio.gather(*(one_by_one() for _ in range(CONCURRENCY)))


def _total(out_dir: Path) -> int:
    """The instruction total of the last dump (callgrind writes one file per dump)."""
    dumps = sorted(out_dir.glob("cg.*"), key=lambda p: p.stat().st_mtime)
    if not dumps:
        raise RuntimeError(f"callgrind wrote no dump in {out_dir}")
    for line in dumps[-1].read_text(errors="replace").splitlines():
        m = re.match(r"(?:summary|totals):\s+(\d+)", line)
        if m:
            return int(m.group(1))
    raise RuntimeError(f"no totals in {dumps[-1]}")


def measure(name: str, upstream: str, tmp: Path, requests: int, setup: dict[str, Any] | None) -> float:
    """Instructions per request of one target (None setup: the pass-through)."""
    work = tmp / re.sub(r"\W+", "-", name)
    work.mkdir(parents=True)
    port = free_port()
    valgrind = ["valgrind", "--tool=callgrind", f"--callgrind-out-file={work}/cg.%p", "--dump-instr=no"]
    headers: dict[str, str] = {}
    if setup is None:
        argv = [sys.executable, "-m", "bench.proxy_overhead.passthrough", str(port), upstream + "/v1"]
        ready = f"http://127.0.0.1:{port}/v1/chat/completions"
    else:
        cfg, key = setup_trex(work / "trex", upstream, **setup)
        argv = [sys.executable, "-m", "worker", "dev", "--config", str(cfg), "--port", str(port)]
        ready = f"http://127.0.0.1:{port}/health"
        headers = {"Authorization": f"Bearer {key}"}
    proc = start(valgrind + argv, work / "target.log")
    try:
        wait_http(ready, 300)
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        asyncio.run(_load(url, headers, WARM_UP))
        time.sleep(SETTLE_SECONDS)
        subprocess.run(["callgrind_control", "--zero", str(proc.pid)], check=True, capture_output=True)
        asyncio.run(_load(url, headers, requests))
        time.sleep(SETTLE_SECONDS)
        subprocess.run(["callgrind_control", "--dump", str(proc.pid)], check=True, capture_output=True)
        time.sleep(1.0)
        per_request = _total(work) / requests
    finally:
        stop(proc)
    print(f"  {name:<22} {per_request / 1000:8.0f} k instructions per request", flush=True)
    return per_request


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("--requests", type=int, default=1000)
    ap.add_argument("--jobs", type=int, default=2, help="targets measured at the same time")
    ap.add_argument("--no-write", action="store_true", help="print only; leave the READMEs alone")
    ap.add_argument(
        "--targets",
        help="comma-separated short names of the targets to measure (implies --no-write): "
        + ", ".join(SHORT_NAMES),
    )
    args = ap.parse_args()
    wanted = list(SHORT_NAMES)
    if args.targets:
        wanted = [t.strip() for t in args.targets.split(",") if t.strip()]
        unknown = [t for t in wanted if t not in SHORT_NAMES]
        if unknown:
            ap.error(f"unknown targets {unknown}; choose from {', '.join(SHORT_NAMES)}")
    if not (shutil.which("valgrind") and shutil.which("callgrind_control")):
        print("valgrind is required: apt-get install valgrind", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="trex-cost-"))
    up_port = free_port()
    upstream = f"http://127.0.0.1:{up_port}"
    up = start([sys.executable, "-m", "bench.proxy_overhead.upstream", str(up_port)], tmp / "upstream.log")
    try:
        wait_http(upstream + "/health", 20)
        setups: dict[str, dict[str, Any] | None] = {"passthrough": None}
        setups.update((v.name, v.setup) for v in VARIANTS)
        targets = [(SHORT_NAMES[t], setups[SHORT_NAMES[t]]) for t in wanted]
        with concurrent.futures.ThreadPoolExecutor(args.jobs) as pool:
            futures = {
                name: pool.submit(measure, name, upstream, tmp, args.requests, s) for name, s in targets
            }
            cost = {name: f.result() for name, f in futures.items()}
    finally:
        stop(up)
    if args.targets:
        # A partial run is for comparing two versions of the worker, not for the published table.
        return 0
    full, ceiling = cost["trex"], cost["passthrough"]
    lines = [
        f"Run on {time.strftime('%Y-%m-%d')}: instructions per non-streaming request (callgrind, all threads, "
        f"user space), {args.requests} requests {CONCURRENCY} at a time after a warm-up of {WARM_UP}. "
        "'Saved' is what turning that part off removes from the full worker's count; 'pass-through / target' "
        "is the throughput share of the pass-through the target could reach when the CPU is the limit.",
        "",
        "| target | what | k instructions / request | saved vs trex | pass-through / target |",
        "| --- | --- | ---: | ---: | ---: |",
        f"| passthrough | minimal aiohttp proxy | {ceiling / 1000:,.0f} | — | 100% |",
    ]
    for v in VARIANTS:
        c = cost[v.name]
        saved = "—" if v.name == "trex" else f"{(full - c) / 1000:,.0f}k ({(full - c) / full:.0%})"
        lines.append(f"| {v.name} | {v.what} | {c / 1000:,.0f} | {saved} | {ceiling / c:.0%} |")
    report = "\n".join(lines)
    publish("proxy_cost", report, not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
