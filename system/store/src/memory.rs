//! The in-memory backend: the simulator's `db` host and `paymentd dev`.
//!
//! All state sits behind one mutex and every request is applied atomically under it, so a
//! transaction is all-or-nothing and events get sequence numbers in commit order. Only ordered
//! maps are used, so every answer is deterministic. It passes the same contract suite as the
//! PostgreSQL backend.

use crate::model::*;
use crate::Backend;
use async_trait::async_trait;
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

#[derive(Debug, Clone)]
struct IdemRow {
    fingerprint: String,
    owner: String,
    locked_at: Option<i64>,
    recovery_point: Option<String>,
    status: Option<u16>,
    body: Option<String>,
    expires_at: i64,
    taken_by: String,
}

#[derive(Debug, Clone)]
struct QMsg {
    msg: QueueMessage,
    available_at: i64,
    invisible_until: Option<i64>,
}

/// How long a deduplication id is remembered after its message was acknowledged.
pub const DEDUP_WINDOW_MS: i64 = 24 * 3_600_000;

#[derive(Default)]
struct State {
    queues: BTreeMap<String, BTreeMap<i64, QMsg>>,
    q_ids: BTreeMap<String, (String, i64)>,
    q_dedup: BTreeMap<(String, String), (String, Option<i64>)>,
    q_dead: BTreeMap<String, BTreeMap<i64, DeadLetter>>,
    q_next_seq: i64,
    fanout_cursor: i64,
    tables: BTreeMap<Table, BTreeMap<String, Record>>,
    by_account: BTreeMap<(Table, String), BTreeSet<(i64, String)>>,
    k1: BTreeMap<(Table, String), BTreeSet<(i64, String)>>,
    k2: BTreeMap<(Table, String), BTreeSet<(i64, String)>>,
    events: BTreeMap<i64, StoredEvent>,
    event_seq_by_id: BTreeMap<String, i64>,
    events_by_account: BTreeMap<String, BTreeSet<i64>>,
    next_seq: i64,
    idem: BTreeMap<(String, String), IdemRow>,
    txns: BTreeMap<String, i64>,
}

/// The in-memory storage backend.
#[derive(Default)]
pub struct MemoryBackend {
    state: Mutex<State>,
}

impl MemoryBackend {
    /// An empty store.
    pub fn new() -> MemoryBackend {
        MemoryBackend::default()
    }

    fn with_state<R>(&self, f: impl FnOnce(&mut State) -> R) -> R {
        let mut guard = match self.state.lock() {
            Ok(g) => g,
            // A panic while holding the lock cannot leave a half-applied transaction: writes
            // are staged and applied only after every check passed.
            Err(poisoned) => poisoned.into_inner(),
        };
        f(&mut guard)
    }

    /// Every record of every table (for the simulator's end-of-run checkers).
    pub fn dump(&self) -> Vec<(Table, Record)> {
        self.with_state(|s| {
            s.tables
                .iter()
                .flat_map(|(t, rows)| rows.values().map(move |r| (*t, r.clone())))
                .collect()
        })
    }

    /// Every outbox event in sequence order (for the simulator's checkers).
    pub fn all_events(&self) -> Vec<StoredEvent> {
        self.with_state(|s| s.events.values().cloned().collect())
    }

    /// How many committed outbox events the webhook fan-out has not handled yet.
    pub fn pending_events(&self) -> usize {
        self.with_state(|s| s.events.range(s.fanout_cursor + 1..).count())
    }

    /// The queues as they stand (for the simulator's checkers): live messages of every queue,
    /// dead letters, and the sequence number of the last outbox event fanned out.
    pub fn queue_snapshot(&self) -> QueueSnapshot {
        self.with_state(|s| QueueSnapshot {
            live: s
                .queues
                .values()
                .flat_map(|q| q.values().map(|m| m.msg.clone()))
                .collect(),
            dead: s.q_dead.values().flat_map(|d| d.values().cloned()).collect(),
            fanned_out_through: s.fanout_cursor,
        })
    }
}

