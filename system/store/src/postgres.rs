//! The PostgreSQL backend (sqlx). Schema in `system/store/migrations`.
//!
//! Each [`Request`] runs as one database transaction, and the hot ones in one round trip: a
//! commit and taking an idempotency key are single calls of the store's functions
//! (`store_commit_framed` of migration 0017, `idem_begin` of 0004), so a request costs one
//! statement and one implicit transaction rather than BEGIN, a statement per write and COMMIT.
//! Record tables all share one shape, so the SQL is generic over a table name taken from the
//! fixed [`Table`] enum (never from input). Conditional writes use `version` (an update with a
//! stale version touches no row and fails the transaction). Commits are idempotent: a
//! transaction with events is recognised when sent again by its first event, which carries
//! its id (`events.txn_id`, migration 0018), and one without events by its row in the
//! applied-transaction log (`store_txns`).
//!
//! Connections come from [`PgConnections`], which neither pings a connection before use nor
//! after it (sqlx's pool does the latter, one more round trip per statement); see
//! `pg_pool.rs` for how it stays safe. A connection that died while idle fails its next
//! statement instead, which maps to a retryable (or, for a write, ambiguous) error that
//! [`Db`](crate::Db) retries under the same transaction id.

use crate::model::*;
use crate::pg_batch::{BatchAnswers, Batcher, CommitLane, FramedTxn, JsonLane, Lane, ASYNC_CALLS};
pub use crate::pg_batch::{BatchStats, GroupCommit, GroupCommitStats};
pub use crate::pg_pool::{PgConnections, PoolLimits, PooledConnection};
use crate::Backend;
use async_trait::async_trait;
use pay_core::{Event, JsonText};
use serde_json::value::RawValue;
use sqlx::postgres::{PgConnectOptions, PgRow};
use sqlx::{Connection, Row};
use std::collections::BTreeSet;
use std::str::FromStr;
use std::time::Duration;

/// The embedded schema migrations.
pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// Connection settings for [`PgBackend::connect`].
#[derive(Debug, Clone)]
pub struct PgSettings {
    /// Largest number of pooled connections.
    pub max_connections: u32,
    /// How long a request waits for a free connection before failing as unavailable.
    pub acquire_timeout: Duration,
    /// A connection older than this is closed instead of reused (a new one opens when needed).
    pub max_lifetime: Duration,
    /// How concurrent commits, and concurrent calls that commit asynchronously, share
    /// transactions (migrations 0009 and 0011).
    pub group_commit: GroupCommit,
}

impl Default for PgSettings {
    fn default() -> Self {
        PgSettings {
            max_connections: 16,
            acquire_timeout: Duration::from_secs(5),
            max_lifetime: Duration::from_secs(30 * 60),
            group_commit: GroupCommit::default(),
        }
    }
}

/// The PostgreSQL storage backend.
#[derive(Clone)]
pub struct PgBackend {
    pool: PgConnections,
    commits: Batcher<CommitLane>,
    asynchronous: Batcher<JsonLane>,
    reads: Batcher<Reads>,
    describe: String,
}

const COLS: &str = "id, account, version, created, k1, k2, body";

impl PgBackend {
    /// Connects a pool to `url` (`postgres://user:pass@host:port/db`).
    pub async fn connect(url: &str, settings: &PgSettings) -> Result<PgBackend, StoreError> {
        let opts = PgConnectOptions::from_str(url)
            .map_err(|e| StoreError::Invalid(format!("bad database URL: {}", redact_url_error(&e.to_string()))))?;
        let describe = format!(
            "postgres://{}:{}/{}",
            opts.get_host(),
            opts.get_port(),
            opts.get_database().unwrap_or("")
        );
        let pool = PgConnections::new(
            opts,
            PoolLimits {
                max_connections: settings.max_connections,
                acquire_timeout: settings.acquire_timeout,
                max_lifetime: settings.max_lifetime,
            },
        );
        // One connection now, so that a wrong address or password fails at start.
        let mut first = pool.acquire().await.map_err(|e| {
            StoreError::Unavailable(format!(
                "cannot connect to {describe}: {}",
                redact_url_error(&e.to_string())
            ))
        })?;
        first.keep();
        drop(first);
        Ok(PgBackend {
            commits: Batcher::new(pool.clone(), CommitLane, settings.group_commit),
            asynchronous: Batcher::new(pool.clone(), ASYNC_CALLS, settings.group_commit),
            reads: Batcher::new(pool.clone(), Reads, settings.group_commit),
            pool,
            describe,
        })
    }

    /// Applies pending migrations.
    pub async fn migrate(&self) -> Result<(), StoreError> {
        let mut conn = self
            .pool
            .acquire()
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        MIGRATOR
            .run(&mut *conn)
            .await
            .map_err(|e| StoreError::Unavailable(format!("migration failed: {e}")))?;
        conn.keep();
        Ok(())
    }

