#!/usr/bin/env python3
"""Writes a statement log of fraud velocity calls for bench/replay.sh.

    bench/velocity_log.py OUT_DIR {bench,busy} ATTEMPTS STEP_MS
    bench/replay.sh --lane async --instructions 600 OUT_DIR [variant.sql ...]

A logged bench run (bench/run.sh with PG_LOG_STATEMENTS=1) scores payments the way loadgen
makes them: every card new, no IP address, no customer. Production traffic is not all like
that: a merchant whose server confirms payments sends one IP address for all of them, and
cards and customers come back. This writes the asynchronous lane's calls for either kind, in
the log format replay.sh reads (OUT_DIR/pgrun/postgres.log), so that a change to the velocity
functions can be counted on both:

  bench  every attempt on a new card, no IP address, no customer (what loadgen sends);
  busy   20 cards, 2 IP addresses and 50 customers shared by all attempts.

Each attempt is an observation followed by its outcome (85 % approved, 10 % declined, 5 %
blocked), STEP_MS after the previous one, eight calls to a batch. With busy and a STEP_MS of
30000, 2,400 attempts span 20 hours: each IP address is past the cap of 1,000 attempts a day
and each key has a day's ten-minute buckets, the steady state of a busy day.
The sequence is the same on every run (a fixed seed).
"""
import json
import os
import random
import sys


def main() -> None:
    if len(sys.argv) != 5 or sys.argv[2] not in ("bench", "busy"):
        sys.exit(__doc__)
    out, mode = sys.argv[1], sys.argv[2]
    attempts, step = int(sys.argv[3]), int(sys.argv[4])
    os.makedirs(os.path.join(out, "pgrun"), exist_ok=True)
    rng = random.Random(7)
    calls = []
    t = 1_800_000_000_000
    for i in range(attempts):
        t += step
        if mode == "bench":
            card, ip, customer = "%016x" % rng.getrandbits(64), None, None
        else:
            card = "fp_%d" % rng.randrange(20)
            ip = "10.0.0.%d" % rng.randrange(2)
            customer = "cus_%d" % rng.randrange(50)
        attempt = "pa_%d" % i
        calls.append({"op": "observe", "attempt_id": attempt, "account": "acct_1", "now": t, "card": card,
                      "ip": ip, "customer": customer, "day_ms": 86_400_000, "hour_ms": 3_600_000, "cap": 1000,
                      "writer": 1})
        x = rng.random()
        outcome = "approved" if x < 0.85 else ("declined" if x < 0.95 else "blocked")
        calls.append({"op": "outcome", "attempt_id": attempt, "outcome": outcome, "writer": 1})
    with open(os.path.join(out, "pgrun", "postgres.log"), "w") as f:
        for k in range(0, len(calls), 8):
            batch = json.dumps(calls[k:k + 8], separators=(",", ":")).replace("'", "''")
            f.write("2026-12-08 00:00:00.000 UTC [1] LOG:  execute s: SELECT async_batch($1::jsonb)\n")
            f.write("2026-12-08 00:00:00.000 UTC [1] DETAIL:  parameters: $1 = '%s'\n" % batch)
    print("%d attempts (%s) in %s" % (attempts, mode, os.path.join(out, "pgrun", "postgres.log")))


if __name__ == "__main__":
    main()
