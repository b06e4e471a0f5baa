//! Scenario files: what a run does (workload), what goes wrong (faults) and what must hold
//! (invariants).
//!
//! A scenario is YAML (see `scenarios/*.yaml`). Parsing reports errors with the file, the line
//! and the field, for both YAML type errors and semantic checks (unknown host, a rate outside
//! 0–1, a fault after the end of the run, a card number that fails Luhn).

use pay_core::card::luhn_valid;
use serde::{Deserialize, Deserializer, Serialize, Serializer};
use std::collections::BTreeMap;
use std::fmt;
use std::time::Duration;

/// Hosts of the simulated topology that faults can name (besides `client-N`).
pub const SERVICE_HOSTS: &[&str] = &[
    "waf",
    "api",
    "tokenizer",
    "payments",
    "fraud",
    "webhooks",
    "acquirer",
    "db",
    "merchant",
];

/// Why a scenario was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{file}:{line}: {field}: {message}")]
pub struct ScenarioError {
    /// The scenario file.
    pub file: String,
    /// 1-based line (0 when unknown).
    pub line: usize,
    /// Dotted field path (`faults[2].partition`).
    pub field: String,
    /// What is wrong.
    pub message: String,
}

/// A duration written as `500ms`, `10s`, `2m` or `1h`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Default)]
pub struct Dur(pub Duration);

impl Dur {
    /// Milliseconds.
    pub fn ms(self) -> u64 {
        u64::try_from(self.0.as_millis()).unwrap_or(u64::MAX)
    }
}

/// Parses `500ms`, `10s`, `2m`, `1h` (or a bare number of seconds).
pub fn parse_duration(s: &str) -> Result<Duration, String> {
    let s = s.trim();
    let (num, unit) = match s.find(|c: char| !c.is_ascii_digit() && c != '.') {
        Some(i) => (&s[..i], &s[i..]),
        None => (s, "s"),
    };
    let n: f64 = num
        .parse()
        .map_err(|_| format!("invalid duration `{s}` (use e.g. 500ms, 10s, 2m, 1h)"))?;
    let ms = match unit {
        "ms" => n,
        "s" => n * 1000.0,
        "m" => n * 60_000.0,
        "h" => n * 3_600_000.0,
        _ => return Err(format!("invalid duration unit in `{s}` (use ms, s, m or h)")),
    };
    if !ms.is_finite() || !(0.0..=1e12).contains(&ms) {
        return Err(format!("duration `{s}` out of range"));
    }
    Ok(Duration::from_millis(ms.round() as u64))
}

impl<'de> Deserialize<'de> for Dur {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            N(u64),
            S(String),
        }
        match Raw::deserialize(d)? {
            Raw::N(n) => Ok(Dur(Duration::from_secs(n))),
            Raw::S(s) => parse_duration(&s).map(Dur).map_err(serde::de::Error::custom),
        }
    }
}

impl Serialize for Dur {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.serialize_str(&self.to_string())
    }
}

impl fmt::Display for Dur {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let ms = self.ms();
        if ms % 3_600_000 == 0 && ms > 0 {
            write!(f, "{}h", ms / 3_600_000)
        } else if ms % 60_000 == 0 && ms > 0 {
            write!(f, "{}m", ms / 60_000)
        } else if ms % 1000 == 0 {
            write!(f, "{}s", ms / 1000)
        } else {
            write!(f, "{ms}ms")
        }
    }
}

/// Kinds of client flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Flow {
    /// Create a payment method, create and confirm an intent (automatic capture).
    Purchase,
    /// Authorize with manual capture, then capture all or part.
    ManualCapture,
    /// A purchase followed by one or two refunds.
    Refund,
    /// Authorize with manual capture, then cancel (or cancel before confirming).
    Cancel,
    /// Send the same create-and-confirm several times concurrently with one key.
    DuplicateRetry,
}