/// See [`MemoryBackend::queue_snapshot`].
#[derive(Debug, Clone, Default)]
pub struct QueueSnapshot {
    /// Messages not yet acknowledged or dead-lettered.
    pub live: Vec<QueueMessage>,
    /// Dead letters.
    pub dead: Vec<DeadLetter>,
    /// Outbox events with a sequence number up to this have been fanned out: their webhook
    /// delivery messages are in the queues (or were delivered).
    pub fanned_out_through: i64,
}

impl State {
    fn get(&self, table: Table, id: &str) -> Option<&Record> {
        self.tables.get(&table).and_then(|t| t.get(id))
    }

    fn unindex(&mut self, table: Table, r: &Record) {
        let key = (r.created, r.id.clone());
        if let Some(s) = self.by_account.get_mut(&(table, r.account.clone())) {
            s.remove(&key);
        }
        if let Some(k) = &r.k1 {
            if let Some(s) = self.k1.get_mut(&(table, k.clone())) {
                s.remove(&key);
            }
        }
        if let Some(k) = &r.k2 {
            if let Some(s) = self.k2.get_mut(&(table, k.clone())) {
                s.remove(&key);
            }
        }
    }

    fn index(&mut self, table: Table, r: &Record) {
        let key = (r.created, r.id.clone());
        self.by_account
            .entry((table, r.account.clone()))
            .or_default()
            .insert(key.clone());
        if let Some(k) = &r.k1 {
            self.k1.entry((table, k.clone())).or_default().insert(key.clone());
        }
        if let Some(k) = &r.k2 {
            self.k2.entry((table, k.clone())).or_default().insert(key);
        }
    }

    fn put(&mut self, table: Table, r: Record) {
        if let Some(old) = self.tables.get(&table).and_then(|t| t.get(&r.id)).cloned() {
            self.unindex(table, &old);
        }
        self.index(table, &r);
        self.tables.entry(table).or_default().insert(r.id.clone(), r);
    }

    fn remove(&mut self, table: Table, id: &str) {
        if let Some(old) = self.tables.get_mut(&table).and_then(|t| t.remove(id)) {
            self.unindex(table, &old);
        }
    }

