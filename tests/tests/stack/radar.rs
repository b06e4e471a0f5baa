//! Fraud detection through the whole stack: Radar rules and value lists managed through the
//! public API decide payments; Stripe's always-blocked test card is declined as fraudulent
//! without reaching the card network; an elevated-risk card opens a review.

use integration::stack_on_postgres;
use paymentd::wiring::Tuning;

/// Confirms a payment, with `metadata[order]` when given.
async fn pay(c: &integration::ApiClient, pm: &str, amount: &str, order: Option<&str>) -> integration::Answer {
    let mut form = vec![
        ("amount", amount),
        ("currency", "usd"),
        ("payment_method", pm),
        ("confirm", "true"),
    ];
    if let Some(o) = order {
        form.push(("metadata[order]", o));
    }
    c.post("/v1/payment_intents", &form, None).await
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn rules_from_the_api_decide_payments_and_test_cards_force_levels() {
    let stack = stack_on_postgres(Tuning::default()).await;
    let c = &stack.client;

    // An ordinary payment is allowed and scored.
    let pm = c.card("4242424242424242").await;
    let ok = pay(c, &pm, "2000", None).await;
    assert_eq!(ok.str("/status"), Some("succeeded"), "{}", ok.json);
    let charge = c
        .get(&format!("/v1/charges/{}", ok.str("/latest_charge").unwrap()))
        .await;
    assert_eq!(charge.str("/outcome/risk_level"), Some("normal"), "{}", charge.json);
    assert!(
        charge.json["outcome"]["risk_score"].as_u64().is_some(),
        "{}",
        charge.json
    );

    // A bad rule is a 400 that says where the problem is.
    let bad = c
        .post(
            "/v1/radar/rules",
            &[(
                "predicate",
                "Block if :amount_in_usd: > 500 and :risk_levle: = 'highest'",
            )],
            None,
        )
        .await;
    assert_eq!(bad.status, 400, "{}", bad.json);
    let msg = bad.str("/error/message").unwrap();
    assert!(msg.contains("line 1, column 36"), "{msg}");
    assert!(msg.contains("did you mean :risk_level:?"), "{msg}");
    assert_eq!(bad.str("/error/param"), Some("predicate"));
    let unknown_list = c
        .post(
            "/v1/radar/rules",
            &[("predicate", "Block if :email: in @nowhere")],
            None,
        )
        .await;
    assert_eq!(unknown_list.status, 400, "{}", unknown_list.json);

    // A rule created through the API blocks the next matching payment.
    let rule = c
        .post(
            "/v1/radar/rules",
            &[(
                "predicate",
                "block if ::order:: = 'gift_card' and :amount_in_usd: >= 50",
            )],
            None,
        )
        .await;
    assert_eq!(rule.status, 200, "{}", rule.json);
    assert_eq!(rule.str("/object"), Some("radar.rule"));
    assert_eq!(
        rule.str("/predicate"),
        Some("Block if ::order:: = 'gift_card' and :amount_in_usd: >= 50")
    );
    let rule_id = rule.str("/id").unwrap().to_owned();
    let blocked = pay(c, &pm, "5000", Some("gift_card")).await;
    assert_eq!(blocked.status, 402, "{}", blocked.json);
    assert_eq!(
        (blocked.code(), blocked.str("/error/decline_code")),
        (Some("card_declined"), Some("fraudulent"))
    );
    let small = pay(c, &pm, "4999", Some("gift_card")).await;
    assert_eq!(small.str("/status"), Some("succeeded"), "{}", small.json);
    let listed = c.get("/v1/radar/rules").await;
    assert_eq!(listed.json["data"].as_array().map(Vec::len), Some(1), "{}", listed.json);

    // Value lists: an Allow rule on a list overrides the Block rule (Allow → Block → Review).
    let list = c
        .post(
            "/v1/radar/value_lists",
            &[("alias", "vip_customers"), ("name", "VIP"), ("item_type", "string")],
            None,
        )
        .await;
    assert_eq!(list.status, 200, "{}", list.json);
    let list_id = list.str("/id").unwrap().to_owned();
    let item = c
        .post(
            "/v1/radar/value_list_items",
            &[("value_list", &list_id), ("value", "Alice")],
            None,
        )
        .await;
    assert_eq!(item.status, 200, "{}", item.json);
    let allow = c
        .post(
            "/v1/radar/rules",
            &[("predicate", "Allow if ::buyer:: in @vip_customers")],
            None,
        )
        .await;
    assert_eq!(allow.status, 200, "{}", allow.json);
    let mut form = vec![
        ("amount", "5000"),
        ("currency", "usd"),
        ("payment_method", pm.as_str()),
        ("confirm", "true"),
        ("metadata[order]", "gift_card"),
        ("metadata[buyer]", "alice"),
    ];
    let vip = c.post("/v1/payment_intents", &form, None).await;
    assert_eq!(vip.str("/status"), Some("succeeded"), "{}", vip.json);
    form[5] = ("metadata[buyer]", "mallory");
    let not_vip = c.post("/v1/payment_intents", &form, None).await;
    assert_eq!(
        not_vip.str("/error/decline_code"),
        Some("fraudulent"),
        "{}",
        not_vip.json
    );
    // A list in use cannot be deleted; after deleting the rule it can.
    let refused = c
        .raw(
            http::Method::DELETE,
            &format!("/v1/radar/value_lists/{list_id}"),
            bytes::Bytes::new(),
            &[],
        )
        .await;
    assert_eq!(refused.status, 400, "{}", refused.json);
    let del = c
        .raw(
            http::Method::DELETE,
            &format!("/v1/radar/rules/{}", allow.str("/id").unwrap()),
            bytes::Bytes::new(),
            &[],
        )
        .await;
    assert_eq!(del.json["deleted"], true, "{}", del.json);
    let del = c
        .raw(
            http::Method::DELETE,
            &format!("/v1/radar/value_lists/{list_id}"),
            bytes::Bytes::new(),
            &[],
        )
        .await;
    assert_eq!(del.json["deleted"], true, "{}", del.json);
    let del = c
        .raw(
            http::Method::DELETE,
            &format!("/v1/radar/rules/{rule_id}"),
            bytes::Bytes::new(),
            &[],
        )
        .await;
    assert_eq!(del.json["deleted"], true, "{}", del.json);
    let again = pay(c, &pm, "5000", Some("gift_card")).await;
    assert_eq!(again.str("/status"), Some("succeeded"), "{}", again.json);

    // Stripe's test cards: 4100000000000019 is always blocked as fraudulent, 4000000000009235
    // is elevated risk and opens a review.
    let pm = c.card("4100000000000019").await;
    let fraud = pay(c, &pm, "1000", None).await;
    assert_eq!(fraud.status, 402, "{}", fraud.json);
    assert_eq!(
        (fraud.code(), fraud.str("/error/decline_code")),
        (Some("card_declined"), Some("fraudulent"))
    );
    let pm = c.card("4000000000009235").await;
    let review = pay(c, &pm, "1000", None).await;
    assert_eq!(review.str("/status"), Some("succeeded"), "{}", review.json);
    assert!(review.str("/review").is_some(), "{}", review.json);
    let charge = c
        .get(&format!("/v1/charges/{}", review.str("/latest_charge").unwrap()))
        .await;
    assert_eq!(charge.str("/outcome/risk_level"), Some("elevated"), "{}", charge.json);
}

/// The card network's declines reach fraud detection before the confirm answers: a rule on
/// the card's decline velocity blocks the card's next attempt, and another card is untouched.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn network_declines_count_toward_the_cards_next_score() {
    let stack = stack_on_postgres(Tuning::default()).await;
    let c = &stack.client;
    let rule = c
        .post(
            "/v1/radar/rules",
            &[("predicate", "Block if :card_declines_1h: >= 2")],
            None,
        )
        .await;
    assert_eq!(rule.status, 200, "{}", rule.json);

    // Two declines by the network (a new PaymentMethod each time: velocity follows the card).
    for _ in 0..2 {
        let pm = c.card("4000000000000002").await;
        let declined = pay(c, &pm, "1500", None).await;
        assert_eq!(declined.status, 402, "{}", declined.json);
        assert_eq!(
            declined.str("/error/decline_code"),
            Some("generic_decline"),
            "{}",
            declined.json
        );
    }
    // The third attempt on the card never reaches the network: the rule blocks it.
    let pm = c.card("4000000000000002").await;
    let blocked = pay(c, &pm, "1500", None).await;
    assert_eq!(blocked.status, 402, "{}", blocked.json);
    assert_eq!(
        blocked.str("/error/decline_code"),
        Some("fraudulent"),
        "{}",
        blocked.json
    );
    // Another card has no declines and pays.
    let pm = c.card("4242424242424242").await;
    let ok = pay(c, &pm, "1500", None).await;
    assert_eq!(ok.str("/status"), Some("succeeded"), "{}", ok.json);
}