/// The client workload.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Workload {
    /// Concurrent clients.
    pub clients: u32,
    /// Flows started per client per second.
    pub rate: f64,
    /// Relative weights of flows.
    pub flows: BTreeMap<Flow, u32>,
    /// Relative weights of test card numbers.
    pub cards: BTreeMap<String, u32>,
    /// Smallest amount (minor units, USD).
    #[serde(default = "default_min_amount")]
    pub min_amount: i64,
    /// Largest amount.
    #[serde(default = "default_max_amount")]
    pub max_amount: i64,
    /// Probability that a client abandons a request mid-flight (drops it) and retries later.
    #[serde(default)]
    pub abandon_rate: f64,
    /// How many concurrent copies a duplicate-retry flow sends.
    #[serde(default = "default_duplicates")]
    pub duplicates: u32,
}

fn default_min_amount() -> i64 {
    500
}
fn default_max_amount() -> i64 {
    50_000
}
fn default_duplicates() -> u32 {
    4
}

/// A fault, at a time, for a while (or for the rest of the workload phase).
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ScheduledFault {
    /// When it starts (from the beginning of the run).
    pub at: Dur,
    /// How long it lasts (omitted: until the workload ends; ignored for instant faults).
    #[serde(rename = "for", default, skip_serializing_if = "Option::is_none")]
    pub lasts: Option<Dur>,
    /// What happens.
    #[serde(flatten)]
    pub fault: Fault,
}

/// Something that goes wrong.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Fault {
    /// Cut the network between two groups of hosts (`[a, b]` or `[[a, b], [c]]`).
    Partition(Vec<HostGroup>),
    /// Random message loss: each message on any link may break the link, which heals later.
    MessageLoss(f64),
    /// Message latency range.
    Latency {
        /// Minimum.
        min: Dur,
        /// Maximum.
        max: Dur,
    },
    /// Crash a host and restart it (after `for`, or at once).
    Bounce(String),
    /// The db applies a request but its answer is lost, with this probability.
    DbAmbiguousCommit(f64),
    /// The db refuses every request (`db_unavailable: true`).
    DbUnavailable(bool),
    /// The acquirer applies an operation but its answer is lost, with this probability.
    AcquirerLostReplies(f64),
    /// The acquirer answers slowly.
    AcquirerSlow {
        /// Added delay.
        delay: Dur,
        /// Probability per call.
        rate: f64,
    },
    /// A host's wall clock runs ahead (positive) or behind (negative).
    ClockSkew {
        /// Host.
        host: String,
        /// Offset in milliseconds.
        ms: i64,
    },
    /// The HSM refuses every operation (`hsm_unavailable: true`).
    HsmUnavailable(bool),
    /// The payment service stops between authorizing and recording, with this probability
    /// (the request fails; the attempt is left for a retry or the reconciler).
    CrashAfterAuthorize(f64),
}

/// One side of a partition: a host or a list of hosts.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(untagged)]
pub enum HostGroup {
    /// One host.
    One(String),
    /// Several hosts.
    Many(Vec<String>),
}

impl HostGroup {
    /// The hosts.
    pub fn hosts(&self) -> Vec<String> {
        match self {
            HostGroup::One(h) => vec![h.clone()],
            HostGroup::Many(v) => v.clone(),
        }
    }
}

/// Invariants checked at the end of a run.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum Invariant {
    /// At most one live authorization per payment attempt and per client idempotency key.
    NoDoubleCharge,
    /// Every replayed response equals the first.
    IdempotentReplay,
    /// Every network operation matches exactly one record, amounts agree, refunds ≤ captures.
    LedgerReconciliation,
    /// Every PaymentIntent status path is allowed by the state machine.
    LegalTransitions,
    /// Anything the client saw succeed exists and stays succeeded.
    NoLostAcknowledgedWrite,
    /// After healing, nothing is stuck and every unknown outcome is resolved.
    Liveness,
    /// No card number outside the cardholder-data environment (messages, logs, storage).
    PanConfined,
    /// No CVC in any store.
    NoCvcAtRest,
    /// Every committed event reaches every subscribed webhook endpoint (or is still on its way
    /// in the queue), none is given up, and FIFO endpoints see commit order.
    WebhookDelivery,
    /// No webhook carries an event whose change did not commit.
    NoPhantomWebhook,
}

