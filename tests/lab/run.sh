#!/usr/bin/env bash
# tests/lab/run.sh - run pytest inside a throw-away QEMU guest whose real Linux kernel sees emulated CXL memory.
#
#   usage (root, x86_64 Debian 12, Debian archive reachable through apt):  bash tests/lab/run.sh [PYTEST ARGS...]
#   e.g.  bash tests/lab/run.sh tests/lab -q -p no:hypothesispytest
#         CXLTIERD_LAB_KERNEL=newest bash tests/lab/run.sh tests/lab -q -p no:hypothesispytest
#
# Steps: install QEMU 10 (bookworm-backports) and guest tools with a private apt source list (skipped when all is
# present), fetch + unpack the guest kernel into the cache dir (CXLTIERD_LAB_KERNEL: `lts` = the 6.12 kernel of
# bookworm-backports, `newest` = the newest kernel of trixie-backports; each resolved from its suite's
# linux-image-amd64 metapackage and cached separately), build a busybox initramfs, boot the
# guest (TCG), create a volatile CXL region through sysfs (it becomes CPU-less NUMA node 4, ZONE_MOVABLE), then run
# `<checkout>/.venv/bin/python -m pytest ARGS` from the checkout with CXLTIERD_LAB=1 and CXLTIERD_LAB_SHARE set.
# The guest sees the host's / read-only (tmpfs overlay on top, writes are discarded) at the same paths, plus the
# read-write share $CXLTIERD_LAB_DIR/share. See tests/lab/README.md for the topology and the known traps.
#
# Environment: CXLTIERD_LAB_DIR (cache dir, default /var/tmp/cxltierd-lab), CXLTIERD_LAB_TIMEOUT (seconds for the
# whole guest part, boot retry included; default 1500), CXLTIERD_LAB_KERNEL (lts | newest, default lts),
# CXLTIERD_LAB_KERNEL_PKG (pin a linux-image-KV package of that kernel's suite instead of the metapackage's),
# CXLTIERD_LAB_APPEND (extra kernel command line), CXLTIERD_LAB_QEMU_EXTRA (extra QEMU args, split on spaces),
# CXLTIERD_LAB_QEMU (the QEMU binary to boot with, default qemu-system-x86_64; e.g. a wrapper for debugging).
# CXLTIERD_LAB_INIT (the guest's PID 1: `shell`, the default, runs everything itself; `systemd` builds the .deb with
# packaging/build-deb.sh first, boots /lib/systemd/systemd as PID 1 and runs the region setup, `dpkg -i` of the .deb
# and pytest as oneshot units, pytest's unit ending with `systemctl poweroff`; see tests/lab/README.md).
# CXLTIERD_LAB_TOPOLOGY (`default`, or `tiers3`: node 2 HBM-like by HMAT and a second CXL device behind a switch,
# onlined as node 5; for tests/lab/tiers3).
#
# Exit status: pytest's own status (0-5) when pytest ran, otherwise one of these lab failures (one "lab: ERROR" line
# on stderr naming the step, plus the tail of the guest console):
#   100 preconditions (not root, not x86_64, no .venv, bad cache dir)   105 guest timed out
#   101 package installation (apt) failed                               106 QEMU crashed or failed (139 twice, ...)
#   102 QEMU has no cxl-type3 device                                    107 guest did not boot or did not run pytest
#   103 guest kernel: download/unpack failed or CXL support missing     108 no CXL memdev in the guest
#   104 initramfs build failed                                          109 CXL region creation/onlining failed
#   110 CXLTIERD_LAB_INIT=systemd: building the .deb on the host or installing it in the guest failed
set -euo pipefail

readonly E_PRE=100 E_APT=101 E_QEMU_CXL=102 E_KERNEL=103 E_INITRAMFS=104 E_TIMEOUT=105 E_QEMU=106 E_BOOT=107 E_DEB=110
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin:$PATH LC_ALL=C

CHECKOUT=$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd -P)
# shellcheck source=tests/lab/kernel.sh
. "$CHECKOUT/tests/lab/kernel.sh"
# shellcheck source=tests/lab/init.sh
. "$CHECKOUT/tests/lab/init.sh"
LAB=$(realpath -m "${CXLTIERD_LAB_DIR:-/var/tmp/cxltierd-lab}")
TIMEOUT=${CXLTIERD_LAB_TIMEOUT:-1500}
SHARE=$LAB/share      # read-write 9p share, same path in the guest (CXLTIERD_LAB_SHARE)
CTL=$SHARE/.lab       # runner <-> guest control files: config, args, times, error, pytest.out, rc
CONSOLE=$LAB/console.log
T0=$EPOCHREALTIME

log() { printf '[lab %6.1fs] %s\n' "$(elapsed "$T0")" "$*" >&2; }
elapsed() { awk -v a="$1" -v b="$EPOCHREALTIME" 'BEGIN { printf "%.1f", b - a }'; }
die() { # die CODE STEP MESSAGE: the one error line (plus the console tail when the guest ran)
    local rc=$1 step=$2; shift 2
    if [ "${BOOTED:-0}" = 1 ] && [ -s "$CONSOLE" ]; then
        echo "---- last lines of the guest console ($CONSOLE) ----" >&2
        tail -n 25 "$CONSOLE" >&2
        echo "----" >&2
    fi
    echo "lab: ERROR: $step: $*" >&2
    exit "$rc"
}

