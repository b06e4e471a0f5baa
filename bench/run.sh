#!/usr/bin/env bash
# One-command performance baseline of the real stack against the PostgreSQL limit measured in
# the same run. See docs/performance.md for what it does and how to read the output.
#
#   bench/run.sh [--duration SECS] [--pgbench-clients N] [--connections N] [--no-build]
#
# Environment: CARGO_TARGET_DIR (where release binaries are), PG_BIN (PostgreSQL server
# binaries, default /usr/lib/postgresql/15/bin), KEEP=1 keeps the work directory, PERF=1
# samples paymentd with `perf record` during phase 1 (PERF_PHASE=2: phase 2) and prints its
# hottest symbols (with PERF_CALLGRAPH=fp or dwarf also call chains, kept in the work directory's
# perf.data for `perf report --children`, and paymentd's time split by part by
# bench/perf_parts.py; fp needs a build with frame pointers, see docs/performance.md),
# PG_PERF=1 samples the whole machine with call chains during that phase and prints
# PostgreSQL's functions by inclusive share (PG_PERF_TOP lines, default 40),
# DB_POOL (paymentd's database pool, default 32), COMMIT_BATCHES / MAX_COMMIT_BATCH (paymentd's
# group commit, `database.commit_batches` / `database.max_commit_batch`; 0 batches turns it off), CAPTURE_SHARE / REFUND_SHARE (loadgen mix),
# PG_STATEMENTS=1 loads pg_stat_statements and prints the statements PostgreSQL spent phase 1 on,
# PG_LOG_STATEMENTS=1 logs every statement with its parameters to the work directory's
# pgrun/postgres.log (with KEEP=1, the input of bench/replay.sh; slows the run),
# PG_OPTIONS adds server settings (`-c name=value …`, e.g. `-c log_autovacuum_min_duration=0
# -c log_checkpoints=on` with KEEP=1 to relate a stall in the per-second confirm timeline to
# the server's log),
# PHASE2_RATE fixes phase 2's rate (flows/s) instead of 70% of phase 1's, to compare two builds'
# latency at one rate, PG_ASYNC_COMMIT=1 turns synchronous commit off for paymentd's database (an experiment: what
# waiting for WAL flushes costs; never a production setting), PHASE2_SAMPLE=1 samples the system
# during phase 2 and prints, per second of the confirm timeline, the disk writes, dirty and
# writeback memory, context switches, the CPU of the machine, paymentd, PostgreSQL and loadgen,
# and what PostgreSQL's active backends were waiting on (to
# relate a slow second to its cause; the sampling itself costs some CPU, so compare runs made
# with it only with each other), NO_SETTLE=1 skips the sync after loading and running pgbench
# (the behaviour before 2026-12-06 evening, to compare), CURVE=0.1,0.3,0.5 runs the open loop
# again at those shares of phase 1's rate after phase 2 and prints confirm's latency, the
# machine's busy share, CPU and transactions per flow at each (where a latency target holds).
set -euo pipefail

DURATION=20
PGBENCH_CLIENTS=8
# Phase 1's closed loop needs enough flows in flight to find the node's most: on the 2-core
# bench machine 32 connections measured 20 % under it (Little's law: ~60 ms a flow), 128 and
# 256 the same (docs/performance.md, 2026-12-07).
CONNECTIONS=128
WARMUP=3
BUILD=1
CAPTURE_SHARE=${CAPTURE_SHARE:-0.1}
REFUND_SHARE=${REFUND_SHARE:-0.05}
while [ $# -gt 0 ]; do
    case "$1" in
        --duration) DURATION=$2; shift 2 ;;
        --pgbench-clients) PGBENCH_CLIENTS=$2; shift 2 ;;
        --connections) CONNECTIONS=$2; shift 2 ;;
        --warmup) WARMUP=$2; shift 2 ;;
        --no-build) BUILD=0; shift ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        *) echo "unknown argument: $1" >&2; exit 2 ;;
    esac
done
# CURVE's shares, checked before anything runs rather than after the two phases.
CURVE_SHARES=$(echo "${CURVE:-}" | tr , " ")
for share in $CURVE_SHARES; do
    awk -v s="$share" 'BEGIN { exit !(s ~ /^[0-9]*\.?[0-9]+$/ && s > 0 && s <= 1.5) }' ||
        { echo "CURVE: '$share' is not a share of phase 1's rate (a number in (0, 1.5])" >&2; exit 2; }
done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
TARGET=${CARGO_TARGET_DIR:-$ROOT/target}
PAYMENTD=$TARGET/release/paymentd
LOADGEN=$TARGET/release/loadgen
TICK=$(getconf CLK_TCK)

if [ "$BUILD" = 1 ]; then
    echo "== building paymentd and loadgen (release)"
    (cd "$ROOT" && cargo build --release -q -p paymentd -p loadgen)
fi
for b in "$PAYMENTD" "$LOADGEN"; do
    [ -x "$b" ] || { echo "missing $b (build with: cargo build --release -p paymentd -p loadgen)" >&2; exit 1; }
done

WORK=$(mktemp -d /tmp/paybench.XXXXXX)
chmod 755 "$WORK"
PGDATA=$WORK/pg
PAYMENTD_PID=
DEV_PID=