impl Invariant {
    /// Every invariant.
    pub const ALL: [Invariant; 10] = [
        Invariant::NoDoubleCharge,
        Invariant::IdempotentReplay,
        Invariant::LedgerReconciliation,
        Invariant::LegalTransitions,
        Invariant::NoLostAcknowledgedWrite,
        Invariant::Liveness,
        Invariant::PanConfined,
        Invariant::NoCvcAtRest,
        Invariant::WebhookDelivery,
        Invariant::NoPhantomWebhook,
    ];

    /// snake_case name.
    pub fn name(self) -> &'static str {
        match self {
            Invariant::NoDoubleCharge => "no_double_charge",
            Invariant::IdempotentReplay => "idempotent_replay",
            Invariant::LedgerReconciliation => "ledger_reconciliation",
            Invariant::LegalTransitions => "legal_transitions",
            Invariant::NoLostAcknowledgedWrite => "no_lost_acknowledged_write",
            Invariant::Liveness => "liveness",
            Invariant::PanConfined => "pan_confined",
            Invariant::NoCvcAtRest => "no_cvc_at_rest",
            Invariant::WebhookDelivery => "webhook_delivery",
            Invariant::NoPhantomWebhook => "no_phantom_webhook",
        }
    }
}

/// Probabilities with which swarm mode draws each fault kind for a seed.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct Swarm {
    /// Probability of each fault kind being enabled for a seed (kinds: partition,
    /// message_loss, latency, bounce, db_ambiguous_commit, db_unavailable,
    /// acquirer_lost_replies, acquirer_slow, clock_skew, hsm_unavailable,
    /// crash_after_authorize, abandon).
    #[serde(default)]
    pub probabilities: BTreeMap<String, f64>,
    /// How many fault events to draw at most per seed.
    #[serde(default = "default_swarm_events")]
    pub max_events: u32,
}

fn default_swarm_events() -> u32 {
    6
}

/// Deliberate bugs (accepted only by builds with the `planted-bugs` feature).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PlantedBug {
    /// The API runs requests without taking the idempotency lock.
    SkipIdempotencyLock,
    /// The payment service sends the network a fresh key when it retries an attempt.
    FreshAcquirerKey,
    /// The payment service commits events outside the state-change transaction.
    EventOutsideTxn,
}

/// A whole scenario.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Scenario {
    /// Short name.
    pub name: String,
    /// What it exercises.
    #[serde(default)]
    pub description: String,
    /// Length of the workload phase.
    pub duration: Dur,
    /// Liveness phase after faults heal: time the system gets to settle.
    #[serde(default = "default_settle")]
    pub settle: Dur,
    /// The workload.
    pub workload: Workload,
    /// Scheduled faults.
    #[serde(default)]
    pub faults: Vec<ScheduledFault>,
    /// Swarm mode settings.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub swarm: Option<Swarm>,
    /// Invariants to check (default: all).
    #[serde(default = "all_invariants")]
    pub invariants: Vec<Invariant>,
    /// A deliberate bug to plant (planted-bug builds only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub planted_bug: Option<PlantedBug>,
}

fn default_settle() -> Dur {
    Dur(Duration::from_secs(120))
}

fn all_invariants() -> Vec<Invariant> {
    Invariant::ALL.to_vec()
}

