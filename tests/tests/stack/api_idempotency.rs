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

/// Creates a card PaymentMethod with an Idempotency-Key; returns (status, id, last4).
async fn pm_with_key(client: &integration::ApiClient, number: &str, key: &str) -> (u16, String, String) {
    let a = client.create_card(number, Some(key)).await;
    (
        a.status,
        a.str("/id").unwrap_or_default().to_owned(),
        a.str("/card/last4").unwrap_or_default().to_owned(),
    )
}

/// Stripe: "a new request is generated if a key is reused after the original has been pruned".
/// A key used again after its time to live creates new objects from the new parameters; it
/// does not answer with what the expired use of the key created.
async fn expired_key_is_a_new_request(stack: integration::Stack) {
    let c = &stack.client;
    let (s1, pm1, last4_1) = pm_with_key(c, "4242424242424242", "reused-key").await;
    assert_eq!((s1, last4_1.as_str()), (200, "4242"));
    let (s1b, pm1b, _) = pm_with_key(c, "4242424242424242", "reused-key").await;
    assert_eq!(
        (s1b, pm1b.as_str()),
        (200, pm1.as_str()),
        "within its time to live the key replays"
    );
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let (s2, pm2, last4_2) = pm_with_key(c, "5555555555554444", "reused-key").await;
    assert_eq!(s2, 200);
    assert_ne!(pm2, pm1, "a new PaymentMethod after the key expired");
    assert_eq!(last4_2, "4444", "the new request's card, not the expired request's");
    let intent = |amount: &'static str, pm: String| {
        let c = c.clone();
        async move {
            c.post(
                "/v1/payment_intents",
                &[
                    ("amount", amount),
                    ("currency", "usd"),
                    ("payment_method", &pm),
                    ("confirm", "true"),
                ],
                Some("reused-intent-key"),
            )
            .await
        }
    };
    let first = intent("1000", pm1.clone()).await;
    assert_eq!(first.status, 200, "{}", first.json);
    tokio::time::sleep(std::time::Duration::from_millis(1_500)).await;
    let second = intent("2000", pm2.clone()).await;
    assert_eq!(second.status, 200, "{}", second.json);
    assert_ne!(second.str("/id"), first.str("/id"), "a new PaymentIntent");
    assert_eq!(second.json["amount"], 2000);
    assert_eq!(second.str("/status"), Some("succeeded"));
    stack.node.node.shutdown().await;
}

fn one_second_keys() -> Tuning {
    let mut t = Tuning::default();
    t.api.idempotency_ttl = std::time::Duration::from_secs(1);
    t
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_a_new_request_on_postgres() {
    expired_key_is_a_new_request(stack_on_postgres(one_second_keys()).await).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn an_expired_key_is_a_new_request_in_memory() {
    expired_key_is_a_new_request(integration::stack_in_memory(one_second_keys()).await).await;
}
