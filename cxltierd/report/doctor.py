"""`cxltierd doctor`: check a host against what CXL tiering needs. Pure: facts + topology + capabilities -> checks."""

from __future__ import annotations

from dataclasses import dataclass

from cxltierd.engines.damon_probe import DamonFeatures
from cxltierd.facts import HostFacts
from cxltierd.topology import Topology

# Capability bits (linux/capability.h).
CAP_SYS_PTRACE = 19
CAP_SYS_ADMIN = 21
CAP_SYS_NICE = 23
NEEDED_CAPS = {"CAP_SYS_ADMIN": CAP_SYS_ADMIN, "CAP_SYS_NICE": CAP_SYS_NICE, "CAP_SYS_PTRACE": CAP_SYS_PTRACE}


@dataclass(frozen=True)
class Check:
    """One doctor finding: status is "ok", "warn" or "fail", `fix` says what to do about it now and `persist` how
    to keep it so across reboots (either may be empty)."""

    name: str
    status: str  # ok | warn | fail
    message: str
    fix: str = ""
    persist: str = ""


# How a fix outlives a reboot: a sysctl.d file (systemd-sysctl), a tmpfiles.d line (systemd-tmpfiles writes sysfs at
# boot), a modules-load.d file, or the kernel command line.
SYSCTL_D = "/etc/sysctl.d/60-cxltierd.conf"
TMPFILES_D = "/etc/tmpfiles.d/cxltierd.conf"
MODULES_LOAD_D = "/etc/modules-load.d/cxl.conf"
MOVABLE_CMDLINE = (
    "add memhp_default_state=online_movable to the kernel command line (GRUB_CMDLINE_LINUX in /etc/default/grub, "
    "then update-grub and reboot)"
)


def parse_cap_eff(status_text: str) -> int | None:
    """CapEff from /proc/self/status, as an int bitmask."""
    for line in status_text.splitlines():
        if line.startswith("CapEff:"):
            return int(line.split()[1], 16)
    return None


def _kernel(facts: HostFacts) -> list[Check]:
    v = facts.kernel.version
    if v is None:
        return [Check("kernel", "warn", "kernel version unknown (/proc/version unreadable)", "")]
    release = facts.kernel.release
    if v < (6, 5):
        return [Check("kernel", "fail", f"kernel {release} is older than 6.5 (CXL subsystem)", "boot a kernel >= 6.5")]
    if v < (6, 11):
        return [
            Check(
                "kernel",
                "warn",
                f"kernel {release}: CXL ok, but DAMOS migrate_hot/migrate_cold need >= 6.11",
                "boot a kernel >= 6.11 for the DAMOS engine (move_pages and numa-balancing engines still work)",
            )
        ]
    return [Check("kernel", "ok", f"kernel {release} (CXL subsystem and DAMOS migrate actions)")]


def _cxl(facts: HostFacts) -> list[Check]:
    k = facts.kernel
    if not k.cxl_bus:
        return [
            Check(
                "cxl-bus",
                "warn",
                "no CXL bus in sysfs",
                "modprobe -a cxl_acpi cxl_pci cxl_mem (or no CXL here)",
                f"printf 'cxl_acpi\\ncxl_pci\\ncxl_mem\\n' > {MODULES_LOAD_D}",
            )
        ]
    out = [Check("cxl-bus", "ok", f"CXL bus present, drivers: {', '.join(k.cxl_drivers) or 'none'}")]
    if "cxl_region" not in k.cxl_drivers and facts.memdevs:
        out.append(
            Check(
                "cxl-region-driver",
                "warn",
                "cxl_region driver missing",
                "modprobe -a cxl_acpi cxl_core",
                f"printf 'cxl_acpi\\ncxl_core\\n' > {MODULES_LOAD_D}",
            )
        )
    if facts.memdevs and not facts.regions:
        out.append(
            Check(
                "cxl-regions",
                "warn",
                f"{len(facts.memdevs)} memdev(s) but no region: CXL memory is not usable",
                "cxl create-region -t ram -d decoder0.0 -m mem0 (or write the root decoder's create_ram_region)",
            )
        )
    for g in facts.regions:
        if g.decode_state != "commit":
            out.append(
                Check(f"region {g.region}", "fail", f"{g.region} is not committed", f"cxl enable-region {g.region}")
            )
        elif not g.enabled:
            out.append(
                Check(f"region {g.region}", "fail", f"{g.region} has no driver bound", f"cxl enable-region {g.region}")
            )
        else:
            out.append(Check(f"region {g.region}", "ok", f"{g.region} ({g.mode}) committed and bound"))
    return out


