//! Invariant checkers, run on the record of a finished simulation: the client history, the
//! payment platform's storage (records and outbox events), the card network's ledger, what
//! crossed the network, and the raw log output.

use crate::history::{History, Op, OpKind, Outcome};
use crate::scenario::Invariant;
use pay_acquirer::{Authorization, LedgerEntry};
use pay_payments::machine::legal_transition;
use pay_payments::records::{ChargeRecord, IntentRecord, RefundRecord};
use pay_proto::acquirer::OpKind as NetOp;
use pay_proto::objects::{IntentStatus, RefundStatus};
use pay_store::{Record, StoredEvent, Table};
use serde::Serialize;
use std::collections::{BTreeMap, BTreeSet};

/// Bytes seen on one direction of one connection.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Tap {
    /// Sending host.
    pub from: String,
    /// Receiving host.
    pub to: String,
    /// Test card numbers found in the bytes (masked to BIN and last four).
    pub pans: Vec<String>,
}

/// Links on which a card number may travel: into the WAF from a client, from the WAF into the
/// API, from the API into the tokenizer, from the tokenizer out to the card network.
pub fn pan_allowed(from: &str, to: &str) -> bool {
    (from.starts_with("client-") && to == "waf")
        || (from == "waf" && to == "api")
        || (from == "api" && to == "tokenizer")
        || (from == "tokenizer" && to == "acquirer")
}

/// Everything the checkers look at.
pub struct Evidence<'a> {
    /// Client requests.
    pub history: &'a History,
    /// The platform's records.
    pub db: &'a [(Table, Record)],
    /// The outbox, in sequence order.
    pub events: &'a [StoredEvent],
    /// The card network's ledger records.
    pub ledger: &'a [(Table, Record)],
    /// Card numbers seen on the network.
    pub taps: &'a [Tap],
    /// Unredacted log output of every host.
    pub raw_logs: &'a str,
    /// The card numbers the workload used.
    pub test_pans: &'a [String],
    /// Webhook requests the merchant received: (endpoint path, event id, status answered).
    pub webhooks: &'a [(String, String, u16)],
    /// The queues at the end of the run.
    pub queues: &'a pay_store::memory::QueueSnapshot,
}

/// A broken invariant.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, serde::Deserialize)]
pub struct Violation {
    /// Which invariant.
    pub invariant: Invariant,
    /// Objects involved (ids, keys).
    pub objects: Vec<String>,
    /// What is wrong.
    pub message: String,
}

fn v(invariant: Invariant, objects: Vec<String>, message: String) -> Violation {
    Violation {
        invariant,
        objects,
        message,
    }
}

struct Model {
    intents: BTreeMap<String, IntentRecord>,
    charges: BTreeMap<String, ChargeRecord>,
    refunds: BTreeMap<String, RefundRecord>,
    ops: Vec<LedgerEntry>,
    auths: BTreeMap<String, Authorization>,
}

fn decode<T: serde::de::DeserializeOwned>(r: &Record) -> Option<T> {
    r.body.decode().ok()
}

fn model(ev: &Evidence) -> Model {
    let mut m = Model {
        intents: BTreeMap::new(),
        charges: BTreeMap::new(),
        refunds: BTreeMap::new(),
        ops: vec![],
        auths: BTreeMap::new(),
    };
    for (t, r) in ev.db {
        match t {
            Table::PaymentIntents => {
                if let Some(x) = decode::<IntentRecord>(r) {
                    m.intents.insert(r.id.clone(), x);
                }
            }
            Table::Charges => {
                if let Some(x) = decode::<ChargeRecord>(r) {
                    m.charges.insert(r.id.clone(), x);
                }
            }
            Table::Refunds => {
                if let Some(x) = decode::<RefundRecord>(r) {
                    m.refunds.insert(r.id.clone(), x);
                }
            }
            _ => {}
        }
    }
    for (t, r) in ev.ledger {
        if *t != Table::AcquirerOps {
            continue;
        }
        if r.id.starts_with("key:") {
            if let Some(x) = decode::<LedgerEntry>(r) {
                m.ops.push(x);
            }
        } else if let Some(x) = decode::<Authorization>(r) {
            m.auths.insert(r.id.clone(), x);
        }
    }
    m.ops
        .sort_by(|a, b| a.result.created.cmp(&b.result.created).then(a.id.cmp(&b.id)));
    m
}

