//! Operational behaviour of the API: rate limits, health and metrics endpoints, and the CVC
//! being used once and then forgotten.

use integration::stack_in_memory;
use pay_net::ratelimit::RateLimit;
use paymentd::wiring::Tuning;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rate_limits_answer_429_with_retry_after() {
    let mut tuning = Tuning::default();
    tuning.api.key_rate = RateLimit {
        per_second: 1.0,
        burst: 3.0,
    };
    let stack = stack_in_memory(tuning).await;
    let mut statuses = vec![];
    for _ in 0..6 {
        statuses.push(stack.client.get("/v1/payment_intents").await);
    }
    assert!(statuses[..3].iter().all(|a| a.status == 200), "the burst is allowed");
    let limited = statuses
        .iter()
        .find(|a| a.status == 429)
        .expect("the key is throttled after its burst");
    assert_eq!(limited.code(), Some("rate_limit"));
    let retry: u64 = limited
        .headers
        .get("retry-after")
        .unwrap()
        .to_str()
        .unwrap()
        .parse()
        .unwrap();
    assert!(retry >= 1);
    stack.node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn repeated_authentication_failures_lock_the_client_out() {
    let mut tuning = Tuning::default();
    tuning.api.auth_failure_rate = RateLimit {
        per_second: 0.01,
        burst: 3.0,
    };
    let stack = stack_in_memory(tuning).await;
    let bad = stack.client.with_key("sk_test_not_a_real_key_000000000000");
    let mut statuses = vec![];
    for _ in 0..5 {
        statuses.push(bad.get("/v1/payment_intents").await.status);
    }
    assert_eq!(&statuses[..3], &[401, 401, 401]);
    assert_eq!(
        statuses[4], 429,
        "after repeated failures the client IP is locked out: {statuses:?}"
    );
    stack.node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn health_readiness_and_metrics() {
    let stack = stack_in_memory(Tuning::default()).await;
    let c = &stack.client;
    assert_eq!(c.get("/healthz").await.raw, "ok");
    let ready = c.get("/readyz").await;
    assert_eq!((ready.status, ready.str("/status")), (200, Some("ready")));
    let tok = integration::ApiClient::new(
        stack.node.topology.url(paymentd::wiring::Role::Tokenizer).unwrap(),
        String::new(),
    );
    let tr = tok.get("/readyz").await;
    assert_eq!(tr.str("/checks/hsm"), Some("ok"), "{}", tr.json);
    let pm = c.card("4242424242424242").await;
    c.post(
        "/v1/payment_intents",
        &[
            ("amount", "1000"),
            ("currency", "usd"),
            ("payment_method", &pm),
            ("confirm", "true"),
        ],
        None,
    )
    .await;
    let metrics = String::from_utf8(c.get("/metrics").await.raw.to_vec()).unwrap();
    assert!(metrics.contains("# TYPE http_requests_total counter"), "{metrics}");
    assert!(metrics.contains("payments_total{status=\"succeeded\"} 1"), "{metrics}");
    assert!(metrics.contains("http_request_duration_seconds_bucket"));
    stack.node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_cvc_is_checked_once_and_then_forgotten() {
    let stack = stack_in_memory(Tuning::default()).await;
    let c = &stack.client;
    let pm = c.card("4242424242424242").await;
    assert_eq!(
        stack.node.node.tokenizer.as_ref().unwrap().cvcs_held(),
        1,
        "held in memory after tokenizing"
    );
    let first = c
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("payment_method", &pm),
                ("confirm", "true"),
                ("expand[]", "latest_charge"),
            ],
            None,
        )
        .await;
    assert_eq!(
        first.str("/latest_charge/payment_method_details/card/checks/cvc_check"),
        Some("pass"),
        "{}",
        first.json
    );
    assert_eq!(
        stack.node.node.tokenizer.as_ref().unwrap().cvcs_held(),
        0,
        "gone after the first authorization"
    );
    let second = c
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1000"),
                ("currency", "usd"),
                ("payment_method", &pm),
                ("confirm", "true"),
                ("expand[]", "latest_charge"),
            ],
            None,
        )
        .await;
    assert_eq!(second.str("/status"), Some("succeeded"));
    assert!(
        second
            .json
            .pointer("/latest_charge/payment_method_details/card/checks/cvc_check")
            .unwrap()
            .is_null(),
        "no CVC to check the second time"
    );
    stack.node.node.shutdown().await;
}
