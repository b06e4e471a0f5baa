//! A local node with its operator surface: started sealed from a keystore made by
//! `ops::create_split_keystore` (as `paymentd keys split-master`), card operations refused until
//! two of three custodian shares reach the admin endpoint through `AdminClient` (as
//! `paymentd unseal`), then a KEK rotation and retirement through it, all on the audit log,
//! which `ops::verify_audit_log` (as `paymentd audit verify`) accepts.

use pay_core::{Env, SecretString};
use pay_net::{HttpClient, TcpTransport};
use pay_store::memory::MemoryBackend;
use paymentd::admin::AdminClient;
use paymentd::local::{start_local, LocalOptions, OperatorOptions};
use paymentd::wiring::Tuning;
use std::sync::Arc;
use std::time::Duration;

async fn tokenize(base: &str, key: &str) -> (u16, serde_json::Value) {
    let http = HttpClient::new(Arc::new(TcpTransport));
    let auth = format!("Bearer {key}");
    let r = http
        .request(
            http::Method::POST,
            &format!("{base}/v1/payment_methods"),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
                ("user-agent", "Stripe/v1 RustIntegrationTests/0.1"),
            ],
            bytes::Bytes::from(
                "type=card&card%5Bnumber%5D=4242424242424242&card%5Bexp_month%5D=12&card%5Bexp_year%5D=2034",
            ),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    (r.status.as_u16(), serde_json::from_slice(&r.body).unwrap_or_default())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_local_node_unseals_rotates_and_audits_through_the_admin_endpoint() {
    let dir = tempfile::tempdir().unwrap();
    let env = Env::real("local-operator-test");
    let keystore = dir.path().join("keystore");
    let shares = paymentd::ops::create_split_keystore(&keystore, 2, 3, &env)
        .await
        .unwrap();
    assert_eq!(shares.len(), 3);
    // The path is taken now: a second keystore there would orphan its keys.
    assert!(matches!(
        paymentd::ops::create_split_keystore(&keystore, 2, 3, &env).await,
        Err(paymentd::ops::CustodyError::Exists(_))
    ));
    let hsm = Arc::new(pay_hsm::SoftHsm::open_sealed(&keystore, 2, env.entropy.clone(), env.clock.clone()).unwrap());
    let audit_log = dir.path().join("audit.log");
    let token = "local-operator-test-token-0123456789";
    let node = start_local(LocalOptions {
        public_port: 0,
        env,
        store: Arc::new(MemoryBackend::new()),
        acquirer_store: Arc::new(MemoryBackend::new()),
        hsm: hsm.clone(),
        tuning: Tuning::default(),
        create_account: true,
        operator: OperatorOptions {
            admin_token: Some(SecretString::new(token.to_owned())),
            audit_log: Some(audit_log.clone()),
            audit_checkpoint_every: Some(2),
            sealed: Some(hsm),
        },
    })
    .await
    .unwrap();
    let key = node.secret_key.as_ref().unwrap().expose().clone();
    let admin = AdminClient::new(node.admin_url.as_deref().unwrap(), token);

    let st = admin.seal_status().await.unwrap();
    assert!(st.sealed && st.received == 0 && st.threshold == 2, "{st:?}");
    // Key management needs the token; unsealing does not.
    let refused = AdminClient::new(admin.base(), "not-the-admin-token-at-all")
        .keys_status()
        .await
        .unwrap_err();
    assert!(
        matches!(refused, paymentd::admin::AdminClientError::Refused { status: 401, .. }),
        "{refused}"
    );

    let st = admin.unseal(shares[0].to_text().as_str()).await.unwrap();
    assert!(st.sealed && st.received == 1, "{st:?}");
    let (status, body) = tokenize(&node.public_url, &key).await;
    assert_eq!(status, 503, "{body}");
    let st = admin.unseal(shares[2].to_text().as_str()).await.unwrap();
    assert!(!st.sealed, "{st:?}");
    let (status, body) = tokenize(&node.public_url, &key).await;
    assert_eq!(status, 200, "{body}");

    let r = admin.rotate(10).await.unwrap();
    assert_eq!(r.rewrapped, 1);
    let previous = r.previous[0].0.clone();
    let info = admin.set_state(&previous, pay_hsm::KeyState::Retired).await.unwrap();
    assert_eq!(info.state, pay_hsm::KeyState::Retired);
    let lines = admin.keys_status().await.unwrap();
    let new = lines.iter().find(|l| l.id == r.new_kek.0).unwrap();
    assert_eq!((new.state, new.data_keys), (pay_hsm::KeyState::Active, 1));

    // Every custodian and operator action is on the audit trail, and the trail verifies.
    let report = paymentd::ops::verify_audit_log(&audit_log, &[]).unwrap();
    assert!(report.starts_with("audit log OK:"), "{report}");
    assert!(report.contains("checkpoint key:"), "checkpoints were signed: {report}");
    let text = std::fs::read_to_string(&audit_log).unwrap();
    for event in ["\"hsm.unseal\"", "\"key.rotate\"", "\"key.state.retired\""] {
        assert!(text.contains(event), "{event} in {text}");
    }
    assert!(!text.contains("pay-share-v1"), "no share in the audit log");
    assert!(!text.contains(token), "no token in the audit log");
    node.node.shutdown().await;
}
