//! Velocity counters: how often a card, an IP address or a customer was seen recently.
//!
//! Windows are exact and sliding: an attempt at time `t` (Unix ms) is inside the window of
//! length `W` at `now` when `now − W < t` (an attempt stamped after `now`, by a node whose clock
//! runs ahead, counts too). Counts include the attempt being scored. Every attempt is recorded
//! once per `attempt_id`: observing or recording the outcome of the same attempt again (a
//! retried request) changes nothing. A decline counts in the windows that contain the declined
//! attempt's own time. An attempt id last observed more than a day ago is no longer remembered
//! and counts as new.
//!
//! Counts are per merchant account, and every count saturates at [`VELOCITY_CAP`]: attempts,
//! declines and distinct cards are each exact up to the cap and the cap beyond it. The cap is
//! what bounds the PostgreSQL store's work for a busy key: it keeps each key's attempts and
//! declines counted in ten-minute buckets as they arrive, and reads attempts one by one only
//! for the part of the oldest bucket inside a window, and only while the buckets' sum is under
//! the cap (migration 0019). A key that sees every payment (a merchant whose server is the
//! client, so one IP address) therefore costs a score one row per ten minutes of the day (and
//! per node writing), not the day's attempts.
//! Backends: [`MemoryVelocityStore`] (the simulator, tests, `paymentd dev`) and
//! [`crate::pg::PgVelocityStore`] (production: one call per score). Both forget what no window
//! can hold any more: the memory store on every observation, PostgreSQL when
//! [`VelocityStore::prune`] runs (the fraud role does, every minute).

use async_trait::async_trait;
use pay_core::Timestamp;
use serde::{Deserialize, Serialize};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;

/// One hour in ms.
pub const HOUR_MS: i64 = 3_600_000;
/// One day in ms.
pub const DAY_MS: i64 = 24 * HOUR_MS;

/// Where every velocity count saturates (see the module docs): a feature `ln(1 + count)` stops
/// growing at about 6.9, and a rule can compare a velocity attribute with up to this.
pub const VELOCITY_CAP: u32 = 1000;

/// What a velocity store records about an attempt.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Observation {
    /// The payment attempt (idempotency of observe/record_outcome).
    pub attempt_id: String,
    /// Merchant account (counts never cross accounts).
    pub account: String,
    /// Card fingerprint.
    pub card: Option<String>,
    /// Client IP address (canonical text form).
    pub ip: Option<String>,
    /// Customer id.
    pub customer: Option<String>,
}

/// How an attempt ended, for decline counts.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum AttemptOutcome {
    /// The network approved.
    Approved,
    /// The network declined.
    Declined,
    /// Fraud detection blocked it.
    Blocked,
}

impl AttemptOutcome {
    fn is_decline(self) -> bool {
        !matches!(self, AttemptOutcome::Approved)
    }
    fn as_str(self) -> &'static str {
        match self {
            AttemptOutcome::Approved => "approved",
            AttemptOutcome::Declined => "declined",
            AttemptOutcome::Blocked => "blocked",
        }
    }
}

/// Velocity features of one attempt; `None` where the key (card, IP, customer) is absent or
/// the store could not be asked.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct VelocityCounts {
    /// Attempts on the card in the last hour.
    pub card_attempts_1h: Option<u32>,
    /// Attempts on the card in 24 h.
    pub card_attempts_24h: Option<u32>,
    /// Declined attempts on the card in the last hour.
    pub card_declines_1h: Option<u32>,
    /// Declined attempts on the card in 24 h.
    pub card_declines_24h: Option<u32>,
    /// Attempts from the IP in the last hour.
    pub ip_attempts_1h: Option<u32>,
    /// Attempts from the IP in 24 h.
    pub ip_attempts_24h: Option<u32>,
    /// Distinct cards of the customer in 24 h.
    pub customer_distinct_cards_24h: Option<u32>,
    /// Distinct cards from the IP in 24 h.
    pub ip_distinct_cards_24h: Option<u32>,
}

