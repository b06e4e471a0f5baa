//! One contract suite for every HSM backend.

use pay_core::{ManualClock, SeededEntropy, Timestamp};
use pay_hsm::*;
use std::sync::Arc;

fn clock() -> Arc<ManualClock> {
    Arc::new(ManualClock::new(Timestamp::from_secs(1_767_225_600)))
}

async fn contract(h: &dyn Hsm) {
    // Keys and lifecycle.
    let kek1 = h.generate_key(KeyPurpose::Kek, "kek").await.unwrap();
    assert_eq!(h.current_key(KeyPurpose::Kek).await.unwrap().id, kek1.id);
    let fp = h.generate_key(KeyPurpose::Fingerprint, "fingerprint").await.unwrap();
    let sig = h.generate_key(KeyPurpose::Signing, "signing").await.unwrap();
    assert!(matches!(h.current_key(KeyPurpose::Signing).await, Ok(k) if k.id == sig.id));

    // Data keys round-trip; wrapped bytes are not the key.
    let (dk, wrapped) = h.generate_data_key(&kek1.id).await.unwrap();
    assert_ne!(&wrapped.bytes[..], &dk.expose()[..]);
    assert_eq!(h.unwrap_data_key(&wrapped).await.unwrap().expose(), dk.expose());
    let sealed = seal_with_data_key(&dk, b"4242424242424242", b"aad", &SeededEntropy::new(1, "iv")).unwrap();
    assert_eq!(&*open_with_data_key(&dk, &sealed, b"aad").unwrap(), b"4242424242424242");
    assert_eq!(
        open_with_data_key(&dk, &sealed, b"other").unwrap_err(),
        HsmError::Integrity
    );
    assert!(seal_with_data_key(&dk, b"x", b"", &SeededEntropy::new(1, "iv")).is_err());

    // Rotation: a new KEK becomes current; rewrap moves a data key; old KEK decrypt-only.
    let kek2 = h.generate_key(KeyPurpose::Kek, "kek").await.unwrap();
    assert_eq!(h.current_key(KeyPurpose::Kek).await.unwrap().id, kek2.id);
    let rewrapped = h.rewrap(&wrapped, &kek2.id).await.unwrap();
    assert_eq!(rewrapped.kek, kek2.id);
    assert_eq!(h.unwrap_data_key(&rewrapped).await.unwrap().expose(), dk.expose());
    h.set_key_state(&kek1.id, KeyState::DecryptOnly).await.unwrap();
    assert!(
        matches!(h.generate_data_key(&kek1.id).await, Err(HsmError::WrongState { .. })),
        "decrypt-only keys do not wrap"
    );
    assert!(h.unwrap_data_key(&wrapped).await.is_ok(), "decrypt-only keys unwrap");
    h.set_key_state(&kek1.id, KeyState::Retired).await.unwrap();
    assert!(
        matches!(h.unwrap_data_key(&wrapped).await, Err(HsmError::WrongState { .. })),
        "retired keys do not unwrap"
    );
    assert!(matches!(
        h.set_key_state(&kek1.id, KeyState::Active).await,
        Err(HsmError::IllegalTransition { .. })
    ));
    h.set_key_state(&kek1.id, KeyState::Destroyed).await.unwrap();
    assert!(h.unwrap_data_key(&wrapped).await.is_err());
    assert!(
        h.unwrap_data_key(&rewrapped).await.is_ok(),
        "data re-wrapped before destruction stays readable"
    );
    let states: Vec<(String, KeyState)> = h
        .list_keys()
        .await
        .unwrap()
        .into_iter()
        .map(|k| (k.id.0, k.state))
        .collect();
    assert!(states.contains(&(kek1.id.0.clone(), KeyState::Destroyed)));

    // HMAC: deterministic per key, different across keys.
    let a = h.hmac_sha256(&fp.id, b"4242424242424242").await.unwrap();
    assert_eq!(a, h.hmac_sha256(&fp.id, b"4242424242424242").await.unwrap());
    assert_ne!(a, h.hmac_sha256(&fp.id, b"4000000000000002").await.unwrap());
    let fp2 = h.generate_key(KeyPurpose::Fingerprint, "fingerprint").await.unwrap();
    assert_ne!(a, h.hmac_sha256(&fp2.id, b"4242424242424242").await.unwrap());
    assert!(matches!(
        h.hmac_sha256(&kek2.id, b"x").await,
        Err(HsmError::WrongPurpose { .. })
    ));

    // Signatures.
    let s = h.sign(&sig.id, b"message").await.unwrap();
    let pk = h.public_key(&sig.id).await.unwrap();
    assert_eq!(s.len(), 64);
    verify_p256(&pk, b"message", &s).unwrap();
    assert_eq!(verify_p256(&pk, b"messagf", &s), Err(HsmError::Integrity));

    // HSM-resident GCM: IV returned; tamper detection on ciphertext, IV and AAD; empty AAD refused.
    let sealed = h.encrypt(&kek2.id, b"secret", b"ctx").await.unwrap();
    assert_eq!(sealed.iv.len(), 12);
    assert_eq!(&*h.decrypt(&kek2.id, &sealed, b"ctx").await.unwrap(), b"secret");
    let mut bad = sealed.clone();
    bad.ciphertext[0] ^= 1;
    assert_eq!(
        h.decrypt(&kek2.id, &bad, b"ctx").await.unwrap_err(),
        HsmError::Integrity
    );
    let mut bad = sealed.clone();
    bad.iv[0] ^= 1;
    assert_eq!(
        h.decrypt(&kek2.id, &bad, b"ctx").await.unwrap_err(),
        HsmError::Integrity
    );
    assert_eq!(
        h.decrypt(&kek2.id, &sealed, b"xtc").await.unwrap_err(),
        HsmError::Integrity
    );
    assert!(matches!(
        h.encrypt(&kek2.id, b"x", b"").await,
        Err(HsmError::InvalidInput(_))
    ));

    // Nothing secret in debug output or errors.
    let dbg = format!("{dk:?} {:?}", h.unwrap_data_key(&rewrapped).await.unwrap());
    assert!(!dbg.contains(&hex::encode(dk.expose())));
}