/// Maps dotted field paths (`faults[2].at`) to the 1-based line they start on, by reading the
/// YAML's indentation structure (block style, as scenario files are written).
pub fn field_lines(text: &str) -> BTreeMap<String, usize> {
    let mut map = BTreeMap::new();
    // Stack of (indent, path, list counter for children).
    let mut stack: Vec<(i64, String, i64)> = vec![(-1, String::new(), -1)];
    for (i, raw) in text.lines().enumerate() {
        let line = raw.split(" #").next().unwrap_or(raw);
        if line.trim().is_empty() || line.trim_start().starts_with('#') {
            continue;
        }
        let indent = (line.len() - line.trim_start().len()) as i64;
        let mut content = line.trim_start();
        while stack.len() > 1 && stack.last().is_some_and(|s| s.0 >= indent) {
            stack.pop();
        }
        let mut base = stack.last().map(|s| s.1.clone()).unwrap_or_default();
        let mut indent_here = indent;
        if let Some(rest) = content
            .strip_prefix("- ")
            .or_else(|| if content == "-" { Some("") } else { None })
        {
            let parent = stack.last_mut().expect("stack has a root");
            parent.2 += 1;
            base = format!("{}[{}]", parent.1, parent.2);
            map.entry(base.clone()).or_insert(i + 1);
            stack.push((indent, base.clone(), -1));
            content = rest;
            indent_here = indent + 2;
            if content.is_empty() {
                continue;
            }
        }
        if let Some((key, _)) = content.split_once(':') {
            let key = key.trim().trim_matches('"').trim_matches('\'');
            if key.is_empty() || key.contains(' ') && key.starts_with('[') {
                continue;
            }
            let path = if base.is_empty() {
                key.to_owned()
            } else {
                format!("{base}.{key}")
            };
            map.entry(path.clone()).or_insert(i + 1);
            stack.push((indent_here, path, -1));
        }
    }
    map
}

fn line_of(lines: &BTreeMap<String, usize>, field: &str) -> usize {
    // The field itself, else its nearest ancestor.
    let mut f = field.to_owned();
    loop {
        if let Some(l) = lines.get(&f) {
            return *l;
        }
        match f.rfind(['.', '[']) {
            Some(i) => f.truncate(i),
            None => return 0,
        }
    }
}

impl Scenario {
    /// Parses and validates scenario text; `file` names it in errors.
    pub fn parse(text: &str, file: &str) -> Result<Scenario, ScenarioError> {
        let lines = field_lines(text);
        let s: Scenario = serde_yaml_ng::from_str(text).map_err(|e| {
            let line = e.location().map(|l| l.line()).unwrap_or(0);
            let msg = e.to_string();
            // serde_yaml_ng prefixes the field path: `workload.clients: invalid type …`.
            let (field, message) = match msg.split_once(": ") {
                Some((f, m)) if !f.contains(' ') => (f.to_owned(), m.to_owned()),
                _ => ("(document)".to_owned(), msg.clone()),
            };
            let message = message.split(" at line ").next().unwrap_or(&message).to_owned();
            ScenarioError {
                file: file.to_owned(),
                line,
                field,
                message,
            }
        })?;
        s.validate().map_err(|(field, message)| ScenarioError {
            file: file.to_owned(),
            line: line_of(&lines, &field),
            field,
            message,
        })?;
        Ok(s)
    }

    /// Reads and parses a scenario file.
    pub fn load(path: &std::path::Path) -> Result<Scenario, ScenarioError> {
        let text = std::fs::read_to_string(path).map_err(|e| ScenarioError {
            file: path.display().to_string(),
            line: 0,
            field: "(file)".into(),
            message: e.to_string(),
        })?;
        Scenario::parse(&text, &path.display().to_string())
    }

    /// Renders the scenario as YAML (shrunk scenarios are printed this way).
    pub fn to_yaml(&self) -> String {
        serde_yaml_ng::to_string(self).unwrap_or_default()
    }

