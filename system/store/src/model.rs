//! What the store holds and the requests it answers.
//!
//! Every backend answers the same serializable [`Request`]s, so the simulator can carry them
//! over its network to the `db` host exactly as a service would send SQL to PostgreSQL, and so
//! one contract test suite covers every backend.

use pay_core::{Event, JsonText};
use serde::{Deserialize, Serialize};
use std::fmt;

/// A record table. Every table has the same shape (see [`Record`]); what `k1` and `k2` index
/// differs per table and is listed here and in the migration's column comments.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Table {
    /// Merchant accounts. k1: none.
    Accounts,
    /// API keys, id = SHA-256 of the secret. k1: account's key id (`key_…`), k2: kind.
    ApiKeys,
    /// Customers. k1: email (lowercase).
    Customers,
    /// PaymentMethods (no card data: brand, last4, fingerprint, vault token). k1: customer.
    PaymentMethods,
    /// The card vault: encrypted PANs (tokenizer only). k1: fingerprint, k2: data key id.
    VaultCards,
    /// Wrapped data-encryption keys (tokenizer only). k1: KEK id, k2: state.
    DataKeys,
    /// PaymentIntents. k1: customer, k2: status (or `pending_op` while a capture/void is in flight).
    PaymentIntents,
    /// Charges. k1: payment intent.
    Charges,
    /// Refunds. k1: charge, k2: status.
    Refunds,
    /// Authorization attempts and their recovery points. k1: payment intent, k2: state.
    PaymentAttempts,
    /// The acquirer's ledger (acquirer only), id = the operation's idempotency key. k1: kind,
    /// k2: authorization id.
    AcquirerOps,
    /// Webhook endpoints. k1: url.
    WebhookEndpoints,
    /// Radar rules. k1: action.
    RadarRules,
    /// Radar value lists. k1: alias.
    ValueLists,
    /// Radar value list items. k1: value list, k2: value.
    ValueListItems,
    /// Radar reviews. k1: payment intent, k2: open/closed.
    Reviews,
    /// Radar configuration generations, id = the account: one record per account whose rules
    /// or value lists changed, updated in the same transaction as each change, so its version
    /// tells a fraud host whether the configuration it compiled is still current. Read by id
    /// only.
    RadarConfigs,
}

impl Table {
    /// Every table, in migration order.
    pub const ALL: [Table; 17] = [
        Table::Accounts,
        Table::ApiKeys,
        Table::Customers,
        Table::PaymentMethods,
        Table::VaultCards,
        Table::DataKeys,
        Table::PaymentIntents,
        Table::Charges,
        Table::Refunds,
        Table::PaymentAttempts,
        Table::AcquirerOps,
        Table::WebhookEndpoints,
        Table::RadarRules,
        Table::ValueLists,
        Table::ValueListItems,
        Table::Reviews,
        Table::RadarConfigs,
    ];

