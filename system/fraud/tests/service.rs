//! The fraud service over the in-memory store: rules validated on save, lists with their case
//! rules, lists in use protected, and blocked attempts counted as declines.

use pay_core::{AccountId, CardBrand, CardSummary, Currency, Env, Timestamp};
use pay_fraud::service::FraudService;
use pay_fraud::{FraudEngine, MemoryVelocityStore};
use pay_proto::fraud::*;
use pay_store::memory::MemoryBackend;
use pay_store::Db;
use std::sync::Arc;

fn service() -> (FraudService, AccountId) {
    let (env, _clock) = Env::deterministic("fraud", 7, Timestamp::from_secs(1_800_000_000));
    let db = Db::new(Arc::new(MemoryBackend::new()), env.clone());
    let s = FraudService::new(
        db,
        env,
        FraudEngine::builtin(),
        Arc::new(MemoryVelocityStore::default()),
    );
    (s, AccountId::parse("acct_test1").unwrap())
}

fn score_req(account: &AccountId, attempt: &str, email: &str) -> ScoreRequest {
    ScoreRequest {
        account: account.clone(),
        attempt_id: attempt.into(),
        livemode: false,
        amount: 1000,
        currency: Currency::USD,
        card: Some(CardSummary {
            brand: CardBrand::Visa,
            bin: "424242".into(),
            last4: "4242".into(),
            exp_month: 12,
            exp_year: 2034,
            fingerprint: "fp_abc".into(),
            country: Some("US".into()),
            funding: "credit".into(),
        }),
        cvc_check: Some("pass".into()),
        client_ip: Some("198.51.100.4".into()),
        customer: None,
        customer_created: None,
        email: Some(email.into()),
        metadata: Default::default(),
    }
}

#[tokio::test]
async fn rules_and_lists_decide_and_blocks_count_as_declines() {
    let (s, acct) = service();
    let bad = s
        .create_rule(CreateRule {
            account: acct.clone(),
            predicate: "Block if :email: in @blocked_emails".into(),
            request_key: None,
        })
        .await
        .unwrap_err();
    assert_eq!(bad.status, 400);
    assert!(
        bad.message.contains("line 1, column 21: unknown list @blocked_emails"),
        "{}",
        bad.message
    );

    let list = s
        .create_value_list(CreateValueList {
            account: acct.clone(),
            alias: "blocked_emails".into(),
            name: "Blocked".into(),
            item_type: Some("email".into()),
            metadata: Default::default(),
            request_key: None,
        })
        .await
        .unwrap();
    s.create_value_list_item(CreateValueListItem {
        account: acct.clone(),
        value_list: list.id.clone(),
        value: "Fraudster@Example.com".into(),
        request_key: None,
    })
    .await
    .unwrap();
    let rule = s
        .create_rule(CreateRule {
            account: acct.clone(),
            predicate: "block IF :email: IN @blocked_emails".into(),
            request_key: Some("k1".into()),
        })
        .await
        .unwrap();
    assert_eq!(rule.predicate, "Block if :email: in @blocked_emails");
    // Idempotent create.
    let again = s
        .create_rule(CreateRule {
            account: acct.clone(),
            predicate: "block IF :email: IN @blocked_emails".into(),
            request_key: Some("k1".into()),
        })
        .await
        .unwrap();
    assert_eq!(again.id, rule.id);

    let ok = s.score(score_req(&acct, "pa_1", "good@example.com")).await.unwrap();
    assert_eq!((ok.action.as_str(), ok.risk_level.as_str()), ("allow", "normal"));
    assert!(ok.velocity_known);
    // Email lists are case-insensitive.
    let blocked = s
        .score(score_req(&acct, "pa_2", "fraudster@EXAMPLE.com"))
        .await
        .unwrap();
    assert_eq!(blocked.action, "block");
    assert_eq!(blocked.rule.as_ref().unwrap().id, rule.id);

    // The blocked attempt counts as a decline on the card.
    s.create_rule(CreateRule {
        account: acct.clone(),
        predicate: "Review if :card_declines_1h: >= 1".into(),
        request_key: None,
    })
    .await
    .unwrap();
    let r = s.score(score_req(&acct, "pa_3", "good@example.com")).await.unwrap();
    assert_eq!(r.action, "review", "{r:?}");

    // A list a rule uses cannot be deleted.
    let e = s
        .delete_value_list(DeleteObject {
            account: acct.clone(),
            id: list.id.clone(),
        })
        .await
        .unwrap_err();
    assert!(e.message.contains(&rule.id), "{}", e.message);
    // Another account sees none of it.
    let other = AccountId::parse("acct_other").unwrap();
    let r = s
        .score(score_req(&other, "pa_4", "fraudster@example.com"))
        .await
        .unwrap();
    assert_eq!(r.action, "allow");
    let page = s
        .list_rules(ListObjects {
            account: other,
            value_list: None,
            limit: 10,
            starting_after: None,
        })
        .await
        .unwrap();
    assert!(page.data.is_empty());
}
