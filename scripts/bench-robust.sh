#!/usr/bin/env bash
# Hostile and degenerate inputs (issue 12): time and memory follow what is really there, not what
# the files claim.
#  - verify --deep on a sparse memfile: time follows the allocated bytes (holes are found with
#    SEEK_DATA/SEEK_HOLE and never read), beside sha256sum of the same file; with a SHA-256
#    recorded in a V4 header the holes are hashed as zeros (SHA-256 must see every byte), so
#    that row shows the cost of hashing zeros instead.
#  - peak memory of verify --all (and --all --deep) over 10 and 100 header-heavy builds (V4
#    headers with an INNER_MIB inner block each): it must not grow with the number of builds.
#
# Run by scripts/bench.sh (which sets TMPL, RUNS and QUICK), or alone:
#   TMPL=target/release/tmpl QUICK=1 scripts/bench-robust.sh
# Needs the mkheavy example (cargo build --release --examples). Prints RESULT|, NOTE|, TARGET| and
# RSS| lines (scripts/bench-lib.sh conventions).
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${QUICK:-0}
[ "$QUICK" = 1 ] && RUNS=${RUNS:-3}
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
TMPL=${TMPL:-$ROOT/target/release/tmpl}
MKHEAVY=$ROOT/target/release/examples/mkheavy
if [ "$QUICK" = 1 ]; then SPARSE_GIB=${SPARSE_GIB:-2}; INNER_MIB=${INNER_MIB:-16}; else SPARSE_GIB=${SPARSE_GIB:-8}; INNER_MIB=${INNER_MIB:-256}; fi
[ -x "$MKHEAVY" ] || cargo build --release --quiet --example mkheavy
WORK=$(mktemp -d /var/tmp/tmpl-bench-robust.XXXXXX)
trap 'rm -rf "$WORK"' EXIT
ID=d4000000-0000-4000-8000-000000000001

# sparse STORE ALLOC_MIB: a headerless SPARSE_GIB GiB memfile with ALLOC_MIB MiB of data, in
# 16 MiB extents spread over the file.
sparse() {
    local dir=$1/$ID n=$(( $2 / 16 )) i
    mkdir -p "$dir"
    truncate -s "${SPARSE_GIB}G" "$dir/memfile"
    for ((i = 0; i < n; i++)); do
        dd if=/dev/urandom of="$dir/memfile" bs=1M count=16 seek=$(( i * SPARSE_GIB * 1024 / n )) conv=notrunc status=none
    done
    sync
}
sparse "$WORK/a64" 64
sparse "$WORK/a512" 512
F64=$WORK/a64/$ID/memfile
F512=$WORK/a512/$ID/memfile

compare "$TMPL --storage $WORK/a64 -q verify --deep $ID; test \$? -le 1" "sha256sum $F64"
result "verify --deep, ${SPARSE_GIB} GiB sparse memfile, 64 MiB allocated, no SHA-256 recorded" "$T_US" "sha256sum (same file)" "$A_US" "$RATIO" "-"
T64=$T_US
compare "$TMPL --storage $WORK/a512 -q verify --deep $ID; test \$? -le 1" "sha256sum $F512"
result "verify --deep, ${SPARSE_GIB} GiB sparse memfile, 512 MiB allocated, no SHA-256 recorded" "$T_US" "sha256sum (same file)" "$A_US" "$RATIO" "-"
T512=$T_US
GROW=$(awk -v a="$T64" -v b="$T512" 'BEGIN { printf "%.1f", b / a }')
READ64=$($TMPL --storage "$WORK/a64" --json verify --deep $ID | sed -n 's/.*"bytes_read": *\([0-9]*\).*/\1/p' | tail -1)
READ512=$($TMPL --storage "$WORK/a512" --json verify --deep $ID | sed -n 's/.*"bytes_read": *\([0-9]*\).*/\1/p' | tail -1)
echo "NOTE|verify --deep of a ${SPARSE_GIB} GiB sparse memfile: $(ms "$T64") with 64 MiB allocated, $(ms "$T512") with 512 MiB (×$GROW for ×8 the allocated bytes); bytes read: $READ64 and $READ512"
target "issue 12" "verify --deep on a sparse memfile reads its allocated bytes only (time follows them, not the length)" \
    "${SPARSE_GIB} GiB files: $READ64 bytes read with 64 MiB allocated ($(ms "$T64")), $READ512 with 512 MiB ($(ms "$T512"))" "bytes read = allocated" \
    "$([ "$READ64" = $((64 << 20)) ] && [ "$READ512" = $((512 << 20)) ] && echo met || echo "NOT met")"

# The same 512 MiB-allocated file with its SHA-256 recorded (V4 header): every hole is hashed as
# zeros without being read, so the time follows the length at the speed of SHA-256 over zeros.
"$MKHEAVY" --checksum "$WORK/a512/$ID"
compare "$TMPL --storage $WORK/a512 -q verify --deep $ID; test \$? -le 1" "sha256sum $F512"
result "verify --deep, ${SPARSE_GIB} GiB sparse memfile, 512 MiB allocated, SHA-256 recorded (holes hashed as zeros)" "$T_US" "sha256sum (same file)" "$A_US" "$RATIO" "-"
if $TMPL --storage "$WORK/a512" --json verify --deep $ID | grep -q '"data.checksum-mismatch"'; then
    echo "verify --deep disagrees with the recorded SHA-256 of the sparse file" >&2
    exit 1
fi

RSS_LINES=()
for n in 10 100; do
    "$MKHEAVY" "$WORK/heavy$n" "$n" "$INNER_MIB" >/dev/null
done
for flags in "" "--deep"; do
    for n in 10 100; do
        kb=$(peak_rss_kb "$TMPL --storage $WORK/heavy$n -q verify --all $flags")
        echo "RSS|verify --all${flags:+ $flags}, $n builds with ${INNER_MIB} MiB V4 inner blocks|$kb"
        RSS_LINES+=("$kb")
    done
done
echo "NOTE|header-heavy builds: each memfile.header is a V4 header whose inner block is ${INNER_MIB} MiB ($(( (INNER_MIB << 20) / 40 )) mappings), parsed by every build; peak RSS of verify --all 10 → 100 builds: ${RSS_LINES[0]} → ${RSS_LINES[1]} KiB, with --deep ${RSS_LINES[2]} → ${RSS_LINES[3]} KiB"
target "issue 12" "peak memory of verify --all does not grow with the number of builds (header-heavy builds)" \
    "10 → 100 builds: $(( RSS_LINES[0] / 1024 )) → $(( RSS_LINES[1] / 1024 )) MiB; --deep $(( RSS_LINES[2] / 1024 )) → $(( RSS_LINES[3] / 1024 )) MiB" "100/10 ≤ 1.25" \
    "$(awk -v a="${RSS_LINES[0]}" -v b="${RSS_LINES[1]}" -v c="${RSS_LINES[2]}" -v d="${RSS_LINES[3]}" 'BEGIN { print (b <= 1.25 * a && d <= 1.25 * c) ? "met" : "NOT met" }')"