def dax_checks(facts: HostFacts) -> list[Check]:
    """Checks of the dax devices (bound, onlined, movable) and of how hot-added memory goes online."""
    out = []
    for d in facts.dax:
        name = f"dax {d.chardev}"
        if d.mode == "devdax":
            out.append(
                Check(
                    name,
                    "warn",
                    f"{d.chardev} is devdax: its memory is not a NUMA node",
                    f"daxctl reconfigure-device --mode=system-ram {d.chardev}",
                )
            )
        elif d.mode != "system-ram":
            out.append(Check(name, "warn", f"{d.chardev} has no driver bound", f"daxctl enable-device {d.chardev}"))
        elif d.online_memblocks < d.total_memblocks:
            out.append(
                Check(
                    name,
                    "warn",
                    f"{d.chardev}: {d.online_memblocks}/{d.total_memblocks} memory blocks online",
                    f"daxctl online-memory {d.chardev}",
                )
            )
        elif d.movable is False:
            out.append(
                Check(
                    name,
                    "warn",
                    f"{d.chardev} -> node {d.target_node} is online but not in ZONE_MOVABLE (kernel data may land there)",
                    f"daxctl offline-memory {d.chardev} && daxctl online-memory {d.chardev} (online-memory onlines "
                    "movable unless told --no-movable; offlining fails while unmovable pages sit there)",
                    MOVABLE_CMDLINE,
                )
            )
        else:
            out.append(Check(name, "ok", f"{d.chardev} -> node {d.target_node}, system-ram, ZONE_MOVABLE"))
    aob = facts.kernel.auto_online_blocks
    if aob is not None:
        if aob == "offline":
            out.append(
                Check(
                    "auto_online_blocks",
                    "warn",
                    "hot-added memory stays offline (auto_online_blocks=offline)",
                    "echo online_movable > /sys/devices/system/memory/auto_online_blocks",
                    MOVABLE_CMDLINE,
                )
            )
        elif aob != "online_movable":
            out.append(
                Check(
                    "auto_online_blocks",
                    "warn",
                    f"hot-added memory goes online as {aob}, not movable",
                    "echo online_movable > /sys/devices/system/memory/auto_online_blocks",
                    MOVABLE_CMDLINE,
                )
            )
        else:
            out.append(Check("auto_online_blocks", "ok", "hot-added memory goes online movable"))
    return out


def _tiers(facts: HostFacts, topo: Topology) -> list[Check]:
    out = []
    if len(topo.tiers) < 2:
        out.append(Check("tiers", "warn", "only one memory tier: nothing to place", ""))
    else:
        out.append(Check("tiers", "ok", " > ".join(f"{t.name}[{','.join(map(str, t.nodes))}]" for t in topo.tiers)))
    for n in topo.nodes:
        if n.kind == "unknown":
            out.append(
                Check(
                    f"node {n.node}",
                    "warn",
                    f"node {n.node} has no evidence of its kind ({n.reason})",
                    f"set tiers.overrides: {{{n.node}: cxl|ddr|hbm|pmem}} in the policy",
                )
            )
    for w in topo.warnings:
        out.append(Check("memory-tiers", "warn", w, "check HMAT/CDAT, or set memory tier adistance"))
    if facts.kernel.memory_tiers and not topo.warnings:
        out.append(Check("memory-tiers", "ok", "kernel memory tiers agree with cxltierd's order"))
    return out


