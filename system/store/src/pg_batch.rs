//! Group commit: concurrent calls of the store's hot functions share one round trip and one
//! database transaction.
//!
//! A payment flow commits five or six times, takes and finishes two or three idempotency keys
//! and updates two fraud velocity counters, each call a transaction of its own, and at load
//! what such a call costs PostgreSQL is mostly the transaction around it (the round trip, the
//! snapshot, the commit record and the WAL flush), not its rows. So calls that arrive while
//! others of their kind are being written wait for them and then go together: commits through
//! `store_commit_framed_batch` (migrations 0017, 0018), the calls that commit asynchronously
//! (idempotency keys, velocity counters) through migration 0011's `async_batch`. Both run each
//! call in its own subtransaction: one that conflicts or fails rolls back alone, and every
//! answer is the one that call would have had on its own, in the order the batch ran them. No
//! caller is answered before the batch has committed; a batch whose commit fails (or whose
//! answer is lost) fails every call in it with the error a lone call would have had, so each
//! caller retries under its own transaction id or key owner, which makes the retry safe.
//!
//! Commits and asynchronous calls are separate lanes and never share a batch: the latter commit
//! without waiting for their WAL to be flushed (migration 0006 says why that loses nothing),
//! which a batch holding a commit must not do. With nothing else being written, a call goes at once,
//! alone, through its plain function: the waiting only happens when there is work to share it
//! with.
//!
//! The queueing is the same for any [`Lane`]: the commits ([`CommitLane`]), the asynchronous
//! calls (a [`JsonLane`]), and the reads of one record by id (`Reads` in postgres.rs), which
//! share a statement for the round trip alone.

use crate::model::StoreError;
use crate::pg_pool::PgConnections;
use std::collections::VecDeque;
use std::future::Future;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// What a call of a [`JsonLane`] answers: its function's result as JSON.
pub(crate) type CallAnswer = Result<serde_json::Value, StoreError>;

/// A batch's answers, one per call in the order of the calls, or the error every call of the
/// batch gets (the round trip failed, or the batch as a whole was refused).
pub(crate) type BatchAnswers<A> = Result<Vec<Result<A, StoreError>>, StoreError>;

/// One kind of call that concurrent callers share batches of: how one call runs alone and how
/// several run in one round trip.
pub(crate) trait Lane: Send + Sync + 'static {
    /// One call's argument.
    type Call: Send + 'static;
    /// One call's answer.
    type Answer: Send + 'static;
    /// Runs `call` alone, in a round trip of its own.
    fn alone(
        &self,
        pool: &PgConnections,
        call: Self::Call,
    ) -> impl Future<Output = Result<Self::Answer, StoreError>> + Send;
    /// Runs `calls` in one round trip.
    fn batch(
        &self,
        pool: &PgConnections,
        calls: Vec<Self::Call>,
    ) -> impl Future<Output = BatchAnswers<Self::Answer>> + Send;
}

/// A lane of calls of one SQL function taking and answering JSON.
#[derive(Debug, Clone, Copy)]
pub(crate) struct JsonLane {
    /// One call alone: a statement taking the call's JSON as `$1` and answering JSON.
    single: &'static str,
    /// Several calls: a statement taking a JSON array of calls and answering an array of
    /// `{"ok": answer}` or `{"code": SQLSTATE, "message": ...}`, one per call, in order.
    batch: &'static str,
}

/// Calls that commit asynchronously (`async_call`, migration 0011): taking, finishing and
/// releasing idempotency keys, observing attempts and recording outcomes for fraud velocity.
pub(crate) const ASYNC_CALLS: JsonLane = JsonLane {
    single: "SELECT async_call($1::jsonb)",
    batch: "SELECT async_batch($1::jsonb)",
};

/// How calls are grouped (see `PgSettings`); each lane, commits and asynchronous calls, has
/// its own batches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// Batches of each lane written at the same time, each on its own connection. `0` turns
    /// grouping off: every call is then its own round trip, as before migration 0009. More than
    /// one lets a lane's batches deadlock each other (see [`GroupCommit::default`]).
    pub batches_in_flight: usize,
    /// Most calls in one batch (at most [`GroupCommit::MAX_BATCH`]).
    pub max_batch: usize,
}

impl GroupCommit {
    /// The largest batch allowed. Each transaction of a batch is a subtransaction, and beyond
    /// 64 of them PostgreSQL stops caching a transaction's subtransactions in shared memory,
    /// which slows every other session's snapshots.
    pub const MAX_BATCH: usize = 32;
}