#[tokio::test]
async fn ephemeral_soft_hsm() {
    let h = SoftHsm::new_ephemeral(Arc::new(SeededEntropy::new(1, "hsm")), clock());
    contract(&h).await;
}

#[tokio::test]
async fn file_soft_hsm_persists_and_refuses_a_wrong_master_key() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keystore");
    let e: Arc<dyn pay_core::Entropy> = Arc::new(SeededEntropy::new(2, "hsm"));
    let master = MasterKey::generate(e.as_ref());
    let hex_key = master.to_hex();
    let h = SoftHsm::open(&path, master, e.clone(), clock()).unwrap();
    contract(&h).await;
    let keys_before = h.list_keys().await.unwrap();
    drop(h);
    let raw = std::fs::read(&path).unwrap();
    assert!(
        !raw.windows(6).any(|w| w == b"signin"),
        "the keystore file is encrypted"
    );
    let reopened = SoftHsm::open(&path, MasterKey::from_hex(&hex_key).unwrap(), e.clone(), clock()).unwrap();
    assert_eq!(reopened.list_keys().await.unwrap(), keys_before);
    let wrong = SoftHsm::open(&path, MasterKey::generate(e.as_ref()), e.clone(), clock())
        .err()
        .unwrap();
    assert!(wrong.to_string().contains("wrong master key"), "{wrong}");
    assert!(!wrong.to_string().contains(hex_key.as_str()));
}

#[tokio::test]
async fn sealed_soft_hsm_needs_m_of_n_custodian_shares() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("keystore");
    let e: Arc<dyn pay_core::Entropy> = Arc::new(SeededEntropy::new(3, "hsm"));
    let master = MasterKey::generate(e.as_ref());
    let shares = master.split(3, 5, e.as_ref()).unwrap();
    let h = SoftHsm::open(&path, master, e.clone(), clock()).unwrap();
    let kek = h.generate_key(KeyPurpose::Kek, "kek").await.unwrap();
    drop(h);
    let sealed = SoftHsm::open_sealed(&path, 3, e.clone(), clock()).unwrap();
    assert_eq!(sealed.current_key(KeyPurpose::Kek).await.unwrap_err(), HsmError::Sealed);
    let p = sealed.submit_unseal_share(&shares[4].to_text()).unwrap();
    assert_eq!((p.received, p.unsealed), (1, false));
    // A repeated share does not count twice.
    assert_eq!(sealed.submit_unseal_share(&shares[4].to_text()).unwrap().received, 1);
    assert!(sealed.submit_unseal_share("pay-share-v1-2-00-00000000").is_err());
    sealed.submit_unseal_share(&shares[0].to_text()).unwrap();
    assert!(sealed.is_sealed());
    let p = sealed.submit_unseal_share(&shares[2].to_text()).unwrap();
    assert!(p.unsealed);
    assert_eq!(sealed.current_key(KeyPurpose::Kek).await.unwrap().id, kek.id);

    // Shares of another master key are refused and collection starts over.
    let other = MasterKey::generate(e.as_ref()).split(2, 2, e.as_ref()).unwrap();
    let again = SoftHsm::open_sealed(&path, 2, e.clone(), clock()).unwrap();
    again.submit_unseal_share(&other[0].to_text()).unwrap();
    assert!(again.submit_unseal_share(&other[1].to_text()).is_err());
    assert!(again.is_sealed());
}

