//! Storage for the payment system: records (customers, PaymentIntents, charges, the vault, …),
//! the event outbox, and Stripe-style idempotency keys.
//!
//! Every backend answers the same serializable [`Request`]s through the [`Backend`] trait:
//! [`postgres::PgBackend`] in production, [`memory::MemoryBackend`] for `paymentd dev` and the
//! simulator, and [`remote::RemoteBackend`], which carries requests over HTTP to a store served
//! elsewhere (the simulator's `db` host, so partitions and crashes of the database happen at
//! the network level). Services use the typed [`Db`] facade.
//!
//! Exactly-once building blocks: a [`Txn`] applies all its writes and appends its events
//! atomically (the transactional outbox); writes are conditional on versions (optimistic
//! concurrency); and every transaction carries an id that makes resubmission a no-op, so a
//! commit whose answer was lost can be retried safely.

#![warn(missing_docs)]

pub mod memory;
pub mod model;
mod pg_batch;
mod pg_pool;
pub mod postgres;
pub mod remote;
pub mod testing;

pub use model::*;
pub use pay_core::JsonText;

use async_trait::async_trait;
use pay_core::{Env, Event, Timestamp, TxnId};
use serde::de::DeserializeOwned;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;

/// A storage backend: applies one request atomically.
#[async_trait]
pub trait Backend: Send + Sync + 'static {
    /// Applies `req` and returns its answer.
    async fn execute(&self, req: Request) -> Result<Response, StoreError>;
    /// A description for logs and `/readyz` (never includes credentials).
    fn describe(&self) -> String;
}

/// An object kept in a record table.
pub trait Entity: Serialize + DeserializeOwned + Send + Sync {
    /// The table it lives in.
    const TABLE: Table;
    /// Primary key.
    fn id(&self) -> &str;
    /// Owning account (`""` if none).
    fn account(&self) -> &str;
    /// Creation time (orders lists).
    fn created(&self) -> Timestamp;
    /// First secondary index value (see [`Table`] for what each table indexes).
    fn k1(&self) -> Option<String> {
        None
    }
    /// Second secondary index value.
    fn k2(&self) -> Option<String> {
        None
    }
}

/// An entity together with the version it was read at (needed to update it).
#[derive(Debug, Clone, PartialEq)]
pub struct Versioned<T> {
    /// Version read.
    pub version: i64,
    /// The entity.
    pub value: T,
}

fn to_record<T: Entity>(value: &T) -> Result<Record, StoreError> {
    let body = JsonText::of(value).map_err(|e| StoreError::Invalid(format!("cannot encode {}: {e}", T::TABLE)))?;
    Ok(Record {
        id: value.id().to_owned(),
        account: value.account().to_owned(),
        version: 0,
        created: value.created().millis(),
        k1: value.k1(),
        k2: value.k2(),
        body,
    })
}

fn from_record<T: Entity>(r: Record) -> Result<Versioned<T>, StoreError> {
    let value = r
        .body
        .decode()
        .map_err(|e| StoreError::Corrupt(format!("{} {}: {e}", T::TABLE, r.id)))?;
    Ok(Versioned {
        version: r.version,
        value,
    })
}

/// How transient failures (unavailable, ambiguous) are retried. Every request is idempotent
/// (transactions carry ids, idempotency-key calls carry their owner), so retrying is safe.
#[derive(Debug, Clone, Copy)]
pub struct RetryPolicy {
    /// Attempts in total, including the first.
    pub attempts: u32,
    /// Delay before the second attempt; doubles each time.
    pub first_delay: Duration,
}

impl Default for RetryPolicy {
    fn default() -> Self {
        RetryPolicy {
            attempts: 4,
            first_delay: Duration::from_millis(50),
        }
    }
}

/// A transaction under construction.
pub struct TxnBuilder {
    txn: Txn,
    error: Option<StoreError>,
}

