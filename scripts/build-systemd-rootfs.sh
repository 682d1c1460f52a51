#!/usr/bin/env bash
# Build tmpl's systemd test rootfs: a minimal Debian 12 (bookworm) tree whose /sbin/init is
# systemd (systemd-sysv) with udev, the shape of an E2B template's rootfs before envd is added.
# tests/boot_evidence.rs makes an ext4 image of it with `mkfs.ext4 -d`, runs
# `tmpl inject-envd --as service` on it and boots it to `health` on the test guest kernel.
#
#   scripts/build-systemd-rootfs.sh [--print-path] [DEST]      default DEST: target
#
# --print-path prints where the tree for the current recipe is (or would be) and exits without
# building.
#
# How: `mmdebstrap --variant=minbase --include=systemd-sysv,udev`, no recommends, no documentation,
# manual pages or translations, no apt lists or caches, udev's generated hardware database removed:
# 110 packages, 165 MiB. (mmdebstrap rather than debootstrap: with systemd-sysv alone, 47 s against
# 85 s on this project's idle 2-core machine; docs/guest-kernel.md.)
#
# The result is cached in DEST/systemd-rootfs-<key>/ where <key> hashes this script, the mirror
# and the mmdebstrap version: a re-run with nothing changed is instant. (The archive itself moves
# on with bookworm's point releases; the cache does not notice: delete the directory to refresh.)
# That directory holds:
#   tree         the root tree, owned by root as in an image (files such as /etc/shadow are
#                readable by root only, so `mkfs.ext4 -d` of it runs as root, as CI does, and
#                keeps every owner, group and mode)
#   build-info   key, suite, mirror, tool versions, package count, size, time taken
# Prints the tree's path on stdout; tests read it from TMPL_TEST_SYSTEMD_ROOTFS:
#   export TMPL_TEST_SYSTEMD_ROOTFS=$(scripts/build-systemd-rootfs.sh target)
#
# Needs (Debian): mmdebstrap, root, and network access to MIRROR.
# Environment: MIRROR (default http://deb.debian.org/debian).
set -Eeuo pipefail

here=$(cd "$(dirname "$0")/.." && pwd)
suite=bookworm
mirror=${MIRROR:-http://deb.debian.org/debian}
packages=systemd-sysv,udev

print_only=0
args=()
for a in "$@"; do
    case $a in
    --print-path) print_only=1 ;;
    -*)
        echo "usage: $0 [--print-path] [DEST]" >&2
        exit 2
        ;;
    *) args+=("$a") ;;
    esac
done
dest=${args[0]:-target}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

say() { echo "build-systemd-rootfs: $*" >&2; }
die() {
    say "$*"
    exit 1
}

if command -v mmdebstrap >/dev/null; then
    tool="mmdebstrap $(mmdebstrap --version 2>/dev/null | awk '{print $2; exit}')"
else
    tool="mmdebstrap (missing)"
fi
key=$({ printf '%s\n%s\n' "$mirror" "$tool"; cat "$here/scripts/build-systemd-rootfs.sh"; } | sha256sum | cut -c1-16)
out=$dest/systemd-rootfs-$key

if [ "$print_only" = 1 ]; then
    echo "$out/tree"
    exit 0
fi

cached() { [ -x "$out/tree/lib/systemd/systemd" ] && [ -s "$out/build-info" ]; }
if cached; then
    echo "$out/tree"
    exit 0
fi

command -v mmdebstrap >/dev/null || die "mmdebstrap is missing: apt-get install mmdebstrap"
[ "$(id -u)" = 0 ] || die "needs root: the tree's files must be owned by root, as in an image"

# One build per key at a time; a second caller waits and then finds the cache.
exec 9>"$out.lock"
flock 9
if cached; then
    echo "$out/tree"
    exit 0
fi

work=$out.tmp
rm -rf "$work"
mkdir -p "$work"
log=$work/build.log
trap 'say "failed; the last lines of $log:"; tail -n 30 "$log" >&2 || true' ERR

start=$SECONDS
say "mmdebstrap $suite ($packages) from $mirror (log: $log) ..."
# Documentation, manual pages and translations are never unpacked (dpkg path filters, kept in the
# tree's /etc/dpkg/dpkg.cfg.d so later installs skip them too); copyright files stay.
mmdebstrap --mode=root --variant=minbase --include="$packages" \
    --aptopt='APT::Install-Recommends "false"' --aptopt='Acquire::Languages "none"' \
    --dpkgopt='path-exclude=/usr/share/doc/*' --dpkgopt='path-include=/usr/share/doc/*/copyright' \
    --dpkgopt='path-exclude=/usr/share/man/*' --dpkgopt='path-exclude=/usr/share/info/*' \
    --dpkgopt='path-exclude=/usr/share/locale/*' --dpkgopt='path-include=/usr/share/locale/locale.alias' \
    "$suite" "$work/tree" "$mirror" >>"$log" 2>&1

t=$work/tree
# What mmdebstrap leaves that an image does not need: apt's lists and caches, logs of the
# installation, udev's generated hardware database (names for USB/PCI IDs; rebuilt by
# `systemd-hwdb update`, unused by a VM with virtio devices only).
rm -rf "$t"/var/lib/apt/lists/* "$t"/var/cache/apt/* "$t"/var/cache/debconf/*-old \
    "$t"/var/log/apt/* "$t"/var/log/dpkg.log "$t"/var/log/alternatives.log \
    "$t"/etc/udev/hwdb.bin "$t"/usr/lib/udev/hwdb.bin "$t"/lib/udev/hwdb.bin
# What the test relies on.
[ "$(readlink "$t/sbin/init")" = /lib/systemd/systemd ] || die "/sbin/init is not systemd"
[ -x "$t/bin/udevadm" ] || die "udev is not installed"
# An empty machine-id: every VM booted from the image makes its own (as Debian's images ship it).
if [ ! -f "$t/etc/machine-id" ] || [ -s "$t/etc/machine-id" ]; then
    die "/etc/machine-id is not an empty file"
fi

{
    echo "key: $key"
    echo "suite: $suite"
    echo "mirror: $mirror"
    echo "tool: $tool"
    echo "packages: $(chroot "$t" dpkg-query -W -f='.\n' | wc -l)"
    echo "systemd: $(chroot "$t" dpkg-query -W -f="\${Version}" systemd)"
    echo "size: $(du -sm "$t" | cut -f1) MiB"
    echo "built: $(date -u +%Y-%m-%dT%H:%M:%SZ) in $((SECONDS - start)) s"
} >"$work/build-info"
trap - ERR
rm -rf "$out"
mv "$work" "$out"
sed 's/^/build-systemd-rootfs:   /' "$out/build-info" >&2
echo "$out/tree"
