//! The public API's Idempotency-Key semantics under concurrency, on PostgreSQL.

use integration::{pg, stack_on_postgres};
use paymentd::wiring::Tuning;
use sqlx::Row;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn fifty_concurrent_requests_with_one_key_make_one_intent_and_one_authorization() {
    let stack = stack_on_postgres(Tuning::default()).await;
    let pm = stack.client.card("4242424242424242").await;
    let mut tasks = vec![];
    for _ in 0..50 {
        let c = stack.client.clone();
        let pm = pm.clone();
        tasks.push(tokio::spawn(async move {
            c.post(
                "/v1/payment_intents",
                &[
                    ("amount", "2500"),
                    ("currency", "usd"),
                    ("payment_method", &pm),
                    ("confirm", "true"),
                ],
                Some("storm-key"),
            )
            .await
        }));
    }
    let mut ids = std::collections::BTreeSet::new();
    let (mut ok, mut in_use) = (0, 0);
    for t in tasks {
        let a = t.await.unwrap();
        match a.status {
            200 => {
                ok += 1;
                ids.insert(a.str("/id").unwrap().to_owned());
                assert_eq!(a.str("/status"), Some("succeeded"));
            }
            409 => {
                in_use += 1;
                assert_eq!(a.code(), Some("idempotency_key_in_use"));
            }
            other => panic!("unexpected status {other}: {}", a.json),
        }
    }
    assert!(ok >= 1 && ok + in_use == 50, "ok {ok}, 409 {in_use}");
    assert_eq!(ids.len(), 1, "every success names the same PaymentIntent");
    let backend = pg(stack.db.as_ref().unwrap()).await;
    let intents: i64 = sqlx::query("SELECT count(*) FROM payment_intents")
        .fetch_one(backend.pool())
        .await
        .unwrap()
        .get(0);
    let auths: i64 = sqlx::query("SELECT count(*) FROM acquirer_ops WHERE k1 = 'authorization'")
        .fetch_one(backend.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!((intents, auths), (1, 1));
    // After the storm, the key replays.
    let replay = stack
        .client
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "2500"),
                ("currency", "usd"),
                ("payment_method", &pm),
                ("confirm", "true"),
            ],
            Some("storm-key"),
        )
        .await;
    assert_eq!(replay.str("/id"), ids.iter().next().map(String::as_str));
    assert_eq!(
        replay.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()),
        Some("true")
    );
    stack.node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn validation_failures_are_not_saved_and_other_parameters_are_refused() {
    let stack = stack_on_postgres(Tuning::default()).await;
    let c = &stack.client;
    let bad = c
        .post(
            "/v1/payment_intents",
            &[("amount", "-5"), ("currency", "usd")],
            Some("k-val"),
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.json);
    assert_eq!(bad.code(), Some("amount_too_small"));
    // The key was not consumed by the invalid request.
    let good = c
        .post(
            "/v1/payment_intents",
            &[("amount", "500"), ("currency", "usd")],
            Some("k-val"),
        )
        .await;
    assert_eq!(good.status, 200, "{}", good.json);
    let other = c
        .post(
            "/v1/payment_intents",
            &[("amount", "501"), ("currency", "usd")],
            Some("k-val"),
        )
        .await;
    assert_eq!(
        (other.status, other.str("/error/type")),
        (400, Some("idempotency_error"))
    );
    let long = "k".repeat(256);
    assert_eq!(
        c.post(
            "/v1/payment_intents",
            &[("amount", "500"), ("currency", "usd")],
            Some(&long)
        )
        .await
        .status,
        400
    );
    stack.node.node.shutdown().await;
}
