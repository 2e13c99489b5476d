"""Bandwidth telemetry on the lab's real kernel. The guest has no memory-bandwidth PMU (no uncore_imc: TCG's CPU
model has none; no cxl_pmu: QEMU's cxl-type3 has no CPMU and the Debian kernels lack CONFIG_CXL_PMU), so what is
proven here is the fallback and the syscall layer: `doctor` and the daemon say the perf model runs on access-rate
estimates, and perf_event_open(2) through cxltierd's ctypes layer opens and reads a real counter (the software
cpu-clock event, system-wide on CPU 0) whose meter rate is about one second of CPU clock per second."""

from __future__ import annotations

import json
import subprocess
import time
from pathlib import Path

from labkit import DaemonFactory

from cxltierd.discovery.pmu import Counter
from cxltierd.engines.perfevent import BandwidthMeter

CXLTIERD = str(Path(__file__).resolve().parents[2] / ".venv/bin/cxltierd")
DEVICES = Path("/sys/bus/event_source/devices")
PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK = 1, 0


def test_no_memory_pmu_so_doctor_and_daemon_say_estimates(lab_daemon: DaemonFactory) -> None:
    pmus = sorted(p.name for p in DEVICES.iterdir())
    print(f"event sources: {pmus}")
    assert not [p for p in pmus if p.startswith(("uncore_imc", "cxl_pmu"))], pmus
    out = subprocess.run([CXLTIERD, "doctor", "--json"], capture_output=True, text=True, timeout=120)
    line = next(c for c in json.loads(out.stdout) if c["name"] == "bandwidth")
    assert line["status"] == "ok" and "access-rate estimates" in line["message"], line
    d = lab_daemon({"processes": {"manage": [{"name": "no-such-process-cxltierd"}]}, "objective": "latency"})
    d.wait_log(r"bandwidth: no uncore_imc or cxl_pmu memory-bandwidth counters .* access-rate estimates")
    d.wait_ticks(1)
    assert d.stop() == 0


def test_perf_event_open_reads_a_real_counter() -> None:
    clock = Counter("software", "cpu-clock", PERF_TYPE_SOFTWARE, PERF_COUNT_SW_CPU_CLOCK, 0, 0, 0, 0, 1.0, "read")
    meter = BandwidthMeter([clock])
    assert meter.open() == [] and meter.nodes() == (0,)
    try:
        assert meter.sample(time.monotonic()) == {}
        time.sleep(2.0)
        rate = meter.sample(time.monotonic())
    finally:
        meter.close()
    print(f"cpu-clock on CPU 0: {rate[0] / 1e9:.3f} s per s")
    assert 0.5e9 < rate[0] < 1.5e9, rate