    /// The SQL table name (a fixed identifier, never user input).
    pub fn name(self) -> &'static str {
        match self {
            Table::Accounts => "accounts",
            Table::ApiKeys => "api_keys",
            Table::Customers => "customers",
            Table::PaymentMethods => "payment_methods",
            Table::VaultCards => "vault_cards",
            Table::DataKeys => "data_keys",
            Table::PaymentIntents => "payment_intents",
            Table::Charges => "charges",
            Table::Refunds => "refunds",
            Table::PaymentAttempts => "payment_attempts",
            Table::AcquirerOps => "acquirer_ops",
            Table::WebhookEndpoints => "webhook_endpoints",
            Table::RadarRules => "radar_rules",
            Table::ValueLists => "value_lists",
            Table::ValueListItems => "value_list_items",
            Table::Reviews => "reviews",
            Table::RadarConfigs => "radar_configs",
        }
    }

    /// Whether the table has an index on `index`, so that [`Request::Find`] on it reads only
    /// the matching records. Every index costs each insert (and each update that changes it)
    /// an index entry, so a table indexes only what some caller looks up: an attempt is read
    /// by id (its intent names it), the vault by token and by expiry month (the retention
    /// sweep), the acquirer's ledger by id and listed per merchant, a Radar generation by id.
    /// Every backend refuses a find on an index the table does not have, so a new lookup
    /// without its index fails in the tests rather than scanning the table in production. The
    /// migrations create exactly these indexes (`postgres_indexes_are_the_declared_lookups`).
    pub fn indexed(self, index: Index) -> bool {
        !matches!(
            (self, index),
            (Table::PaymentAttempts | Table::AcquirerOps | Table::RadarConfigs, _) | (Table::VaultCards, Index::K1)
        )
    }

    /// Whether the table can be listed per account ([`Request::List`]): it has the
    /// `(account, created, id)` index pages are read from. A list's filter on `k1` or `k2`
    /// narrows that index's rows, so it needs no index of its own.
    pub fn listable(self) -> bool {
        !matches!(self, Table::PaymentAttempts | Table::VaultCards | Table::RadarConfigs)
    }

    /// Refuses a lookup the table has no index for, as [`StoreError::Invalid`] (a caller's bug).
    pub fn check_find(self, index: Index) -> Result<(), StoreError> {
        if self.indexed(index) {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!("{self} has no {index:?} index to find by")))
        }
    }

    /// Refuses a list of a table that has no per-account index, as [`StoreError::Invalid`].
    pub fn check_list(self) -> Result<(), StoreError> {
        if self.listable() {
            Ok(())
        } else {
            Err(StoreError::Invalid(format!("{self} is not listed per account")))
        }
    }
}

impl fmt::Display for Table {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

/// One stored object: fixed columns for lookup and ordering, the object itself as JSON.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Record {
    /// Primary key (usually the object's prefixed id).
    pub id: String,
    /// Owning merchant account (`""` for system-wide records).
    pub account: String,
    /// Optimistic-concurrency version: 1 on insert, +1 on every update.
    pub version: i64,
    /// Creation time, Unix milliseconds; lists are ordered by (created, id), newest first.
    pub created: i64,
    /// First secondary index (meaning per [`Table`]).
    pub k1: Option<String>,
    /// Second secondary index (meaning per [`Table`]).
    pub k2: Option<String>,
    /// The object, as JSON text.
    pub body: JsonText,
}

/// Which secondary index a lookup uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Index {
    /// `k1`.
    K1,
    /// `k2`.
    K2,
}

/// A page request over a table, newest first, in Stripe's pagination model.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ListQuery {
    /// Table to list.
    pub table: Table,
    /// Only this account's records.
    pub account: String,
    /// Optional equality filter on a secondary index.
    pub filter: Option<(Index, String)>,
    /// Only records created at or after this time (ms).
    pub created_gte: Option<i64>,
    /// Only records created before this time (ms).
    pub created_lt: Option<i64>,
    /// Return records older than this id (`starting_after`).
    pub starting_after: Option<String>,
    /// Return records newer than this id (`ending_before`).
    pub ending_before: Option<String>,
    /// At most this many records (1–100).
    pub limit: u32,
}

/// A page of results and whether more exist beyond it in the paging direction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Page<T> {
    /// The items, newest first.
    pub items: Vec<T>,
    /// More items exist past the end of this page.
    pub has_more: bool,
}

/// One write inside a transaction.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "op", content = "args", rename_all = "snake_case")]
pub enum Op {
    /// Create a record; fails if the id exists. The record's version is set to 1.
    Insert {
        /// Target table.
        table: Table,
        /// The new record.
        record: Record,
    },
    /// Replace a record if it is still at `expected_version`; its version becomes
    /// `expected_version + 1`.
    Update {
        /// Target table.
        table: Table,
        /// The new content (id, account, created, k1, k2, body).
        record: Record,
        /// The version the writer read.
        expected_version: i64,
    },
    /// Delete a record, optionally only if still at `expected_version`.
    Delete {
        /// Target table.
        table: Table,
        /// Record id.
        id: String,
        /// Required current version, if any.
        expected_version: Option<i64>,
    },
    /// Fail the transaction unless the record is still at `expected_version` (a read the
    /// transaction depends on).
    Check {
        /// Target table.
        table: Table,
        /// Record id.
        id: String,
        /// Required current version.
        expected_version: i64,
    },
}

