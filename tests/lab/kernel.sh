# tests/lab/kernel.sh - which Debian kernel the lab guest boots, and where its files are once unpacked.
# Sourced by tests/lab/run.sh (and by tests/unit/test_lab_runner.py, which feeds it recorded apt-cache output).
# Plain functions over their arguments and stdin: no apt, no network.
# shellcheck shell=bash

# lab_kernel_suite FLAVOUR: the suite whose linux-image-amd64 the guest boots (lts: 6.12, newest: the newest Debian
# kernel). Fails for any other flavour.
lab_kernel_suite() {
    case $1 in
        lts) echo bookworm-backports ;;
        newest) echo trixie-backports ;;
        *) return 1 ;;
    esac
}

# lab_kernel_image < `apt-cache depends -t SUITE linux-image-amd64`: the linux-image-KV the metapackage depends on.
lab_kernel_image() {
    awk '$1 == "Depends:" && $2 ~ /^linux-image-[0-9]/ { print $2; found = 1; exit } END { exit !found }'
}

# lab_kernel_packages IMAGE < `apt-cache depends -t SUITE IMAGE`: the packages holding that kernel, one a line.
# Debian 12's linux-image-KV holds the kernel itself. Debian 13's is empty and depends on linux-binary-KV (a package
# named linux-binary-unsigned-KV), linux-modules-KV and linux-base-KV (the config).
lab_kernel_packages() {
    local kv=${1#linux-image-} deps
    deps=$(cat)
    [ -n "$deps" ] || return 1
    if grep -q "Depends: linux-binary-$kv\$" <<< "$deps"; then
        printf '%s\n' "linux-binary-unsigned-$kv" "linux-modules-$kv" "linux-base-$kv"
    else
        echo "$1"
    fi
}

# lab_kernel_files ROOT: after `dpkg -x` of the packages into ROOT, prints three lines: KV, the kernel image and the
# kernel config. Debian 12: boot/vmlinuz-KV, boot/config-KV, lib/modules/KV; Debian 13: usr/lib/modules/KV/
# {vmlinuz*,config} (ROOT/lib is then made a link to usr/lib, so the modules are at ROOT/lib/modules/KV either way).
lab_kernel_files() {
    local root=$1 kv image config
    [ -d "$root/lib/modules" ] || { [ -d "$root/usr/lib/modules" ] && ln -s usr/lib "$root/lib"; } || return 1
    kv=$(find "$root/lib/modules/" -mindepth 1 -maxdepth 1 -type d -printf '%f\n' | sort -V | tail -n 1)
    [ -n "$kv" ] || return 1
    image=$root/boot/vmlinuz-$kv
    [ -f "$image" ] || image=$(find "$root/lib/modules/$kv/" -maxdepth 1 -name 'vmlinuz*' | sort | head -n 1)
    config=$root/boot/config-$kv
    [ -f "$config" ] || config=$root/lib/modules/$kv/config
    [ -f "$image" ] && [ -f "$config" ] || return 1
    printf '%s\n' "$kv" "$image" "$config"
}
