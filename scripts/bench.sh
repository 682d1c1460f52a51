#!/usr/bin/env bash
# tmpl benchmarks, side by side with the tools operators use today, as ratios measured in one run.
#
#   scripts/bench.sh [--quick] [--out FILE]
#
# Prepares its own inputs under a temporary directory, runs every comparison alternately
# (median of RUNS runs each), prints one table and writes it to bench/results.md (or FILE)
# with the machine, date and tool versions. --quick uses small inputs and 3 runs (CI uses it to
# keep the script working; its numbers are not the published ones). Needs root for the
# mount-based alternatives (rows are marked skipped otherwise), e2fsprogs, gcc.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=0
OUT=bench/results.md
while [ $# -gt 0 ]; do
    case "$1" in
        --quick) QUICK=1 ;;
        --out) OUT=$2; shift ;;
        *) echo "usage: scripts/bench.sh [--quick] [--out FILE]" >&2; exit 2 ;;
    esac
    shift
done
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
if [ "$QUICK" = 1 ]; then RUNS=3; ROOTFS_GIB=1; STORES="20 200"; SNAP_MIB=64; else RUNS=${RUNS:-5}; ROOTFS_GIB=4; STORES="20 200 2000"; SNAP_MIB=256; fi
export RUNS QUICK

echo "building release binaries..." >&2
cargo build --release --quiet --bin tmpl --examples
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
: >"$RESULTS"
record() { grep '^RESULT|' | tee -a "$RESULTS" >&2 || true; }

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
    local t="$TMPL --storage $store --json inspect $id"
    compare "$t" "debugfs -R 'stat /sbin/init' $img && debugfs -R 'stat /usr/bin/envd' $img"
    result "init chain + envd facts, ${ROOTFS_GIB} GiB rootfs" "$T_US" "debugfs -R stat (×2)" "$A_US" "$RATIO" "-"
    if [ "$IS_ROOT" = 1 ]; then
        compare "$t" "mount -o loop,ro $img $MNT && readlink -f $MNT/sbin/init && stat $MNT/usr/bin/envd && umount $MNT"
        result "init chain + envd facts, ${ROOTFS_GIB} GiB rootfs" "$T_US" "mount -o loop + readlink + stat + umount" "$A_US" "$RATIO" "-"
    fi
    BYTES_READ=$($t | sed -n 's/.*"bytes_read": *\([0-9]*\).*/\1/p' | head -1)
    echo "NOTE|tmpl read ${BYTES_READ:-?} bytes of the ${ROOTFS_GIB} GiB image"
}

# --- 3. verify, metadata only, growth with the number of builds -------------------------------
bench_verify_scaling() {
    local n store prev=""
    for n in $STORES; do
        store=$WORK/store-$n
        "$ROOT/target/release/examples/mkstorage" "$store" "$n" 512 >/dev/null
        compare "$TMPL --storage $store -q verify --all" \
            "for d in $store/*/; do cat \$d/metadata.json >/dev/null; stat -c %s \$d/memfile \$d/snapfile; done"
        result "verify --all, $n builds (512 MiB sparse memfiles)" "$T_US" "shell loop: cat metadata + stat (no checks)" "$A_US" "$RATIO" "-"
        echo "NOTE|verify --all of $n builds: $(ms "$T_US") total, $(awk -v t="$T_US" -v n="$n" 'BEGIN{printf "%.0f", t/n}') µs per build"
    done
}

# --- 4. snapfile CRC vs the crc64 crate Firecracker uses --------------------------------------
bench_crc() {
    local id=c1000000-0000-4000-8000-000000000001 store=$WORK/store-crc
    mkdir -p "$store/$id"
    "$ROOT/target/release/examples/mksnapfile" "$store/$id/snapfile" "$SNAP_MIB"
    local ours theirs
    ours=$($TMPL --storage "$store" --json inspect "$id" | sed -n 's/.*"computed_crc": *\([0-9]*\).*/\1/p' | head -1)
    theirs=$("$ROOT/target/release/examples/crc64_ref" "$store/$id/snapfile" | awk '{print $2}')
    if [ "$ours" != "$theirs" ]; then
        echo "CRC DISAGREEMENT: tmpl $ours, crc64 crate $theirs" >&2
        exit 1
    fi
    # The build holds only a snapfile, so verify reports findings (exit 1): that is expected.
    compare "$TMPL --storage $store -q verify $id; test \$? -le 1" "$ROOT/target/release/examples/crc64_ref $store/$id/snapfile"
    result "snapfile CRC-64/REDIS, $SNAP_MIB MiB file (same value: $ours)" "$T_US" "crc64 crate (Firecracker's)" "$A_US" "$RATIO" "-"
}

