//! The same features against a deployment: the real `paymentd serve` binary over TLS on
//! PostgreSQL, reached by URL with a merchant key, its database, its log file, its audit log
//! and its admin endpoint, as a compliance team would run pcicheck against staging. The node
//! is not started sealed, so the unseal scenario (which needs a sealed start and custodian
//! share files) is reported NOT RUN, never passed.

use pay_store::testing::TestDatabase;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// `paymentd` from this test's own profile directory (`target/debug` or `target/release`), built
/// in that profile if this test run did not build it already.
fn paymentd_bin() -> PathBuf {
    let exe = std::env::current_exe().unwrap();
    let dir = exe.parent().and_then(Path::parent).unwrap().to_path_buf();
    let bin = dir.join("paymentd");
    if !bin.exists() {
        let mut args = vec!["build", "-p", "paymentd", "--bin", "paymentd"];
        if dir.file_name().is_some_and(|n| n == "release") {
            args.push("--release");
        }
        let status = Command::new(env!("CARGO"))
            .args(&args)
            .current_dir(pay_compliance::repo_root())
            .status()
            .unwrap();
        assert!(status.success(), "building paymentd");
    }
    assert!(bin.exists(), "{} exists", bin.display());
    bin
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Serve {
    child: Child,
}

impl Drop for Serve {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feature_runs_against_paymentd_serve_on_postgresql() {
    let bin = paymentd_bin();
    let db = TestDatabase::create().await.expect("test PostgreSQL");
    let dir = tempfile::tempdir().unwrap();
    let d = dir.path();
    // A private CA and a server certificate for 127.0.0.1.
    let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
    ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    ca_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "pcicheck test CA");
    let ca_key = rcgen::KeyPair::generate().unwrap();
    let ca = ca_params.self_signed(&ca_key).unwrap();
    let leaf_key = rcgen::KeyPair::generate().unwrap();
    let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
        .unwrap()
        .signed_by(&leaf_key, &ca, &ca_key)
        .unwrap();
    std::fs::write(d.join("ca.crt"), ca.pem()).unwrap();
    std::fs::write(d.join("tls.crt"), leaf.pem()).unwrap();
    std::fs::write(d.join("tls.key"), leaf_key.serialize_pem()).unwrap();
    std::fs::write(d.join("master.key"), hex::encode([9u8; 32])).unwrap();
    let out = Command::new(&bin)
        .args(["keys", "init-service-keys", "--dir"])
        .arg(d.join("service-keys"))
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let out = Command::new(&bin)
        .args([
            "keys",
            "create-api-key",
            "--database-url",
            &db.url,
            "--name",
            "Compliance test merchant",
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{}", String::from_utf8_lossy(&out.stderr));
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let field = |name: &str| {
        text.lines()
            .find_map(|l| l.strip_prefix(name))
            .map(|s| s.trim().to_owned())
            .unwrap_or_else(|| panic!("{name} printed: {text}"))
    };
    let secret = field("secret key:");
    let publishable = field("publishable key:");
    let port = free_port();
    let admin_port = free_port();
    let log = d.join("paymentd.log");
    let audit = d.join("audit.log");
    std::fs::write(d.join("admin.token"), format!("{}\n", hex::encode([5u8; 24]))).unwrap();
    let config = format!(
        "listen:\n  public: 127.0.0.1:{port}\ntls:\n  cert_file: {d}/tls.crt\n  key_file: {d}/tls.key\ndatabase:\n  url: {url}\n  max_connections: 8\nhsm:\n  backend: soft\n  keystore: {d}/keystore\n  master_key_file: {d}/master.key\nservice_keys:\n  dir: {d}/service-keys\nlogging:\n  level: info\n  file: {log}\nadmin:\n  listen: 127.0.0.1:{admin_port}\n  token_file: {d}/admin.token\naudit:\n  file: {audit}\n",
        d = d.display(),
        url = db.url,
        log = log.display(),
        audit = audit.display(),
    );
    std::fs::write(d.join("paymentd.yaml"), config).unwrap();
    let mut child = Command::new(&bin)
        .args(["serve", "--config"])
        .arg(d.join("paymentd.yaml"))
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let stdout = child.stdout.take().unwrap();
    let serve = Serve { child };
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains("paymentd ready") {
                let _ = tx.send(());
            }
        }
    });
    // `paymentd ready` goes to the log file when one is configured; poll either.
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        if rx.try_recv().is_ok() || std::fs::read_to_string(&log).is_ok_and(|t| t.contains("paymentd ready")) {
            break;
        }
        assert!(Instant::now() < deadline, "paymentd not ready within 30 s");
        std::thread::sleep(Duration::from_millis(100));
    }

    let reports = d.join("reports");
    let out = Command::new(env!("CARGO_BIN_EXE_pcicheck"))
        .current_dir(pay_compliance::repo_root())
        .args(["run", "--base-url", &format!("https://127.0.0.1:{port}")])
        .args(["--api-key", &secret, "--publishable-key", &publishable])
        .args(["--database-url", &db.url])
        .arg("--log-file")
        .arg(&log)
        .arg("--ca-file")
        .arg(d.join("ca.crt"))
        .args(["--admin-url", &format!("http://127.0.0.1:{admin_port}")])
        .arg("--admin-token-file")
        .arg(d.join("admin.token"))
        .arg("--audit-log")
        .arg(&audit)
        .arg("--out")
        .arg(&reports)
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let summary = stdout
        .lines()
        .find(|l| l.starts_with("pcicheck: "))
        .unwrap_or("")
        .to_owned();
    println!(
        "{}",
        stdout
            .lines()
            .skip_while(|l| !l.starts_with("req "))
            .collect::<Vec<_>>()
            .join("\n")
    );
    assert!(
        out.status.success(),
        "{stdout}\n{}",
        String::from_utf8_lossy(&out.stderr)
    );
    drop(serve);
    let results: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(reports.join("results.json")).unwrap()).unwrap();
    assert_eq!(results["totals"]["failed"], 0, "{summary}");
    assert!(results["totals"]["passed"].as_u64().unwrap() >= 23, "{summary}");
    assert!(results["target"]
        .as_str()
        .unwrap()
        .contains("deployed system at https://127.0.0.1"));
    // Not applicable to this deployment: the scenario that acts as an internal service, and the
    // unseal scenario (the node was not started sealed and no share files were given).
    let scenarios = results["scenarios"].as_array().unwrap();
    let mut not_run: Vec<&str> = scenarios
        .iter()
        .filter(|s| s["status"] == "NOT_RUN")
        .map(|s| s["name"].as_str().unwrap())
        .collect();
    not_run.sort();
    assert_eq!(
        not_run,
        vec![
            "Card operations need the master key reconstructed from custodian shares",
            "Only the payment service may have the tokenizer decrypt a card",
        ]
    );
    let by_name = |name: &str| scenarios.iter().find(|s| s["name"] == name).unwrap();
    let unseal = by_name("Card operations need the master key reconstructed from custodian shares");
    assert!(
        unseal["message"].as_str().unwrap_or("").contains("--unseal-share-file"),
        "{unseal}"
    );
    assert_eq!(results["totals"]["pending"], 0, "{summary}");
    // The audit and key-lifecycle scenarios ran against the deployment's own audit log and
    // admin endpoint.
    for name in [
        "Access to card data is recorded in the audit log",
        "Failed authentications are recorded in the audit log",
        "Tampering with the audit log is detected",
        "The key-encryption key is rotated while cards stay readable",
        "A retired key-encryption key no longer protects any record",
    ] {
        let s = by_name(name);
        assert_eq!(s["status"], "PASSED", "{s}");
    }
    let tamper = by_name("Tampering with the audit log is detected");
    let evidence: Vec<&str> = tamper["evidence"]
        .as_array()
        .unwrap()
        .iter()
        .filter_map(|e| e.as_str())
        .collect();
    assert!(
        evidence
            .iter()
            .any(|e| e.contains("audit log broken at line") && e.contains("edited")),
        "{evidence:#?}"
    );
    // The deployment's own audit trail was not damaged: only a copy was altered.
    let out = Command::new(&bin)
        .args(["audit", "verify"])
        .arg(&audit)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The log checks read the deployment's real log file.
    let masking = by_name("Card numbers are masked in every API response and log line");
    assert_eq!(masking["status"], "PASSED");
    assert!(
        masking["evidence"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e.as_str().unwrap().contains("paymentd.log")),
        "{masking}"
    );
    println!("pcicheck against paymentd serve: {summary}");
}