/// Runs the chosen invariants.
pub fn check(invariants: &[Invariant], ev: &Evidence) -> Vec<Violation> {
    let m = model(ev);
    let mut out = vec![];
    for inv in invariants {
        match inv {
            Invariant::NoDoubleCharge => no_double_charge(ev, &m, &mut out),
            Invariant::IdempotentReplay => idempotent_replay(ev, &mut out),
            Invariant::LedgerReconciliation => ledger_reconciliation(&m, &mut out),
            Invariant::LegalTransitions => legal_transitions(ev, &m, &mut out),
            Invariant::NoLostAcknowledgedWrite => no_lost_ack(ev, &m, &mut out),
            Invariant::Liveness => liveness(ev, &m, &mut out),
            Invariant::PanConfined => pan_confined(ev, &mut out),
            Invariant::NoCvcAtRest => no_cvc_at_rest(ev, &mut out),
            Invariant::WebhookDelivery => webhook_delivery(ev, &mut out),
            Invariant::NoPhantomWebhook => no_phantom_webhook(ev, &mut out),
        }
    }
    out
}

fn approved_auth_ops(m: &Model) -> impl Iterator<Item = &LedgerEntry> {
    m.ops
        .iter()
        .filter(|o| o.result.approved && matches!(o.result.kind, NetOp::Authorize | NetOp::Sale))
}

fn no_double_charge(ev: &Evidence, m: &Model, out: &mut Vec<Violation>) {
    // Every approved authorization must be the one recorded by a charge; an authorization no
    // charge refers to is money taken (or held) twice or without a record.
    let charged_auths: BTreeMap<&str, &ChargeRecord> = m
        .charges
        .values()
        .filter_map(|c| c.authorization_id.as_deref().map(|a| (a, c)))
        .collect();
    for op in approved_auth_ops(m) {
        let auth = op.result.authorization_id.as_deref().unwrap_or("");
        let voided = m.auths.get(auth).is_some_and(|a| a.voided);
        if !charged_auths.contains_key(auth) && !voided {
            out.push(v(
                Invariant::NoDoubleCharge,
                vec![auth.to_owned(), op.result.idempotency_key.clone()],
                format!(
                    "the network approved authorization {auth} (key {}) for {} but no charge records it",
                    op.result.idempotency_key, op.result.amount
                ),
            ));
        }
    }
    // At most one approved charge per PaymentIntent.
    let mut per_intent: BTreeMap<String, Vec<&str>> = BTreeMap::new();
    for c in m.charges.values().filter(|c| c.charge.paid) {
        if let Some(pi) = &c.charge.payment_intent {
            per_intent.entry(pi.to_string()).or_default().push(c.charge.id.as_str());
        }
    }
    for (pi, chs) in per_intent {
        if chs.len() > 1 {
            out.push(v(
                Invariant::NoDoubleCharge,
                std::iter::once(pi.clone())
                    .chain(chs.iter().map(|s| s.to_string()))
                    .collect(),
                format!("PaymentIntent {pi} has {} approved charges", chs.len()),
            ));
        }
    }
    // At most one PaymentIntent per client idempotency key.
    let mut per_key: BTreeMap<(String, String), BTreeSet<String>> = BTreeMap::new();
    for e in ev.events.iter().filter(|e| e.event.kind == "payment_intent.created") {
        if let (Some(k), Some(id), Some(acct)) =
            (&e.event.request.idempotency_key, e.event.object_id(), &e.event.account)
        {
            per_key
                .entry((acct.to_string(), k.clone()))
                .or_default()
                .insert(id.to_owned());
        }
    }
    for ((_, key), ids) in per_key {
        if ids.len() > 1 {
            out.push(v(
                Invariant::NoDoubleCharge,
                std::iter::once(key.clone()).chain(ids.iter().cloned()).collect(),
                format!("Idempotency-Key {key} created {} PaymentIntents", ids.len()),
            ));
        }
    }
}

