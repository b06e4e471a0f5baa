//! The webhook queue: SQS-like messaging behind the [`Queue`] trait.
//!
//! * **Send** with an optional message group (FIFO) and deduplication id; a send whose dedup
//!   id is already known (live, or acknowledged within the last 24 h) is a no-op returning the
//!   existing message — which is what makes a re-sent fan-out harmless.
//! * **Receive** hides messages for a visibility timeout; a message not acknowledged in time
//!   is delivered again, with its receive count incremented. Each receive has its own receipt;
//!   a receipt from an earlier receive is stale and refused.
//! * **Ack / nack (delayed redelivery) / extend / dead-letter**; a message received more than
//!   `max_receives` times goes to the dead letters, from where it can be redriven.
//! * **Standard** queues deliver any visible message, in parallel; **FIFO** queues deliver each
//!   message group strictly in send order with at most one message in flight per group.
//! * **The outbox fan-out** ([`Outbox`]) turns committed events into messages exactly once: a
//!   consumer reads the pending events, decides each one's messages, and sends them in one
//!   transaction with marking the events, which sends only the events no other fan-out
//!   marked first. So an event's messages are sent once or not at all, with no queue hop
//!   between the outbox and its consumer.
//!
//! [`StoreQueue`] implements the trait on the storage backends (PostgreSQL with
//! `FOR UPDATE SKIP LOCKED`, memory, and the simulator's remote db); docs/queue.md explains how
//! to put the queue on NATS JetStream or SQS at scale.

#![warn(missing_docs)]

use async_trait::async_trait;
use pay_core::{Entropy, Env};
use pay_store::{
    Db, DeadLetter, FanOutEvent, NewMessage, QueueDepth, QueueMode, Received, Request, Response, StoreError,
    StoredEvent,
};
use std::time::Duration;

pub use pay_store::{QueueMessage, QueueMode as Mode};

/// A message to send.
#[derive(Debug, Clone)]
pub struct Outgoing {
    /// FIFO group.
    pub group: Option<String>,
    /// Deduplication id.
    pub dedup: Option<String>,
    /// Payload.
    pub body: serde_json::Value,
    /// Delay before it can be received.
    pub delay: Duration,
}

/// A queue's settings.
#[derive(Debug, Clone)]
pub struct QueueConfig {
    /// Name.
    pub name: String,
    /// Standard or FIFO.
    pub mode: QueueMode,
    /// How long a received message stays hidden.
    pub visibility: Duration,
    /// Dead-letter after this many receives.
    pub max_receives: u32,
}

/// Why a queue operation failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum QueueError {
    /// The receipt is from an earlier receive, or the message is gone.
    #[error("stale or unknown receipt")]
    StaleReceipt,
    /// The storage behind the queue failed.
    #[error("queue storage: {0}")]
    Storage(StoreError),
}

impl From<StoreError> for QueueError {
    fn from(e: StoreError) -> QueueError {
        match e {
            StoreError::StaleReceipt => QueueError::StaleReceipt,
            other => QueueError::Storage(other),
        }
    }
}

/// SQS-like queue operations. Time comes from the implementation's `Env`, so tests and the
/// simulator control it.
#[async_trait]
pub trait Queue: Send + Sync {
    /// Sends messages; returns their ids (existing ids for deduplicated sends).
    async fn send(&self, messages: Vec<Outgoing>) -> Result<Vec<String>, QueueError>;
    /// Receives up to `max` messages.
    async fn receive(&self, max: u32) -> Result<Vec<Received>, QueueError>;
    /// Deletes a received message.
    async fn ack(&self, receipt: &str) -> Result<(), QueueError>;
    /// Acknowledges several received messages in one round trip (a consumer that worked
    /// through a batch); an error when any receipt was stale, the current ones acknowledged.
    async fn ack_all(&self, receipts: &[String]) -> Result<(), QueueError>;
    /// Returns a received message, deliverable again after `delay`.
    async fn nack(&self, receipt: &str, delay: Duration) -> Result<(), QueueError>;
    /// Keeps a received message hidden for another `visibility`.
    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError>;
    /// Moves a received message to the dead letters.
    async fn dead_letter(&self, receipt: &str, reason: &str) -> Result<(), QueueError>;
    /// Counts (for metrics).
    async fn depth(&self) -> Result<QueueDepth, QueueError>;
    /// Dead letters, oldest first.
    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, QueueError>;
    /// Puts a dead letter back.
    async fn redrive(&self, id: &str) -> Result<(), QueueError>;
}