# ---- 0. preconditions ---------------------------------------------------------------------------------------------
FLAVOUR=${CXLTIERD_LAB_KERNEL:-lts}
SUITE=$(lab_kernel_suite "$FLAVOUR") || die $E_PRE preconditions "CXLTIERD_LAB_KERNEL must be lts or newest, not '$FLAVOUR'"
PIN=${CXLTIERD_LAB_KERNEL_PKG:-}
PID1=${CXLTIERD_LAB_INIT:-shell}
TOPOLOGY=${CXLTIERD_LAB_TOPOLOGY:-default}
[[ $TOPOLOGY == default || $TOPOLOGY == tiers3 ]] || die $E_PRE preconditions "CXLTIERD_LAB_TOPOLOGY must be default or tiers3, not '$TOPOLOGY'"
[[ $PID1 == shell || $PID1 == systemd ]] || die $E_PRE preconditions "CXLTIERD_LAB_INIT must be shell or systemd, not '$PID1'"
[[ $PID1 == shell || -x /lib/systemd/systemd ]] || die $E_PRE preconditions "CXLTIERD_LAB_INIT=systemd needs /lib/systemd/systemd (apt-get install systemd)"
[[ -z $PIN || $PIN =~ ^linux-image-[0-9][A-Za-z0-9.+~-]*$ ]] \
    || die $E_PRE preconditions "CXLTIERD_LAB_KERNEL_PKG must name a linux-image-KV package, not '$PIN'"
[ "$(id -u)" = 0 ] || die $E_PRE preconditions "must run as root (apt-get, 9p export of /)"
[ "$(uname -m)" = x86_64 ] || die $E_PRE preconditions "x86_64 host required, this is $(uname -m)"
[[ $LAB != *[[:space:]]* && $LAB != / ]] || die $E_PRE preconditions "CXLTIERD_LAB_DIR '$LAB' must be a path without spaces"
[[ $CHECKOUT != *[[:space:]]* ]] || die $E_PRE preconditions "checkout path '$CHECKOUT' must not contain spaces"
[[ $TIMEOUT =~ ^[0-9]+$ ]] || die $E_PRE preconditions "CXLTIERD_LAB_TIMEOUT must be a number of seconds"
KC=$LAB/kernel-$FLAVOUR  # this kernel's cache: debs/, root/ (dpkg -x of them), package (what was resolved)
VENV_PY=$CHECKOUT/.venv/bin/python
"$VENV_PY" -c 'import cxltierd, pytest' 2>/dev/null \
    || die $E_PRE preconditions "$CHECKOUT/.venv with cxltierd and pytest is missing (pip install -e '.[test]' into .venv first)"
mkdir -p "$LAB"/{apt/lists/partial,apt/cache/archives/partial} "$KC/debs" || die $E_PRE preconditions "cannot create $LAB"
exec 9>"$LAB/.lock"
flock -w "$TIMEOUT" 9 || die $E_PRE preconditions "another lab run holds $LAB/.lock"

# ---- 1. packages: private apt source list, so /etc/apt stays untouched ---------------------------------------------
APT=(apt-get -o Dir::Etc::sourcelist="$LAB/apt/sources.list" -o Dir::Etc::sourceparts=/nonexistent
     -o Dir::State::Lists="$LAB/apt/lists" -o Dir::Cache="$LAB/apt/cache" -o APT::Sandbox::User=root
     -o Acquire::Retries=3 -o DPkg::Lock::Timeout=300)
cat > "$LAB/apt/sources.list" <<'EOF'
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-updates main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian-security bookworm-security main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian bookworm-backports main
deb [signed-by=/usr/share/keyrings/debian-archive-keyring.gpg] http://deb.debian.org/debian trixie-backports main
EOF
# trixie-backports is there for the newest guest kernel only: like every backports suite it is NotAutomatic (apt
# priority 100), so the bookworm tools and QEMU installed below never come from it.

qemu_has_cxl() {
    local devs
    devs=$(qemu-system-x86_64 -device help 2>/dev/null) || return 1
    [[ $devs == *'"cxl-type3"'* ]]
}
tools_missing() { # prints the Debian packages of missing guest tools
    local b
    for b in busybox:busybox-static migratepages:numactl cxl:ndctl daxctl:daxctl udevadm:udev cpio:cpio xz:xz-utils \
             depmod:kmod; do
        command -v "${b%%:*}" >/dev/null || echo "${b#*:}"
    done
    [ -x /lib/systemd/systemd-udevd ] || echo udev
    [ "$(dpkg-query -W -f='${Status}' busybox-static 2>/dev/null)" = "install ok installed" ] || echo busybox-static
}
# The kernel is cached once resolved: $KC/package names the linux-image-KV it came from, $KC/debs holds its .debs.
kernel_cached() {
    [ -s "$KC/package" ] && compgen -G "$KC/debs/*.deb" >/dev/null && { [ -z "$PIN" ] || [ "$(cat "$KC/package")" = "$PIN" ]; }
}

