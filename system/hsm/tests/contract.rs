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