    fn commit(&mut self, txn: Txn) -> Result<CommitOutcome, StoreError> {
        if self.txns.contains_key(&txn.id) {
            return Ok(CommitOutcome::AlreadyApplied);
        }
        // Validate every op against the state as it will be after the earlier ops, without
        // touching the real state: stage versions in an overlay.
        let mut overlay: BTreeMap<(Table, String), Option<i64>> = BTreeMap::new();
        let current =
            |s: &State, overlay: &BTreeMap<(Table, String), Option<i64>>, t: Table, id: &str| -> Option<i64> {
                match overlay.get(&(t, id.to_owned())) {
                    Some(v) => *v,
                    None => s.get(t, id).map(|r| r.version),
                }
            };
        for op in &txn.ops {
            match op {
                Op::Insert { table, record } => {
                    if current(self, &overlay, *table, &record.id).is_some() {
                        return Err(StoreError::Conflict {
                            table: *table,
                            id: record.id.clone(),
                            kind: ConflictKind::Exists,
                        });
                    }
                    overlay.insert((*table, record.id.clone()), Some(1));
                }
                Op::Update {
                    table,
                    record,
                    expected_version,
                } => match current(self, &overlay, *table, &record.id) {
                    None => {
                        return Err(StoreError::Conflict {
                            table: *table,
                            id: record.id.clone(),
                            kind: ConflictKind::Missing,
                        })
                    }
                    Some(v) if v != *expected_version => {
                        return Err(StoreError::Conflict {
                            table: *table,
                            id: record.id.clone(),
                            kind: ConflictKind::VersionMismatch {
                                expected: *expected_version,
                                actual: v,
                            },
                        })
                    }
                    Some(v) => {
                        overlay.insert((*table, record.id.clone()), Some(v + 1));
                    }
                },
                Op::Delete {
                    table,
                    id,
                    expected_version,
                } => match (current(self, &overlay, *table, id), expected_version) {
                    (None, _) => {
                        return Err(StoreError::Conflict {
                            table: *table,
                            id: id.clone(),
                            kind: ConflictKind::Missing,
                        })
                    }
                    (Some(v), Some(e)) if v != *e => {
                        return Err(StoreError::Conflict {
                            table: *table,
                            id: id.clone(),
                            kind: ConflictKind::VersionMismatch {
                                expected: *e,
                                actual: v,
                            },
                        })
                    }
                    _ => {
                        overlay.insert((*table, id.clone()), None);
                    }
                },
                Op::Check {
                    table,
                    id,
                    expected_version,
                } => match current(self, &overlay, *table, id) {
                    None => {
                        return Err(StoreError::Conflict {
                            table: *table,
                            id: id.clone(),
                            kind: ConflictKind::Missing,
                        })
                    }
                    Some(v) if v != *expected_version => {
                        return Err(StoreError::Conflict {
                            table: *table,
                            id: id.clone(),
                            kind: ConflictKind::VersionMismatch {
                                expected: *expected_version,
                                actual: v,
                            },
                        })
                    }
                    Some(_) => {}
                },
            }
        }
        for e in &txn.events {
            if self.event_seq_by_id.contains_key(e.id.as_str()) {
                return Err(StoreError::Invalid(format!("duplicate event id {}", e.id)));
            }
        }
        // All checks passed: apply.
        for op in txn.ops {
            match op {
                Op::Insert { table, mut record } => {
                    record.version = 1;
                    self.put(table, record);
                }
                Op::Update {
                    table,
                    mut record,
                    expected_version,
                } => {
                    record.version = expected_version + 1;
                    self.put(table, record);
                }
                Op::Delete { table, id, .. } => self.remove(table, &id),
                Op::Check { .. } => {}
            }
        }
        let mut seqs = Vec::with_capacity(txn.events.len());
        for event in txn.events {
            self.next_seq += 1;
            let seq = self.next_seq;
            let account = event.account.as_ref().map(|a| a.to_string()).unwrap_or_default();
            self.event_seq_by_id.insert(event.id.to_string(), seq);
            self.events_by_account.entry(account).or_default().insert(seq);
            self.events.insert(seq, StoredEvent { seq, event });
            seqs.push(seq);
        }
        self.txns.insert(txn.id, txn.at);
        Ok(CommitOutcome::Applied { event_seqs: seqs })
    }

    fn list(&self, q: &ListQuery) -> Result<Page<Record>, StoreError> {
        q.table.check_list()?;
        let limit = q.limit.clamp(1, 100) as usize;
        let Some(set) = self.by_account.get(&(q.table, q.account.clone())) else {
            return Ok(Page {
                items: vec![],
                has_more: false,
            });
        };
        let cursor = |id: &str| -> Result<(i64, String), StoreError> {
            self.get(q.table, id)
                .filter(|r| r.account == q.account)
                .map(|r| (r.created, r.id.clone()))
                .ok_or_else(|| StoreError::Invalid(format!("cursor object {id} not found")))
        };
        let keep = |key: &(i64, String)| -> bool {
            let Some(r) = self.get(q.table, &key.1) else {
                return false;
            };
            q.created_gte.is_none_or(|g| r.created >= g)
                && q.created_lt.is_none_or(|l| r.created < l)
                && match &q.filter {
                    None => true,
                    Some((Index::K1, v)) => r.k1.as_deref() == Some(v.as_str()),
                    Some((Index::K2, v)) => r.k2.as_deref() == Some(v.as_str()),
                }
        };
        let mut keys: Vec<(i64, String)> = if let Some(before) = &q.ending_before {
            // The page just newer than the cursor, returned newest first.
            let c = cursor(before)?;
            let mut newer: Vec<_> = set
                .range((std::ops::Bound::Excluded(c), std::ops::Bound::Unbounded))
                .filter(|k| keep(k))
                .take(limit + 1)
                .cloned()
                .collect();
            let has_more = newer.len() > limit;
            newer.truncate(limit);
            newer.reverse();
            let items = newer.iter().filter_map(|k| self.get(q.table, &k.1).cloned()).collect();
            return Ok(Page { items, has_more });
        } else if let Some(after) = &q.starting_after {
            let c = cursor(after)?;
            set.range(..c)
                .rev()
                .filter(|k| keep(k))
                .take(limit + 1)
                .cloned()
                .collect()
        } else {
            set.iter().rev().filter(|k| keep(k)).take(limit + 1).cloned().collect()
        };
        let has_more = keys.len() > limit;
        keys.truncate(limit);
        let items = keys.iter().filter_map(|k| self.get(q.table, &k.1).cloned()).collect();
        Ok(Page { items, has_more })
    }