/// An atomic unit of writes plus the events that announce them (the transactional outbox).
/// `id` makes the commit idempotent: resubmitting an applied transaction (the same value, as
/// [`Db`](crate::Db) retries it) is a no-op that reports [`CommitOutcome::AlreadyApplied`],
/// which is what makes an ambiguous commit safe to retry. Event ids are drawn fresh for each
/// transaction, so the PostgreSQL backend recognises a resubmission with events by its first
/// event; another transaction carrying a stored event's id is refused.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Txn {
    /// Unique transaction id (`txn_…`).
    pub id: String,
    /// When the writer committed, Unix ms (for reaping the applied-transaction log).
    pub at: i64,
    /// The writes, applied in order.
    pub ops: Vec<Op>,
    /// Events committed with the writes.
    pub events: Vec<Event>,
}

/// What a commit did.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "outcome", rename_all = "snake_case")]
pub enum CommitOutcome {
    /// Applied now; events got these sequence numbers.
    Applied {
        /// Outbox sequence numbers of the transaction's events, in order.
        event_seqs: Vec<i64>,
    },
    /// This transaction id had already been applied; nothing changed.
    AlreadyApplied,
}

/// An event as stored in the outbox, with its global sequence number.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct StoredEvent {
    /// Outbox order (commit order in the memory backend; allocation order in PostgreSQL).
    pub seq: i64,
    /// The event.
    pub event: Event,
}

/// A page request over events, newest first.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct EventQuery {
    /// Only this account's events.
    pub account: String,
    /// Exact type, or a `prefix.*` wildcard such as `payment_intent.*`.
    pub kind: Option<String>,
    /// Only events about this object id.
    pub object_id: Option<String>,
    /// Only events created at or after this time (Unix seconds, as Stripe's `created`).
    pub created_gte: Option<i64>,
    /// Events older than this event id.
    pub starting_after: Option<String>,
    /// Events newer than this event id.
    pub ending_before: Option<String>,
    /// At most this many (1–100).
    pub limit: u32,
}

/// Starting an idempotent request.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct IdemBegin {
    /// Scope of the key.
    pub account: String,
    /// The client's Idempotency-Key.
    pub key: String,
    /// Digest of method, path and parameters: a reuse with other parameters is an error.
    pub fingerprint: String,
    /// The request that wants the lock; the same owner may begin again (a retried call).
    pub owner: String,
    /// Now, Unix ms, as the caller sees it. Backends that have a clock of their own (PostgreSQL,
    /// the simulator's db host) use theirs instead, so that lock ages do not depend on which
    /// host's clock stamped the lock.
    pub now: i64,
    /// A lock older than this (ms) is considered abandoned and may be taken over.
    pub lock_timeout_ms: i64,
    /// When the key expires, Unix ms (24 h after first use).
    pub expires_at: i64,
}

/// The answer to [`IdemBegin`].
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "state", content = "data", rename_all = "snake_case")]
pub enum IdemBeginOutcome {
    /// The caller holds the lock and must run the request. `recovery_point` is where an
    /// earlier, interrupted run got to (if `resumed`).
    Started {
        /// True when an abandoned run was taken over.
        resumed: bool,
        /// The last checkpoint of the earlier run.
        recovery_point: Option<String>,
        /// The request that took this use of the key: kept when another request resumes the
        /// use (after a crash or a released 5xx), new when the key is used again after it
        /// expired or, once released, with other parameters. Ids derived from it therefore
        /// differ between uses. `None` for keys taken before the store recorded it
        /// (PostgreSQL rows older than migration 0006): derive from the key alone.
        #[serde(default)]
        taken_by: Option<String>,
    },
    /// Another request holds the lock.
    InProgress,
    /// The request finished before: replay this response.
    Completed {
        /// HTTP status saved.
        status: u16,
        /// Response body saved.
        body: String,
    },
    /// The key was used with different parameters.
    Mismatch,
}

