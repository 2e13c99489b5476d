"""Three tiers on the lab's real kernel: the cascade puts a workload's hot part on the top tier, its warm part on the
middle tier and leaves its cold part on the bottom tier, then follows a shift of the heat with moves between
adjacent tiers only.

The lab has no three-tier topology of its own (a new QEMU topology would cost another boot per kernel), so the policy
makes one from the guest's nodes: `tiers.overrides` {2: hbm} and `tiers.order` [hbm, ddr, cxl] give node 2 (the
CPU-less RAM node) > DDR nodes 0 and 1 > the CXL node. The top tier must be too small for the hot and warm parts
together, or both would end there: the `hbm` watermark leaves node 2 room for the hot part plus TOP_SLACK and no
more, measured once the daemon is up. Node 2 is the top because it has no CPU, so only what is placed there changes
its free memory; a DDR node's room drifted by tens of MiB within a minute (other processes, page cache), which made
such a mark meaningless (tried with node 1 on top: the warm part went up with the hot one).

The workload (64 MiB on the CXL node, the move_pages engine with DAMON vaddr tracking): 16 MiB hot, the 16 MiB after
it warm (touched every WARM_EVERY-th pass), 32 MiB cold. Verdicts come from the kernel (move_pages(2) queries per
part, /proc/PID/numa_maps for the whole buffer) and from the daemon's status and metrics (migrated pages per tier
pair). After the shift (SIGUSR1: hot and warm move 16 MiB on) the warm part, now hot, climbs from the middle tier to
the top, the old hot part sinks to the middle, the old cold part after it climbs to the middle, and no page moves
between the top and the bottom tier.
"""

from __future__ import annotations

import os
import signal
import time
from collections.abc import Callable
from typing import Any

import pytest
import yaml
from labkit import DaemonFactory, Workload, metric_pairs, numa_maps, settle, split

from cxltierd.discovery.live import node_memory
from cxltierd.hostfs import HostFS

MIB, HOT_MIB, WARM_MIB, WARM_EVERY = 64, 16, 16, 6
TOP, MIDDLE = (2,), (0, 1)
TOP_SLACK = 1 << 20  # room on the top node beyond the hot part: less than a 2 MiB region
EDGE_MIB = 4  # DAMON's precision at a part's edge: memory this close to it may move along
SHARE = 0.75  # of a part's pages on its tier (the top tier's room is exact to a region or two)
PAIRS = {"cxl->ddr", "ddr->hbm", "cxl->hbm", "hbm->ddr"}


def policy(cgroup: str | None, max_used_percent: float) -> dict[str, Any]:
    manage = [{"cgroup": cgroup}] if cgroup else [{"name": "no-such-process-cxltierd"}]
    return {
        "engine": "move_pages",
        "interval": "1s",
        "cooldown": "8s",
        "processes": {"manage": manage, "min_rss": "1MiB"},
        "tiers": {"overrides": {TOP[0]: "hbm"}, "order": ["hbm", "ddr", "cxl"]},
        "watermarks": {"hbm": {"min_free_percent": 0, "max_used_percent": max_used_percent}},
    }


