//! The tokenize path of `POST /v1/payment_methods` inside the vault: card validation, the keyed
//! fingerprint (HMAC in the HSM) and envelope encryption under the current data key.

use criterion::{black_box, criterion_group, criterion_main, Criterion};
use pay_core::{AccountId, Env, SecretString, VaultTokenId};
use pay_hsm::{Hsm, KeyPurpose, SoftHsm};
use pay_store::memory::MemoryBackend;
use pay_store::Db;
use pay_tokenizer::vault::{aad, KeyRing};
use pay_tokenizer::TokenizerConfig;
use std::sync::Arc;

fn vault(c: &mut Criterion) {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    let env = Env::real("bench");
    let hsm: Arc<dyn Hsm> = Arc::new(SoftHsm::new_ephemeral(env.entropy.clone(), env.clock.clone()));
    rt.block_on(async {
        hsm.generate_key(KeyPurpose::Kek, "kek").await.expect("kek");
        hsm.generate_key(KeyPurpose::Fingerprint, "fingerprint")
            .await
            .expect("fingerprint key");
    });
    let db = Db::new(Arc::new(MemoryBackend::new()), env.clone());
    let ring = KeyRing::new(db, env.clone(), hsm, &TokenizerConfig::default());
    let account = AccountId::generate(env.entropy.as_ref());
    let token = VaultTokenId::generate(env.entropy.as_ref());
    let aad = aad(&account, &token);
    let number = SecretString::new("4242424242424242".to_owned());
    let cvc = SecretString::new("123".to_owned());

    c.bench_function("tokenizer/validate", |b| {
        b.iter(|| pay_tokenizer::pan::validate(black_box(&number), 12, 2034, Some(&cvc), env.now()).is_ok())
    });
    c.bench_function("tokenizer/fingerprint", |b| {
        b.iter(|| {
            rt.block_on(ring.fingerprint(black_box("4242424242424242")))
                .expect("fingerprint")
        })
    });
    c.bench_function("tokenizer/encrypt", |b| {
        b.iter(|| {
            rt.block_on(ring.encrypt(black_box(b"4242424242424242"), &aad))
                .expect("encrypt")
        })
    });
    c.bench_function("tokenizer/validate_fingerprint_encrypt", |b| {
        b.iter(|| {
            let ok = pay_tokenizer::pan::validate(&number, 12, 2034, Some(&cvc), env.now()).is_ok();
            let fp = rt.block_on(ring.fingerprint("4242424242424242")).expect("fingerprint");
            let sealed = rt.block_on(ring.encrypt(b"4242424242424242", &aad)).expect("encrypt");
            (ok, fp, sealed)
        })
    });
}

criterion_group!(benches, vault);
criterion_main!(benches);
