# tests/lab/init.sh - what differs between the lab guest's two PID 1s (CXLTIERD_LAB_INIT=shell | systemd).
# Sourced by tests/lab/run.sh (and by tests/unit/test_lab_init.py). Plain functions over their arguments: no apt, no
# network, no guest.
# shellcheck shell=bash

# lab_init_append INIT: extra kernel command line for that PID 1 (shell: nothing). Under systemd: show unit status
# on the console only for failures (the console log stays readable), and no emergency shell that would wait forever
# on the serial console: a crashed PID 1 reboots, which QEMU's -no-reboot turns into an exit the runner reports.
lab_init_append() {
    case $1 in
        shell) echo "" ;;
        systemd) echo "systemd.show_status=error systemd.crash_shell=0 systemd.crash_reboot=1" ;;
        *) return 1 ;;
    esac
}

# lab_one_deb DIR: the one cxltierd_*.deb that packaging/build-deb.sh left in DIR; fails when there is none or more.
lab_one_deb() {
    local debs=()
    mapfile -t debs < <(find "$1" -maxdepth 1 -name 'cxltierd_*.deb' | sort)
    [ ${#debs[@]} = 1 ] || return 1
    echo "${debs[0]}"
}

# lab_guest_times < $CTL/times: the guest's milestones ("NAME UPTIME" lines, as the guest wrote them) as one
# "name Xs, ..." line, in the order they happened; pytest's span is shown as pytest A..Bs (Cs).
lab_guest_times() {
    awk '
        $1 == "pytest_start" { p0 = $2; next }
        $1 == "pytest_end" { out = out sep sprintf("pytest %ss..%ss (%.1fs)", p0, $2, $2 - p0); sep = ", "; next }
        { out = out sep $1 " " $2 "s"; sep = ", " }
        END { if (p0 != "" && out !~ /pytest /) out = out sep "pytest from " p0 "s"; print out }'
}
