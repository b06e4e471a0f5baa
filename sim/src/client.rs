//! Workload clients: they drive the public API exactly as the Stripe SDK would — form-encoded
//! bodies, an Idempotency-Key on every POST, retries with backoff on network errors, 409, 429
//! and 5xx — and record every request in the history.

use crate::history::{History, OpKind, Outcome};
use crate::scenario::{Flow, Scenario};
use crate::world::{lock, sim_ms, Shared, TappedTransport};
use bytes::Bytes;
use http::Method;
use pay_core::{Entropy, SeededEntropy};
use pay_net::HttpClient;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The platform's public address: the WAF, in front of the API, as in production.
const PUBLIC_BASE: &str = "http://waf:80";

/// Per-request timeout of the client.
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(5);
/// Attempts per request before the flow moves on (the request is resolved later).
pub const ATTEMPTS: u32 = 4;

/// A request that can be sent again with the same key.
#[derive(Debug, Clone)]
pub struct Call {
    /// What it is.
    pub kind: OpKind,
    /// Method.
    pub method: Method,
    /// Path.
    pub path: String,
    /// Form fields.
    pub form: Vec<(String, String)>,
    /// Idempotency key.
    pub key: Option<String>,
    /// Target object.
    pub target: Option<String>,
}

/// One workload client.
pub struct Client {
    /// Host name (`client-1`).
    pub name: String,
    http: HttpClient,
    secret: String,
    rng: SeededEntropy,
    history: Arc<Mutex<History>>,
    shared: Arc<Shared>,
    scenario: Arc<Scenario>,
    /// Requests whose last attempt ended without a definite answer, by key.
    unresolved: BTreeMap<String, (u64, Call)>,
    flow_counter: u64,
}

fn weighted<'a, T>(rng: &SeededEntropy, items: &'a BTreeMap<T, u32>) -> Option<&'a T> {
    let total: u64 = items.values().map(|w| u64::from(*w)).sum();
    if total == 0 {
        return None;
    }
    let mut pick = rng.below(total);
    for (k, w) in items {
        if pick < u64::from(*w) {
            return Some(k);
        }
        pick -= u64::from(*w);
    }
    None
}

impl Client {
    /// A client named `name` using `secret` against the `api` host.
    pub fn new(
        name: &str,
        secret: &str,
        shared: Arc<Shared>,
        history: Arc<Mutex<History>>,
        scenario: Arc<Scenario>,
    ) -> Client {
        let transport = Arc::new(TappedTransport {
            host: name.to_owned(),
            shared: shared.clone(),
        });
        Client {
            name: name.to_owned(),
            http: HttpClient::new(transport),
            secret: secret.to_owned(),
            rng: SeededEntropy::new(shared.seed, name),
            history,
            shared,
            scenario,
            unresolved: BTreeMap::new(),
            flow_counter: 0,
        }
    }

    /// Runs flows until the workload phase ends, then resolves every request that never got a
    /// definite answer (retrying with its key, as a merchant's system would) until `deadline_ms`.
    pub async fn run(mut self, end_ms: u64, deadline_ms: u64) {
        let rate = self.scenario.workload.rate.max(0.001);
        loop {
            // Exponential inter-arrival times.
            let u = self.rng.unit_f64().max(1e-9);
            let wait = Duration::from_secs_f64((-u.ln() / rate).min(60.0));
            // The next flow would start after the workload phase: stop at its end instead, so
            // the resolution phase gets the whole settle time.
            let now = sim_ms();
            if now + wait.as_millis() as u64 >= end_ms {
                tokio::time::sleep(Duration::from_millis(end_ms.saturating_sub(now))).await;
                break;
            }
            tokio::time::sleep(wait).await;
            let flow = weighted(&self.rng, &self.scenario.workload.flows)
                .copied()
                .unwrap_or(Flow::Purchase);
            self.flow_counter += 1;
            self.run_flow(flow, self.flow_counter).await;
        }
        // Resolution phase: after the faults heal, every unknown outcome is settled.
        while !self.unresolved.is_empty() && sim_ms() < deadline_ms {
            let pending: Vec<(String, (u64, Call))> = std::mem::take(&mut self.unresolved).into_iter().collect();
            for (_, (flow, call)) in pending {
                self.send(flow, call).await;
            }
            if !self.unresolved.is_empty() {
                tokio::time::sleep(Duration::from_secs(2)).await;
            }
        }
    }

