//! Group commit: concurrent `store_commit` calls share one round trip and one database
//! transaction.
//!
//! A payment flow commits five or six times, each commit a transaction of its own, and at load
//! what a commit costs PostgreSQL is mostly the transaction around it (the round trip, the
//! snapshot, the commit record and the WAL flush), not its rows. So commits that arrive while
//! others are being written wait for them and then go together through migration 0009's
//! `store_commit_batch`, which runs each in its own subtransaction: one that conflicts rolls
//! back alone, and every answer is the one that transaction would have had on its own, in
//! the order the batch ran them. No caller is answered before the batch has committed; a
//! batch whose commit fails (or whose answer is lost) fails every transaction in it with the
//! error a lone commit would have had, so each caller retries under its own transaction id,
//! which the applied-transaction log makes safe.
//!
//! With nothing else being written, a commit goes at once, alone, through plain
//! `store_commit`: the waiting only happens when there is work to share it with.

use crate::model::StoreError;
use crate::pg_pool::PgConnections;
use std::collections::VecDeque;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use tokio::sync::oneshot;

/// What a commit answers: the applied transaction's event sequence numbers, or `None` when its
/// id was applied before.
pub(crate) type CommitAnswer = Result<Option<Vec<i64>>, StoreError>;

/// How commits are grouped (see `PgSettings`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct GroupCommit {
    /// Batches written at the same time, each on its own connection. `0` turns grouping off:
    /// every commit is then its own round trip, as before migration 0009.
    pub batches_in_flight: usize,
    /// Most transactions in one batch (at most [`GroupCommit::MAX_BATCH`]).
    pub max_batch: usize,
}

impl GroupCommit {
    /// The largest batch allowed. Each transaction of a batch is a subtransaction, and beyond
    /// 64 of them PostgreSQL stops caching a transaction's subtransactions in shared memory,
    /// which slows every other session's snapshots.
    pub const MAX_BATCH: usize = 32;
}

impl Default for GroupCommit {
    fn default() -> Self {
        GroupCommit {
            batches_in_flight: 2,
            max_batch: GroupCommit::MAX_BATCH,
        }
    }
}

/// How many batches have been written and how many transactions they carried, since the
/// store connected (a lone commit is a batch of one). Their ratio is the mean batch size.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct GroupCommitStats {
    /// Database transactions written for commits.
    pub batches: u64,
    /// Store transactions they carried.
    pub transactions: u64,
}

/// Commits waiting for a batch, and how many batches are being written.
#[derive(Default)]
struct Queue {
    waiting: VecDeque<Waiting>,
    writing: usize,
}

/// One transaction waiting for its batch: its `store_commit` argument and where its answer goes.
struct Waiting {
    txn: String,
    answer: oneshot::Sender<CommitAnswer>,
}

/// Groups the commits of one pool (see the module documentation).
#[derive(Clone)]
pub(crate) struct CommitBatcher {
    shared: Arc<Shared>,
}

struct Shared {
    pool: PgConnections,
    config: GroupCommit,
    queue: Mutex<Queue>,
    batches: AtomicU64,
    transactions: AtomicU64,
}

impl CommitBatcher {
    /// A batcher writing through `pool`.
    pub(crate) fn new(pool: PgConnections, config: GroupCommit) -> CommitBatcher {
        let config = GroupCommit {
            batches_in_flight: config.batches_in_flight,
            max_batch: config.max_batch.clamp(1, GroupCommit::MAX_BATCH),
        };
        CommitBatcher {
            shared: Arc::new(Shared {
                pool,
                config,
                queue: Mutex::new(Queue::default()),
                batches: AtomicU64::new(0),
                transactions: AtomicU64::new(0),
            }),
        }
    }

    /// Commits `txn` (a serialized `store_commit` argument), alone or in a batch.
    pub(crate) async fn commit(&self, txn: String) -> CommitAnswer {
        if self.shared.config.batches_in_flight == 0 {
            self.shared.count(1);
            return alone(&self.shared.pool, txn).await;
        }
        let (answer, answered) = oneshot::channel();
        let start_writer = {
            let mut q = self.shared.lock();
            q.waiting.push_back(Waiting { txn, answer });
            q.writing < self.shared.config.batches_in_flight && {
                q.writing += 1;
                true
            }
        };
        if start_writer {
            // The writer is a task of its own, so that a caller that stops waiting (its
            // request was cancelled) never strands the commits it would have carried.
            tokio::spawn(Writer::new(self.shared.clone()).run());
        }
        answered.await.unwrap_or_else(|_| {
            Err(StoreError::Ambiguous(
                "the batch carrying this commit ended without an answer".into(),
            ))
        })
    }
}

