//! Velocity end to end: the card-testing scenario on a deterministic clock, retries,
//! and the PostgreSQL store checked against the memory store on the same random sequence.

use pay_core::{Currency, Entropy, Env, Money, SeededEntropy, Timestamp};
use pay_fraud::pg::PgVelocityStore;
use pay_fraud::velocity::DAY_MS;
use pay_fraud::{
    Action, AttemptOutcome, FraudEngine, MemoryLists, MemoryVelocityStore, Observation, PaymentContext, RuleSet,
    VelocityStore,
};
use pay_store::postgres::PgBackend;
use pay_store::testing::TestDatabase;
use std::time::Duration;

fn ctx(env: &Env, attempt: &str, card: &str) -> PaymentContext {
    let mut c = PaymentContext::new(attempt, "acct_1", Money::new(1_000, Currency::USD), env.now());
    c.card_fingerprint = Some(card.into());
    c.card_bin = Some("424242".into());
    c.card_last4 = Some("4242".into());
    c.ip = "192.0.2.1".parse().ok();
    c
}

#[tokio::test]
async fn ten_attempts_in_an_hour_trip_the_rule_and_the_eleventh_across_the_boundary_does_not() {
    let (env, clock) = Env::deterministic("fraud", 1, Timestamp::from_secs(1_800_000_000));
    let t0 = env.now();
    let engine = FraudEngine::builtin();
    let store = MemoryVelocityStore::default();
    let lists = MemoryLists::new();
    let mut rules = RuleSet::empty();
    rules
        .add("velocity", "Block if :card_attempts_1h: >= 10", &lists)
        .unwrap();
    let run = |id: &str, card: &str| {
        let c = ctx(&env, id, card);
        let engine = &engine;
        let store = &store;
        let rules = &rules;
        let lists = &lists;
        async move { engine.assess(store, &c, rules, lists).await.unwrap() }
    };
    // Nine attempts in the first nine seconds (card A), and the same on card B.
    for i in 1..=9 {
        for card in ["fp_a", "fp_b"] {
            let a = run(&format!("pa_{card}_{i}"), card).await;
            assert_eq!(a.outcome.action, Action::Allow, "attempt {i} on {card}");
            assert_eq!(a.velocity.card_attempts_1h, Some(i));
        }
        clock.advance(Duration::from_secs(1));
    }
    // A retried attempt is not counted twice.
    let a = run("pa_fp_a_9", "fp_a").await;
    assert_eq!(a.velocity.card_attempts_1h, Some(9));
    assert_eq!(a.outcome.action, Action::Allow);
    // The 10th within the hour trips the rule.
    clock.set(t0.plus(Duration::from_secs(59 * 60)));
    for card in ["fp_a", "fp_b"] {
        let a = run(&format!("pa_{card}_10"), card).await;
        assert_eq!(a.velocity.card_attempts_1h, Some(10));
        assert_eq!(a.outcome.action, Action::Block);
        assert_eq!(a.outcome.rule.unwrap().id, "velocity");
    }
    // Card A: one millisecond before the 9th attempt (at 8 s) leaves the window, it still counts.
    clock.set(t0.plus(Duration::from_secs(3600 + 8)).minus(Duration::from_millis(1)));
    let a = run("pa_fp_a_11", "fp_a").await;
    assert_eq!(a.velocity.card_attempts_1h, Some(3)); // attempts at 8 s, 59 min, and this one
    assert_eq!(a.outcome.action, Action::Allow);
    // Card B: the 11th exactly one hour after the 9th attempt: the first nine are outside
    // (now − 1 h < t is strict), so only the 10th and this one count.
    clock.set(t0.plus(Duration::from_secs(3600 + 8)));
    let a = run("pa_fp_b_11", "fp_b").await;
    assert_eq!(a.velocity.card_attempts_1h, Some(2));
    assert_eq!(a.velocity.card_attempts_24h, Some(11));
    assert_eq!(a.outcome.action, Action::Allow);
}

