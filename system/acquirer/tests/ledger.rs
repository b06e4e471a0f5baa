//! The acquirer's ledger: one application per idempotency key, totals that never exceed the
//! authorization, and expiry by the Env clock.

use pay_acquirer::{Acquirer, Authorization, LedgerEntry};
use pay_core::{AccountId, Currency, Env, SecretString, Timestamp};
use pay_proto::acquirer::{AuthorizeRequest, CaptureRequest, NetworkCard, RefundRequest, VoidRequest};
use pay_store::memory::MemoryBackend;
use pay_store::Db;
use std::sync::Arc;
use std::time::Duration;

fn setup() -> (Arc<Acquirer>, Arc<MemoryBackend>, Arc<pay_core::ManualClock>) {
    let (env, clock) = Env::deterministic("acquirer", 7, Timestamp::from_secs(1_764_064_800));
    let mem = Arc::new(MemoryBackend::new());
    (
        Arc::new(Acquirer::new(Db::new(mem.clone(), env.clone()), env)),
        mem,
        clock,
    )
}

fn merchant() -> AccountId {
    AccountId::parse("acct_test").unwrap()
}

fn auth(key: &str, number: &str, amount: i64, capture: bool) -> AuthorizeRequest {
    AuthorizeRequest {
        idempotency_key: key.into(),
        merchant: merchant(),
        amount,
        currency: Currency::USD,
        capture,
        card: NetworkCard {
            number: SecretString::new(number.into()),
            exp_month: 12,
            exp_year: 2034,
            cvc: Some(SecretString::new("123".into())),
        },
    }
}

fn count<T: pay_store::Entity + 'static>(mem: &MemoryBackend) -> usize {
    mem.dump()
        .into_iter()
        .filter(|(t, r)| *t == T::TABLE && r.body.decode::<T>().is_ok())
        .count()
}

#[tokio::test]
async fn a_retried_key_moves_money_once() {
    let (acq, mem, _) = setup();
    let first = acq
        .authorize(&auth("k1", "4242424242424242", 1000, true))
        .await
        .unwrap();
    assert!(first.approved);
    assert_eq!(first.last4.as_deref(), Some("4242"));
    let again = acq
        .authorize(&auth("k1", "4242424242424242", 1000, true))
        .await
        .unwrap();
    assert_eq!(first, again);
    assert_eq!(acq.lookup("k1").await.unwrap(), Some(first));
    assert_eq!(acq.lookup("never").await.unwrap(), None);
    assert_eq!(count::<Authorization>(&mem), 1);
    // The same key for another operation is refused.
    let err = acq
        .authorize(&auth("k1", "4242424242424242", 2000, true))
        .await
        .unwrap_err();
    assert_eq!(err.code.as_deref(), Some("idempotency_key_reused"));
    // The ledger never holds the card number.
    let dump = serde_json::to_string(&mem.dump()).unwrap();
    assert!(!dump.contains("4242424242424242"));
}

#[tokio::test]
async fn concurrent_duplicates_apply_once() {
    let (acq, mem, _) = setup();
    let mut handles = vec![];
    for _ in 0..20 {
        let acq = acq.clone();
        handles.push(tokio::spawn(async move {
            acq.authorize(&auth("dup", "5555555555554444", 500, false))
                .await
                .unwrap()
        }));
    }
    let mut results = vec![];
    for h in handles {
        results.push(h.await.unwrap());
    }
    assert!(results.windows(2).all(|w| w[0] == w[1]));
    assert_eq!(count::<Authorization>(&mem), 1);
    assert_eq!(count::<LedgerEntry>(&mem), 1);
}

#[tokio::test]
async fn declines_are_recorded_without_an_authorization() {
    let (acq, mem, _) = setup();
    let r = acq
        .authorize(&auth("d1", "4000000000009995", 1000, true))
        .await
        .unwrap();
    assert!(!r.approved);
    assert_eq!(r.decline.unwrap().decline_code, "insufficient_funds");
    assert_eq!(count::<Authorization>(&mem), 0);
    assert_eq!(count::<LedgerEntry>(&mem), 1);
}

#[tokio::test]
async fn capture_refund_void_respect_totals() {
    let (acq, _, clock) = setup();
    let a = acq
        .authorize(&auth("a", "4242424242424242", 1000, false))
        .await
        .unwrap();
    let id = a.authorization_id.unwrap();
    let cap = |key: &str, amount| CaptureRequest {
        idempotency_key: key.into(),
        merchant: merchant(),
        authorization_id: id.clone(),
        amount,
    };
    let refund = |key: &str, amount| RefundRequest {
        idempotency_key: key.into(),
        merchant: merchant(),
        authorization_id: id.clone(),
        amount,
    };
    assert_eq!(
        acq.refund(&refund("r0", 1)).await.unwrap().decline.unwrap().code,
        "amount_too_large"
    );
    assert_eq!(
        acq.capture(&cap("c0", 1001)).await.unwrap().decline.unwrap().code,
        "amount_too_large"
    );
    assert!(acq.capture(&cap("c1", 600)).await.unwrap().approved);
    assert!(
        acq.capture(&cap("c1", 600)).await.unwrap().approved,
        "a retried capture replays"
    );
    assert_eq!(
        acq.capture(&cap("c2", 100)).await.unwrap().decline.unwrap().code,
        "already_captured"
    );
    assert!(acq.refund(&refund("r1", 400)).await.unwrap().approved);
    assert!(acq.refund(&refund("r2", 200)).await.unwrap().approved);
    assert_eq!(
        acq.refund(&refund("r3", 1)).await.unwrap().decline.unwrap().code,
        "amount_too_large"
    );
    let void = VoidRequest {
        idempotency_key: "v1".into(),
        merchant: merchant(),
        authorization_id: id.clone(),
    };
    assert_eq!(acq.void(&void).await.unwrap().decline.unwrap().code, "already_captured");

    // An authorization expires after seven days.
    let b = acq
        .authorize(&auth("b", "4242424242424242", 1000, false))
        .await
        .unwrap();
    clock.advance(Duration::from_secs(8 * 86_400));
    let late = CaptureRequest {
        idempotency_key: "late".into(),
        merchant: merchant(),
        authorization_id: b.authorization_id.clone().unwrap(),
        amount: 1000,
    };
    assert_eq!(
        acq.capture(&late).await.unwrap().decline.unwrap().code,
        "authorization_expired"
    );
    let v = VoidRequest {
        idempotency_key: "v2".into(),
        merchant: merchant(),
        authorization_id: b.authorization_id.unwrap(),
    };
    assert!(acq.void(&v).await.unwrap().approved);

    // Other merchants cannot touch the authorization.
    let foreign = CaptureRequest {
        idempotency_key: "x".into(),
        merchant: AccountId::parse("acct_other").unwrap(),
        authorization_id: id,
        amount: 1,
    };
    assert_eq!(acq.capture(&foreign).await.unwrap_err().status, 404);
}