fn idempotent_replay(ev: &Evidence, out: &mut Vec<Violation>) {
    let mut first: BTreeMap<&str, &Op> = BTreeMap::new();
    for op in &ev.history.ops {
        let Some(key) = op.key.as_deref() else { continue };
        if !op.outcome.is_definite() {
            continue;
        }
        match first.get(key) {
            None => {
                first.insert(key, op);
            }
            Some(f) => {
                if f.outcome != op.outcome {
                    out.push(v(
                        Invariant::IdempotentReplay,
                        vec![key.to_owned(), format!("op#{}", f.index), format!("op#{}", op.index)],
                        format!("Idempotency-Key {key}: request #{} got a different answer ({}) from the first one (#{}: {})", op.index, summary(&op.outcome), f.index, summary(&f.outcome)),
                    ));
                }
            }
        }
    }
}

fn summary(o: &Outcome) -> String {
    match o {
        Outcome::Ok { status, body } => format!("{status} {}", body.get("id").and_then(|v| v.as_str()).unwrap_or("")),
        Outcome::Fail { status, code, .. } => format!("{status} {}", code.as_deref().unwrap_or("")),
        Outcome::Unknown { reason } => format!("unknown ({reason})"),
        Outcome::Pending => "pending".into(),
    }
}

fn ledger_reconciliation(m: &Model, out: &mut Vec<Violation>) {
    let inv = Invariant::LedgerReconciliation;
    let by_auth: BTreeMap<&str, &ChargeRecord> = m
        .charges
        .values()
        .filter_map(|c| c.authorization_id.as_deref().map(|a| (a, c)))
        .collect();
    for op in m.ops.iter().filter(|o| o.result.approved) {
        let r = &op.result;
        let auth = r.authorization_id.as_deref().unwrap_or("");
        let key = r.idempotency_key.clone();
        match r.kind {
            NetOp::Authorize | NetOp::Sale => {
                if let Some(c) = by_auth.get(auth) {
                    if c.charge.amount != r.amount {
                        out.push(v(
                            inv,
                            vec![auth.to_owned(), c.charge.id.to_string()],
                            format!(
                                "authorization {auth} is for {} but charge {} says {}",
                                r.amount, c.charge.id, c.charge.amount
                            ),
                        ));
                    }
                }
            }
            NetOp::Capture => match by_auth.get(auth) {
                Some(c) if c.charge.captured && c.charge.amount_captured == r.amount => {}
                Some(c) => out.push(v(
                    inv,
                    vec![auth.to_owned(), c.charge.id.to_string(), key],
                    format!(
                        "the network captured {} on {auth} but charge {} shows captured={} amount_captured={}",
                        r.amount, c.charge.id, c.charge.captured, c.charge.amount_captured
                    ),
                )),
                None => out.push(v(
                    inv,
                    vec![auth.to_owned(), key],
                    format!("the network captured {} on {auth}, which no charge records", r.amount),
                )),
            },
            NetOp::Refund => {
                let matching: Vec<&RefundRecord> = m
                    .refunds
                    .values()
                    .filter(|x| x.network_key == r.idempotency_key)
                    .collect();
                match matching.as_slice() {
                    [one] if one.refund.status == RefundStatus::Succeeded && one.refund.amount == r.amount => {}
                    [one] => out.push(v(
                        inv,
                        vec![one.refund.id.to_string(), key],
                        format!(
                            "the network refunded {} but refund {} is {:?} for {}",
                            r.amount, one.refund.id, one.refund.status, one.refund.amount
                        ),
                    )),
                    [] => out.push(v(
                        inv,
                        vec![auth.to_owned(), key.clone()],
                        format!("the network refunded {} (key {key}) with no refund record", r.amount),
                    )),
                    many => out.push(v(
                        inv,
                        many.iter().map(|x| x.refund.id.to_string()).collect(),
                        format!("{} refund records share network key {key}", many.len()),
                    )),
                }
            }
            NetOp::Void => {
                if let Some(c) = by_auth.get(auth) {
                    let canceled = c
                        .charge
                        .payment_intent
                        .as_ref()
                        .and_then(|p| m.intents.get(p.as_str()))
                        .is_some_and(|i| i.intent.status == IntentStatus::Canceled);
                    if !canceled {
                        out.push(v(
                            inv,
                            vec![auth.to_owned(), key],
                            format!("the network released {auth} but its PaymentIntent is not canceled"),
                        ));
                    }
                }
            }
        }
    }
    // Totals per authorization agree with the charge; refunds never exceed captures.
    for (id, a) in &m.auths {
        if a.refunded > a.captured {
            out.push(v(
                inv,
                vec![id.clone()],
                format!(
                    "authorization {id}: refunded {} exceeds captured {}",
                    a.refunded, a.captured
                ),
            ));
        }
        if let Some(c) = by_auth.get(id.as_str()) {
            if c.charge.amount_captured != a.captured || c.charge.amount_refunded != a.refunded && !a.voided {
                out.push(v(
                    inv,
                    vec![id.clone(), c.charge.id.to_string()],
                    format!(
                        "authorization {id} captured {} refunded {} but charge {} shows captured {} refunded {}",
                        a.captured, a.refunded, c.charge.id, c.charge.amount_captured, c.charge.amount_refunded
                    ),
                ));
            }
        }
    }
    for c in m.charges.values() {
        if c.charge.amount_refunded > c.charge.amount_captured && c.charge.captured {
            out.push(v(
                inv,
                vec![c.charge.id.to_string()],
                format!(
                    "charge {} refunded {} of {} captured",
                    c.charge.id, c.charge.amount_refunded, c.charge.amount_captured
                ),
            ));
        }
    }
    for r in m
        .refunds
        .values()
        .filter(|r| r.refund.status == RefundStatus::Succeeded)
    {
        if !m
            .ops
            .iter()
            .any(|o| o.result.approved && o.result.kind == NetOp::Refund && o.result.idempotency_key == r.network_key)
        {
            out.push(v(
                inv,
                vec![r.refund.id.to_string()],
                format!("refund {} is succeeded but the network never refunded it", r.refund.id),
            ));
        }
    }
    for i in m
        .intents
        .values()
        .filter(|i| i.intent.status == IntentStatus::Succeeded)
    {
        let captured = i
            .intent
            .latest_charge
            .as_ref()
            .and_then(|c| m.charges.get(c.as_str()))
            .map(|c| c.charge.amount_captured);
        if captured != Some(i.intent.amount_received) {
            out.push(v(
                inv,
                vec![i.intent.id.to_string()],
                format!(
                    "PaymentIntent {} received {} but its charge captured {:?}",
                    i.intent.id, i.intent.amount_received, captured
                ),
            ));
        }
    }
}

