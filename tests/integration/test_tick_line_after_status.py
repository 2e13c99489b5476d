"""Once the daemon's log shows "tick N:", `status` answers for that tick (never "daemon is starting"): scripts and
the lab wait for the tick line, then ask."""

from __future__ import annotations

import logging
from pathlib import Path

import pytest

from cxltierd.app import Settings, build
from cxltierd.service.daemon import Daemon, FakeClock, Options


def test_the_tick_line_comes_after_the_status_it_reports(tmp_path: Path, caplog: pytest.LogCaptureFixture) -> None:
    policy = tmp_path / "policy.yaml"
    policy.write_text("interval: 5s\n")
    rt, loop = build(Settings(backend="emulated", config=str(policy), seed=1, state_dir=str(tmp_path / "state")))
    d = Daemon(rt, loop, Options(), clock=FakeClock())
    seen: list[int | None] = []

    class AtTickLine(logging.Handler):
        def emit(self, record: logging.LogRecord) -> None:
            if record.getMessage().startswith("tick "):
                seen.append(d.snapshot.ticks if d.snapshot is not None else None)

    handler = AtTickLine()
    logging.getLogger("cxltierd").addHandler(handler)
    caplog.set_level(logging.INFO, logger="cxltierd")
    try:
        loop.start()
        for t in (0, 5):
            d.clock.t = float(t)
            d._tick()
    finally:
        logging.getLogger("cxltierd").removeHandler(handler)
        d._shutdown()
    assert seen == [1, 2], seen
