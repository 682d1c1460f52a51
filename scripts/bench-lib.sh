# Shared helpers for the benchmark scripts (sourced, not run).
#
# Every comparison runs the two commands alternately, RUNS times each, and reports the median
# wall time of each and their ratio (alternative / tmpl: above 1 means tmpl is faster). Machines
# are noisy; alternating and taking medians keeps the ratio honest within one run.

RUNS=${RUNS:-5}

now_us() { echo $(( $(date +%s%N) / 1000 )); }

# time_us CMD: run CMD (a string, eval'd) with output discarded; print its wall time in µs.
time_us() {
    local s e
    s=$(now_us)
    if ! eval "$1" >/dev/null 2>&1; then
        echo "benchmark command failed: $1" >&2
        return 1
    fi
    e=$(now_us)
    echo $(( e - s ))
}

median() { sort -n | awk '{a[NR]=$1} END { if (NR == 0) print 0; else if (NR % 2) print a[(NR+1)/2]; else print int((a[NR/2]+a[NR/2+1])/2) }'; }

# compare TMPL_CMD ALT_CMD [SETUP_CMD]: alternate, median each; sets T_US, A_US, RATIO.
compare() {
    local tcmd=$1 acmd=$2 setup=${3:-true} i t a ts=() as=()
    for ((i = 0; i < RUNS; i++)); do
        eval "$setup" >/dev/null 2>&1
        t=$(time_us "$tcmd") || return 1
        eval "$setup" >/dev/null 2>&1
        a=$(time_us "$acmd") || return 1
        ts+=("$t")
        as+=("$a")
    done
    T_US=$(printf '%s\n' "${ts[@]}" | median)
    A_US=$(printf '%s\n' "${as[@]}" | median)
    RATIO=$(awk -v t="$T_US" -v a="$A_US" 'BEGIN { if (t == 0) t = 1; printf "%.2f", a / t }')
}

# ms µS: microseconds as milliseconds with one decimal.
ms() { awk -v u="$1" 'BEGIN { printf "%.1f ms", u / 1000 }'; }

# peak_rss_kb CMD: maximum resident set size of CMD in KiB.
peak_rss_kb() {
    /usr/bin/time -f '%M' -o /tmp/tmpl-bench-rss.$$ bash -c "$1" >/dev/null 2>&1 || true
    tail -n 1 /tmp/tmpl-bench-rss.$$
    rm -f /tmp/tmpl-bench-rss.$$
}

# meets RATIO TARGET: "met" when RATIO >= TARGET.
meets() { awk -v r="$1" -v t="$2" 'BEGIN { print (r + 0 >= t + 0) ? "met" : "NOT met" }'; }

# result NAME TMPL_US ALT_NAME ALT_US RATIO TARGET: one machine-readable result line, which
# scripts/bench.sh turns into a table row. TARGET is a minimum ratio or "-".
result() { echo "RESULT|$1|$2|$3|$4|$5|$6"; }