@pytest.mark.usefixtures("no_kernel_migration")
def test_three_tiers_cascade_hot_warm_cold(
    cxl_node: int,
    workload: Callable[..., Workload],
    test_cgroup: str,
    lab_daemon: DaemonFactory,
    pages_on_nodes: Callable[[int, int, int], dict[int, int]],
) -> None:
    mib = 1 << 20
    hot, warm = HOT_MIB * mib, WARM_MIB * mib
    w = workload(cxl_node, MIB, HOT_MIB, warm_mib=WARM_MIB, warm_every=WARM_EVERY, shift_mib=HOT_MIB,
                 cgroup=test_cgroup, cpu=1, companion=True)  # fmt: skip
    assert w.placement() == {cxl_node: w.pages}

    # Up first, managing nothing; then the top node's room is measured and the real policy loaded (SIGHUP).
    d = lab_daemon(policy(None, 99))
    d.wait_ticks(2, 120)
    mem = node_memory(HostFS("/"), list(TOP))
    total, room = mem.total[TOP[0]], mem.available[TOP[0]]
    mark = 100 * (total - room + hot + TOP_SLACK) / total
    print(f"node {TOP[0]}: {total >> 20} MiB, {room >> 20} MiB available: hbm max_used_percent {mark:.3f}")
    d.policy_path.write_text(yaml.safe_dump(policy(test_cgroup, round(mark, 3)), sort_keys=False))
    d.proc.send_signal(signal.SIGHUP)
    d.wait_log(r"reloaded policy")

    def placed(start: int, size: int) -> dict[int, float]:
        return split(w, pages_on_nodes, start, size)

    def on(start: int, size: int, tier: tuple[int, ...]) -> float:
        """Share of [start, start + size) of the buffer on the tier's nodes."""
        return sum(v for n, v in placed(start, size).items() if n in tier)

    def parts() -> str:
        """Where each 8 MiB of the buffer is, and the daemon's moves so far (for a failure's message)."""
        eighths = [placed(i * 8 * mib, 8 * mib) for i in range(w.length // (8 * mib))]
        where = "; ".join(f"{8 * i}-{8 * i + 8} MiB: " + ", ".join(f"N{n} {v:.2f}" for n, v in sorted(e.items()))
                          for i, e in enumerate(eighths))  # fmt: skip
        moves = [
            line for line in d.log().splitlines() if "  move: " in line or ("tick" in line and "moved 0 B" not in line)
        ]
        now = node_memory(HostFS("/"), [*TOP, *MIDDLE])
        return f"placement {where}\navailable {now.available}\n" + "\n".join(moves[-80:])

    def phase(hot_at: int, what: str, timeout: float = 150.0) -> None:
        warm_at = (hot_at + hot) % w.length
        try:
            d.wait_for(
                lambda: on(hot_at, hot, TOP) >= SHARE and on(warm_at, warm, MIDDLE) >= SHARE,
                timeout,
                f"{what}: hot part on node {TOP}, warm part on node {MIDDLE}",
                poll=1.0,
            )
        except AssertionError as e:
            raise AssertionError(f"{str(e).splitlines()[0]}\n{parts()}") from None

    # Phase 1: hot [0, 16) MiB to the top tier, warm [16, 32) to the middle, cold [32, 64) stays at the bottom.
    launched = time.monotonic()
    phase(0, "phase 1")
    moved1 = settle(d)
    hot1, warm1 = on(0, hot, TOP), on(hot, warm, MIDDLE)
    cold1 = placed(hot + warm + EDGE_MIB * mib, w.length - hot - warm - EDGE_MIB * mib)
    print(f"phase 1 after {time.monotonic() - launched:.0f}s: hot {hot1}, warm {warm1}, cold {cold1}; moved {moved1}")
    print(parts())
    assert hot1 >= SHARE and warm1 >= SHARE, (hot1, warm1)
    assert on(hot, warm, TOP) <= 1 - SHARE  # the top tier's room went to the hottest part
    assert cold1 == {cxl_node: 1.0}, cold1
    assert set(moved1) <= PAIRS and moved1.get("cxl->ddr", 0) > 0, moved1
    assert metric_pairs(d) == moved1
    assert sum(w.placement().values()) == w.pages
    assert numa_maps(w.pid, w.addr) == w.placement()

    # Phase 2: the heat moves 16 MiB on: hot [16, 32) (in the middle tier), warm [32, 48) (at the bottom), and
    # [0, 16) (at the top) goes cold. Every move is between adjacent tiers.
    os.kill(w.pid, signal.SIGUSR1)
    shifted = time.monotonic()
    phase(hot, "phase 2")
    moved2 = settle(d)
    delta = {k: v - moved1.get(k, 0) for k, v in moved2.items() if v != moved1.get(k, 0)}
    hot2, warm2, old = on(hot, hot, TOP), on(hot + warm, warm, MIDDLE), on(0, hot, MIDDLE)
    cold2 = placed(hot + 2 * warm + EDGE_MIB * mib, w.length - hot - 2 * warm - EDGE_MIB * mib)
    print(f"phase 2 after {time.monotonic() - shifted:.0f}s: hot {hot2}, warm {warm2}, old hot {old}, cold {cold2}")
    print(f"phase 2 moves: {delta}")
    print(parts())
    assert hot2 >= SHARE and warm2 >= SHARE, (hot2, warm2)
    assert old >= SHARE, old  # the old hot part sank one tier, not two
    assert cold2 == {cxl_node: 1.0}, cold2
    assert delta.get("ddr->hbm", 0) > 0 and delta.get("hbm->ddr", 0) > 0 and delta.get("cxl->ddr", 0) > 0
    assert not {"cxl->hbm", "hbm->cxl"} & set(delta), delta
    assert metric_pairs(d) == moved2
    assert numa_maps(w.pid, w.addr) == w.placement()
    assert d.stop() == 0, d.tail()