    /// How many database transactions commits, asynchronous calls and reads by id have taken
    /// so far, and how many calls they carried (group commit, `pg_batch.rs`).
    pub fn group_commit_stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            commits: self.commits.stats(),
            asynchronous: self.asynchronous.stats(),
            reads: self.reads.stats(),
        }
    }

    /// The lane of calls that commit asynchronously, for services with statements of their own
    /// in this database (the fraud service's velocity counters, migration 0011).
    pub fn asynchronous_calls(&self) -> AsyncCalls {
        AsyncCalls(self.asynchronous.clone())
    }

    /// The connection pool (for other crates' specialised SQL on the same database).
    pub fn pool(&self) -> &PgConnections {
        &self.pool
    }

    /// The migrations' `store_commit_framed` applies the writes, appends the events and marks
    /// the transaction applied, or raises the first conflict (rolling back all of it);
    /// concurrent commits share a round trip and a database transaction (`pg_batch.rs`).
    async fn commit(&self, txn: Txn) -> Result<CommitOutcome, StoreError> {
        let framed = WireTxn::frame(&txn)
            .map_err(|e| StoreError::Invalid(format!("cannot encode transaction {}: {e}", txn.id)))?;
        Ok(match self.commits.call(framed).await? {
            Some(event_seqs) => CommitOutcome::Applied { event_seqs },
            None => CommitOutcome::AlreadyApplied,
        })
    }

    async fn find(
        &self,
        table: Table,
        account: Option<String>,
        index: Index,
        value: String,
        limit: u32,
    ) -> Result<Vec<Record>, StoreError> {
        table.check_find(index)?;
        let col = index_col(index);
        let sql = format!("SELECT {COLS} FROM {} WHERE {col} = $1 AND ($2::text IS NULL OR account = $2) ORDER BY created, id LIMIT $3", table.name());
        let rows = sqlx::query(&sql)
            .bind(value)
            .bind(account)
            .bind(i64::from(limit.clamp(1, 1000)))
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, false))?;
        rows.iter().map(record_from_row).collect()
    }

    async fn cursor(&self, table: Table, account: &str, id: &str) -> Result<(i64, String), StoreError> {
        let sql = format!(
            "SELECT created, id FROM {} WHERE id = $1 AND account = $2",
            table.name()
        );
        let row = sqlx::query(&sql)
            .bind(id)
            .bind(account)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, false))?;
        match row {
            Some(r) => Ok((r.try_get("created").map_err(decode)?, r.try_get("id").map_err(decode)?)),
            None => Err(StoreError::Invalid(format!("cursor object {id} not found"))),
        }
    }

    async fn list(&self, q: ListQuery) -> Result<Page<Record>, StoreError> {
        q.table.check_list()?;
        let limit = i64::from(q.limit.clamp(1, 100));
        let (k1, k2) = match &q.filter {
            Some((Index::K1, v)) => (Some(v.clone()), None),
            Some((Index::K2, v)) => (None, Some(v.clone())),
            None => (None, None),
        };
        let (cursor, newer) = match (&q.starting_after, &q.ending_before) {
            (_, Some(b)) => (Some(self.cursor(q.table, &q.account, b).await?), true),
            (Some(a), None) => (Some(self.cursor(q.table, &q.account, a).await?), false),
            (None, None) => (None, false),
        };
        let (cmp, order) = if newer { (">", "ASC") } else { ("<", "DESC") };
        let sql = format!(
            "SELECT {COLS} FROM {t} WHERE account = $1 AND ($2::text IS NULL OR k1 = $2) AND ($3::text IS NULL OR k2 = $3) \
             AND ($4::bigint IS NULL OR created >= $4) AND ($5::bigint IS NULL OR created < $5) \
             AND ($6::bigint IS NULL OR (created, id) {cmp} ($6, $7::text)) \
             ORDER BY created {order}, id {order} LIMIT $8",
            t = q.table.name()
        );
        let rows = sqlx::query(&sql)
            .bind(&q.account)
            .bind(k1)
            .bind(k2)
            .bind(q.created_gte)
            .bind(q.created_lt)
            .bind(cursor.as_ref().map(|c| c.0))
            .bind(cursor.as_ref().map(|c| c.1.clone()))
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, false))?;
        let mut items: Vec<Record> = rows.iter().map(record_from_row).collect::<Result<_, _>>()?;
        let has_more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        if newer {
            items.reverse();
        }
        Ok(Page { items, has_more })
    }

    async fn list_events(&self, q: EventQuery) -> Result<Page<StoredEvent>, StoreError> {
        let limit = i64::from(q.limit.clamp(1, 100));
        let seq_of = |id: String| async move {
            let row = sqlx::query("SELECT seq FROM events WHERE id = $1")
                .bind(&id)
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| map_err(e, false))?;
            match row {
                Some(r) => r.try_get::<i64, _>("seq").map_err(decode),
                None => Err(StoreError::Invalid(format!("cursor event {id} not found"))),
            }
        };
        let (cursor, newer) = match (q.starting_after.clone(), q.ending_before.clone()) {
            (_, Some(b)) => (Some(seq_of(b).await?), true),
            (Some(a), None) => (Some(seq_of(a).await?), false),
            (None, None) => (None, false),
        };
        let (exact, prefix) = match q.kind.as_deref() {
            Some("*") | None => (None, None),
            Some(k) => match k.strip_suffix(".*") {
                Some(p) => (None, Some(format!("{p}."))),
                None => (Some(k.to_owned()), None),
            },
        };
        let (cmp, order) = if newer { (">", "ASC") } else { ("<", "DESC") };
        let sql = format!(
            "SELECT seq, body FROM events WHERE account = $1 AND ($2::text IS NULL OR type = $2) \
             AND ($3::text IS NULL OR starts_with(type, $3)) AND ($4::text IS NULL OR object_id = $4) \
             AND ($5::bigint IS NULL OR created >= $5) AND ($6::bigint IS NULL OR seq {cmp} $6) \
             ORDER BY seq {order} LIMIT $7"
        );
        let rows = sqlx::query(&sql)
            .bind(&q.account)
            .bind(exact)
            .bind(prefix)
            .bind(q.object_id)
            .bind(q.created_gte)
            .bind(cursor)
            .bind(limit + 1)
            .fetch_all(&self.pool)
            .await
            .map_err(|e| map_err(e, false))?;
        let mut items: Vec<StoredEvent> = rows.iter().map(event_from_row).collect::<Result<_, _>>()?;
        let has_more = items.len() as i64 > limit;
        items.truncate(limit as usize);
        if newer {
            items.reverse();
        }
        Ok(Page { items, has_more })
    }

    /// One round trip: the migration's `idem_begin` takes, resumes or inspects the key in one
    /// statement. Lock ages are measured with the database's clock, not the caller's: API
    /// hosts may disagree about the time, and a lock stamped by a host whose clock ran ahead
    /// must still expire on schedule.
    async fn idem_begin(&self, b: IdemBegin) -> Result<IdemBeginOutcome, StoreError> {
        // Keys live at most a few days; the clamp only keeps the database's arithmetic in range.
        let ttl = b.expires_at.saturating_sub(b.now).clamp(0, MAX_IDEM_TTL_MS);
        let lock_timeout = b.lock_timeout_ms.clamp(0, MAX_IDEM_TTL_MS);
        let call = serde_json::json!({
            "op": "begin",
            "account": b.account,
            "key": b.key,
            "fingerprint": b.fingerprint,
            "owner": b.owner,
            "ttl_ms": ttl,
            "lock_timeout_ms": lock_timeout,
        });
        /// idem_begin's row (migration 0006), as idem_call answers it.
        #[derive(serde::Deserialize)]
        struct Begun {
            state: String,
            resumed: Option<bool>,
            recovery_point: Option<String>,
            status: Option<i32>,
            response: Option<String>,
            taken_by: Option<String>,
        }
        let row: Begun = self.asynchronous.call_for(call.to_string(), "idem_begin").await?;
        match row.state.as_str() {
            "started" => Ok(IdemBeginOutcome::Started {
                resumed: row.resumed.unwrap_or(false),
                recovery_point: row.recovery_point,
                taken_by: row.taken_by,
            }),
            "in_progress" => Ok(IdemBeginOutcome::InProgress),
            "mismatch" => Ok(IdemBeginOutcome::Mismatch),
            "completed" => Ok(IdemBeginOutcome::Completed {
                status: row.status.and_then(|s| u16::try_from(s).ok()).unwrap_or(500),
                body: row.response.unwrap_or_default(),
            }),
            // The key vanished between the insert attempt and the read (reaped): try again.
            _ => Err(StoreError::Unavailable("idempotency key contended; retry".into())),
        }
    }

    /// Checks the outcome of a change to a key that must be held by the caller (the change
    /// filters on the owner): `changed` rows. None means someone else holds the key or, with
    /// `missing_ok`, that the key is already gone (a retried release).
    async fn idem_owned(&self, changed: u64, account: &str, key: &str, missing_ok: bool) -> Result<(), StoreError> {
        if changed > 0 {
            return Ok(());
        }
        let holder = sqlx::query("SELECT owner FROM idempotency_keys WHERE account = $1 AND key = $2")
            .bind(account)
            .bind(key)
            .fetch_optional(&self.pool)
            .await
            .map_err(|e| map_err(e, false))?;
        match holder {
            None if missing_ok => Ok(()),
            _ => Err(StoreError::NotOwner),
        }
    }

    /// Runs one of migration 0006's key functions that answer the rows they changed, through
    /// migration 0011's `async_call` (alone or in a batch).
    async fn idem_call(&self, call: serde_json::Value) -> Result<u64, StoreError> {
        let n: i64 = self
            .asynchronous
            .call_for(call.to_string(), "an idempotency key call")
            .await?;
        Ok(u64::try_from(n).unwrap_or(0))
    }
}

