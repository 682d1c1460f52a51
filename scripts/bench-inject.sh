#!/usr/bin/env bash
# Benchmark: `tmpl inject-envd --as init` (with its full verification) against the bare manual
# sequence operators type today, and against debugfs alone, on the same 2 GiB image (issue 4:
# tmpl within 2x of the manual sequence, i.e. ratio >= 0.5).
#
# Run by scripts/bench.sh (which exports TMPL, RUNS and QUICK), or alone:
#   TMPL=target/release/tmpl QUICK=1 scripts/bench-inject.sh
# Needs gcc (a static test envd is compiled from a tiny C file), mkfs.ext4, debugfs, e2fsck; root
# for the mount rows (skipped otherwise). Prints RESULT|, NOTE|, TARGET| and RSS| lines
# (scripts/bench-lib.sh conventions).
#
# Every timed run starts from an identical fresh sparse copy of one prepared image (the setup
# command: not timed; it ends with `sync` so no earlier write-back lands in a timed run).
# tmpl runs in place with everything it does for an operator: validate the envd, copy the image
# (copy_file_range), write with debugfs (or a loop mount), read every written file back and
# compare SHA-256, check the boot path, `e2fsck -fn`, keep a backup, rename atomically, write its
# manifest; --no-purge, and ORCHESTRATOR_BASE_PATH and the cache variables point at an empty
# directory, so no node cache is touched.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${QUICK:-0}
[ "$QUICK" = 1 ] && RUNS=${RUNS:-3}
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
TMPL=${TMPL:-$ROOT/target/release/tmpl}
[ -x "$TMPL" ] || cargo build --release --quiet --bin tmpl
if [ "$QUICK" = 1 ]; then SIZE_MIB=${SIZE_MIB:-256}; else SIZE_MIB=${SIZE_MIB:-2048}; fi
SMALL_MIB=$(( SIZE_MIB / 8 > 64 ? SIZE_MIB / 8 : 64 ))
# Each run takes tens of milliseconds, so more of them than RUNS keep the medians steady (cheap).
INJECT_RUNS=${INJECT_RUNS:-$(( RUNS * 3 ))}
for tool in gcc mkfs.ext4 debugfs e2fsck; do
    if ! command -v "$tool" >/dev/null; then
        echo "NOTE|inject-envd benchmark skipped: $tool is not installed"
        exit 0
    fi
done
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1

WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/tmpl-bench-inject.XXXXXX")
MNT=$WORK/mnt
cleanup() {
    mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT" "$WORK/orchestrator"
# No cache may be touched: every cache root points into an empty folder (and --no-purge).
export ORCHESTRATOR_BASE_PATH=$WORK/orchestrator
export TEMPLATE_CACHE_DIR=$WORK/orchestrator/template DEFAULT_CACHE_DIR=$WORK/orchestrator/build
export SANDBOX_CACHE_DIR=$WORK/orchestrator/sandbox SNAPSHOT_CACHE_DIR=$WORK/orchestrator/snapshot
export ORCHESTRATOR_LOCK_PATH=$WORK/orchestrator.lock
unset SHARED_CHUNK_CACHE_PATH

# A static test envd: its flag names are strings in the binary, as in the real Go binary, so tmpl
# reads its era and version without running it. The image starts with an older one.
envd_source() {
    cat <<EOF
#include <stdio.h>
#include <string.h>
#include <unistd.h>
static const char *VERSION = "$1";
static const char *FLAGS[] = { "port", "version", "isnotfc", "cgroup-root", "no-cgroups", "resume-handover", 0 };
int main(int argc, char **argv) {
  for (int i = 1; i < argc; i++) {
    const char *a = argv[i];
    if (a[0] != '-') break;
    a += (a[1] == '-') ? 2 : 1;
    int ok = 0;
    for (int j = 0; FLAGS[j]; j++) if (!strncmp(a, FLAGS[j], strlen(FLAGS[j]))) ok = 1;
    if (!ok) { fprintf(stderr, "flag provided but not defined: -%s\n", a); return 2; }
    if (!strcmp(a, "version")) { printf("%s\n", VERSION); return 0; }
  }
  printf("envd running\n");
  fflush(stdout);
  for (;;) pause();
}
EOF
}
envd_source 0.5.1 >"$WORK/envd.c"
envd_source 0.4.0 >"$WORK/envd-old.c"
ENVD=$WORK/envd
gcc -static -Os -s -o "$ENVD" "$WORK/envd.c"
TREE=$WORK/tree
mkdir -p "$TREE"/{bin,sbin,usr/bin,etc,proc,sys,dev,run,tmp}
gcc -static -Os -s -o "$TREE/usr/bin/envd" "$WORK/envd-old.c"
# A shell with the libraries it needs (ldd), at the same paths as on the host.
SH=$(readlink -f /bin/sh)
cp "$SH" "$TREE/bin/sh"
for lib in $(ldd "$SH" | grep -o '/[^ ]*'); do
    mkdir -p "$TREE$(dirname "$lib")"
    cp "$(readlink -f "$lib")" "$TREE$lib"
done
ln -s /bin/sh "$TREE/sbin/init"
echo "nameserver 8.8.8.8" >"$TREE/etc/resolv.conf"

make_image() { # make_image FILE MIB
    truncate -s "${2}M" "$1"
    mkfs.ext4 -q -F -U 6a1f2d3c-0000-4000-8000-00000000be0c -E hash_seed=6a1f2d3c-0000-4000-8000-00000000be0d -d "$TREE" "$1"
}
TEMPLATE=$WORK/template.ext4
make_image "$TEMPLATE" "$SIZE_MIB"
ID=e1000000-0000-4000-8000-000000000001
STORE=$WORK/store
IMG=$STORE/$ID/rootfs.ext4
SETUP="rm -rf $STORE/$ID && mkdir -p $STORE/$ID && cp --sparse=always $TEMPLATE $IMG && sync"

# debugfs alone: what tmpl's debugfs backend does, without the checks around it.
cat >"$WORK/cmds" <<EOF
rm /usr/bin/envd
write $ENVD /usr/bin/envd
sif /usr/bin/envd mode 0100755
sif /usr/bin/envd uid 0
sif /usr/bin/envd gid 0
rm /sbin/init
symlink /sbin/init /usr/bin/envd
EOF

TMPL_DEBUGFS="$TMPL --storage $STORE -q inject-envd $ID --envd $ENVD --as init --no-purge"
TMPL_MOUNT="$TMPL_DEBUGFS --backend mount"
MANUAL="mount -o loop $IMG $MNT && cp $ENVD $MNT/usr/bin/envd && ln -sf /usr/bin/envd $MNT/sbin/init && umount $MNT"
DEBUGFS="debugfs -w -f $WORK/cmds $IMG"

# Sanity, once per method on a fresh copy: every method leaves the same result (envd's bytes at
# /usr/bin/envd, /sbin/init -> /usr/bin/envd, e2fsck -fn clean), so the rows compare equal work.
WANT=$(sha256sum "$ENVD" | cut -d' ' -f1)
check_result() { # check_result METHOD
    local got link
    got=$(debugfs -R "cat /usr/bin/envd" "$IMG" 2>/dev/null | sha256sum | cut -d' ' -f1)
    link=$(debugfs -R "stat /sbin/init" "$IMG" 2>/dev/null | sed -n 's/^Fast link dest: "\(.*\)"$/\1/p')
    if [ "$got" != "$WANT" ] || [ "$link" != /usr/bin/envd ] || ! e2fsck -fn "$IMG" >/dev/null 2>&1; then
        echo "inject benchmark: $1 did not produce the expected image (envd $got, init -> $link)" >&2
        exit 1
    fi
}
methods=(TMPL_DEBUGFS DEBUGFS)
[ "$IS_ROOT" = 1 ] && methods+=(TMPL_MOUNT MANUAL)
for m in "${methods[@]}"; do
    eval "$SETUP"
    eval "${!m}" >/dev/null 2>&1 || { echo "inject benchmark: $m failed: ${!m}" >&2; exit 1; }
    check_result "$m"
done

ROW="inject-envd --as init, $SIZE_MIB MiB image (verified in place)"
if [ "$IS_ROOT" = 1 ]; then
    compare "$TMPL_DEBUGFS" "$MANUAL" "$SETUP" "$INJECT_RUNS"
    result "$ROW, debugfs backend" "$T_US" "mount -o loop + cp + ln -sf + umount" "$A_US" "$RATIO" "0.5"
    T_DEBUGFS=$T_US MANUAL_US=$A_US RATIO_DEBUGFS=$RATIO
    MIN_RATIO=$(awk -v t="$T_MIN_US" -v a="$A_MIN_US" 'BEGIN { printf "%.2f", a / t }')
    MIN_NOTE="fastest of $N_RUNS runs: tmpl $(ms "$T_MIN_US"), manual $(ms "$A_MIN_US") (ratio $MIN_RATIO)"
    compare "$TMPL_MOUNT" "$MANUAL" "$SETUP" "$INJECT_RUNS"
    result "$ROW, mount backend" "$T_US" "mount -o loop + cp + ln -sf + umount" "$A_US" "$RATIO" "0.5"
    RATIO_MOUNT=$RATIO
    echo "NOTE|inject-envd vs the manual sequence, debugfs backend: median of $N_RUNS alternating runs each; $MIN_NOTE. The manual sequence's time varies most between runs on this disk (the loop mount and umount's write-back)"
    echo "NOTE|inject-envd ratios are manual time / tmpl time: 0.5 means tmpl takes twice as long as the bare mount + cp + ln + umount (issue 4's bound), 1 the same time. tmpl's time includes what the manual sequence does not do: validating the envd, copying the image, reading the written files back (SHA-256), checking the boot path, e2fsck -fn, a backup, an atomic rename, fsync"
    # The verdict is on the medians (as every row); the fastest runs show the floor without the
    # disk's noise, and when the two disagree both are said.
    VERDICT=$(meets "$RATIO_DEBUGFS" 0.5)
    if [ "$(meets "$MIN_RATIO" 0.5)" != "$VERDICT" ]; then
        VERDICT="$VERDICT on medians, $(meets "$MIN_RATIO" 0.5) on the fastest runs"
    fi
    target "issue 4" "inject-envd on a $SIZE_MIB MiB image, with its full verification, within 2× of mount + cp + ln + umount" \
        "debugfs backend $(ms "$T_DEBUGFS") vs $(ms "$MANUAL_US"): ratio $RATIO_DEBUGFS (fastest runs: $MIN_RATIO; mount backend: $RATIO_MOUNT)" "ratio ≥ 0.5" "$VERDICT"
else
    echo "NOTE|inject-envd vs the manual mount sequence skipped: not root (no loop mount)"
    target "issue 4" "inject-envd within 2× of mount + cp + ln + umount" "not measured (needs root)" "ratio ≥ 0.5" "not measured"
fi
compare "$TMPL_DEBUGFS" "$DEBUGFS" "$SETUP" "$INJECT_RUNS"
result "$ROW, debugfs backend" "$T_US" "debugfs -w -f (rm, write, sif, symlink)" "$A_US" "$RATIO" "-"
T_DEBUGFS2=$T_US DEBUGFS_US=$A_US

# Where tmpl's time goes: the phases it adds, each timed alone on the same fresh image.
E2FSCK_US=$(median_of "$INJECT_RUNS" "$SETUP" "e2fsck -fn $IMG")
COPY_US=$(median_of "$INJECT_RUNS" "$SETUP && rm -f $WORK/copy.ext4" "cp --sparse=always $IMG $WORK/copy.ext4 && sync $WORK/copy.ext4")
rm -f "$WORK/copy.ext4"
DRY_US=$(median_of "$INJECT_RUNS" "$SETUP" "$TMPL_DEBUGFS --dry-run")
REST_US=$(( T_DEBUGFS2 - DRY_US - COPY_US - DEBUGFS_US - E2FSCK_US ))
echo "NOTE|inject-envd (debugfs backend) $(ms "$T_DEBUGFS2"), measured phase by phase on the same image (medians): planning and envd validation (--dry-run) $(ms "$DRY_US"), sparse copy + fsync of the image (cp --sparse=always + sync) $(ms "$COPY_US"), the debugfs edit $(ms "$DEBUGFS_US"), e2fsck -fn $(ms "$E2FSCK_US"); $(if [ "$REST_US" -gt 0 ]; then echo "leaving $(ms "$REST_US") for the read-back, boot checks, backup, rename and manifest"; else echo "together more than the whole run, so the read-back, boot checks, backup, rename and manifest are within the noise"; fi) (each phase timed apart includes a process start, so this is approximate)"
# BENCH_PROFILE=0 skips the profiling (tests/bench_script.rs runs this script on a debug build).
if [ "$IS_ROOT" = 1 ] && [ "${VERDICT:-met}" != met ] && [ "${BENCH_PROFILE:-1}" = 1 ]; then
    if command -v strace >/dev/null; then
        eval "$SETUP"
        # shellcheck disable=SC2086 # a command line, split on purpose
        strace -c -f -o "$WORK/strace.txt" $TMPL_DEBUGFS >/dev/null 2>&1 || true
        echo "NOTE|target not met: strace -c -f of one tmpl run (tmpl and the tools it runs), top syscalls by time: $(awk 'NR > 2 && $1 ~ /^[0-9.]+$/ && $NF != "total" { printf "%s %ss (%s calls); ", $NF, $2, $4 }' "$WORK/strace.txt" | cut -d';' -f1-6)"
    fi
    if command -v perf >/dev/null; then
        # CPU profile of 10 runs: where tmpl's own time goes, by function (inclusive), as a share
        # of tmpl's samples.
        if perf record -q -F 10000 -g -o "$WORK/perf.data" -- bash -c "for i in 1 2 3 4 5 6 7 8 9 10; do $SETUP; $TMPL_DEBUGFS; done" >/dev/null 2>&1; then
            TOP=$(perf report -i "$WORK/perf.data" --children --comm tmpl --percentage relative --sort sym 2>/dev/null |
                grep -E '^ +[0-9.]+%' | grep -E 'tmpl::(sys|envd|edit|rootfs|checks|device|tools)::' |
                awk '{ n = $NF; sub(/::h[0-9a-f]{16}$/, "", n); if (!seen[n]++) printf "%s %s; ", n, $1 }' | cut -d';' -f1-8)
            [ -n "$TOP" ] && echo "NOTE|target not met: perf profile of 10 tmpl runs, share of tmpl's CPU samples by function (inclusive): $TOP"
        fi
    fi
fi

# Peak memory does not grow with the image: the same edit on a small image and on this one.
SMALL=$WORK/small
mkdir -p "$SMALL/$ID"
make_image "$SMALL/$ID/rootfs.ext4" "$SMALL_MIB"
RSS_SMALL=$(peak_rss_kb "$TMPL --storage $SMALL -q inject-envd $ID --envd $ENVD --as init --no-purge")
eval "$SETUP"
RSS_BIG=$(peak_rss_kb "$TMPL_DEBUGFS")
echo "RSS|inject-envd (debugfs), $SMALL_MIB MiB image|$RSS_SMALL"
echo "RSS|inject-envd (debugfs), $SIZE_MIB MiB image|$RSS_BIG"
rss_growth "inject-envd" "$SMALL_MIB MiB image" "$SIZE_MIB MiB image" "$RSS_SMALL" "$RSS_BIG"