fn status_of(e: &StoredEvent) -> Option<IntentStatus> {
    if !e.event.kind.starts_with("payment_intent.") {
        return None;
    }
    #[derive(serde::Deserialize)]
    struct Stated {
        status: Option<String>,
    }
    let object: Stated = e.event.data.object.decode().ok()?;
    object.status.as_deref().and_then(IntentStatus::parse)
}

fn legal_transitions(ev: &Evidence, m: &Model, out: &mut Vec<Violation>) {
    let inv = Invariant::LegalTransitions;
    let mut paths: BTreeMap<String, Vec<(IntentStatus, i64, String)>> = BTreeMap::new();
    for e in ev.events {
        if let (Some(s), Some(id)) = (status_of(e), e.event.object_id()) {
            paths
                .entry(id.to_owned())
                .or_default()
                .push((s, e.seq, e.event.kind.clone()));
        }
    }
    for (id, path) in &paths {
        let mut prev: Option<IntentStatus> = None;
        for (s, seq, kind) in path {
            // Processing has no event of its own; allow passing through it.
            let ok = legal_transition(prev, *s)
                || prev.is_some_and(|p| {
                    legal_transition(Some(p), IntentStatus::Processing)
                        && legal_transition(Some(IntentStatus::Processing), *s)
                });
            if !ok {
                out.push(v(
                    inv,
                    vec![id.clone(), format!("event#{seq}")],
                    format!(
                        "PaymentIntent {id} went {} -> {} ({kind})",
                        prev.map(|p| p.as_str()).unwrap_or("(new)"),
                        s.as_str()
                    ),
                ));
            }
            prev = Some(*s);
        }
        // The stored state must be where the events left it: an event for a change that never
        // committed (or a change that committed without its event) breaks this.
        if let (Some(last), Some(rec)) = (prev, m.intents.get(id)) {
            let now = rec.intent.status;
            let explained = now == last
                || (now == IntentStatus::Processing && legal_transition(Some(last), IntentStatus::Processing))
                || (last == IntentStatus::RequiresPaymentMethod && now == IntentStatus::RequiresConfirmation);
            if !explained {
                out.push(v(
                    inv,
                    vec![id.clone()],
                    format!(
                        "PaymentIntent {id} is {} but its last event says {}",
                        now.as_str(),
                        last.as_str()
                    ),
                ));
            }
        }
        if path
            .iter()
            .filter(|(s, _, k)| *s == IntentStatus::Succeeded && k == "payment_intent.succeeded")
            .count()
            > 1
        {
            out.push(v(
                inv,
                vec![id.clone()],
                format!("PaymentIntent {id} announced payment_intent.succeeded more than once"),
            ));
        }
    }
    // Every event about a charge or refund names one that exists.
    for e in ev.events {
        let kind = &e.event.kind;
        if kind.starts_with("charge.") || kind.starts_with("refund.") {
            if let Some(id) = e.event.object_id() {
                let exists = if kind.starts_with("charge.") {
                    m.charges.contains_key(&id)
                } else {
                    m.refunds.contains_key(&id)
                };
                if !exists {
                    out.push(v(
                        inv,
                        vec![id.to_owned(), e.event.id.to_string()],
                        format!("event {} ({kind}) is about {id}, which was never committed", e.event.id),
                    ));
                }
            }
        }
    }
    let mut seen: BTreeMap<(String, String), usize> = BTreeMap::new();
    for e in ev.events {
        if matches!(
            e.event.kind.as_str(),
            "charge.succeeded" | "charge.failed" | "charge.captured" | "refund.created" | "payment_intent.canceled"
        ) {
            if let Some(id) = e.event.object_id() {
                *seen.entry((id.to_owned(), e.event.kind.clone())).or_insert(0) += 1;
            }
        }
    }
    for ((id, kind), n) in seen {
        if n > 1 {
            out.push(v(
                inv,
                vec![id.clone()],
                format!("{kind} for {id} was announced {n} times"),
            ));
        }
    }
}