/// The store's lane of calls that commit asynchronously (see [`PgBackend::asynchronous_calls`]);
/// cheap to clone.
#[derive(Clone)]
pub struct AsyncCalls(Batcher<JsonLane>);

impl AsyncCalls {
    /// Runs `call` (an argument of migration 0011's `async_call`), alone or in a batch with
    /// other asynchronous calls, and returns its answer.
    pub async fn call(&self, call: &serde_json::Value) -> Result<serde_json::Value, StoreError> {
        self.0.call(call.to_string()).await
    }
}

/// Reads of one record by id. At load a flow reads about four records (its payment method,
/// vault card, Radar generation, intent), each alone a round trip that costs both sides far
/// more than the read itself; concurrent reads go together through migration 0014's
/// `store_get_many`, one statement and one snapshot taken after every caller in it asked.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Reads;

impl Lane for Reads {
    type Call = (Table, String);
    type Answer = Option<Record>;

    async fn alone(&self, pool: &PgConnections, (table, id): (Table, String)) -> Result<Option<Record>, StoreError> {
        let sql = format!("SELECT {COLS} FROM {} WHERE id = $1", table.name());
        let row = sqlx::query(&sql)
            .bind(id)
            .fetch_optional(pool)
            .await
            .map_err(|e| map_err(e, false))?;
        row.map(|r| record_from_row(&r)).transpose()
    }

    async fn batch(&self, pool: &PgConnections, calls: Vec<(Table, String)>) -> BatchAnswers<Option<Record>> {
        let tables: Vec<&str> = calls.iter().map(|(t, _)| t.name()).collect();
        let ids: Vec<&str> = calls.iter().map(|(_, id)| id.as_str()).collect();
        let rows = sqlx::query(&format!("SELECT n, {COLS} FROM store_get_many($1, $2)"))
            .bind(&tables)
            .bind(&ids)
            .fetch_all(pool)
            .await
            .map_err(|e| map_err(e, false))?;
        let mut answers: Vec<Result<Option<Record>, StoreError>> = calls.iter().map(|_| Ok(None)).collect();
        for r in &rows {
            let n: i32 = r.try_get("n").map_err(decode)?;
            let slot = usize::try_from(n)
                .ok()
                .and_then(|n| n.checked_sub(1))
                .and_then(|i| answers.get_mut(i))
                .ok_or_else(|| StoreError::Corrupt(format!("store_get_many answered read {n} of {}", calls.len())))?;
            *slot = record_from_row(r).map(Some);
        }
        Ok(answers)
    }
}

/// Idempotency keys and locks are never meant to last longer than this (about 10 years).
const MAX_IDEM_TTL_MS: i64 = 10 * 366 * 86_400_000;

/// A transaction as `store_commit_framed` reads it (see migrations 0004 and 0017) without its
/// bodies: borrowed from the [`Txn`]; [`WireTxn::frame`] sends the bodies beside it.
#[derive(serde::Serialize)]
struct WireTxn<'a> {
    id: &'a str,
    at: i64,
    ops: Vec<WireOp<'a>>,
    events: Vec<WireEvent<'a>>,
}

/// One write; an insert or update takes the next body.
#[derive(serde::Serialize)]
struct WireOp<'a> {
    op: &'static str,
    table: &'static str,
    id: &'a str,
    #[serde(skip_serializing_if = "Option::is_none")]
    account: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    created: Option<i64>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k1: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    k2: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    expected: Option<i64>,
}