// ---------------------------------------------------------------------------------------------
// The same contract on a real PKCS#11 module: SoftHSMv2.
//
// SoftHSMv2 reads SOFTHSM2_CONF once per process, when the module is initialised, and sees only
// the tokens that exist then; so one throwaway configuration and every token these tests use are
// created up front, before the first connection. Without the module the tests fail (CI must not
// skip them silently) unless PAY_HSM_SKIP_PKCS11=1 says so explicitly.

mod softhsm {
    use pay_hsm::pkcs11::softhsm2;
    use std::path::PathBuf;
    use std::sync::OnceLock;

    pub const PIN: &str = "pay-test-pin-5678";
    pub const TOKENS: &[&str] = &["contract-kwp", "contract-gcm", "errors", "restart", "pool", "timing"];

    pub struct Env {
        pub module: PathBuf,
        _dir: tempfile::TempDir,
    }

    /// The SoftHSMv2 environment of this test process, or `None` when explicitly skipped.
    pub fn env() -> Option<&'static Env> {
        static ENV: OnceLock<Option<Env>> = OnceLock::new();
        ENV.get_or_init(|| {
            let skip = std::env::var("PAY_HSM_SKIP_PKCS11").is_ok_and(|v| v == "1");
            let module = match softhsm2::find_module() {
                Some(m) if m.exists() => m,
                _ if skip => {
                    eprintln!("PAY_HSM_SKIP_PKCS11=1: skipping the PKCS#11 (SoftHSMv2) contract tests");
                    return None;
                }
                other => panic!(
                    "SoftHSMv2 is not installed (looked for {:?} and {:?}); install it with \
                     `apt-get install softhsm2` (scripts/test.sh does), or set PAY_HSM_SKIP_PKCS11=1 \
                     to skip the PKCS#11 backend tests explicitly",
                    other,
                    softhsm2::DEFAULT_MODULES
                ),
            };
            let dir = tempfile::tempdir().expect("temp dir");
            let conf = softhsm2::write_config(dir.path()).expect("softhsm2.conf");
            std::env::set_var("SOFTHSM2_CONF", &conf);
            for t in TOKENS {
                softhsm2::init_token(&conf, t, "so-pin-1234", PIN).expect("softhsm2-util --init-token");
            }
            Some(Env { module, _dir: dir })
        })
        .as_ref()
    }
}

fn pkcs11_config(module: &std::path::Path, token: &str, wrap: WrapChoice, sessions: usize) -> Pkcs11Config {
    Pkcs11Config {
        module: module.to_owned(),
        token: TokenSelector::Label(token.to_owned()),
        pin: Pin::new(softhsm::PIN),
        sessions,
        wrap,
    }
}

#[tokio::test]
async fn pkcs11_softhsm2_with_aes_key_wrap_pad() {
    let Some(env) = softhsm::env() else { return };
    let h = Pkcs11Hsm::connect(
        &pkcs11_config(&env.module, "contract-kwp", WrapChoice::Auto, 4),
        clock(),
    )
    .unwrap();
    assert_eq!(
        h.wrap_mechanism(),
        WrapMechanism::KeyWrapPad,
        "SoftHSMv2 offers CKM_AES_KEY_WRAP_PAD"
    );
    contract(&h).await;
    // Every key is a token object that is sensitive and was never extractable.
    for k in h.list_keys().await.unwrap() {
        if k.state == KeyState::Destroyed {
            assert!(h.protection(&k.id).await.is_err());
            continue;
        }
        let p = h.protection(&k.id).await.unwrap();
        assert!(
            p.sensitive && !p.extractable && p.never_extractable && p.always_sensitive && p.token,
            "{}: {p:?}",
            k.id
        );
    }
}