impl Default for GroupCommit {
    /// One batch per lane at a time. Two batches of one lane in flight can deadlock each other
    /// (each holding a row the other's next call needs, as two racing requests with the same
    /// keys or attempts in opposite orders do); PostgreSQL breaks that only after
    /// `deadlock_timeout` (a second), failing one call. Calls written one at a time, as before
    /// grouping, each hold their rows alone and never deadlock, and neither do one lane's
    /// batches written one after another: the two writing lanes touch different tables, and
    /// reads take no row locks.
    fn default() -> Self {
        GroupCommit {
            batches_in_flight: 1,
            max_batch: GroupCommit::MAX_BATCH,
        }
    }
}

/// How many batches of one lane have been written and how many calls they carried, since the
/// store connected (a lone call is a batch of one). Their ratio is the mean batch size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct BatchStats {
    /// Database transactions written.
    pub batches: u64,
    /// Calls they carried.
    pub calls: u64,
}

/// Every lane's [`BatchStats`].
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Commits (store transactions).
    pub commits: BatchStats,
    /// Calls that commit asynchronously (idempotency keys, fraud velocity counters).
    pub asynchronous: BatchStats,
    /// Reads of one record by id.
    pub reads: BatchStats,
}

/// Calls waiting for a batch, and how many batches are being written.
struct Queue<L: Lane> {
    waiting: VecDeque<Waiting<L>>,
    writing: usize,
}

/// One call waiting for its batch: its argument and where its answer goes.
struct Waiting<L: Lane> {
    call: L::Call,
    answer: oneshot::Sender<Result<L::Answer, StoreError>>,
}

/// Groups the calls of one lane on one pool (see the module documentation).
pub(crate) struct Batcher<L: Lane> {
    shared: Arc<Shared<L>>,
}

impl<L: Lane> Clone for Batcher<L> {
    fn clone(&self) -> Self {
        Batcher {
            shared: self.shared.clone(),
        }
    }
}

struct Shared<L: Lane> {
    pool: PgConnections,
    lane: L,
    config: GroupCommit,
    queue: Mutex<Queue<L>>,
    batches: AtomicU64,
    calls: AtomicU64,
}

impl<L: Lane> Batcher<L> {
    /// A batcher writing `lane`'s calls through `pool`.
    pub(crate) fn new(pool: PgConnections, lane: L, config: GroupCommit) -> Batcher<L> {
        let config = GroupCommit {
            batches_in_flight: config.batches_in_flight,
            max_batch: config.max_batch.clamp(1, GroupCommit::MAX_BATCH),
        };
        Batcher {
            shared: Arc::new(Shared {
                pool,
                lane,
                config,
                queue: Mutex::new(Queue {
                    waiting: VecDeque::new(),
                    writing: 0,
                }),
                batches: AtomicU64::new(0),
                calls: AtomicU64::new(0),
            }),
        }
    }

    /// Runs `call`, alone or in a batch.
    pub(crate) async fn call(&self, call: L::Call) -> Result<L::Answer, StoreError> {
        if self.shared.config.batches_in_flight == 0 {
            self.shared.count(1);
            return self.shared.lane.alone(&self.shared.pool, call).await;
        }
        let (answer, answered) = oneshot::channel();
        let start_writer = {
            let mut q = self.shared.lock();
            q.waiting.push_back(Waiting { call, answer });
            q.writing < self.shared.config.batches_in_flight && {
                q.writing += 1;
                true
            }
        };
        if start_writer {
            // The writer is a task of its own, so that a caller that stops waiting (its
            // request was cancelled) never strands the calls it would have carried.
            tokio::spawn(Writer::new(self.shared.clone()).run());
        }
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::Ambiguous(
                "the batch carrying this call ended without an answer".into(),
            ))
        })
    }

    /// Batches and calls written so far.
    pub(crate) fn stats(&self) -> BatchStats {
        BatchStats {
            batches: self.shared.batches.load(Ordering::Relaxed),
            calls: self.shared.calls.load(Ordering::Relaxed),
        }
    }
}

impl Batcher<JsonLane> {
    /// Runs `call` like [`Batcher::call`] and reads its answer as a `T`; `what` names the
    /// function in the error when the answer does not read.
    pub(crate) async fn call_for<T: serde::de::DeserializeOwned>(
        &self,
        call: String,
        what: &str,
    ) -> Result<T, StoreError> {
        serde_json::from_value(self.call(call).await?)
            .map_err(|e| StoreError::Corrupt(format!("unreadable answer of {what}: {e}")))
    }
}