#[tokio::test]
async fn within_the_hour_the_eleventh_trips_a_greater_than_ten_rule() {
    let (env, clock) = Env::deterministic("fraud", 2, Timestamp::from_secs(1_800_000_000));
    let engine = FraudEngine::builtin();
    let store = MemoryVelocityStore::default();
    let lists = MemoryLists::new();
    let mut rules = RuleSet::empty();
    rules
        .add("velocity", "Block if :card_attempts_1h: > 10", &lists)
        .unwrap();
    for i in 1..=11u32 {
        let c = ctx(&env, &format!("pa_{i}"), "fp");
        let a = engine.assess(&store, &c, &rules, &lists).await.unwrap();
        let expect = if i <= 10 { Action::Allow } else { Action::Block };
        assert_eq!(a.outcome.action, expect, "attempt {i}");
        clock.advance(Duration::from_secs(5 * 60));
    }
}

/// Steps between attempts of [`script`]: ties, neighbours, and the lengths of the buckets
/// (ten minutes) and windows (an hour, a day) that PostgreSQL counts in, with their neighbours.
const STEPS: &[i64] = &[
    0, 1, 999, 60_000, 599_999, 600_000, 600_001, 3_599_999, 3_600_000, 7_200_000, 43_200_000,
];

/// A deterministic random walk of observations, retries and outcomes.
fn script(seed: u64, n: usize) -> Vec<(i64, Observation, Option<AttemptOutcome>)> {
    let e = SeededEntropy::new(seed, "velocity-script");
    let mut t = 1_800_000_000_000i64;
    let mut out: Vec<(i64, Observation, Option<AttemptOutcome>)> = vec![];
    for i in 0..n {
        t += STEPS[e.below(STEPS.len() as u64) as usize];
        let pick = |opts: &[&str]| -> Option<String> {
            let k = e.below(opts.len() as u64 + 1) as usize;
            opts.get(k).map(|s| (*s).to_owned())
        };
        let obs = if !out.is_empty() && e.below(8) == 0 {
            // Retry an earlier attempt with the same content.
            out[e.below(out.len() as u64) as usize].1.clone()
        } else {
            Observation {
                attempt_id: format!("pa_{i}"),
                account: if e.below(10) == 0 {
                    "acct_2".into()
                } else {
                    "acct_1".into()
                },
                card: pick(&["fp_1", "fp_2", "fp_3", "fp_4"]),
                ip: pick(&["192.0.2.1", "192.0.2.2", "2001:db8::1"]),
                customer: pick(&["cus_1", "cus_2"]),
            }
        };
        let outcome = match e.below(4) {
            0 => None,
            1 => Some(AttemptOutcome::Approved),
            2 => Some(AttemptOutcome::Declined),
            _ => Some(AttemptOutcome::Blocked),
        };
        out.push((t, obs, outcome));
    }
    out
}

#[tokio::test]
async fn postgres_counts_equal_memory_counts_on_the_same_sequence() {
    let (pg, backend, _db) = pg_store().await;
    same_counts(&backend, &[&pg], &MemoryVelocityStore::default(), 42).await;
}

/// With a cap of 3 most keys go past it, and with 5 some do: the attempts, declines and
/// distinct cards that saturate, and the windows whose buckets alone reach the cap, must agree
/// between the stores too.
#[tokio::test]
async fn postgres_counts_equal_memory_counts_past_the_cap() {
    let (pg, backend, _db) = pg_store().await;
    same_counts(
        &backend,
        &[&pg.with_cap(3)],
        &MemoryVelocityStore::default().with_cap(3),
        7,
    )
    .await;
    let (pg, backend, _db) = pg_store().await;
    same_counts(
        &backend,
        &[&pg.with_cap(5)],
        &MemoryVelocityStore::default().with_cap(5),
        8,
    )
    .await;
}