#[tokio::test]
async fn pkcs11_softhsm2_with_aes_gcm_wrapping() {
    let Some(env) = softhsm::env() else { return };
    let h = Pkcs11Hsm::connect(&pkcs11_config(&env.module, "contract-gcm", WrapChoice::Gcm, 2), clock()).unwrap();
    assert_eq!(h.wrap_mechanism(), WrapMechanism::Gcm);
    contract(&h).await;
    let older = h.current_key(KeyPurpose::Kek).await.unwrap();
    let kek = h.generate_key(KeyPurpose::Kek, "kek").await.unwrap();
    let (_, w) = h.generate_data_key(&kek.id).await.unwrap();
    assert_eq!(w.mechanism, "aes-gcm");
    assert_eq!(w.bytes.len(), 12 + 32 + 16);
    // A GCM-wrapped key is bound to its KEK's id: relabelled, it does not unwrap.
    let mut moved = w.clone();
    moved.kek = older.id.clone();
    assert_eq!(h.unwrap_data_key(&moved).await.unwrap_err(), HsmError::Integrity);
}

#[tokio::test]
async fn pkcs11_keys_and_states_live_on_the_token() {
    let Some(env) = softhsm::env() else { return };
    let cfg = pkcs11_config(&env.module, "restart", WrapChoice::Auto, 2);
    let h = Pkcs11Hsm::connect(&cfg, clock()).unwrap();
    let k1 = h.generate_key(KeyPurpose::Kek, "vault").await.unwrap();
    let (dk, wrapped) = h.generate_data_key(&k1.id).await.unwrap();
    let k2 = h.generate_key(KeyPurpose::Kek, "vault").await.unwrap();
    h.set_key_state(&k1.id, KeyState::DecryptOnly).await.unwrap();
    let before = h.list_keys().await.unwrap();
    drop(h);
    // A second connection (as another process would) reads versions and states from the token.
    let again = Pkcs11Hsm::connect(&cfg, clock()).unwrap();
    assert_eq!(again.list_keys().await.unwrap(), before);
    assert_eq!(again.current_key(KeyPurpose::Kek).await.unwrap().id, k2.id);
    assert_eq!(again.unwrap_data_key(&wrapped).await.unwrap().expose(), dk.expose());
    assert!(matches!(
        again.generate_data_key(&k1.id).await,
        Err(HsmError::WrongState { .. })
    ));
    // A key created through one handle is visible at once through another.
    let k3 = again.generate_key(KeyPurpose::Kek, "vault").await.unwrap();
    let third = Pkcs11Hsm::connect(&cfg, clock()).unwrap();
    assert_eq!(third.current_key(KeyPurpose::Kek).await.unwrap().id, k3.id);
}

#[tokio::test]
async fn pkcs11_session_pool_serves_concurrent_callers() {
    let Some(env) = softhsm::env() else { return };
    let h = Pkcs11Hsm::connect(&pkcs11_config(&env.module, "pool", WrapChoice::Auto, 3), clock()).unwrap();
    let kek = h.generate_key(KeyPurpose::Kek, "kek").await.unwrap();
    let fp = h.generate_key(KeyPurpose::Fingerprint, "fp").await.unwrap();
    let mut tasks = vec![];
    for i in 0..24u32 {
        let h = h.clone();
        let (kek, fp) = (kek.id.clone(), fp.id.clone());
        tasks.push(tokio::spawn(async move {
            let (dk, w) = h.generate_data_key(&kek).await.unwrap();
            assert_eq!(h.unwrap_data_key(&w).await.unwrap().expose(), dk.expose());
            h.hmac_sha256(&fp, &i.to_be_bytes()).await.unwrap()
        }));
    }
    let mut macs = std::collections::BTreeSet::new();
    for t in tasks {
        macs.insert(t.await.unwrap());
    }
    assert_eq!(macs.len(), 24);
}

