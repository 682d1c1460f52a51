#!/usr/bin/env bash
# tmpl benchmarks, side by side with the tools operators use today, as ratios measured in one run.
#
#   scripts/bench.sh [--quick] [--out FILE] [--note TEXT]
#
# Prepares its own inputs under a temporary directory (in /var/tmp), runs every comparison
# alternately (median of RUNS runs each unless the row says otherwise), prints one table of
# ratios, one table of every target the issues state (met / NOT met, with the number), notes and
# peak memory, and writes them to bench/results.md (or FILE) with the machine, date, load and
# tool versions; --note adds a line (e.g. that the machine was shared). Each section's wall time
# goes to stderr and into the file. --quick uses small inputs and 3 runs and writes
# target/bench/results-quick.md (CI may use it to keep the script working; its numbers are not
# the published ones). Full mode takes about 3 minutes on a 2-core machine once the release
# binaries are built (up to 5 under load; the largest parts are verify --deep beside sha256sum
# and purge-cache beside rm -rf of 100,000 files), --quick about 1. Needs root for the
# mount-based alternatives (rows are skipped otherwise), e2fsprogs, gcc, python3 or jq; strace
# and perf are used when present to explain a target not met.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
OUT=
USER_NOTE=
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT=$2; shift ;;
        --note) USER_NOTE=$2; shift ;;
        *) echo "usage: scripts/bench.sh [--quick] [--out FILE] [--note TEXT]" >&2; exit 2 ;;
    esac
    shift
done
if [ -z "$OUT" ]; then
    if [ "$QUICK" = 1 ]; then OUT=target/bench/results-quick.md; else OUT=bench/results.md; fi
fi
BENCH_START=$(date +%s)
LOAD_START=$(cut -d' ' -f1-3 /proc/loadavg)
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
if ! command -v python3 >/dev/null && ! command -v jq >/dev/null; then
    echo "scripts/bench.sh needs python3 or jq to read tmpl's JSON" >&2
    exit 4
fi
if [ "$QUICK" = 1 ]; then RUNS=3; ROOTFS_GIB=1; STORES="20 200"; SNAP_MIB=64; else RUNS=${RUNS:-5}; ROOTFS_GIB=4; STORES="20 200 2000"; SNAP_MIB=256; fi
export RUNS QUICK

echo "building release binaries..." >&2
BUILD_S=$(now_us)
cargo build --release --quiet --bin tmpl --examples
BUILD_US=$(( $(now_us) - BUILD_S ))
TMPL=$ROOT/target/release/tmpl
export TMPL
WORK=$(mktemp -d /var/tmp/tmpl-bench.XXXXXX)
MNT=$WORK/mnt
cleanup() {
    mountpoint -q "$MNT" 2>/dev/null && umount "$MNT"
    rm -rf "$WORK"
}
trap cleanup EXIT
mkdir -p "$MNT"
IS_ROOT=0
[ "$(id -u)" = 0 ] && IS_ROOT=1
RESULTS=$WORK/results
echo "TIME|cargo build --release|$BUILD_US" >"$RESULTS"