impl TxnBuilder {
    /// Inserts a new entity (fails the commit if its id exists).
    pub fn insert<T: Entity>(&mut self, value: &T) -> &mut Self {
        match to_record(value) {
            Ok(record) => self.txn.ops.push(Op::Insert {
                table: T::TABLE,
                record,
            }),
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// Replaces an entity read at `read_version` (fails the commit if it changed since).
    pub fn update<T: Entity>(&mut self, read_version: i64, value: &T) -> &mut Self {
        match to_record(value) {
            Ok(record) => self.txn.ops.push(Op::Update {
                table: T::TABLE,
                record,
                expected_version: read_version,
            }),
            Err(e) => self.error = Some(e),
        }
        self
    }

    /// Deletes an entity read at `read_version`.
    pub fn delete<T: Entity>(&mut self, id: &str, read_version: Option<i64>) -> &mut Self {
        self.txn.ops.push(Op::Delete {
            table: T::TABLE,
            id: id.to_owned(),
            expected_version: read_version,
        });
        self
    }

    /// Requires an entity to still be at `read_version` when the transaction commits.
    pub fn check<T: Entity>(&mut self, id: &str, read_version: i64) -> &mut Self {
        self.txn.ops.push(Op::Check {
            table: T::TABLE,
            id: id.to_owned(),
            expected_version: read_version,
        });
        self
    }

    /// Appends an event to the outbox in the same transaction.
    pub fn event(&mut self, event: Event) -> &mut Self {
        self.txn.events.push(event);
        self
    }

    /// The transaction id (for tracing).
    pub fn id(&self) -> &str {
        &self.txn.id
    }

    /// True when nothing was added.
    pub fn is_empty(&self) -> bool {
        self.txn.ops.is_empty() && self.txn.events.is_empty()
    }
}

/// The typed storage facade services use.
#[derive(Clone)]
pub struct Db {
    backend: Arc<dyn Backend>,
    env: Env,
    retry: RetryPolicy,
}

impl Db {
    /// A facade over `backend`, drawing transaction ids and times from `env`.
    pub fn new(backend: Arc<dyn Backend>, env: Env) -> Db {
        Db {
            backend,
            env,
            retry: RetryPolicy::default(),
        }
    }

    /// The same facade with another retry policy.
    pub fn with_retry(mut self, retry: RetryPolicy) -> Db {
        self.retry = retry;
        self
    }

    /// The backend.
    pub fn backend(&self) -> &Arc<dyn Backend> {
        &self.backend
    }

    /// Sends `req`, retrying transient failures per the policy.
    pub async fn execute(&self, req: Request) -> Result<Response, StoreError> {
        let mut delay = self.retry.first_delay;
        let mut ambiguous = false;
        let mut attempt = 1;
        loop {
            match self.backend.execute(req.clone()).await {
                Ok(r) => return Ok(r),
                Err(e) if e.is_transient() && attempt < self.retry.attempts => {
                    ambiguous |= matches!(e, StoreError::Ambiguous(_));
                    tracing::debug!(attempt, error = %e, "store request failed; retrying");
                    tokio::time::sleep(delay).await;
                    delay = delay.saturating_mul(2);
                    attempt += 1;
                }
                Err(StoreError::Unavailable(m)) if ambiguous => return Err(StoreError::Ambiguous(m)),
                Err(e) => return Err(e),
            }
        }
    }

    /// Checks that the backend answers.
    pub async fn ping(&self) -> Result<(), StoreError> {
        match self.backend.execute(Request::Ping).await? {
            Response::Pong => Ok(()),
            other => Err(unexpected(other)),
        }
    }

    /// One entity by id.
    pub async fn get<T: Entity>(&self, id: &str) -> Result<Option<Versioned<T>>, StoreError> {
        match self
            .execute(Request::Get {
                table: T::TABLE,
                id: id.to_owned(),
            })
            .await?
        {
            Response::Record { record } => record.map(from_record).transpose(),
            other => Err(unexpected(other)),
        }
    }

    /// One entity by id, only if it belongs to `account`.
    pub async fn get_owned<T: Entity>(&self, account: &str, id: &str) -> Result<Option<Versioned<T>>, StoreError> {
        Ok(self.get::<T>(id).await?.filter(|v| v.value.account() == account))
    }

    /// Entities whose secondary index equals `value`, oldest first.
    pub async fn find<T: Entity>(
        &self,
        account: Option<&str>,
        index: Index,
        value: &str,
        limit: u32,
    ) -> Result<Vec<Versioned<T>>, StoreError> {
        let req = Request::Find {
            table: T::TABLE,
            account: account.map(str::to_owned),
            index,
            value: value.to_owned(),
            limit,
        };
        match self.execute(req).await? {
            Response::Records { records } => records.into_iter().map(from_record).collect(),
            other => Err(unexpected(other)),
        }
    }

    /// A page of entities, newest first. `q.table` is set from `T`.
    pub async fn list<T: Entity>(&self, mut q: ListQuery) -> Result<Page<Versioned<T>>, StoreError> {
        q.table = T::TABLE;
        match self.execute(Request::List(q)).await? {
            Response::Page { page } => Ok(Page {
                items: page.items.into_iter().map(from_record).collect::<Result<_, _>>()?,
                has_more: page.has_more,
            }),
            other => Err(unexpected(other)),
        }
    }

    /// Starts a transaction with a fresh id.
    pub fn txn(&self) -> TxnBuilder {
        TxnBuilder {
            txn: Txn {
                id: TxnId::generate(self.env.entropy.as_ref()).to_string(),
                at: self.env.now().millis(),
                ops: vec![],
                events: vec![],
            },
            error: None,
        }
    }

    /// Commits a transaction atomically; a lost answer is retried under the same id.
    pub async fn commit(&self, txn: TxnBuilder) -> Result<CommitOutcome, StoreError> {
        if let Some(e) = txn.error {
            return Err(e);
        }
        match self.execute(Request::Commit(txn.txn)).await? {
            Response::Committed { outcome } => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// One event of `account`.
    pub async fn get_event(&self, account: &str, id: &str) -> Result<Option<StoredEvent>, StoreError> {
        match self
            .execute(Request::GetEvent {
                account: account.to_owned(),
                id: id.to_owned(),
            })
            .await?
        {
            Response::Event { event } => Ok(event),
            other => Err(unexpected(other)),
        }
    }

    /// A page of events, newest first.
    pub async fn list_events(&self, q: EventQuery) -> Result<Page<StoredEvent>, StoreError> {
        match self.execute(Request::ListEvents(q)).await? {
            Response::Events { page } => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// Outbox events after `after_seq` in sequence order.
    pub async fn events_since(&self, after_seq: i64, limit: u32) -> Result<Page<StoredEvent>, StoreError> {
        match self.execute(Request::EventsSince { after_seq, limit }).await? {
            Response::Events { page } => Ok(page),
            other => Err(unexpected(other)),
        }
    }

    /// Takes or inspects an idempotency key.
    pub async fn idem_begin(&self, b: IdemBegin) -> Result<IdemBeginOutcome, StoreError> {
        match self.execute(Request::IdemBegin(b)).await? {
            Response::Idem { outcome } => Ok(outcome),
            other => Err(unexpected(other)),
        }
    }

    /// Records how far a request holding `key` got.
    pub async fn idem_checkpoint(&self, account: &str, key: &str, owner: &str, point: &str) -> Result<(), StoreError> {
        let req = Request::IdemCheckpoint {
            account: account.into(),
            key: key.into(),
            owner: owner.into(),
            recovery_point: point.into(),
        };
        self.expect_done(req).await
    }

    /// Saves the final response for `key` and releases it.
    pub async fn idem_finish(
        &self,
        account: &str,
        key: &str,
        owner: &str,
        status: u16,
        body: &str,
    ) -> Result<(), StoreError> {
        let req = Request::IdemFinish {
            account: account.into(),
            key: key.into(),
            owner: owner.into(),
            status,
            body: body.into(),
        };
        self.expect_done(req).await
    }

    /// Unlocks `key` without saving an answer (the request failed with a 5xx): a retry with the
    /// same parameters resumes this use of the key, a request with other parameters starts a
    /// new one.
    pub async fn idem_release(&self, account: &str, key: &str, owner: &str) -> Result<(), StoreError> {
        self.expect_done(Request::IdemRelease {
            account: account.into(),
            key: key.into(),
            owner: owner.into(),
        })
        .await
    }

    /// Deletes expired idempotency keys and old transaction ids; returns (keys, txns).
    pub async fn reap(&self, now: Timestamp, txn_retention: Duration) -> Result<(u64, u64), StoreError> {
        let req = Request::Reap {
            now: now.millis(),
            txn_retention_ms: i64::try_from(txn_retention.as_millis()).unwrap_or(i64::MAX),
        };
        match self.execute(req).await? {
            Response::Reaped { keys, txns } => Ok((keys, txns)),
            other => Err(unexpected(other)),
        }
    }

    async fn expect_done(&self, req: Request) -> Result<(), StoreError> {
        match self.execute(req).await? {
            Response::Done => Ok(()),
            other => Err(unexpected(other)),
        }
    }
}

fn unexpected(r: Response) -> StoreError {
    StoreError::Corrupt(format!("unexpected reply {:?}", std::mem::discriminant(&r)))
}