fn no_lost_ack(ev: &Evidence, m: &Model, out: &mut Vec<Violation>) {
    let inv = Invariant::NoLostAcknowledgedWrite;
    for op in &ev.history.ops {
        let Outcome::Ok { body, .. } = &op.outcome else {
            continue;
        };
        let object = body.get("object").and_then(|o| o.as_str()).unwrap_or("");
        let Some(id) = body.get("id").and_then(|v| v.as_str()) else {
            continue;
        };
        match object {
            "payment_intent" => {
                let acked = body
                    .get("status")
                    .and_then(|s| s.as_str())
                    .and_then(IntentStatus::parse);
                match (m.intents.get(id), acked) {
                    (None, _) => out.push(v(
                        inv,
                        vec![id.to_owned(), format!("op#{}", op.index)],
                        format!("the client was told PaymentIntent {id} exists, but it is gone"),
                    )),
                    (Some(rec), Some(IntentStatus::Succeeded)) if rec.intent.status != IntentStatus::Succeeded => out
                        .push(v(
                            inv,
                            vec![id.to_owned(), format!("op#{}", op.index)],
                            format!(
                                "the client saw PaymentIntent {id} succeed, but it is now {}",
                                rec.intent.status.as_str()
                            ),
                        )),
                    (Some(rec), Some(IntentStatus::Canceled)) if rec.intent.status != IntentStatus::Canceled => out
                        .push(v(
                            inv,
                            vec![id.to_owned(), format!("op#{}", op.index)],
                            format!(
                                "the client saw PaymentIntent {id} canceled, but it is now {}",
                                rec.intent.status.as_str()
                            ),
                        )),
                    _ => {}
                }
            }
            "refund" => {
                let acked = body.get("status").and_then(|s| s.as_str());
                match m.refunds.get(id) {
                    None => out.push(v(
                        inv,
                        vec![id.to_owned()],
                        format!("the client was told refund {id} exists, but it is gone"),
                    )),
                    Some(r) if acked == Some("succeeded") && r.refund.status != RefundStatus::Succeeded => out.push(v(
                        inv,
                        vec![id.to_owned()],
                        format!(
                            "the client saw refund {id} succeed, but it is now {:?}",
                            r.refund.status
                        ),
                    )),
                    _ => {}
                }
            }
            "payment_method" if !ev.db.iter().any(|(t, r)| *t == Table::PaymentMethods && r.id == id) => {
                out.push(v(
                    inv,
                    vec![id.to_owned()],
                    format!("the client was given PaymentMethod {id}, but it is gone"),
                ));
            }
            _ => {}
        }
    }
}

