//! Crash between authorization and recording: the process dies after the card network
//! approved but before the payment service recorded it. After a restart, a retry with the same
//! Idempotency-Key resumes the attempt: one authorization at the network, and the intent ends
//! succeeded. Needs the `fault-injection` feature (the test command enables it for this test).

#![cfg(feature = "fault-injection")]

mod common;

use common::{post, Served, TlsTransport};
use pay_net::HttpClient;
use sqlx::Row;
use std::sync::Arc;
use std::time::{Duration, Instant};

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_crash_after_authorizing_is_resumed_not_repeated() {
    let mut s = Served::prepare("tuning:\n  idempotency_lock_timeout_secs: 2\n  reconcile_interval_secs: 3600\n").await;
    // A plain-HTTP client over TLS needs the test CA: use a TLS transport.
    let ca = std::fs::read(s.ca_file()).unwrap();
    let http = HttpClient::new(Arc::new(TlsTransport(tokio_rustls::TlsConnector::from(
        pay_net::tls::client_config_with_roots(&ca).unwrap(),
    ))));
    s.start("");
    let (st, pm) = post(
        &http,
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
    let pm = pm["id"].as_str().unwrap().to_owned();
    s.stop();

    // Restart with the crash point armed, and confirm: the process dies after the network
    // approves and before anything is recorded.
    s.start("faults:\n  crash_at: payments.after_authorize\n");
    let form = [
        ("amount", "4321"),
        ("currency", "usd"),
        ("payment_method", pm.as_str()),
        ("confirm", "true"),
    ];
    let first = post(
        &http,
        &s.base,
        &s.secret,
        "/v1/payment_intents",
        &form,
        Some("crash-key-1"),
    )
    .await;
    assert!(
        first.is_err() || first.as_ref().unwrap().0 >= 500,
        "the request died with the process: {first:?}"
    );
    let status = s.wait_for_death(Duration::from_secs(10));
    assert!(!status.success(), "paymentd died at the fault point ({status})");
    let backend = s.db.backend().await.unwrap();
    let auths: i64 = sqlx::query("SELECT count(*) FROM acquirer_ops WHERE k1 = 'authorization'")
        .fetch_one(backend.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(auths, 1, "the network approved before the crash");
    let processing: i64 = sqlx::query("SELECT count(*) FROM payment_intents WHERE k2 = 'processing'")
        .fetch_one(backend.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(processing, 1, "the intent was left processing at its recovery point");

    // Restart without the fault and retry with the same key until the abandoned lock expires.
    s.start("");
    let deadline = Instant::now() + Duration::from_secs(30);
    let (st, pi) = loop {
        match post(
            &http,
            &s.base,
            &s.secret,
            "/v1/payment_intents",
            &form,
            Some("crash-key-1"),
        )
        .await
        {
            Ok((409, _)) | Err(_) => {
                assert!(Instant::now() < deadline, "the retry never got through");
                tokio::time::sleep(Duration::from_millis(500)).await;
            }
            Ok(r) => break r,
        }
    };
    assert_eq!(st, 200, "{pi}");
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["amount_received"], 4321);
    let auths: i64 = sqlx::query("SELECT count(*) FROM acquirer_ops WHERE k1 = 'authorization'")
        .fetch_one(backend.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(
        auths, 1,
        "one authorization at the network: the attempt was resumed, not repeated"
    );
    let intents: i64 = sqlx::query("SELECT count(*) FROM payment_intents")
        .fetch_one(backend.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(intents, 1);
    // The replay of the finished request is the same answer.
    let (st2, again) = post(
        &http,
        &s.base,
        &s.secret,
        "/v1/payment_intents",
        &form,
        Some("crash-key-1"),
    )
    .await
    .unwrap();
    assert_eq!((st2, again["id"].clone()), (200, pi["id"].clone()));
    assert!(s.stop().success());
}
