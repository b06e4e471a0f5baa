//! Tampering with any line of the audit log — editing, deleting, inserting, reordering — makes
//! verification fail at exactly that line; checkpoints are signed by the HSM; no key material
//! or card number reaches the log or the keystore file.

use pay_audit::{verify, AuditLog, Outcome};
use pay_core::{Env, Timestamp};
use pay_hsm::{Hsm, KeyPurpose, MasterKey, SoftHsm};
use std::sync::Arc;

async fn write_log(dir: &std::path::Path) -> (std::path::PathBuf, Arc<SoftHsm>, String) {
    let (env, _) = Env::deterministic("tokenizer", 7, Timestamp::from_secs(1_767_225_600));
    let master = MasterKey::generate(env.entropy.as_ref());
    let hsm = Arc::new(SoftHsm::open(&dir.join("keystore"), master, env.entropy.clone(), env.clock.clone()).unwrap());
    hsm.generate_key(KeyPurpose::Kek, "kek").await.unwrap();
    let path = dir.join("audit.log");
    let log = AuditLog::open(&path, env.clone(), Some(hsm.clone() as Arc<dyn Hsm>), 4).unwrap();
    for i in 0..10 {
        log.record(
            "tokenizer",
            "detokenize",
            Outcome::Success,
            "payments",
            &format!("tok_{i}"),
        )
        .await;
    }
    log.record("unknown", "api.auth", Outcome::Failure, "127.0.0.1", "sk_test_…9x\n")
        .await;
    drop(log);
    // Reopening continues the chain.
    let log = AuditLog::open(&path, env, Some(hsm.clone() as Arc<dyn Hsm>), 4).unwrap();
    log.record("operator", "key.rotate", Outcome::Success, "admin", "kek-2")
        .await;
    log.checkpoint().await.unwrap();
    let (_, pk) = pay_audit::signing_public_key(hsm.as_ref()).await.unwrap();
    (path, hsm, pk)
}

fn lines(path: &std::path::Path) -> Vec<String> {
    std::fs::read_to_string(path)
        .unwrap()
        .lines()
        .map(str::to_owned)
        .collect()
}

fn write(path: &std::path::Path, lines: &[String]) {
    std::fs::write(path, lines.join("\n") + "\n").unwrap();
}

#[tokio::test]
async fn an_intact_log_verifies_with_signed_checkpoints() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, pk) = write_log(dir.path()).await;
    let v = verify(&path, std::slice::from_ref(&pk)).unwrap();
    assert_eq!(v.events, 12);
    assert_eq!(v.checkpoints, 4, "after events 4, 8, 12 and the explicit one");
    assert_eq!(v.unsigned_tail, 0);
    assert_eq!(v.keys, vec![pk]);
    // A pinned key that did not sign is refused.
    let other = hex::encode([4u8; 65]);
    assert!(verify(&path, &[other]).is_err());
    // Control characters were stripped from fields.
    assert!(!std::fs::read_to_string(&path).unwrap().contains("\\n"));
}

#[tokio::test]
async fn every_kind_of_tampering_is_caught_at_the_right_line() {
    let dir = tempfile::tempdir().unwrap();
    let (path, _, pk) = write_log(dir.path()).await;
    let original = lines(&path);
    let n = original.len();
    for target in 0..n {
        // Edit one field of the line.
        let mut l = original.clone();
        let edited = if l[target].contains("\"success\"") {
            l[target].replacen("\"success\"", "\"failure\"", 1)
        } else {
            l[target].replacen("\"failure\"", "\"success\"", 1)
        };
        assert_ne!(edited, l[target]);
        l[target] = edited;
        write(&path, &l);
        let e = verify(&path, std::slice::from_ref(&pk)).unwrap_err();
        assert_eq!(e.line, target as u64 + 1, "edit of line {}: {e}", target + 1);

        // Delete it (unless it is the last line: see the crate docs on anchoring the tail).
        if target + 1 < n {
            let mut l = original.clone();
            l.remove(target);
            write(&path, &l);
            let e = verify(&path, std::slice::from_ref(&pk)).unwrap_err();
            assert_eq!(e.line, target as u64 + 1, "deletion of line {}: {e}", target + 1);

            // Swap it with the next one.
            let mut l = original.clone();
            l.swap(target, target + 1);
            write(&path, &l);
            let e = verify(&path, std::slice::from_ref(&pk)).unwrap_err();
            assert_eq!(e.line, target as u64 + 1, "swap at line {}: {e}", target + 1);
        }
    }
    // Recomputing one line's hash after editing it still breaks the next line.
    let mut l = original.clone();
    let mut v: serde_json::Value = serde_json::from_str(&l[2]).unwrap();
    v["object"] = "tok_forged".into();
    l[2] = v.to_string();
    write(&path, &l);
    assert_eq!(verify(&path, &[]).unwrap_err().line, 3);
    // A forged checkpoint signature is refused.
    let mut l = original.clone();
    let cp = l.iter().position(|x| x.contains("\"checkpoint\"")).unwrap();
    let mut v: serde_json::Value = serde_json::from_str(&l[cp]).unwrap();
    let sig = v["signature"]["sig"].as_str().unwrap().to_owned();
    let flipped = format!("{}{}", if sig.starts_with('0') { "1" } else { "0" }, &sig[1..]);
    v["signature"]["sig"] = flipped.into();
    l[cp] = v.to_string();
    write(&path, &l);
    assert_eq!(verify(&path, &[]).unwrap_err().line, cp as u64 + 1);
    write(&path, &original);
    assert!(verify(&path, &[pk]).is_ok());
}

#[tokio::test]
async fn no_key_material_or_card_number_in_the_log_or_the_keystore() {
    let dir = tempfile::tempdir().unwrap();
    let (path, hsm, _) = write_log(dir.path()).await;
    let kek = hsm.current_key(KeyPurpose::Kek).await.unwrap();
    let (dk, wrapped) = hsm.generate_data_key(&kek.id).await.unwrap();
    assert_eq!(hsm.unwrap_data_key(&wrapped).await.unwrap().expose(), dk.expose());
    let log = std::fs::read(&path).unwrap();
    let keystore = std::fs::read(dir.path().join("keystore")).unwrap();
    let needles = [
        hex::encode(dk.expose()).into_bytes(),
        dk.expose().to_vec(),
        b"4242424242424242".to_vec(),
    ];
    for hay in [&log, &keystore] {
        for n in &needles {
            assert!(!hay.windows(n.len()).any(|w| w == n.as_slice()));
        }
        // The keystore is ciphertext: no JSON field names of key records in clear.
        assert!(!hay.windows(8).any(|w| w == b"material"));
    }
}
