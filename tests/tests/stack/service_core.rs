//! The service core on real networking: tokenizer, acquirer, payment service and API as
//! separate HTTP servers on loopback, records in PostgreSQL, keys in the software HSM.

use integration::{pg, stack_on_postgres};
use paymentd::wiring::Tuning;
use sqlx::Row;

const TEST_PANS: &[&str] = &[
    "4242424242424242",
    "4000000000000002",
    "4000000000009995",
    "4000000000009987",
    "4000000000009979",
    "4000000000000069",
    "4000000000000127",
    "4000000000000119",
    "4000000000006975",
    "4000000000000341",
];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn authorize_capture_declines_and_nothing_sensitive_at_rest() {
    let stack = stack_on_postgres(Tuning::default()).await;
    let c = &stack.client;

    // Authorize, then capture.
    let pm = c.card("4242424242424242").await;
    let pi = c
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "4200"),
                ("currency", "usd"),
                ("payment_method", &pm),
                ("capture_method", "manual"),
                ("confirm", "true"),
            ],
            None,
        )
        .await;
    assert_eq!(pi.str("/status"), Some("requires_capture"), "{}", pi.json);
    let id = pi.str("/id").unwrap().to_owned();
    let cap = c.post(&format!("/v1/payment_intents/{id}/capture"), &[], None).await;
    assert_eq!(
        (cap.str("/status"), cap.json["amount_received"].as_i64()),
        (Some("succeeded"), Some(4200)),
        "{}",
        cap.json
    );
    let charge = c
        .get(&format!("/v1/charges/{}", cap.str("/latest_charge").unwrap()))
        .await;
    assert_eq!(charge.json["captured"], true);
    assert_eq!(
        charge.str("/payment_method_details/card/checks/cvc_check"),
        Some("pass")
    );

    // Each decline card yields its decline code.
    let expected = [
        ("4000000000000002", "card_declined", "generic_decline"),
        ("4000000000009995", "card_declined", "insufficient_funds"),
        ("4000000000009987", "card_declined", "lost_card"),
        ("4000000000009979", "card_declined", "stolen_card"),
        ("4000000000000069", "expired_card", "expired_card"),
        ("4000000000000127", "incorrect_cvc", "incorrect_cvc"),
        ("4000000000000119", "processing_error", "processing_error"),
        ("4000000000006975", "card_declined", "card_velocity_exceeded"),
        ("4000000000000341", "card_declined", "generic_decline"),
    ];
    for (number, code, decline) in expected {
        let pm = c.card(number).await;
        let a = c
            .post(
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
        assert_eq!(a.status, 402, "{number}: {}", a.json);
        assert_eq!(
            (a.code(), a.str("/error/decline_code")),
            (Some(code), Some(decline)),
            "{number}"
        );
        assert_eq!(
            a.str("/error/payment_intent/status"),
            Some("requires_payment_method"),
            "{number}"
        );
    }

    // No card number and no CVC anywhere in PostgreSQL, except as ciphertext.
    let db = stack.db.as_ref().expect("postgres");
    let backend = pg(db).await;
    let cols = sqlx::query("SELECT table_name, column_name FROM information_schema.columns WHERE table_schema = 'public' AND data_type IN ('text', 'jsonb', 'json', 'character varying', 'bytea')")
        .fetch_all(backend.pool())
        .await
        .unwrap();
    assert!(
        cols.len() > 50,
        "expected every record table's text columns, got {}",
        cols.len()
    );
    let mut scanned = 0;
    for row in &cols {
        let (table, column): (String, String) = (row.get(0), row.get(1));
        for pan in TEST_PANS {
            let sql = format!("SELECT count(*) FROM \"{table}\" WHERE \"{column}\"::text LIKE $1");
            let n: i64 = sqlx::query(&sql)
                .bind(format!("%{pan}%"))
                .fetch_one(backend.pool())
                .await
                .unwrap()
                .get(0);
            assert_eq!(n, 0, "card number found in {table}.{column}");
            scanned += 1;
        }
        let sql = format!("SELECT count(*) FROM \"{table}\" WHERE \"{column}\"::text LIKE '%\"cvc\"%'");
        let n: i64 = sqlx::query(&sql).fetch_one(backend.pool()).await.unwrap().get(0);
        assert_eq!(n, 0, "a CVC field stored in {table}.{column}");
    }
    assert!(scanned > 500);
    // The vault does hold every card, as ciphertext.
    let vault: i64 = sqlx::query("SELECT count(*) FROM vault_cards WHERE body->>'ciphertext' IS NOT NULL")
        .fetch_one(backend.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(vault, 10);
    stack.node.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_retried_network_call_with_the_same_key_moves_money_once() {
    let stack = stack_on_postgres(Tuning::default()).await;
    let c = &stack.client;
    let pm = c.card("4242424242424242").await;
    // Confirm twice with the same Idempotency-Key and once more without: one authorization.
    let a = c
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1234"),
                ("currency", "usd"),
                ("payment_method", &pm),
                ("confirm", "true"),
            ],
            Some("retry-key-1"),
        )
        .await;
    let b = c
        .post(
            "/v1/payment_intents",
            &[
                ("amount", "1234"),
                ("currency", "usd"),
                ("payment_method", &pm),
                ("confirm", "true"),
            ],
            Some("retry-key-1"),
        )
        .await;
    assert_eq!(a.json, b.json);
    assert_eq!(
        b.headers.get("idempotent-replayed").map(|v| v.to_str().unwrap()),
        Some("true")
    );
    let id = a.str("/id").unwrap();
    let again = c.post(&format!("/v1/payment_intents/{id}/confirm"), &[], None).await;
    assert_eq!(again.status, 400, "a succeeded intent cannot be confirmed again");

    // Forward the same authorization key twice, as a retry after a lost answer would.
    let payments_key = stack
        .node
        .service_keys
        .get(&paymentd::wiring::Role::Payments)
        .cloned()
        .unwrap();
    let issuer = std::sync::Arc::new(pay_net::TokenIssuer::new(
        payments_key,
        pay_core::Env::real("test"),
        std::time::Duration::from_secs(60),
    ));
    let tok = pay_net::ServiceClient::new(
        pay_net::HttpClient::new(std::sync::Arc::new(pay_net::TcpTransport)),
        "tokenizer",
        stack.node.topology.url(paymentd::wiring::Role::Tokenizer).unwrap(),
        Some(issuer),
    );
    let tokenizer = pay_proto::tokenizer::TokenizerClient::new(tok);
    let pm_rec = c.get(&format!("/v1/payment_methods/{pm}")).await;
    assert_eq!(pm_rec.status, 200);
    let account = stack.node.account.clone().unwrap();
    let token = {
        let backend = pg(stack.db.as_ref().unwrap()).await;
        let row = sqlx::query("SELECT body->>'token' FROM payment_methods WHERE id = $1")
            .bind(&pm)
            .fetch_one(backend.pool())
            .await
            .unwrap();
        pay_core::VaultTokenId::parse(&row.get::<String, _>(0)).unwrap()
    };
    let fwd = pay_proto::tokenizer::ForwardAuthorize {
        account: account.clone(),
        token,
        amount: 999,
        currency: pay_core::Currency::USD,
        capture: true,
        idempotency_key: "manual-retry-key".into(),
    };
    let r1 = tokenizer.authorize(&fwd).await.unwrap();
    let r2 = tokenizer.authorize(&fwd).await.unwrap();
    assert_eq!(r1, r2);
    let backend = pg(stack.db.as_ref().unwrap()).await;
    let n: i64 = sqlx::query("SELECT count(*) FROM acquirer_ops WHERE id LIKE 'key:manual-retry-key%'")
        .fetch_one(backend.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(n, 1, "one ledger entry for one key");
    let auths: i64 =
        sqlx::query("SELECT count(*) FROM acquirer_ops WHERE k1 = 'authorization' AND body->>'amount' = '999'")
            .fetch_one(backend.pool())
            .await
            .unwrap()
            .get(0);
    assert_eq!(auths, 1, "money moved once");
    // The API's own service identity may not forward.
    let api_key = stack
        .node
        .service_keys
        .get(&paymentd::wiring::Role::Api)
        .cloned()
        .unwrap();
    let api_issuer = std::sync::Arc::new(pay_net::TokenIssuer::new(
        api_key,
        pay_core::Env::real("test"),
        std::time::Duration::from_secs(60),
    ));
    let as_api = pay_proto::tokenizer::TokenizerClient::new(pay_net::ServiceClient::new(
        pay_net::HttpClient::new(std::sync::Arc::new(pay_net::TcpTransport)),
        "tokenizer",
        stack.node.topology.url(paymentd::wiring::Role::Tokenizer).unwrap(),
        Some(api_issuer),
    ));
    match as_api.authorize(&fwd).await {
        Err(pay_net::CallError::Api(e)) => assert_eq!(e.status, 403),
        other => panic!("only the payment service may forward: {other:?}"),
    }
    stack.node.node.shutdown().await;
}
