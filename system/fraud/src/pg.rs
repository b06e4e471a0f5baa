//! Velocity counters in PostgreSQL: one statement per score.
//!
//! The table `fraud_velocity` is created by the store's migration
//! `system/store/migrations/0003_fraud_velocity.sql` (so one migrator owns the schema). The
//! observe statement inserts the attempt (`ON CONFLICT` does nothing for an attempt seen within the day, which makes retries free)
//! and counts the windows in the same statement. Each key (card, IP, customer) reads at most its
//! latest [`VELOCITY_CAP`] attempts of the day from its index, newest first, so a score costs the
//! same however busy the key is. (An attempt id last seen more than a day ago,
//! which the memory store has pruned, is recorded afresh in both stores.) Rows a data-modifying CTE inserts are not
//! visible to the other parts of the statement (they share one snapshot), so the inserted row
//! is added to the counted set explicitly with `UNION ALL`; on a retry the insert does
//! nothing and the row already stored is counted by the scan instead, never both.
//!
//! Both statements commit asynchronously (`synchronous_commit` off for their own transaction:
//! the insert reads its one row from the CTE that sets it, so it is always set first). The
//! counters are evidence for scoring, not money. A crash can lose only what no later
//! synchronous commit of the same database flushed (a synchronous commit flushes the WAL written
//! before it, the payment's records follow every score), at most the last fraction of a second;
//! an attempt scored again records itself again.

use crate::velocity::{outcome_name, AttemptOutcome, Observation, VelocityCounts, VelocityError, VelocityStore};
use crate::velocity::{DAY_MS, HOUR_MS, VELOCITY_CAP};
use async_trait::async_trait;
use pay_core::Timestamp;
use pay_store::postgres::PgConnections;
use sqlx::Row;

const OBSERVE: &str = r#"
WITH commit_mode AS (
    SELECT set_config('synchronous_commit', 'off', true)
), ins AS (
    INSERT INTO fraud_velocity (attempt_id, account, t, card, ip, customer)
    SELECT $1, $2, $3, $4, $5, $6 FROM commit_mode
    ON CONFLICT (attempt_id) DO UPDATE
        SET account = EXCLUDED.account, t = EXCLUDED.t, card = EXCLUDED.card, ip = EXCLUDED.ip,
            customer = EXCLUDED.customer, outcome = NULL
        WHERE fraud_velocity.t <= $3 - $7
    RETURNING attempt_id, t, card, ip, customer, outcome
), card_seen AS (
    SELECT t, outcome FROM (
        (SELECT attempt_id, t, outcome FROM fraud_velocity
          WHERE account = $2 AND card = $4 AND t > $3 - $7 AND t <= $3
          ORDER BY t DESC, attempt_id COLLATE "C" DESC LIMIT $9)
        UNION ALL
        SELECT attempt_id, t, outcome FROM ins WHERE card = $4 AND t > $3 - $7 AND t <= $3
    ) x ORDER BY t DESC, attempt_id COLLATE "C" DESC LIMIT $9
), ip_seen AS (
    SELECT t, card FROM (
        (SELECT attempt_id, t, card FROM fraud_velocity
          WHERE account = $2 AND ip = $5 AND t > $3 - $7 AND t <= $3
          ORDER BY t DESC, attempt_id COLLATE "C" DESC LIMIT $9)
        UNION ALL
        SELECT attempt_id, t, card FROM ins WHERE ip = $5 AND t > $3 - $7 AND t <= $3
    ) x ORDER BY t DESC, attempt_id COLLATE "C" DESC LIMIT $9
), customer_seen AS (
    SELECT t, card FROM (
        (SELECT attempt_id, t, card FROM fraud_velocity
          WHERE account = $2 AND customer = $6 AND t > $3 - $7 AND t <= $3
          ORDER BY t DESC, attempt_id COLLATE "C" DESC LIMIT $9)
        UNION ALL
        SELECT attempt_id, t, card FROM ins WHERE customer = $6 AND t > $3 - $7 AND t <= $3
    ) x ORDER BY t DESC, attempt_id COLLATE "C" DESC LIMIT $9
)
SELECT
    (SELECT count(*) FROM card_seen WHERE t > $3 - $8)                                          AS card_1h,
    (SELECT count(*) FROM card_seen)                                                            AS card_24h,
    (SELECT count(*) FROM card_seen WHERE t > $3 - $8 AND outcome IN ('declined', 'blocked'))   AS card_declines_1h,
    (SELECT count(*) FROM card_seen WHERE outcome IN ('declined', 'blocked'))                   AS card_declines_24h,
    (SELECT count(*) FROM ip_seen WHERE t > $3 - $8)                                            AS ip_1h,
    (SELECT count(*) FROM ip_seen)                                                              AS ip_24h,
    (SELECT count(DISTINCT card) FROM customer_seen)                                            AS customer_cards,
    (SELECT count(DISTINCT card) FROM ip_seen)                                                  AS ip_cards
"#;

/// Velocity counters in PostgreSQL.
#[derive(Debug, Clone)]
pub struct PgVelocityStore {
    pool: PgConnections,
    cap: u32,
}

fn unavailable(e: sqlx::Error) -> VelocityError {
    VelocityError::Unavailable(format!("postgres: {e}"))
}

fn count(row: &sqlx::postgres::PgRow, col: &str) -> Result<u32, VelocityError> {
    let v: i64 = row.try_get(col).map_err(unavailable)?;
    Ok(u32::try_from(v).unwrap_or(u32::MAX))
}

impl PgVelocityStore {
    /// A store over `pool` (the schema must be migrated).
    pub fn new(pool: PgConnections) -> PgVelocityStore {
        PgVelocityStore {
            pool,
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
        let row = sqlx::query(OBSERVE)
            .bind(&obs.attempt_id)
            .bind(&obs.account)
            .bind(now.millis())
            .bind(&obs.card)
            .bind(&obs.ip)
            .bind(&obs.customer)
            .bind(DAY_MS)
            .bind(HOUR_MS)
            .bind(i64::from(self.cap))
            .fetch_one(&self.pool)
            .await
            .map_err(unavailable)?;
        let c = VelocityCounts {
            card_attempts_1h: Some(count(&row, "card_1h")?),
            card_attempts_24h: Some(count(&row, "card_24h")?),
            card_declines_1h: Some(count(&row, "card_declines_1h")?),
            card_declines_24h: Some(count(&row, "card_declines_24h")?),
            ip_attempts_1h: Some(count(&row, "ip_1h")?),
            ip_attempts_24h: Some(count(&row, "ip_24h")?),
            customer_distinct_cards_24h: Some(count(&row, "customer_cards")?),
            ip_distinct_cards_24h: Some(count(&row, "ip_cards")?),
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
        sqlx::query(
            "UPDATE fraud_velocity SET outcome = $2 \
             FROM (SELECT set_config('synchronous_commit', 'off', true)) AS commit_mode \
             WHERE attempt_id = $1 AND outcome IS NULL",
        )
        .bind(attempt_id)
        .bind(outcome_name(outcome))
        .execute(&self.pool)
        .await
        .map_err(unavailable)?;
        Ok(())
    }
}
