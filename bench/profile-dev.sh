#!/usr/bin/env bash
# Counts the instructions paymentd executes per payment flow, by part, with callgrind: a
# repeatable figure for paymentd's own work (whatever else the machine is doing), where
# bench/run.sh's CPU per flow moves with the load. See docs/performance.md ("bench/profile-dev.sh").
#
#   bench/profile-dev.sh [--rate 3] [--duration 30] [--no-build]
#
# Runs `paymentd dev` (every role in one process, the in-memory store, plain HTTP) under
# valgrind's callgrind, warms it up with loadgen for 10 s, then counts the instructions of
# --duration seconds of loadgen's flows at --rate flows/s (the same mix as bench/run.sh). The
# in-memory store stands in for PostgreSQL, so the database client's work is not in the count,
# and work done per unit of time rather than per flow (service tokens renewed every minute, the
# webhook workers' polling) weighs more at this low rate than at full load: the per-part table
# says which is which. Keeps the callgrind file (printed at the end) for callgrind_annotate.
set -euo pipefail

RATE=3
DURATION=30
BUILD=1
while [ $# -gt 0 ]; do
    case "$1" in
        --rate) RATE=$2; shift 2 ;;
        --duration) DURATION=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PAYMENTD=$TARGET/release/paymentd
LOADGEN=$TARGET/release/loadgen
command -v valgrind >/dev/null || { echo "valgrind is needed (apt-get install valgrind)" >&2; exit 1; }
if [ "$BUILD" = 1 ]; then
    (cd "$ROOT" && cargo build --release -q -p paymentd -p loadgen)
fi

WORK=$(mktemp -d /tmp/payprofile.XXXXXX)
PID=
cleanup() {
    set +e
    [ -n "$PID" ] && kill "$PID" 2>/dev/null && wait "$PID" 2>/dev/null
}
trap cleanup EXIT

PORT=$(free_port)
valgrind --tool=callgrind --instr-atstart=no --callgrind-out-file="$WORK/callgrind.out" \
    "$PAYMENTD" dev --port "$PORT" >"$WORK/dev.out" 2>&1 &
PID=$!
for _ in $(seq 1 600); do
    grep -q "Secret key" "$WORK/dev.out" && break
    kill -0 "$PID" 2>/dev/null || { cat "$WORK/dev.out" >&2; exit 1; }
    sleep 0.5
done
KEY=$(awk '/Secret key/ { print $3 }' "$WORK/dev.out")
[ -n "$KEY" ] || { echo "paymentd dev did not print its key" >&2; cat "$WORK/dev.out" >&2; exit 1; }
run_loadgen() {
    "$LOADGEN" --base-url "http://127.0.0.1:$PORT" --api-key "$KEY" --rate "$RATE" --warmup 0 \
        --unique-cards --capture-manual-share 0.1 --refund-share 0.05 --json "$@"
}

callgrind_control -i on "$PID" >/dev/null
echo "== warm-up: 10 s at $RATE flows/s"
run_loadgen --duration 10 >"$WORK/warmup.json"
callgrind_control -z "$PID" >/dev/null
echo "== counted: $DURATION s at $RATE flows/s"
run_loadgen --duration "$DURATION" >"$WORK/run.json"
callgrind_control -d "$PID" >/dev/null
kill "$PID"; wait "$PID" 2>/dev/null || true; PID=

OUT=$(ls -t "$WORK"/callgrind.out.* | head -1)
# Every counted flow must have succeeded: a failed one (refused, timed out) does part of the
# work and would make the per-flow figure mean nothing.
FLOWS=$(python3 - "$WORK/run.json" <<'EOF2'
import json, sys
r = json.load(open(sys.argv[1]))
if r["flows_failed"] or not r["flows_ok"]:
    sys.exit(f"{r['flows_failed']} of {r['flows_run_total']} flows failed ({r['errors']}); lower --rate")
print(r["flows_ok"])
EOF2
)
callgrind_annotate --inclusive=yes --threshold=100 --auto=no "$OUT" >"$WORK/inclusive.txt" 2>/dev/null
python3 - "$WORK/inclusive.txt" "$FLOWS" <<'EOF'
import re, sys
text, flows = open(sys.argv[1]).read(), int(sys.argv[2])
total = int(re.search(r"^([\d,]+) \(100\.0%\)\s+PROGRAM TOTALS", text, re.M).group(1).replace(",", ""))
# The largest inclusive figure of each part (a function appears once per source file it was
# inlined from; the largest is the whole).
parts = [
    ("WAF inspection", "pay_waf::engine::Waf::run"),
    ("WAF proxy, inspection included", "pay_waf::proxy::WafProxy::handle::{{closure}}"),
    ("store calls (in-memory)", "pay_store::Db::execute::{{closure}}"),
    ("tokenizer: tokenize", "pay_tokenizer::Tokenizer::tokenize::{{closure}}"),
    ("payments: run_attempt", "pay_payments::service::Payments::run_attempt::{{closure}}"),
    ("service tokens: verify (cached per minute)", "pay_net::identity::TokenVerifier::verify"),
    ("service tokens: issue (cached per minute)", "pay_net::identity::TokenIssuer::token_for"),
    ("JSON values dropped", "core::ptr::drop_in_place<serde_json::value::Value>"),
    ("allocator: free", "mi_free"),
]
rows = {}
for line in text.split("\n"):
    m = re.match(r"\s*([\d,]+) \(\s*[\d.]+%\)\s+\S+?:(.*)$", line)
    if not m:
        continue
    n, name = int(m.group(1).replace(",", "")), m.group(2)
    for label, key in parts:
        if name == key or name.startswith(key + " "):
            rows[label] = max(rows.get(label, 0), n)
print(f"flows counted: {flows}; instructions: {total:,}; per flow: {total / max(flows, 1):,.0f}")
for label, _ in parts:
    n = rows.get(label, 0)
    print(f"  {label:40s} {n / max(flows, 1):>12,.0f} per flow  {100 * n / total:5.1f} %")
EOF
echo "callgrind file: $OUT (callgrind_annotate --inclusive=yes $OUT)"