/// A message to enqueue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct NewMessage {
    /// Message id (`msg_…`), chosen by the sender so a resend after a lost answer is a no-op.
    pub id: String,
    /// FIFO message group (ignored by standard queues).
    pub group: Option<String>,
    /// Deduplication id: a send whose dedup id is already in the queue returns the existing
    /// message instead of adding one.
    pub dedup: Option<String>,
    /// The payload.
    pub body: serde_json::Value,
    /// Not deliverable until this many milliseconds after `now`.
    pub delay_ms: i64,
}

/// One outbox event of a fan-out and the messages it becomes.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct FanOutEvent {
    /// The event's outbox sequence number.
    pub seq: i64,
    /// Its messages, each with the queue it goes to, in send order.
    pub messages: Vec<(String, NewMessage)>,
}

/// A message in a queue.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct QueueMessage {
    /// Message id.
    pub id: String,
    /// Queue name.
    pub queue: String,
    /// Order of arrival in the queue.
    pub seq: i64,
    /// FIFO group.
    pub group: Option<String>,
    /// Deduplication id.
    pub dedup: Option<String>,
    /// Payload.
    pub body: serde_json::Value,
    /// When it was sent (Unix ms).
    pub created: i64,
    /// How many times it has been received.
    pub receive_count: u32,
}

/// A message handed to a receiver, with the receipt that acknowledges this particular receive.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Received {
    /// The message (its receive count includes this receive).
    pub message: QueueMessage,
    /// Identifies this receive (`<id>:<receive count>`); a receipt from an earlier receive of
    /// the same message is stale and refused.
    pub receipt: String,
}

/// How a queue is consumed.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum QueueMode {
    /// Any visible message, in parallel; order not guaranteed.
    Standard,
    /// Per message group: strictly in send order, at most one message in flight per group.
    Fifo,
    /// Per message group: strictly in send order, like [`QueueMode::Fifo`], but one receive
    /// may take a run of a group's consecutive messages (as an SQS FIFO receive does), which
    /// the receiver processes in order. While any of them is in flight the group is skipped
    /// by every receive, so a group is held by one receiver at a time. For consumers that
    /// work through a batch sequentially (the webhook fan-out), where one message per group
    /// per receive would cap a busy group's throughput at one message per round trip.
    FifoBatch,
}

/// Counts for metrics.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct QueueDepth {
    /// Deliverable now.
    pub visible: u64,
    /// Received and not yet acknowledged.
    pub in_flight: u64,
    /// Waiting for their delay.
    pub delayed: u64,
    /// Dead-lettered.
    pub dead: u64,
    /// Age of the oldest live message (ms), 0 when empty.
    pub oldest_age_ms: i64,
}

/// A dead-lettered message.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct DeadLetter {
    /// The message.
    pub message: QueueMessage,
    /// Why (`max_receives` or the consumer's reason).
    pub reason: String,
    /// When (Unix ms).
    pub dead_at: i64,
}