    fn card(&self) -> String {
        weighted(&self.rng, &self.scenario.workload.cards)
            .cloned()
            .unwrap_or_else(|| "4242424242424242".into())
    }

    fn amount(&self) -> i64 {
        let w = &self.scenario.workload;
        let span = (w.max_amount - w.min_amount).max(0) as u64;
        w.min_amount + self.rng.below(span + 1) as i64
    }

    fn key(&self, flow: u64, step: &str) -> String {
        format!("{}-f{flow}-{step}", self.name)
    }

    /// Sends a call with SDK-style retries; returns the final outcome.
    pub async fn send(&mut self, flow: u64, call: Call) -> Outcome {
        let mut backoff = Duration::from_millis(500);
        let mut last = Outcome::Unknown {
            reason: "not sent".into(),
        };
        for attempt in 0..ATTEMPTS {
            if attempt > 0 {
                let jitter = Duration::from_millis(self.rng.below(250));
                tokio::time::sleep(backoff + jitter).await;
                backoff = backoff.saturating_mul(2);
            }
            last = self.attempt(flow, &call).await;
            let retry = match &last {
                Outcome::Unknown { .. } => true,
                Outcome::Fail { status, .. } => *status == 409 || *status == 429 || *status >= 500,
                _ => false,
            };
            if !retry {
                break;
            }
        }
        if let Some(k) = &call.key {
            if last.is_definite() {
                self.unresolved.remove(k);
            } else {
                self.unresolved.insert(k.clone(), (flow, call));
            }
        }
        last
    }

