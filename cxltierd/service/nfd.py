"""Node labels for Kubernetes schedulers, as a node-feature-discovery feature file (its "local" source).

NFD's worker reads `name=value` lines from /etc/kubernetes/node-feature-discovery/features.d/*; a name with a
prefix is used as the label as is. Our labels live under LABEL_PREFIX (a sub-domain of NFD's own namespace, which
NFD allows by default): the tiers present fast to slow, each tier's capacity in whole GiB (integers, so node
affinity can use Gt/Lt), and whether CXL memory is online. The file is replaced atomically, and only when its
content changes.
"""

from __future__ import annotations

import logging
import os
import re

from cxltierd.service.state import Snapshot

log = logging.getLogger("cxltierd")

LABEL_PREFIX = "cxltierd.feature.node.kubernetes.io/"
GiB = 1 << 30


def _name(text: str) -> str:
    """A tier name as a label-name fragment: lower-case letters, digits and dashes."""
    return re.sub(r"[^a-z0-9]+", "-", text.lower()).strip("-") or "unknown"


def labels(s: Snapshot) -> dict[str, str]:
    """The node's labels (without prefix) from a snapshot: tiers, capacity per tier, CXL present."""
    tiers = [_name(t.name) for t in s.topology.tiers]
    out = {"tiers": ".".join(tiers) or "none"}
    for t, (total, _free) in zip(tiers, s.tier_usage().values(), strict=True):
        out[f"tier-{t}"] = "true"
        out[f"tier-{t}-capacity-gib"] = str(total // GiB)
    cxl_nodes = [n for n in s.topology.nodes if n.kind in ("cxl", "cxl-far")]
    out["cxl"] = "true" if cxl_nodes else "false"
    out["cxl-memdevs"] = str(len(s.facts.memdevs) if s.facts else 0)
    return out


def feature_file(s: Snapshot) -> str:
    """The feature file's text."""
    body = "".join(f"{LABEL_PREFIX}{k}={v}\n" for k, v in sorted(labels(s).items()))
    return (
        "# Written by cxltierd (node_labels.feature_file in its policy); replaced when the topology changes.\n" + body
    )


class FeatureFile:
    """Keeps one feature file up to date: writes it when the path or the text changes; a failure is logged once
    per path and text (one line), never raised: labels are not the daemon's job itself."""

    def __init__(self) -> None:
        self.done: tuple[str, str] | None = None  # (path, text) last written or last failed

    def update(self, path: str | None, s: Snapshot | None) -> None:
        """Write `s`'s labels to `path` (nothing when path is None or there is no snapshot yet)."""
        if not path or s is None:
            return
        text = feature_file(s)
        if self.done == (path, text):
            return
        self.done = (path, text)
        head, base = os.path.split(path)
        tmp = os.path.join(head, f".{base}.tmp")  # hidden: never read as a second feature file
        try:
            with open(tmp, "w") as f:
                f.write(text)
            os.replace(tmp, path)
        except OSError as e:
            log.error("node_labels.feature_file %s: cannot write (%s): no node labels", path, e.strerror or e)
            return
        log.info("node labels written to %s", path)