/// One call to a storage backend.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "call", content = "args", rename_all = "snake_case")]
pub enum Request {
    /// Liveness check.
    Ping,
    /// One record by id.
    Get {
        /// Table.
        table: Table,
        /// Id.
        id: String,
    },
    /// Records whose index equals `value`, oldest first, optionally within one account.
    Find {
        /// Table.
        table: Table,
        /// Restrict to one account.
        account: Option<String>,
        /// Which index.
        index: Index,
        /// Value to match.
        value: String,
        /// At most this many.
        limit: u32,
    },
    /// A page of records.
    List(ListQuery),
    /// An atomic transaction.
    Commit(Txn),
    /// One event by id within an account.
    GetEvent {
        /// Account.
        account: String,
        /// Event id.
        id: String,
    },
    /// A page of events.
    ListEvents(EventQuery),
    /// Outbox events after `after_seq`, in sequence order, across accounts (a reader following
    /// the whole outbox; the webhook fan-out uses [`Request::OutboxPending`] instead).
    EventsSince {
        /// Exclusive lower bound.
        after_seq: i64,
        /// At most this many.
        limit: u32,
    },
    /// Take (or inspect) an idempotency key.
    IdemBegin(IdemBegin),
    /// Save a recovery point for a key the caller holds.
    IdemCheckpoint {
        /// Account.
        account: String,
        /// Key.
        key: String,
        /// Lock owner.
        owner: String,
        /// Where the request got to.
        recovery_point: String,
    },
    /// Save the final response and release the lock.
    IdemFinish {
        /// Account.
        account: String,
        /// Key.
        key: String,
        /// Lock owner.
        owner: String,
        /// HTTP status.
        status: u16,
        /// Response body.
        body: String,
    },
    /// Unlock a key the caller holds without saving an answer (its request failed with a 5xx):
    /// a retry with the same parameters resumes that use of the key, other parameters start a
    /// new one.
    IdemRelease {
        /// Account.
        account: String,
        /// Key.
        key: String,
        /// Lock owner.
        owner: String,
    },
    /// Enqueue messages.
    QueueSend {
        /// Queue name.
        queue: String,
        /// Now, Unix ms.
        now: i64,
        /// Messages.
        messages: Vec<NewMessage>,
    },
    /// Receive up to `max` messages, hiding them for `visibility_ms`. A message already
    /// received `max_receives` times is dead-lettered instead of delivered again.
    QueueReceive {
        /// Queue name.
        queue: String,
        /// Now, Unix ms.
        now: i64,
        /// At most this many.
        max: u32,
        /// Hidden from other receivers for this long.
        visibility_ms: i64,
        /// Standard or FIFO.
        mode: QueueMode,
        /// Dead-letter after this many receives.
        max_receives: u32,
    },
    /// Acknowledge (delete) a received message.
    QueueAck {
        /// The receipt.
        receipt: String,
        /// Now, Unix ms (starts the deduplication window of the message's dedup id).
        now: i64,
    },
    /// Acknowledge several received messages in one round trip: every current receipt is
    /// acknowledged; the answer is `StaleReceipt` when any of them was stale.
    QueueAckAll {
        /// The receipts.
        receipts: Vec<String>,
        /// Now, Unix ms (as for `QueueAck`).
        now: i64,
    },
    /// Give a received message back, deliverable again after `delay_ms`.
    QueueNack {
        /// The receipt.
        receipt: String,
        /// Now, Unix ms.
        now: i64,
        /// Delay before redelivery.
        delay_ms: i64,
    },
    /// Keep a received message hidden for `visibility_ms` more.
    QueueExtend {
        /// The receipt.
        receipt: String,
        /// Now, Unix ms.
        now: i64,
        /// New visibility timeout from now.
        visibility_ms: i64,
    },
    /// Move a received message to the dead letters now.
    QueueDeadLetter {
        /// The receipt.
        receipt: String,
        /// Now, Unix ms.
        now: i64,
        /// Why.
        reason: String,
    },
    /// Counts of a queue.
    QueueDepth {
        /// Queue name.
        queue: String,
        /// Now, Unix ms.
        now: i64,
    },
    /// Dead letters of a queue, oldest first.
    QueueDeadLetters {
        /// Queue name.
        queue: String,
        /// At most this many.
        limit: u32,
    },
    /// Put a dead-lettered message back in its queue (receive count reset).
    QueueRedrive {
        /// Message id.
        id: String,
        /// Now, Unix ms.
        now: i64,
    },
    /// Committed outbox events not fanned out yet, in sequence order, across accounts: the
    /// webhook fan-out's input. A read; it locks nothing, so two readers may see the same
    /// events, and [`Request::OutboxFanOut`] decides which of them sends.
    OutboxPending {
        /// At most this many.
        limit: u32,
    },
    /// Fan out outbox events: in one transaction, mark each listed event fanned out and send
    /// its messages, but only for the events no earlier fan-out marked. So every event's
    /// messages are sent exactly once, however many fan-outs read it, and a fan-out that
    /// fails sends nothing and marks nothing. Fan-outs take turns, so messages of a later
    /// fan-out come after those of an earlier one in every FIFO group.
    OutboxFanOut {
        /// Now, Unix ms (the messages' send time).
        now: i64,
        /// The events, in sequence order, with their messages.
        events: Vec<FanOutEvent>,
    },
    /// Delete expired idempotency keys and old applied-transaction ids.
    Reap {
        /// Now, Unix ms.
        now: i64,
        /// Applied-transaction ids older than this (ms) are forgotten.
        txn_retention_ms: i64,
    },
}

