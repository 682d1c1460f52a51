#!/usr/bin/env bash
# tmpl on builds in S3 (issue 15) beside what an operator does today: download the builds with
# `aws s3 sync`, then run tmpl on the local copy. The server is moto (the one the tests use), on
# loopback: the ratios show what reading only the bytes the headers need saves; over a real
# network (latency, bandwidth) the download costs far more and the ratios grow.
#
#   TMPL=target/release/tmpl MOTO_SERVER=/opt/tmpl-emu/bin/moto_server scripts/bench-remote.sh
#
# Needs moto_server (MOTO_SERVER or PATH), the aws CLI and curl. Prints RESULT|, NOTE| and
# TARGET| lines (scripts/bench-lib.sh conventions). QUICK=1: 3 runs, the compressed demo builds
# only.
set -euo pipefail
cd "$(dirname "$0")/.."
ROOT=$PWD
QUICK=${QUICK:-0}
[ "$QUICK" = 1 ] && RUNS=${RUNS:-3}
RUNS=${RUNS:-3}
# shellcheck source=scripts/bench-lib.sh
source scripts/bench-lib.sh
TMPL=${TMPL:-$ROOT/target/release/tmpl}
MOTO=${MOTO_SERVER:-$(command -v moto_server || true)}
[ -x "$MOTO" ] || { echo "bench-remote: moto_server not found (set MOTO_SERVER)" >&2; exit 2; }
command -v aws >/dev/null || { echo "bench-remote: the aws CLI is not installed" >&2; exit 2; }
WORK=$(mktemp -d /var/tmp/tmpl-bench-remote.XXXXXX)
PORT=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])')
(cd "$WORK" && exec "$MOTO" -H 127.0.0.1 -p "$PORT" >"$WORK/moto.log" 2>&1) &
MOTO_PID=$!
trap 'kill "$MOTO_PID" 2>/dev/null; rm -rf "$WORK"' EXIT
for _ in $(seq 100); do curl -s -o /dev/null "http://127.0.0.1:$PORT/" && break; sleep 0.1; done

export AWS_ACCESS_KEY_ID=bench AWS_SECRET_ACCESS_KEY=bench AWS_DEFAULT_REGION=us-east-1
export AWS_METADATA_ENDPOINT=http://127.0.0.1:9 AWS_EC2_METADATA_DISABLED=true
ENDPOINT=http://127.0.0.1:$PORT
URL="s3://bench?endpoint=$ENDPOINT&s3ForcePathStyle=true&region=us-east-1"
curl -s -X PUT -o /dev/null "$ENDPOINT/bench"

"$TMPL" demo --dir "$WORK/demo" --json >/dev/null || true
if [ "$QUICK" = 1 ]; then
    BUILDS="a0000000-0000-4000-8000-000000000005 a0000000-0000-4000-8000-000000000006 ea000000-0000-4000-8000-00000000001a eb000000-0000-4000-8000-00000000001b ec000000-0000-4000-8000-00000000001c"
else
    BUILDS=$(cd "$WORK/demo" && for d in */; do echo "${d%/}"; done)
fi
N=0
for b in $BUILDS; do
    "$TMPL" copy "$b" --no-ancestors --from "$WORK/demo" --to "$URL" -q
    N=$((N + 1))
done
BYTES=$(du -sb --apparent-size "$WORK/demo" | cut -f1)
echo "NOTE|remote: $N demo builds in moto ($(awk -v b="$BYTES" 'BEGIN{printf "%.0f", b/1048576}') MiB of objects, mostly sparse memfiles); loopback, so downloads cost only moto's and the CLI's CPU"

ID=a0000000-0000-4000-8000-000000000005
LOCAL=$WORK/local
fresh() { rm -rf "$LOCAL"; mkdir -p "$LOCAL"; }

# inspect --path /sbin/init: tmpl straight from the bucket vs download the build, then inspect.
compare "$TMPL --storage '$URL' -q inspect $ID --path /sbin/init" \
    "aws --endpoint-url $ENDPOINT s3 cp --recursive --quiet s3://bench/$ID $LOCAL/$ID && $TMPL --storage $LOCAL -q inspect $ID --path /sbin/init" fresh
result "inspect --path /sbin/init of a build in S3 (moto)" "$T_US" "aws s3 cp --recursive of the build + local inspect" "$A_US" "$RATIO" "-"
REQ=$("$TMPL" --storage "$URL" --json inspect "$ID" --path /sbin/init | python3 -c 'import json,sys; r=json.load(sys.stdin)["remote"]; print(r["requests"], r["bytes_read"])')
echo "NOTE|inspect --path /sbin/init over S3: $(echo "$REQ" | cut -d' ' -f1) requests, $(echo "$REQ" | cut -d' ' -f2) bytes fetched"
target "issue 15" "following /sbin/init in a remote rootfs reads < 1 MiB in ≤ 16 requests (demo rootfs, not 4 GiB)" \
    "$(echo "$REQ" | cut -d' ' -f1) requests, $(echo "$REQ" | cut -d' ' -f2) bytes" "≤ 16 requests, < 1 MiB" \
    "$(awk -v r="$(echo "$REQ" | cut -d' ' -f1)" -v b="$(echo "$REQ" | cut -d' ' -f2)" 'BEGIN{print (r <= 16 && b < 1048576) ? "met" : "NOT met"}')"

# verify --all: straight from the bucket vs sync the bucket, then verify.
compare "$TMPL --storage '$URL' -q verify --all; test \$? -le 1" \
    "aws --endpoint-url $ENDPOINT s3 sync --quiet s3://bench $LOCAL && $TMPL --storage $LOCAL -q verify --all; test \$? -le 1" fresh
result "verify --all of $N builds in S3 (moto)" "$T_US" "aws s3 sync of the bucket + local verify --all" "$A_US" "$RATIO" "-"

# Concurrency: the same verify --all with one request at a time and one build at a time.
compare "$TMPL --storage '$URL' -q verify --all; test \$? -le 1" \
    "TMPL_REMOTE_CONCURRENCY=1 RAYON_NUM_THREADS=1 $TMPL --storage '$URL' -q verify --all; test \$? -le 1"
result "verify --all of $N builds in S3, concurrent" "$T_US" "the same with 1 request in flight (TMPL_REMOTE_CONCURRENCY=1)" "$A_US" "$RATIO" "-"
echo "NOTE|verify --all over S3 uses a 16-thread pool whatever RAYON_NUM_THREADS says; the second command differs only in requests in flight per store"
