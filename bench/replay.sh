#!/usr/bin/env bash
# Replays the store's statements from a bench run into a fresh database and reports how much
# CPU one PostgreSQL backend spends executing them: a repeatable figure for comparing two
# versions of the store's SQL (a migration, a function body, an index) on the same workload,
# without the run-to-run spread of a whole bench run. See docs/performance.md ("bench/replay.sh").
#
#   KEEP=1 PG_LOG_STATEMENTS=1 bench/run.sh --duration 3 --no-build   # prints the work directory
#   bench/replay.sh [--lane commits|async|both] [--repeat N] [--instructions STATEMENTS] WORKDIR [VARIANT.sql ...]
#
# WORKDIR is the kept work directory (its pgrun/postgres.log holds every statement paymentd
# executed, with parameters). The store's writes are replayed in log order, parameters
# substituted, in one session with synchronous_commit off (the figure is CPU, not WAL
# flushes), each as its own transaction: `--lane commits` the commits (store_commit_framed,
# store_commit_framed_batch, and an older version's store_commit, store_commit_batch), `--lane
# async` the asynchronous lane (async_call, async_batch: idempotency keys and velocity
# counters), `both` (the default) the two, which are most of what PostgreSQL spends on a flow.
# Their parameters are typed in the statement (`$1::jsonb`, `$2::text[]`), so the logged
# text replays as it ran; a statement that fails stops the replay. The baseline is the database the
# migrations give; each VARIANT.sql is applied after them for a row of its own. Every row is
# the median of --repeat runs (default 3), each on a new database; the databases take turns,
# one run each per round.
# --instructions STATEMENTS counts instructions instead of timing: the first STATEMENTS
# statements run once per database in a single-user backend under valgrind's callgrind, and
# each row gives the instructions of executing them (PortalRun, inclusive: the functions'
# work, without reading and planning the replay's literal text, which the node binds as
# parameters instead) per call, and of the whole backend per call. Instruction counts do not
# move with the machine's load, so two versions a few per cent apart can be told apart.
# Environment: PG_BIN (default /usr/lib/postgresql/15/bin).
set -euo pipefail

LANE=both
REPEAT=3
INSTRUCTIONS=0
while [ $# -gt 0 ]; do
    case "$1" in
        --lane) LANE=$2; shift 2 ;;
        --repeat) REPEAT=$2; shift 2 ;;
        --instructions) INSTRUCTIONS=$2; shift 2 ;;
        -h|--help) sed -n '2,/^set -euo/p' "$0" | sed '$d'; exit 0 ;;
        -*) echo "unknown argument: $1" >&2; exit 2 ;;
        *) break ;;
    esac
