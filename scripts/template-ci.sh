#!/usr/bin/env bash
# Template CI pipeline: repair one build's envd and prove the result, step by step.
#
#   scripts/template-ci.sh [OPTIONS] --envd PATH BUILD_ID
#
#   1. verify-source   tmpl verify BUILD_ID. Errors about how envd starts (init.*, wrapper.*,
#                      envd.*, systemd.*, except init.unreadable) are what inject-envd repairs, so
#                      the pipeline goes on; any other error (metadata, headers, snapfile, memfile,
#                      rootfs corruption, manifest drift) stops it.
#   2. inject-envd     tmpl inject-envd BUILD_ID --envd PATH --fork (a new build ID; the old build
#                      is untouched), or in place with --in-place (inject-envd's guards apply).
#   3. verify-result   tmpl verify NEW_ID: must have no errors (node.* errors, about this machine
#                      lacking the kernel or Firecracker the build names, are reported only).
#   4. boot-test       tmpl boot-test NEW_ID when a kernel is available; skipped with a note when
#                      none is (or with --no-boot-test); a failed boot fails the pipeline. When
#                      tmpl check-kernel says the kernel can give it (virtio-mmio, virtio-net,
#                      IP_PNP), the step requires `health` (envd answered GET /health through the
#                      guest's network) with --require health; else boot-test's own default. The
#                      evidence level reached is recorded and printed.
#
# stdout: one JSON summary (also written to WORK_DIR/summary.json); progress on stderr.
# Exit status: the failing step's exit code (tmpl's codes: 1 findings or a failed boot, 3 invalid
# input, 4 environment, 5 refused by a safety check), 0 when every step passed. Before any step
# runs: 2 usage, 3 an invalid value (not a UUID, a missing file or build), 4 tmpl or jq missing.
# See README.md, "Template CI pipeline".
set -euo pipefail

