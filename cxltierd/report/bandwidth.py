"""`doctor`'s bandwidth line: which source the perf model's per-node load comes from (PMU counters or the sampled
access rates) and why. Pure: the telemetry found by cxltierd.discovery.pmu -> checks."""

from __future__ import annotations

from cxltierd.discovery.pmu import Telemetry
from cxltierd.report.doctor import Check


def bandwidth_checks(telemetry: Telemetry) -> list[Check]:
    """One `bandwidth` check: ok either way (estimates are the documented fallback), naming the source and why."""
    return [Check("bandwidth", "ok", telemetry.reason)]