# --- 1. init chain and envd facts of a large rootfs -----------------------------------------
bench_init_chain() {
    local tree=$WORK/tree id=b1000000-0000-4000-8000-000000000001
    local store=$WORK/store-init img
    mkdir -p "$tree/usr/bin" "$tree/sbin" "$tree/etc" "$store/$id"
    cp "$TMPL" "$tree/usr/bin/envd"
    ln -s /usr/bin/envd "$tree/sbin/init"
    echo "nameserver 8.8.8.8" >"$tree/etc/resolv.conf"
    img=$store/$id/rootfs.ext4
    truncate -s "${ROOTFS_GIB}G" "$img"
    mkfs.ext4 -q -F -d "$tree" "$img"
    local t="$TMPL --storage $store --json inspect $id" chain="$TMPL --storage $store --json inspect $id --path /sbin/init"
    local mnt="mount -o loop,ro $img $MNT && readlink -f $MNT/sbin/init && stat $MNT/usr/bin/envd && umount $MNT"
    # The chain alone (the link followed to the file it ends in, that file's facts) ...
    compare "$chain" "debugfs -R 'stat /sbin/init' $img && debugfs -R 'stat /usr/bin/envd' $img"
    result "init chain only (inspect --path /sbin/init), ${ROOTFS_GIB} GiB rootfs" "$T_US" "debugfs -R stat (×2)" "$A_US" "$RATIO" "-"
    if [ "$IS_ROOT" = 1 ]; then
        compare "$chain" "$mnt"
        result "init chain only (inspect --path /sbin/init), ${ROOTFS_GIB} GiB rootfs" "$T_US" "mount -o loop + readlink + stat + umount" "$A_US" "$RATIO" "-"
    fi
    # ... and the whole boot path inspect reports (chain, envd's ELF facts, era and version read
    # from the binary, resolv.conf, every check), which the alternatives do not do.
    compare "$t" "debugfs -R 'stat /sbin/init' $img && debugfs -R 'stat /usr/bin/envd' $img"
    result "init chain + envd facts (inspect), ${ROOTFS_GIB} GiB rootfs" "$T_US" "debugfs -R stat (×2)" "$A_US" "$RATIO" "-"
    if [ "$IS_ROOT" = 1 ]; then
        compare "$t" "$mnt"
        result "init chain + envd facts (inspect), ${ROOTFS_GIB} GiB rootfs" "$T_US" "mount -o loop + readlink + stat + umount" "$A_US" "$RATIO" "-"
    else
        echo "NOTE|init chain vs mount -o loop skipped: not root"
    fi
    local doc init_bytes all_bytes
    doc=$($t)
    init_bytes=$(echo "$doc" | json_get .boot.init.bytes_read)
    all_bytes=$(echo "$doc" | json_get .boot.bytes_read)
    if [ -z "$init_bytes" ]; then
        echo "inspect --json has no boot.init.bytes_read" >&2
        exit 1
    fi
    echo "NOTE|tmpl inspect read $init_bytes bytes of the ${ROOTFS_GIB} GiB image to follow /sbin/init's chain, $all_bytes bytes in all for the boot path (that includes the sections of the $(( $(stat -c %s "$tree/usr/bin/envd") / 1024 )) KiB envd binary — tmpl itself here — that hold its era and version)"
    target "issue 3" "reading /sbin/init's chain from a ${ROOTFS_GIB} GiB image reads only kilobytes" \
        "$init_bytes bytes (boot.init.bytes_read of tmpl --json inspect)" "< 1 MiB" \
        "$(awk -v b="$init_bytes" 'BEGIN { print (b + 0 < 1048576) ? "met" : "NOT met" }')"
}

# --- 2. the full boot-path report beside one debugfs stat (issue 13) -------------------------
# An 8 MiB envd laid out like a Go build (examples/mkenvd.rs): inspect reads its era and version
# from the sections that hold them (located through the ELF headers), not the whole binary.
bench_inspect_envd() {
    local tree=$WORK/tree-envd id=b1300000-0000-4000-8000-000000000001 store=$WORK/store-envd img doc read scanned len
    mkdir -p "$tree/usr/bin" "$tree/sbin" "$store/$id"
    "$ROOT/target/release/examples/mkenvd" "$tree/usr/bin/envd" 8
    chmod 755 "$tree/usr/bin/envd"
    ln -s /usr/bin/envd "$tree/sbin/init"
    img=$store/$id/rootfs.ext4
    truncate -s "${ROOTFS_GIB}G" "$img"
    mkfs.ext4 -q -F -d "$tree" "$img"
    local t="$TMPL --storage $store --json inspect $id"
    compare "$t" "debugfs -R 'stat /sbin/init' $img"
    result "full inspect (boot path, envd era and version), ${ROOTFS_GIB} GiB rootfs, 8 MiB Go-like envd" "$T_US" "debugfs -R 'stat /sbin/init'" "$A_US" "$RATIO" "0.5"
    doc=$($t)
    read=$(echo "$doc" | json_get .boot.bytes_read)
    scanned=$(echo "$doc" | json_get '.boot.envd.0.binary.bytes_scanned')
    len=$(stat -c %s "$tree/usr/bin/envd")
    echo "NOTE|full inspect with an 8 MiB Go-like envd read $read bytes of the image in all; of the $len-byte envd it scanned $scanned bytes (its .rodata, data and .go.buildinfo sections)"
    target "issue 13" "full inspect within 2× of debugfs -R 'stat /sbin/init' (${ROOTFS_GIB} GiB image, 8 MiB envd)" \
        "$(ms "$T_US") vs $(ms "$A_US"): ratio $RATIO (fastest runs: $(ms "$T_MIN_US") vs $(ms "$A_MIN_US"))" "ratio ≥ 0.5" \
        "$(awk -v r="$RATIO" 'BEGIN { print (r + 0 >= 0.5) ? "met" : "NOT met" }')"
}

