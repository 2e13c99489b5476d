#!/usr/bin/env bash
# Build the cxltierd .deb from this checkout: packaging/build-deb.sh [OUTDIR]   (default OUTDIR: dist/)
#
# dpkg-buildpackage wants debian/ at the top of the source tree, so this copies the tree (tracked files plus new,
# not-ignored ones; without fixtures/hosts, benchmarks/, .git, .venv) into a temporary directory, puts
# packaging/debian there as debian/, runs `dpkg-buildpackage -b -us -uc` and copies the .deb to OUTDIR.
# Needs (Debian 12): dpkg-dev debhelper dh-python pybuild-plugin-pyproject python3-all python3-setuptools.
# Set KEEP_BUILD_DIR=1 to keep the temporary build tree (its path is printed).
set -euo pipefail

# Build with Debian's own toolchain and python3, never a virtualenv/pyenv/`pip install --user` interpreter that
# happens to come first on PATH (pybuild calls `python3.11 -m build` and dh_python3 reads the system site-packages).
export PATH=/usr/sbin:/usr/bin:/sbin:/bin
unset VIRTUAL_ENV PYTHONPATH PYTHONHOME PYTHONSTARTUP PYTHONUSERBASE PYTHONNOUSERSITE CONDA_PREFIX
export PYTHONDONTWRITEBYTECODE=1

here="$(cd "$(dirname "$0")" && pwd)"
top="$(cd "$here/.." && pwd)"
outdir="${1:-$top/dist}"
mkdir -p "$outdir"
outdir="$(cd "$outdir" && pwd)"

for tool in dpkg-buildpackage dpkg-parsechangelog dh; do
    command -v "$tool" >/dev/null || { echo "build-deb.sh: '$tool' not found; apt-get install dpkg-dev debhelper" >&2; exit 1; }
done

version="$(dpkg-parsechangelog -l "$here/debian/changelog" -S Version)"
work="$(mktemp -d "${TMPDIR:-/tmp}/cxltierd-deb.XXXXXX")"
if [ "${KEEP_BUILD_DIR:-0}" = 1 ]; then
    echo "build-deb.sh: build tree kept in $work"
else
    trap 'rm -rf "$work"' EXIT
fi
src="$work/cxltierd-$version"
mkdir -p "$src"

# Paths never copied: large sysfs fixture trees (symlink loops), benchmarks, VCS and local environments, build output.
excluded() {
    case "$1" in
        .git | .git/* | .venv | .venv/* | fixtures/hosts | fixtures/hosts/* | benchmarks | benchmarks/* | \
            dist | dist/* | build | build/* | .pybuild | .pybuild/* | *.egg-info | *.egg-info/* | \
            */__pycache__/* | packaging/debian/*) return 0 ;;
    esac
    return 1
}

cd "$top"
if git -C "$top" rev-parse --is-inside-work-tree >/dev/null 2>&1; then
    # Tracked and untracked-but-not-ignored files: a developer's uncommitted new modules are packaged too.
    git -C "$top" ls-files -z --cached --others --exclude-standard |
        while IFS= read -r -d '' f; do
            if [ -e "$f" ] || [ -L "$f" ]; then excluded "$f" || printf '%s\0' "$f"; fi
        done | sort -zu >"$work/files"
    tar -C "$top" --null --no-recursion -T "$work/files" -cf - | tar -C "$src" -xf -
else
    # Not a git checkout (an unpacked source tarball): copy everything but the excluded paths.
    tar -C "$top" --exclude=./.git --exclude=./.venv --exclude=./fixtures/hosts --exclude=./benchmarks \
        --exclude=./dist --exclude=./build --exclude=./.pybuild --exclude='*.egg-info' --exclude='__pycache__' \
        --exclude=./.mypy_cache --exclude=./.ruff_cache --exclude=./.pytest_cache --exclude=./.hypothesis \
        --exclude=./packaging/debian -cf - . | tar -C "$src" -xf -
fi
cp -a "$here/debian" "$src/debian"

# -b: binary only; -us -uc: no signing. Build artifacts land in $work (the parent of the source tree).
start=$(date +%s)
(cd "$src" && dpkg-buildpackage -b -us -uc) >"$work/build.log" 2>&1 || {
    echo "build-deb.sh: dpkg-buildpackage failed; last lines of the log:" >&2
    tail -n 60 "$work/build.log" >&2
    exit 1
}
debs=("$work"/*.deb)
[ -e "${debs[0]}" ] || { echo "build-deb.sh: no .deb produced" >&2; tail -n 60 "$work/build.log" >&2; exit 1; }
cp "${debs[@]}" "$outdir/"
for d in "${debs[@]}"; do echo "$outdir/$(basename "$d")"; done
echo "build-deb.sh: built in $(($(date +%s) - start)) s" >&2