impl CommitBatcher {
    /// Batches and transactions written so far.
    pub(crate) fn stats(&self) -> GroupCommitStats {
        GroupCommitStats {
            batches: self.shared.batches.load(Ordering::Relaxed),
            transactions: self.shared.transactions.load(Ordering::Relaxed),
        }
    }
}

impl Shared {
    fn count(&self, transactions: usize) {
        self.batches.fetch_add(1, Ordering::Relaxed);
        self.transactions.fetch_add(transactions as u64, Ordering::Relaxed);
    }

    fn lock(&self) -> MutexGuard<'_, Queue> {
        // The queue is consistent after every statement under the lock, so a panic elsewhere
        // while it was held leaves nothing to repair.
        self.queue.lock().unwrap_or_else(|poisoned| poisoned.into_inner())
    }
}

/// Writes batches until no commit is waiting. It holds one of the `batches_in_flight` slots
/// and gives it back under the queue's lock in the same step that finds the queue empty, so a
/// commit queued after that step starts a writer of its own and none is left waiting.
struct Writer {
    shared: Arc<Shared>,
    holds_slot: bool,
}

impl Writer {
    fn new(shared: Arc<Shared>) -> Writer {
        Writer {
            shared,
            holds_slot: true,
        }
    }

    async fn run(mut self) {
        loop {
            let batch: Vec<Waiting> = {
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
            write(&self.shared.pool, batch).await;
        }
    }
}

impl Drop for Writer {
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

/// One transaction in one round trip, through plain `store_commit`.
async fn alone(pool: &PgConnections, txn: String) -> CommitAnswer {
    sqlx::query_scalar::<_, Option<Vec<i64>>>("SELECT store_commit($1::jsonb)")
        .bind(txn)
        .fetch_one(pool)
        .await
        .map_err(|e| crate::postgres::map_err(e, true))
}

/// Writes `batch` and answers each of its transactions.
async fn write(pool: &PgConnections, batch: Vec<Waiting>) {
    if batch.len() == 1 {
        for w in batch {
            let answer = alone(pool, w.txn).await;
            // A caller that stopped waiting needs no answer.
            let _ = w.answer.send(answer);
        }
        return;
    }
    let mut arg = String::with_capacity(batch.iter().map(|w| w.txn.len() + 1).sum::<usize>() + 2);
    arg.push('[');
    for (i, w) in batch.iter().enumerate() {
        if i > 0 {
            arg.push(',');
        }
        arg.push_str(&w.txn);
    }
    arg.push(']');
    let answers = sqlx::query_scalar::<_, sqlx::types::Json<Vec<BatchAnswer>>>("SELECT store_commit_batch($1::jsonb)")
        .bind(arg)
        .fetch_one(pool)
        .await
        .map_err(|e| crate::postgres::map_err(e, true));
    match answers {
        Ok(sqlx::types::Json(answers)) if answers.len() == batch.len() => {
            for (w, a) in batch.into_iter().zip(answers) {
                let _ = w.answer.send(a.into_answer());
            }
        }
        Ok(sqlx::types::Json(answers)) => {
            // The batch committed, but its answers cannot be matched to its transactions.
            let e = StoreError::Ambiguous(format!(
                "a batch of {} commits answered {} times",
                batch.len(),
                answers.len()
            ));
            for w in batch {
                let _ = w.answer.send(Err(e.clone()));
            }
        }
        Err(e) => {
            for w in batch {
                let _ = w.answer.send(Err(e.clone()));
            }
        }
    }
}

/// One transaction's answer in `store_commit_batch`'s result (migration 0009).
#[derive(serde::Deserialize)]
struct BatchAnswer {
    #[serde(default)]
    seqs: Option<Vec<i64>>,
    #[serde(default)]
    code: Option<String>,
    #[serde(default)]
    message: Option<String>,
}

impl BatchAnswer {
    fn into_answer(self) -> CommitAnswer {
        match self.code {
            Some(code) => Err(crate::postgres::refusal(&code, self.message.as_deref().unwrap_or(""))),
            None => Ok(self.seqs),
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
        assert_eq!(read(r#"{"seqs": [4, 5]}"#).ok(), Some(Ok(Some(vec![4, 5]))));
        assert_eq!(read(r#"{"seqs": []}"#).ok(), Some(Ok(Some(vec![]))));
        assert_eq!(read(r#"{"seqs": null}"#).ok(), Some(Ok(None)));
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
            let b = CommitBatcher::new(
                pool.clone(),
                GroupCommit {
                    batches_in_flight: 2,
                    max_batch: asked,
                },
            );
            assert_eq!(b.shared.config.max_batch, got, "asked {asked}");
        }
    }
}