/// One event; its body follows the writes' bodies, in the order of the events.
#[derive(serde::Serialize)]
struct WireEvent<'a> {
    id: &'a str,
    account: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    object_id: Option<String>,
    created: i64,
}

impl<'a> WireTxn<'a> {
    /// `txn` as `store_commit_framed` takes it: the transaction without its bodies, then the
    /// bodies of its inserts and updates and of its events, in that order.
    fn frame(txn: &'a Txn) -> Result<FramedTxn, serde_json::Error> {
        let mut bodies = Vec::with_capacity(txn.ops.len() + txn.events.len());
        let mut write = |op: &'static str, table: &Table, r: &'a Record, expected: Option<i64>| {
            bodies.push(r.body.get().to_owned());
            WireOp {
                op,
                table: table.name(),
                id: &r.id,
                account: Some(&r.account),
                created: Some(r.created),
                k1: r.k1.as_deref(),
                k2: r.k2.as_deref(),
                expected,
            }
        };
        let bare = |op: &'static str, table: &Table, id: &'a str, expected: Option<i64>| WireOp {
            op,
            table: table.name(),
            id,
            account: None,
            created: None,
            k1: None,
            k2: None,
            expected,
        };
        let ops = txn
            .ops
            .iter()
            .map(|op| match op {
                Op::Insert { table, record } => write("insert", table, record, None),
                Op::Update {
                    table,
                    record,
                    expected_version,
                } => write("update", table, record, Some(*expected_version)),
                Op::Delete {
                    table,
                    id,
                    expected_version,
                } => bare("delete", table, id, *expected_version),
                Op::Check {
                    table,
                    id,
                    expected_version,
                } => bare("check", table, id, Some(*expected_version)),
            })
            .collect();
        let mut events = Vec::with_capacity(txn.events.len());
        for e in &txn.events {
            bodies.push(serde_json::to_string(e)?);
            events.push(WireEvent {
                id: e.id.as_str(),
                account: e.account.as_ref().map(|a| a.as_str()).unwrap_or(""),
                kind: &e.kind,
                object_id: e.object_id(),
                created: e.created,
            });
        }
        let envelope = serde_json::to_string(&WireTxn {
            id: &txn.id,
            at: txn.at,
            ops,
            events,
        })?;
        Ok(FramedTxn { envelope, bodies })
    }
}

/// The conflict `store_commit_framed` raised (SQLSTATE PY001, the conflict as JSON in the
/// message).
fn conflict_from(message: &str) -> StoreError {
    #[derive(serde::Deserialize)]
    struct Raised {
        table: Table,
        id: String,
        kind: String,
        expected: Option<i64>,
        actual: Option<i64>,
    }
    let Ok(r) = serde_json::from_str::<Raised>(message) else {
        return StoreError::Corrupt(format!("unreadable conflict from the database: {message}"));
    };
    let kind = match (r.kind.as_str(), r.expected, r.actual) {
        ("exists", _, _) => ConflictKind::Exists,
        ("version_mismatch", Some(expected), Some(actual)) => ConflictKind::VersionMismatch { expected, actual },
        _ => ConflictKind::Missing,
    };
    StoreError::Conflict {
        table: r.table,
        id: r.id,
        kind,
    }
}

const QCOLS: &str = "id, queue, seq, grp, dedup, body, created, receive_count";

fn queue_message(r: &PgRow) -> Result<QueueMessage, StoreError> {
    Ok(QueueMessage {
        id: r.try_get("id").map_err(decode)?,
        queue: r.try_get("queue").map_err(decode)?,
        seq: r.try_get("seq").map_err(decode)?,
        group: r.try_get("grp").map_err(decode)?,
        dedup: r.try_get("dedup").map_err(decode)?,
        body: r.try_get("body").map_err(decode)?,
        created: r.try_get("created").map_err(decode)?,
        receive_count: u32::try_from(r.try_get::<i32, _>("receive_count").map_err(decode)?).unwrap_or(0),
    })
}

/// The fourth parameter of a receipt-guarded update.
enum Arg<'a> {
    Ms(i64),
    Text(&'a str),
}

fn split_receipt(receipt: &str) -> Result<(String, i32), StoreError> {
    let (id, n) = receipt.rsplit_once(':').ok_or(StoreError::StaleReceipt)?;
    Ok((id.to_owned(), n.parse().map_err(|_| StoreError::StaleReceipt)?))
}

impl PgBackend {
    async fn q_send(&self, queue: &str, now: i64, messages: Vec<NewMessage>) -> Result<Vec<String>, StoreError> {
        let mut ids = Vec::with_capacity(messages.len());
        for m in messages {
            let row = sqlx::query("INSERT INTO queue_messages (id, queue, grp, dedup, body, created, available_at) VALUES ($1, $2, $3, $4, $5, $6, $7) ON CONFLICT DO NOTHING RETURNING id")
                .bind(&m.id)
                .bind(queue)
                .bind(&m.group)
                .bind(&m.dedup)
                .bind(&m.body)
                .bind(now)
                .bind(now + m.delay_ms.max(0))
                .fetch_optional(&self.pool)
                .await
                .map_err(|e| map_err(e, true))?;
            match row {
                Some(r) => ids.push(r.try_get("id").map_err(decode)?),
                None => {
                    let existing = sqlx::query("SELECT id FROM queue_messages WHERE id = $3 OR (queue = $1 AND dedup = $2) ORDER BY seq LIMIT 1")
                        .bind(queue)
                        .bind(&m.dedup)
                        .bind(&m.id)
                        .fetch_one(&self.pool)
                        .await
                        .map_err(|e| map_err(e, false))?;
                    ids.push(existing.try_get("id").map_err(decode)?);
                }
            }
        }
        Ok(ids)
    }