    fn validate(&self) -> Result<(), (String, String)> {
        let err = |f: &str, m: String| Err((f.to_owned(), m));
        if self.name.trim().is_empty() {
            return err("name", "must not be empty".into());
        }
        if self.duration.0 < Duration::from_secs(1) || self.duration.0 > Duration::from_secs(24 * 3600) {
            return err("duration", "must be between 1s and 24h".into());
        }
        if self.settle.0 > Duration::from_secs(24 * 3600) {
            return err("settle", "must be at most 24h".into());
        }
        let w = &self.workload;
        if w.clients == 0 || w.clients > 256 {
            return err("workload.clients", "must be between 1 and 256".into());
        }
        if !(w.rate > 0.0 && w.rate <= 100.0) {
            return err(
                "workload.rate",
                "must be above 0 and at most 100 flows per second per client".into(),
            );
        }
        if w.flows.is_empty() || w.flows.values().all(|v| *v == 0) {
            return err("workload.flows", "give at least one flow a positive weight".into());
        }
        if w.cards.is_empty() || w.cards.values().all(|v| *v == 0) {
            return err("workload.cards", "give at least one card a positive weight".into());
        }
        for card in w.cards.keys() {
            if !card.bytes().all(|b| b.is_ascii_digit()) || !luhn_valid(card) {
                return err(
                    &format!("workload.cards.{card}"),
                    "not a valid (Luhn) card number".into(),
                );
            }
        }
        if w.min_amount < 50 || w.max_amount < w.min_amount || w.max_amount > 99_999_999 {
            return err(
                "workload.min_amount",
                "need 50 <= min_amount <= max_amount <= 99999999".into(),
            );
        }
        if !(0.0..=1.0).contains(&w.abandon_rate) {
            return err("workload.abandon_rate", "must be between 0 and 1".into());
        }
        if w.duplicates < 2 || w.duplicates > 64 {
            return err("workload.duplicates", "must be between 2 and 64".into());
        }
        for (i, f) in self.faults.iter().enumerate() {
            let p = format!("faults[{i}]");
            if f.at.0 >= self.duration.0 {
                return err(
                    &format!("{p}.at"),
                    format!("starts at {} but the workload ends at {}", f.at, self.duration),
                );
            }
            let rate = |r: f64, name: &str| -> Result<(), (String, String)> {
                if (0.0..=1.0).contains(&r) {
                    Ok(())
                } else {
                    Err((format!("{p}.{name}"), "must be between 0 and 1".into()))
                }
            };
            let host = |h: &str, name: &str| -> Result<(), (String, String)> {
                if SERVICE_HOSTS.contains(&h) || h.starts_with("client-") {
                    Ok(())
                } else {
                    Err((
                        format!("{p}.{name}"),
                        format!("unknown host `{h}` (hosts: {}, client-N)", SERVICE_HOSTS.join(", ")),
                    ))
                }
            };
            match &f.fault {
                Fault::Partition(groups) => {
                    if groups.len() != 2 {
                        return err(
                            &format!("{p}.partition"),
                            "needs exactly two sides: [a, b] or [[a, b], [c]]".into(),
                        );
                    }
                    for g in groups {
                        for h in g.hosts() {
                            host(&h, "partition")?;
                        }
                    }
                }
                Fault::MessageLoss(r) => rate(*r, "message_loss")?,
                Fault::Latency { min, max } => {
                    if min > max {
                        return err(&format!("{p}.latency"), "min must not exceed max".into());
                    }
                }
                Fault::Bounce(h) => {
                    host(h, "bounce")?;
                    if h == "db" || h == "acquirer" || h.starts_with("client-") {
                        // db and acquirer keep their data across restarts, clients are the test.
                    }
                }
                Fault::DbAmbiguousCommit(r) => rate(*r, "db_ambiguous_commit")?,
                Fault::AcquirerLostReplies(r) => rate(*r, "acquirer_lost_replies")?,
                Fault::AcquirerSlow { rate: r, .. } => rate(*r, "acquirer_slow.rate")?,
                Fault::ClockSkew { host: h, ms } => {
                    host(h, "clock_skew.host")?;
                    if ms.unsigned_abs() > 3_600_000 {
                        return err(
                            &format!("{p}.clock_skew.ms"),
                            "skew beyond one hour is not modelled".into(),
                        );
                    }
                }
                Fault::CrashAfterAuthorize(r) => rate(*r, "crash_after_authorize")?,
                Fault::DbUnavailable(_) | Fault::HsmUnavailable(_) => {}
            }
        }
        if let Some(sw) = &self.swarm {
            for (k, v) in &sw.probabilities {
                if !SWARM_KINDS.contains(&k.as_str()) {
                    return err(
                        &format!("swarm.probabilities.{k}"),
                        format!("unknown fault kind (kinds: {})", SWARM_KINDS.join(", ")),
                    );
                }
                if !(0.0..=1.0).contains(v) {
                    return err(&format!("swarm.probabilities.{k}"), "must be between 0 and 1".into());
                }
            }
        }
        if self.invariants.is_empty() {
            return err("invariants", "check at least one invariant".into());
        }
        Ok(())
    }
}

