"""Gates for kernel-executed engines: a pure function from node usage to "promotion on / demotion on".

The kernel (DAMOS schemes, NUMA-balancing tiering) moves memory by itself; the policy's watermarks decide when it
may. Promotion runs while the fastest node is below its tier's max_used_percent; demotion runs only above it. The
same mark bounds decide()'s promotions, so both kinds of engine fill the fast tier to the same level. "Free" here is
the room the loop passes: a node's available memory (Sample.room), so page cache does not count as used.
"""

from __future__ import annotations

from collections.abc import Mapping

from cxltierd.model import Gates
from cxltierd.policy.roles import Roles
from cxltierd.policy.schema import Policy


def used_percent(node: int, free: Mapping[int, int], total: Mapping[int, int]) -> float | None:
    """Percent of a node's memory in use, or None when the node reports no memory (gone, or not sampled)."""
    if node not in free or not total.get(node):
        return None
    return 100 * (total[node] - free[node]) / total[node]


def kernel_gates(
    roles: Roles, policy: Policy, free: Mapping[int, int], total: Mapping[int, int], previous: Gates
) -> Gates:
    """The gates for this tick; `previous` when the fastest node's usage is unknown."""
    if not roles.fast:
        return previous
    node = roles.fast[0]
    used = used_percent(node, free, total)
    if used is None:
        return previous
    mark = policy.watermark(roles.kind.get(node, "unknown")).max_used_percent
    return Gates(promote=used < mark, demote=used > mark)
