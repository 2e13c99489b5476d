#!/usr/bin/env bash
# Install everything the tests need, then run the whole suite: lint, types, unit, integration, packaging and the
# real-kernel lab tests (in a QEMU guest, when this machine can run one).
# Usage (as root on Debian 12, from the checkout): bash tests/run.sh [pytest args for the host tests...]
set -euo pipefail
cd "$(dirname "$0")/.."

# Debian packages the tests use for real: promtool and a Prometheus server (metrics, alert rules), systemd-analyze
# (the unit), dpkg-buildpackage + debhelper + pybuild (the .deb), rpmspec (the spec), Debian's python3 modules (the
# installed .deb is run with /usr/bin/python3), shellcheck (the lab runner scripts), tmux (a real terminal for
# `cxltierd top`), lintian (the .deb).
APT_PACKAGES=(
    python3-venv systemd prometheus rpm dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all
    python3-setuptools python3-psutil python3-pyudev python3-prometheus-client python3-click python3-yaml shellcheck
    tmux lintian
)
if [ "$(id -u)" = 0 ] && command -v apt-get >/dev/null; then
    echo "== apt-get install ${APT_PACKAGES[*]}"
    apt-get update -qq >/dev/null
    DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${APT_PACKAGES[@]}" >/dev/null
else
    echo "== not root or no apt-get: install these Debian packages yourself or tests that need them fail:"
    echo "   ${APT_PACKAGES[*]}"
fi

python3 -m venv .venv
.venv/bin/python -m pip install -q --upgrade pip >/dev/null
.venv/bin/python -m pip install -q -e '.[test,plot]'  # plot: matplotlib, for the --plot/--heatmap tests

echo "== ruff"; .venv/bin/ruff check .
echo "== mypy"; .venv/bin/mypy
echo "== pytest (host)"; .venv/bin/python -m pytest -p no:cacheprovider "$@"

# Real-kernel lab: a QEMU guest (TCG) with emulated CXL memory runs tests/lab, once per guest kernel: the long-term
# 6.12 of bookworm-backports and the newest of trixie-backports (needs root, x86_64, apt reaching Debian bookworm,
# bookworm-backports and trixie-backports). Three boots per kernel: one (busybox-style shell as PID 1) serves tests/lab,
# one (systemd as PID 1, the .deb installed in the guest) tests/lab/systemd, one (the three-tier topology: node 2
# HBM-like by HMAT, a second CXL device behind a switch) tests/lab/tiers3; all six always run.
why_not=""
[ "$(id -u)" = 0 ] || why_not="not root"
[ "$(uname -m)" = x86_64 ] || why_not="${why_not:+$why_not, }not x86_64"
command -v apt-get >/dev/null || why_not="${why_not:+$why_not, }no apt-get"
if [ -n "${CXLTIERD_SKIP_LAB:-}" ]; then
    echo "== lab: SKIPPED (CXLTIERD_SKIP_LAB is set)"
elif [ -n "$why_not" ]; then
    echo "== lab: SKIPPED, this machine cannot run the QEMU guest ($why_not); see tests/lab/README.md"
else
    lab_failed=""
    for kernel in lts newest; do
        echo "== lab, kernel $kernel (QEMU guest, real kernel with emulated CXL)"
        start=$SECONDS
        rc=0
        CXLTIERD_LAB_KERNEL=$kernel bash tests/lab/run.sh tests/lab -q -p no:hypothesispytest -p no:cacheprovider || rc=$?
        echo "== lab, kernel $kernel: exit $rc after $((SECONDS - start)) s"
        [ "$rc" = 0 ] || lab_failed="${lab_failed:+$lab_failed, }$kernel (exit $rc)"
        # The same kernel with systemd as the guest's PID 1: the .deb installed with dpkg, the service under systemctl.
        echo "== lab, kernel $kernel, systemd as PID 1 (tests/lab/systemd)"
        start=$SECONDS
        rc=0
        CXLTIERD_LAB_INIT=systemd CXLTIERD_LAB_KERNEL=$kernel bash tests/lab/run.sh tests/lab/systemd -q \
            -p no:hypothesispytest -p no:cacheprovider || rc=$?
        echo "== lab, kernel $kernel, systemd as PID 1: exit $rc after $((SECONDS - start)) s"
        [ "$rc" = 0 ] || lab_failed="${lab_failed:+$lab_failed, }$kernel with systemd (exit $rc)"
        # The same kernel on the three-tier topology (CXLTIERD_LAB_TOPOLOGY=tiers3): classification and the cascade.
        echo "== lab, kernel $kernel, three-tier topology (tests/lab/tiers3)"
        start=$SECONDS
        rc=0
        CXLTIERD_LAB_TOPOLOGY=tiers3 CXLTIERD_LAB_KERNEL=$kernel bash tests/lab/run.sh tests/lab/tiers3 -q \
            -p no:hypothesispytest -p no:cacheprovider || rc=$?
        echo "== lab, kernel $kernel, three-tier topology: exit $rc after $((SECONDS - start)) s"
        [ "$rc" = 0 ] || lab_failed="${lab_failed:+$lab_failed, }$kernel three-tier (exit $rc)"
    done
    [ -z "$lab_failed" ] || { echo "== lab FAILED on: $lab_failed"; exit 1; }
fi