/// Fault kinds swarm mode can draw.
pub const SWARM_KINDS: &[&str] = &[
    "partition",
    "message_loss",
    "latency",
    "bounce",
    "db_ambiguous_commit",
    "db_unavailable",
    "acquirer_lost_replies",
    "acquirer_slow",
    "clock_skew",
    "hsm_unavailable",
    "crash_after_authorize",
    "abandon",
];

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = r#"
name: sample
description: a test
duration: 60s
settle: 2m
workload:
  clients: 2
  rate: 0.5
  flows:
    purchase: 3
    refund: 1
  cards:
    "4242424242424242": 9
    "4000000000000002": 1
faults:
  - at: 10s
    for: 5s
    partition: [payments, db]
  - at: 20s
    bounce: payments
  - at: 30s
    for: 10s
    acquirer_lost_replies: 0.5
  - at: 31s
    latency: { min: 1ms, max: 50ms }
invariants: [no_double_charge, liveness]
"#;

    #[test]
    fn parses_a_good_scenario() {
        let s = Scenario::parse(GOOD, "good.yaml").unwrap();
        assert_eq!(s.duration.0, Duration::from_secs(60));
        assert_eq!(s.settle.0, Duration::from_secs(120));
        assert_eq!(s.faults.len(), 4);
        assert!(matches!(&s.faults[0].fault, Fault::Partition(g) if g.len() == 2));
        assert_eq!(s.faults[1].fault, Fault::Bounce("payments".into()));
        assert_eq!(s.invariants, vec![Invariant::NoDoubleCharge, Invariant::Liveness]);
        let again = Scenario::parse(&s.to_yaml(), "round.yaml").unwrap();
        assert_eq!(again, s);
    }

    #[test]
    fn type_errors_name_file_line_and_field() {
        let bad = GOOD.replace("clients: 2", "clients: two");
        let e = Scenario::parse(&bad, "bad.yaml").unwrap_err();
        assert_eq!(e.file, "bad.yaml");
        assert_eq!(e.line, 7, "{e}");
        assert!(e.field.contains("clients"), "{e}");
    }

    #[test]
    fn semantic_errors_name_file_line_and_field() {
        let bad = GOOD.replace("bounce: payments", "bounce: teapot");
        let e = Scenario::parse(&bad, "bad.yaml").unwrap_err();
        assert_eq!(e.field, "faults[1].bounce");
        assert_eq!(e.line, 20, "{e}");
        assert!(e.message.contains("unknown host"));
        let bad = GOOD.replace("acquirer_lost_replies: 0.5", "acquirer_lost_replies: 1.5");
        let e = Scenario::parse(&bad, "bad.yaml").unwrap_err();
        assert_eq!(
            (e.field.as_str(), e.line),
            ("faults[2].acquirer_lost_replies", 23),
            "{e}"
        );
        let bad = GOOD.replace("\"4000000000000002\"", "\"4000000000000001\"");
        let e = Scenario::parse(&bad, "bad.yaml").unwrap_err();
        assert!(e.field.starts_with("workload.cards"), "{e}");
        assert_eq!(e.line, 14);
        let bad = GOOD.replace("at: 31s", "at: 61s");
        assert_eq!(Scenario::parse(&bad, "bad.yaml").unwrap_err().field, "faults[3].at");
        let bad = GOOD.replace("clients: 2", "clients: 2\n  bogus: 1");
        assert!(Scenario::parse(&bad, "bad.yaml").unwrap_err().message.contains("bogus"));
    }

    #[test]
    fn durations() {
        assert_eq!(parse_duration("500ms").unwrap(), Duration::from_millis(500));
        assert_eq!(parse_duration("2m").unwrap(), Duration::from_secs(120));
        assert_eq!(parse_duration("1.5s").unwrap(), Duration::from_millis(1500));
        assert!(parse_duration("5 parsecs").is_err());
        assert_eq!(Dur(Duration::from_secs(90)).to_string(), "90s");
        assert_eq!(Dur(Duration::from_secs(120)).to_string(), "2m");
    }
}
