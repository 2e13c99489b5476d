"""Weighted interleave (kernel 6.9+): the per-node weights MPOL_WEIGHTED_INTERLEAVE allocations follow, set from the
nodes' HMAT bandwidth when the policy asks (`interleave.weights: bandwidth`) and given back at stop.

The kernel keeps one weight per node in WI_DIR/nodeN (1..255, default 1); 6.16+ adds WI_DIR/auto: true while the
kernel computes the weights from bandwidth itself, false once anyone wrote a weight. Weights an operator set (manual
mode, or any weight other than 1 on a kernel without `auto`) and the kernel's auto mode are left alone unless
`interleave.override` is true. Before its first write, WeightedInterleave records the old weights and mode in a
state file; restore() writes them back (auto mode: `auto` = true, which recomputes the kernel's own weights) and
removes the file. A record left by a crashed predecessor is ours too, so a restart still restores the original.
"""

from __future__ import annotations

import json
import logging
import os
from dataclasses import dataclass
from pathlib import Path

from cxltierd.errors import CxltierdError, HostFSError
from cxltierd.hostfs import HostFS
from cxltierd.policy.interleave import bandwidth_weights
from cxltierd.policy.schema import Interleave
from cxltierd.topology import Topology

WI_DIR = "/sys/kernel/mm/mempolicy/weighted_interleave"
INTERLEAVE_FILE = "interleave.json"  # in the state dir: the weights (and auto mode) before cxltierd's first write
log = logging.getLogger("cxltierd")


def read_weights(fs: HostFS) -> dict[int, int]:
    """Node -> its weighted-interleave weight now (empty without the interface or where a file cannot be read)."""
    out: dict[int, int] = {}
    for name in fs.listdir(WI_DIR):
        if name.startswith("node") and name[4:].isdigit():
            try:
                out[int(name[4:])] = fs.read_int(f"{WI_DIR}/{name}")
            except (HostFSError, ValueError):
                continue
    return out


def auto_mode(fs: HostFS) -> bool | None:
    """The kernel's auto mode (6.16+): True, False, or None where there is no `auto` file."""
    try:
        value = fs.read_optional(f"{WI_DIR}/auto")
    except HostFSError:
        return None
    return None if value is None else value.strip().lower() in ("y", "1", "true")


@dataclass(frozen=True)
class Saved:
    """The weights and mode before cxltierd's first write."""

    auto: bool | None
    weights: dict[int, int]


class WeightedInterleave:
    """The kernel's interleave weights, set from bandwidth and given back; the old ones are kept in `state_file`."""

    def __init__(self, fs: HostFS, state_file: str | os.PathLike[str]) -> None:
        self.fs = fs
        self.state_file = Path(state_file)
        self.saved: Saved | None = self._recorded()

    def _recorded(self) -> Saved | None:
        try:
            doc = json.loads(self.state_file.read_text())
            auto = doc.get("auto")
            return Saved(auto if isinstance(auto, bool) else None, {int(k): int(v) for k, v in doc["weights"].items()})
        except (OSError, ValueError, KeyError, TypeError, AttributeError):
            return None

    def target(self, topology: Topology) -> dict[int, int]:
        """The weights bandwidth asks for: memory nodes with an HMAT read bandwidth and a weight file."""
        present = read_weights(self.fs)
        bw = {
            n.node: n.hmat.read_bandwidth_mbps
            for n in topology.nodes
            if n.node in present and n.hmat is not None and n.hmat.read_bandwidth_mbps
        }
        return bandwidth_weights({k: v for k, v in bw.items() if v is not None})

    def apply(self, topology: Topology, policy: Interleave, dry_run: bool = False) -> str | None:
        """Bring the weights in line with the policy; returns what was done or why not (one line), None when the
        policy keeps the kernel's weights and nothing of ours is left to restore. Raises CxltierdError (one line)
        when a weight file cannot be written."""
        if policy.weights == "keep":
            if self.saved is None:
                return None
            self.restore()
            return "weighted interleave: weights restored (interleave.weights is keep)"
        if not self.fs.is_dir(WI_DIR):
            return "weighted interleave: this kernel has no weighted_interleave (6.9+): nothing set"
        want = self.target(topology)
        if not want:
            return "weighted interleave: no node has an HMAT read bandwidth: weights left alone"
        now = read_weights(self.fs)
        shown = " ".join(f"node{n}={w}" for n, w in want.items())
        if self.saved is None:
            auto = auto_mode(self.fs)
            if not policy.override:
                if auto:
                    return "weighted interleave: the kernel's auto mode sets the weights (interleave.override: true replaces them)"
                if auto is False or any(w != 1 for w in now.values()):
                    set_ = " ".join(f"node{n}={w}" for n, w in now.items())
                    return f"weighted interleave: weights an operator set kept ({set_}; interleave.override: true replaces them)"
            if dry_run:
                return f"weighted interleave: dry run, would set {shown}"
            self.saved = Saved(auto, now)
            self.state_file.parent.mkdir(parents=True, exist_ok=True)
            self.state_file.write_text(json.dumps({"auto": auto, "weights": {str(k): v for k, v in now.items()}}))
        for n, w in want.items():
            if now.get(n) != w:
                try:
                    self.fs.write(f"{WI_DIR}/node{n}", str(w))
                except HostFSError as e:
                    raise CxltierdError(f"cannot set the weighted-interleave weight of node {n}: {e}") from None
        return f"weighted interleave: weights set from HMAT bandwidth: {shown} (restored on stop)"

    def restore(self) -> None:
        """Write back what apply() (or a crashed predecessor) recorded; nothing when nothing is recorded. Raises
        CxltierdError naming the file that could not be written."""
        if self.saved is None:
            return
        try:
            if self.saved.auto:
                self.fs.write(f"{WI_DIR}/auto", "true")
            else:
                present = read_weights(self.fs)
                for n, w in self.saved.weights.items():
                    if n in present and present[n] != w:
                        self.fs.write(f"{WI_DIR}/node{n}", str(w))
        except HostFSError as e:
            raise CxltierdError(f"restoring the weighted-interleave weights: {e}") from None
        log.info("weighted interleave weights restored")
        self.saved = None
        self.state_file.unlink(missing_ok=True)