fn liveness(ev: &Evidence, m: &Model, out: &mut Vec<Violation>) {
    let inv = Invariant::Liveness;
    for i in m.intents.values() {
        if i.intent.status == IntentStatus::Processing {
            out.push(v(
                inv,
                vec![i.intent.id.to_string()],
                format!(
                    "PaymentIntent {} is still processing after the settle phase",
                    i.intent.id
                ),
            ));
        }
        if let Some(p) = &i.pending {
            out.push(v(
                inv,
                vec![i.intent.id.to_string()],
                format!("PaymentIntent {} still has a pending {:?}", i.intent.id, p.kind),
            ));
        }
    }
    for r in m.refunds.values().filter(|r| r.refund.status == RefundStatus::Pending) {
        out.push(v(
            inv,
            vec![r.refund.id.to_string()],
            format!("refund {} is still pending after the settle phase", r.refund.id),
        ));
    }
    // Every request the client made must in the end have a definite answer under its key.
    let mut last: BTreeMap<&str, &Op> = BTreeMap::new();
    for op in &ev.history.ops {
        if let Some(k) = op.key.as_deref() {
            if !matches!(op.kind, OpKind::GetIntent) {
                let definite = last.get(k).is_some_and(|o| o.outcome.is_definite());
                if !definite {
                    last.insert(k, op);
                }
            }
        }
    }
    for (k, op) in last {
        if !op.outcome.is_definite() {
            out.push(v(
                inv,
                vec![k.to_owned(), format!("op#{}", op.index)],
                format!(
                    "request with Idempotency-Key {k} never got a definite answer (last: {})",
                    summary(&op.outcome)
                ),
            ));
        }
    }
}

fn masked(pan: &str) -> String {
    pay_core::redact::redact_pans(pan).into_owned()
}

