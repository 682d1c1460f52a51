#!/usr/bin/env bash
# Build tmpl's test guest kernel: a small Linux with what an E2B/Firecracker guest needs
# (virtio-mmio with command-line devices, virtio-blk, virtio-net, ext4, IPv4 autoconfig from `ip=`,
# devtmpfs, cgroup v2, the system calls Go and systemd use, IKCONFIG), from Debian's linux-source
# package: `make tinyconfig` + kernel/tmpl-guest.config, then `make vmlinux bzImage`.
#
#   scripts/build-test-kernel.sh [--print-path] [DEST]      default DEST: target
#
# --print-path prints where the kernel for the current fragment and source is (or would be) and
# exits without building.
#
# The result is cached in DEST/test-kernel-<key>/ where <key> hashes the fragment, the
# linux-source package version and this recipe's version, so a re-run with nothing changed is
# instant. That directory holds:
#   vmlinux      uncompressed ELF with a PVH entry: what Firecracker boots (E2B's vmlinux.bin)
#                and what QEMU boots with -kernel
#   bzImage      the same kernel in the x86 boot format (xz payload)
#   config       the .config it was built with (also embedded: IKCONFIG)
#   build-info   key, source version, kernel release, step timings (wall and CPU)
# Prints the vmlinux path on stdout; tests read it from TMPL_TEST_GUEST_KERNEL:
#   export TMPL_TEST_GUEST_KERNEL=$(scripts/build-test-kernel.sh)
#
# Needs (Debian): linux-source bc bison flex libelf-dev make gcc libc6-dev xz-utils.
# Environment: JOBS (default: nproc), TMPL_KEEP_KERNEL_TREE=1 keeps the 1.6 GB build tree in
# DEST/test-kernel-<key>/src for incremental experiments (removed by default).
set -Eeuo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
fragment=$here/kernel/tmpl-guest.config
# Bump when the build steps change in a way that changes the output.
recipe="tmpl-test-kernel recipe 1: tinyconfig + fragment, olddefconfig, make vmlinux bzImage"
deps="linux-source bc bison flex libelf-dev make gcc libc6-dev xz-utils"

print_only=0
if [ "${1:-}" = --print-path ]; then
    print_only=1
    shift
fi
dest=${1:-target}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)
jobs=${JOBS:-$(nproc)}

say() { echo "build-test-kernel: $*" >&2; }
die() { say "$*"; exit 1; }

# The newest linux-source tarball (linux-source-6.1.tar.xz on Debian 12).
tarball=$(find /usr/src -maxdepth 1 -name 'linux-source-*.tar.xz' 2>/dev/null | sort -V | tail -n1)
[ -n "$tarball" ] || die "no /usr/src/linux-source-*.tar.xz: apt-get install $deps"
for tool in bc bison flex make gcc xz; do
    command -v "$tool" >/dev/null || die "$tool is missing: apt-get install $deps"
done
[ -e /usr/include/libelf.h ] || die "libelf.h is missing: apt-get install $deps"

# The source's identity: the owning package's version (dpkg), else the tarball's size and mtime.
if owner=$(dpkg-query -S "$tarball" 2>/dev/null); then
    pkg=${owner%%:*}
    srcver="$pkg $(dpkg-query -W -f='${Version}' "$pkg")"
else
    srcver="$(basename "$tarball") $(stat -c '%s %Y' "$tarball")"
fi
key=$({ printf '%s\n%s\n' "$recipe" "$srcver"; cat "$fragment"; } | sha256sum | cut -c1-16)
out=$dest/test-kernel-$key

if [ "$print_only" = 1 ]; then
    echo "$out/vmlinux"
    exit 0
fi

cached() { [ -s "$out/vmlinux" ] && [ -s "$out/config" ] && [ -s "$out/build-info" ]; }
if cached; then
    echo "$out/vmlinux"
    exit 0
fi

# One build per key at a time; a second caller waits and then finds the cache.
exec 9>"$out.lock"
flock 9
if cached; then
    echo "$out/vmlinux"
    exit 0
fi

