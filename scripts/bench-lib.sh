# shellcheck shell=bash disable=SC2034 # sourced: the variables it sets are read by the scripts
# Shared helpers for the benchmark scripts (sourced, not run).
#
# Every comparison runs the two commands alternately, RUNS times each, and reports the median
# wall time of each and their ratio (alternative / tmpl: above 1 means tmpl is faster). Machines
# are noisy; alternating and taking medians keeps the ratio honest within one run.
#
# Output lines (scripts/bench.sh collects them into bench/results.md):
#   RESULT|name|tmpl µs|alternative|alternative µs|ratio|target ratio or -|runs
#   TARGET|issue|what the issue asks|what was measured|target|met, NOT met or not measured
#   NOTE|text              RSS|command|KiB          GROWTH|command|small|big|KiB small|KiB big

RUNS=${RUNS:-5}

# now_us: wall clock in µs. Bash 5's EPOCHREALTIME needs no fork (a `date` process costs about a
# millisecond, which would blur comparisons of commands that take tens of milliseconds).
if [ -n "${EPOCHREALTIME:-}" ]; then
    now_us() { local t=${EPOCHREALTIME//[.,]/}; echo $(( 10#$t )); }
else
    now_us() { echo $(( $(date +%s%N) / 1000 )); }
fi

# time_us CMD: run CMD (a string, eval'd) with output discarded; print its wall time in µs.
time_us() {
    local s e t
    if [ -n "${EPOCHREALTIME:-}" ]; then t=${EPOCHREALTIME//[.,]/}; s=$(( 10#$t )); else s=$(now_us); fi
    if ! eval "$1" >/dev/null 2>&1; then
        echo "benchmark command failed: $1" >&2
        return 1
    fi
    if [ -n "${EPOCHREALTIME:-}" ]; then t=${EPOCHREALTIME//[.,]/}; e=$(( 10#$t )); else e=$(now_us); fi
    echo $(( e - s ))
}

median() { sort -n | awk '{a[NR]=$1} END { if (NR == 0) print 0; else if (NR % 2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2) }'; }

# compare TMPL_CMD ALT_CMD [SETUP_CMD [N]]: alternate N runs of each (default RUNS), median each;
# sets T_US, A_US, RATIO, N_RUNS (the pairs actually run) and the fastest runs T_MIN_US, A_MIN_US.
# SETUP_CMD runs before each timed command, untimed. With COMPARE_BUDGET_S set, no new pair
# starts once that many seconds have passed (at least one pair runs): for comparisons whose
# alternative is slow; N_RUNS says how many runs each median is of.
compare() {
    local tcmd=$1 acmd=$2 setup=${3:-true} runs=${4:-$RUNS} i t a ts=() as=() start
    start=$(now_us)
    for ((i = 0; i < runs; i++)); do
        if [ "${COMPARE_BUDGET_S:-0}" -gt 0 ] && [ "$i" -gt 0 ] &&
            [ $(( $(now_us) - start )) -gt $(( COMPARE_BUDGET_S * 1000000 )) ]; then
            echo "compare: time budget of ${COMPARE_BUDGET_S} s used after $i of $runs pairs" >&2
            break
        fi
        eval "$setup" >/dev/null 2>&1 || { echo "benchmark setup failed: $setup" >&2; return 1; }
        t=$(time_us "$tcmd") || return 1
        eval "$setup" >/dev/null 2>&1 || { echo "benchmark setup failed: $setup" >&2; return 1; }
        a=$(time_us "$acmd") || return 1
        ts+=("$t")
        as+=("$a")
    done
    N_RUNS=${#ts[@]}
    T_US=$(printf '%s\n' "${ts[@]}" | median)
    A_US=$(printf '%s\n' "${as[@]}" | median)
    T_MIN_US=$(printf '%s\n' "${ts[@]}" | sort -n | head -1)
    A_MIN_US=$(printf '%s\n' "${as[@]}" | sort -n | head -1)
    RATIO=$(awk -v t="$T_US" -v a="$A_US" 'BEGIN { if (t == 0) t = 1; printf "%.2f", a / t }')
}

# median_of N SETUP_CMD CMD: median wall time (µs) of N runs of CMD, SETUP_CMD (untimed) before each.
median_of() {
    local n=$1 setup=$2 cmd=$3 i
    for ((i = 0; i < n; i++)); do
        eval "$setup" >/dev/null 2>&1 || { echo "benchmark setup failed: $setup" >&2; return 1; }
        time_us "$cmd" || return 1
    done | median
}

# ms µS: microseconds as milliseconds with one decimal.
ms() { awk -v u="$1" 'BEGIN { printf "%.1f ms", u / 1000 }'; }

# peak_rss_kb CMD: maximum resident set size of CMD in KiB (GNU time: the largest of the command
# and the processes it waited for, e.g. the e2fsck that tmpl runs).
peak_rss_kb() {
    /usr/bin/time -f '%M' -o /tmp/tmpl-bench-rss.$$ bash -c "$1" >/dev/null 2>&1 || true
    tail -n 1 /tmp/tmpl-bench-rss.$$
    rm -f /tmp/tmpl-bench-rss.$$
}

# meets RATIO TARGET: "met" when RATIO >= TARGET.
meets() { awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 >= t + 0) ? "met" : "NOT met" }'; }

# result NAME TMPL_US ALT_NAME ALT_US RATIO TARGET [RUNS]: one machine-readable result line, which
# scripts/bench.sh turns into a table row. TARGET is a minimum ratio or "-"; RUNS defaults to the
# pairs the last `compare` ran.
result() { echo "RESULT|$1|$2|$3|$4|$5|$6|${7:-${N_RUNS:-$RUNS}}"; }

# target ISSUE WHAT MEASURED TARGET VERDICT: a target stated in an issue, with the number measured
# and its verdict ("met", "NOT met", "not measured"); scripts/bench.sh lists them in one table.
target() { echo "TARGET|$1|$2|$3|$4|$5"; }

# rss_growth WHAT SMALL BIG KB_SMALL KB_BIG: peak memory of the same command on a small and a big
# input; scripts/bench.sh checks issue 7's "memory must not grow with image or memfile size" over
# all of them (big/small at most 1.25, which allows for allocator noise).
rss_growth() { echo "GROWTH|$1|$2|$3|$4|$5"; }

# fs_desc DIR: the filesystem that holds DIR, as the disk-bound rows depend on it: type, device,
# whether ext4 has a journal (without one, ext4 does not reuse inodes deleted in the last 1-5
# minutes and discards each freed extent as it is freed), and the discard mount option.
fs_desc() {
    local src fstype opts jt="" extra=""
    src=$(findmnt -no SOURCE -T "$1" | tail -1)
    fstype=$(findmnt -no FSTYPE -T "$1" | tail -1)
    opts=$(findmnt -no OPTIONS -T "$1" | tail -1)
    if [ "$fstype" = ext4 ]; then
        jt=$(cat "/sys/fs/ext4/$(basename "$src")/journal_task" 2>/dev/null || true)
        [ "$jt" = "<none>" ] && extra=", no journal"
    fi
    if echo "$opts" | tr ',' '\n' | grep -qx discard; then extra="$extra, mounted with discard"; else extra="$extra, no discard"; fi
    echo "$fstype on $src$extra"
}

# json_get EXPR: a field of the JSON document on stdin (a dotted path with [N] indexes, as in jq:
# `.boot.init.bytes_read`); prints nothing when the field is absent. python3 first: it keeps
# 64-bit integers exact (CRCs), which jq 1.6 rounds to doubles; jq when there is no python3.
json_get() {
    if command -v python3 >/dev/null; then
        python3 -c '
import json, re, sys
v = json.load(sys.stdin)
for part in re.findall(r"[^.\[\]]+", sys.argv[1]):
    try:
        v = v[int(part)] if isinstance(v, list) else v[part]
    except (KeyError, IndexError, ValueError, TypeError):
        sys.exit(0)
if v is not None:
    print(str(v).lower() if isinstance(v, bool) else v)
' "$1"
    elif command -v jq >/dev/null; then
        jq -r "$1 // empty"
    else
        echo "json_get: needs python3 or jq" >&2
        return 1
    fi
}

# lines KIND FILE: the KIND| lines of FILE (none is not an error).
lines() { grep "^$1|" "$2" || true; }

# memory_target FILE: issue 7's memory target line from the GROWTH| lines in FILE: met when no
# command's peak RSS on the big input exceeds 1.25× its peak RSS on the small one.
memory_target() {
    local measured verdict
    measured=$(lines GROWTH "$1" | awk -F'|' '{ printf "%s%s %s → %s: %.1f → %.1f MiB (×%.2f)", (NR > 1 ? "; " : ""), $2, $3, $4, $5 / 1024, $6 / 1024, $6 / $5 }')
    verdict=$(lines GROWTH "$1" | awk -F'|' 'BEGIN { v = "met" } { if ($6 / $5 > 1.25) v = "NOT met" } END { print (NR ? v : "not measured") }')
    target "issue 7" "peak RSS of each tmpl command does not grow with image or memfile size" \
        "${measured:-none}" "big/small ≤ 1.25" "$verdict"
}

# render_tables FILE: the markdown tables of bench/results.md from the lines collected in FILE:
# results (one row per RESULT, its verdict when it has a target ratio), the issues' targets
# (sorted by issue), notes, and peak memory.
render_tables() {
    echo "Each ratio is alternative time / tmpl time (above 1: tmpl is faster), each time the median of the runs column's number of alternating runs of each command; the target column is the minimum ratio an issue asks for."
    echo
    echo "| benchmark | tmpl | alternative | alternative time | ratio | target | runs |"
    echo "|---|---|---|---|---|---|---|"
    lines RESULT "$1" | while IFS='|' read -r _ name t alt a ratio tgt runs; do
        local verdict=""
        [ "$tgt" != "-" ] && verdict=" ($(meets "$ratio" "$tgt"))"
        echo "| $name | $(ms "$t") | $alt | $(ms "$a") | ${ratio}× | ${tgt}${verdict} | ${runs:-$RUNS} |"
    done
    echo
    echo "## Targets stated in the issues"
    echo
    echo "| issue | target | measured | bound | verdict |"
    echo "|---|---|---|---|---|"
    lines TARGET "$1" | sort -t'|' -k2,2V -s | while IFS='|' read -r _ issue what measured bound verdict; do
        echo "| $issue | $what | $measured | $bound | **$verdict** |"
    done
    echo
    echo "## Notes"
    echo
    lines NOTE "$1" | cut -d'|' -f2- | sed 's/^/- /'
    echo
    echo "## Peak resident memory"
    echo
    echo "Must not grow with image or memfile size (GNU time's maximum RSS: the largest of tmpl and the tools it runs)."
    echo
    echo "| command | peak RSS |"
    echo "|---|---|"
    lines RSS "$1" | while IFS='|' read -r _ what kb; do echo "| $what | ${kb} KiB |"; done
}
