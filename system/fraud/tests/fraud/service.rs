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

    let list = s.create_value_list(blocked_emails_list(&acct)).await.unwrap();
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

/// A store that notes what each request read or wrote, over the in-memory backend.
struct Noting {
    inner: MemoryBackend,
    seen: std::sync::Mutex<Vec<String>>,
}

impl Noting {
    fn take(&self) -> Vec<String> {
        std::mem::take(&mut *self.seen.lock().unwrap())
    }
}

#[async_trait::async_trait]
impl pay_store::Backend for Noting {
    async fn execute(&self, req: pay_store::Request) -> Result<pay_store::Response, pay_store::StoreError> {
        let what = match &req {
            pay_store::Request::Get { table, .. } => format!("get {table}"),
            pay_store::Request::Find { table, .. } => format!("find {table}"),
            pay_store::Request::List(q) => format!("list {}", q.table),
            pay_store::Request::Commit(_) => "commit".to_owned(),
            _ => "other".to_owned(),
        };
        self.seen.lock().unwrap().push(what);
        self.inner.execute(req).await
    }
    fn describe(&self) -> String {
        "noting memory store".into()
    }
}

fn fraud_host(db: &Db, env: &Env) -> FraudService {
    FraudService::new(
        db.clone(),
        env.clone(),
        FraudEngine::builtin(),
        Arc::new(MemoryVelocityStore::default()),
    )
}

/// What `host` decides for a payment by the listed email address.
async fn action_for_fraudster(host: &FraudService, acct: &AccountId, n: u32) -> String {
    let req = score_req(acct, &format!("pa_{n}"), "fraudster@example.com");
    host.score(req).await.unwrap().action
}

/// A case-insensitive list of email addresses, `@blocked_emails`.
fn blocked_emails_list(acct: &AccountId) -> CreateValueList {
    CreateValueList {
        account: acct.clone(),
        alias: "blocked_emails".into(),
        name: "Blocked".into(),
        item_type: Some("email".into()),
        metadata: Default::default(),
        request_key: None,
    }
}

fn blocked_emails_rule(acct: &AccountId) -> CreateRule {
    CreateRule {
        account: acct.clone(),
        predicate: "Block if :email: in @blocked_emails".into(),
        request_key: None,
    }
}

#[tokio::test]
async fn a_change_saved_on_one_host_decides_the_next_payment_on_every_host() {
    let (env, _clock) = Env::deterministic("fraud", 7, Timestamp::from_secs(1_800_000_000));
    let db = Db::new(Arc::new(MemoryBackend::new()), env.clone());
    let (a, b) = (fraud_host(&db, &env), fraud_host(&db, &env));
    let acct = AccountId::parse("acct_hosts").unwrap();
    let n = std::cell::Cell::new(0);
    let action = |host| {
        n.set(n.get() + 1);
        action_for_fraudster(host, &acct, n.get())
    };
    // Host b compiles the account's (empty) configuration first.
    assert_eq!(action(&b).await, "allow");
    let list = a.create_value_list(blocked_emails_list(&acct)).await.unwrap();
    let item = a
        .create_value_list_item(CreateValueListItem {
            account: acct.clone(),
            value_list: list.id.clone(),
            value: "fraudster@example.com".into(),
            request_key: None,
        })
        .await
        .unwrap();
    assert_eq!(action(&b).await, "allow", "a list without a rule decides nothing");
    let rule = a.create_rule(blocked_emails_rule(&acct)).await.unwrap();
    assert_eq!(action(&b).await, "block", "a rule saved on a");
    a.delete_value_list_item(DeleteObject {
        account: acct.clone(),
        id: item.id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(action(&b).await, "allow", "an item deleted on a");
    b.create_value_list_item(CreateValueListItem {
        account: acct.clone(),
        value_list: list.id.clone(),
        value: "FRAUDSTER@example.com".into(),
        request_key: None,
    })
    .await
    .unwrap();
    assert_eq!(action(&a).await, "block", "an item added on b");
    b.delete_rule(DeleteObject {
        account: acct.clone(),
        id: rule.id.clone(),
    })
    .await
    .unwrap();
    assert_eq!(action(&a).await, "allow", "a rule deleted on b");
    assert_eq!(action(&b).await, "allow");
}

#[tokio::test]
async fn scoring_reads_only_the_generation_while_the_configuration_is_unchanged() {
    let (env, _clock) = Env::deterministic("fraud", 7, Timestamp::from_secs(1_800_000_000));
    let store = Arc::new(Noting {
        inner: MemoryBackend::new(),
        seen: Default::default(),
    });
    let db = Db::new(store.clone(), env.clone());
    let s = fraud_host(&db, &env);
    let acct = AccountId::parse("acct_cached").unwrap();
    s.create_value_list(blocked_emails_list(&acct)).await.unwrap();
    s.create_rule(blocked_emails_rule(&acct)).await.unwrap();
    store.take();
    s.score(score_req(&acct, "pa_1", "a@example.com")).await.unwrap();
    let first = store.take();
    assert_eq!(first[0], "get radar_configs", "{first:?}");
    for read in ["list value_lists", "find value_list_items", "list radar_rules"] {
        assert!(first.iter().any(|r| r == read), "{read} missing from {first:?}");
    }
    for i in 2..5 {
        s.score(score_req(&acct, &format!("pa_{i}"), "a@example.com"))
            .await
            .unwrap();
        assert_eq!(store.take(), ["get radar_configs"]);
    }
    // A change moves the generation, and the next score reads the configuration again.
    s.create_rule(CreateRule {
        account: acct.clone(),
        predicate: "Review if :amount_in_usd: > 5".into(),
        request_key: None,
    })
    .await
    .unwrap();
    store.take();
    let r = s.score(score_req(&acct, "pa_9", "a@example.com")).await.unwrap();
    assert_eq!(r.action, "review");
    assert!(store.take().iter().any(|r| r == "list radar_rules"));
    // Another account has no generation record and is compiled once, empty.
    let other = AccountId::parse("acct_plain").unwrap();
    s.score(score_req(&other, "pa_10", "a@example.com")).await.unwrap();
    store.take();
    s.score(score_req(&other, "pa_11", "a@example.com")).await.unwrap();
    assert_eq!(store.take(), ["get radar_configs"]);
}