    /// See [`Request::OutboxFanOut`]. The marks and the messages commit together; fan-outs
    /// take turns on an advisory lock, so a later one's messages get later queue sequence
    /// numbers, and a fan-out that waited finds the events the other marked already marked.
    async fn outbox_fan_out(&self, now: i64, events: Vec<FanOutEvent>) -> Result<Vec<i64>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(|e| map_err(e, false))?;
        let mut tx = conn.begin().await.map_err(|e| map_err(e, false))?;
        sqlx::query("SELECT pg_advisory_xact_lock(hashtext('outbox_fan_out'))")
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, false))?;
        let seqs: Vec<i64> = events.iter().map(|e| e.seq).collect();
        // An event waits in `outbox_pending` (migration 0016) or, written before it, with
        // `relayed = false`; either mark is taken once, so an event already handled returns nothing.
        let marked: BTreeSet<i64> = sqlx::query_scalar::<_, i64>(
            "WITH waiting AS (DELETE FROM outbox_pending WHERE seq = ANY($1) RETURNING seq), \
                  legacy AS (UPDATE events SET relayed = true WHERE seq = ANY($1) AND NOT relayed RETURNING seq) \
             SELECT seq FROM waiting UNION SELECT seq FROM legacy",
        )
        .bind(&seqs)
        .fetch_all(&mut *tx)
        .await
        .map_err(|e| map_err(e, false))?
        .into_iter()
        .collect();
        let (mut ids, mut queues, mut groups, mut dedups, mut bodies, mut delays) =
            (vec![], vec![], vec![], vec![], vec![], vec![]);
        let mut done = Vec::with_capacity(marked.len());
        for e in events.into_iter().filter(|e| marked.contains(&e.seq)) {
            done.push(e.seq);
            for (queue, m) in e.messages {
                ids.push(m.id);
                queues.push(queue);
                groups.push(m.group);
                dedups.push(m.dedup);
                bodies.push(m.body);
                delays.push(m.delay_ms.max(0));
            }
        }
        if !ids.is_empty() {
            // One statement for the whole batch, in event order (which FIFO groups keep).
            sqlx::query(
                "INSERT INTO queue_messages (id, queue, grp, dedup, body, created, available_at) \
                 SELECT m.id, m.queue, m.grp, m.dedup, m.body, $7, $7 + m.delay \
                 FROM unnest($1::text[], $2::text[], $3::text[], $4::text[], $5::jsonb[], $6::bigint[]) WITH ORDINALITY AS m(id, queue, grp, dedup, body, delay, n) \
                 ORDER BY m.n ON CONFLICT DO NOTHING",
            )
            .bind(&ids)
            .bind(&queues)
            .bind(&groups)
            .bind(&dedups)
            .bind(&bodies)
            .bind(&delays)
            .bind(now)
            .execute(&mut *tx)
            .await
            .map_err(|e| map_err(e, false))?;
        }
        tx.commit().await.map_err(|e| map_err(e, true))?;
        conn.keep();
        Ok(done)
    }

    async fn q_receive(
        &self,
        queue: &str,
        now: i64,
        max: u32,
        visibility_ms: i64,
        mode: QueueMode,
        max_receives: u32,
    ) -> Result<Vec<Received>, StoreError> {
        let mut conn = self.pool.acquire().await.map_err(|e| map_err(e, false))?;
        let mut tx = conn.begin().await.map_err(|e| map_err(e, false))?;
        if mode == QueueMode::FifoBatch {
            // A run of a group's messages is taken without SKIP LOCKED's help (a receiver that
            // skipped a locked head could take the messages behind it), so receives of one
            // batch-FIFO queue take turns; each is a short transaction, and the next one's
            // statements see what the previous one took.
            sqlx::query("SELECT pg_advisory_xact_lock(hashtext('queue_receive:' || $1))")
                .bind(queue)
                .execute(&mut *tx)
                .await
                .map_err(|e| map_err(e, false))?;
        }
        // Messages received too often go to the dead letters instead of being delivered again.
        sqlx::query(
            "UPDATE queue_messages SET state = 'dead', done_at = $2, dead_reason = 'max_receives', invisible_until = NULL \
             WHERE id IN (SELECT id FROM queue_messages WHERE queue = $1 AND state = 'live' AND available_at <= $2 \
             AND (invisible_until IS NULL OR invisible_until <= $2) AND receive_count >= $3 AND receive_count > 0 FOR UPDATE SKIP LOCKED)",
        )
        .bind(queue)
        .bind(now)
        .bind(i32::try_from(max_receives.max(1)).unwrap_or(i32::MAX))
        .execute(&mut *tx)
        .await
        .map_err(|e| map_err(e, false))?;
        // Visibility is checked on the locked row itself (re-evaluated if a concurrent receiver
        // changed it), so two receivers never take the same message, and in FIFO mode only the
        // head of each group is a candidate, so a group has at most one message in flight.
        let picked = match mode {
            QueueMode::Standard => "picked AS (SELECT m.id FROM queue_messages m WHERE m.queue = $1 AND m.state = 'live' AND m.available_at <= $2 \
                 AND (m.invisible_until IS NULL OR m.invisible_until <= $2) ORDER BY m.seq LIMIT $3 FOR UPDATE SKIP LOCKED)",
            QueueMode::Fifo => "heads AS (SELECT DISTINCT ON (COALESCE(grp, id)) id FROM queue_messages WHERE queue = $1 AND state = 'live' ORDER BY COALESCE(grp, id), seq), \
                 picked AS (SELECT m.id FROM queue_messages m JOIN heads h ON m.id = h.id WHERE m.state = 'live' AND m.available_at <= $2 \
                 AND (m.invisible_until IS NULL OR m.invisible_until <= $2) ORDER BY m.seq LIMIT $3 FOR UPDATE OF m SKIP LOCKED)",
            // A group's messages before its first held-back one, in send order; with the
            // receives taking turns, one receiver holds a group at a time. Held back = in
            // flight (only ever after a receive) or delayed: two index ranges (migration 0005),
            // not the backlog.
            QueueMode::FifoBatch => "blocked AS (SELECT COALESCE(grp, id) AS g, min(seq) AS s FROM ( \
                 SELECT grp, id, seq FROM queue_messages WHERE queue = $1 AND state = 'live' AND receive_count > 0 AND invisible_until > $2 \
                 UNION ALL SELECT grp, id, seq FROM queue_messages WHERE queue = $1 AND state = 'live' AND available_at > $2) w GROUP BY 1), \
                 picked AS (SELECT m.id FROM queue_messages m WHERE m.queue = $1 AND m.state = 'live' AND m.available_at <= $2 \
                 AND (m.invisible_until IS NULL OR m.invisible_until <= $2) \
                 AND NOT EXISTS (SELECT 1 FROM blocked b WHERE b.g = COALESCE(m.grp, m.id) AND b.s < m.seq) ORDER BY m.seq LIMIT $3 FOR UPDATE OF m)",
        };
        let sql = format!(
            "WITH {picked} UPDATE queue_messages q SET receive_count = q.receive_count + 1, invisible_until = $2 + $4 FROM picked WHERE q.id = picked.id RETURNING q.{}",
            QCOLS.replace(", ", ", q.")
        );
        let rows = sqlx::query(&sql)
            .bind(queue)
            .bind(now)
            .bind(i64::from(max.clamp(1, 1000)))
            .bind(visibility_ms.max(0))
            .fetch_all(&mut *tx)
            .await
            .map_err(|e| map_err(e, false))?;
        tx.commit().await.map_err(|e| map_err(e, true))?;
        conn.keep();
        let mut out: Vec<Received> = rows
            .iter()
            .map(|r| {
                let message = queue_message(r)?;
                Ok(Received {
                    receipt: format!("{}:{}", message.id, message.receive_count),
                    message,
                })
            })
            .collect::<Result<_, StoreError>>()?;
        out.sort_by_key(|r| r.message.seq);
        Ok(out)
    }

    /// Runs a receipt-guarded update (`$1` id, `$2` receive count, `$3` now, then `$4` when
    /// `arg` is given); no row updated means the receipt is stale.
    async fn q_update(&self, sql: &str, receipt: &str, now: i64, arg: Option<Arg<'_>>) -> Result<(), StoreError> {
        let (id, n) = split_receipt(receipt)?;
        let mut q = sqlx::query(sql).bind(id).bind(n).bind(now);
        q = match arg {
            Some(Arg::Ms(v)) => q.bind(v),
            Some(Arg::Text(t)) => q.bind(t),
            None => q,
        };
        let done = q
            .execute(&self.pool)
            .await
            .map_err(|e| map_err(e, true))?
            .rows_affected();
        if done == 1 {
            Ok(())
        } else {
            Err(StoreError::StaleReceipt)
        }
    }

    async fn q_depth(&self, queue: &str, now: i64) -> Result<QueueDepth, StoreError> {
        let r = sqlx::query(
            "SELECT count(*) FILTER (WHERE state = 'live' AND available_at > $2) AS delayed, \
             count(*) FILTER (WHERE state = 'live' AND available_at <= $2 AND invisible_until > $2) AS in_flight, \
             count(*) FILTER (WHERE state = 'live' AND available_at <= $2 AND (invisible_until IS NULL OR invisible_until <= $2)) AS visible, \
             count(*) FILTER (WHERE state = 'dead') AS dead, min(created) FILTER (WHERE state = 'live') AS oldest \
             FROM queue_messages WHERE queue = $1",
        )
        .bind(queue)
        .bind(now)
        .fetch_one(&self.pool)
        .await
        .map_err(|e| map_err(e, false))?;
        let n = |c: &str| -> Result<u64, StoreError> {
            Ok(u64::try_from(r.try_get::<i64, _>(c).map_err(decode)?).unwrap_or(0))
        };
        let oldest: Option<i64> = r.try_get("oldest").map_err(decode)?;
        Ok(QueueDepth {
            visible: n("visible")?,
            in_flight: n("in_flight")?,
            delayed: n("delayed")?,
            dead: n("dead")?,
            oldest_age_ms: oldest.map(|o| (now - o).max(0)).unwrap_or(0),
        })
    }
}

