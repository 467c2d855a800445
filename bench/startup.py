"""`trex dev` start-up time: from process start to the first 200 on /health, over several cold starts.

    python -m bench.startup [--runs 5]

Goal: ready in under 2 s. Writes its line into README.md and bench/README.md.
"""

from __future__ import annotations

import argparse
import os
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import time
import urllib.request
from pathlib import Path

from bench import publish

ROOT = Path(__file__).resolve().parents[1]


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def one_start(tmp: Path) -> float:
    port = free_port()
    cfg = tmp / "wrangler_local.toml"
    cfg.write_text(f'[local]\npersist_to = "{tmp / "state"}"\n')
    (tmp / ".dev.vars").write_text("TREX_MASTER_KEY=" + "s" * 40 + "\n")
    t0 = time.monotonic()
    proc = subprocess.Popen(
        [sys.executable, "-m", "worker", "dev", "--config", str(cfg), "--port", str(port)],
        cwd=ROOT,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        start_new_session=True,
    )
    try:
        while time.monotonic() - t0 < 30:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=1) as r:
                    if r.status == 200:
                        return time.monotonic() - t0
            except OSError:
                time.sleep(0.01)
        raise RuntimeError("trex dev did not start within 30 s")
    finally:
        os.killpg(proc.pid, signal.SIGTERM)
        proc.wait(20)


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__)
    ap.add_argument("--runs", type=int, default=5)
    ap.add_argument("--no-write", action="store_true")
    args = ap.parse_args()
    times = []
    for _ in range(args.runs):
        with tempfile.TemporaryDirectory() as tmp:
            times.append(one_start(Path(tmp)))
    median, worst = statistics.median(times), max(times)
    line = (
        f"Run on {time.strftime('%Y-%m-%d')}: `trex dev` ready (first 200 on /health) in median "
        f"{median:.2f} s, worst {worst:.2f} s over {args.runs} cold starts; goal < 2 s: "
        f"{'met' if worst < 2 else 'not met'}."
    )
    publish("startup", line, not args.no_write)
    return 0


if __name__ == "__main__":
    sys.exit(main())
