//! Key management on the real `paymentd serve` binary: a software HSM sealed at start and
//! unsealed with 2 of 3 custodian shares through `paymentd unseal` (card operations answer 503
//! until then), `paymentd keys rotate` / `status` / `set-state` through the admin endpoint, and
//! the audit log of it all verified by `paymentd audit verify`, which pinpoints a tampered line.
//! Finally the database, the logs, the audit log and the keystore are searched for the raw
//! bytes (hex and base64) of every data key used, and for the card numbers: none may appear.
//!
//! A second test runs the same node on the PKCS#11 backend (SoftHSMv2).

use crate::common::{bin, Served, TlsTransport};
use base64::Engine as _;
use pay_net::HttpClient;
use sqlx::Row;
use std::path::Path;
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

async fn post(http: &HttpClient, s: &Served, key: &str, path: &str, form: &[(&str, &str)]) -> (u16, serde_json::Value) {
    let body = form
        .iter()
        .map(|(k, v)| format!("{}={}", k.replace('[', "%5B").replace(']', "%5D"), v))
        .collect::<Vec<_>>()
        .join("&");
    let auth = format!("Bearer {key}");
    let r = http
        .request(
            http::Method::POST,
            &format!("{}{path}", s.base),
            &[
                ("authorization", auth.as_str()),
                ("content-type", "application/x-www-form-urlencoded"),
                ("user-agent", "Stripe/v1 RustIntegrationTests/0.1"),
            ],
            bytes::Bytes::from(body),
            Duration::from_secs(20),
        )
        .await
        .unwrap();
    (r.status.as_u16(), serde_json::from_slice(&r.body).unwrap_or_default())
}

async fn card_and_charge(http: &HttpClient, s: &Served, number: &str) -> (u16, serde_json::Value) {
    let (st, pm) = post(
        http,
        s,
        &s.secret,
        "/v1/payment_methods",
        &[
            ("type", "card"),
            ("card[number]", number),
            ("card[exp_month]", "12"),
            ("card[exp_year]", "2034"),
        ],
    )
    .await;
    if st != 200 {
        return (st, pm);
    }
    post(
        http,
        s,
        &s.secret,
        "/v1/payment_intents",
        &[
            ("amount", "2500"),
            ("currency", "usd"),
            ("payment_method", pm["id"].as_str().unwrap()),
            ("confirm", "true"),
        ],
    )
    .await
}

fn paymentd(args: &[&str], config: &Path) -> (bool, String) {
    let out = Command::new(bin())
        .args(args)
        .arg("--config")
        .arg(config)
        .output()
        .unwrap();
    let text = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    (out.status.success(), text)
}

fn client(s: &Served) -> HttpClient {
    let ca = std::fs::read(s.ca_file()).unwrap();
    HttpClient::new(Arc::new(TlsTransport(tokio_rustls::TlsConnector::from(
        pay_net::tls::client_config_with_roots(&ca).unwrap(),
    ))))
}