/// The answer to a [`Request`].
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(tag = "reply", content = "body", rename_all = "snake_case")]
pub enum Response {
    /// Pong.
    Pong,
    /// One record or none.
    Record {
        /// The record.
        record: Option<Record>,
    },
    /// Several records.
    Records {
        /// The records.
        records: Vec<Record>,
    },
    /// A page of records.
    Page {
        /// The page.
        page: Page<Record>,
    },
    /// A commit result.
    Committed {
        /// What happened.
        outcome: CommitOutcome,
    },
    /// One event or none.
    Event {
        /// The event.
        event: Option<StoredEvent>,
    },
    /// Events.
    Events {
        /// The events.
        page: Page<StoredEvent>,
    },
    /// An idempotency decision.
    Idem {
        /// The decision.
        outcome: IdemBeginOutcome,
    },
    /// Done (checkpoint, finish, release).
    Done,
    /// Ids of sent messages (existing ids for deduplicated sends).
    Sent {
        /// Message ids, in request order.
        ids: Vec<String>,
    },
    /// Received messages.
    Received {
        /// Messages.
        messages: Vec<Received>,
    },
    /// Queue counts.
    Depth {
        /// Counts.
        depth: QueueDepth,
    },
    /// Dead letters.
    DeadLetters {
        /// Dead letters.
        letters: Vec<DeadLetter>,
    },
    /// Outbox events waiting for the fan-out.
    Pending {
        /// The events, in sequence order.
        events: Vec<StoredEvent>,
        /// Sequence numbers of waiting rows whose body is not an event this version can read
        /// (written by another version, or damaged); the fan-out marks them without sending
        /// anything and reports them, so that one such row cannot hold back every webhook.
        unreadable: Vec<i64>,
    },
    /// The outbox events a fan-out marked (the others were marked before it).
    FannedOut {
        /// Their sequence numbers.
        seqs: Vec<i64>,
    },
    /// Reaped counts.
    Reaped {
        /// Idempotency keys deleted.
        keys: u64,
        /// Applied-transaction ids forgotten.
        txns: u64,
    },
}

/// Why a commit was refused.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(tag = "kind", rename_all = "snake_case")]
pub enum ConflictKind {
    /// Insert of an id that exists.
    Exists,
    /// The record is missing.
    Missing,
    /// The record changed since it was read.
    VersionMismatch {
        /// Version the writer expected.
        expected: i64,
        /// Version found.
        actual: i64,
    },
}

/// A storage failure. On the wire (the remote store's replies) it is `{"error": kind,
/// "detail": …}`: adjacently tagged, because an internally tagged enum cannot carry the
/// variants that hold only a message.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error, Serialize, Deserialize)]
#[serde(tag = "error", content = "detail", rename_all = "snake_case")]
pub enum StoreError {
    /// A commit conflicted; nothing was written.
    #[error("conflict on {table} {id}: {kind:?}")]
    Conflict {
        /// Table.
        table: Table,
        /// Record id.
        id: String,
        /// What conflicted.
        kind: ConflictKind,
    },
    /// The backend could not be reached or refused work; nothing was applied.
    #[error("store unavailable: {0}")]
    Unavailable(String),
    /// The request may or may not have been applied (the answer was lost).
    #[error("store outcome unknown: {0}")]
    Ambiguous(String),
    /// The request itself was invalid (a bug in the caller).
    #[error("invalid store request: {0}")]
    Invalid(String),
    /// Stored data could not be decoded.
    #[error("corrupt stored data: {0}")]
    Corrupt(String),
    /// The caller does not hold the idempotency key it tried to update.
    #[error("idempotency key is not held by this request")]
    NotOwner,
    /// A queue receipt from an earlier receive, or for a message no longer in flight.
    #[error("stale or unknown queue receipt")]
    StaleReceipt,
}