# --- 3. verify, metadata only, growth with the number of builds -------------------------------
bench_verify_scaling() {
    local n store first_per="" per t200=""
    for n in $STORES; do
        store=$WORK/store-$n
        "$ROOT/target/release/examples/mkstorage" "$store" "$n" 512 >/dev/null
        compare "$TMPL --storage $store -q verify --all" \
            "for d in $store/*/; do cat \$d/metadata.json >/dev/null; stat -c %s \$d/memfile \$d/snapfile; done"
        result "verify --all, $n builds (512 MiB sparse memfiles)" "$T_US" "shell loop: cat metadata + stat (no checks)" "$A_US" "$RATIO" "-"
        per=$(awk -v t="$T_US" -v n="$n" 'BEGIN { printf "%.0f", t / n }')
        [ -z "$first_per" ] && first_per=$per
        echo "NOTE|verify --all of $n builds: $(ms "$T_US") total, $per µs per build ($(awk -v p="$per" -v f="$first_per" 'BEGIN { printf "%.2f", p / f }')× the per-build cost at $(echo "$STORES" | cut -d' ' -f1) builds)"
        [ "$n" = 200 ] && t200=$T_US
    done
    if [ -n "$t200" ]; then
        # "Well under a second" is checked as under half a second.
        target "issue 2" "tmpl verify of 200 builds (metadata only) well under a second" \
            "$(ms "$t200") ($(awk -v t="$t200" 'BEGIN { printf "%.0f", t / 200 }') µs per build)" "< 500 ms" \
            "$(awk -v t="$t200" 'BEGIN { print (t < 500000) ? "met" : "NOT met" }')"
    fi
}

# --- 4. snapfile CRC vs the crc64 crate Firecracker uses --------------------------------------
bench_crc() {
    local id=c1000000-0000-4000-8000-000000000001 store=$WORK/store-crc
    mkdir -p "$store/$id"
    "$ROOT/target/release/examples/mksnapfile" "$store/$id/snapfile" "$SNAP_MIB"
    local ours theirs
    ours=$($TMPL --storage "$store" --json inspect "$id" | json_get .snapfile.computed_crc)
    theirs=$("$ROOT/target/release/examples/crc64_ref" "$store/$id/snapfile" | awk '{print $2}')
    if [ "$ours" != "$theirs" ]; then
        echo "CRC DISAGREEMENT: tmpl $ours, crc64 crate $theirs" >&2
        exit 1
    fi
    # The build holds only a snapfile, so verify reports findings (exit 1): that is expected.
    compare "$TMPL --storage $store -q verify $id; test \$? -le 1" "$ROOT/target/release/examples/crc64_ref $store/$id/snapfile"
    result "snapfile CRC-64/REDIS, $SNAP_MIB MiB file (same value: $ours)" "$T_US" "crc64 crate (Firecracker's)" "$A_US" "$RATIO" "-"
    echo "NOTE|snapfile CRC: tmpl's time is a whole tmpl verify of the build (the CRC over $SNAP_MIB MiB and every other check), the crc64 crate's is a program that only computes the CRC (examples/crc64_ref.rs, 64 KiB reads like Firecracker)"
    target "issue 7" "snapfile CRC beside crc64, the crate Firecracker uses, on the same file (no speed target stated)" \
        "same value ($ours); ratio $RATIO" "same value" "met"
}

