#!/usr/bin/env bash
# verify --deep beside sha256sum on the same data files (issue 6: at least 1.7x the speed of
# single-threaded SHA-256 on a 2-core machine, memory bounded whatever the file size).
#
# Run by scripts/bench.sh (which sets TMPL, RUNS and QUICK), or alone:
#   TMPL=target/release/tmpl QUICK=1 scripts/bench-deep.sh
# Needs the mkdeep example (cargo build --release --examples). Prints RESULT|, NOTE| and RSS|
# lines (scripts/bench-lib.sh conventions).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${QUICK:-0}
[ "$QUICK" = 1 ] && RUNS=${RUNS:-3}
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
TMPL=${TMPL:-$ROOT/target/release/tmpl}
MKDEEP=$ROOT/target/release/examples/mkdeep
if [ "$QUICK" = 1 ]; then SIZE_MIB=${SIZE_MIB:-128}; else SIZE_MIB=${SIZE_MIB:-1024}; fi
SMALL_MIB=$(( SIZE_MIB / 8 > 16 ? SIZE_MIB / 8 : 16 ))
[ -x "$MKDEEP" ] || cargo build --release --quiet --example mkdeep
WORK=$(mktemp -d /var/tmp/tmpl-bench-deep.XXXXXX)
trap 'rm -rf "$WORK"' EXIT

read -r PLAIN ZSTD < <("$MKDEEP" "$WORK/store" "$SIZE_MIB")
"$MKDEEP" "$WORK/small" "$SMALL_MIB" >/dev/null
S=$WORK/store
PFILES="$S/$PLAIN/rootfs.ext4 $S/$PLAIN/memfile"
ZFILES="$S/$ZSTD/rootfs.ext4.zstd $S/$ZSTD/memfile.zstd"

# The data is random, so the rootfs check reports "not ext4" (exit 1): only the deep findings
# matter here, and they must be clean with every digest matched.
check() {
    local out
    out=$($TMPL --storage "$S" --json verify --deep "$1" || true)
    if echo "$out" | grep -q '"id": "data\.'; then
        echo "deep verify of $1 reported data findings:" >&2
        echo "$out" | grep -A3 '"id": "data\.' >&2
        exit 1
    fi
    local want got
    want=$(echo "$out" | grep -c '"expected_sha256"')
    got=$(echo "$out" | grep -c '"sha256"')
    [ "$want" = 2 ] && [ "$got" = 2 ] || { echo "expected 2 digests for $1, got $got/$want" >&2; exit 1; }
    echo "$out" | sed -n 's/.*"mb_per_s": *\([0-9.]*\).*/\1/p' | tail -1
}
# Digests agree with sha256sum (the uncompressed build and the compressed one hold the same bytes).
DOC=$($TMPL --storage "$S" --json verify --deep "$PLAIN" || true)
for f in rootfs.ext4 memfile; do
    ours=$(echo "$DOC" | grep -A8 "\"$PLAIN/$f\"" | sed -n 's/.*"sha256": "\([0-9a-f]*\)".*/\1/p' | head -1 || true)
    theirs=$(sha256sum "$S/$PLAIN/$f" | cut -d' ' -f1)
    [ "$ours" = "$theirs" ] || { echo "SHA-256 DISAGREEMENT on $f: tmpl $ours, sha256sum $theirs" >&2; exit 1; }
done
check "$ZSTD" >/dev/null
TOTAL_MIB=$(( 2 * SIZE_MIB ))

compare "$TMPL --storage $S -q verify --deep $PLAIN; test \$? -le 1" "sha256sum $PFILES"
result "verify --deep, 2 × $SIZE_MIB MiB uncompressed (V4, SHA-256)" "$T_US" "sha256sum (same files)" "$A_US" "$RATIO" "1.7"
echo "NOTE|verify --deep hashed $TOTAL_MIB MiB uncompressed in $(ms "$T_US") ($(awk -v m="$TOTAL_MIB" -v t="$T_US" 'BEGIN{printf "%.0f", m*1.048576/(t/1e6)}') MB/s wall, checks included); sha256sum $(awk -v m="$TOTAL_MIB" -v t="$A_US" 'BEGIN{printf "%.0f", m*1.048576/(t/1e6)}') MB/s"

if command -v zstd >/dev/null; then
    compare "$TMPL --storage $S -q verify --deep $ZSTD; test \$? -le 1" "for f in $ZFILES; do zstd -q -dc \$f | sha256sum; done"
    result "verify --deep, 2 × $SIZE_MIB MiB in 2 MiB zstd frames" "$T_US" "zstd -dc | sha256sum (same files)" "$A_US" "$RATIO" "1.7"
fi
compare "$TMPL --storage $S -q verify --deep $ZSTD; test \$? -le 1" "sha256sum $PFILES"
result "verify --deep, 2 × $SIZE_MIB MiB zstd frames (decompressing)" "$T_US" "sha256sum of the uncompressed bytes" "$A_US" "$RATIO" "1.7"
echo "NOTE|zstd data: $(du -m "$S/$ZSTD" | cut -f1) MiB on disk for $TOTAL_MIB MiB; verify --deep checks every frame and both SHA-256s"

echo "RSS|verify --deep, 2 × $SMALL_MIB MiB uncompressed|$(peak_rss_kb "$TMPL --storage $WORK/small -q verify --deep $PLAIN")"
echo "RSS|verify --deep, 2 × $SIZE_MIB MiB uncompressed|$(peak_rss_kb "$TMPL --storage $S -q verify --deep $PLAIN")"
echo "RSS|verify --deep, 2 × $SMALL_MIB MiB zstd|$(peak_rss_kb "$TMPL --storage $WORK/small -q verify --deep $ZSTD")"
echo "RSS|verify --deep, 2 × $SIZE_MIB MiB zstd|$(peak_rss_kb "$TMPL --storage $S -q verify --deep $ZSTD")"
echo "RSS|sha256sum, 2 × $SIZE_MIB MiB|$(peak_rss_kb "sha256sum $PFILES")"