fn pan_confined(ev: &Evidence, out: &mut Vec<Violation>) {
    let inv = Invariant::PanConfined;
    for t in ev.taps {
        if !t.pans.is_empty() && !pan_allowed(&t.from, &t.to) {
            out.push(v(
                inv,
                vec![format!("{}->{}", t.from, t.to)],
                format!(
                    "card numbers {:?} crossed {} -> {}, outside the cardholder-data environment",
                    t.pans, t.from, t.to
                ),
            ));
        }
    }
    // Each stored body is rendered once, not once per card number.
    let rendered = |dump: &[(Table, Record)]| -> Vec<String> { dump.iter().map(|(_, r)| r.body.to_string()).collect() };
    let (db_text, ledger_text) = (rendered(ev.db), rendered(ev.ledger));
    let event_text: Vec<String> = ev.events.iter().map(|e| e.event.data.object.to_string()).collect();
    for pan in ev.test_pans {
        if ev.raw_logs.contains(pan.as_str()) {
            out.push(v(
                inv,
                vec![masked(pan)],
                format!("card number {} appears in the logs", masked(pan)),
            ));
        }
        for (name, dump, texts) in [
            ("platform storage", ev.db, &db_text),
            ("network ledger", ev.ledger, &ledger_text),
        ] {
            for ((t, r), text) in dump.iter().zip(texts) {
                if text.contains(pan.as_str()) || r.id.contains(pan.as_str()) {
                    out.push(v(
                        inv,
                        vec![masked(pan), format!("{t}/{}", r.id)],
                        format!(
                            "card number {} stored in clear in the {name} ({t} {})",
                            masked(pan),
                            r.id
                        ),
                    ));
                }
            }
        }
        for (e, text) in ev.events.iter().zip(&event_text) {
            if text.contains(pan.as_str()) {
                out.push(v(
                    inv,
                    vec![masked(pan), e.event.id.to_string()],
                    format!("card number {} in event {}", masked(pan), e.event.id),
                ));
            }
        }
    }
}

fn has_cvc_field(v: &serde_json::Value) -> bool {
    match v {
        serde_json::Value::Object(o) => o.iter().any(|(k, x)| k == "cvc" || has_cvc_field(x)),
        serde_json::Value::Array(a) => a.iter().any(has_cvc_field),
        _ => false,
    }
}

fn no_cvc_at_rest(ev: &Evidence, out: &mut Vec<Violation>) {
    for (t, r) in ev.db.iter().chain(ev.ledger.iter()) {
        if r.body.to_value().is_ok_and(|body| has_cvc_field(&body)) {
            out.push(v(
                Invariant::NoCvcAtRest,
                vec![format!("{t}/{}", r.id)],
                format!("{t} {} stores a CVC", r.id),
            ));
        }
    }
    for e in ev.events {
        if e.event
            .data
            .object
            .to_value()
            .is_ok_and(|object| has_cvc_field(&object))
        {
            out.push(v(
                Invariant::NoCvcAtRest,
                vec![e.event.id.to_string()],
                format!("event {} carries a CVC", e.event.id),
            ));
        }
    }
}

/// Finds test card numbers in bytes (plain digits, as JSON and forms carry them): one pass
/// over the runs of digits, checking each run (and, for longer runs, each window of a card
/// number's length) against the set of test numbers.
pub fn find_pans(bytes: &[u8], test_pans: &[String]) -> Vec<String> {
    let mut found: Vec<String> = vec![];
    for run in pay_core::card::digit_runs(bytes)
        .map(|r| &bytes[r])
        .filter(|r| r.len() >= 12)
    {
        for p in test_pans {
            let pb = p.as_bytes();
            if pb.len() <= run.len() && run.windows(pb.len()).any(|w| w == pb) {
                let m = masked(p);
                if !found.contains(&m) {
                    found.push(m);
                }
            }
        }
    }
    found
}

/// The merchant's webhook endpoints: (id, URL path, FIFO).
fn webhook_endpoints(ev: &Evidence) -> Vec<(String, String, bool)> {
    ev.db
        .iter()
        .filter(|(t, _)| *t == Table::WebhookEndpoints)
        .filter_map(|(_, r)| {
            let body = r.body.to_value().ok()?;
            let url = body.pointer("/endpoint/url")?.as_str()?;
            let path = url.splitn(4, '/').nth(3).map(|p| format!("/{p}"))?;
            let fifo = body.pointer("/endpoint/fifo")?.as_bool()?;
            Some((r.id.clone(), path, fifo))
        })
        .collect()
}