    fn list_events(&self, q: &EventQuery) -> Result<Page<StoredEvent>, StoreError> {
        let limit = q.limit.clamp(1, 100) as usize;
        let Some(seqs) = self.events_by_account.get(&q.account) else {
            return Ok(Page {
                items: vec![],
                has_more: false,
            });
        };
        let seq_of = |id: &str| -> Result<i64, StoreError> {
            self.event_seq_by_id
                .get(id)
                .copied()
                .ok_or_else(|| StoreError::Invalid(format!("cursor event {id} not found")))
        };
        let keep = |seq: &i64| -> bool {
            let Some(e) = self.events.get(seq) else {
                return false;
            };
            q.kind.as_deref().is_none_or(|k| event_kind_matches(k, &e.event.kind))
                && q.object_id
                    .as_deref()
                    .is_none_or(|o| e.event.object_id().as_deref() == Some(o))
                && q.created_gte.is_none_or(|g| e.event.created >= g)
        };
        if let Some(before) = &q.ending_before {
            let c = seq_of(before)?;
            let mut newer: Vec<i64> = seqs
                .range(c + 1..)
                .filter(|s| keep(s))
                .take(limit + 1)
                .copied()
                .collect();
            let has_more = newer.len() > limit;
            newer.truncate(limit);
            newer.reverse();
            return Ok(Page {
                items: newer.iter().filter_map(|s| self.events.get(s).cloned()).collect(),
                has_more,
            });
        }
        let mut picked: Vec<i64> = match &q.starting_after {
            Some(after) => {
                let c = seq_of(after)?;
                seqs.range(..c)
                    .rev()
                    .filter(|s| keep(s))
                    .take(limit + 1)
                    .copied()
                    .collect()
            }
            None => seqs.iter().rev().filter(|s| keep(s)).take(limit + 1).copied().collect(),
        };
        let has_more = picked.len() > limit;
        picked.truncate(limit);
        Ok(Page {
            items: picked.iter().filter_map(|s| self.events.get(s).cloned()).collect(),
            has_more,
        })
    }

    fn q_send(&mut self, queue: &str, now: i64, messages: Vec<NewMessage>) -> Vec<String> {
        let mut ids = vec![];
        for m in messages {
            if let Some(d) = &m.dedup {
                if let Some((existing, _)) = self.q_dedup.get(&(queue.to_owned(), d.clone())) {
                    ids.push(existing.clone());
                    continue;
                }
            }
            if self.q_ids.contains_key(&m.id) {
                ids.push(m.id.clone());
                continue;
            }
            self.q_next_seq += 1;
            let seq = self.q_next_seq;
            if let Some(d) = &m.dedup {
                self.q_dedup.insert((queue.to_owned(), d.clone()), (m.id.clone(), None));
            }
            self.q_ids.insert(m.id.clone(), (queue.to_owned(), seq));
            let msg = QueueMessage {
                id: m.id.clone(),
                queue: queue.to_owned(),
                seq,
                group: m.group,
                dedup: m.dedup,
                body: m.body,
                created: now,
                receive_count: 0,
            };
            self.queues.entry(queue.to_owned()).or_default().insert(
                seq,
                QMsg {
                    msg,
                    available_at: now + m.delay_ms.max(0),
                    invisible_until: None,
                },
            );
            ids.push(m.id);
        }
        ids
    }

