//! Webhooks survive a crash, on PostgreSQL: `paymentd serve` is killed (SIGKILL) while
//! deliveries are in flight and restarted. Every committed event reaches each endpoint at least
//! once, an event whose transaction rolled back is never delivered, and a receiver that dedupes
//! by event id applies each event exactly once.

use crate::common::{post, Served, TlsTransport};
use axum::body::Bytes;
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::routing::post as axum_post;
use axum::Router;
use pay_net::{HttpClient, Transport};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// Per endpoint path: every delivery seen (event ids, in arrival order).
type Seen = Arc<Mutex<BTreeMap<String, Vec<String>>>>;

async fn receive(
    State(seen): State<Seen>,
    axum::extract::Path(ep): axum::extract::Path<String>,
    _h: HeaderMap,
    body: Bytes,
) -> StatusCode {
    // Recorded on arrival (a merchant may have acted on it), answered after a pause: a kill
    // in that window leaves a delivery the merchant saw but the worker never acknowledged.
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = v["id"].as_str().unwrap_or("").to_owned();
    seen.lock().unwrap().entry(ep).or_default().push(id);
    tokio::time::sleep(Duration::from_millis(40)).await;
    StatusCode::OK
}

async fn pay(http: &HttpClient, s: &Served, n: usize) {
    for i in 0..n {
        let (st, pm) = post(
            http,
            &s.base,
            &s.secret,
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2034"),
            ],
            None,
        )
        .await
        .unwrap();
        assert_eq!(st, 200, "{pm}");
        let (st, pi) = post(
            http,
            &s.base,
            &s.secret,
            "/v1/payment_intents",
            &[
                ("amount", &format!("{}", 1000 + i)),
                ("currency", "usd"),
                ("payment_method", pm["id"].as_str().unwrap()),
                ("confirm", "true"),
            ],
            None,
        )
        .await
        .unwrap();
        assert_eq!(st, 200, "{pi}");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn killed_mid_batch_every_committed_event_arrives_and_no_rolled_back_one() {
    let mut s =
        Served::prepare("webhooks:\n  allow_cidrs: [\"127.0.0.0/8\"]\n  attempt_timeout_secs: 1\n  concurrency: 8\n")
            .await;
    let ca = std::fs::read(s.ca_file()).unwrap();
    let http = HttpClient::new(Arc::new(TlsTransport(tokio_rustls::TlsConnector::from(
        pay_net::tls::client_config_with_roots(&ca).unwrap(),
    ))));

    let seen: Seen = Arc::default();
    let listener = pay_net::TcpTransport.bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let app = Router::new()
        .route("/hooks/{ep}", axum_post(receive))
        .with_state(seen.clone());
    tokio::spawn(pay_net::serve(
        listener,
        app,
        pay_net::ServeOptions::default(),
        std::future::pending(),
    ));

    s.start("");
    for (name, fifo) in [("standard", "false"), ("fifo", "true")] {
        let url = format!("http://{addr}/hooks/{name}");
        let (st, we) = post(
            &http,
            &s.base,
            &s.secret,
            "/v1/webhook_endpoints",
            &[("url", &url), ("enabled_events[]", "*"), ("fifo", fifo)],
            None,
        )
        .await
        .unwrap();
        assert_eq!(st, 200, "{we}");
    }
    pay(&http, &s, 12).await;

    // Kill while deliveries are in flight.
    let start = Instant::now();
    while seen.lock().unwrap().values().map(Vec::len).sum::<usize>() < 8 {
        assert!(start.elapsed() < Duration::from_secs(30), "no deliveries started");
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    let mut child = s.child.take().unwrap();
    child.kill().unwrap();
    child.wait().unwrap();
    let before_restart: usize = seen.lock().unwrap().values().map(Vec::len).sum();

    // While it is down: a change that rolls back, with its event, never commits.
    let backend = s.db.backend().await.unwrap();
    let mut conn = backend.pool().acquire().await.unwrap();
    let mut tx = sqlx::Connection::begin(&mut *conn).await.unwrap();
    let account: String = sqlx::query_scalar("SELECT account FROM events LIMIT 1")
        .fetch_one(&mut *tx)
        .await
        .unwrap();
    let ghost = "evt_GhostRolledBack0000000001";
    let ghost_body = serde_json::json!({
        "id": ghost, "object": "event", "account": account, "api_version": "2024-06-20",
        "created": 1, "data": {"object": {"id": "cus_ghost", "object": "customer"}},
        "livemode": false, "pending_webhooks": 0, "request": {"id": null, "idempotency_key": null},
        "type": "customer.created"
    });
    sqlx::query("INSERT INTO events (id, account, type, created, body) VALUES ($1, $2, 'customer.created', 1, $3)")
        .bind(ghost)
        .bind(&account)
        .bind(&ghost_body)
        .execute(&mut *tx)
        .await
        .unwrap();
    tx.rollback().await.unwrap();
    let pool = backend.pool();

    s.start("");
    pay(&http, &s, 4).await;

    // Every committed event of the account, to both endpoints.
    let committed: BTreeSet<String> = sqlx::query_scalar::<_, String>("SELECT id FROM events")
        .fetch_all(pool)
        .await
        .unwrap()
        .into_iter()
        .collect();
    assert!(
        committed.len() >= 16 * 3,
        "payments produce events: {}",
        committed.len()
    );
    let start = Instant::now();
    loop {
        let done = {
            let seen = seen.lock().unwrap();
            ["standard", "fifo"].iter().all(|ep| {
                let got: BTreeSet<String> = seen.get(*ep).cloned().unwrap_or_default().into_iter().collect();
                committed.is_subset(&got)
            })
        };
        if done {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "not every committed event arrived after the restart"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    // Let every message finish (deliveries in flight at the kill come back after their
    // visibility timeout and are delivered again).
    let start = Instant::now();
    loop {
        let live: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_messages WHERE state = 'live'")
            .fetch_one(pool)
            .await
            .unwrap();
        if live == 0 {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(60),
            "{live} messages never finished"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    let dead: i64 = sqlx::query_scalar("SELECT count(*) FROM queue_messages WHERE state = 'dead'")
        .fetch_one(pool)
        .await
        .unwrap();
    assert_eq!(dead, 0, "nothing should be dead-lettered");
    let seen = seen.lock().unwrap().clone();
    let mut redelivered = 0;
    for ep in ["standard", "fifo"] {
        let got = &seen[ep];
        assert!(
            !got.iter().any(|e| e == ghost),
            "a rolled-back event was delivered to {ep}"
        );
        let unique: BTreeSet<&String> = got.iter().collect();
        // Deduping by id, the receiver applies exactly the committed events, each once.
        assert_eq!(
            unique.len(),
            committed.len(),
            "{ep}: applied set differs from the committed set"
        );
        redelivered += got.len() - unique.len();
    }
    eprintln!(
        "{} committed events; {} deliveries before the kill; {} redelivered after the restart",
        committed.len(),
        before_restart,
        redelivered
    );
    s.stop();
}
