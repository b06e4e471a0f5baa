//! Hostile and malformed input to the public API: always a 4xx naming the parameter, never a
//! 500, never a panic.

use bytes::Bytes;
use http::Method;
use integration::stack_in_memory;
use paymentd::wiring::Tuning;
use proptest::prelude::*;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn bad_parameters_name_the_field() {
    let stack = stack_in_memory(Tuning::default()).await;
    // The API's own parser (the WAF in front refuses unparseable bodies before they get here).
    let c = &stack.api_direct();
    type Case<'a> = (Vec<(&'a str, &'a str)>, &'a str, &'a str);
    let cases: Vec<Case> = vec![
        (vec![("currency", "usd")], "amount", "parameter_missing"),
        (
            vec![("amount", "12x"), ("currency", "usd")],
            "amount",
            "parameter_invalid_integer",
        ),
        (
            vec![("amount", "99999999999999999999999"), ("currency", "usd")],
            "amount",
            "parameter_invalid_integer",
        ),
        (
            vec![("amount", "-100"), ("currency", "usd")],
            "amount",
            "amount_too_small",
        ),
        (
            vec![("amount", "100000000"), ("currency", "usd")],
            "amount",
            "amount_too_large",
        ),
        (
            vec![("amount", "1000"), ("currency", "xyz")],
            "currency",
            "parameter_invalid",
        ),
        (vec![("amount", "1000")], "currency", "parameter_missing"),
        (
            vec![("amount", "1000"), ("currency", "usd"), ("bogus", "1")],
            "bogus",
            "parameter_unknown",
        ),
        (
            vec![("amount", "1000"), ("currency", "usd"), ("confirm", "maybe")],
            "confirm",
            "parameter_invalid_boolean",
        ),
        (
            vec![("amount", "1000"), ("currency", "usd"), ("capture_method", "later")],
            "capture_method",
            "parameter_invalid",
        ),
        (
            vec![("amount", "1000"), ("currency", "usd"), ("metadata[a][b]", "1")],
            "metadata[a]",
            "parameter_invalid",
        ),
        (
            vec![("amount", "1000"), ("currency", "usd"), ("customer", "cus_nope")],
            "customer",
            "resource_missing",
        ),
        (
            vec![("amount", "1000"), ("currency", "jpy"), ("payment_method", "pm_nope")],
            "payment_method",
            "resource_missing",
        ),
    ];
    for (form, param, code) in cases {
        let a = c.post("/v1/payment_intents", &form, None).await;
        assert!(a.status == 400 || a.status == 404, "{form:?}: {} {}", a.status, a.json);
        assert_eq!(
            (a.str("/error/param"), a.code()),
            (Some(param), Some(code)),
            "{form:?}: {}",
            a.json
        );
    }
    let card_cases = [
        (
            vec![
                ("type", "card"),
                ("card[number]", "4242424242424241"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2034"),
            ],
            "card[number]",
            "incorrect_number",
        ),
        (
            vec![
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "13"),
                ("card[exp_year]", "2034"),
            ],
            "card[exp_month]",
            "invalid_expiry_month",
        ),
        (
            vec![
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2001"),
            ],
            "card[exp_year]",
            "invalid_expiry_year",
        ),
        (
            vec![
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2034"),
                ("card[cvc]", "1"),
            ],
            "card[cvc]",
            "invalid_cvc",
        ),
        (
            vec![
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
            ],
            "card[exp_year]",
            "parameter_missing",
        ),
        (
            vec![("type", "sepa"), ("card[number]", "4242424242424242")],
            "type",
            "parameter_invalid",
        ),
    ];
    for (form, param, code) in card_cases {
        let a = c.post("/v1/payment_methods", &form, None).await;
        assert!((400..500).contains(&a.status), "{param}: {}", a.json);
        assert_eq!(
            (a.str("/error/param"), a.code()),
            (Some(param), Some(code)),
            "{}",
            a.json
        );
        assert!(
            !a.raw
                .windows(16)
                .any(|w| w == b"4242424242424241" || w == b"4242424242424242"),
            "the card number is never echoed"
        );
    }
    // Malformed bodies and content types.
    let garbage = c
        .raw(
            Method::POST,
            "/v1/payment_intents",
            Bytes::from_static(b"amount=1&&&=&a[=1"),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(garbage.status, 400);
    let json = c
        .raw(
            Method::POST,
            "/v1/payment_intents",
            Bytes::from_static(b"{\"amount\": "),
            &[("content-type", "application/json")],
        )
        .await;
    assert_eq!(json.status, 400);
    let xml = c
        .raw(
            Method::POST,
            "/v1/payment_intents",
            Bytes::from_static(b"<a/>"),
            &[("content-type", "text/xml")],
        )
        .await;
    assert_eq!(xml.status, 400);
    let huge = c
        .raw(
            Method::POST,
            "/v1/payment_intents",
            Bytes::from(vec![b'a'; 2 * 1024 * 1024]),
            &[("content-type", "application/x-www-form-urlencoded")],
        )
        .await;
    assert_eq!(huge.status, 413);
    // Every answer has a Request-Id.
    assert!(huge.headers.get("request-id").is_some());
    // Authentication.
    let anon = c
        .with_key("sk_test_wrong_wrong_wrong_wrong")
        .get("/v1/payment_intents")
        .await;
    assert_eq!(anon.status, 401);
    assert!(!anon.json.to_string().contains("wrong_wrong_wrong"));
    let pk = c.with_key(stack.node.publishable_key.as_deref().unwrap());
    assert_eq!(
        pk.post("/v1/payment_intents", &[("amount", "1000"), ("currency", "usd")], None)
            .await
            .status,
        403
    );
    assert_eq!(
        pk.post(
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", "4242424242424242"),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2034")
            ],
            None
        )
        .await
        .status,
        200
    );
    stack.node.node.shutdown().await;
}

fn arbitrary_form() -> impl Strategy<Value = Vec<(String, String)>> {
    let names = prop_oneof![
        Just("amount".to_owned()),
        Just("currency".to_owned()),
        Just("confirm".to_owned()),
        Just("metadata[x]".to_owned()),
        Just("payment_method".to_owned()),
        Just("capture_method".to_owned()),
        Just("expand[]".to_owned()),
        "[a-z\\[\\]_0-9]{1,20}",
    ];
    proptest::collection::vec((names, ".{0,30}"), 0..8)
}

#[test]
fn arbitrary_forms_never_cause_a_server_error() {
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()
        .unwrap();
    let stack = rt.block_on(stack_in_memory(Tuning::default()));
    let api = stack.api_direct();
    let mut runner = proptest::test_runner::TestRunner::new(ProptestConfig::with_cases(200));
    runner
        .run(&arbitrary_form(), |form| {
            let pairs: Vec<(&str, &str)> = form.iter().map(|(a, b)| (a.as_str(), b.as_str())).collect();
            let a = rt.block_on(api.post("/v1/payment_intents", &pairs, None));
            prop_assert!(a.status < 500, "{:?} -> {} {}", form, a.status, a.json);
            Ok(())
        })
        .unwrap();
}