    fn q_receive(
        &mut self,
        queue: &str,
        now: i64,
        max: u32,
        visibility_ms: i64,
        mode: QueueMode,
        max_receives: u32,
    ) -> Vec<Received> {
        let mut out = vec![];
        let mut to_dead = vec![];
        let Some(q) = self.queues.get_mut(queue) else {
            return out;
        };
        // FIFO modes: a group is decided once a message of it cannot be taken (in flight or
        // delayed: it holds back the rest of its group) or, in `Fifo` mode, once its head was
        // taken. In `FifoBatch` mode the run of deliverable messages after the head is taken too.
        let fifo = mode != QueueMode::Standard;
        let mut decided: BTreeSet<String> = BTreeSet::new();
        for (seq, m) in q.iter_mut() {
            if out.len() >= max as usize {
                break;
            }
            let group = m.msg.group.clone().unwrap_or_else(|| m.msg.id.clone());
            if fifo && decided.contains(&group) {
                continue;
            }
            let deliverable = m.available_at <= now && m.invisible_until.is_none_or(|t| t <= now);
            if !deliverable {
                if fifo {
                    decided.insert(group);
                }
                continue;
            }
            if m.msg.receive_count >= max_receives.max(1) {
                // Too many receives: dead-letter it; in FIFO mode the next message of the
                // group becomes the head.
                to_dead.push(*seq);
                continue;
            }
            if mode == QueueMode::Fifo {
                decided.insert(group);
            }
            m.msg.receive_count += 1;
            m.invisible_until = Some(now + visibility_ms.max(0));
            out.push(Received {
                receipt: format!("{}:{}", m.msg.id, m.msg.receive_count),
                message: m.msg.clone(),
            });
        }
        for seq in to_dead {
            self.q_move_dead(queue, seq, now, "max_receives");
        }
        out
    }

    fn q_move_dead(&mut self, queue: &str, seq: i64, now: i64, reason: &str) {
        if let Some(m) = self.queues.get_mut(queue).and_then(|q| q.remove(&seq)) {
            self.q_dead.entry(queue.to_owned()).or_default().insert(
                seq,
                DeadLetter {
                    message: m.msg,
                    reason: reason.to_owned(),
                    dead_at: now,
                },
            );
        }
    }

    /// The message a receipt names, if the receipt is current.
    fn q_by_receipt(&mut self, receipt: &str) -> Result<(String, i64), StoreError> {
        let (id, n) = receipt.rsplit_once(':').ok_or(StoreError::StaleReceipt)?;
        let n: u32 = n.parse().map_err(|_| StoreError::StaleReceipt)?;
        let (queue, seq) = self.q_ids.get(id).cloned().ok_or(StoreError::StaleReceipt)?;
        let m = self
            .queues
            .get(&queue)
            .and_then(|q| q.get(&seq))
            .ok_or(StoreError::StaleReceipt)?;
        if m.msg.receive_count != n || m.invisible_until.is_none() {
            return Err(StoreError::StaleReceipt);
        }
        Ok((queue, seq))
    }

    fn q_ack(&mut self, receipt: &str, now: i64) -> Result<(), StoreError> {
        let (queue, seq) = self.q_by_receipt(receipt)?;
        if let Some(m) = self.queues.get_mut(&queue).and_then(|q| q.remove(&seq)) {
            self.q_ids.remove(&m.msg.id);
            if let Some(d) = m.msg.dedup {
                self.q_dedup.insert((queue, d), (m.msg.id, Some(now)));
            }
        }
        Ok(())
    }