impl<L: Lane> Shared<L> {
    fn count(&self, calls: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.calls.fetch_add(calls as u64, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Queue<L>> {
        // The queue is consistent after every statement under the lock, so a panic elsewhere
        // while it was held leaves nothing to repair.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Writes batches until no call is waiting. It holds one of the `batches_in_flight` slots
/// and gives it back under the queue's lock in the same step that finds the queue empty, so a
/// call queued after that step starts a writer of its own and none is left waiting.
struct Writer<L: Lane> {
    shared: Arc<Shared<L>>,
    holds_slot: bool,
}

impl<L: Lane> Writer<L> {
    fn new(shared: Arc<Shared<L>>) -> Writer<L> {
        Writer {
            shared,
            holds_slot: true,
        }
    }

    async fn run(mut self) {
        loop {
            let batch: Vec<Waiting<L>> = {
                let mut q = self.shared.lock();
                if q.waiting.is_empty() {
                    q.writing -= 1;
                    self.holds_slot = false;
                    return;
                }
                let n = q.waiting.len().min(self.shared.config.max_batch);
                q.waiting.drain(..n).collect()
            };
            self.shared.count(batch.len());
            write(&self.shared, batch).await;
        }
    }
}

impl<L: Lane> Drop for Writer<L> {
    /// Only reached with the slot still held if the writer panicked: give the slot back, and
    /// start another writer for whatever is waiting.
    fn drop(&mut self) {
        if !self.holds_slot {
            return;
        }
        let restart = {
            let mut q = self.shared.lock();
            q.writing -= 1;
            !q.waiting.is_empty() && {
                q.writing += 1;
                true
            }
        };
        if restart {
            if let Ok(rt) = tokio::runtime::Handle::try_current() {
                rt.spawn(Writer::new(self.shared.clone()).run());
            }
        }
    }
}

/// Writes `batch` and answers each of its calls: a batch of one through the lane's plain
/// statement, more in one round trip.
async fn write<L: Lane>(shared: &Shared<L>, batch: Vec<Waiting<L>>) {
    if batch.len() == 1 {
        for w in batch {
            let answer = shared.lane.alone(&shared.pool, w.call).await;
            // A caller that stopped waiting needs no answer.
            let _ = w.answer.send(answer);
        }
        return;
    }
    let n = batch.len();
    let (calls, answers_to): (Vec<L::Call>, Vec<_>) = batch.into_iter().map(|w| (w.call, w.answer)).unzip();
    match shared.lane.batch(&shared.pool, calls).await {
        Ok(answers) if answers.len() == n => {
            for (to, a) in answers_to.into_iter().zip(answers) {
                let _ = to.send(a);
            }
        }
        Ok(answers) => {
            // The batch ran, but its answers cannot be matched to its calls.
            let e = StoreError::Ambiguous(format!("a batch of {n} calls answered {} times", answers.len()));
            for to in answers_to {
                let _ = to.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for to in answers_to {
                let _ = to.send(Err(e.clone()));
            }
        }
    }
}

/// One store transaction as migration 0017's `store_commit_framed` takes it: the transaction
/// as JSON without its bodies, and the bodies, one per insert and update in the order of the
/// ops, then one per event in the order of the events. PostgreSQL then parses only the small
/// envelope into `jsonb` and checks the bodies as the `json` they are stored as.
pub(crate) struct FramedTxn {
    /// The transaction without its bodies.
    pub(crate) envelope: String,
    /// The bodies' JSON text.
    pub(crate) bodies: Vec<String>,
}

/// Commits (`store_commit_framed`, migration 0017): a call is a transaction; the answer its
/// events' sequence numbers, or `None` when its id was applied before.
#[derive(Debug, Clone, Copy)]
pub(crate) struct CommitLane;

impl Lane for CommitLane {
    type Call = FramedTxn;
    type Answer = Option<Vec<i64>>;

    async fn alone(&self, pool: &PgConnections, call: FramedTxn) -> Result<Option<Vec<i64>>, StoreError> {
        sqlx::query_scalar::<_, Option<Vec<i64>>>("SELECT store_commit_framed($1::jsonb, $2::text[])")
            .bind(call.envelope)
            .bind(call.bodies)
            .fetch_one(pool)
            .await
            .map_err(|e| crate::postgres::map_err(e, true))
    }

    async fn batch(&self, pool: &PgConnections, calls: Vec<FramedTxn>) -> BatchAnswers<Option<Vec<i64>>> {
        let mut envelopes = Vec::with_capacity(calls.len());
        let mut counts = Vec::with_capacity(calls.len());
        let mut bodies = Vec::with_capacity(calls.iter().map(|c| c.bodies.len()).sum());
        for call in calls {
            counts.push(
                i32::try_from(call.bodies.len())
                    .map_err(|_| StoreError::Invalid(format!("a transaction of {} bodies", call.bodies.len())))?,
            );
            envelopes.push(call.envelope);
            bodies.extend(call.bodies);
        }
        let sqlx::types::Json(answers) = sqlx::query_scalar::<_, sqlx::types::Json<Vec<BatchAnswer>>>(
            "SELECT store_commit_framed_batch($1::text[], $2::text[], $3::int[])",
        )
        .bind(envelopes)
        .bind(bodies)
        .bind(counts)
        .fetch_one(pool)
        .await
        .map_err(|e| crate::postgres::map_err(e, true))?;
        Ok(answers
            .into_iter()
            .map(|a| {
                a.into_answer().and_then(|seqs| {
                    serde_json::from_value(seqs)
                        .map_err(|e| StoreError::Corrupt(format!("unreadable answer of store_commit_framed: {e}")))
                })
            })
            .collect())
    }
}

impl Lane for JsonLane {
    type Call = String;
    type Answer = serde_json::Value;

    async fn alone(&self, pool: &PgConnections, call: String) -> CallAnswer {
        sqlx::query_scalar::<_, Option<sqlx::types::Json<serde_json::Value>>>(self.single)
            .bind(call)
            .fetch_one(pool)
            .await
            .map(|v| v.map(|j| j.0).unwrap_or(serde_json::Value::Null))
            .map_err(|e| crate::postgres::map_err(e, true))
    }

    async fn batch(&self, pool: &PgConnections, calls: Vec<String>) -> BatchAnswers<serde_json::Value> {
        let mut arg = String::with_capacity(calls.iter().map(|c| c.len() + 1).sum::<usize>() + 2);
        arg.push('[');
        for (i, c) in calls.iter().enumerate() {
            if i > 0 {
                arg.push(',');
            }
            arg.push_str(c);
        }
        arg.push(']');
        let sqlx::types::Json(answers) = sqlx::query_scalar::<_, sqlx::types::Json<Vec<BatchAnswer>>>(self.batch)
            .bind(arg)
            .fetch_one(pool)
            .await
            .map_err(|e| crate::postgres::map_err(e, true))?;
        Ok(answers.into_iter().map(BatchAnswer::into_answer).collect())
    }
}

/// One call's answer in a batch's result (migrations 0011 and 0017; 0017, as 0009 before it,
/// names the answer `seqs`).
#[derive(serde::Deserialize)]
struct BatchAnswer {
    #[serde(default, alias = "seqs")]
    ok: serde_json::Value,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl BatchAnswer {
    fn into_answer(self) -> CallAnswer {
        match self.code {
            Some(code) => Err(crate::postgres::refusal(&code, self.message.as_deref().unwrap_or(""))),
            None => Ok(self.ok),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::model::ConflictKind;

    #[test]
    fn answers_read_as_lone_commits_would() {
        let read = |s: &str| serde_json::from_str::<BatchAnswer>(s).map(BatchAnswer::into_answer);
        assert_eq!(read(r#"{"seqs": [4, 5]}"#).ok(), Some(Ok(serde_json::json!([4, 5]))));
        assert_eq!(read(r#"{"seqs": []}"#).ok(), Some(Ok(serde_json::json!([]))));
        assert_eq!(read(r#"{"seqs": null}"#).ok(), Some(Ok(serde_json::Value::Null)));
        assert_eq!(read(r#"{"ok": 1}"#).ok(), Some(Ok(serde_json::json!(1))));
        assert_eq!(
            read(r#"{"ok": {"state": "started"}}"#).ok(),
            Some(Ok(serde_json::json!({"state": "started"})))
        );
        let conflict = read(
            r#"{"code": "PY001", "message": "{\"table\":\"charges\",\"id\":\"ch_1\",\"kind\":\"exists\",\"expected\":null,\"actual\":null}"}"#,
        );
        assert!(
            matches!(
                conflict,
                Ok(Err(StoreError::Conflict { ref id, kind: ConflictKind::Exists, .. })) if id == "ch_1"
            ),
            "{conflict:?}"
        );
        assert!(matches!(
            read(r#"{"code": "40P01", "message": "deadlock detected"}"#),
            Ok(Err(StoreError::Unavailable(_)))
        ));
        assert!(matches!(
            read(r#"{"code": "PY002", "message": "unknown store op x"}"#),
            Ok(Err(StoreError::Invalid(_)))
        ));
    }

    #[test]
    fn batches_are_bounded() {
        let opts = sqlx::postgres::PgConnectOptions::new();
        let limits = crate::pg_pool::PoolLimits {
            max_connections: 1,
            acquire_timeout: std::time::Duration::from_secs(1),
            max_lifetime: std::time::Duration::from_secs(60),
        };
        let pool = PgConnections::new(opts, limits);
        for (asked, got) in [(0, 1), (1, 1), (8, 8), (32, 32), (33, 32), (usize::MAX, 32)] {
            let b = Batcher::new(
                pool.clone(),
                ASYNC_CALLS,
                GroupCommit {
                    batches_in_flight: 2,
                    max_batch: asked,
                },
            );
            assert_eq!(b.shared.config.max_batch, got, "asked {asked}");
        }
    }
}