const PANS: &[&str] = &["4242424242424242", "5555555555554444", "4000056655665556"];

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn sealed_start_unseal_rotate_and_a_verifiable_audit_trail() {
    let mut s = Served::prepare("").await;
    let d = s.dir.path().to_owned();
    // Custodian shares: the master key exists only as 2-of-3 shares.
    let out = Command::new(bin())
        .args([
            "keys",
            "split-master",
            "--threshold",
            "2",
            "--shares",
            "3",
            "--keystore",
        ])
        .arg(d.join("keystore"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let shares: Vec<String> = String::from_utf8_lossy(&out.stdout)
        .lines()
        .filter_map(|l| {
            l.split_once(": ")
                .filter(|(k, _)| k.starts_with("share "))
                .map(|(_, v)| v.to_owned())
        })
        .collect();
    assert_eq!(shares.len(), 3);
    for (i, sh) in shares.iter().enumerate() {
        std::fs::write(d.join(format!("share{i}")), sh).unwrap();
    }
    let token = "admin-token-0123456789abcdef";
    std::fs::write(d.join("admin.token"), token).unwrap();
    s.hsm_yaml = Some(format!(
        "hsm:\n  backend: soft\n  keystore: {}/keystore\n  unseal_threshold: 2\n",
        d.display()
    ));
    s.serve_admin(&d.join("admin.token"));
    s.start(&format!(
        "audit:\n  file: {d}/audit.log\n  checkpoint_every: 3\n",
        d = d.display()
    ));
    let cfg = s.config_file();
    let http = client(&s);

    // Sealed: card operations are refused with a clear 503.
    let (st, body) = card_and_charge(&http, &s, PANS[0]).await;
    assert_eq!(st, 503, "{body}");
    assert!(body.to_string().contains("sealed"), "{body}");

    // One share is not enough; a malformed one is refused; the second unseals.
    let (ok, text) = paymentd(&["unseal", "--share-file", d.join("share2").to_str().unwrap()], &cfg);
    assert!(ok && text.contains("1 of 2"), "{text}");
    std::fs::write(d.join("bad"), "pay-share-v1-9-zz").unwrap();
    let (ok, text) = paymentd(&["unseal", "--share-file", d.join("bad").to_str().unwrap()], &cfg);
    assert!(!ok, "{text}");
    let (ok, text) = paymentd(&["unseal", "--share-file", d.join("share0").to_str().unwrap()], &cfg);
    assert!(ok && text.contains("unsealed"), "{text}");

    for pan in PANS {
        let (st, pi) = card_and_charge(&http, &s, pan).await;
        assert_eq!((st, pi["status"].as_str()), (200, Some("succeeded")), "{pi}");
    }

    // Rotation through the CLI; the old KEK then protects nothing and can be retired.
    let (ok, text) = paymentd(&["keys", "rotate", "--batch", "1"], &cfg);
    assert!(ok && text.contains("new KEK kek-2"), "{text}");
    let (ok, text) = paymentd(&["keys", "status"], &cfg);
    assert!(ok, "{text}");
    let row = |id: &str| -> Vec<String> {
        text.lines()
            .find(|l| l.starts_with(&format!("{id} ")))
            .unwrap_or_else(|| panic!("{id} in {text}"))
            .split_whitespace()
            .map(str::to_owned)
            .collect()
    };
    assert_eq!(row("kek-1")[3..], ["decrypt_only", "0", "0"], "{text}");
    assert_eq!(row("kek-2")[3], "active", "{text}");
    assert!(row("kek-2")[5].parse::<u64>().unwrap() >= 3, "{text}");
    let (ok, text) = paymentd(&["keys", "set-state", "kek-2", "retired"], &cfg);
    assert!(!ok && text.contains("still protects"), "{text}");
    let (ok, text) = paymentd(&["keys", "set-state", "kek-1", "retired"], &cfg);
    assert!(ok && text.contains("retired"), "{text}");
    // Cards stored before the rotation are still charged (detokenized) after it.
    let (st, pi) = card_and_charge(&http, &s, PANS[1]).await;
    assert_eq!((st, pi["status"].as_str()), (200, Some("succeeded")), "{pi}");

    // A wrong admin token is refused (and audited); a wrong API key is audited.
    std::fs::write(d.join("admin.token"), "wrong-token-wrong-token").unwrap();
    let (ok, text) = paymentd(&["keys", "status"], &cfg);
    assert!(!ok && text.contains("401"), "{text}");
    std::fs::write(d.join("admin.token"), token).unwrap();
    let (st, _) = post(&http, &s, "sk_test_not_a_real_key_000000000000", "/v1/customers", &[]).await;
    assert_eq!(st, 401);

    let status = s.stop();
    assert!(status.success());

    // The audit trail verifies and holds the events.
    let log = d.join("audit.log");
    let out = Command::new(bin())
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    assert!(out.status.success(), "{text}{}", String::from_utf8_lossy(&out.stderr));
    assert!(text.contains("signed checkpoints"), "{text}");
    let audit = std::fs::read_to_string(&log).unwrap();
    for event in [
        "\"hsm.unseal\"",
        "\"detokenize\"",
        "\"key.rotate\"",
        "\"key.state.retired\"",
        "\"admin.auth\"",
        "\"api.auth\"",
        "\"audit.checkpoint\"",
    ] {
        assert!(audit.contains(event), "{event} missing from the audit log:\n{audit}");
    }
    // Tampering with line 4 is reported at line 4.
    let mut lines: Vec<String> = audit.lines().map(str::to_owned).collect();
    lines[3] = lines[3]
        .replacen("\"success\"", "\"failure\"", 1)
        .replacen("tok_", "tok_X", 1);
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let out = Command::new(bin())
        .args(["audit", "verify"])
        .arg(&log)
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("line 4"), "{err}");
    std::fs::write(&log, &audit).unwrap();

    // No key material, share, token or card number at rest or in the logs.
    let parts: Vec<_> = shares[..2]
        .iter()
        .map(|t| pay_hsm::shamir::Share::parse(t).unwrap())
        .collect();
    let master = pay_hsm::shamir::combine(&parts).unwrap();
    let env = pay_core::Env::real("test");
    let hsm = pay_hsm::SoftHsm::open(
        &d.join("keystore"),
        pay_hsm::MasterKey::from_hex(&hex::encode(&*master)).unwrap(),
        env.entropy.clone(),
        env.clock.clone(),
    )
    .unwrap();
    let db = s.db.backend().await.unwrap();
    let mut needles: Vec<String> = vec![token.into()];
    needles.extend(shares.iter().cloned());
    needles.extend(PANS.iter().map(|p| p.to_string()));
    let rows = sqlx::query("SELECT body FROM data_keys")
        .fetch_all(db.pool())
        .await
        .unwrap();
    assert!(!rows.is_empty());
    for r in rows {
        let rec: pay_tokenizer::vault::DataKeyRecord = serde_json::from_value(r.get(0)).unwrap();
        let raw = pay_hsm::Hsm::unwrap_data_key(&hsm, &rec.wrapped).await.unwrap();
        needles.push(hex::encode(raw.expose()));
        needles.push(base64::engine::general_purpose::STANDARD.encode(raw.expose()));
        needles.push(base64::engine::general_purpose::URL_SAFE_NO_PAD.encode(raw.expose()));
    }
    let mut haystacks = vec![
        ("service log", s.logs()),
        ("audit log", audit.clone()),
        (
            "keystore",
            String::from_utf8_lossy(&std::fs::read(d.join("keystore")).unwrap()).to_string(),
        ),
    ];
    let tables: Vec<String> = sqlx::query("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
        .fetch_all(db.pool())
        .await
        .unwrap()
        .into_iter()
        .map(|r| r.get::<String, _>(0))
        .collect();
    let mut dump = String::new();
    for t in &tables {
        for r in sqlx::query(&format!("SELECT t::text FROM \"{t}\" t"))
            .fetch_all(db.pool())
            .await
            .unwrap()
        {
            dump.push_str(&r.get::<String, _>(0));
            dump.push('\n');
        }
    }
    haystacks.push(("database", dump));
    for (name, hay) in &haystacks {
        assert!(!hay.is_empty(), "{name} is empty");
        for n in &needles {
            assert!(!hay.contains(n.as_str()), "secret material found in the {name}");
        }
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serve_on_pkcs11_softhsm2() {
    use pay_hsm::pkcs11::softhsm2;
    let Some(module) = softhsm2::find_module().filter(|m| m.exists()) else {
        if std::env::var("PAY_HSM_SKIP_PKCS11").is_ok_and(|v| v == "1") {
            eprintln!("PAY_HSM_SKIP_PKCS11=1: skipping");
            return;
        }
        panic!("SoftHSMv2 is not installed: apt-get install softhsm2 (or PAY_HSM_SKIP_PKCS11=1 to skip)");
    };
    let mut s = Served::prepare("").await;
    let d = s.dir.path().to_owned();
    let conf = softhsm2::write_config(&d.join("softhsm")).unwrap();
    softhsm2::init_token(&conf, "payments", "so-pin-0000", "user-pin-1111").unwrap();
    std::fs::write(d.join("hsm.pin"), "user-pin-1111\n").unwrap();
    std::fs::write(d.join("admin.token"), "admin-token-0123456789abcdef").unwrap();
    // The server process reads SOFTHSM2_CONF from its environment.
    s.child_env.push(("SOFTHSM2_CONF".into(), conf.display().to_string()));
    s.hsm_yaml = Some(format!(
        "hsm:\n  backend: pkcs11\n  module: {}\n  token_label: payments\n  pin_file: {}/hsm.pin\n  sessions: 4\n",
        module.display(),
        d.display()
    ));
    s.serve_admin(&d.join("admin.token"));
    s.start("");
    let http = client(&s);
    for pan in PANS {
        let (st, pi) = card_and_charge(&http, &s, pan).await;
        assert_eq!((st, pi["status"].as_str()), (200, Some("succeeded")), "{pi}");
    }
    let cfg = s.config_file();
    let (ok, text) = paymentd(&["keys", "rotate"], &cfg);
    assert!(ok && text.contains("new KEK kek-2"), "{text}");
    let (st, pi) = card_and_charge(&http, &s, PANS[0]).await;
    assert_eq!((st, pi["status"].as_str()), (200, Some("succeeded")), "{pi}");
    let (ok, text) = paymentd(&["keys", "status"], &cfg);
    assert!(ok && text.contains("decrypt_only"), "{text}");
    assert!(
        s.logs().contains("PKCS#11 HSM connected"),
        "the wrap mechanism choice is logged"
    );
    assert!(!s.logs().contains("user-pin-1111"));
    assert!(s.stop().success());
}