# --- 7. peak memory --------------------------------------------------------------------------
bench_rss() {
    local id=d1000000-0000-4000-8000-000000000001 tree=$WORK/tree big=$ROOTFS_GIB s kb first=""
    [ "$QUICK" = 1 ] && big=2
    for s in "$WORK/store-rss-1:1" "$WORK/store-rss-$big:$big"; do
        local dir=${s%%:*} gib=${s##*:}
        mkdir -p "$dir/$id"
        truncate -s "${gib}G" "$dir/$id/rootfs.ext4"
        mkfs.ext4 -q -F -d "$tree" "$dir/$id/rootfs.ext4"
        truncate -s "${gib}G" "$dir/$id/memfile"
        kb=$(peak_rss_kb "$TMPL --storage $dir inspect $id; $TMPL --storage $dir verify $id")
        echo "RSS|inspect + verify, ${gib} GiB rootfs and ${gib} GiB memfile|$kb"
        if [ -z "$first" ]; then first=$kb; else rss_growth "inspect + verify" "1 GiB rootfs + memfile" "$gib GiB rootfs + memfile" "$first" "$kb"; fi
    done
    for n in $STORES; do
        echo "RSS|verify --all, $n builds|$(peak_rss_kb "$TMPL --storage $WORK/store-$n -q verify --all")"
    done
}

# Sections: each one's output lines are collected; its wall time goes to stderr and the file.
run_section() {
    local s e rc
    echo "== $1" >&2
    s=$(now_us)
    # A subshell with errexit on (a function called in a condition would run without it).
    set +e
    (set -e; "$2") >"$WORK/section.log" 2>&1
    rc=$?
    set -e
    e=$(now_us)
    cat "$WORK/section.log" >>"$WORK/log"
    if [ "$rc" != 0 ]; then
        echo "section $1 failed (exit $rc); its last lines:" >&2
        tail -n 20 "$WORK/section.log" >&2
        exit 1
    fi
    grep -E '^(RESULT|NOTE|RSS|TARGET|GROWTH)\|' "$WORK/section.log" >>"$RESULTS" || true
    echo "== $1: $(awk -v u=$(( e - s )) 'BEGIN { printf "%.1f", u / 1e6 }') s" >&2
    echo "TIME|$1|$(( e - s ))" >>"$RESULTS"
}

run_section "init chain" bench_init_chain
run_section "inspect with a Go-like envd" bench_inspect_envd
for sub in bench-inject bench-deep bench-purge bench-robust; do
    if [ -x "scripts/$sub.sh" ]; then
        run_section "$sub" "scripts/$sub.sh"
    else
        echo "NOTE|scripts/$sub.sh is missing: its rows are not in this table" >>"$RESULTS"
    fi
done
run_section "verify scaling" bench_verify_scaling
run_section "snapfile CRC" bench_crc
run_section "peak memory" bench_rss
# The mount cycle inject-envd/rewrite-wrapper pay on the mount backend (was a timing loop in
# tests/mount.rs; timings belong here, not in the test suite). Needs root.
bench_mount_cycle() {
    if [ "$(id -u)" != 0 ]; then
        echo "NOTE|mount cycle: not root, not measured"
        return 0
    fi
    "$ROOT/target/release/examples/mountcycle"
}
run_section "mount cycle" bench_mount_cycle
# Deleting the inputs (thousands of files and multi-GiB sparse images, one discard per freed
# extent on a discard-mounted disk) takes a while too: timed as its own section so the wall
# time below is the whole run.
cleanup_inputs() {
    find "$WORK" -mindepth 1 -maxdepth 1 ! -name results ! -name log ! -name section.log ! -name mnt -exec rm -rf {} +
}
run_section "deleting the inputs" cleanup_inputs

# Issue 7: memory must not grow with image or memfile size (every small/big pair measured).
memory_target "$RESULTS" >"$WORK/memory-target"
cat "$WORK/memory-target" >>"$RESULTS"

# --- the table ---------------------------------------------------------------------------------
BENCH_END=$(date +%s)
LOAD_END=$(cut -d' ' -f1-3 /proc/loadavg)
{
    echo "# tmpl benchmarks"
    echo
    echo "Generated by \`scripts/bench.sh$([ "$QUICK" = 1 ] && echo " --quick")\` on $(date -u +%Y-%m-%d) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), $(awk '/MemTotal/ { printf "%.0f GiB RAM", $2 / 1048576 }' /proc/meminfo), kernel $(uname -r), work files on $(fs_desc /var/tmp), run as $([ "$IS_ROOT" = 1 ] && echo root || echo "non-root: mount rows skipped")."
    echo "Tools: $($TMPL --version), $(mkfs.ext4 -V 2>&1 | head -1), $(sha256sum --version | head -1), $(openssl version 2>/dev/null | cut -d' ' -f1-2 || echo "no openssl"), $(gcc --version | head -1), $(rustc --version)."
    echo "Load average (1, 5, 15 min) at the start: $LOAD_START; at the end: $LOAD_END. Wall time of the run: $(( (BENCH_END - BENCH_START) / 60 )) min $(( (BENCH_END - BENCH_START) % 60 )) s ($(lines TIME "$RESULTS" | awk -F'|' '{ printf "%s%s %.1f s", (NR > 1 ? ", " : ""), $2, $3 / 1e6 }'))."
    [ -n "$USER_NOTE" ] && echo "$USER_NOTE"
    echo
    render_tables "$RESULTS"
} >"$WORK/table.md"
cat "$WORK/table.md"
mkdir -p "$(dirname "$OUT")"
cp "$WORK/table.md" "$OUT"
echo "written to $OUT in $(( BENCH_END - BENCH_START )) s" >&2
