//! The delivery pipeline against a real HTTP receiver on loopback, with the clock under the
//! test's control (a day of downtime passes in milliseconds): signatures, retries on the
//! schedule, the backlog after an outage, FIFO order under failures, 410, dead letters and
//! resends, the SSRF guard, secret rolls.

use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post;
use axum::Router;
use pay_core::{AccountId, Env, Event, EventId, ManualClock, SecretString, Timestamp};
use pay_net::metrics::Metrics;
use pay_net::Transport;
use pay_proto::webhooks::{CreateEndpoint, ListEndpoints, ResendEvent, RollSecret, UpdateEndpoint};
use pay_queue::Queue;
use pay_store::memory::MemoryBackend;
use pay_store::{Db, Entity, Table};
use pay_webhooks::signing::{verify_standard, verify_stripe};
use pay_webhooks::{Outbound, SsrfPolicy, Webhooks, WebhooksConfig};
use serde::{Deserialize, Serialize};
use std::sync::atomic::{AtomicU16, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// What the receiver saw.
#[derive(Default)]
struct Seen {
    /// (event id, type, status answered) for every request.
    requests: Vec<(String, String, u16)>,
    /// Secrets to verify with (set after endpoint creation).
    secrets: Vec<SecretString>,
    /// Requests whose signatures did not verify.
    bad_signatures: usize,
}

#[derive(Clone)]
struct Receiver {
    seen: Arc<Mutex<Seen>>,
    /// Status to answer (200 = up).
    status: Arc<AtomicU16>,
    /// Answer this status to the first attempt of every event, then `status`.
    fail_first: Arc<AtomicU16>,
    clock: Arc<ManualClock>,
}

async fn receive(State(r): State<Receiver>, headers: HeaderMap, body: Bytes) -> StatusCode {
    let h = |n: &str| headers.get(n).and_then(|v| v.to_str().ok()).unwrap_or("").to_owned();
    let now = Timestamp::from_millis(pay_core::Clock::now(r.clock.as_ref()).millis()).unix_secs();
    let event: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = event["id"].as_str().unwrap_or("").to_owned();
    let kind = event["type"].as_str().unwrap_or("").to_owned();
    let mut seen = r.seen.lock().unwrap();
    let ok = seen.secrets.iter().any(|s| {
        verify_stripe(&h("stripe-signature"), &body, s, now, 300).is_ok()
            && verify_standard(
                &h("webhook-id"),
                &h("webhook-timestamp"),
                &h("webhook-signature"),
                &body,
                s,
                now,
                300,
            )
            .is_ok()
    });
    if !ok || h("webhook-id") != id {
        seen.bad_signatures += 1;
    }
    let first = !seen.requests.iter().any(|(e, _, _)| e == &id);
    let ff = r.fail_first.load(Ordering::SeqCst);
    let status = if first && ff != 0 {
        ff
    } else {
        r.status.load(Ordering::SeqCst)
    };
    seen.requests.push((id, kind, status));
    StatusCode::from_u16(status).unwrap()
}

struct World {
    webhooks: Arc<Webhooks>,
    db: Db,
    clock: Arc<ManualClock>,
    receiver: Receiver,
    url: String,
    account: AccountId,
    n: u32,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct Thing {
    id: String,
    account: String,
}

impl Entity for Thing {
    const TABLE: Table = Table::Customers;
    fn id(&self) -> &str {
        &self.id
    }
    fn account(&self) -> &str {
        &self.account
    }
    fn created(&self) -> Timestamp {
        Timestamp::from_secs(1)
    }
}

async fn world(policy: SsrfPolicy) -> World {
    let (env, clock) = Env::deterministic("webhooks", 11, Timestamp::from_secs(1_700_000_000));
    let backend = Arc::new(MemoryBackend::new());
    let db = Db::new(backend, env.clone());
    let hsm = Arc::new(pay_hsm::SoftHsm::new_ephemeral(env.entropy.clone(), env.clock.clone()));
    pay_hsm::Hsm::generate_key(hsm.as_ref(), pay_hsm::KeyPurpose::Kek, "kek")
        .await
        .unwrap();
    let outbound = Outbound::new(
        Arc::new(pay_net::TcpTransport),
        Outbound::web_pki(None).unwrap(),
        policy,
    );
    let config = WebhooksConfig {
        attempt_timeout: Duration::from_secs(5),
        ..WebhooksConfig::default()
    };
    let webhooks = Arc::new(Webhooks::new(db.clone(), env, hsm, outbound, Metrics::new(), config));
    let receiver = Receiver {
        seen: Arc::default(),
        status: Arc::new(AtomicU16::new(200)),
        fail_first: Arc::new(AtomicU16::new(0)),
        clock: clock.clone(),
    };
    let listener = pay_net::TcpTransport.bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hooks", post(receive))
        .with_state(receiver.clone());
    tokio::spawn(pay_net::serve(
        listener,
        app,
        pay_net::ServeOptions::default(),
        std::future::pending(),
    ));
    World {
        webhooks,
        db,
        clock,
        receiver,
        url: format!("http://{addr}/hooks"),
        account: AccountId::parse("acct_webhooks1").unwrap(),
        n: 0,
    }
}

impl World {
    async fn endpoint(&self, events: &[&str], fifo: bool) -> String {
        let ep = self
            .webhooks
            .create_endpoint(CreateEndpoint {
                account: self.account.clone(),
                request_key: None,
                url: self.url.clone(),
                enabled_events: events.iter().map(|s| s.to_string()).collect(),
                description: None,
                metadata: Default::default(),
                fifo,
            })
            .await
            .unwrap();
        let secret = ep.secret.clone().expect("secret shown on create");
        assert!(secret.expose().starts_with("whsec_"));
        self.receiver.seen.lock().unwrap().secrets.push(secret);
        ep.id
    }

    /// Commits a change with its event, as a service does; returns the event id.
    async fn commit(&mut self, kind: &str) -> String {
        self.n += 1;
        let ev = Event::new(
            EventId::generate(self.webhooks_entropy().as_ref()),
            &self.account,
            kind,
            pay_core::JsonText::of(&serde_json::json!({"id": format!("cus_{}", self.n), "object": "customer"}))
                .unwrap(),
            Timestamp::from_secs(1_700_000_000),
        );
        let id = ev.id.to_string();
        let mut t = self.db.txn();
        t.insert(&Thing {
            id: format!("cus_{}", self.n),
            account: self.account.to_string(),
        });
        t.event(ev);
        self.db.commit(t).await.unwrap();
        id
    }

    fn webhooks_entropy(&self) -> Arc<dyn pay_core::Entropy> {
        Arc::new(pay_core::SeededEntropy::new(u64::from(self.n), "events"))
    }

    async fn tick(&self) -> pay_webhooks::TickReport {
        self.webhooks.tick().await.unwrap()
    }

    /// Ticks until a pass does nothing.
    async fn settle(&self) {
        for _ in 0..50 {
            if !self.tick().await.busy() {
                return;
            }
        }
        panic!("the pipeline did not settle");
    }

    fn advance(&self, d: Duration) {
        self.clock.advance(d);
    }

    fn delivered(&self) -> Vec<String> {
        let seen = self.receiver.seen.lock().unwrap();
        seen.requests
            .iter()
            .filter(|(_, _, s)| (200..300).contains(s))
            .map(|(e, _, _)| e.clone())
            .collect()
    }

    fn attempts(&self) -> usize {
        self.receiver.seen.lock().unwrap().requests.len()
    }

    fn bad_signatures(&self) -> usize {
        self.receiver.seen.lock().unwrap().bad_signatures
    }
}

#[tokio::test]
async fn committed_events_reach_subscribed_endpoints_signed_both_ways() {
    let mut w = world(SsrfPolicy::permissive()).await;
    let all = w.endpoint(&["*"], false).await;
    let _only_refunds = w.endpoint(&["refund.created"], false).await;
    let a = w.commit("customer.created").await;
    let b = w.commit("customer.updated").await;
    w.settle().await;
    let mut got = w.delivered();
    got.sort();
    let mut want = vec![a.clone(), b.clone()];
    want.sort();
    assert_eq!(got, want, "each event once, only to the endpoint that subscribes to it");
    assert_eq!(w.bad_signatures(), 0, "every delivery verifies under both schemes");

    // A repeated pass sends nothing more.
    w.advance(Duration::from_secs(3600));
    w.settle().await;
    assert_eq!(w.delivered().len(), 2);

    // Resend on request.
    w.webhooks
        .resend(
            &all,
            ResendEvent {
                account: w.account.clone(),
                event: a.clone(),
                request_key: Some("r1".into()),
            },
        )
        .await
        .unwrap();
    w.settle().await;
    assert_eq!(w.delivered().iter().filter(|e| **e == a).count(), 2);
}

#[tokio::test]
async fn an_endpoint_down_for_a_day_gets_its_backlog() {
    let mut w = world(SsrfPolicy::permissive()).await;
    w.endpoint(&["*"], false).await;
    w.receiver.status.store(503, Ordering::SeqCst);
    let mut events = vec![];
    for _ in 0..5 {
        events.push(w.commit("customer.created").await);
    }
    // A simulated day passes in 10-minute steps; every attempt fails.
    let step = Duration::from_secs(600);
    for _ in 0..(24 * 6) {
        w.settle().await;
        w.advance(step);
    }
    assert!(w.delivered().is_empty());
    // Seven attempts each fit in the first day (0, 5 s, 5 min, 30 min, 2 h, 5 h, 10 h apart).
    let per_event = w.attempts() / events.len();
    assert_eq!(per_event, 7, "attempts in the first day follow the schedule");
    let depth = w.webhooks.delivery_queue(false).depth().await.unwrap();
    assert_eq!(depth.dead, 0);
    assert_eq!(depth.delayed + depth.in_flight + depth.visible, 5);

    // Back up: the next scheduled attempt (14 h after the last, with jitter) delivers all.
    w.receiver.status.store(200, Ordering::SeqCst);
    for _ in 0..(12 * 6) {
        w.settle().await;
        w.advance(step);
    }
    let mut got = w.delivered();
    got.sort();
    events.sort();
    assert_eq!(got, events, "the whole backlog, each event once");
    assert_eq!(w.bad_signatures(), 0);
}

#[tokio::test]
async fn retries_end_in_the_dead_letters_and_can_be_redriven() {
    let mut w = world(SsrfPolicy::permissive()).await;
    let ep = w.endpoint(&["*"], false).await;
    w.receiver.status.store(500, Ordering::SeqCst);
    let e = w.commit("customer.created").await;
    for _ in 0..(4 * 24) {
        w.settle().await;
        w.advance(Duration::from_secs(3600));
    }
    assert_eq!(w.attempts(), 10, "ten attempts over about three days");
    let q = w.webhooks.delivery_queue(false);
    let dead = q.dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("retries exhausted"), "{}", dead[0].reason);
    assert_eq!(dead[0].message.body["event"]["id"], e.as_str());
    assert_eq!(dead[0].message.body["endpoint"], ep.as_str());

    w.receiver.status.store(200, Ordering::SeqCst);
    q.redrive(&dead[0].message.id).await.unwrap();
    w.settle().await;
    assert_eq!(w.delivered(), vec![e]);
}

#[tokio::test]
async fn gone_disables_the_endpoint() {
    let mut w = world(SsrfPolicy::permissive()).await;
    let ep = w.endpoint(&["*"], false).await;
    w.receiver.status.store(410, Ordering::SeqCst);
    w.commit("customer.created").await;
    w.settle().await;
    assert_eq!(w.attempts(), 1, "410 is not retried");
    let rec = w.webhooks.endpoint(&w.account, &ep).await.unwrap().value;
    assert_eq!(rec.endpoint.status, "disabled");
    assert!(rec.disabled_reason.unwrap().contains("410"));
    // Disabled endpoints get no new events.
    w.commit("customer.created").await;
    w.settle().await;
    assert_eq!(w.attempts(), 1);
    // Re-enabled, it gets the next ones.
    w.receiver.status.store(200, Ordering::SeqCst);
    w.webhooks
        .update_endpoint(
            &ep,
            UpdateEndpoint {
                account: w.account.clone(),
                url: None,
                enabled_events: None,
                disabled: Some(false),
                description: None,
                metadata: None,
                fifo: None,
            },
        )
        .await
        .unwrap();
    let e = w.commit("customer.created").await;
    w.settle().await;
    assert_eq!(w.delivered(), vec![e]);
}

#[tokio::test]
async fn fifo_endpoints_see_commit_order_despite_failures() {
    let mut w = world(SsrfPolicy::permissive()).await;
    w.endpoint(&["*"], true).await;
    // Every event's first attempt fails.
    w.receiver.fail_first.store(503, Ordering::SeqCst);
    let mut events = vec![];
    for i in 0..8 {
        events.push(
            w.commit(if i % 2 == 0 {
                "customer.created"
            } else {
                "customer.updated"
            })
            .await,
        );
    }
    for _ in 0..200 {
        w.settle().await;
        w.advance(Duration::from_secs(10));
        if w.delivered().len() == events.len() {
            break;
        }
    }
    assert_eq!(w.delivered(), events, "delivered in commit order");
    // And no event was even attempted before its predecessor was delivered.
    let seen = w.receiver.seen.lock().unwrap();
    let mut done = 0;
    for (e, _, status) in &seen.requests {
        assert_eq!(e, &events[done], "attempt out of order");
        if (200..300).contains(status) {
            done += 1;
        }
    }
}

#[tokio::test]
async fn strict_ssrf_policy_refuses_internal_urls() {
    let mut w = world(SsrfPolicy::strict(vec![])).await;
    w.endpoint(&["*"], false).await;
    w.commit("customer.created").await;
    w.settle().await;
    assert_eq!(w.attempts(), 0, "nothing reaches loopback");
    let dead = w.webhooks.delivery_queue(false).dead_letters(10).await.unwrap();
    assert_eq!(dead.len(), 1);
    assert!(dead[0].reason.contains("not a public address"), "{}", dead[0].reason);
}

#[tokio::test]
async fn rolled_secrets_overlap_for_a_day() {
    let mut w = world(SsrfPolicy::permissive()).await;
    let ep = w.endpoint(&["*"], false).await;
    let old = w.receiver.seen.lock().unwrap().secrets[0].clone();
    let rolled = w
        .webhooks
        .roll_secret(
            &ep,
            RollSecret {
                account: w.account.clone(),
                expires_in_secs: None,
            },
        )
        .await
        .unwrap();
    let new = rolled.secret.unwrap();
    assert_ne!(new.expose(), old.expose());
    // A receiver that only knows the old secret still verifies during the overlap.
    w.receiver.seen.lock().unwrap().secrets = vec![old.clone()];
    w.commit("customer.created").await;
    w.settle().await;
    assert_eq!(w.bad_signatures(), 0);
    // After 24 h only the new secret signs.
    w.advance(Duration::from_secs(24 * 3600 + 1));
    w.commit("customer.created").await;
    w.settle().await;
    assert_eq!(w.bad_signatures(), 1, "the old secret no longer signs");
    w.receiver.seen.lock().unwrap().secrets = vec![new];
    w.commit("customer.created").await;
    w.settle().await;
    assert_eq!(w.bad_signatures(), 1);
}

#[tokio::test]
async fn endpoint_management_validates_input_and_hides_the_secret() {
    let w = world(SsrfPolicy::permissive()).await;
    let create = |url: &str, events: Vec<&str>| CreateEndpoint {
        account: w.account.clone(),
        request_key: None,
        url: url.into(),
        enabled_events: events.into_iter().map(String::from).collect(),
        description: None,
        metadata: Default::default(),
        fifo: false,
    };
    let e = w
        .webhooks
        .create_endpoint(create("ftp://x/", vec!["*"]))
        .await
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("url"));
    let e = w
        .webhooks
        .create_endpoint(create("https://example.com/", vec!["nope.event"]))
        .await
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("enabled_events"));
    let e = w
        .webhooks
        .create_endpoint(create("https://example.com/", vec![]))
        .await
        .unwrap_err();
    assert_eq!(e.param.as_deref(), Some("enabled_events"));

    let made = w
        .webhooks
        .create_endpoint(create("https://example.com/h", vec!["*"]))
        .await
        .unwrap();
    assert!(made.secret.is_some());
    let got = w.webhooks.endpoint(&w.account, &made.id).await.unwrap().value;
    assert!(got.endpoint.secret.is_none(), "the secret is shown once");
    let stored = serde_json::to_string(&got).unwrap();
    assert!(
        !stored.contains(made.secret.as_ref().unwrap().expose()),
        "stored sealed, never in clear"
    );
    let json = serde_json::to_value(&made).unwrap();
    assert_eq!(json["object"], "webhook_endpoint");
    assert!(json["secret"].as_str().unwrap().starts_with("whsec_"));
    assert!(!format!("{made:?}").contains("whsec_"), "Debug never shows the secret");

    // Another account cannot see it.
    let other = AccountId::parse("acct_other1").unwrap();
    assert!(w.webhooks.endpoint(&other, &made.id).await.is_err());
    let page = w
        .webhooks
        .list_endpoints(ListEndpoints {
            account: w.account.clone(),
            limit: 10,
            starting_after: None,
            ending_before: None,
        })
        .await
        .unwrap();
    assert_eq!(page.data.len(), 1);
    w.webhooks.delete_endpoint(&w.account, &made.id).await.unwrap();
    assert!(w.webhooks.endpoint(&w.account, &made.id).await.is_err());
}