mapfile -t MISSING < <(tools_missing | sort -u)
NEED_QEMU=0; qemu_has_cxl || NEED_QEMU=1
if [ "$NEED_QEMU" = 1 ] || [ ${#MISSING[@]} -gt 0 ] || ! kernel_cached; then
    log "apt-get update (private lists in $LAB/apt, log $LAB/apt.log)"
    "${APT[@]}" update -qq >"$LAB/apt.log" 2>&1 || die $E_APT "install: apt-get update" "failed, see $LAB/apt.log"
fi
if [ "$NEED_QEMU" = 1 ]; then
    log "installing qemu-system-x86 from bookworm-backports"
    DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq --no-install-recommends --no-remove \
        -t bookworm-backports qemu-system-x86 >>"$LAB/apt.log" 2>&1 \
        || die $E_APT "install: qemu-system-x86 (bookworm-backports)" "apt-get failed, see $LAB/apt.log"
fi
if [ ${#MISSING[@]} -gt 0 ]; then
    log "installing ${MISSING[*]}"
    DEBIAN_FRONTEND=noninteractive "${APT[@]}" install -y -qq --no-install-recommends --no-remove "${MISSING[@]}" \
        >>"$LAB/apt.log" 2>&1 || die $E_APT "install: ${MISSING[*]}" "apt-get failed, see $LAB/apt.log"
    mapfile -t MISSING < <(tools_missing | sort -u)
    [ ${#MISSING[@]} = 0 ] || die $E_APT "install" "still missing after apt-get: ${MISSING[*]}"
fi
command -v qemu-system-x86_64 >/dev/null || die $E_APT "install" "qemu-system-x86_64 is not installed"
qemu_has_cxl || die $E_QEMU_CXL "QEMU check" "$(qemu-system-x86_64 --version | head -n 1) has no cxl-type3 device (need QEMU >= 8.0 from bookworm-backports)"

# ---- 2. guest kernel: linux-image-amd64 of $SUITE, unpacked privately (the host kernel is not touched) ------------
# Resolution and layouts (Debian 12's one package, Debian 13's split one): tests/lab/kernel.sh.
apt_cache() { apt-cache -o Dir::Etc::sourcelist="$LAB/apt/sources.list" -o Dir::Etc::sourceparts=/nonexistent \
    -o Dir::State::Lists="$LAB/apt/lists" -o Dir::Cache="$LAB/apt/cache" "$@" 2>/dev/null; }
if ! kernel_cached; then
    KPKG=${PIN:-$(apt_cache depends -t "$SUITE" linux-image-amd64 | lab_kernel_image)} \
        || die $E_KERNEL "kernel download" "cannot resolve linux-image-amd64 in $SUITE"
    mapfile -t PKGS < <(apt_cache depends -t "$SUITE" "$KPKG" | lab_kernel_packages "$KPKG")
    [ ${#PKGS[@]} -gt 0 ] || die $E_KERNEL "kernel download" "$KPKG is not in $SUITE (apt-cache depends -t $SUITE $KPKG)"
    log "downloading ${PKGS[*]} ($SUITE)"
    rm -f "$KC/package" "$KC"/debs/*.deb
    (cd "$KC/debs" && "${APT[@]}" download -t "$SUITE" "${PKGS[@]}" >>"$LAB/apt.log" 2>&1) \
        || die $E_KERNEL "kernel download" "apt-get download ${PKGS[*]} failed, see $LAB/apt.log"
    echo "$KPKG" > "$KC/package"
fi
KPKG=$(cat "$KC/package")
KDEBS=$(cd "$KC/debs" && printf "%s " *.deb)
KROOT=$KC/root
if [ "$(cat "$KROOT/.unpacked" 2>/dev/null)" != "$KDEBS" ]; then
    log "unpacking $KDEBS + depmod"
    rm -rf "$KROOT" && mkdir -p "$KROOT"
    for deb in "$KC"/debs/*.deb; do
        dpkg -x "$deb" "$KROOT" || { rm -f "$KC"/debs/*.deb; die $E_KERNEL "kernel unpack" "dpkg -x $deb failed (deleted the kernel's .debs; the next run downloads them again)"; }
    done
    mapfile -t KFILES < <(lab_kernel_files "$KROOT")
    [ ${#KFILES[@]} = 3 ] || die $E_KERNEL "kernel unpack" "no lib/modules/KV with a vmlinuz and a config in $KDEBS"
    depmod -b "$KROOT" "${KFILES[0]}" || die $E_KERNEL "kernel unpack" "depmod -b $KROOT ${KFILES[0]} failed"
    echo "$KDEBS" > "$KROOT/.unpacked"
fi
mapfile -t KFILES < <(lab_kernel_files "$KROOT")
[ ${#KFILES[@]} = 3 ] || die $E_KERNEL "kernel check" "no lib/modules/KV with a vmlinuz and a config in $KROOT"
KV=${KFILES[0]} VMLINUZ=${KFILES[1]} KCONFIG=${KFILES[2]}
KDIR=$KROOT/lib/modules/$KV
for opt in CXL_BUS CXL_ACPI CXL_PCI CXL_MEM CXL_REGION DEV_DAX_CXL DEV_DAX_KMEM ACPI_HMAT MEMORY_HOTPLUG NET_9P_VIRTIO \
           9P_FS OVERLAY_FS; do
    grep -Eq "^CONFIG_$opt=(y|m)" "$KCONFIG" || die $E_KERNEL "kernel check" "kernel $KV lacks CONFIG_$opt"
done

# ---- 3. initramfs: busybox-static + 9p/overlay modules; mounts host / read-only with a tmpfs overlay ---------------
mod_chain() { # mod_chain NAME: module files (relative to $KDIR) in load order, dependencies first
    local rel deps d
    rel=$(awk -F: -v n="$1" '{ f = $1; sub(/.*\//, "", f); sub(/\.ko(\.xz|\.zst|\.gz)?$/, "", f); if (f == n) { print $1; exit } }' "$KDIR/modules.dep")
    [ -n "$rel" ] || return 1
    deps=$(awk -F: -v r="$rel" '$1 == r { print $2; exit }' "$KDIR/modules.dep")
    for d in $deps; do mod_chain "$(basename "${d%%.ko*}")" || return 1; done
    echo "$rel"
}
INIT=$(cat <<'EOF'
#!/bin/busybox sh
# initramfs /init: mount the host's / (9p, read-only) under a tmpfs overlay, the rw share, then hand over to bash.
/bin/busybox --install -s /bin
mount -t proc proc /proc; mount -t sysfs sys /sys; mount -t devtmpfs dev /dev
fatal() { echo "[lab-init] FATAL: $*" > /dev/console; echo o > /proc/sysrq-trigger; sleep 60; }
for m in $(cat /mods/order); do insmod "/mods/$m" || fatal "insmod $m failed"; done
for a in $(cat /proc/cmdline); do
    case $a in cxltierd.share=*) SHARE=${a#*=};; cxltierd.main=*) MAIN=${a#*=};; esac
done
mount -t 9p -o trans=virtio,version=9p2000.L,ro,msize=1048576,cache=loose hostroot /lower || fatal "9p mount of the host / failed"
mount -t tmpfs -o size=512M tmpfs /upper && mkdir -p /upper/u /upper/w
mount -t overlay -o lowerdir=/lower,upperdir=/upper/u,workdir=/upper/w overlay /newroot || fatal "overlay mount failed"
mount -t 9p -o trans=virtio,version=9p2000.L,rw,msize=1048576 share "/newroot$SHARE" || fatal "9p mount of the share failed"
mount -t tmpfs -o mode=755 tmpfs /newroot/run
for d in dev proc sys; do mount --move /$d /newroot/$d; done
exec switch_root /newroot /bin/bash "$MAIN"
EOF
)
INITRD=$KC/initramfs.cpio.gz
STAMP="$KDEBS $(printf '%s' "$INIT" | md5sum | cut -d' ' -f1)"
if [ ! -s "$INITRD" ] || [ "$(cat "$KC/initramfs.stamp" 2>/dev/null)" != "$STAMP" ]; then
    log "building initramfs"
    R=$KC/initramfs-src
    rm -rf "$R" && mkdir -p "$R"/{bin,proc,sys,dev,mods,lower,upper,newroot}
    cp /bin/busybox "$R/bin/busybox" || die $E_INITRAMFS initramfs "cannot copy /bin/busybox"
    printf '%s\n' "$INIT" > "$R/init" && chmod 755 "$R/init"
    ORDER=()
    for m in 9pnet_virtio 9p overlay; do
        chain=$(mod_chain "$m") || die $E_INITRAMFS initramfs "module $m not found in $KDIR/modules.dep"
        for rel in $chain; do
            name=$(basename "${rel%%.ko*}").ko
            [[ " ${ORDER[*]-} " == *" $name "* ]] && continue
            case $rel in
                *.ko.xz) xz -dc "$KDIR/$rel" > "$R/mods/$name" ;;
                *.ko) cp "$KDIR/$rel" "$R/mods/$name" ;;
                *) false ;;
            esac || die $E_INITRAMFS initramfs "cannot unpack module $rel"
            ORDER+=("$name")
        done
    done
    printf '%s\n' "${ORDER[@]}" > "$R/mods/order"
    (cd "$R" && find . | cpio -o -H newc --quiet | gzip -1) > "$INITRD.tmp" || die $E_INITRAMFS initramfs "cpio failed"
    mv "$INITRD.tmp" "$INITRD" && echo "$STAMP" > "$KC/initramfs.stamp"
fi

# ---- 4. the guest's side (static text; per-run settings come from $CTL/config) ------------------------------------
cat > "$LAB/guest-main.sh.tmp" <<'EOF'
#!/bin/bash
# The lab guest's side. Without an argument it is PID 1 after switch_root:
#   PID1=shell    mounts, udevd, the CXL region, pytest and the power-off, all in this process;
#   PID1=systemd  prepares the overlay root (kernel modules, an empty fstab, masks, the lab's units as default.target)
#                 and execs /lib/systemd/systemd, whose units run `guest-main.sh region`, `guest-main.sh install`
#                 (dpkg -i of the project's .deb) and `guest-main.sh pytest` (which ends with `systemctl poweroff`).
# Writes $CTL/times, $CTL/error ("CODE step: message"), $CTL/pytest.out and $CTL/rc.
# shellcheck disable=SC1091
read -r -a CMDLINE < /proc/cmdline
for a in "${CMDLINE[@]}"; do case $a in cxltierd.share=*) SHARE=${a#*=} ;; esac; done
CTL=$SHARE/.lab
. "$CTL/config"   # KDIR KV FLAVOUR CHECKOUT VENV_PY LAB PID1 DEB TOPOLOGY
ME=$(readlink -f "$0")
export PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin HOME=/root LANG=C.UTF-8 TERM=dumb
up() { cut -d' ' -f1 /proc/uptime; }
stamp() { echo "$1 $(up)" >> "$CTL/times"; }
say() { echo "[lab $(up)s] $*" > /dev/console; }
poweroff_now() { sync; echo o > /proc/sysrq-trigger; while :; do sleep 60; done; }
fail() { echo "$1 $2" > "$CTL/error"; say "FAILED: $2"; poweroff_now; }
w() { echo "$1" > "$2" || { echo "writing '$1' to $2 failed"; return 1; }; }

create_ram_region() { # create_ram_region MEMDEV ROOT_DECODER: a volatile region over the memdev via raw sysfs
    local B=/sys/bus/cxl/devices MD=$1 RD=$2 e ep='' ed='' d size reg  # (ndctl 76.1 cannot create ram regions)
    for e in "$B"/endpoint*; do [ "$(basename "$(readlink -f "$e/uport")")" = "$MD" ] && ep=$e; done
    [ -n "$ep" ] || { echo "no endpoint port for $MD"; return 1; }
    for d in "$ep"/decoder*; do [ "$(cat "$d/mode")" = none ] && { ed=$(basename "$d"); break; }; done
    [ -n "$ed" ] || { echo "no free endpoint decoder under $ep"; return 1; }
    size=$(cat "$B/$MD/ram/size"); reg=$(cat "$B/$RD/create_ram_region")
    w "$reg" "$B/$RD/create_ram_region" && w 256 "$B/$reg/interleave_granularity" && w 1 "$B/$reg/interleave_ways" \
        && w ram "$B/$ed/mode" && w "$size" "$B/$ed/dpa_size" && w "$size" "$B/$reg/size" && w "$ed" "$B/$reg/target0" \
        && w 1 "$B/$reg/commit" || return 1
    [ -e "$B/$reg/driver" ] || echo "$reg" > /sys/bus/cxl/drivers/cxl_region/bind 2>/dev/null || true
    echo "$reg size=$size target0=$ed resource=$(cat "$B/$reg/resource")"
}
cxl_memdevs() { # the CXL memdevs, fewest PCI hops first (a direct-attached device before one behind a switch)
    local m p
    for m in /sys/bus/cxl/devices/mem*; do
        [ -e "$m" ] || continue
        p=$(readlink -f "$m"); p=${p//[^\/]/}
        echo "${#p} ${m##*/}"
    done | sort -k1,1n -k2,2V | cut -d' ' -f2
}
cxl_nodes_online() { # target nodes of kmem-bound dax devices under a CXL region that have memory, lowest first
    local t n
    for t in /sys/bus/dax/devices/dax*/target_node; do
        [ -e "$t" ] || continue
        [[ $(readlink -f "${t%/target_node}") == */region* ]] || continue
        [ "$(basename "$(readlink -f "${t%/target_node}/driver")")" = kmem ] || continue
        n=$(cat "$t")
        [ "$(awk '/MemTotal/ { print $4 }' "/sys/devices/system/node/node$n/meminfo" 2>/dev/null)" -gt 0 ] 2>/dev/null \
            && echo "$n"
    done | sort -n
}

region() { # once udev has settled: one CXL region per memdev (TOPOLOGY tiers3: two), each onlined as a memory node;
    # memdev i (direct-attached first) goes to root decoder 0.i (fixed memory window i). The lowest node goes to
    # $CTL/cxl_node, all of them to $CTL/cxl_nodes.
    local end out d i want=1 mds=() nodes=()
    [ "${TOPOLOGY:-default}" = default ] || want=2
    end=$((SECONDS + 10 * want))
    until { [ "$(cxl_memdevs | wc -l)" -ge "$want" ] && [ -e "/sys/bus/cxl/devices/decoder0.$((want - 1))" ]; } \
        || [ $SECONDS -ge $end ]; do sleep 0.1; done
    [ -e /sys/bus/cxl/devices/mem0 ] || fail 108 "guest CXL devices: no mem0 (cxl_acpi/cxl_pci/cxl_mem did not probe; /sys/bus/cxl/devices: $(cd /sys/bus/cxl/devices && echo *))"
    read -r -a mds <<< "$(cxl_memdevs | tr '\n' ' ')"  # no /dev/fd for <(...) in the guest's early shell
    [ ${#mds[@]} -ge "$want" ] || fail 108 "guest CXL devices: topology $TOPOLOGY needs $want memdevs, found ${mds[*]} (/sys/bus/cxl/devices: $(cd /sys/bus/cxl/devices && echo *))"
    if ! compgen -G '/sys/bus/cxl/devices/region*' >/dev/null; then
        for ((i = 0; i < want; i++)); do
            out=$(create_ram_region "${mds[i]}" "decoder0.$i" 2>&1) \
                || fail 109 "guest CXL region creation (${mds[i]} in decoder0.$i): $(echo "$out" | tail -n 2 | tr '\n' ' ')"
            say "created $out"
        done
    fi
    udevadm settle -t 60
    end=$((SECONDS + 20))
    until [ "$(cxl_nodes_online | wc -l)" -ge "$want" ] || [ $SECONDS -ge $end ]; do sleep 0.1; done
    if [ "$(cxl_nodes_online | wc -l)" -lt "$want" ] && compgen -G '/sys/bus/dax/devices/dax*' >/dev/null; then  # kmem did not take it: ask daxctl
        for d in /sys/bus/dax/devices/dax*; do daxctl reconfigure-device --mode=system-ram --force "${d##*/}" >/dev/null 2>&1; done
    fi
    read -r -a nodes <<< "$(cxl_nodes_online | tr '\n' ' ')"
    [ ${#nodes[@]} -ge "$want" ] || fail 109 "guest CXL region onlining: no kmem-bound dax device with an online memory node (dax: $(cd /sys/bus/dax/devices && echo *))"
    echo "${nodes[0]}" > "$CTL/cxl_node"
    printf '%s\n' "${nodes[@]}" > "$CTL/cxl_nodes"
    stamp region_online
    say "CXL region online as node ${nodes[*]}"
}

run_pytest() { # pytest ARGS from the checkout; its status goes to $CTL/rc
    local args
    mapfile -d '' -t args < "$CTL/args"
    cd "$CHECKOUT" || fail 107 "guest pytest: cannot cd to $CHECKOUT"
    stamp pytest_start
    PATH=${VENV_PY%/*}:$PATH CXLTIERD_LAB=1 CXLTIERD_LAB_SHARE=$SHARE CXLTIERD_LAB_KERNEL=$FLAVOUR CXLTIERD_LAB_INIT=$PID1 \
        CXLTIERD_LAB_TOPOLOGY=$TOPOLOGY "$VENV_PY" -m pytest "${args[@]}" >> "$CTL/pytest.out" 2>&1 < /dev/null
    echo $? > "$CTL/rc"
    stamp pytest_end
}

install_deb() { # dpkg -i of the .deb the runner built; policy-rc.d keeps the maintainer scripts from starting it
    # (the tests start it), and without man-db's auto-update flag its trigger skips rebuilding the man database
    local out rc=0
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d && chmod 755 /usr/sbin/policy-rc.d
    rm -f /var/lib/man-db/auto-update
    out=$(dpkg -i "$CTL/$DEB" 2>&1) || rc=$?
    rm -f /usr/sbin/policy-rc.d
    printf '%s\n' "$out" > "$CTL/dpkg.out"
    [ "$rc" = 0 ] || fail 110 "guest package install: dpkg -i $DEB exited $rc: $(echo "$out" | tail -n 2 | tr '\n' ' ')"
    stamp installed
    say "installed $DEB"
}

# Units that cannot work or only cost time in the guest: logins on other ttys, the network and its waits, clocks,
# timers (apt, man-db, fstrim), first-boot and update jobs, host services.
MASK="getty.target getty@.service serial-getty@.service console-getty.service systemd-networkd-wait-online.service
 networking.service systemd-networkd.service systemd-resolved.service systemd-timesyncd.service systemd-pstore.service
 timers.target remote-fs.target systemd-firstboot.service systemd-repart.service systemd-hwdb-update.service
 ldconfig.service systemd-machine-id-commit.service keyboard-setup.service console-setup.service e2scrub_reap.service
 systemd-binfmt.service proc-sys-fs-binfmt_misc.automount systemd-ask-password-console.path"

lab_unit() { # lab_unit NAME STEP AFTER...: a oneshot unit running `guest-main.sh STEP` after the named units
    local name=$1 step=$2; shift 2
    cat > "/etc/systemd/system/$name" <<UNIT
[Unit]
Description=cxltierd lab: $step
Requires=$*
After=$*
[Service]
Type=oneshot
RemainAfterExit=yes
ExecStart=/bin/bash $ME $step
TimeoutStartSec=infinity
StandardOutput=journal+console
UNIT
}

prepare_systemd() { # the overlay root as systemd's: host mounts and services out, the lab's target as default
    local U=/etc/systemd/system u
    : > /etc/fstab
    for u in $MASK; do ln -sfn /dev/null "$U/$u"; done
    # tmp.conf's `D /tmp` empties /tmp at boot: where /tmp is the host's (a checkout cloned into /tmp, see pid1 below)
    # that deletes the checkout under test in the guest, over 9p, for many minutes. Keep /tmp, do not empty it.
    mkdir -p /etc/tmpfiles.d
    echo 'd /tmp 1777 root root -' > /etc/tmpfiles.d/tmp.conf
    lab_unit cxltierd-lab-region.service region systemd-udevd.service systemd-udev-trigger.service
    lab_unit cxltierd-lab-install.service install cxltierd-lab-region.service
    lab_unit cxltierd-lab-pytest.service pytest cxltierd-lab-region.service cxltierd-lab-install.service
    printf '[Unit]\nDescription=cxltierd lab\nRequires=basic.target cxltierd-lab-pytest.service\nAfter=basic.target\nAllowIsolate=yes\n' \
        > "$U/cxltierd-lab.target"
    ln -sfn cxltierd-lab.target "$U/default.target"
}

case ${1:-pid1} in
    pid1)
        mkdir -p /lib/modules /dev/pts /dev/shm /sys/fs/cgroup /tmp
        ln -sfn "$KDIR" "/lib/modules/$KV"
        # A fresh /tmp, unless the checkout or the lab dir live there (CI may clone into /tmp): a tmpfs would hide
        # them. The root is a tmpfs overlay anyway, so writes to the host's /tmp stay in the guest either way.
        if [[ "$CHECKOUT/" != /tmp/* && "$LAB/" != /tmp/* ]]; then mount -t tmpfs tmpfs /tmp; fi
        if [ "$PID1" = systemd ]; then
            [ -x /lib/systemd/systemd ] || fail 107 "guest boot: no /lib/systemd/systemd"
            prepare_systemd
            stamp init
            say "starting systemd as PID 1"
            exec /lib/systemd/systemd
        fi
        mount -t devpts devpts /dev/pts; mount -t tmpfs tmpfs /dev/shm
        mount -t cgroup2 none /sys/fs/cgroup; mount -t debugfs none /sys/kernel/debug; mount -t tracefs none /sys/kernel/tracing
        stamp init
        /lib/systemd/systemd-udevd --daemon >/dev/null 2>&1 || fail 107 "guest udev: systemd-udevd did not start"
        udevadm trigger --action=add >/dev/null 2>&1; udevadm settle -t 120
        stamp udev_settled
        region
        say "running pytest"
        run_pytest
        poweroff_now ;;
    region) udevadm settle -t 120; stamp udev_settled; region ;;
    install) install_deb ;;
    pytest)
        say "running pytest"; run_pytest
        systemd-analyze blame --no-pager > "$CTL/systemd-blame.txt" 2>&1
        say "pytest done, powering off"; systemctl poweroff --no-block || poweroff_now ;;
    *) echo "usage: guest-main.sh [region|install|pytest]" >&2; exit 2 ;;
esac
EOF
chmod 755 "$LAB/guest-main.sh.tmp" && mv "$LAB/guest-main.sh.tmp" "$LAB/guest-main.sh"

# ---- 4b. systemd mode: the project's .deb, built from this checkout (dpkg -i'd in the guest from the share) -------
DEB=''
if [ "$PID1" = systemd ]; then
    rm -rf "$LAB/deb" && mkdir -p "$LAB/deb"
    log "building the .deb (packaging/build-deb.sh)"
    bash "$CHECKOUT/packaging/build-deb.sh" "$LAB/deb" > "$LAB/deb/build.out" 2>&1 \
        || die $E_DEB "package build" "packaging/build-deb.sh failed: $(tail -n 3 "$LAB/deb/build.out" | tr '\n' ' ')"
    DEB=$(lab_one_deb "$LAB/deb") || die $E_DEB "package build" "expected one .deb in $LAB/deb, found: $(cd "$LAB/deb" && echo *.deb)"
fi

# ---- 5. QEMU: 2 CPUs/2 nodes, CPU-less slow node 2, generic port node 3, CXL type-3 volatile 512M, HMAT --------------
HMAT=()
lb() { HMAT+=(-numa "hmat-lb,initiator=$1,target=$2,hierarchy=memory,data-type=access-latency,latency=$3"
              -numa "hmat-lb,initiator=$1,target=$2,hierarchy=memory,data-type=access-bandwidth,bandwidth=$4"); }
# CXLTIERD_LAB_TOPOLOGY=tiers3: node 2 with HBM-like figures (4x DDR's bandwidth, idle latency a little above DDR's,
# as on Xeon Max) and a second CXL type-3 device (256 MiB) behind an emulated switch (root port rp1 -> cxl-upstream
# -> cxl-downstream) in a second fixed memory window of the same host bridge: its region becomes node 5, the
# kernel's access figures for it add the switch's CDAT (QEMU's upstream port: 150 ns, 16 GB/s). The default topology
# (node 2 at 80 ns / 5 GB/s, one CXL device) is unchanged: tests/unit/test_lab_runner.py compares the two lines.
if [ "$TOPOLOGY" = tiers3 ]; then NODE2=(15 80G 25 40G); else NODE2=(80 5G 80 5G); fi
lb 0 0 10 20G; lb 0 1 20 10G; lb 0 2 "${NODE2[0]}" "${NODE2[1]}"; lb 0 3 30 16G
lb 1 1 10 20G; lb 1 0 20 10G; lb 1 2 "${NODE2[2]}" "${NODE2[3]}"; lb 1 3 40 12G
CXL2=()
# shellcheck disable=SC2054  # commas separate QEMU sub-options, not array elements
[ "$TOPOLOGY" != tiers3 ] || CXL2=(-object memory-backend-ram,id=cxl-mem1,size=256M
    -device cxl-rp,port=1,bus=cxl.1,id=rp1,chassis=0,slot=3
    -device cxl-upstream,bus=rp1,id=us0
    -device cxl-downstream,port=0,bus=us0,id=swport0,chassis=0,slot=4
    -device cxl-type3,bus=swport0,volatile-memdev=cxl-mem1,id=cxl-vmem1)
FMW=cxl-fmw.0.targets.0=cxl.1,cxl-fmw.0.size=4G  # QEMU takes every window in one -M
[ "$TOPOLOGY" != tiers3 ] || FMW+=,cxl-fmw.1.targets.0=cxl.1,cxl-fmw.1.size=4G
read -r -a EXTRA <<< "${CXLTIERD_LAB_QEMU_EXTRA:-}"
# QMP relay (RAS tests inject CXL errors): QEMU's QMP socket on the host; tests/lab/qmp_relay.py answers the requests
# the guest drops in $CTL/qmp-requests (labkit.qmp). Started with each boot, stopped with it.
QMP_SOCK=$LAB/qmp.sock RPID=''
relay_start() { "$VENV_PY" "$CHECKOUT/tests/lab/qmp_relay.py" "$QMP_SOCK" "$CTL/qmp-requests" --pid "$1" \
    >"$LAB/qmp-relay.log" 2>&1 & RPID=$!; }
relay_stop() { [ -z "$RPID" ] || kill "$RPID" 2>/dev/null || true; RPID=''; }
# shellcheck disable=SC2054  # commas separate QEMU sub-options, not array elements
QEMU=("${CXLTIERD_LAB_QEMU:-qemu-system-x86_64}" -accel tcg,thread=multi -cpu max,hypervisor=off -nographic -no-reboot
    -M q35,cxl=on,hmat=on -smp 2,sockets=2,cores=1,threads=1 -m 2560M,maxmem=8G,slots=4
    -object memory-backend-ram,id=m0,size=1G -object memory-backend-ram,id=m1,size=1G
    -object memory-backend-ram,id=m2,size=512M
    -numa node,nodeid=0,cpus=0,memdev=m0 -numa node,nodeid=1,cpus=1,memdev=m1
    -numa node,nodeid=2,memdev=m2,initiator=0 -numa node,nodeid=3
    -numa dist,src=0,dst=1,val=20 -numa dist,src=0,dst=2,val=30 -numa dist,src=1,dst=2,val=30
    -numa dist,src=0,dst=3,val=20 -numa dist,src=1,dst=3,val=20 -numa dist,src=2,dst=3,val=30
    "${HMAT[@]}"
    -object memory-backend-ram,id=cxl-mem0,size=512M
    -device pxb-cxl,bus_nr=12,bus=pcie.0,id=cxl.1
    -object acpi-generic-port,id=gp0,pci-bus=cxl.1,node=3
    -device cxl-rp,port=0,bus=cxl.1,id=rp0,chassis=0,slot=2
    -device cxl-type3,bus=rp0,volatile-memdev=cxl-mem0,id=cxl-vmem0
    -M "$FMW"
    "${CXL2[@]}"
    -kernel "$VMLINUZ" -initrd "$INITRD"
    -append "console=ttyS0 panic=-1 quiet memhp_default_state=online_movable cxltierd.share=$SHARE cxltierd.main=$LAB/guest-main.sh $(lab_init_append "$PID1") ${CXLTIERD_LAB_APPEND:-}"
    -fsdev local,id=fs0,path=/,security_model=none,readonly=on,multidevs=remap
    -device virtio-9p-pci,bus=pcie.0,fsdev=fs0,mount_tag=hostroot
    -fsdev local,id=fs1,path="$SHARE",security_model=none
    -device virtio-9p-pci,bus=pcie.0,fsdev=fs1,mount_tag=share
    -qmp "unix:$QMP_SOCK,server=on,wait=off"
    "${EXTRA[@]}")
printf '%q ' "${QEMU[@]}" > "$LAB/qemu-cmdline.txt"

QPID='' TPID=''
# shellcheck disable=SC2317  # called by the EXIT trap
cleanup() { [ -z "$QPID" ] || kill "$QPID" 2>/dev/null || true; [ -z "$TPID" ] || kill "$TPID" 2>/dev/null || true; relay_stop; }
trap cleanup EXIT
trap 'exit 130' INT TERM

boot() { # boot SECONDS: one guest run; sets QRC
    rm -rf "$SHARE" && mkdir -p "$CTL"
    printf 'KDIR=%q KV=%q FLAVOUR=%q CHECKOUT=%q VENV_PY=%q LAB=%q PID1=%q DEB=%q TOPOLOGY=%q\n' "$KDIR" "$KV" "$FLAVOUR" \
        "$CHECKOUT" "$VENV_PY" "$LAB" "$PID1" "${DEB##*/}" "$TOPOLOGY" > "$CTL/config"
    [ -z "$DEB" ] || cp "$DEB" "$CTL/"
    : > "$CTL/args"
    [ ${#PYTEST_ARGS[@]} = 0 ] || printf '%s\0' "${PYTEST_ARGS[@]}" > "$CTL/args"
    : > "$CTL/pytest.out"
    BOOTED=1
    timeout -k 10 "$1" "${QEMU[@]}" > "$CONSOLE" 2>&1 < /dev/null &
    QPID=$!
    relay_start "$QPID"
    tail -n +1 -f --pid="$QPID" "$CTL/pytest.out" &
    TPID=$!
    QRC=0; wait "$QPID" || QRC=$?
    QPID=''; wait "$TPID" || true; TPID=''; relay_stop
}

PYTEST_ARGS=("$@")
log "$(qemu-system-x86_64 --version | head -n 1), kernel $KV ($FLAVOUR: $KPKG, $SUITE); prepared; booting (TCG, console $CONSOLE)"
DEADLINE=$(( ${EPOCHREALTIME%.*} + TIMEOUT ))
TB=$EPOCHREALTIME
boot "$TIMEOUT"
if [ "$QRC" = 139 ]; then
    REMAIN=$(( DEADLINE - ${EPOCHREALTIME%.*} ))
    [ "$REMAIN" -gt 60 ] || die $E_TIMEOUT "guest" "QEMU crashed (SIGSEGV) and no time is left for a retry"
    cp "$CONSOLE" "$LAB/console-crashed.log"
    log "QEMU crashed (exit 139, known QEMU 10.0 TCG bug, console kept in $LAB/console-crashed.log); retrying the boot once"
    TB=$EPOCHREALTIME
    boot "$REMAIN"
fi
QEMU_WALL=$(elapsed "$TB")
case $QRC in
    0) ;;
    124|137) die $E_TIMEOUT "guest" "timed out after ${TIMEOUT}s (CXLTIERD_LAB_TIMEOUT)" ;;
    139) die $E_QEMU "QEMU" "crashed twice with SIGSEGV (known QEMU 10.0 TCG bug: a wide store spanning RAM and a CXL page; keep migrations onto the CXL node to test workloads started with LD_BIND_NOW=1)" ;;
    *) die $E_QEMU "QEMU" "exited with status $QRC" ;;
esac
if [ -s "$CTL/error" ]; then
    read -r code msg < "$CTL/error"
    die "$code" "${msg%%:*}" "${msg#*: }"
fi
if [ ! -s "$CTL/rc" ]; then
    fatal=$(grep -a -m 1 -E '\[lab-init\] FATAL|Kernel panic' "$CONSOLE" || true)
    die $E_BOOT "guest boot" "the guest did not run pytest${fatal:+ ($fatal)}"
fi
RC=$(cat "$CTL/rc")
log "done: pytest rc=$RC; QEMU wall ${QEMU_WALL}s; PID 1 $PID1, CXL node $(cat "$CTL/cxl_node"); guest uptime: $(lab_guest_times < "$CTL/times")"
exit "$RC"