fn index_col(i: Index) -> &'static str {
    match i {
        Index::K1 => "k1",
        Index::K2 => "k2",
    }
}

fn record_from_row(r: &PgRow) -> Result<Record, StoreError> {
    Ok(Record {
        id: r.try_get("id").map_err(decode)?,
        account: r.try_get("account").map_err(decode)?,
        version: r.try_get("version").map_err(decode)?,
        created: r.try_get("created").map_err(decode)?,
        k1: r.try_get("k1").map_err(decode)?,
        k2: r.try_get("k2").map_err(decode)?,
        body: r
            .try_get::<sqlx::types::Json<Box<RawValue>>, _>("body")
            .map(|sqlx::types::Json(raw)| JsonText::from(raw))
            .map_err(decode)?,
    })
}

fn event_from_row(r: &PgRow) -> Result<StoredEvent, StoreError> {
    let seq: i64 = r.try_get("seq").map_err(decode)?;
    let sqlx::types::Json(event) = r
        .try_get::<sqlx::types::Json<Event>, _>("body")
        .map_err(|e| StoreError::Corrupt(format!("event {seq}: {e}")))?;
    Ok(StoredEvent { seq, event })
}

fn decode(e: sqlx::Error) -> StoreError {
    StoreError::Corrupt(e.to_string())
}

/// Maps a driver error: database-side refusals that rolled back are retryable
/// (`Unavailable`); transport failures are `Ambiguous` when the request may have committed.
pub(crate) fn map_err(e: sqlx::Error, may_have_committed: bool) -> StoreError {
    match &e {
        sqlx::Error::Database(db) => refusal(db.code().as_deref().unwrap_or_default(), db.message()),
        sqlx::Error::PoolTimedOut | sqlx::Error::PoolClosed => StoreError::Unavailable(e.to_string()),
        sqlx::Error::Io(_) | sqlx::Error::Tls(_) | sqlx::Error::Protocol(_) | sqlx::Error::WorkerCrashed => {
            if may_have_committed {
                StoreError::Ambiguous(e.to_string())
            } else {
                StoreError::Unavailable(e.to_string())
            }
        }
        _ => StoreError::Corrupt(e.to_string()),
    }
}

