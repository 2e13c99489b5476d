#!/usr/bin/env python3
"""Soak: the emulated daemon under a bounded scrape load and a reload storm on loopback, for a set time.

    .venv/bin/python benchmarks/soak.py [--seconds 180] [--interval 0.2] [--scrapes 50] [--reloads 5]

Starts `cxltierd run --backend emulated` with a policy ticking every --interval seconds, /metrics on 127.0.0.1 and
a private control socket. For --seconds it scrapes /metrics --scrapes times a second (one client, sequential, so
the load is bounded) and reloads --reloads times a second over the control socket, alternating a good policy and a
hostile one (an alias bomb, a 5000-digit integer, a pathological regex, a '²' node key: each must be refused while
the good one stays in force). It prints the ticks done against the ticks due (on time when within 5%), the scrape
latency percentiles, the reload results and the daemon's RSS at start and end; exit 1 when the daemon died, a
hostile policy was applied, or fewer than 95% of the ticks were done.
"""

from __future__ import annotations

import argparse
import shutil
import socket
import subprocess
import sys
import tempfile
import threading
import time
import urllib.request
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from cxltierd.service.control import ControlError, request  # noqa: E402

HOSTILE = [
    "a: &a [x, x, x, x, x, x, x, x, x, x]\n"
    + "".join(f"{c}: &{c} [{', '.join([f'*{p}'] * 10)}]\n" for p, c in zip("abcdefgh", "bcdefghi", strict=True)),
    "interval: " + "9" * 5000 + "\n",
    "processes: {manage: [{regex: '^(a+)+$'}]}\n",
    "tiers: {overrides: {'²': cxl}}\n",
]


def rss_kib(pid: int) -> int:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1])
    return 0


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(q * len(ordered)))] if ordered else float("nan")


def main() -> int:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--seconds", type=float, default=180.0)
    ap.add_argument("--interval", type=float, default=0.2, help="the policy's tick interval")
    ap.add_argument("--scrapes", type=float, default=50.0, help="scrapes per second (sequential)")
    ap.add_argument("--reloads", type=float, default=5.0, help="reloads per second")
    args = ap.parse_args()

    tmp = Path(tempfile.mkdtemp(prefix="cxltierd-soak-"))
    good = f"interval: {args.interval}s\nrate_limit: {{mb_per_s: 2048}}\n"
    policy, ctl, port = tmp / "policy.yaml", str(tmp / "ctl.sock"), free_port()
    policy.write_text(good)
    command = [sys.executable, "-m", "cxltierd", "run", "--backend", "emulated", "--config", str(policy)]
    command += ["--listen", f"127.0.0.1:{port}", "--socket", ctl, "--log-level", "warning"]
    log = open(tmp / "daemon.log", "w")  # noqa: SIM115 (closed at the end)
    proc = subprocess.Popen(command, stdout=log, stderr=subprocess.STDOUT, cwd=REPO)
    try:
        deadline = time.monotonic() + 120
        while True:
            try:
                if request(ctl, "status", timeout=5).get("ok"):
                    break
            except ControlError:
                pass
            if proc.poll() is not None or time.monotonic() > deadline:
                print(f"daemon did not start:\n{(tmp / 'daemon.log').read_text()}")
                return 1
            time.sleep(0.2)
        rss_start = rss_kib(proc.pid)
        ticks_start = request(ctl, "status")["status"]["ticks"]
        started = time.monotonic()
        stop = threading.Event()
        latencies: list[float] = []
        scrape_errors = [0]
        results = {"applied": 0, "refused": 0, "hostile applied": 0, "errors": 0}

        def scrape() -> None:
            while not stop.is_set():
                t = time.monotonic()
                try:
                    with urllib.request.urlopen(f"http://127.0.0.1:{port}/metrics", timeout=10) as r:
                        r.read()
                    latencies.append(time.monotonic() - t)
                except OSError:
                    scrape_errors[0] += 1
                stop.wait(max(0.0, 1 / args.scrapes - (time.monotonic() - t)))

        def reload() -> None:
            i = 0
            while not stop.is_set():
                t = time.monotonic()
                hostile = i % 2 == 1
                policy.write_text(HOSTILE[(i // 2) % len(HOSTILE)] if hostile else good)
                try:
                    ok = request(ctl, "reload", timeout=30).get("ok")
                    results["applied" if ok else "refused"] += 1
                    results["hostile applied"] += bool(ok and hostile)
                except ControlError:
                    results["errors"] += 1
                i += 1
                stop.wait(max(0.0, 1 / args.reloads - (time.monotonic() - t)))

        threads = [threading.Thread(target=f, daemon=True) for f in (scrape, reload)]
        for t in threads:
            t.start()
        while time.monotonic() - started < args.seconds and proc.poll() is None:
            time.sleep(0.5)
        stop.set()
        for t in threads:
            t.join(30)
        if proc.poll() is not None:
            print(f"daemon died ({proc.returncode}):\n{(tmp / 'daemon.log').read_text()[-3000:]}")
            return 1
        elapsed = time.monotonic() - started
        ticks = request(ctl, "status")["status"]["ticks"] - ticks_start
        due = elapsed / args.interval
        rss_end = rss_kib(proc.pid)
        print(f"{elapsed:.0f} s: {ticks} ticks of {due:.0f} due ({100 * ticks / due:.1f}%)")
        print(
            f"scrapes: {len(latencies)} ok, {scrape_errors[0]} failed; latency p50 {1000 * percentile(latencies, 0.5):.1f}"
            f" ms, p90 {1000 * percentile(latencies, 0.9):.1f} ms, p99 {1000 * percentile(latencies, 0.99):.1f} ms,"
            f" max {1000 * max(latencies, default=float('nan')):.1f} ms"
        )
        print("reloads: " + ", ".join(f"{v} {k}" for k, v in results.items()))
        print(f"RSS: {rss_start / 1024:.1f} MiB at start, {rss_end / 1024:.1f} MiB at end")
        return 0 if ticks >= 0.95 * due and not results["hostile applied"] else 1
    finally:
        proc.terminate()
        try:
            proc.wait(20)
        except subprocess.TimeoutExpired:
            proc.kill()
        log.close()
        shutil.rmtree(tmp, ignore_errors=True)


if __name__ == "__main__":
    sys.exit(main())