/// Two stores on one database (two nodes) write count rows of their own; a score counts them
/// all, so taking turns they count what one memory store counts.
#[tokio::test]
async fn two_nodes_count_together() {
    let (pg, backend, db) = pg_store().await;
    let other = PgVelocityStore::new(&db.backend().await.unwrap());
    same_counts(&backend, &[&pg, &other], &MemoryVelocityStore::default(), 9).await;
    let at = Timestamp::from_millis(4_000_000_000_000);
    for (store, id) in [(&pg, "pa_writer_1"), (&other, "pa_writer_2")] {
        let o = Observation {
            attempt_id: id.into(),
            account: "acct_1".into(),
            card: Some("fp_1".into()),
            ip: None,
            customer: None,
        };
        store.observe(&o, at).await.unwrap();
    }
    let writers: i64 = sqlx::query_scalar("SELECT count(DISTINCT writer) FROM fraud_velocity_buckets")
        .fetch_one(backend.pool())
        .await
        .unwrap();
    assert_eq!(writers, 2);
}

/// An attempt stamped ahead of a later score's `now` (a node whose clock runs ahead) counts in
/// both stores: PostgreSQL's newest bucket holds it like any other.
#[tokio::test]
async fn an_attempt_stamped_ahead_counts_in_both_stores() {
    let (pg, _backend, _db) = pg_store().await;
    let mem = MemoryVelocityStore::default();
    let t0 = 1_800_000_000_000i64;
    let steps: Vec<(i64, Observation, Option<AttemptOutcome>)> =
        [("ahead", t0 + 900_000), ("now", t0), ("later", t0 + 60_000)]
            .into_iter()
            .map(|(id, t)| {
                let o = Observation {
                    attempt_id: id.into(),
                    account: "acct_1".into(),
                    card: Some("fp_1".into()),
                    ip: Some("192.0.2.1".into()),
                    customer: Some("cus_1".into()),
                };
                (t, o, Some(AttemptOutcome::Declined))
            })
            .collect();
    replay(&[&pg], &mem, &steps, false).await;
    let c = pg
        .observe(
            &Observation {
                attempt_id: "last".into(),
                ..steps[0].1.clone()
            },
            Timestamp::from_millis(t0 + 120_000),
        )
        .await
        .unwrap();
    assert_eq!((c.card_attempts_1h, c.card_declines_1h), (Some(4), Some(3)));
}

/// Migration 0019: attempts observed before it (counted from the attempts themselves) are
/// counted into its buckets, so scores after the upgrade count them as before.
#[tokio::test]
async fn postgres_counts_carry_across_migration_0019() {
    let db = TestDatabase::create_migrated_to(Some(18))
        .await
        .expect("test PostgreSQL");
    let backend = db.backend().await.unwrap();
    let mem = MemoryVelocityStore::default();
    let steps = script(11, 300);
    let (before, after) = steps.split_at(150);
    let pg = PgVelocityStore::new(&backend);
    // The old functions ignore the writer; drawing it needs the sequence 0019 adds.
    sqlx::query("CREATE SEQUENCE fraud_velocity_writers")
        .execute(backend.pool())
        .await
        .unwrap();
    replay(&[&pg], &mem, before, false).await;
    sqlx::query("DROP SEQUENCE fraud_velocity_writers")
        .execute(backend.pool())
        .await
        .unwrap();
    backend.migrate().await.unwrap();
    let pg = PgVelocityStore::new(&backend);
    replay(&[&pg], &mem, after, true).await;
}