impl VelocityCounts {
    /// Nothing known (the store was unreachable): velocity features and rules see no value.
    pub fn unknown() -> VelocityCounts {
        VelocityCounts::default()
    }

    /// Keeps only the counts whose key the observation has.
    pub(crate) fn masked(mut self, o: &Observation) -> VelocityCounts {
        if o.card.is_none() {
            self.card_attempts_1h = None;
            self.card_attempts_24h = None;
            self.card_declines_1h = None;
            self.card_declines_24h = None;
        }
        if o.ip.is_none() {
            self.ip_attempts_1h = None;
            self.ip_attempts_24h = None;
            self.ip_distinct_cards_24h = None;
        }
        if o.customer.is_none() {
            self.customer_distinct_cards_24h = None;
        }
        self
    }
}

/// A velocity store failed.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum VelocityError {
    /// The store could not be reached or failed; nothing is known.
    #[error("velocity store unavailable: {0}")]
    Unavailable(String),
}

/// Records attempts and counts them in sliding windows.
#[async_trait]
pub trait VelocityStore: Send + Sync + 'static {
    /// Records the attempt (once per `attempt_id`) and returns the counts at `now`, this
    /// attempt included.
    async fn observe(&self, obs: &Observation, now: Timestamp) -> Result<VelocityCounts, VelocityError>;
    /// Records how the attempt ended (first outcome wins; unknown attempts are ignored).
    async fn record_outcome(
        &self,
        attempt_id: &str,
        outcome: AttemptOutcome,
        at: Timestamp,
    ) -> Result<(), VelocityError>;
    /// Forgets what no window at or after `now` can count (attempts a day old or older), so
    /// that the store stays the size of a day's traffic; answers the attempts forgotten.
    async fn prune(&self, now: Timestamp) -> Result<u64, VelocityError>;
}

#[derive(Debug, Clone)]
struct Entry {
    obs: Observation,
    t: i64,
    outcome: Option<AttemptOutcome>,
}

type Key = (String, String);

#[derive(Debug, Default)]
struct Inner {
    attempts: BTreeMap<String, Entry>,
    /// (t, attempt id) of every attempt, for pruning and the size bound.
    by_time: BTreeSet<(i64, String)>,
    by_card: BTreeMap<Key, BTreeSet<(i64, String)>>,
    by_ip: BTreeMap<Key, BTreeSet<(i64, String)>>,
    by_customer: BTreeMap<Key, BTreeSet<(i64, String)>>,
}

fn index_remove(idx: &mut BTreeMap<Key, BTreeSet<(i64, String)>>, key: Option<Key>, item: &(i64, String)) {
    if let Some(k) = key {
        if let Some(set) = idx.get_mut(&k) {
            set.remove(item);
            if set.is_empty() {
                idx.remove(&k);
            }
        }
    }
}

impl Inner {
    fn remove(&mut self, item: &(i64, String)) {
        self.by_time.remove(item);
        if let Some(e) = self.attempts.remove(&item.1) {
            let acct = e.obs.account.clone();
            index_remove(&mut self.by_card, e.obs.card.map(|c| (acct.clone(), c)), item);
            index_remove(&mut self.by_ip, e.obs.ip.map(|c| (acct.clone(), c)), item);
            index_remove(&mut self.by_customer, e.obs.customer.map(|c| (acct, c)), item);
        }
    }

    /// Forgets attempts a day old or older at `now` and, beyond `max`, the oldest ones;
    /// answers how many.
    fn prune(&mut self, now: i64, max: usize) -> u64 {
        let mut removed = 0;
        while let Some(first) = self.by_time.first().cloned() {
            if first.0 <= now - DAY_MS || self.by_time.len() > max {
                self.remove(&first);
                removed += 1;
            } else {
                break;
            }
        }
        removed
    }

