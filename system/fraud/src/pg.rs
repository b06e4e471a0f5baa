//! Velocity counters in PostgreSQL: one call per score.
//!
//! The tables and the functions that observe an attempt, record its outcome and prune are the
//! store's migrations' (`system/store/migrations/0003_fraud_velocity.sql`, `0011_asynchronous_lane.sql`,
//! `0019_velocity_counted_as_attempts_arrive.sql`: one migrator owns the schema). Observing
//! inserts the attempt (idempotent on its id within the day, which makes retries free), adds it
//! to its keys' counts kept in ten-minute buckets, and answers the windows in the same call: a
//! score reads its keys' buckets and at most the few attempts of the oldest bucket's part inside
//! a window, so it costs about the same however busy a key is. (An attempt id last seen more
//! than a day ago, which the memory store has pruned, is recorded afresh in both stores.) Both
//! calls go through the store's lane of asynchronously committed calls
//! ([`PgBackend::asynchronous_calls`]), which shares a round trip and a transaction among
//! concurrent calls, each in its own subtransaction.
//!
//! Each store draws a writer number from the database once and sends it with every call: the
//! count rows it adds to are its own, so two nodes never wait on each other's rows, nor deadlock
//! taking two keys in opposite orders (migration 0019 says more).
//!
//! Both commit asynchronously (`synchronous_commit` off for their transaction). The counters
//! are evidence for scoring, not money. A crash can lose only what no later synchronous commit
//! of the same database flushed (a synchronous commit flushes the WAL written before it, the
//! payment's records follow every score), at most the last fraction of a second; an attempt
//! scored again records itself again.

use crate::velocity::{outcome_name, AttemptOutcome, Observation, VelocityCounts, VelocityError, VelocityStore};
use crate::velocity::{DAY_MS, HOUR_MS, VELOCITY_CAP};
use async_trait::async_trait;
use pay_core::Timestamp;
use pay_store::postgres::{AsyncCalls, PgBackend, PgConnections};
use std::sync::Arc;
use tokio::sync::OnceCell;

/// Velocity counters in PostgreSQL.
#[derive(Clone)]
pub struct PgVelocityStore {
    calls: AsyncCalls,
    pool: PgConnections,
    cap: u32,
    /// This store's writer number, drawn on first use (see the module docs).
    writer: Arc<OnceCell<i32>>,
}

impl std::fmt::Debug for PgVelocityStore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("PgVelocityStore")
            .field("pool", &self.pool)
            .field("cap", &self.cap)
            .finish()
    }
}

fn unavailable(e: impl std::fmt::Display) -> VelocityError {
    VelocityError::Unavailable(format!("postgres: {e}"))
}

/// The counts `velocity_observe` answers (migration 0011).
#[derive(serde::Deserialize)]
struct Counted {
    card_1h: i64,
    card_24h: i64,
    card_declines_1h: i64,
    card_declines_24h: i64,
    ip_1h: i64,
    ip_24h: i64,
    customer_cards: i64,
    ip_cards: i64,
}

fn count(v: i64) -> Option<u32> {
    Some(u32::try_from(v.max(0)).unwrap_or(u32::MAX))
}

impl PgVelocityStore {
    /// A store in `store`'s database (the schema must be migrated).
    pub fn new(store: &PgBackend) -> PgVelocityStore {
        PgVelocityStore {
            calls: store.asynchronous_calls(),
            pool: store.pool().clone(),
            cap: VELOCITY_CAP,
            writer: Arc::new(OnceCell::new()),
        }
    }

    /// This store's writer number: drawn from `fraud_velocity_writers` the first time, so that
    /// every store, on every node, adds to count rows no other store writes.
    async fn writer(&self) -> Result<i32, VelocityError> {
        self.writer
            .get_or_try_init(|| async {
                let n: i64 = sqlx::query_scalar("SELECT nextval('fraud_velocity_writers')")
                    .fetch_one(&self.pool)
                    .await
                    .map_err(unavailable)?;
                // Writer numbers wrap within i32; two stores sharing one after two billion
                // starts would only wait on each other's rows, never miscount.
                Ok(i32::try_from(n % i64::from(i32::MAX)).unwrap_or(0))
            })
            .await
            .copied()
    }

    /// The same store saturating its counts at `cap` (see [`VELOCITY_CAP`]; tests use small
    /// caps to reach them).
    pub fn with_cap(mut self, cap: u32) -> PgVelocityStore {
        self.cap = cap.max(1);
        self
    }
}

#[async_trait]
impl VelocityStore for PgVelocityStore {
    async fn observe(&self, obs: &Observation, now: Timestamp) -> Result<VelocityCounts, VelocityError> {
        let call = serde_json::json!({
            "op": "observe",
            "attempt_id": obs.attempt_id,
            "account": obs.account,
            "now": now.millis(),
            "card": obs.card,
            "ip": obs.ip,
            "customer": obs.customer,
            "day_ms": DAY_MS,
            "hour_ms": HOUR_MS,
            "cap": i64::from(self.cap),
            "writer": self.writer().await?,
        });
        let c: Counted = serde_json::from_value(self.calls.call(&call).await.map_err(unavailable)?)
            .map_err(|e| unavailable(format!("unreadable velocity counts: {e}")))?;
        let c = VelocityCounts {
            card_attempts_1h: count(c.card_1h),
            card_attempts_24h: count(c.card_24h),
            card_declines_1h: count(c.card_declines_1h),
            card_declines_24h: count(c.card_declines_24h),
            ip_attempts_1h: count(c.ip_1h),
            ip_attempts_24h: count(c.ip_24h),
            customer_distinct_cards_24h: count(c.customer_cards),
            ip_distinct_cards_24h: count(c.ip_cards),
        };
        Ok(c.masked(obs))
    }

    async fn record_outcome(
        &self,
        attempt_id: &str,
        outcome: AttemptOutcome,
        _at: Timestamp,
    ) -> Result<(), VelocityError> {
        // Commits asynchronously, like the observation (see the module docs).
        let call = serde_json::json!({
            "op": "outcome",
            "attempt_id": attempt_id,
            "outcome": outcome_name(outcome),
            "writer": self.writer().await?,
        });
        self.calls.call(&call).await.map_err(unavailable)?;
        Ok(())
    }

    async fn prune(&self, now: Timestamp) -> Result<u64, VelocityError> {
        let n: i64 = sqlx::query_scalar("SELECT velocity_prune($1)")
            .bind(now.millis() - DAY_MS)
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}