/// Observations and outcomes racing each other through the store's shared batches are each
/// applied once, as if alone: after 48 concurrent observations (16 of them repeats of others)
/// and concurrent outcomes, the next observation of the card counts what the memory store
/// counts for the same calls made one at a time.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn racing_observations_are_each_counted_once() {
    let (pg, _backend, _db) = pg_store().await;
    let mem = MemoryVelocityStore::default();
    let now = Timestamp::from_millis(1_800_000_000_000);
    // Racers 32..48 repeat attempts 0..16 with the same content, as a retry does (which of two
    // racing first observations of an attempt is stored is up to the race).
    let obs = |i: usize| Observation {
        attempt_id: format!("pa_race_{}", i % 32),
        account: "acct_1".into(),
        card: Some("fp_race".into()),
        ip: Some(format!("192.0.2.{}", i % 32 % 5)),
        customer: Some(format!("cus_{}", i % 32 % 3)),
    };
    let outcome = |i: usize| match i % 3 {
        0 => AttemptOutcome::Approved,
        1 => AttemptOutcome::Declined,
        _ => AttemptOutcome::Blocked,
    };
    let racers: Vec<_> = (0..48)
        .map(|i| {
            let pg = pg.clone();
            tokio::spawn(async move { pg.observe(&obs(i), now).await })
        })
        .collect();
    for r in racers {
        r.await.unwrap().unwrap();
    }
    let racers: Vec<_> = (0..32)
        .map(|i| {
            let pg = pg.clone();
            tokio::spawn(async move { pg.record_outcome(&obs(i).attempt_id, outcome(i), now).await })
        })
        .collect();
    for r in racers {
        r.await.unwrap().unwrap();
    }
    for i in 0..48 {
        mem.observe(&obs(i), now).await.unwrap();
    }
    for i in 0..32 {
        mem.record_outcome(&obs(i).attempt_id, outcome(i), now).await.unwrap();
    }
    let next = Observation {
        attempt_id: "pa_race_next".into(),
        ..obs(0)
    };
    let later = Timestamp::from_millis(now.millis() + 1);
    let want = mem.observe(&next, later).await.unwrap();
    assert_eq!(pg.observe(&next, later).await.unwrap(), want);
    assert_eq!(want.card_attempts_1h, Some(33), "{want:?}");
}

/// A PostgreSQL velocity store on a throwaway database (kept alive by the third value).
async fn pg_store() -> (PgVelocityStore, PgBackend, TestDatabase) {
    let db = match TestDatabase::create().await {
        Ok(db) => db,
        Err(e) => panic!("PostgreSQL is required for this test: {e}"),
    };
    let backend = db.backend().await.unwrap();
    (PgVelocityStore::new(&backend), backend, db)
}

/// Runs `script(seed, 400)` through the memory store and, taking turns, the PostgreSQL stores,
/// and compares every answer; then prunes a day and a bucket after the last step and checks
/// that nothing is left in any velocity table.
async fn same_counts(backend: &PgBackend, pgs: &[&PgVelocityStore], mem: &MemoryVelocityStore, seed: u64) {
    let steps = script(seed, 400);
    replay(pgs, mem, &steps, true).await;
    let last = steps.last().map(|s| s.0).unwrap_or(0);
    let removed = pgs[0]
        .prune(Timestamp::from_millis(last + DAY_MS + 600_000))
        .await
        .unwrap();
    assert!(removed > 0);
    let left: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM fraud_velocity) + (SELECT count(*) FROM fraud_velocity_buckets) \
              + (SELECT count(*) FROM fraud_velocity_cards) + (SELECT count(*) FROM fraud_velocity_declines)",
    )
    .fetch_one(backend.pool())
    .await
    .unwrap();
    assert_eq!(
        left, 0,
        "rows left after pruning a day and a bucket after the last attempt"
    );
}

/// Every step through both; with `prune`, every 25 steps both stores are pruned at the step's
/// time, which must not change what any later score counts.
async fn replay(
    pgs: &[&PgVelocityStore],
    mem: &MemoryVelocityStore,
    steps: &[(i64, Observation, Option<AttemptOutcome>)],
    prune: bool,
) {
    for (step, (t, obs, outcome)) in steps.iter().enumerate() {
        let pg = pgs[step % pgs.len()];
        let now = Timestamp::from_millis(*t);
        if prune && step % 25 == 24 {
            pg.prune(now).await.unwrap();
            mem.prune(now).await.unwrap();
        }
        let a = mem.observe(obs, now).await.unwrap();
        let b = pg.observe(obs, now).await.unwrap();
        assert_eq!(a, b, "step {step} at {t}: {obs:?}");
        if let Some(o) = outcome {
            mem.record_outcome(&obs.attempt_id, *o, now).await.unwrap();
            pg.record_outcome(&obs.attempt_id, *o, now).await.unwrap();
        }
    }
}