#[tokio::test]
async fn pkcs11_setup_errors_are_clear_and_never_show_the_pin() {
    let Some(env) = softhsm::env() else { return };
    let missing = Pkcs11Config {
        module: "/nonexistent/libcloudhsm_pkcs11.so".into(),
        ..pkcs11_config(&env.module, "errors", WrapChoice::Auto, 1)
    };
    let e = Pkcs11Hsm::connect(&missing, clock()).unwrap_err();
    assert!(matches!(e, Pkcs11Error::ModuleNotFound { .. }), "{e}");
    assert!(e.to_string().contains("/nonexistent/libcloudhsm_pkcs11.so"));

    let not_a_module = Pkcs11Config {
        module: "/etc/hostname".into(),
        ..pkcs11_config(&env.module, "errors", WrapChoice::Auto, 1)
    };
    let e = Pkcs11Hsm::connect(&not_a_module, clock()).unwrap_err();
    assert!(matches!(e, Pkcs11Error::ModuleLoad { .. }), "{e}");

    let e = Pkcs11Hsm::connect(
        &pkcs11_config(&env.module, "no-such-token", WrapChoice::Auto, 1),
        clock(),
    )
    .unwrap_err();
    assert!(matches!(e, Pkcs11Error::TokenNotFound { .. }), "{e}");
    assert!(e.to_string().contains("\"errors\""), "lists the tokens present: {e}");

    let e = Pkcs11Hsm::connect(
        &Pkcs11Config {
            token: TokenSelector::Slot(987_654),
            ..pkcs11_config(&env.module, "errors", WrapChoice::Auto, 1)
        },
        clock(),
    )
    .unwrap_err();
    assert!(e.to_string().contains("slot 987654"), "{e}");

    let wrong_pin = "crypto_user:not-the-password";
    let e = Pkcs11Hsm::connect(
        &Pkcs11Config {
            pin: Pin::new(wrong_pin),
            ..pkcs11_config(&env.module, "errors", WrapChoice::Auto, 1)
        },
        clock(),
    )
    .unwrap_err();
    assert!(matches!(e, Pkcs11Error::Login { .. }), "{e}");
    let text = format!("{e} {e:?}");
    assert!(text.contains("PinIncorrect"), "{text}");
    assert!(
        !text.contains("not-the-password") && !text.contains(softhsm::PIN),
        "{text}"
    );

    let e = Pkcs11Hsm::connect(&pkcs11_config(&env.module, "errors", WrapChoice::Auto, 0), clock()).unwrap_err();
    assert!(matches!(e, Pkcs11Error::Invalid(_)), "{e}");

    let dir = tempfile::tempdir().unwrap();
    let e = Pin::from_file(&dir.path().join("pin")).unwrap_err();
    assert!(matches!(e, Pkcs11Error::PinFile { .. }));
    std::fs::write(dir.path().join("pin"), format!("{}\n", softhsm::PIN)).unwrap();
    let ok = Pkcs11Config {
        pin: Pin::from_file(&dir.path().join("pin")).unwrap(),
        ..pkcs11_config(&env.module, "errors", WrapChoice::Auto, 1)
    };
    let h = Pkcs11Hsm::connect(&ok, clock()).unwrap();
    assert!(!format!("{h:?} {ok:?}").contains(softhsm::PIN));
}

/// Per-operation latency of both backends (not a pass/fail test):
/// `cargo test -p pay-hsm --test contract -- --ignored --nocapture latency`.
#[tokio::test]
#[ignore]
async fn latency_of_data_key_operations() {
    async fn measure(name: &str, h: &dyn Hsm) {
        let kek = h.generate_key(KeyPurpose::Kek, "kek").await.unwrap();
        let fp = h.generate_key(KeyPurpose::Fingerprint, "fp").await.unwrap();
        let n = 500u32;
        let t = std::time::Instant::now();
        let mut wrapped = vec![];
        for _ in 0..n {
            wrapped.push(h.generate_data_key(&kek.id).await.unwrap().1);
        }
        let gen = t.elapsed() / n;
        let t = std::time::Instant::now();
        for w in &wrapped {
            h.unwrap_data_key(w).await.unwrap();
        }
        let unwrap = t.elapsed() / n;
        let t = std::time::Instant::now();
        for i in 0..n {
            h.hmac_sha256(&fp.id, &i.to_be_bytes()).await.unwrap();
        }
        let hmac = t.elapsed() / n;
        let kek2 = h.generate_key(KeyPurpose::Kek, "kek").await.unwrap();
        let t = std::time::Instant::now();
        for w in &wrapped {
            h.rewrap(w, &kek2.id).await.unwrap();
        }
        let rewrap = t.elapsed() / n;
        eprintln!(
            "{name}: generate_data_key {gen:?}, unwrap {unwrap:?}, hmac {hmac:?}, rewrap {rewrap:?} (mean of {n})"
        );
    }
    let soft = SoftHsm::new_ephemeral(Arc::new(pay_core::OsEntropy::new()), clock());
    measure("SoftHsm", &soft).await;
    let Some(env) = softhsm::env() else { return };
    let h = Pkcs11Hsm::connect(&pkcs11_config(&env.module, "timing", WrapChoice::Auto, 2), clock()).unwrap();
    measure("Pkcs11Hsm/SoftHSMv2 aes-kwp", &h).await;
}
