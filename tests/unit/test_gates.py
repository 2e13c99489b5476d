"""The gates of kernel-executed engines: a pure function of the fastest node's usage and the policy's marks."""

from cxltierd.model import Gates
from cxltierd.policy.gates import kernel_gates, used_percent
from cxltierd.policy.roles import roles
from cxltierd.policy.schema import build_policy
from cxltierd.topology import Node, Tier, Topology

GiB = 1 << 30
TOPO = Topology(
    nodes=(Node(0, "ddr", "t", cpus=(0,)), Node(4, "cxl", "t")),
    tiers=(Tier("ddr", 0, (0,)), Tier("cxl", 1, (4,))),
)


def test_promotion_below_the_mark_demotion_above_it():
    pol = build_policy({"watermarks": {"ddr": {"max_used_percent": 80, "min_free_percent": 10}}})
    r = roles(TOPO, pol)
    assert kernel_gates(r, pol, {0: 2 * GiB}, {0: 4 * GiB}, Gates()) == Gates(promote=True, demote=False)
    assert kernel_gates(r, pol, {0: GiB // 10}, {0: 4 * GiB}, Gates()) == Gates(promote=False, demote=True)
    # exactly at the mark: neither (no ping-pong at the boundary)
    assert kernel_gates(r, pol, {0: 2 * GiB}, {0: 10 * GiB}, Gates()) == Gates(promote=False, demote=False)


def test_unknown_usage_keeps_the_previous_gates():
    pol = build_policy({})
    r = roles(TOPO, pol)
    before = Gates(promote=False, demote=True)
    assert kernel_gates(r, pol, {}, {}, before) is before  # the fast node was not sampled (unplugged)
    assert kernel_gates(r, pol, {0: 0}, {0: 0}, before) is before
    assert used_percent(0, {0: GiB}, {0: 4 * GiB}) == 75.0
