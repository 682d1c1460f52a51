#!/usr/bin/env bash
# Dispatch tmpl-purge-cache for some builds, wait for every node, and print the cluster summary.
#
#   deploy/nomad/collect.sh [--dry-run] [--force] BUILD_ID...
#
# Needs `nomad` (NOMAD_ADDR/NOMAD_TOKEN as usual) and `tmpl` on this machine. Exit status is
# `tmpl purge-cache --summarize`'s: 0 every node clean, 5 a node skipped something for safety,
# 4 a node failed or did not report. SUMMARY_JSON=1 prints the summary as JSON.
set -euo pipefail
JOB=${JOB:-tmpl-purge-cache}
TMPL=${TMPL:-tmpl}
meta=()
while [ $# -gt 0 ]; do
    case "$1" in
        --dry-run) meta+=(-meta dry_run=true) ;;
        --force) meta+=(-meta force=true) ;;
        -*) echo "usage: $0 [--dry-run] [--force] BUILD_ID..." >&2; exit 2 ;;
        *) break ;;
    esac
    shift
done
[ $# -gt 0 ] || { echo "usage: $0 [--dry-run] [--force] BUILD_ID..." >&2; exit 2; }
ids=$(IFS=,; echo "$*")
out=$(nomad job dispatch -detach "${meta[@]}" -meta "build_ids=$ids" "$JOB")
dispatched=$(printf '%s\n' "$out" | sed -n 's/^Dispatched Job ID *= *//p' | head -1)
[ -n "$dispatched" ] || { printf '%s\n' "$out" >&2; echo "could not read the dispatched job ID" >&2; exit 4; }
echo "dispatched $dispatched" >&2
# Wait until no allocation is pending or running.
for _ in $(seq 1 600); do
    states=$(nomad job allocs -t '{{range .}}{{.ClientStatus}} {{end}}' "$dispatched")
    case " $states " in
        *" pending "* | *" running "*) sleep 2 ;;
        *) break ;;
    esac
done
allocs=$(nomad job allocs -t '{{range .}}{{.ID}} {{end}}' "$dispatched")
expect=$(wc -w <<<"$allocs")
json=()
[ "${SUMMARY_JSON:-0}" = 1 ] && json=(--json)
for a in $allocs; do
    nomad alloc logs "$a" purge-cache
done | "$TMPL" "${json[@]}" purge-cache --summarize - --expect-nodes "$expect"