    async fn attempt(&self, flow: u64, call: &Call) -> Outcome {
        let index = lock(&self.history).invoke(
            &self.name,
            flow,
            call.kind.clone(),
            call.key.clone(),
            call.target.clone(),
            sim_ms(),
        );
        self.shared.trace(
            &self.name,
            "op",
            format!(
                "#{index} {} {} key={}",
                call.method,
                call.path,
                call.key.as_deref().unwrap_or("-")
            ),
        );
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(call.form.iter())
            .finish();
        let auth = format!("Bearer {}", self.secret);
        let mut headers: Vec<(&str, &str)> = vec![
            ("authorization", auth.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
            ("stripe-version", pay_core::event::API_VERSION),
        ];
        if let Some(k) = &call.key {
            headers.push(("idempotency-key", k.as_str()));
        }
        let url = format!("{PUBLIC_BASE}{}", call.path);
        let abandon =
            self.scenario.workload.abandon_rate > 0.0 && self.rng.unit_f64() < self.scenario.workload.abandon_rate;
        let timeout = if abandon {
            Duration::from_millis(1 + self.rng.below(300))
        } else {
            REQUEST_TIMEOUT
        };
        let outcome = match self
            .http
            .request(call.method.clone(), &url, &headers, Bytes::from(body), timeout)
            .await
        {
            Ok(resp) => {
                let status = resp.status.as_u16();
                let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
                if resp.status.is_success() {
                    Outcome::Ok { status, body }
                } else {
                    let code = body.pointer("/error/code").and_then(|c| c.as_str()).map(str::to_owned);
                    Outcome::Fail { status, code, body }
                }
            }
            Err(e) if abandon && e.is_ambiguous() => Outcome::Unknown {
                reason: "abandoned".into(),
            },
            Err(e) => Outcome::Unknown { reason: e.to_string() },
        };
        let summary = match &outcome {
            Outcome::Ok { status, body } => format!(
                "{status} {} {}",
                body.get("id").and_then(|v| v.as_str()).unwrap_or(""),
                body.get("status").and_then(|v| v.as_str()).unwrap_or("")
            ),
            Outcome::Fail { status, code, .. } => format!("{status} {}", code.as_deref().unwrap_or("")),
            Outcome::Unknown { reason } => format!("unknown: {}", reason.chars().take(60).collect::<String>()),
            Outcome::Pending => "pending".into(),
        };
        self.shared.trace(&self.name, "op", format!("#{index} -> {summary}"));
        lock(&self.history).complete(index, outcome.clone(), sim_ms());
        outcome
    }

    fn post(&self, kind: OpKind, path: String, form: Vec<(&str, String)>, key: String, target: Option<String>) -> Call {
        Call {
            kind,
            method: Method::POST,
            path,
            form: form.into_iter().map(|(k, v)| (k.to_owned(), v)).collect(),
            key: Some(key),
            target,
        }
    }

    async fn create_pm(&mut self, flow: u64) -> Option<String> {
        let card = self.card();
        let call = self.post(
            OpKind::CreatePaymentMethod,
            "/v1/payment_methods".into(),
            vec![
                ("type", "card".into()),
                ("card[number]", card),
                ("card[exp_month]", "12".into()),
                ("card[exp_year]", "2034".into()),
                ("card[cvc]", "123".into()),
            ],
            self.key(flow, "pm"),
            None,
        );
        match self.send(flow, call).await {
            Outcome::Ok { body, .. } => body.get("id").and_then(|v| v.as_str()).map(str::to_owned),
            _ => None,
        }
    }

    fn create_pi(&self, flow: u64, pm: &str, amount: i64, manual: bool, confirm: bool, step: &str) -> Call {
        let mut form = vec![
            ("amount", amount.to_string()),
            ("currency", "usd".to_owned()),
            ("payment_method", pm.to_owned()),
            ("metadata[flow]", format!("{}-{flow}", self.name)),
        ];
        if confirm {
            form.push(("confirm", "true".into()));
        }
        if manual {
            form.push(("capture_method", "manual".into()));
        }
        self.post(
            OpKind::CreateIntent { confirm, manual },
            "/v1/payment_intents".into(),
            form,
            self.key(flow, step),
            None,
        )
    }

    fn intent_of(o: &Outcome) -> Option<(String, String)> {
        let body = o.body()?;
        let pi = if body.get("object").and_then(|v| v.as_str()) == Some("payment_intent") {
            Some(body)
        } else {
            body.pointer("/error/payment_intent")
        }?;
        Some((
            pi.get("id")?.as_str()?.to_owned(),
            pi.get("status")?.as_str()?.to_owned(),
        ))
    }

    async fn run_flow(&mut self, flow: Flow, n: u64) {
        self.shared.trace(&self.name, "flow", format!("f{n} {flow:?}"));
        let Some(pm) = self.create_pm(n).await else { return };
        let amount = self.amount();
        match flow {
            Flow::Purchase => {
                let c = self.create_pi(n, &pm, amount, false, true, "pi");
                self.send(n, c).await;
            }
            Flow::ManualCapture => {
                let c = self.create_pi(n, &pm, amount, true, true, "pi");
                let o = self.send(n, c).await;
                if let Some((pi, status)) = Client::intent_of(&o) {
                    if status == "requires_capture" {
                        let partial = self.rng.below(3) == 0;
                        let capture_amount = if partial { Some(amount / 2 + 1) } else { None };
                        let mut form = vec![];
                        if let Some(a) = capture_amount {
                            form.push(("amount_to_capture", a.to_string()));
                        }
                        let call = self.post(
                            OpKind::Capture { amount: capture_amount },
                            format!("/v1/payment_intents/{pi}/capture"),
                            form,
                            self.key(n, "capture"),
                            Some(pi.clone()),
                        );
                        self.send(n, call).await;
                    }
                }
            }
            Flow::Refund => {
                let c = self.create_pi(n, &pm, amount, false, true, "pi");
                let o = self.send(n, c).await;
                if let Some((pi, status)) = Client::intent_of(&o) {
                    if status == "succeeded" {
                        let first = if self.rng.below(2) == 0 {
                            Some(amount / 3 + 1)
                        } else {
                            None
                        };
                        let mut form = vec![("payment_intent", pi.clone())];
                        if let Some(a) = first {
                            form.push(("amount", a.to_string()));
                        }
                        let call = self.post(
                            OpKind::Refund { amount: first },
                            "/v1/refunds".into(),
                            form,
                            self.key(n, "refund1"),
                            Some(pi.clone()),
                        );
                        self.send(n, call).await;
                        if first.is_some() {
                            let call = self.post(
                                OpKind::Refund { amount: None },
                                "/v1/refunds".into(),
                                vec![("payment_intent", pi.clone())],
                                self.key(n, "refund2"),
                                Some(pi),
                            );
                            self.send(n, call).await;
                        }
                    }
                }
            }
            Flow::Cancel => {
                let authorize_first = self.rng.below(2) == 0;
                let c = self.create_pi(n, &pm, amount, true, authorize_first, "pi");
                let o = self.send(n, c).await;
                if let Some((pi, status)) = Client::intent_of(&o) {
                    if status == "requires_capture" || status == "requires_confirmation" {
                        let call = self.post(
                            OpKind::Cancel,
                            format!("/v1/payment_intents/{pi}/cancel"),
                            vec![("cancellation_reason", "requested_by_customer".into())],
                            self.key(n, "cancel"),
                            Some(pi),
                        );
                        self.send(n, call).await;
                    }
                }
            }
            Flow::DuplicateRetry => {
                // The same request, several times at once, with one key.
                let call = self.create_pi(n, &pm, amount, false, true, "pi");
                let copies = self.scenario.workload.duplicates;
                let mut tasks = vec![];
                for _ in 0..copies {
                    let index =
                        lock(&self.history).invoke(&self.name, n, call.kind.clone(), call.key.clone(), None, sim_ms());
                    let http = self.http.clone();
                    let secret = self.secret.clone();
                    let form = call.form.clone();
                    let key = call.key.clone().unwrap_or_default();
                    tasks.push((
                        index,
                        tokio::spawn(async move { one_shot(http, &secret, &key, form).await }),
                    ));
                }
                for (index, t) in tasks {
                    let outcome = t.await.unwrap_or(Outcome::Unknown {
                        reason: "task failed".into(),
                    });
                    self.shared
                        .trace(&self.name, "op", format!("#{index} dup -> {}", outcome_short(&outcome)));
                    lock(&self.history).complete(index, outcome, sim_ms());
                }
                // If none of the copies got a definite answer, resolve later like any request.
                let definite = {
                    let h = lock(&self.history);
                    h.ops.iter().any(|o| o.key == call.key && o.outcome.is_definite())
                };
                if !definite {
                    if let Some(k) = call.key.clone() {
                        self.unresolved.insert(k, (n, call));
                    }
                }
            }
        }
    }
}

fn outcome_short(o: &Outcome) -> String {
    match o {
        Outcome::Ok { status, body } => format!("{status} {}", body.get("id").and_then(|v| v.as_str()).unwrap_or("")),
        Outcome::Fail { status, code, .. } => format!("{status} {}", code.as_deref().unwrap_or("")),
        Outcome::Unknown { reason } => format!("unknown: {reason}"),
        Outcome::Pending => "pending".into(),
    }
}

async fn one_shot(http: HttpClient, secret: &str, key: &str, form: Vec<(String, String)>) -> Outcome {
    let body = form_urlencoded::Serializer::new(String::new())
        .extend_pairs(form.iter())
        .finish();
    let auth = format!("Bearer {secret}");
    let headers = [
        ("authorization", auth.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
        ("idempotency-key", key),
    ];
    match http
        .request(
            Method::POST,
            &format!("{PUBLIC_BASE}/v1/payment_intents"),
            &headers,
            Bytes::from(body),
            REQUEST_TIMEOUT,
        )
        .await
    {
        Ok(resp) => {
            let status = resp.status.as_u16();
            let body: serde_json::Value = serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null);
            if resp.status.is_success() {
                Outcome::Ok { status, body }
            } else {
                Outcome::Fail {
                    status,
                    code: body.pointer("/error/code").and_then(|c| c.as_str()).map(str::to_owned),
                    body,
                }
            }
        }
        Err(e) => Outcome::Unknown { reason: e.to_string() },
    }
}