    /// The key's attempts in the day's window at `now` (`now − DAY_MS < t`).
    fn in_day<'a>(&'a self, idx: &'a BTreeMap<Key, BTreeSet<(i64, String)>>, key: &Key, now: i64) -> Vec<&'a Entry> {
        idx.get(key)
            .into_iter()
            .flat_map(move |set| set.range((now - DAY_MS + 1, String::new())..))
            .filter_map(|(_, id)| self.attempts.get(id))
            .collect()
    }
}

/// Velocity counters in memory (ordered maps only, so iteration is deterministic). Attempts
/// older than a day are pruned on every observation, and at most `max_attempts` are kept.
#[derive(Debug)]
pub struct MemoryVelocityStore {
    inner: Mutex<Inner>,
    max_attempts: usize,
    cap: usize,
}

impl Default for MemoryVelocityStore {
    fn default() -> Self {
        MemoryVelocityStore::new(1_000_000)
    }
}

impl MemoryVelocityStore {
    /// A store keeping at most `max_attempts` attempts.
    pub fn new(max_attempts: usize) -> MemoryVelocityStore {
        MemoryVelocityStore {
            inner: Mutex::new(Inner::default()),
            max_attempts: max_attempts.max(1),
            cap: VELOCITY_CAP as usize,
        }
    }

    /// The same store saturating its counts at `cap` (see [`VELOCITY_CAP`]; tests use small
    /// caps to reach them).
    pub fn with_cap(mut self, cap: u32) -> MemoryVelocityStore {
        self.cap = (cap as usize).max(1);
        self
    }

    /// Attempts currently held.
    pub fn len(&self) -> usize {
        self.lock().attempts.len()
    }

    /// True when nothing is held.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        }
    }

    /// The synchronous core of [`VelocityStore::observe`].
    pub fn observe_now(&self, obs: &Observation, now: Timestamp) -> VelocityCounts {
        let now = now.millis();
        let mut g = self.lock();
        g.prune(now, self.max_attempts);
        let stored = match g.attempts.get(&obs.attempt_id) {
            Some(e) => e.obs.clone(),
            None => {
                let item = (now, obs.attempt_id.clone());
                let acct = obs.account.clone();
                if let Some(c) = &obs.card {
                    g.by_card
                        .entry((acct.clone(), c.clone()))
                        .or_default()
                        .insert(item.clone());
                }
                if let Some(ip) = &obs.ip {
                    g.by_ip
                        .entry((acct.clone(), ip.clone()))
                        .or_default()
                        .insert(item.clone());
                }
                if let Some(cu) = &obs.customer {
                    g.by_customer
                        .entry((acct, cu.clone()))
                        .or_default()
                        .insert(item.clone());
                }
                g.by_time.insert(item);
                g.attempts.insert(
                    obs.attempt_id.clone(),
                    Entry {
                        obs: obs.clone(),
                        t: now,
                        outcome: None,
                    },
                );
                obs.clone()
            }
        };
        let hour_ago = now - HOUR_MS;
        let cap = u32::try_from(self.cap).unwrap_or(u32::MAX);
        let count = |entries: &[&Entry], since: i64| -> (u32, u32) {
            let mut n = 0u32;
            let mut d = 0u32;
            for e in entries.iter().filter(|e| e.t > since) {
                n = n.saturating_add(1);
                if e.outcome.is_some_and(AttemptOutcome::is_decline) {
                    d = d.saturating_add(1);
                }
            }
            (n.min(cap), d.min(cap))
        };
        let distinct = |entries: &[&Entry]| -> u32 {
            let cards: BTreeSet<&String> = entries.iter().filter_map(|e| e.obs.card.as_ref()).collect();
            u32::try_from(cards.len()).unwrap_or(u32::MAX).min(cap)
        };
        let mut c = VelocityCounts::default();
        let acct = &stored.account;
        if let Some(card) = &stored.card {
            let day = g.in_day(&g.by_card, &(acct.clone(), card.clone()), now);
            let (a1, d1) = count(&day, hour_ago);
            let (a24, d24) = count(&day, i64::MIN);
            c.card_attempts_1h = Some(a1);
            c.card_declines_1h = Some(d1);
            c.card_attempts_24h = Some(a24);
            c.card_declines_24h = Some(d24);
        }
        if let Some(ip) = &stored.ip {
            let day = g.in_day(&g.by_ip, &(acct.clone(), ip.clone()), now);
            c.ip_attempts_1h = Some(count(&day, hour_ago).0);
            c.ip_attempts_24h = Some(count(&day, i64::MIN).0);
            c.ip_distinct_cards_24h = Some(distinct(&day));
        }
        if let Some(cu) = &stored.customer {
            let day = g.in_day(&g.by_customer, &(acct.clone(), cu.clone()), now);
            c.customer_distinct_cards_24h = Some(distinct(&day));
        }
        c.masked(&stored)
    }

    /// The synchronous core of [`VelocityStore::record_outcome`].
    pub fn record_outcome_now(&self, attempt_id: &str, outcome: AttemptOutcome) {
        let mut g = self.lock();
        if let Some(e) = g.attempts.get_mut(attempt_id) {
            if e.outcome.is_none() {
                e.outcome = Some(outcome);
            }
        }
    }

    /// When the attempt was first observed (Unix ms).
    pub fn observed_at(&self, attempt_id: &str) -> Option<i64> {
        self.lock().attempts.get(attempt_id).map(|e| e.t)
    }
}