# --- 7. peak memory --------------------------------------------------------------------------
bench_rss() {
    local id=d1000000-0000-4000-8000-000000000001 tree=$WORK/tree big=$ROOTFS_GIB
    [ "$QUICK" = 1 ] && big=2
    for s in "$WORK/store-rss-1:1" "$WORK/store-rss-$big:$big"; do
        local dir=${s%%:*} gib=${s##*:}
        mkdir -p "$dir/$id"
        truncate -s "${gib}G" "$dir/$id/rootfs.ext4"
        mkfs.ext4 -q -F -d "$tree" "$dir/$id/rootfs.ext4"
        truncate -s "${gib}G" "$dir/$id/memfile"
        echo "RSS|inspect + verify, ${gib} GiB rootfs and ${gib} GiB memfile|$(peak_rss_kb "$TMPL --storage $dir inspect $id; $TMPL --storage $dir verify $id")"
    done
    for n in $STORES; do
        echo "RSS|verify --all, $n builds|$(peak_rss_kb "$TMPL --storage $WORK/store-$n -q verify --all")"
    done
}

run_section() {
    echo "== $1" >&2
    "$2" 2>&1 | tee -a "$WORK/log" | grep -E '^(RESULT|NOTE|RSS)\|' >>"$RESULTS" || true
}

run_section "init chain" bench_init_chain
for sub in bench-inject bench-deep bench-purge; do
    if [ -x "scripts/$sub.sh" ]; then
        run_section "$sub" "scripts/$sub.sh"
    fi
done
run_section "verify scaling" bench_verify_scaling
run_section "snapfile CRC" bench_crc
run_section "peak memory" bench_rss

# --- the table ---------------------------------------------------------------------------------
{
    echo "# tmpl benchmarks"
    echo
    echo "Generated by \`scripts/bench.sh$([ "$QUICK" = 1 ] && echo " --quick")\` on $(date -u +%Y-%m-%d) — $(nproc) cores, $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2 | sed 's/^ //'), kernel $(uname -r)."
    echo "Tools: $($TMPL --version), $(mkfs.ext4 -V 2>&1 | head -1), $(sha256sum --version | head -1), $(rustc --version)."
    echo "Each ratio is the median of $RUNS alternating runs of each command (alternative time / tmpl time: above 1 means tmpl is faster)."
    echo
    echo "| benchmark | tmpl | alternative | alternative time | ratio | target |"
    echo "|---|---|---|---|---|---|"
    grep '^RESULT|' "$RESULTS" | while IFS='|' read -r _ name t alt a ratio target; do
        verdict=""
        [ "$target" != "-" ] && verdict=" ($(meets "$ratio" "$target") ≥ ${target}×)"
        echo "| $name | $(ms "$t") | $alt | $(ms "$a") | ${ratio}× | ${target}${verdict} |"
    done
    echo
    echo "Notes:"
    echo
    grep '^NOTE|' "$RESULTS" | cut -d'|' -f2- | sed 's/^/- /'
    echo
    echo "Peak resident memory (must not grow with image or memfile size):"
    echo
    echo "| command | peak RSS |"
    echo "|---|---|"
    grep '^RSS|' "$RESULTS" | while IFS='|' read -r _ what kb; do echo "| $what | ${kb} KiB |"; done
} >"$WORK/table.md"
cat "$WORK/table.md"
mkdir -p "$(dirname "$OUT")"
cp "$WORK/table.md" "$OUT"
echo "written to $OUT" >&2