work=$out.tmp
rm -rf "$work"
mkdir -p "$work/src"
log=$work/build.log
# On failure: show the end of the build log, and drop the 1.6 GB tree (the log stays in $work).
trap 'say "failed; the last lines of $log:"; tail -n 40 "$log" >&2 || true' ERR
finish() {
    if [ -d "$work/src" ] && [ "${TMPL_KEEP_KERNEL_TREE:-0}" != 1 ]; then
        rm -rf "$work/src"
    fi
}
trap finish EXIT

# CPU seconds (user+sys) of the children this shell has waited for. `times` must run in this
# shell, not in a $(...) subshell (a forked child starts with zero child times).
cpu() {
    times >"$work/.times" # 2nd line: "XmY.YYYs XmY.YYYs" (children's user, sys)
    awk -v t="$(tail -n1 "$work/.times")" 'BEGIN { n = split(t, a, " "); s = 0;
        for (i = 1; i <= n; i++) { split(a[i], m, "m"); sub("s", "", m[2]); s += m[1] * 60 + m[2] }
        printf "%.0f", s }'
}
step_start=0 step_cpu=0 timings=""
start() {
    step_start=$SECONDS
    cpu >"$work/.cpu"
    step_cpu=$(cat "$work/.cpu")
    say "$1 ..."
}
done_() {
    cpu >"$work/.cpu"
    timings+="$1: wall $((SECONDS - step_start)) s, cpu $(($(cat "$work/.cpu") - step_cpu)) s"$'\n'
}

start "extracting $tarball ($srcver)"
tar -xf "$tarball" -C "$work/src" --strip-components=1
done_ extract

cd "$work/src"
start "configuring (tinyconfig + $(grep -c '^CONFIG_' "$fragment") fragment lines)"
{
    make tinyconfig
    # -m: merge only; olddefconfig resolves dependencies and defaults afterwards.
    scripts/kconfig/merge_config.sh -m .config "$fragment"
    make olddefconfig
} >>"$log" 2>&1
# Every fragment line must have survived dependency resolution unchanged.
lost=0
while IFS= read -r line; do
    case $line in
    CONFIG_*=*)
        grep -qxF -- "$line" .config && continue
        name=${line%%=*}
        ;;
    "# CONFIG_"*" is not set")
        name=${line#\# }
        name=${name%% *}
        grep -q "^$name=" .config || continue
        ;;
    *) continue ;;
    esac
    say "fragment line lost: $line (now: $(grep -E "^(# )?${name}[= ]" .config || echo absent))"
    lost=1
done <"$fragment"
[ "$lost" = 0 ] || die "the fragment does not apply to $srcver; fix kernel/tmpl-guest.config"
done_ config

start "make -j$jobs vmlinux (log: $log)"
make -j"$jobs" vmlinux >>"$log" 2>&1
done_ vmlinux
start "make -j$jobs bzImage"
make -j"$jobs" bzImage >>"$log" 2>&1
done_ bzImage
release=$(make -s kernelrelease)

# What the tests rely on: a 64-bit ELF with the config embedded.
head -c5 vmlinux | od -An -tx1 | grep -q '7f 45 4c 46 02' || die "vmlinux is not a 64-bit ELF"
grep -qa IKCFG_ST vmlinux || die "vmlinux has no embedded config (IKCFG_ST)"

cp vmlinux arch/x86/boot/bzImage "$work/"
cp .config "$work/config"
cd "$work"
{
    echo "key: $key"
    echo "source: $srcver"
    echo "kernel release: $release"
    echo "fragment: $fragment"
    echo "jobs: $jobs"
    printf '%s' "$timings"
} >build-info
rm -f "$work/.times" "$work/.cpu"
trap - ERR EXIT
if [ "${TMPL_KEEP_KERNEL_TREE:-0}" = 1 ]; then
    say "keeping the build tree in $out/src"
else
    rm -rf "$work/src"
fi
rm -rf "$out"
mv "$work" "$out"
say "built $release in $out"
sed 's/^/build-test-kernel:   /' "$out/build-info" >&2
echo "$out/vmlinux"