impl StoreError {
    /// True for failures worth retrying later (unavailable or ambiguous).
    pub fn is_transient(&self) -> bool {
        matches!(self, StoreError::Unavailable(_) | StoreError::Ambiguous(_))
    }

    /// The API error to show a client: conflicts and outages as retryable 5xx/409, never
    /// with internal details.
    pub fn into_api_error(self) -> pay_core::ApiError {
        match self {
            StoreError::Conflict { .. } => pay_core::ApiError::idempotency_key_in_use()
                .with_status(409)
                .tap_message("The object was modified by a concurrent request; retry the request."),
            StoreError::Unavailable(_) | StoreError::Ambiguous(_) => pay_core::ApiError::unavailable(
                "The payment records store is temporarily unavailable; retry the request.",
            ),
            StoreError::Invalid(_) | StoreError::Corrupt(_) | StoreError::NotOwner | StoreError::StaleReceipt => {
                pay_core::ApiError::internal("An internal error occurred while storing the request.")
            }
        }
    }
}

trait TapMessage {
    fn tap_message(self, m: &str) -> Self;
}

impl TapMessage for pay_core::ApiError {
    fn tap_message(mut self, m: &str) -> Self {
        self.code = Some("lock_timeout".into());
        self.message = m.to_owned();
        self
    }
}

/// Matches an event type against an exact type or a `prefix.*` wildcard.
pub fn event_kind_matches(filter: &str, kind: &str) -> bool {
    match filter.strip_suffix(".*") {
        Some(prefix) => kind.strip_prefix(prefix).is_some_and(|rest| rest.starts_with('.')),
        None => filter == "*" || filter == kind,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The remote store sends every error to its caller as JSON; each one must survive the
    /// trip, or the caller sees an unreadable answer and takes a caller's bug for an outage.
    #[test]
    fn every_store_error_round_trips_through_json() {
        let errors = [
            StoreError::Conflict {
                table: Table::Charges,
                id: "ch_1".into(),
                kind: ConflictKind::Exists,
            },
            StoreError::Unavailable("down".into()),
            StoreError::Ambiguous("lost".into()),
            StoreError::Invalid("no index".into()),
            StoreError::Corrupt("bad row".into()),
            StoreError::NotOwner,
            StoreError::StaleReceipt,
        ];
        for e in errors {
            let json = serde_json::to_string(&e).unwrap_or_else(|err| panic!("{e:?} does not encode: {err}"));
            let back: StoreError = serde_json::from_str(&json).unwrap();
            assert_eq!(back, e, "{json}");
        }
    }

    fn record(id: &str, body: &str) -> Record {
        Record {
            id: id.into(),
            account: "acct_1".into(),
            version: 3,
            created: 7,
            k1: Some("cus_1".into()),
            k2: None,
            body: JsonText::parse(body.into()).unwrap(),
        }
    }

    /// The simulator's `db` host carries records as JSON in requests and replies (adjacently
    /// tagged enums): a body must come back as the same text, not as a string holding it.
    #[test]
    fn records_cross_the_remote_stores_wire_unchanged() {
        let body = r#"{"id":"pi_1","intent":{"status":"succeeded","amount":100},"note":"a \"quoted\" é"}"#;
        let reply = Response::Records {
            records: vec![record("pi_1", body), record("pi_2", "{}")],
        };
        let json = serde_json::to_string(&reply).unwrap();
        assert!(json.contains(body), "{json}");
        let back: Response = serde_json::from_str(&json).unwrap();
        let Response::Records { records } = &back else {
            panic!("{back:?}")
        };
        assert_eq!(records[0].body.get(), body);
        assert_eq!(back, reply);
        let op = Op::Update {
            table: Table::PaymentIntents,
            record: record("pi_1", body),
            expected_version: 2,
        };
        let back: Op = serde_json::from_str(&serde_json::to_string(&op).unwrap()).unwrap();
        assert_eq!(back, op);
    }
}