fn webhook_delivery(ev: &Evidence, out: &mut Vec<Violation>) {
    let endpoints = webhook_endpoints(ev);
    // Deliveries still on their way: the event not yet fanned out, or a delivery message
    // waiting for its next attempt. (A fanned-out event's messages were sent in the same
    // transaction as its mark, so there is no state in between.)
    let mut pending: BTreeSet<(&str, &str)> = BTreeSet::new();
    for m in &ev.queues.live {
        if let (Some(e), Some(ep)) = (
            m.body.pointer("/event/id").and_then(|v| v.as_str()),
            m.body.pointer("/endpoint").and_then(|v| v.as_str()),
        ) {
            pending.insert((e, ep));
        }
    }
    for d in &ev.queues.dead {
        out.push(v(
            Invariant::WebhookDelivery,
            vec![d.message.id.clone()],
            format!("a webhook message was given up ({}): {}", d.reason, d.message.body),
        ));
    }
    let ok: BTreeSet<(&str, &str)> = ev
        .webhooks
        .iter()
        .filter(|(_, _, s)| (200..300).contains(s))
        .map(|(p, e, _)| (p.as_str(), e.as_str()))
        .collect();
    for e in ev.events {
        let Some(account) = &e.event.account else { continue };
        let id = e.event.id.as_str();
        if e.seq > ev.queues.fanned_out_through {
            continue;
        }
        for (ep_id, path, _) in &endpoints {
            let owner = ev
                .db
                .iter()
                .any(|(t, r)| *t == Table::WebhookEndpoints && r.id == *ep_id && r.account == account.as_str());
            if !owner || ok.contains(&(path.as_str(), id)) || pending.contains(&(id, ep_id.as_str())) {
                continue;
            }
            out.push(v(
                Invariant::WebhookDelivery,
                vec![id.to_owned(), ep_id.clone()],
                format!(
                    "committed event {id} ({}) never reached endpoint {ep_id} and is not queued",
                    e.event.kind
                ),
            ));
        }
    }
    // FIFO endpoints: events first delivered in commit order.
    let seq: BTreeMap<&str, i64> = ev.events.iter().map(|e| (e.event.id.as_str(), e.seq)).collect();
    for (ep_id, path, fifo) in &endpoints {
        if !fifo {
            continue;
        }
        let mut done: BTreeSet<&str> = BTreeSet::new();
        let mut last = i64::MIN;
        for (p, e, s) in ev.webhooks {
            if p != path || !(200..300).contains(s) || !done.insert(e.as_str()) {
                continue;
            }
            let Some(&n) = seq.get(e.as_str()) else { continue };
            if n < last {
                out.push(v(
                    Invariant::WebhookDelivery,
                    vec![e.clone(), ep_id.clone()],
                    format!("FIFO endpoint {ep_id} got event {e} after a later-committed one"),
                ));
            }
            last = last.max(n);
        }
    }
}

fn no_phantom_webhook(ev: &Evidence, out: &mut Vec<Violation>) {
    let committed: BTreeSet<&str> = ev.events.iter().map(|e| e.event.id.as_str()).collect();
    let mut reported = BTreeSet::new();
    for (path, e, _) in ev.webhooks {
        if !committed.contains(e.as_str()) && reported.insert(e.clone()) {
            out.push(v(
                Invariant::NoPhantomWebhook,
                vec![e.clone()],
                format!("webhook {path} received event {e}, which was never committed"),
            ));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn finds_card_numbers_in_forms_and_json() {
        let pans = vec!["4242424242424242".to_owned(), "4000000000000002".to_owned()];
        assert_eq!(
            find_pans(b"card%5Bnumber%5D=4242424242424242&x=1", &pans),
            vec!["424242******4242".to_owned()]
        );
        assert_eq!(find_pans(b"{\"n\":\"4000000000000002\"}", &pans).len(), 1);
        assert!(find_pans(b"amount=4242&id=424242424242424", &pans).is_empty());
        assert_eq!(
            find_pans(b"99424242424242424242", &pans).len(),
            1,
            "inside a longer digit run"
        );
        assert!(
            pan_allowed("client-1", "waf")
                && pan_allowed("waf", "api")
                && pan_allowed("api", "tokenizer")
                && pan_allowed("tokenizer", "acquirer")
        );
        assert!(
            !pan_allowed("client-1", "api")
                && !pan_allowed("waf", "tokenizer")
                && !pan_allowed("api", "payments")
                && !pan_allowed("tokenizer", "db")
                && !pan_allowed("acquirer", "tokenizer")
        );
    }
}