cleanup() {
    set +e
    # A system-wide profile (PG_PERF) does not stop by itself when the run ends early.
    [ -n "${PG_PERF_PID:-}" ] && kill -INT "$PG_PERF_PID" 2>/dev/null && wait "$PG_PERF_PID" 2>/dev/null
    [ -n "$DEV_PID" ] && kill "$DEV_PID" 2>/dev/null && wait "$DEV_PID" 2>/dev/null
    [ -n "$PAYMENTD_PID" ] && kill "$PAYMENTD_PID" 2>/dev/null && wait "$PAYMENTD_PID" 2>/dev/null
    [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

now_ns() { date +%s%N; }

# Waits until FILE contains PATTERN (or PID dies / 30 s pass); prints the elapsed ms since START_NS.
wait_for_line() {
    local file=$1 pattern=$2 pid=$3 start=$4
    for _ in $(seq 1 3000); do
        if grep -q "$pattern" "$file" 2>/dev/null; then
            echo $(( ($(now_ns) - start) / 1000000 ))
            return 0
        fi
        kill -0 "$pid" 2>/dev/null || { echo "process $pid exited; output:" >&2; cat "$file" >&2; return 1; }
        sleep 0.005
    done
    echo "timed out waiting for '$pattern' in $file" >&2
    return 1
}

# CPU ticks (user + system) of one process.
proc_ticks() {
    awk '{ print $14 + $15 }' "/proc/$1/stat" 2>/dev/null || echo 0
}

# CPU ticks of the PostgreSQL server: the postmaster (including children it has reaped) plus
# every live child (backends, checkpointer, WAL writer, ...).
pg_ticks() {
    local pm
    pm=$(head -1 "$PGDATA/postmaster.pid")
    # One awk for every stat file (the phase-2 sampler reads this four times a second); a child
    # that exits between pgrep and awk is left out, as it was with one read per child.
    awk -v pm="/proc/$pm/stat" 'FILENAME == pm { s += $16 + $17 } { s += $14 + $15 } END { printf "%d\n", s }' \
        "/proc/$pm/stat" $(pgrep -P "$pm" | sed 's|.*|/proc/&/stat|') 2>/dev/null || true
}

# CPU ticks of this shell's finished children (around a foreground loadgen run). `times` must
# run in this shell, not in a command substitution, so it writes to a file.
children_ticks() {
    times >"$WORK/times.txt"
    # `times` prints two lines: the shell's, then its children's: "XmY.YYYs XmY.YYYs".
    tail -1 "$WORK/times.txt" | awk -v tick="$TICK" '{
        split($1, u, "m"); split($2, s, "m");
        sub("s", "", u[2]); sub("s", "", s[2]);
        printf "%d\n", ((u[1] * 60 + u[2]) + (s[1] * 60 + s[2])) * tick }' >"$WORK/children_ticks.txt"
}

echo "== machine: $(nproc) CPUs, load average $(cut -d' ' -f1-3 /proc/loadavg) (shared machine: numbers are noisy)"

# --- PostgreSQL -------------------------------------------------------------------------------
PGPORT=$(free_port)
PG_EXTRA=
[ "${PG_STATEMENTS:-0}" = 1 ] && PG_EXTRA=" -c shared_preload_libraries=pg_stat_statements -c pg_stat_statements.track=all"
[ "${PG_LOG_STATEMENTS:-0}" = 1 ] && PG_EXTRA="$PG_EXTRA -c log_statement=all"
[ -n "${PG_OPTIONS:-}" ] && PG_EXTRA="$PG_EXTRA $PG_OPTIONS"
mkdir -p "$PGDATA" "$WORK/pgrun"
[ "$(id -u)" = 0 ] && chown postgres "$PGDATA" "$WORK/pgrun"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/pgrun/postgres.log" -w \
    -o "-p $PGPORT -k $WORK/pgrun -c listen_addresses=127.0.0.1 -c max_connections=200 -c shared_buffers=256MB$PG_EXTRA" \
    start >/dev/null
PGURL="postgres://postgres@127.0.0.1:$PGPORT"
echo "== PostgreSQL $("$PG_BIN/postgres" --version | awk '{print $3}') on port $PGPORT (fsync on, default durability)"

# --- pgbench reference ------------------------------------------------------------------------
psql -q "$PGURL/postgres" -c "CREATE DATABASE pgbench" -c "CREATE DATABASE payments"
if [ "${PG_ASYNC_COMMIT:-0}" = 1 ]; then
    # An experiment, not a supported configuration: how much of a flow's cost is waiting for
    # WAL flushes. pgbench keeps synchronous commit.
    psql -q "$PGURL/postgres" -c "ALTER DATABASE payments SET synchronous_commit = off"
    echo "== EXPERIMENT: synchronous_commit = off for paymentd's database (PG_ASYNC_COMMIT=1)"
fi
pgbench -q -i -s 10 "$PGURL/pgbench" >"$WORK/pgbench-init.log" 2>&1
# Each measurement pays for its own writes only. Loading pgbench's tables leaves ~200 MB of dirty
# pages in the kernel's cache, which it writes back about 30 s later (dirty_expire_centisecs):
# in the middle of the payment phases, 130-160 MB/s of writes in one second. A sync writes them
# out before anything is timed. (It was not what made the slow seconds of phase 2: see
# docs/performance.md. Not a CHECKPOINT: pgbench's first write of each page after one would log
# the whole page, a cost it does not have here otherwise, which would lower the reference.)
settle_disk() {
    sync
}
[ "${NO_SETTLE:-0}" = 1 ] || settle_disk
echo "== pgbench -N -c $PGBENCH_CLIENTS -j 2 -T $DURATION"
wal_stats() {
    psql -qAt "$PGURL/postgres" -c "SELECT wal_sync, wal_bytes FROM pg_stat_wal"
}
PGB_G0=$(pg_ticks); PGB_W0=$(wal_stats)
pgbench -N -c "$PGBENCH_CLIENTS" -j 2 -T "$DURATION" "$PGURL/pgbench" >"$WORK/pgbench.log" 2>&1
# pgbench's backends exit after it does: wait until the postmaster has reaped them, so that
# their CPU is in its children's times and not lost between reading those and listing the
# live children (which made this figure read near zero in some runs).
for _ in $(seq 50); do
    [ "$(psql -qAt "$PGURL/postgres" -c "SELECT count(*) FROM pg_stat_activity WHERE datname = 'pgbench'")" = 0 ] && break
    sleep 0.1
done
sleep 0.2
PGB_G1=$(pg_ticks); PGB_W1=$(wal_stats)
PGBENCH_TPS=$(grep -E '^tps = ' "$WORK/pgbench.log" | tail -1 | awk '{ printf "%.0f", $3 }')
[ "${NO_SETTLE:-0}" = 1 ] || settle_disk  # and pgbench's run leaves its own dirty pages
grep -E '^(latency average|tps)' "$WORK/pgbench.log"

# --- paymentd dev: time to ready --------------------------------------------------------------
DEV_PORT=$(free_port)
START=$(now_ns)
"$PAYMENTD" dev --port "$DEV_PORT" >"$WORK/dev.out" 2>&1 &
DEV_PID=$!
DEV_READY_MS=$(wait_for_line "$WORK/dev.out" "API base URL" "$DEV_PID" "$START")
kill "$DEV_PID"; wait "$DEV_PID" 2>/dev/null || true; DEV_PID=
echo "== paymentd dev ready in $DEV_READY_MS ms"

# --- paymentd serve ---------------------------------------------------------------------------
D=$WORK/serve
mkdir -p "$D"
openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -days 2 -subj "/CN=paybench CA" \
    -keyout "$D/ca.key" -out "$D/ca.crt" >/dev/null 2>&1
openssl req -newkey ec -pkeyopt ec_paramgen_curve:P-256 -nodes -subj "/CN=127.0.0.1" \
    -keyout "$D/tls.key" -out "$D/tls.csr" >/dev/null 2>&1
printf "subjectAltName=IP:127.0.0.1,DNS:localhost\nbasicConstraints=CA:FALSE\n" >"$D/ext.cnf"
openssl x509 -req -in "$D/tls.csr" -CA "$D/ca.crt" -CAkey "$D/ca.key" -CAcreateserial -days 2 \
    -extfile "$D/ext.cnf" -out "$D/tls.crt" >/dev/null 2>&1
openssl rand -hex 32 >"$D/master.key"
chmod 600 "$D/master.key" "$D/tls.key" "$D/ca.key"
"$PAYMENTD" keys init-service-keys --dir "$D/service-keys" >/dev/null
"$PAYMENTD" migrate --database-url "$PGURL/payments" >/dev/null
SECRET=$("$PAYMENTD" keys create-api-key --database-url "$PGURL/payments" --name "Bench merchant" |
    sed -n 's/^secret key: *//p')
[ -n "$SECRET" ] || { echo "create-api-key printed no secret key" >&2; exit 1; }
API_PORT=$(free_port)
cat >"$D/paymentd.yaml" <<EOF
listen:
  public: 127.0.0.1:$API_PORT
tls:
  cert_file: $D/tls.crt
  key_file: $D/tls.key
database:
  url: $PGURL/payments
  max_connections: ${DB_POOL:-32}
${COMMIT_BATCHES:+  commit_batches: $COMMIT_BATCHES}
${MAX_COMMIT_BATCH:+  max_commit_batch: $MAX_COMMIT_BATCH}
hsm:
  backend: soft
  keystore: $D/keystore
  master_key_file: $D/master.key
service_keys:
  dir: $D/service-keys
logging:
  level: warn
  file: $D/paymentd.log
tuning:
  key_rate_per_second: 1000000
  key_rate_burst: 1000000
  ip_rate_per_second: 1000000
  ip_rate_burst: 1000000
EOF
START=$(now_ns)
"$PAYMENTD" serve --role all --config "$D/paymentd.yaml" >"$WORK/serve.out" 2>&1 &
PAYMENTD_PID=$!
SERVE_READY_MS=$(wait_for_line "$WORK/serve.out" "paymentd ready" "$PAYMENTD_PID" "$START")
echo "== paymentd serve --role all ready in $SERVE_READY_MS ms (migrations already applied)"

BASE=https://127.0.0.1:$API_PORT
export LOADGEN_API_KEY=$SECRET
loadgen() {
    "$LOADGEN" --base-url "$BASE" --ca-file "$D/ca.crt" --warmup "$WARMUP" --duration "$DURATION" \
        --capture-manual-share "$CAPTURE_SHARE" --refund-share "$REFUND_SHARE" \
        --unique-cards --max-429-retries 3 --json "$@"
}

# --- phase 1: the most the node does (closed loop) --------------------------------------------
echo "== phase 1: loadgen closed loop, $CONNECTIONS connections, ${WARMUP}s warmup + ${DURATION}s"
PERF_PID=
PG_PERF_PID=
# Sampling profiles during phase PERF_PHASE (software clock: works without PMU access):
# paymentd's with PERF=1, the whole machine's with PG_PERF=1.
perf_start() {
    [ "${PERF_PHASE:-1}" = "$1" ] || return 0
    if [ "${PG_PERF:-0}" = 1 ]; then
        # The whole machine, for PostgreSQL's backends (they come and go with connections).
        perf record -a -g -e cpu-clock -F 299 -o "$WORK/pg-perf.data" >"$WORK/pg-perf.log" 2>&1 &
        PG_PERF_PID=$!
    fi
    [ "${PERF:-0}" = 1 ] || return 0
    PERF_ARGS=(-e cpu-clock -F 499)
    [ -n "${PERF_CALLGRAPH:-}" ] && PERF_ARGS=(-e cpu-clock -F 199 --call-graph "$PERF_CALLGRAPH")
    perf record "${PERF_ARGS[@]}" -p "$PAYMENTD_PID" -o "$WORK/perf.data" >"$WORK/perf.log" 2>&1 &
    PERF_PID=$!
}
perf_report() {
    if [ -n "$PG_PERF_PID" ]; then
        kill -INT "$PG_PERF_PID"; wait "$PG_PERF_PID" 2>/dev/null || true
        PG_PERF_PID=
        echo "== perf: the machine's samples by command during phase ${PERF_PHASE:-1}"
        perf report -i "$WORK/pg-perf.data" --stdio --no-children --sort comm -g none 2>/dev/null \
            | grep -E '^ +[0-9]' | sed -E 's/[ -]+$//' | head -6 || true
        echo "== perf: PostgreSQL's functions, inclusive (share of all samples)"
        perf report -i "$WORK/pg-perf.data" --stdio --children --comm postgres --sort symbol -g none 2>/dev/null \
            | grep -E '^ +[0-9]' | grep -v '0x0000' | sed -E 's/[ -]+$//' | cut -c1-110 | head -"${PG_PERF_TOP:-40}" || true
    fi
    [ -n "$PERF_PID" ] || return 0
    kill -INT "$PERF_PID"; wait "$PERF_PID" 2>/dev/null || true
    PERF_PID=
    echo "== perf: paymentd's hottest symbols during phase ${PERF_PHASE:-1} (self time)"
    perf report -i "$WORK/perf.data" --stdio --no-children --sort dso,symbol 2>/dev/null >"$WORK/perf-symbols.txt" || true
    grep -E '^ +[0-9]' "$WORK/perf-symbols.txt" | sed -E 's/[ -]+$//' | cut -c1-160 | head -"${PERF_TOP:-40}" || true
    echo "== perf: by shared object"
    perf report -i "$WORK/perf.data" --stdio --no-children --sort dso 2>/dev/null >"$WORK/perf-dso.txt" || true
    grep -E '^ +[0-9]' "$WORK/perf-dso.txt" | sed -E 's/[ -]+$//' | head -10 || true
    if [ -n "${PERF_CALLGRAPH:-}" ]; then
        echo "== perf: paymentd's time by part (bench/perf_parts.py)"
        perf script -i "$WORK/perf.data" 2>/dev/null | python3 "$ROOT/bench/perf_parts.py" || true
    fi
}
perf_start 1
db_stats() {
    psql -qAt "$PGURL/postgres" -c "SELECT xact_commit + xact_rollback, tup_inserted, tup_updated, tup_deleted, blks_hit + blks_read FROM pg_stat_database WHERE datname = 'payments'"
}
table_stats() {
    psql -qAt "$PGURL/payments" -c "SELECT relname, n_tup_ins, n_tup_upd, n_tup_del, n_tup_hot_upd FROM pg_stat_user_tables ORDER BY relname"
}
index_stats() {
    psql -qAt "$PGURL/payments" -c "SELECT relname, indexrelname, idx_scan FROM pg_stat_user_indexes ORDER BY relname, indexrelname"
}
if [ "${PG_STATEMENTS:-0}" = 1 ]; then
    psql -q "$PGURL/payments" -c "CREATE EXTENSION IF NOT EXISTS pg_stat_statements" -c "SELECT pg_stat_statements_reset()" >/dev/null
fi
DB0=$(db_stats); W0=$(wal_stats); table_stats >"$WORK/tables0.txt"; index_stats >"$WORK/indexes0.txt"
children_ticks; L0=$(cat "$WORK/children_ticks.txt")
P0=$(proc_ticks "$PAYMENTD_PID"); G0=$(pg_ticks); T0=$(now_ns)
loadgen --connections "$CONNECTIONS" >"$WORK/phase1.json"
P1=$(proc_ticks "$PAYMENTD_PID"); G1=$(pg_ticks); T1=$(now_ns)
children_ticks; L1=$(cat "$WORK/children_ticks.txt")
sleep 0.6  # pg_stat_database is flushed by backends at most every 500 ms
DB1=$(db_stats); W1=$(wal_stats); table_stats >"$WORK/tables1.txt"; index_stats >"$WORK/indexes1.txt"
if [ "${PG_STATEMENTS:-0}" = 1 ]; then
    echo "== pg_stat_statements: where PostgreSQL spent phase 1 (per flow; top ${PG_STATEMENTS_TOP:-15} by total time)"
    FLOWS_ALL=$(jq -r '.flows_run_total' "$WORK/phase1.json")
    psql -qAt -F ' | ' "$PGURL/payments" -c "SELECT round(total_exec_time::numeric / $FLOWS_ALL, 3) || ' ms', round(calls::numeric / $FLOWS_ALL, 2) || ' calls', round(shared_blks_hit::numeric / greatest(calls, 1), 1) || ' bufs/call', regexp_replace(left(query, 110), '\s+', ' ', 'g') FROM pg_stat_statements WHERE dbid = (SELECT oid FROM pg_database WHERE datname = 'payments') ORDER BY total_exec_time DESC LIMIT ${PG_STATEMENTS_TOP:-15}"
fi
perf_report

# --- phase 2: 70% of that rate (open loop) ----------------------------------------------------
MAX_FLOWS=$(jq -r '.flows_per_second' "$WORK/phase1.json")
RATE70=$(awk -v r="$MAX_FLOWS" 'BEGIN { printf "%.1f", r * 0.7 }')
if [ -n "${PHASE2_RATE:-}" ]; then
    RATE70=$PHASE2_RATE
    echo "== phase 2: loadgen open loop at $RATE70 flows/s (PHASE2_RATE; 70% of phase 1 would be $(awk -v r="$MAX_FLOWS" 'BEGIN { printf "%.1f", r * 0.7 }')), ${WARMUP}s warmup + ${DURATION}s"
else
    echo "== phase 2: loadgen open loop at $RATE70 flows/s (70% of phase 1), ${WARMUP}s warmup + ${DURATION}s"
fi
children_ticks; L2=$(cat "$WORK/children_ticks.txt")
P2=$(proc_ticks "$PAYMENTD_PID"); G2=$(pg_ticks); T2=$(now_ns); DB2=$(db_stats)
SAMPLER_PIDS=()
if [ "${PHASE2_SAMPLE:-0}" = 1 ]; then
    # Every 100 ms: what each active client backend waits on ("CPU" when it waits on nothing).
    printf '%s\n\\watch 0.1\n' "SELECT extract(epoch from clock_timestamp())::numeric(20,3), coalesce(string_agg(w, ','), '') FROM (SELECT coalesce(wait_event_type || ':' || wait_event, 'CPU') w FROM pg_stat_activity WHERE backend_type = 'client backend' AND state = 'active' AND pid <> pg_backend_pid()) s" |
        psql -qAt -F ' ' "$PGURL/postgres" >"$WORK/phase2-waits.txt" 2>/dev/null &
    SAMPLER_PIDS+=($!)
    # Four times a second: the kernel's counters and the CPU ticks of paymentd, PostgreSQL and
    # loadgen (cumulative, differenced in the report).
    while :; do
        lg=$(pgrep -n -x loadgen || true)
        echo "$(date +%s.%N) $(awk '/^(Dirty|Writeback):/ { printf "%s ", $2 }' /proc/meminfo)$(awk '/^(pgpgout|pgpgin) / { printf "%s ", $2 }' /proc/vmstat)$(awk '/^ctxt / { printf "%s ", $2 } /^cpu / { printf "%s %s %s %s %s ", $2 + $3, $4, $5, $6, $9 }' /proc/stat)$(proc_ticks "$PAYMENTD_PID") $(pg_ticks) $([ -n "$lg" ] && proc_ticks "$lg" || echo 0)"
        sleep 0.25
    done >"$WORK/phase2-system.txt" &
    SAMPLER_PIDS+=($!)
fi
perf_start 2
loadgen --rate "$RATE70" --max-in-flight 256 >"$WORK/phase2.json"
P3=$(proc_ticks "$PAYMENTD_PID"); G3=$(pg_ticks); T3=$(now_ns)
for pid in "${SAMPLER_PIDS[@]}"; do kill "$pid" 2>/dev/null; wait "$pid" 2>/dev/null || true; done
perf_report  # after the phase's CPU and time are read: the report takes seconds
children_ticks; L3=$(cat "$WORK/children_ticks.txt")
sleep 0.6  # as after phase 1: let the backends flush pg_stat_database
DB3=$(db_stats)
RSS_KB=$(awk '/^VmHWM/ { print $2 }' "/proc/$PAYMENTD_PID/status")

# --- optional: the confirm latency at other shares of phase 1's rate (CURVE) ------------------
# Each share runs as phase 2 does (open loop, the same warmup and duration); the report gives,
# per rate, confirm's percentiles with what the machine spent, so a deployer reads off the rate
# up to which a latency target holds. A row of CURVE_ROWS: share rate paymentd-ticks
# postgres-ticks loadgen-ticks wall-ns transactions.
CURVE_ROWS=()
for share in $CURVE_SHARES; do
    rate=$(awk -v r="$MAX_FLOWS" -v s="$share" 'BEGIN { printf "%.1f", r * s }')
    echo "== curve: loadgen open loop at $rate flows/s ($share of phase 1), ${WARMUP}s warmup + ${DURATION}s"
    # The previous rate's writes are still being written back: as before pgbench, out of the way.
    [ "${NO_SETTLE:-0}" = 1 ] || settle_disk
    children_ticks; La=$(cat "$WORK/children_ticks.txt")
    Pa=$(proc_ticks "$PAYMENTD_PID"); Ga=$(pg_ticks); Ta=$(now_ns); Xa=$(db_stats | cut -d'|' -f1)
    loadgen --rate "$rate" --max-in-flight 256 >"$WORK/curve-$share.json"
    Pb=$(proc_ticks "$PAYMENTD_PID"); Gb=$(pg_ticks); Tb=$(now_ns)
    children_ticks; Lb=$(cat "$WORK/children_ticks.txt")
    sleep 0.6  # as after phase 1: let the backends flush pg_stat_database
    Xb=$(db_stats | cut -d'|' -f1)
    CURVE_ROWS+=("$share $rate $((Pb - Pa)) $((Gb - Ga)) $((Lb - La)) $((Tb - Ta)) $((Xb - Xa))")
done

# --- pgbench again, with paymentd stopped ---------------------------------------------------
# The reference is measured on both sides of the payment phases: a VM whose speed drifts during
# the run (3,400 to 4,300 tps from one run to the next on one of the bench machines) would
# otherwise move the ratio by the drift. The ratio uses the mean; a gap over 15 % is flagged.
kill "$PAYMENTD_PID" 2>/dev/null; wait "$PAYMENTD_PID" 2>/dev/null || true; PAYMENTD_PID=
[ "${NO_SETTLE:-0}" = 1 ] || settle_disk
echo "== pgbench -N -c $PGBENCH_CLIENTS -j 2 -T $DURATION (again, after the payment phases)"
pgbench -N -c "$PGBENCH_CLIENTS" -j 2 -T "$DURATION" "$PGURL/pgbench" >"$WORK/pgbench-after.log" 2>&1
PGBENCH_TPS_AFTER=$(grep -E '^tps = ' "$WORK/pgbench-after.log" | tail -1 | awk '{ printf "%.0f", $3 }')
grep -E '^(latency average|tps)' "$WORK/pgbench-after.log"

# --- report -----------------------------------------------------------------------------------
for p in 1 2; do
    echo
    echo "-- phase $p --"
    jq -r '
      "flows ok \(.flows_ok), failed \(.flows_failed), \(.flows_per_second | floor)/s; confirmed \(.confirmed) (\(.confirmed_per_second | floor)/s); max send lag \(.max_send_lag_ms | floor) ms",
      (.steps[] | "  \(.step | . + "               " | .[0:15]) n=\(.count)  p50 \(.p50_ms) ms  p90 \(.p90_ms)  p99 \(.p99_ms)  p99.9 \(.p999_ms)  max \(.max_ms)"),
      "  errors: \(.error_count) \(.errors)",
      "  confirm p99 by second sent (ms): \([(.timeline // [])[] | .p99_ms | floor] | map(tostring) | join(" "))"' "$WORK/phase$p.json"
done

python3 - "$WORK/phase1.json" "$WORK/phase2.json" <<EOF
import json, sys
p1 = json.load(open(sys.argv[1])); p2 = json.load(open(sys.argv[2]))
tick = $TICK
wall = ($T1 - $T0) / 1e9
pay = ($P1 - $P0) / tick; pg = ($G1 - $G0) / tick; lg = ($L1 - $L0) / tick
tps_before = float("$PGBENCH_TPS"); tps_after = float("$PGBENCH_TPS_AFTER")
tps = (tps_before + tps_after) / 2
cps = p1["confirmed_per_second"]
def step(p, name): return next(s for s in p["steps"] if s["step"] == name)
p99_70 = step(p2, "confirm")["p99_ms"]
rss_mb = $RSS_KB / 1024
def verdict(ok): return "PASS" if ok else "FAIL"
print()
print("== summary")
drift = abs(tps_after - tps_before) / max(1.0, min(tps_before, tps_after))
print(f"pgbench -N tps:                     {tps:.0f} (before {tps_before:.0f}, after {tps_after:.0f})"
      + (f"   the machine's speed moved {100 * drift:.0f} % during the run: compare with care" if drift > 0.15 else ""))
print(f"confirmed payments/s (phase 1):     {cps:.1f}")
print(f"ratio payments/s : pgbench tps:     {cps / tps:.3f}   target >= 0.25  {verdict(cps >= 0.25 * tps)}")
print(f"p99 confirm at max (phase 1):       {step(p1, 'confirm')['p99_ms']:.2f} ms")
print(f"p99 confirm at 70% ({p2['meta']['target_rate']:.0f} flows/s):   {p99_70:.2f} ms   target < 20 ms  {verdict(p99_70 < 20)}")
print(f"CPU in phase 1 ({wall:.1f} s wall, {wall * $(nproc):.1f} CPU-s available):")
print(f"  paymentd {pay:.1f} s ({100 * pay / wall:.0f}% of one core), postgres {pg:.1f} s ({100 * pg / wall:.0f}%), loadgen {lg:.1f} s ({100 * lg / wall:.0f}%)")
if pay + pg > 0:
    print(f"  split paymentd : postgres = {100 * pay / (pay + pg):.0f}% : {100 * pg / (pay + pg):.0f}%")
# Phase 2 as well: at a lower rate, fewer calls share a batch, so a flow costs more than at the
# most, and the node is busier than the rate's share of the most suggests.
wall2 = ($T3 - $T2) / 1e9
pay2 = ($P3 - $P2) / tick; pg2 = ($G3 - $G2) / tick; lg2 = ($L3 - $L2) / tick
flows2 = max(1, p2["flows_run_total"])
busy2 = (pay2 + pg2 + lg2) / (wall2 * $(nproc))
txn2 = (int("$DB3".split("|")[0]) - int("$DB2".split("|")[0])) / flows2
print(f"CPU in phase 2 ({wall2:.1f} s wall): paymentd {pay2:.1f} s, postgres {pg2:.1f} s, loadgen {lg2:.1f} s: {100 * busy2:.0f}% of the machine")
print(f"  per flow: paymentd {1000 * pay2 / flows2:.3f} ms, postgres {1000 * pg2 / flows2:.3f} ms, {txn2:.1f} database transactions ({flows2} flows)")
print(f"paymentd RSS high-water mark:       {rss_mb:.0f} MB   target < 300 MB  {verdict(rss_mb < 300)}")
print(f"paymentd dev ready:                 $DEV_READY_MS ms   target < 1000 ms  {verdict($DEV_READY_MS < 1000)}")
print(f"paymentd serve ready:               $SERVE_READY_MS ms   target < 2000 ms  {verdict($SERVE_READY_MS < 2000)}")
db0 = [int(x) for x in "$DB0".split("|")]; db1 = [int(x) for x in "$DB1".split("|")]
d = [b - a for a, b in zip(db0, db1)]
allflows = max(1, p1["flows_run_total"])  # warmup included, like the database counters
print(f"database work per flow (phase 1, {allflows} flows): {d[0] / allflows:.1f} transactions, {d[1] / allflows:.1f} rows inserted, {d[2] / allflows:.1f} updated, {d[3] / allflows:.1f} deleted, {d[4] / allflows:.0f} buffer accesses")
pgb_txns = tps_before * $DURATION  # the CPU and WAL counters were read around the first run
pgb_pg = ($PGB_G1 - $PGB_G0) / tick
pw0 = "$PGB_W0".split("|"); pw1 = "$PGB_W1".split("|")
w0 = "$W0".split("|"); w1 = "$W1".split("|")
print(f"postgres CPU per pgbench txn:       {1000 * pgb_pg / max(1, pgb_txns):.3f} ms; per payment flow: {1000 * pg / allflows:.3f} ms; paymentd CPU per flow: {1000 * pay / allflows:.3f} ms")
print(f"WAL fsyncs per pgbench txn:         {(int(pw1[0]) - int(pw0[0])) / max(1, pgb_txns):.2f}; per flow: {(int(w1[0]) - int(w0[0])) / allflows:.2f}   WAL bytes per pgbench txn: {(int(pw1[1]) - int(pw0[1])) / max(1, pgb_txns):.0f}; per flow: {(int(w1[1]) - int(w0[1])) / allflows:.0f}")
def tables(path):
    out = {}
    for line in open(path):
        name, i, u, dl, hot = line.strip().split("|")
        out[name] = (int(i), int(u), int(dl), int(hot))
    return out
t0 = tables("$WORK/tables0.txt"); t1 = tables("$WORK/tables1.txt")
rows = []
written = set()
for name, (i, u, dl, hot) in sorted(t1.items()):
    a = t0.get(name, (0, 0, 0, 0))
    di, du, dd, dh = i - a[0], u - a[1], dl - a[2], hot - a[3]
    if di or du or dd:
        written.add(name)
        rows.append(f"{name} +{di / allflows:.1f}/~{du / allflows:.1f} ({dh / allflows:.1f} HOT)/-{dd / allflows:.1f}")
print("rows per flow by table (inserted/updated (of which HOT)/deleted): " + ", ".join(rows))
def indexes(path):
    out = {}
    for line in open(path):
        table, index, scans = line.strip().split("|")
        out[(table, index)] = int(scans)
    return out
i0 = indexes("$WORK/indexes0.txt"); i1 = indexes("$WORK/indexes1.txt")
unread = [f"{t}.{ix}" for (t, ix), n in sorted(i1.items()) if t in written and n == i0.get((t, ix), 0)]
print("indexes of written tables not read in phase 1 (maintained, never scanned): " + (", ".join(unread) or "none"))
if "${PHASE2_SAMPLE:-0}" == "1":
    # Second k of the confirm timeline starts k seconds after the warmup ends.
    start = $T2 / 1e9 + $WARMUP
    waits = {}
    for line in open("$WORK/phase2-waits.txt"):
        parts = line.split()
        if not parts:
            continue
        k = int(float(parts[0]) - start)
        slot = waits.setdefault(k, [0, {}])
        slot[0] += 1
        for w in (parts[1].split(",") if len(parts) > 1 else []):
            slot[1][w] = slot[1].get(w, 0) + 1
    # Fields: time, Dirty, Writeback, pgpgin, pgpgout, then /proc/stat's CPU ticks (user + nice,
    # system, idle, iowait, steal) and context switches, then the CPU ticks of paymentd,
    # PostgreSQL and loadgen.
    system = []
    for line in open("$WORK/phase2-system.txt"):
        f = line.split()
        if len(f) == 14:
            system.append([float(f[0])] + [int(x) for x in f[1:]])
    def at(t):
        # The last sample taken at or before t (the first one if none).
        best = system[0]
        for row in system:
            if row[0] <= t:
                best = row
        return best
    timeline = p2.get("timeline") or []
    print()
    print("== phase 2 by second (PHASE2_SAMPLE): confirm p99, disk writes (kB/s), dirty / writeback (kB), context switches/s, CPU user/system/idle/iowait %, CPU of paymentd/postgres/loadgen (% of one core), mean active backends by wait")
    for k, row in enumerate(timeline):
        if not system:
            break
        a, b = at(start + k), at(start + k + 1)
        dt = max(1e-3, b[0] - a[0])
        dticks = [b[i] - a[i] for i in range(5, 10)]  # user, system, idle, iowait, steal
        total = max(1, sum(dticks))
        n, counts = waits.get(k, [0, {}])
        top = sorted(counts.items(), key=lambda kv: -kv[1])[:4]
        top_s = ", ".join(f"{w} {c / max(1, n):.1f}" for w, c in top)
        if b[0] <= a[0]:
            break  # the sampler had stopped: no second sample for this second
        # A process that exited (loadgen at the end) reads as 0 ticks: "-".
        procs = "/".join(f"{100 * (b[i] - a[i]) / tick / dt:.0f}" if b[i] >= a[i] else "-" for i in (11, 12, 13))
        print(f"  {k:3d}: p99 {row['p99_ms']:7.1f} ms  out {(b[4] - a[4]) / dt:8.0f}  dirty {b[1]:7d} wb {b[2]:6d}  cs {(b[10] - a[10]) / dt:7.0f}  cpu {100 * dticks[0] / total:3.0f}/{100 * dticks[1] / total:3.0f}/{100 * dticks[2] / total:3.0f}/{100 * dticks[3] / total:3.0f}  paymentd/postgres/loadgen {procs} %  waits ({n} samples): {top_s}")
errs = p1["error_count"] + p2["error_count"]
curve = [r.split() for r in """$(printf '%s\n' "${CURVE_ROWS[@]}")""".splitlines() if r.strip()]
if curve:
    print()
    print(f"== confirm latency by rate (CURVE; phase 1's most {cps:.1f} confirmed/s)")
    print("  share   flows/s  confirm p50 / p90 / p99 (ms)   busy  per flow: paymentd / postgres CPU, transactions  errors")
    for share, rate, pay_t, pg_t, lg_t, wall_ns, txns in curve:
        c = json.load(open(f"$WORK/curve-{share}.json"))
        s = step(c, "confirm")
        wall_c = int(wall_ns) / 1e9
        flows_c = max(1, c["flows_run_total"])
        busy_c = (int(pay_t) + int(pg_t) + int(lg_t)) / tick / (wall_c * $(nproc))
        errs += c["error_count"]
        seconds = " ".join(str(int(t["p99_ms"])) for t in c.get("timeline") or [])
        print(f"  {float(share):5.2f}  {c['flows_per_second']:8.1f}  {s['p50_ms']:7.2f} / {s['p90_ms']:7.2f} / {s['p99_ms']:7.2f}     {100 * busy_c:3.0f} %"
              f"  {1000 * int(pay_t) / tick / flows_c:.3f} / {1000 * int(pg_t) / tick / flows_c:.3f} ms, {int(txns) / flows_c:5.1f}"
              f"           {c['error_count']}   p99 by second: {seconds}")
    # Listed rate by rate rather than as one "up to": a slow second can fail a low rate and
    # spare a higher one, and the per-second p99s say which it was.
    met = [f"{c['flows_per_second']:.0f}" + ("" if step(c, "confirm")["p99_ms"] < 20 else " (not met)")
           for c in (json.load(open(f"$WORK/curve-{r[0]}.json")) for r in curve)]
    print("  confirm p99 < 20 ms at: " + ", ".join(met) + " flows/s")
print(f"errors (all phases):                {errs}   target 0  {verdict(errs == 0)}")
EOF