#[async_trait]
impl VelocityStore for MemoryVelocityStore {
    async fn observe(&self, obs: &Observation, now: Timestamp) -> Result<VelocityCounts, VelocityError> {
        Ok(self.observe_now(obs, now))
    }

    async fn record_outcome(
        &self,
        attempt_id: &str,
        outcome: AttemptOutcome,
        _at: Timestamp,
    ) -> Result<(), VelocityError> {
        self.record_outcome_now(attempt_id, outcome);
        Ok(())
    }

    async fn prune(&self, now: Timestamp) -> Result<u64, VelocityError> {
        Ok(self.lock().prune(now.millis(), self.max_attempts))
    }
}

/// The outcome's stored name (PostgreSQL column value).
pub(crate) fn outcome_name(o: AttemptOutcome) -> &'static str {
    o.as_str()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn obs(id: &str, card: Option<&str>, ip: Option<&str>, customer: Option<&str>) -> Observation {
        Observation {
            attempt_id: id.into(),
            account: "acct_1".into(),
            card: card.map(Into::into),
            ip: ip.map(Into::into),
            customer: customer.map(Into::into),
        }
    }

    #[test]
    fn windows_are_exact_and_retries_count_once() {
        let s = MemoryVelocityStore::default();
        let t0 = 1_000_000_000_000;
        let c = s.observe_now(&obs("a1", Some("fp"), Some("1.2.3.4"), Some("cus")), Timestamp(t0));
        assert_eq!(c.card_attempts_1h, Some(1));
        assert_eq!(c.ip_distinct_cards_24h, Some(1));
        // Retry of a1: not counted again.
        let c = s.observe_now(&obs("a1", Some("fp"), Some("1.2.3.4"), Some("cus")), Timestamp(t0 + 5));
        assert_eq!(c.card_attempts_1h, Some(1));
        s.record_outcome_now("a1", AttemptOutcome::Declined);
        s.record_outcome_now("a1", AttemptOutcome::Approved); // first outcome wins
        let c = s.observe_now(
            &obs("a2", Some("fp2"), Some("1.2.3.4"), Some("cus")),
            Timestamp(t0 + HOUR_MS - 1),
        );
        assert_eq!(c.card_attempts_1h, Some(1));
        assert_eq!(c.ip_attempts_1h, Some(2));
        assert_eq!(c.customer_distinct_cards_24h, Some(2));
        // Exactly one hour after a1, a1 is outside the 1 h window (now − W < t is strict).
        let c = s.observe_now(&obs("a3", Some("fp"), None, None), Timestamp(t0 + HOUR_MS));
        assert_eq!(c.card_attempts_1h, Some(1));
        assert_eq!(c.card_attempts_24h, Some(2));
        assert_eq!(c.card_declines_1h, Some(0));
        assert_eq!(c.card_declines_24h, Some(1));
        assert_eq!(c.ip_attempts_1h, None);
        assert_eq!(c.customer_distinct_cards_24h, None);
        // A day later everything old is pruned.
        s.observe_now(&obs("a4", None, None, None), Timestamp(t0 + DAY_MS + HOUR_MS));
        assert_eq!(s.len(), 1);
    }

    /// Each count saturates at the cap on its own: attempts, declines and distinct cards are
    /// exact up to it and the cap beyond it.
    #[test]
    fn every_count_saturates_at_the_cap() {
        let s = MemoryVelocityStore::default().with_cap(3);
        let t0 = 1_800_000_000_000i64;
        for (i, card) in ["fp1", "fp2", "fp1", "fp1", "fp1"].iter().enumerate() {
            let id = format!("a{i}");
            s.observe_now(&obs(&id, Some(card), Some("10.0.0.1"), None), Timestamp(t0 + i as i64));
            let outcome = if i == 1 {
                AttemptOutcome::Approved
            } else {
                AttemptOutcome::Declined
            };
            s.record_outcome_now(&id, outcome);
        }
        let c = s.observe_now(&obs("a5", Some("fp1"), Some("10.0.0.1"), None), Timestamp(t0 + 10));
        // Five attempts on fp1, four declined: both counted as three.
        assert_eq!(c.card_attempts_24h, Some(3));
        assert_eq!(c.card_declines_24h, Some(3));
        // Six attempts from the IP (three), with two cards: under the cap, exact.
        assert_eq!(c.ip_attempts_1h, Some(3));
        assert_eq!(c.ip_distinct_cards_24h, Some(2));
        for (i, card) in ["fp3", "fp4"].iter().enumerate() {
            s.observe_now(
                &obs(&format!("b{i}"), Some(card), Some("10.0.0.1"), None),
                Timestamp(t0 + 20),
            );
        }
        let c = s.observe_now(&obs("b2", Some("fp2"), Some("10.0.0.1"), None), Timestamp(t0 + 30));
        assert_eq!(c.ip_distinct_cards_24h, Some(3));
        assert_eq!(c.card_attempts_24h, Some(2));
        assert_eq!(c.card_declines_24h, Some(0));
        let uncapped = MemoryVelocityStore::default();
        for i in 0..5 {
            uncapped.observe_now(&obs(&format!("a{i}"), Some("fp"), None, None), Timestamp(t0 + i));
        }
        assert_eq!(
            uncapped
                .observe_now(&obs("a5", Some("fp"), None, None), Timestamp(t0 + 5))
                .card_attempts_1h,
            Some(6)
        );
    }

    /// An attempt stamped after `now` (by a node whose clock runs ahead) is inside the window.
    #[test]
    fn an_attempt_stamped_ahead_counts() {
        let s = MemoryVelocityStore::default();
        let t0 = 1_800_000_000_000i64;
        s.observe_now(&obs("ahead", Some("fp"), None, None), Timestamp(t0 + 500));
        let c = s.observe_now(&obs("now", Some("fp"), None, None), Timestamp(t0));
        assert_eq!(c.card_attempts_1h, Some(2));
    }

    #[test]
    fn size_is_bounded() {
        let s = MemoryVelocityStore::new(10);
        for i in 0..50 {
            s.observe_now(&obs(&format!("a{i}"), Some("fp"), None, None), Timestamp(i));
        }
        assert!(s.len() <= 11);
    }
}