    fn q_depth(&self, queue: &str, now: i64) -> QueueDepth {
        let mut d = QueueDepth::default();
        if let Some(q) = self.queues.get(queue) {
            let mut oldest = None;
            for m in q.values() {
                if m.available_at > now {
                    d.delayed += 1;
                } else if m.invisible_until.is_some_and(|t| t > now) {
                    d.in_flight += 1;
                } else {
                    d.visible += 1;
                }
                oldest = Some(oldest.map_or(m.msg.created, |o: i64| o.min(m.msg.created)));
            }
            d.oldest_age_ms = oldest.map(|o| (now - o).max(0)).unwrap_or(0);
        }
        d.dead = self.q_dead.get(queue).map(|x| x.len() as u64).unwrap_or(0);
        d
    }

    fn outbox_pending(&self, limit: usize) -> Vec<StoredEvent> {
        // In memory, sequence order is commit order, so a cursor is exact. (PostgreSQL marks
        // each event instead: there, sequence order is not commit order.)
        self.events
            .range(self.fanout_cursor + 1..)
            .take(limit)
            .map(|(_, e)| e.clone())
            .collect()
    }

    fn outbox_fan_out(&mut self, now: i64, events: Vec<FanOutEvent>) -> Vec<i64> {
        // Under the state lock this is one transaction. Events at or below the cursor were
        // fanned out before; the rest must start right after it (what `outbox_pending` gives),
        // so that the cursor never passes an event that was not fanned out.
        let mut marked = vec![];
        for e in events {
            if e.seq <= self.fanout_cursor {
                continue;
            }
            if self.events.range(self.fanout_cursor + 1..e.seq).next().is_some() {
                break;
            }
            self.fanout_cursor = e.seq;
            for (queue, message) in e.messages {
                self.q_send(&queue, now, vec![message]);
            }
            marked.push(e.seq);
        }
        marked
    }

    fn idem_begin(&mut self, b: IdemBegin) -> IdemBeginOutcome {
        let key = (b.account.clone(), b.key.clone());
        let fresh = IdemRow {
            fingerprint: b.fingerprint.clone(),
            owner: b.owner.clone(),
            locked_at: Some(b.now),
            recovery_point: None,
            status: None,
            body: None,
            expires_at: b.expires_at,
            taken_by: b.owner.clone(),
        };
        let new_use = IdemBeginOutcome::Started {
            resumed: false,
            recovery_point: None,
            taken_by: Some(b.owner.clone()),
        };
        let Some(row) = self.idem.get_mut(&key).filter(|r| r.expires_at > b.now) else {
            self.idem.insert(key, fresh);
            return new_use;
        };
        if let (Some(status), Some(body)) = (row.status, &row.body) {
            if row.fingerprint != b.fingerprint {
                return IdemBeginOutcome::Mismatch;
            }
            return IdemBeginOutcome::Completed {
                status,
                body: body.clone(),
            };
        }
        if row.locked_at.is_none() {
            // Released by a run that failed (5xx): the same parameters resume that use of the
            // key below; other parameters are a new request under it.
            if row.fingerprint != b.fingerprint {
                *row = fresh;
                return new_use;
            }
        } else if row.fingerprint != b.fingerprint {
            return IdemBeginOutcome::Mismatch;
        }
        let abandoned = row
            .locked_at
            .is_none_or(|t| b.now.saturating_sub(t) >= b.lock_timeout_ms);
        if row.owner == b.owner || abandoned {
            let resumed = row.owner != b.owner || row.recovery_point.is_some();
            row.owner = b.owner;
            row.locked_at = Some(b.now);
            return IdemBeginOutcome::Started {
                resumed,
                recovery_point: row.recovery_point.clone(),
                taken_by: Some(row.taken_by.clone()),
            };
        }
        IdemBeginOutcome::InProgress
    }