done
case "$LANE" in commits|async|both) ;; *) echo "--lane must be commits, async or both" >&2; exit 2 ;; esac
case "$INSTRUCTIONS" in ''|*[!0-9]*) echo "--instructions takes a number of statements" >&2; exit 2 ;; esac
[ $# -ge 1 ] || { echo "usage: bench/replay.sh [--lane commits|async|both] [--repeat N] [--instructions STATEMENTS] WORKDIR [VARIANT.sql ...]" >&2; exit 2; }
SRC=$1; shift
LOG=$SRC/pgrun/postgres.log
[ -f "$LOG" ] || { echo "no statement log at $LOG (run bench/run.sh with KEEP=1 PG_LOG_STATEMENTS=1)" >&2; exit 1; }
for v in "$@"; do [ -f "$v" ] || { echo "no such variant: $v" >&2; exit 1; }; done

ROOT=$(cd "$(dirname "$0")/.." && pwd)
# shellcheck source=bench/common.sh
. "$ROOT/bench/common.sh"
PG_BIN=${PG_BIN:-/usr/lib/postgresql/15/bin}
WORK=$(mktemp -d /tmp/payreplay.XXXXXX)
chmod 755 "$WORK"
PGDATA=$WORK/pg
cleanup() {
    set +e
    [ -f "$PGDATA/postmaster.pid" ] && as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -m immediate stop >/dev/null 2>&1
    if [ "${KEEP:-0}" = 1 ]; then echo "work directory kept: $WORK"; else rm -rf "$WORK"; fi
}
trap cleanup EXIT

# --- the statements ---------------------------------------------------------------------------
python3 - "$LOG" "$LANE" "$WORK/replay.sql" <<'EOF'
import json, re, sys
log, lane, out = sys.argv[1], sys.argv[2], sys.argv[3]
lanes = {
    "commits": ("store_commit(", "store_commit_batch(", "store_commit_framed(", "store_commit_framed_batch("),
    "async": ("async_call(", "async_batch("),
}
lanes["both"] = lanes["commits"] + lanes["async"]
execute = re.compile(r"^\S+ \S+ \S+ \[\d+\] LOG:  execute [^:]+: (.*)$")
detail = re.compile(r"^\S+ \S+ \S+ \[\d+\] DETAIL:  parameters: (.*)$")
param = re.compile(r"\$(\d+) = (NULL|'(?:[^']|'')*')")
lines = open(log, encoding="utf-8", errors="replace").read().split("\n")
kept = calls = 0
each = []
with open(out, "w") as f:
    for i, line in enumerate(lines):
        m = execute.match(line)
        if not m:
            continue
        query = m.group(1)
        if not any(k in query for k in lanes[lane]):
            continue
        d = detail.match(lines[i + 1]) if i + 1 < len(lines) else None
        values = dict((int(n), v) for n, v in param.findall(d.group(1))) if d else {}
        # Highest number first, so that $1 does not eat the start of $12.
        for n in sorted(values, reverse=True):
            query = query.replace("$%d" % n, values[n])
        if re.search(r"\$\d", query):
            sys.exit("statement %d of the log has a parameter the log did not give: %s" % (i + 1, query[:120]))
        f.write(query.rstrip(";") + ";\n")
        kept += 1
        # A framed batch carries one body count per transaction in $3 (an int[]); the others a
        # JSON array of calls (store transactions, key or velocity calls) in $1.
        if "store_commit_framed_batch(" in query:
            n = len(values[3].strip("'{}").split(","))
        elif "_batch(" in query:
            n = len(json.loads(values[1][1:-1].replace("''", "'")))
        else:
            n = 1
        calls += n
        each.append(n)
if kept == 0:
    sys.exit("no statements of lane %s in %s" % (lane, log))
open(out + ".each", "w").write("".join("%d\n" % n for n in each))
print("== %d statements carrying %d calls (lane %s) from %s" % (kept, calls, lane, log))
EOF

# Applies the migrations, then the variant (if any), to the database at URL $1.
load_schema() {
    local m
    for m in "$ROOT"/system/store/migrations/*.sql; do
        psql -qX -v ON_ERROR_STOP=1 "$1" -f "$m" >/dev/null
    done
    if [ -n "$2" ]; then psql -qX -v ON_ERROR_STOP=1 "$1" -f "$2" >/dev/null; fi
}

# --- instructions: each database in a single-user backend under callgrind --------------------
if [ "$INSTRUCTIONS" -gt 0 ]; then
    command -v valgrind >/dev/null || { echo "--instructions needs valgrind (and callgrind_annotate)" >&2; exit 1; }
    # The single-user backend ends a statement at a semicolon followed by an empty line (-j).
    head -n "$INSTRUCTIONS" "$WORK/replay.sql" | awk '{ print; print "" }' >"$WORK/single.sql"
    CALLS=$(head -n "$INSTRUCTIONS" "$WORK/replay.sql.each" | awk '{ s += $1 } END { print s }')
    STATEMENTS=$(grep -c . "$WORK/single.sql")
    echo "== instructions of the first $STATEMENTS statements ($CALLS calls), one single-user run per database"
    printf '%-40s %18s %18s\n' "database" "executing per call" "backend per call"
    VARIANTS=("" "$@")
    for i in "${!VARIANTS[@]}"; do
        D=$WORK/db$i
        mkdir -p "$D.run"
        [ "$(id -u)" = 0 ] && chown postgres "$WORK" "$D.run"
        as_pg "$PG_BIN/initdb" -D "$D" -U postgres --auth=trust -E UTF8 >"$WORK/initdb$i.log" 2>&1
        PORT=$(free_port)
        as_pg "$PG_BIN/pg_ctl" -D "$D" -l "$D.run/postgres.log" -w \
            -o "-p $PORT -k $D.run -c listen_addresses=127.0.0.1" start >/dev/null
        psql -qX "postgres://postgres@127.0.0.1:$PORT/postgres" -c "CREATE DATABASE replay" >/dev/null
        load_schema "postgres://postgres@127.0.0.1:$PORT/replay" "${VARIANTS[i]}"
        as_pg "$PG_BIN/pg_ctl" -D "$D" -w stop >/dev/null
        as_pg valgrind --tool=callgrind --callgrind-out-file="$WORK/callgrind.$i" \
            "$PG_BIN/postgres" --single -D "$D" -j -c synchronous_commit=off replay \
            <"$WORK/single.sql" >"$WORK/single$i.out" 2>"$WORK/valgrind$i.log"
        if grep -q "ERROR:" "$WORK/single$i.out"; then
            echo "the replay failed in ${VARIANTS[i]:-the baseline} (the log and the migrations disagree?):" >&2
            grep -m 3 "ERROR:" "$WORK/single$i.out" >&2
            exit 1
        fi
        total=$(sed -n 's/^summary: //p' "$WORK/callgrind.$i")
        executing=$(callgrind_annotate --inclusive=yes "$WORK/callgrind.$i" 2>/dev/null \
            | awk '$NF ~ /postgres\]$/ && $(NF-1) == "???:PortalRun" && !found { gsub(",", "", $1); print $1; found = 1 }')
        [ -n "$executing" ] || { echo "no PortalRun in the profile of ${VARIANTS[i]:-the baseline}" >&2; exit 1; }
        printf '%-40s %18s %18s\n' "${VARIANTS[i]:-migrations (baseline)}" \
            "$(awk -v x="$executing" -v n="$CALLS" 'BEGIN { printf "%.0f", x / n }')" \
            "$(awk -v x="$total" -v n="$CALLS" 'BEGIN { printf "%.0f", x / n }')"
    done
    exit 0
fi

# --- a throwaway cluster ----------------------------------------------------------------------
PGPORT=$(free_port)
mkdir -p "$PGDATA" "$WORK/run"
[ "$(id -u)" = 0 ] && chown postgres "$PGDATA" "$WORK/run"
as_pg "$PG_BIN/initdb" -D "$PGDATA" -U postgres --auth=trust -E UTF8 >"$WORK/initdb.log" 2>&1
as_pg "$PG_BIN/pg_ctl" -D "$PGDATA" -l "$WORK/run/postgres.log" -w \
    -o "-p $PGPORT -k $WORK/run -c listen_addresses=127.0.0.1 -c shared_buffers=256MB" start >/dev/null
URL="postgres://postgres@127.0.0.1:$PGPORT"

# Prints the CPU seconds (user + system) the backend spent on the statements, on a new database
# with the migrations and the variant (if any).
replay_once() {
    local variant=$1
    psql -qX "$URL/postgres" -c "SET client_min_messages = warning" -c "DROP DATABASE IF EXISTS replay" \
        -c "CREATE DATABASE replay" >/dev/null
    load_schema "$URL/replay" "$variant"
    {
        echo 'SET synchronous_commit = off;'
        echo 'SELECT pg_backend_pid() AS pid \gset'
        echo '\setenv REPLAY_PID :pid'
        echo "\\! cat /proc/\$REPLAY_PID/stat > $WORK/stat0"
        cat "$WORK/replay.sql"
        echo "\\! cat /proc/\$REPLAY_PID/stat > $WORK/stat1"
    } | psql -qX -v ON_ERROR_STOP=1 "$URL/replay" >/dev/null 2>"$WORK/replay.err" || {
        echo "the replay failed (the log and the migrations disagree?):" >&2
        head -5 "$WORK/replay.err" >&2
        exit 1
    }
    python3 - "$WORK/stat0" "$WORK/stat1" <<'EOF'
import os, sys
a, b = (open(p).read().rsplit(")", 1)[1].split() for p in sys.argv[1:3])
tick = os.sysconf("SC_CLK_TCK")
print("%.2f" % ((int(b[11]) + int(b[12]) - int(a[11]) - int(a[12])) / tick))
EOF
}

CALLS=$(awk '{ s += $1 } END { print s }' "$WORK/replay.sql.each")
printf '%-40s %10s %10s %13s %s\n' "database" "CPU (min)" "(median)" "per call" "runs"
# The databases take turns, one run each per round, so that a machine getting busier or quieter
# during the replay moves every row alike instead of favouring the rows measured last.
VARIANTS=("" "$@")
declare -a RUNS
for _ in $(seq 1 "$REPEAT"); do
    for i in "${!VARIANTS[@]}"; do
        RUNS[i]="${RUNS[i]:-} $(replay_once "${VARIANTS[i]}")"
    done
done
for i in "${!VARIANTS[@]}"; do
    read -r -a runs <<<"${RUNS[i]}"
    read -r least median < <(printf '%s\n' "${runs[@]}" | sort -n | awk '{ v[NR] = $1 } END { print v[1], v[int((NR + 1) / 2)] }')
    printf '%-40s %8s s %8s s %10.1f µs %s\n' "${VARIANTS[i]:-migrations (baseline)}" "$least" "$median" \
        "$(awk -v m="$least" -v n="$CALLS" 'BEGIN { print m * 1000000 / n }')" "${runs[*]}"
done
