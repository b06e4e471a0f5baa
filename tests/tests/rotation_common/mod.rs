//! The rotation-under-load scenario shared by `stack/key_rotation.rs` and
//! `key_rotation_pkcs11.rs`.

#![allow(dead_code)]

use base64::Engine as _;
use integration::{pg, Stack};
use pay_hsm::{KeyPurpose, KeyState};
use pay_tokenizer::vault::{DataKeyRecord, VaultCard};
use paymentd::wiring::Tuning;
use sqlx::Row;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

const CARDS: &[&str] = &[
    "4242424242424242",
    "5555555555554444",
    "4000056655665556",
    "6011111111111117",
];

/// Many small data keys and no cache of unwrapped ones.
pub fn tuning() -> Tuning {
    let mut tuning = Tuning::default();
    // Many small data keys, and no cache of unwrapped ones: every read goes through the HSM.
    tuning.tokenizer.data_key_max_uses = 3;
    tuning.tokenizer.unwrapped_cache_ttl = Duration::ZERO;
    tuning
}

/// The rotation-under-load scenario on `stack`.
pub async fn rotation_under_load(stack: Stack) {
    let tokenizer = stack.node.node.tokenizer.clone().expect("tokenizer on this node");
    let keys = tokenizer.keys();
    let kek1 = keys.hsm().current_key(KeyPurpose::Kek).await.unwrap();

    // Warm up: some cards under the first KEK.
    for i in 0..9 {
        stack.client.card(CARDS[i % CARDS.len()]).await;
    }

    // Load: tokenize and charge continuously until told to stop.
    let stop = Arc::new(AtomicBool::new(false));
    let done = Arc::new(AtomicU64::new(0));
    let mut workers = vec![];
    for w in 0..3usize {
        let c = stack.client.clone();
        let (stop, done) = (stop.clone(), done.clone());
        workers.push(tokio::spawn(async move {
            let mut failures = vec![];
            let mut i = w;
            while !stop.load(Ordering::Relaxed) {
                let number = CARDS[i % CARDS.len()];
                i += 1;
                let pm = c
                    .post(
                        "/v1/payment_methods",
                        &[
                            ("type", "card"),
                            ("card[number]", number),
                            ("card[exp_month]", "12"),
                            ("card[exp_year]", "2034"),
                        ],
                        None,
                    )
                    .await;
                if pm.status != 200 {
                    failures.push(format!("tokenize: {} {}", pm.status, pm.json));
                    continue;
                }
                let pi = c
                    .post(
                        "/v1/payment_intents",
                        &[
                            ("amount", "1500"),
                            ("currency", "usd"),
                            ("payment_method", pm.str("/id").unwrap_or_default()),
                            ("confirm", "true"),
                        ],
                        None,
                    )
                    .await;
                if pi.status != 200 || pi.str("/status") != Some("succeeded") {
                    failures.push(format!("charge: {} {}", pi.status, pi.json));
                }
                done.fetch_add(1, Ordering::Relaxed);
            }
            failures
        }));
    }
    while done.load(Ordering::Relaxed) < 6 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r1 = keys.rotate_kek(4).await.unwrap();
    assert_eq!(r1.previous, vec![kek1.id.clone()]);
    assert!(r1.rewrapped >= 3, "{r1:?}");
    let mid = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < mid + 6 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let r2 = keys.rotate_kek(2).await.unwrap();
    assert_eq!(r2.previous, vec![r1.new_kek.clone()]);
    let mid = done.load(Ordering::Relaxed);
    while done.load(Ordering::Relaxed) < mid + 3 {
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    stop.store(true, Ordering::Relaxed);
    let mut failures = vec![];
    for w in workers {
        failures.extend(w.await.unwrap());
    }
    assert!(failures.is_empty(), "requests failed during rotation: {failures:#?}");
    let charged = done.load(Ordering::Relaxed);
    eprintln!(
        "charged {charged} cards during two rotations; re-wrapped {} + {} data keys",
        r1.rewrapped, r2.rewrapped
    );

    // Old KEKs wrap nothing; the current one wraps everything.
    let status = keys.status().await.unwrap();
    let count = |id: &pay_hsm::KeyId| status.iter().find(|s| s.key.id == *id).unwrap().data_keys;
    assert_eq!(count(&kek1.id), 0);
    assert_eq!(count(&r1.new_kek), 0);
    let db = pg(stack.db.as_ref().unwrap()).await;
    let total: i64 = sqlx::query("SELECT count(*) FROM data_keys")
        .fetch_one(db.pool())
        .await
        .unwrap()
        .get(0);
    assert_eq!(count(&r2.new_kek), total as u64);

    // Every vault record decrypts to a test card.
    let read_all = || async {
        let rows = sqlx::query("SELECT body FROM vault_cards")
            .fetch_all(db.pool())
            .await
            .unwrap();
        assert!(rows.len() as u64 >= charged + 9, "{} records", rows.len());
        for r in rows {
            let card: VaultCard = serde_json::from_value(r.get::<serde_json::Value, _>(0)).unwrap();
            let digits = keys.decrypt(&card).await.unwrap();
            assert!(CARDS.contains(&digits.as_str()), "{card:?} decrypted to something else");
        }
    };
    read_all().await;

    // The old KEKs can now be retired and destroyed; the current one cannot be destroyed
    // while it wraps data keys.
    for old in [&kek1.id, &r1.new_kek] {
        keys.set_kek_state(old, KeyState::Retired).await.unwrap();
        keys.set_kek_state(old, KeyState::Destroyed).await.unwrap();
    }
    let e = keys.set_kek_state(&r2.new_kek, KeyState::Retired).await.unwrap_err();
    assert!(e.to_string().contains("still protects"), "{e}");
    read_all().await;

    // No data key in plaintext anywhere in the database (hex or base64, any table).
    let dks = sqlx::query("SELECT body FROM data_keys")
        .fetch_all(db.pool())
        .await
        .unwrap();
    let mut needles = vec![];
    for r in dks {
        let rec: DataKeyRecord = serde_json::from_value(r.get::<serde_json::Value, _>(0)).unwrap();
        let raw = keys.hsm().unwrap_data_key(&rec.wrapped).await.unwrap();
        needles.push(hex::encode(raw.expose()));
        needles.push(hex::encode_upper(raw.expose()));
        needles.push(base64::engine::general_purpose::STANDARD.encode(raw.expose()));
        needles.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.expose()));
    }
    let tables: Vec<String> = sqlx::query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    let mut dump = String::new();
    for t in &tables {
        let rows = sqlx::query(&format!("SELECT t::text FROM \"{t}\" t"))
            .fetch_all(db.pool())
            .await
            .unwrap();
        for r in rows {
            dump.push_str(&r.get::<String, _>(0));
            dump.push('\n');
        }
    }
    assert!(dump.len() > 10_000, "the dump covers the data ({} bytes)", dump.len());
    for n in &needles {
        assert!(!dump.contains(n.as_str()), "a data key appears in the database");
    }
    for pan in CARDS {
        assert!(!dump.contains(pan), "a card number appears in the database");
    }
}