    fn idem_owned(&mut self, account: &str, key: &str, owner: &str) -> Result<&mut IdemRow, StoreError> {
        match self.idem.get_mut(&(account.to_owned(), key.to_owned())) {
            Some(row) if row.owner == owner => Ok(row),
            _ => Err(StoreError::NotOwner),
        }
    }
}

#[async_trait]
impl Backend for MemoryBackend {
    async fn execute(&self, req: Request) -> Result<Response, StoreError> {
        self.execute_sync(req)
    }

    fn describe(&self) -> String {
        "memory".to_owned()
    }
}

impl MemoryBackend {
    /// Applies one request synchronously (the simulator's db host calls this directly).
    pub fn execute_sync(&self, req: Request) -> Result<Response, StoreError> {
        self.with_state(|s| match req {
            Request::Ping => Ok(Response::Pong),
            Request::Get { table, id } => Ok(Response::Record {
                record: s.get(table, &id).cloned(),
            }),
            Request::Find {
                table,
                account,
                index,
                value,
                limit,
            } => {
                table.check_find(index)?;
                let map = match index {
                    Index::K1 => &s.k1,
                    Index::K2 => &s.k2,
                };
                let records = map
                    .get(&(table, value))
                    .map(|set| {
                        set.iter()
                            .filter_map(|(_, id)| s.get(table, id))
                            .filter(|r| account.as_deref().is_none_or(|a| r.account == a))
                            .take(limit.clamp(1, 1000) as usize)
                            .cloned()
                            .collect()
                    })
                    .unwrap_or_default();
                Ok(Response::Records { records })
            }
            Request::List(q) => s.list(&q).map(|page| Response::Page { page }),
            Request::Commit(txn) => s.commit(txn).map(|outcome| Response::Committed { outcome }),
            Request::GetEvent { account, id } => {
                let event = s
                    .event_seq_by_id
                    .get(&id)
                    .and_then(|seq| s.events.get(seq))
                    .filter(|e| e.event.account.as_ref().map(|a| a.as_str()) == Some(account.as_str()))
                    .cloned();
                Ok(Response::Event { event })
            }
            Request::ListEvents(q) => s.list_events(&q).map(|page| Response::Events { page }),
            Request::EventsSince { after_seq, limit } => {
                let limit = limit.clamp(1, 1000) as usize;
                let mut items: Vec<StoredEvent> = s
                    .events
                    .range(after_seq + 1..)
                    .take(limit + 1)
                    .map(|(_, e)| e.clone())
                    .collect();
                let has_more = items.len() > limit;
                items.truncate(limit);
                Ok(Response::Events {
                    page: Page { items, has_more },
                })
            }
            Request::IdemBegin(b) => Ok(Response::Idem {
                outcome: s.idem_begin(b),
            }),
            Request::IdemCheckpoint {
                account,
                key,
                owner,
                recovery_point,
            } => {
                s.idem_owned(&account, &key, &owner)?.recovery_point = Some(recovery_point);
                Ok(Response::Done)
            }
            Request::IdemFinish {
                account,
                key,
                owner,
                status,
                body,
            } => {
                let row = s.idem_owned(&account, &key, &owner)?;
                row.status = Some(status);
                row.body = Some(body);
                row.locked_at = None;
                Ok(Response::Done)
            }
            Request::IdemRelease { account, key, owner } => {
                // The key stays, unlocked and without an answer, so that a retry with the same
                // parameters resumes this use of it. Releasing a key that is already gone (reaped)
                // is a no-op.
                if s.idem.contains_key(&(account.clone(), key.clone())) {
                    s.idem_owned(&account, &key, &owner)?.locked_at = None;
                }
                Ok(Response::Done)
            }
            Request::QueueSend { queue, now, messages } => Ok(Response::Sent {
                ids: s.q_send(&queue, now, messages),
            }),
            Request::QueueReceive {
                queue,
                now,
                max,
                visibility_ms,
                mode,
                max_receives,
            } => Ok(Response::Received {
                messages: s.q_receive(&queue, now, max, visibility_ms, mode, max_receives),
            }),
            Request::QueueAck { receipt, now } => s.q_ack(&receipt, now).map(|_| Response::Done),
            Request::QueueAckAll { receipts, now } => {
                let mut stale = false;
                for r in &receipts {
                    stale |= s.q_ack(r, now).is_err();
                }
                if stale {
                    Err(StoreError::StaleReceipt)
                } else {
                    Ok(Response::Done)
                }
            }
            Request::QueueNack { receipt, now, delay_ms } => {
                let (queue, seq) = s.q_by_receipt(&receipt)?;
                if let Some(m) = s.queues.get_mut(&queue).and_then(|q| q.get_mut(&seq)) {
                    m.invisible_until = Some(now + delay_ms.max(0));
                }
                Ok(Response::Done)
            }
            Request::QueueExtend {
                receipt,
                now,
                visibility_ms,
            } => {
                let (queue, seq) = s.q_by_receipt(&receipt)?;
                if let Some(m) = s.queues.get_mut(&queue).and_then(|q| q.get_mut(&seq)) {
                    if m.invisible_until.is_none_or(|t| t <= now) {
                        return Err(StoreError::StaleReceipt);
                    }
                    m.invisible_until = Some(now + visibility_ms.max(0));
                }
                Ok(Response::Done)
            }
            Request::QueueDeadLetter { receipt, now, reason } => {
                let (queue, seq) = s.q_by_receipt(&receipt)?;
                s.q_move_dead(&queue, seq, now, &reason);
                Ok(Response::Done)
            }
            Request::QueueDepth { queue, now } => Ok(Response::Depth {
                depth: s.q_depth(&queue, now),
            }),
            Request::QueueDeadLetters { queue, limit } => Ok(Response::DeadLetters {
                letters: s
                    .q_dead
                    .get(&queue)
                    .map(|d| d.values().take(limit.clamp(1, 1000) as usize).cloned().collect())
                    .unwrap_or_default(),
            }),
            Request::QueueRedrive { id, now } => {
                let found = s.q_dead.iter().find_map(|(q, d)| {
                    d.iter()
                        .find(|(_, l)| l.message.id == id)
                        .map(|(seq, _)| (q.clone(), *seq))
                });
                let Some((queue, seq)) = found else {
                    return Err(StoreError::Invalid(format!("no dead letter {id}")));
                };
                if let Some(l) = s.q_dead.get_mut(&queue).and_then(|d| d.remove(&seq)) {
                    s.q_next_seq += 1;
                    let new_seq = s.q_next_seq;
                    let mut msg = l.message;
                    msg.receive_count = 0;
                    msg.seq = new_seq;
                    s.q_ids.insert(msg.id.clone(), (queue.clone(), new_seq));
                    s.queues.entry(queue).or_default().insert(
                        new_seq,
                        QMsg {
                            msg,
                            available_at: now,
                            invisible_until: None,
                        },
                    );
                }
                Ok(Response::Done)
            }
            Request::OutboxPending { limit } => Ok(Response::Pending {
                events: s.outbox_pending(limit.clamp(1, 10_000) as usize),
                unreadable: vec![],
            }),
            Request::OutboxFanOut { now, events } => Ok(Response::FannedOut {
                seqs: s.outbox_fan_out(now, events),
            }),
            Request::Reap { now, txn_retention_ms } => {
                s.q_dedup
                    .retain(|_, (_, acked)| acked.is_none_or(|t| now - t < DEDUP_WINDOW_MS));
                let before_keys = s.idem.len();
                s.idem.retain(|_, r| r.expires_at > now);
                let before_txns = s.txns.len();
                let cutoff = now.saturating_sub(txn_retention_ms);
                s.txns.retain(|_, at| *at >= cutoff);
                Ok(Response::Reaped {
                    keys: (before_keys - s.idem.len()) as u64,
                    txns: (before_txns - s.txns.len()) as u64,
                })
            }
        })
    }
}
