#!/usr/bin/env bash
# Extract a Debian cloud kernel for `tmpl boot-test` and its tests: the bzImage and its config,
# unpacked with dpkg-deb -x (no installation, no initramfs hooks, nothing in /boot).
#
#   scripts/fetch-test-kernel.sh [DEST]      default DEST: target/test-kernel
#
# Prints the kernel's path on stdout; tests read it from TMPL_TEST_KERNEL:
#   export TMPL_TEST_KERNEL=$(scripts/fetch-test-kernel.sh)
# Needs apt lists (apt-get update) for linux-image-cloud-amd64. Idempotent: an already
# extracted kernel is reused.
set -euo pipefail

dest=${1:-target/test-kernel}
mkdir -p "$dest"
dest=$(cd "$dest" && pwd)

existing=$(find "$dest" -maxdepth 1 -name 'vmlinuz-*' -print -quit)
if [ -z "$existing" ]; then
    # The meta package depends on the versioned image package (linux-image-6.1.0-NN-cloud-amd64).
    pkg=$(apt-cache depends linux-image-cloud-amd64 2>/dev/null | awk '/Depends: linux-image-[0-9]/ {print $2; exit}')
    if [ -z "$pkg" ]; then
        echo "fetch-test-kernel: linux-image-cloud-amd64 not found in the apt lists (run apt-get update)" >&2
        exit 1
    fi
    tmp=$(mktemp -d)
    trap 'rm -rf "$tmp"' EXIT
    chown _apt "$tmp" 2>/dev/null || true # apt downloads as the _apt user where it can
    (cd "$tmp" && apt-get download -q "$pkg" >&2)
    dpkg-deb -x "$tmp"/"$pkg"_*.deb "$tmp/x"
    cp "$tmp"/x/boot/vmlinuz-* "$tmp"/x/boot/config-* "$dest"/
    existing=$(find "$dest" -maxdepth 1 -name 'vmlinuz-*' -print -quit)
fi

config="$dest/config-${existing##*/vmlinuz-}"
# boot-test attaches the root disk on a bus the kernel has built in and uses no initramfs.
grep -q '^CONFIG_EXT4_FS=y' "$config" || { echo "fetch-test-kernel: $config: ext4 is not built in" >&2; exit 1; }
grep -Eq '^CONFIG_(BLK_DEV_NVME|VIRTIO_BLK)=y' "$config" ||
    { echo "fetch-test-kernel: $config: neither NVMe nor virtio-blk is built in" >&2; exit 1; }
echo "$existing"