/// What the database refusing a statement with SQLSTATE `code` means: a conflict raised by
/// `store_commit_framed` (PY001), a refusal that rolled back and may be retried (serialization
/// failure, deadlock, too many connections, shutdown), or a bug in the request.
pub(crate) fn refusal(code: &str, message: &str) -> StoreError {
    if code == "PY001" {
        return conflict_from(message);
    }
    if matches!(code, "40001" | "40P01" | "53300" | "57P01" | "57P03") {
        StoreError::Unavailable(format!("database refused ({code}); retry"))
    } else {
        StoreError::Invalid(format!("database error {code}: {message}"))
    }
}

/// Connection error texts can echo the URL; keep only the part before any credentials.
fn redact_url_error(s: &str) -> String {
    match s.find("://") {
        Some(i) => match s[i + 3..].find('@') {
            Some(at) => format!("{}://***@{}", &s[..i], &s[i + 3 + at + 1..]),
            None => s.to_owned(),
        },
        None => s.to_owned(),
    }
}

#[async_trait]
impl Backend for PgBackend {
    async fn execute(&self, req: Request) -> Result<Response, StoreError> {
        match req {
            Request::Ping => {
                sqlx::query("SELECT 1")
                    .execute(&self.pool)
                    .await
                    .map_err(|e| map_err(e, false))?;
                Ok(Response::Pong)
            }
            Request::Get { table, id } => Ok(Response::Record {
                record: self.reads.call((table, id)).await?,
            }),
            Request::Find {
                table,
                account,
                index,
                value,
                limit,
            } => Ok(Response::Records {
                records: self.find(table, account, index, value, limit).await?,
            }),
            Request::List(q) => Ok(Response::Page {
                page: self.list(q).await?,
            }),
            Request::Commit(txn) => Ok(Response::Committed {
                outcome: self.commit(txn).await?,
            }),
            Request::GetEvent { account, id } => {
                let row = sqlx::query("SELECT seq, body FROM events WHERE id = $1 AND account = $2")
                    .bind(&id)
                    .bind(&account)
                    .fetch_optional(&self.pool)
                    .await
                    .map_err(|e| map_err(e, false))?;
                Ok(Response::Event {
                    event: row.as_ref().map(event_from_row).transpose()?,
                })
            }
            Request::ListEvents(q) => Ok(Response::Events {
                page: self.list_events(q).await?,
            }),
            Request::EventsSince { after_seq, limit } => {
                let limit = i64::from(limit.clamp(1, 1000));
                let rows = sqlx::query("SELECT seq, body FROM events WHERE seq > $1 ORDER BY seq LIMIT $2")
                    .bind(after_seq)
                    .bind(limit + 1)
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| map_err(e, false))?;
                let mut items: Vec<StoredEvent> = rows.iter().map(event_from_row).collect::<Result<_, _>>()?;
                let has_more = items.len() as i64 > limit;
                items.truncate(limit as usize);
                Ok(Response::Events {
                    page: Page { items, has_more },
                })
            }
            Request::IdemBegin(b) => Ok(Response::Idem {
                outcome: self.idem_begin(b).await?,
            }),
            Request::IdemCheckpoint {
                account,
                key,
                owner,
                recovery_point,
            } => {
                let q = sqlx::query(
                    "UPDATE idempotency_keys SET recovery_point = $4 WHERE account = $1 AND key = $2 AND owner = $3",
                )
                .bind(&account)
                .bind(&key)
                .bind(&owner)
                .bind(recovery_point);
                let n = q
                    .execute(&self.pool)
                    .await
                    .map_err(|e| map_err(e, true))?
                    .rows_affected();
                self.idem_owned(n, &account, &key, false).await?;
                Ok(Response::Done)
            }
            Request::IdemFinish {
                account,
                key,
                owner,
                status,
                body,
            } => {
                // Commits asynchronously (migration 0006 says why that loses nothing).
                let n = self
                    .idem_call(serde_json::json!({
                        "op": "finish",
                        "account": account,
                        "key": key,
                        "owner": owner,
                        "status": status,
                        "response": body,
                    }))
                    .await?;
                self.idem_owned(n, &account, &key, false).await?;
                Ok(Response::Done)
            }
            Request::IdemRelease { account, key, owner } => {
                // Kept, unlocked and without an answer, so that a retry with the same parameters
                // resumes this use of the key; commits asynchronously (migration 0006).
                let n = self
                    .idem_call(serde_json::json!({"op": "release", "account": account, "key": key, "owner": owner}))
                    .await?;
                self.idem_owned(n, &account, &key, true).await?;
                Ok(Response::Done)
            }
            Request::QueueSend { queue, now, messages } => Ok(Response::Sent {
                ids: self.q_send(&queue, now, messages).await?,
            }),
            Request::QueueReceive {
                queue,
                now,
                max,
                visibility_ms,
                mode,
                max_receives,
            } => Ok(Response::Received {
                messages: self
                    .q_receive(&queue, now, max, visibility_ms, mode, max_receives)
                    .await?,
            }),
            Request::QueueAck { receipt, now } => {
                let sql = "UPDATE queue_messages SET state = 'acked', done_at = $3, invisible_until = NULL WHERE id = $1 AND receive_count = $2 AND state = 'live' AND invisible_until IS NOT NULL";
                self.q_update(sql, &receipt, now, None).await.map(|_| Response::Done)
            }
            Request::QueueAckAll { receipts, now } => {
                // A malformed receipt is stale like any other: the current ones are still
                // acknowledged, as the memory store does.
                let mut ids = Vec::with_capacity(receipts.len());
                let mut counts = Vec::with_capacity(receipts.len());
                for (id, n) in receipts.iter().filter_map(|r| split_receipt(r).ok()) {
                    ids.push(id);
                    counts.push(n);
                }
                let done = sqlx::query(
                    "UPDATE queue_messages q SET state = 'acked', done_at = $3, invisible_until = NULL \
                     FROM unnest($1::text[], $2::int[]) AS r(id, n) \
                     WHERE q.id = r.id AND q.receive_count = r.n AND q.state = 'live' AND q.invisible_until IS NOT NULL",
                )
                .bind(&ids)
                .bind(&counts)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(|e| map_err(e, true))?
                .rows_affected();
                if done == receipts.len() as u64 {
                    Ok(Response::Done)
                } else {
                    Err(StoreError::StaleReceipt)
                }
            }
            Request::QueueNack { receipt, now, delay_ms } => {
                let sql = "UPDATE queue_messages SET invisible_until = $3 + $4 WHERE id = $1 AND receive_count = $2 AND state = 'live' AND invisible_until IS NOT NULL";
                self.q_update(sql, &receipt, now, Some(Arg::Ms(delay_ms.max(0))))
                    .await
                    .map(|_| Response::Done)
            }
            Request::QueueExtend {
                receipt,
                now,
                visibility_ms,
            } => {
                let sql = "UPDATE queue_messages SET invisible_until = $3 + $4 WHERE id = $1 AND receive_count = $2 AND state = 'live' AND invisible_until > $3";
                self.q_update(sql, &receipt, now, Some(Arg::Ms(visibility_ms.max(0))))
                    .await
                    .map(|_| Response::Done)
            }
            Request::QueueDeadLetter { receipt, now, reason } => {
                let sql = "UPDATE queue_messages SET state = 'dead', done_at = $3, dead_reason = $4, invisible_until = NULL WHERE id = $1 AND receive_count = $2 AND state = 'live' AND invisible_until IS NOT NULL";
                self.q_update(sql, &receipt, now, Some(Arg::Text(&reason)))
                    .await
                    .map(|_| Response::Done)
            }
            Request::QueueDepth { queue, now } => Ok(Response::Depth {
                depth: self.q_depth(&queue, now).await?,
            }),
            Request::QueueDeadLetters { queue, limit } => {
                let sql = format!("SELECT {QCOLS}, dead_reason, done_at FROM queue_messages WHERE queue = $1 AND state = 'dead' ORDER BY seq LIMIT $2");
                let rows = sqlx::query(&sql)
                    .bind(&queue)
                    .bind(i64::from(limit.clamp(1, 1000)))
                    .fetch_all(&self.pool)
                    .await
                    .map_err(|e| map_err(e, false))?;
                let letters = rows
                    .iter()
                    .map(|r| {
                        Ok(DeadLetter {
                            message: queue_message(r)?,
                            reason: r
                                .try_get::<Option<String>, _>("dead_reason")
                                .map_err(decode)?
                                .unwrap_or_default(),
                            dead_at: r.try_get::<Option<i64>, _>("done_at").map_err(decode)?.unwrap_or(0),
                        })
                    })
                    .collect::<Result<_, StoreError>>()?;
                Ok(Response::DeadLetters { letters })
            }
            Request::QueueRedrive { id, now } => {
                let n = sqlx::query(
                    "UPDATE queue_messages SET state = 'live', receive_count = 0, available_at = $2, invisible_until = NULL, done_at = NULL, dead_reason = NULL, \
                     seq = nextval(pg_get_serial_sequence('queue_messages', 'seq')) WHERE id = $1 AND state = 'dead'",
                )
                .bind(&id)
                .bind(now)
                .execute(&self.pool)
                .await
                .map_err(|e| map_err(e, true))?
                .rows_affected();
                if n == 1 {
                    Ok(Response::Done)
                } else {
                    Err(StoreError::Invalid(format!("no dead letter {id}")))
                }
            }
            Request::OutboxPending { limit } => {
                // The first `limit` waiting events in sequence order, of either kind (see
                // `outbox_fan_out`); each kind is read through its own index, then the events
                // by their key.
                let rows = sqlx::query(
                    "SELECT seq, body FROM events WHERE seq = ANY(ARRAY( \
                        (SELECT seq FROM outbox_pending ORDER BY seq LIMIT $1) \
                        UNION (SELECT seq FROM events WHERE NOT relayed ORDER BY seq LIMIT $1))) \
                     ORDER BY seq LIMIT $1",
                )
                .bind(i64::from(limit.clamp(1, 10_000)))
                .fetch_all(&self.pool)
                .await
                .map_err(|e| map_err(e, false))?;
                let (mut events, mut unreadable) = (Vec::with_capacity(rows.len()), vec![]);
                for row in &rows {
                    match event_from_row(row) {
                        Ok(e) => events.push(e),
                        Err(_) => unreadable.push(row.try_get("seq").map_err(decode)?),
                    }
                }
                Ok(Response::Pending { events, unreadable })
            }
            Request::OutboxFanOut { now, events } => Ok(Response::FannedOut {
                seqs: self.outbox_fan_out(now, events).await?,
            }),
            Request::Reap { now, txn_retention_ms } => {
                sqlx::query("DELETE FROM queue_messages WHERE state = 'acked' AND done_at < $1")
                    .bind(now.saturating_sub(crate::memory::DEDUP_WINDOW_MS))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| map_err(e, false))?;
                let keys = sqlx::query("DELETE FROM idempotency_keys WHERE expires_at <= $1")
                    .bind(now)
                    .execute(&self.pool)
                    .await
                    .map_err(|e| map_err(e, false))?
                    .rows_affected();
                let txns = sqlx::query("DELETE FROM store_txns WHERE applied_at < $1")
                    .bind(now.saturating_sub(txn_retention_ms))
                    .execute(&self.pool)
                    .await
                    .map_err(|e| map_err(e, false))?
                    .rows_affected();
                Ok(Response::Reaped { keys, txns })
            }
        }
    }

    fn describe(&self) -> String {
        self.describe.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn url_errors_hide_credentials() {
        assert_eq!(
            redact_url_error("error connecting to postgres://u:secret@h:5432/db"),
            "error connecting to postgres://***@h:5432/db"
        );
        assert_eq!(redact_url_error("plain"), "plain");
    }
}