def _knobs(facts: HostFacts) -> list[Check]:
    k = facts.kernel
    out = []
    if k.demotion_enabled is None:
        out.append(Check("demotion_enabled", "warn", "no /sys/kernel/mm/numa/demotion_enabled", "kernel >= 5.15"))
    elif not k.demotion_enabled:
        out.append(
            Check(
                "demotion_enabled",
                "warn",
                "reclaim will not demote to slower tiers",
                "echo true > /sys/kernel/mm/numa/demotion_enabled",
                f"echo 'w /sys/kernel/mm/numa/demotion_enabled - - - - true' > {TMPFILES_D}",
            )
        )
    else:
        out.append(Check("demotion_enabled", "ok", "reclaim demotes to slower tiers"))
    nb = k.numa_balancing
    if nb is None:
        out.append(Check("numa_balancing", "warn", "no kernel.numa_balancing sysctl", "CONFIG_NUMA_BALANCING"))
    elif nb & 2:
        out.append(Check("numa_balancing", "ok", f"numa_balancing={nb}: memory tiering mode"))
    elif nb == 1:
        out.append(
            Check(
                "numa_balancing",
                "warn",
                "numa_balancing=1 balances between CPU nodes but does not promote from slow tiers",
                "sysctl -w kernel.numa_balancing=2 (or let cxltierd's numa-balancing engine set it)",
                f"echo kernel.numa_balancing=2 > {SYSCTL_D}",
            )
        )
    else:
        out.append(Check("numa_balancing", "ok", "numa_balancing=0: cxltierd moves pages itself"))
    d = k.damon
    if not d.sysfs:
        out.append(Check("damon", "warn", "DAMON sysfs interface absent", "CONFIG_DAMON_SYSFS=y (kernel >= 5.18)"))
    elif d.running:
        out.append(
            Check(
                "damon",
                "warn",
                f"{len(d.running)} kdamond(s) already running: another tool is using DAMON",
                "stop it (e.g. damo stop) or use the move_pages / numa-balancing engine",
            )
        )
    else:
        out.append(Check("damon", "ok", f"DAMON sysfs available, {d.nr_kdamonds} kdamond(s), none running"))
    if d.stat is not None:
        out.append(
            Check(
                "damon_stat",
                "ok",
                "the kernel's DAMON_STAT kdamond runs (not a sysfs kdamond); no sysfs kdamond can start beside it: "
                "cxltierd's DAMON engines turn it off while they run (damon.take_over_damon_stat, restored on stop)"
                if d.stat
                else "DAMON_STAT present, not running",
            )
        )
    return out


def _caps(cap_eff: int | None) -> list[Check]:
    if cap_eff is None:
        return [Check("capabilities", "warn", "capabilities of this process unknown", "")]
    missing = [name for name, bit in NEEDED_CAPS.items() if not cap_eff >> bit & 1]
    if missing:
        return [
            Check(
                "capabilities",
                "warn",
                f"this process lacks {', '.join(missing)} (needed to move pages and program DAMON)",
                "run as root or with AmbientCapabilities=CAP_SYS_ADMIN CAP_SYS_NICE CAP_SYS_PTRACE",
            )
        ]
    return [Check("capabilities", "ok", "CAP_SYS_ADMIN, CAP_SYS_NICE, CAP_SYS_PTRACE present")]


def _engines(probes: dict[str, str | None]) -> list[Check]:
    """Which engines the registry's probes say can run here (the same probes `engine: auto` reads)."""
    real = {name: why for name, why in probes.items() if name != "simulated"}
    can = [name for name, why in real.items() if why is None]
    cannot = "; ".join(f"{name} {why}" for name, why in real.items() if why is not None)
    if not can:
        return [
            Check("engines", "fail", f"no engine can run here: {cannot}", "see the damon and numa_balancing checks")
        ]
    return [Check("engines", "ok", f"can run: {', '.join(can)}" + (f"; cannot: {cannot}" if cannot else ""))]


def _damon_features(features: DamonFeatures) -> list[Check]:
    """What DAMON accepted when asked (the probe), or why it was not asked."""
    if not features.probed:
        return [Check("damon-features", "ok", f"not probed: {features.why_not}")]
    return [Check("damon-features", "ok", "the kernel accepts: " + ", ".join(features.names()))]


def run_checks(
    facts: HostFacts,
    topo: Topology,
    cap_eff: int | None,
    probes: dict[str, str | None] | None = None,
    features: DamonFeatures | None = None,
) -> list[Check]:
    """Every check, in the order `doctor` prints them. `probes`: the engine registry's verdicts; `features`: the
    DAMON probe's findings (either None: that check is skipped)."""
    checks = _kernel(facts) + _cxl(facts) + dax_checks(facts) + _tiers(facts, topo) + _knobs(facts) + _caps(cap_eff)
    checks += _engines(probes) if probes is not None else []
    return checks + (_damon_features(features) if features is not None else [])


def exit_code(checks: list[Check]) -> int:
    """0 all ok, 1 warnings, 2 failures."""
    if any(c.status == "fail" for c in checks):
        return 2
    return 1 if any(c.status == "warn" for c in checks) else 0
