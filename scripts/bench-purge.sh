#!/usr/bin/env bash
# Benchmark: `tmpl purge-cache` against `rm -rf` on identical shared-chunk-cache trees.
#
# Run by scripts/bench.sh (which exports TMPL, RUNS and QUICK), or alone:
#   TMPL=target/release/tmpl scripts/bench-purge.sh
# Each run recreates the same tree (scripts/bench-lib.sh `compare` setup, not timed): 100,000
# chunk files of 4 KiB in 25 builds × 2 objects (QUICK=1: 2,000), on the disk that holds
# BENCH_DIR (default /var/tmp). Both commands end with `sync`, so the deletion's own I/O counts.
# Prints RESULT|... lines (target: tmpl ≥ 1.5× faster than rm -rf).
set -euo pipefail
cd "$(dirname "$0")/.."
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
QUICK=${QUICK:-0}
TMPL=${TMPL:-$PWD/target/release/tmpl}
GEN=$PWD/target/release/examples/mkchunkcache
if [ ! -x "$GEN" ] || [ ! -x "$TMPL" ]; then
    cargo build --release --quiet --bin tmpl --example mkchunkcache
fi
if [ "$QUICK" = 1 ]; then BUILDS=5; CHUNKS=200; RUNS=${RUNS:-3}; else BUILDS=25; CHUNKS=2000; fi
FILES=$((BUILDS * 2 * CHUNKS))
WORK=$(mktemp -d "${BENCH_DIR:-/var/tmp}/tmpl-bench-purge.XXXXXX")
trap 'rm -rf "$WORK"' EXIT
TREE=$WORK/chunks
SETUP="rm -rf $TREE && $GEN $TREE $BUILDS $CHUNKS && sync"

# Sanity: the purge empties the tree and reports what du measured.
eval "$SETUP"
DU=$(du -B1 -s "$TREE" | cut -f1)
ROOT_DIR=$(stat -c %b "$TREE")
$TMPL purge-cache --cache chunk --chunk-cache "$TREE" --lock-path "$WORK/none.lock" --all --json >"$WORK/report.json"
LEFT=$(find "$TREE" -mindepth 1 | wc -l)
FREED=$(grep -o '"freed_bytes": [0-9]*' "$WORK/report.json" | tail -1 | grep -o '[0-9]*$')
if [ "$LEFT" != 0 ]; then
    echo "purge left $LEFT entries" >&2
    exit 1
fi
echo "NOTE|purge-cache freed $FREED bytes; du -B1 said $DU for the tree (of which $((ROOT_DIR * 512)) is the root folder itself, kept)"

compare "$TMPL purge-cache --cache chunk --chunk-cache $TREE --lock-path $WORK/none.lock --all --json >/dev/null && sync" \
    "rm -rf $TREE && sync" "$SETUP"
result "purge a $FILES-file chunk-cache tree" "$T_US" "rm -rf" "$A_US" "$RATIO" "1.5"
echo "NOTE|purge-cache: $(ms "$T_US") vs rm -rf $(ms "$A_US") for $FILES chunk files of 4 KiB on $(df --output=source,fstype "$WORK" | tail -1 | tr -s ' ') ($(findmnt -no OPTIONS -T "$WORK" | tr ',' '\n' | grep -c '^discard$' | sed 's/^1$/discard/;s/^0$/no discard/'))"
