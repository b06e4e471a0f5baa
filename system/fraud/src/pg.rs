//! Velocity counters in PostgreSQL: one call per score.
//!
//! The table `fraud_velocity` and the statements that observe an attempt and record its
//! outcome are the store's migrations' (`system/store/migrations/0003_fraud_velocity.sql`,
//! `0011_asynchronous_lane.sql`: one migrator owns the schema). Observing inserts the attempt
//! (idempotent on its id within the day, which makes retries free) and counts the windows in
//! the same statement; each key (card, IP, customer) reads at most its latest
//! [`VELOCITY_CAP`] attempts of the day from its index, so a score costs the same however busy
//! the key is. (An attempt id last seen more than a day ago, which the memory store has
//! pruned, is recorded afresh in both stores.) Both calls go through the store's lane of
//! asynchronously committed calls ([`PgBackend::asynchronous_calls`]), which shares a round
//! trip and a transaction among concurrent calls, each in its own subtransaction.
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

/// Velocity counters in PostgreSQL.
#[derive(Clone)]
pub struct PgVelocityStore {
    calls: AsyncCalls,
    pool: PgConnections,
    cap: u32,
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
        }
    }

    /// The same store counting at most `cap` attempts per key (see [`VELOCITY_CAP`]; tests use
    /// small caps to reach them).
    pub fn with_cap(mut self, cap: u32) -> PgVelocityStore {
        self.cap = cap.max(1);
        self
    }

    /// Deletes attempts that can no longer be in any window (older than a day before `now`).
    pub async fn prune(&self, now: Timestamp) -> Result<u64, VelocityError> {
        let r = sqlx::query("DELETE FROM fraud_velocity WHERE t <= $1")
            .bind(now.millis() - DAY_MS)
            .execute(&self.pool)
            .await
            .map_err(unavailable)?;
        Ok(r.rows_affected())
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
        });
        self.calls.call(&call).await.map_err(unavailable)?;
        Ok(())
    }
}