/// A queue stored in the platform's storage backend.
#[derive(Clone)]
pub struct StoreQueue {
    db: Db,
    env: Env,
    config: QueueConfig,
}

fn ms(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

fn unexpected() -> QueueError {
    QueueError::Storage(StoreError::Corrupt("unexpected reply".into()))
}

impl StoreQueue {
    /// The queue `config.name` in `db`.
    pub fn new(db: Db, env: Env, config: QueueConfig) -> StoreQueue {
        StoreQueue { db, env, config }
    }

    /// The settings.
    pub fn config(&self) -> &QueueConfig {
        &self.config
    }

    fn now(&self) -> i64 {
        self.env.now().millis()
    }

    async fn done(&self, req: Request) -> Result<(), QueueError> {
        match self.db.execute(req).await? {
            Response::Done => Ok(()),
            _ => Err(unexpected()),
        }
    }

    /// The message `m` becomes in this queue. With a dedup id the message id derives from it,
    /// so a resent message is the same message even when the first answer was lost.
    fn prepare(&self, m: Outgoing) -> NewMessage {
        let entropy: &dyn Entropy = self.env.entropy.as_ref();
        NewMessage {
            id: match &m.dedup {
                Some(d) => format!(
                    "msg_{}",
                    pay_core::ids::EventId::derived(&[&self.config.name, d])
                        .as_str()
                        .trim_start_matches("evt_")
                ),
                None => format!("msg_{}", pay_core::ids::random_base62(entropy, 24)),
            },
            group: m.group,
            dedup: m.dedup,
            body: m.body,
            delay_ms: ms(m.delay),
        }
    }
}

/// The transactional outbox seen from its consumer: services commit events with their
/// changes; the consumer (the webhook fan-out) reads the pending ones and turns each into
/// messages on [`StoreQueue`]s exactly once (see the crate docs).
#[derive(Clone)]
pub struct Outbox {
    db: Db,
    env: Env,
}

/// One event's part of a fan-out: its outbox sequence number and its messages.
pub struct FanOut<'a> {
    /// The event's [`StoredEvent::seq`].
    pub seq: i64,
    /// The messages, each with its queue, in send order.
    pub messages: Vec<(&'a StoreQueue, Outgoing)>,
}

/// What [`Outbox::pending`] found.
#[derive(Debug, Default)]
pub struct Pending {
    /// Events waiting for the fan-out, in sequence order.
    pub events: Vec<StoredEvent>,
    /// Sequence numbers of waiting rows that are not events this version can read. Fan them
    /// out with no messages (and report them), or they are read again on every pass.
    pub unreadable: Vec<i64>,
}

impl Pending {
    /// Whether nothing is waiting.
    pub fn is_empty(&self) -> bool {
        self.events.is_empty() && self.unreadable.is_empty()
    }

    /// How many rows are waiting, readable or not.
    pub fn len(&self) -> usize {
        self.events.len() + self.unreadable.len()
    }
}

impl Outbox {
    /// The outbox of `db`.
    pub fn new(db: Db, env: Env) -> Outbox {
        Outbox { db, env }
    }

    /// Up to `limit` committed events not fanned out yet, oldest first. Nothing is locked:
    /// two consumers may read the same events, and [`Outbox::fan_out`] sends each once.
    pub async fn pending(&self, limit: u32) -> Result<Pending, QueueError> {
        match self.db.execute(Request::OutboxPending { limit }).await? {
            Response::Pending { events, unreadable } => Ok(Pending { events, unreadable }),
            _ => Err(unexpected()),
        }
    }

    /// In one transaction, marks the events fanned out and sends their messages, only for the
    /// events no fan-out marked before; returns the sequence numbers it marked. An error
    /// leaves every event pending (or, when the outcome is unknown, marked with its messages
    /// sent): the next pass reads them again either way.
    pub async fn fan_out(&self, events: Vec<FanOut<'_>>) -> Result<Vec<i64>, QueueError> {
        if events.is_empty() {
            return Ok(vec![]);
        }
        let events = events
            .into_iter()
            .map(|e| FanOutEvent {
                seq: e.seq,
                messages: e
                    .messages
                    .into_iter()
                    .map(|(q, m)| (q.config.name.clone(), q.prepare(m)))
                    .collect(),
            })
            .collect();
        match self
            .db
            .execute(Request::OutboxFanOut {
                now: self.env.now().millis(),
                events,
            })
            .await?
        {
            Response::FannedOut { seqs } => Ok(seqs),
            _ => Err(unexpected()),
        }
    }
}

#[async_trait]
impl Queue for StoreQueue {
    async fn send(&self, messages: Vec<Outgoing>) -> Result<Vec<String>, QueueError> {
        let messages = messages.into_iter().map(|m| self.prepare(m)).collect();
        match self
            .db
            .execute(Request::QueueSend {
                queue: self.config.name.clone(),
                now: self.now(),
                messages,
            })
            .await?
        {
            Response::Sent { ids } => Ok(ids),
            _ => Err(unexpected()),
        }
    }

    async fn receive(&self, max: u32) -> Result<Vec<Received>, QueueError> {
        let req = Request::QueueReceive {
            queue: self.config.name.clone(),
            now: self.now(),
            max,
            visibility_ms: ms(self.config.visibility),
            mode: self.config.mode,
            max_receives: self.config.max_receives,
        };
        match self.db.execute(req).await? {
            Response::Received { messages } => Ok(messages),
            _ => Err(unexpected()),
        }
    }

    async fn ack(&self, receipt: &str) -> Result<(), QueueError> {
        self.done(Request::QueueAck {
            receipt: receipt.to_owned(),
            now: self.now(),
        })
        .await
    }

    async fn ack_all(&self, receipts: &[String]) -> Result<(), QueueError> {
        if receipts.is_empty() {
            return Ok(());
        }
        self.done(Request::QueueAckAll {
            receipts: receipts.to_vec(),
            now: self.now(),
        })
        .await
    }

    async fn nack(&self, receipt: &str, delay: Duration) -> Result<(), QueueError> {
        self.done(Request::QueueNack {
            receipt: receipt.to_owned(),
            now: self.now(),
            delay_ms: ms(delay),
        })
        .await
    }

    async fn extend(&self, receipt: &str, visibility: Duration) -> Result<(), QueueError> {
        self.done(Request::QueueExtend {
            receipt: receipt.to_owned(),
            now: self.now(),
            visibility_ms: ms(visibility),
        })
        .await
    }

    async fn dead_letter(&self, receipt: &str, reason: &str) -> Result<(), QueueError> {
        self.done(Request::QueueDeadLetter {
            receipt: receipt.to_owned(),
            now: self.now(),
            reason: reason.to_owned(),
        })
        .await
    }

    async fn depth(&self) -> Result<QueueDepth, QueueError> {
        match self
            .db
            .execute(Request::QueueDepth {
                queue: self.config.name.clone(),
                now: self.now(),
            })
            .await?
        {
            Response::Depth { depth } => Ok(depth),
            _ => Err(unexpected()),
        }
    }

    async fn dead_letters(&self, limit: u32) -> Result<Vec<DeadLetter>, QueueError> {
        match self
            .db
            .execute(Request::QueueDeadLetters {
                queue: self.config.name.clone(),
                limit,
            })
            .await?
        {
            Response::DeadLetters { letters } => Ok(letters),
            _ => Err(unexpected()),
        }
    }

    async fn redrive(&self, id: &str) -> Result<(), QueueError> {
        self.done(Request::QueueRedrive {
            id: id.to_owned(),
            now: self.now(),
        })
        .await
    }
}