prog=template-ci
here=.
case "${BASH_SOURCE[0]}" in */*) here=${BASH_SOURCE[0]%/*} ;; esac
here=$(cd "$here" && pwd)

usage() {
    cat <<'EOF'
usage: scripts/template-ci.sh [OPTIONS] --envd PATH BUILD_ID

  --envd PATH        envd binary to inject (static ELF for the VM's architecture); required
  --storage DIR      template storage (default: TMPL_STORAGE, else tmpl's own resolution)
  --as MODE          how envd starts: auto (default), init, wrapper, service
  --envd-arg ARG     extra envd argument, repeatable (checked against this envd's flags)
  --in-place         edit BUILD_ID itself instead of forking a new build (inject-envd's guards apply)
  --kernel-version V, --firecracker-version V
                     for the metadata.json a fork writes when the build's own names none (legacy
                     builds); passed to inject-envd
  --fork             fork to a new build ID (the default)
  --kernel PATH      guest kernel for boot-test (default: TMPL_KERNEL, else what boot-test finds;
                     the step is skipped when it finds none)
  --no-boot-test     skip the boot-test step
  --boot-arg ARG     extra boot-test argument, repeatable (e.g. --boot-arg=--timeout=180)
  --tmpl PATH        tmpl binary (default: tmpl on PATH, else target/release/tmpl)
  --work-dir DIR     where step outputs go (default: a new directory under TMPDIR)
  -h, --help         this help

Exit status: the failing step's exit code; 0 all steps passed; 2 usage; 3 invalid input;
4 environment (tmpl or jq missing).
EOF
}

say() { printf '%s: %s\n' "$prog" "$*" >&2; }
die() {
    local code=$1
    shift
    say "$*"
    [ "$code" = 2 ] && echo "try: scripts/template-ci.sh --help" >&2
    exit "$code"
}

# ---- arguments --------------------------------------------------------------------------------
storage=${TMPL_STORAGE:-}
envd=""
as_mode=auto
envd_args=()
boot_args=()
inject_extra=()
kernel=${TMPL_KERNEL:-}
kernel_origin=""
[ -n "$kernel" ] && kernel_origin=TMPL_KERNEL
boot_test=1
target=fork
target_flags=""
tmpl=""
work_dir=""
positional=()

while [ $# -gt 0 ]; do
    opt=$1
    val=""
    case "$opt" in
        -h | --help)
            usage
            exit 0
            ;;
        --no-boot-test) boot_test=0; shift; continue ;;
        --in-place) target=in-place; target_flags+=" in-place"; shift; continue ;;
        --fork) target=fork; target_flags+=" fork"; shift; continue ;;
        --) shift; positional+=("$@"); break ;;
        --storage=* | --envd=* | --as=* | --envd-arg=* | --kernel=* | --tmpl=* | --work-dir=* | --boot-arg=* | \
            --kernel-version=* | --firecracker-version=*)
            val=${opt#*=}
            opt=${opt%%=*}
            shift
            ;;
        --storage | --envd | --as | --envd-arg | --kernel | --tmpl | --work-dir | --boot-arg | \
            --kernel-version | --firecracker-version)
            [ $# -ge 2 ] || die 2 "$opt needs a value"
            val=$2
            shift 2
            ;;
        -*) die 2 "unknown option $opt" ;;
        *) positional+=("$opt"); shift; continue ;;
    esac
    case "$opt" in
        --storage) storage=$val ;;
        --envd) envd=$val ;;
        --as) as_mode=$val ;;
        --envd-arg) envd_args+=("$val") ;;
        --kernel) kernel=$val; kernel_origin=--kernel ;;
        --tmpl) tmpl=$val ;;
        --work-dir) work_dir=$val ;;
        --boot-arg) boot_args+=("$val") ;;
        --kernel-version | --firecracker-version) inject_extra+=("$opt=$val") ;;
    esac
done

# ---- validation: nothing runs before all of this passes --------------------------------------
[ ${#positional[@]} -eq 1 ] || die 2 "expected exactly one BUILD_ID, got ${#positional[@]}"
build=${positional[0]}
[ -n "$envd" ] || die 2 "--envd PATH is required"
case "$as_mode" in auto | init | wrapper | service) ;; *) die 2 "--as must be auto, init, wrapper or service, not '$as_mode'" ;; esac
case "$target_flags" in *fork*in-place* | *in-place*fork*) die 2 "--fork and --in-place exclude each other" ;; esac

uuid_re='^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$'
[[ $build =~ $uuid_re ]] || die 3 "invalid build ID '$build': expected a lowercase UUID (the build's folder name in the storage)"
[ -f "$envd" ] || die 3 "--envd $envd: no such file"
[ -r "$envd" ] || die 3 "--envd $envd: not readable"
if [ -n "$storage" ]; then
    [ -d "$storage" ] || die 3 "storage $storage: no such directory"
    [ -d "$storage/$build" ] || die 3 "no build $build in $storage"
fi
if [ "$boot_test" = 1 ] && [ -n "$kernel" ]; then
    [ -f "$kernel" ] || die 3 "kernel $kernel ($kernel_origin): no such file"
fi
if [ -z "$tmpl" ]; then
    if command -v tmpl >/dev/null 2>&1; then
        tmpl=$(command -v tmpl)
    elif [ -x "$here/../target/release/tmpl" ]; then
        tmpl=$(cd "$here/.." && pwd)/target/release/tmpl
    else
        die 4 "tmpl not found on PATH nor at target/release/tmpl (cargo build --release, or --tmpl PATH)"
    fi
else
    if ! [ -f "$tmpl" ] || ! [ -x "$tmpl" ]; then die 3 "--tmpl $tmpl: not an executable file"; fi
fi
command -v jq >/dev/null 2>&1 || die 4 "jq not found on PATH (apt-get install -y jq)"

if [ -n "$work_dir" ]; then
    mkdir -p "$work_dir" || die 4 "cannot create --work-dir $work_dir"
else
    work_dir=$(mktemp -d "${TMPDIR:-/tmp}/template-ci.XXXXXX") || die 4 "cannot create a work directory"
fi
work_dir=$(cd "$work_dir" && pwd)

global=(--json --no-progress)
[ -n "$storage" ] && global=(--storage "$storage" "${global[@]}")

# ---- steps ------------------------------------------------------------------------------------
total=4
steps=()     # files holding one step object each
step_no=0
failed_step=""
exit_code=0
new_build=""

# Microseconds since the epoch (bash 5's EPOCHREALTIME; its decimal point follows the locale).
now_us() { echo "${EPOCHREALTIME//[!0-9]/}"; }

# run NAME CMD...: run one tmpl command with its JSON on WORK/NN-NAME.json and its stderr on
# WORK/NN-NAME.stderr. Sets rc, ms, out, err, cmd_str.
run() {
    local name=$1
    shift
    step_no=$((step_no + 1))
    local nn
    printf -v nn '%02d' "$step_no"
    out=$work_dir/$nn-$name.json
    err=${out%.json}.stderr
    cmd_str=$(printf '%q ' "$@")
    cmd_str=${cmd_str% }
    say "[$step_no/$total] $name: $cmd_str"
    local t0
    t0=$(now_us)
    rc=0
    "$@" >"$out" 2>"$err" || rc=$?
    ms=$((($(now_us) - t0) / 1000))
}

# record NAME STATUS NOTE [EXTRA_JSON] -- ARGV...: write the step object of the last run.
record() {
    local name=$1 status=$2 note=$3 extra=${4:-null}
    shift 5
    local nn file report=()
    printf -v nn '%02d' "$step_no"
    file=$work_dir/.step-$nn-$name.json
    if [ -s "$out" ] && jq -e 'type == "object"' "$out" >/dev/null 2>&1; then
        report=(--slurpfile report "$out")
    else
        report=(--argjson report '[null]')
    fi
    # argv as a JSON array (NUL-separated, so any argument survives; jq 1.6 has no --args --).
    printf '\0%s' "$@" | jq -R -s 'split("\u0000")[1:]' >"$file.argv"
    jq -n --arg name "$name" --arg status "$status" --arg note "$note" --arg command "$cmd_str" \
        --argjson exit_code "$rc" --argjson duration_ms "$ms" --arg report_path "$out" \
        --arg stderr_path "$err" --argjson extra "$extra" --slurpfile argv "$file.argv" "${report[@]}" \
        '{name: $name, status: $status, command: $command, argv: $argv[0],
          exit_code: $exit_code, duration_ms: $duration_ms}
         + (if $note == "" then {} else {note: $note} end)
         + ($extra // {})
         + {report_path: $report_path, stderr_path: $stderr_path, report: $report[0]}' >"$file"
    rm -f "$file.argv"
    steps+=("$file")
}

# skip NAME NOTE: a step that did not run at all.
skip() {
    local name=$1 note=$2
    step_no=$((step_no + 1))
    local nn file
    printf -v nn '%02d' "$step_no"
    file=$work_dir/.step-$nn-$name.json
    jq -n --arg name "$name" --arg note "$note" \
        '{name: $name, status: "skipped", command: null, argv: null, exit_code: null, duration_ms: 0, note: $note}' >"$file"
    steps+=("$file")
    say "[$step_no/$total] $name: skipped: $note"
}

fail() {
    failed_step=$1
    exit_code=$2
    say "[$step_no/$total] $1 FAILED (exit $2, $ms ms): $3"
    local line
    if [ -s "$err" ]; then
        while IFS= read -r line || [ -n "$line" ]; do printf '    | %s\n' "$line" >&2; done <"$err"
    fi
}

# The error findings of a verify report, one id per line.
error_ids() { jq -r '[.builds[]?.findings[]? | select(.severity == "error") | .id] | unique | .[]' "$1" 2>/dev/null; }

# Errors inject-envd repairs (it rewrites /sbin/init, the wrapper or envd.service, and envd).
# init.unreadable is damage in the image, not a boot-path mistake.
repairable() {
    case "$1" in
        init.unreadable) return 1 ;;
        init.* | wrapper.* | envd.* | systemd.*) return 0 ;;
        *) return 1 ;;
    esac
}

# node.* errors (verify with HOST_KERNELS_DIR / FIRECRACKER_VERSIONS_DIR set: the build's kernel or
# Firecracker is not on this machine) describe the machine the pipeline runs on, not the template:
# they are reported, and do not stop the pipeline.
node_only() {
    local ids
    ids=$(error_ids "$1") && [ -n "$ids" ] && ! grep -qv '^node\.' <<<"$ids"
}

say "build $build, ${storage:-storage resolved by tmpl}; $target; step outputs in $work_dir"

pipeline() {
    # 1. verify-source
    local ids id blocking=() allowed=()
    run verify-source "$tmpl" "${global[@]}" verify "$build"
    if [ "$rc" = 0 ]; then
        record verify-source ok "" null -- "$tmpl" "${global[@]}" verify "$build"
        say "[$step_no/$total] verify-source: ok ($ms ms)"
    elif [ "$rc" = 1 ] && ids=$(error_ids "$out") && [ -n "$ids" ]; then
        while IFS= read -r id; do
            if repairable "$id" || [[ $id == node.* ]]; then allowed+=("$id"); else blocking+=("$id"); fi
        done <<<"$ids"
        local extra
        extra=$(jq -n '{repairable_errors: $ARGS.named.a | split(" ") | map(select(. != "")),
                        blocking_errors: $ARGS.named.b | split(" ") | map(select(. != ""))}' \
            --arg a "${allowed[*]}" --arg b "${blocking[*]-}")
        if [ ${#blocking[@]} -eq 0 ]; then
            record verify-source proceeded "errors inject-envd repairs: ${allowed[*]}" "$extra" -- \
                "$tmpl" "${global[@]}" verify "$build"
            say "[$step_no/$total] verify-source: errors inject-envd repairs (${allowed[*]}); going on ($ms ms)"
        else
            record verify-source failed "errors inject-envd does not repair: ${blocking[*]}" "$extra" -- \
                "$tmpl" "${global[@]}" verify "$build"
            fail verify-source "$rc" "errors inject-envd does not repair: ${blocking[*]}"
            return
        fi
    else
        local why
        why=$(jq -r '.error.message // empty' "$out" 2>/dev/null || true)
        record verify-source failed "${why:-tmpl verify exited $rc}" null -- "$tmpl" "${global[@]}" verify "$build"
        fail verify-source "$rc" "${why:-tmpl verify exited $rc}"
        return
    fi

    # 2. inject-envd
    local inject=("$tmpl" "${global[@]}" inject-envd "$build" --envd "$envd" --as "$as_mode")
    local a
    for a in "${envd_args[@]}"; do inject+=("--envd-arg=$a"); done
    for a in "${inject_extra[@]}"; do inject+=("$a"); done
    [ "$target" = fork ] && inject+=(--fork)
    run inject-envd "${inject[@]}"
    if [ "$rc" != 0 ]; then
        local why
        why=$(jq -r '.error.message // empty' "$out" 2>/dev/null || true)
        record inject-envd failed "${why:-tmpl inject-envd exited $rc}" null -- "${inject[@]}"
        fail inject-envd "$rc" "${why:-tmpl inject-envd exited $rc}"
        return
    fi
    new_build=$(jq -r '.applied.build_id // empty' "$out" 2>/dev/null || true)
    if ! [[ $new_build =~ $uuid_re ]]; then
        record inject-envd failed "the report names no resulting build" null -- "${inject[@]}"
        new_build=""
        fail inject-envd 4 "tmpl inject-envd exited 0 but its report names no resulting build"
        return
    fi
    record inject-envd ok "" "$(jq -n --arg b "$new_build" '{build_id: $b}')" -- "${inject[@]}"
    if [ "$target" = fork ]; then
        say "[$step_no/$total] inject-envd: new build $new_build ($ms ms)"
    else
        say "[$step_no/$total] inject-envd: $new_build edited in place ($ms ms)"
    fi

    # 3. verify-result
    run verify-result "$tmpl" "${global[@]}" verify "$new_build"
    if [ "$rc" = 1 ] && node_only "$out"; then
        local node_ids
        node_ids=$(error_ids "$out" | tr '\n' ' ')
        record verify-result ok "this machine lacks what the build names: ${node_ids% }" null -- \
            "$tmpl" "${global[@]}" verify "$new_build"
        say "[$step_no/$total] verify-result: no errors in the build; this machine lacks ${node_ids% } ($ms ms)"
    elif [ "$rc" != 0 ]; then
        local why
        why=$(jq -r '.error.message // ([.builds[]?.findings[]? | select(.severity == "error") | .id] | unique | join(" "))' "$out" 2>/dev/null || true)
        record verify-result failed "${why:-tmpl verify exited $rc}" null -- "$tmpl" "${global[@]}" verify "$new_build"
        fail verify-result "$rc" "the result is not clean: ${why:-tmpl verify exited $rc}"
        return
    else
        record verify-result ok "" null -- "$tmpl" "${global[@]}" verify "$new_build"
        say "[$step_no/$total] verify-result: no errors ($ms ms)"
    fi

    # 4. boot-test
    if [ "$boot_test" = 0 ]; then
        skip boot-test "--no-boot-test"
        return
    fi
    local nn console
    printf -v nn '%02d' $((step_no + 1))
    console=$work_dir/$nn-boot-test.console.log
    local boot=("$tmpl" "${global[@]}" boot-test "$new_build" --console "$console")
    [ -n "$kernel" ] && boot+=(--kernel "$kernel")
    # Require health when the kernel can give it (unless the caller chose a level).
    local a want=""
    for a in "${boot_args[@]}"; do [[ $a == --require* ]] && want=given; done
    if [ -n "$kernel" ] && [ -z "$want" ]; then
        want=$("$tmpl" --json check-kernel --profile qemu-microvm "$kernel" 2>/dev/null |
            jq -r '.boot_test.strongest_evidence // empty' 2>/dev/null || true)
        [ "$want" = health ] && boot+=(--require health)
    fi
    boot+=("${boot_args[@]}")
    run boot-test "${boot[@]}"
    local evidence_json
    evidence_json=$(jq -c --arg c "$console" '{console_path: $c, evidence: (.evidence // null),
        required: (.required // null), strongest_available: (.strongest_available // null),
        health_ms: (.health.ms // null)}' "$out" 2>/dev/null || jq -n --arg c "$console" '{console_path: $c}')
    if [ "$rc" = 0 ]; then
        local verdict level
        verdict=$(jq -r '.summary // "ok"' "$out" 2>/dev/null || echo ok)
        level=$(jq -r '.evidence // "unknown"' "$out" 2>/dev/null || echo unknown)
        record boot-test ok "" "$evidence_json" -- "${boot[@]}"
        say "[$step_no/$total] boot-test: evidence $level: $verdict ($ms ms)"
        return
    fi
    local kind msg
    kind=$(jq -r '.error.kind // empty' "$out" 2>/dev/null || true)
    # One line: boot-test lists what it tried as "\n  - item" lines.
    msg=$(jq -r '.error.message // empty | gsub("\n\\s*-\\s*"; " | ") | gsub("\n"; "; ")' "$out" 2>/dev/null || true)
    # No --kernel/TMPL_KERNEL and boot-test could not find a kernel (or QEMU) to boot with: the
    # machine cannot boot-test, which is not a fault of the build.
    if [ -z "$kernel" ] && [ "$rc" = 4 ] && [ "$kind" = environment ] &&
        [[ $msg == "no kernel "* || $msg == *"cannot boot this rootfs"* || $msg == "qemu-system-"*" not found"* ]]; then
        record boot-test skipped "no kernel or QEMU to boot with (give --kernel or TMPL_KERNEL to require one): $msg" null -- "${boot[@]}"
        say "[$step_no/$total] boot-test: skipped, this machine cannot boot it: $msg"
        return
    fi
    local why=$msg
    [ -n "$why" ] || why=$(jq -r '(.verdict // empty) + ": " + (.summary // "")' "$out" 2>/dev/null || true)
    record boot-test failed "${why:-tmpl boot-test exited $rc}" "$evidence_json" -- "${boot[@]}"
    fail boot-test "$rc" "${why:-tmpl boot-test exited $rc}"
}

pipeline

# ---- summary ----------------------------------------------------------------------------------
ok=false
[ -z "$failed_step" ] && ok=true
purge=null
if [ "$ok" = true ]; then
    dispatch="nomad job dispatch -meta build_ids=$build tmpl-purge-cache"
    if [ "$target" = fork ]; then
        when="after the template points at the new build $new_build and no sandbox runs from $build: frees the old build's node caches (the new build ID needs no invalidation)"
    else
        when="now: $build was changed in place and every orchestrator node still serves its old bytes from its caches (25 h TTL)"
    fi
    purge=$(jq -n --arg b "$build" --arg c "$dispatch" --arg w "$when" \
        '{build_ids: [$b], command: $c, collect: ("deploy/nomad/collect.sh " + $b), when: $w}')
fi
note=""
if [ -n "$failed_step" ] && [ -n "$new_build" ]; then
    if [ "$target" = fork ]; then
        note="the new build $new_build was written but failed $failed_step; it is kept for inspection (delete its folder when done); the old build $build is untouched"
    else
        note="$build was edited in place (the original rootfs is in its .tmpl-backup-* folder) but failed $failed_step"
    fi
fi
summary_file=$work_dir/summary.json
jq -n --argjson ok "$ok" --argjson exit_code "$exit_code" --arg build "$build" --arg new "$new_build" \
    --arg target "$target" --arg storage "$storage" --arg work "$work_dir" --arg failed "$failed_step" \
    --arg note "$note" --argjson purge "$purge" --slurpfile steps <(cat "${steps[@]}") \
    '{format_version: 1, command: "template-ci", ok: $ok, exit_code: $exit_code,
      storage: (if $storage == "" then ($steps[0].report.storage // null) else $storage end),
      build_id: $build, target: $target,
      new_build_id: (if $new == "" then null else $new end),
      failed_step: (if $failed == "" then null else $failed end)}
     + (if $note == "" then {} else {note: $note} end)
     + {work_dir: $work, steps: $steps, purge: $purge}' >"$summary_file"
rm -f "${steps[@]}"
cat "$summary_file"

if [ "$ok" = true ]; then
    say "ok: $([ "$target" = fork ] && echo "new build $new_build" || echo "$build repaired in place")"
    say "purge $build from every orchestrator node's caches: $dispatch"
    say "  when: $when"
else
    say "FAILED at $failed_step (exit $exit_code)${note:+; $note}"
fi
exit "$exit_code"
