"""Weighted-interleave weights from bandwidth: a pure function of the nodes' read bandwidth."""

from __future__ import annotations

import math
from collections.abc import Mapping

WEIGHTINESS = 32  # the fastest node's weight before reduction (as the kernel's auto mode scales)
MAX_WEIGHT = 255  # the kernel refuses weights outside 1..255


def bandwidth_weights(bandwidth: Mapping[int, int | float]) -> dict[int, int]:
    """Node -> interleave weight in proportion to its bandwidth: the fastest node gets WEIGHTINESS, every node at
    least 1, then all are divided by their greatest common divisor. Nodes without a positive bandwidth are left out."""
    bw = {n: float(b) for n, b in bandwidth.items() if b and b > 0}
    if not bw:
        return {}
    top = max(bw.values())
    raw = {n: min(MAX_WEIGHT, max(1, round(b * WEIGHTINESS / top))) for n, b in bw.items()}
    g = math.gcd(*raw.values())
    return {n: w // g for n, w in sorted(raw.items())}
