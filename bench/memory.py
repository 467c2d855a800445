"""Where a `trex dev` worker's resident memory goes: after start-up, after its first request, and at its peak
under proxy_overhead's load, then by mapping (heap, anonymous, each shared library).

    python -m bench.memory [--duration 10]

Prints only; nothing is written. The worker is set up as proxy_overhead sets up its "trex" target (a key on
a plan, a bound provider key, rate limits on, SQLite KV, access log on) against the same fake upstream.
"""

from __future__ import annotations

import argparse
import json
import re
import shutil
import sys
import tempfile
import urllib.request
from collections import Counter
from pathlib import Path

from bench.proxy_overhead.__main__ import _body, free_port, setup_trex, start, stop, wait_http, wrk


def status(pid: int) -> str:
    """VmHWM (peak), VmRSS and thread count of a process."""
    text = Path(f"/proc/{pid}/status").read_text()

    def field(name: str) -> str:
        m = re.search(rf"^{name}:\s+(\d+)", text, re.M)
        return m.group(1) if m else "0"

    return f"peak {int(field('VmHWM')) / 1024:6.1f} MiB, now {int(field('VmRSS')) / 1024:6.1f} MiB, threads {field('Threads')}"


def by_mapping(pid: int, top: int = 12) -> list[tuple[str, float]]:
    """Resident MiB per mapping name: [heap], anonymous maps (malloc'd blocks, Python's arenas, thread stacks),
    and each file (shared libraries, extension modules)."""
    rss: Counter[str] = Counter()
    name = ""
    for line in Path(f"/proc/{pid}/smaps").read_text().splitlines():
        head = line.split()
        if re.match(r"^[0-9a-f]+-[0-9a-f]+ ", line):
            name = head[5].rsplit("/", 1)[-1] if len(head) > 5 else "[anonymous]"
        elif head[0] == "Rss:":
            rss[name] += int(head[1]) / 1024
    return rss.most_common(top)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--duration", type=float, default=10.0, help="seconds of load per mode")
    args = ap.parse_args()
    if not shutil.which("wrk"):
        print("wrk is required: apt-get install wrk", file=sys.stderr)
        return 2
    tmp = Path(tempfile.mkdtemp(prefix="trex-memory-"))
    procs = []
    try:
        up = free_port()
        upstream = f"http://127.0.0.1:{up}"
        procs.append(start([sys.executable, "-m", "bench.proxy_overhead.upstream", str(up)], tmp / "up.log"))
        wait_http(upstream + "/health", 20)
        cfg, key = setup_trex(tmp / "trex", upstream)
        port = free_port()
        worker = start(
            [sys.executable, "-m", "worker", "dev", "--config", str(cfg), "--port", str(port)],
            tmp / "trex.log",
        )
        procs.append(worker)
        wait_http(f"http://127.0.0.1:{port}/health", 30)
        print(f"started:              {status(worker.pid)}")
        url = f"http://127.0.0.1:{port}/v1/chat/completions"
        headers = {"Authorization": f"Bearer {key}"}
        body = json.dumps(_body("gpt-4o-mini", "non-stream")).encode()
        req = urllib.request.Request(url, data=body, headers={**headers, "Content-Type": "application/json"})
        with urllib.request.urlopen(req, timeout=30) as r:
            r.read()
        print(f"after one request:    {status(worker.pid)}")
        for mode in ("non-stream", "stream"):
            w = wrk(url, _body("gpt-4o-mini", mode), headers, 32, args.duration)
            print(
                f"after {mode:<10} c=32: {status(worker.pid)} ({w['rps']:.0f} rps, {w['errors']:.0f} errors)"
            )
        print("resident by mapping:")
        for name, mib in by_mapping(worker.pid):
            print(f"  {mib:6.1f} MiB  {name}")
    finally:
        for proc in procs:
            stop(proc)
    return 0


if __name__ == "__main__":
    sys.exit(main())
