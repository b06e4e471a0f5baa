//! Runs every feature against the embedded system and checks the verdicts and the reports; then
//! proves a broken target is reported as FAILED naming the requirement, with a non-zero exit.

use pay_compliance::report::Status;
use pay_compliance::runner::{run, RunOptions};
use pay_compliance::target::{EmbeddedStore, FaultInjection, TargetSpec};
use std::path::Path;

/// One in-process run at a time: scenarios find their run's context through a process-wide slot.
static SERIAL: tokio::sync::Mutex<()> = tokio::sync::Mutex::const_new(());

fn options(out: &Path, store: EmbeddedStore, tags: Option<&str>, fault: FaultInjection) -> RunOptions {
    let root = pay_compliance::repo_root();
    RunOptions {
        features: root.join("features"),
        catalog: root.join("compliance/controls.yaml"),
        target: TargetSpec::Embedded { store },
        tags: tags.map(str::to_owned),
        out: out.to_path_buf(),
        include_pending: false,
        concurrency: 4,
        fault,
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn every_feature_passes_embedded_and_a_broken_target_fails() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let out = dir.path().join("all");
    let report = run(options(&out, EmbeddedStore::Memory, None, FaultInjection::None))
        .await
        .expect("run");
    let failed: Vec<String> = report
        .scenarios
        .iter()
        .filter(|s| s.status == Status::Failed)
        .map(|s| format!("{}: {}", s.name, s.message.clone().unwrap_or_default()))
        .collect();
    println!("{}", report.table());
    println!("pcicheck embedded: {}", report.summary_line());
    assert!(failed.is_empty(), "failed scenarios: {failed:#?}");
    assert!(report.totals.passed >= 25, "{}", report.summary_line());
    assert_eq!(
        report.totals.pending,
        0,
        "nothing is pending: {}",
        report.summary_line()
    );
    assert_eq!(
        report.totals.not_run,
        0,
        "everything runs embedded: {}",
        report.summary_line()
    );
    // Nothing pending is ever reported as passed.
    for s in &report.scenarios {
        if s.tags.iter().any(|t| t == "pending") {
            assert_eq!(s.status, Status::Pending, "{}", s.name);
        }
    }
    for r in &report.requirements {
        assert_ne!(r.status, Status::Failed, "{}", r.id);
        assert!(r.missing_scenarios.is_empty(), "{}: {:?}", r.id, r.missing_scenarios);
    }
    assert!(
        report.unknown_requirements.is_empty(),
        "{:?}",
        report.unknown_requirements
    );
    let status = |id: &str| report.requirements.iter().find(|r| r.id == id).unwrap().status;
    for id in [
        "3.2.1", "3.3.1", "3.4.1", "3.5.1", "3.6.1", "4.2.1", "6.2.4", "6.4.1", "6.4.2", "7.2.1", "7.2.2", "8.3.1",
        "8.3.4",
    ] {
        assert_eq!(status(id), Status::Passed, "{id}");
    }
    for id in ["10.2.1", "10.2.2", "10.3.2", "3.7.4", "3.7.5", "3.7.6", "3.6.1"] {
        assert_eq!(status(id), Status::Passed, "{id}");
    }
    let evidence = |name: &str| {
        report
            .scenarios
            .iter()
            .find(|s| s.name == name)
            .unwrap_or_else(|| panic!("no scenario {name}"))
            .evidence
            .join("\n")
    };
    // The audit scenarios read the node's real audit log and ran its real verifier.
    let access = evidence("Access to card data is recorded in the audit log");
    assert!(
        access.contains("action `detokenize`") && access.contains("origin `payments`"),
        "{access}"
    );
    let auth = evidence("Failed authentications are recorded in the audit log");
    assert!(
        auth.contains("action `api.auth`") && auth.contains("outcome failure"),
        "{auth}"
    );
    assert!(!auth.contains("sk_test_pcicheckWrongKey1234567890abcd"), "{auth}");
    let tamper = evidence("Tampering with the audit log is detected");
    assert!(tamper.contains("audit log OK:"), "verified before: {tamper}");
    assert!(
        tamper.contains("audit log broken at line") && tamper.contains("the verifier names the altered line"),
        "{tamper}"
    );
    // Key management went through the admin endpoint a custodian uses.
    let rotation = evidence("The key-encryption key is rotated while cards stay readable");
    assert!(
        rotation.contains("/admin/v1/keys/rotate") && rotation.contains("wrapped by the new KEK version"),
        "{rotation}"
    );
    let retired = evidence("A retired key-encryption key no longer protects any record");
    assert!(retired.contains("is now retired"), "{retired}");
    let unseal = evidence("Card operations need the master key reconstructed from custodian shares");
    assert!(
        unseal.contains("still sealed, 1 of 2") && unseal.contains("→ 503") && unseal.contains("→ unsealed"),
        "{unseal}"
    );
    assert!(
        !unseal.contains("pay-share-v1"),
        "shares never reach the evidence: {unseal}"
    );
    // Evidence was captured: the log scan read real lines, the database scan real records.
    let masking = report
        .scenarios
        .iter()
        .find(|s| s.name == "Card numbers are masked in every API response and log line")
        .unwrap();
    assert!(
        masking
            .evidence
            .iter()
            .any(|e| e.starts_with("scanned ") && e.contains("log lines")),
        "{:?}",
        masking.evidence
    );
    // Every report file is there and well formed.
    for f in ["junit.xml", "cucumber.json", "results.json", "report.md", "report.html"] {
        let p = out.join(f);
        assert!(p.metadata().map(|m| m.len() > 100).unwrap_or(false), "{f} written");
    }
    let cucumber: serde_json::Value =
        serde_json::from_str(&std::fs::read_to_string(out.join("cucumber.json")).unwrap()).unwrap();
    assert!(
        cucumber.as_array().map(|a| a.len() >= 6).unwrap_or(false),
        "one entry per feature"
    );
    let junit = std::fs::read_to_string(out.join("junit.xml")).unwrap();
    assert!(
        junit.contains("<testsuites") && junit.contains("<testcase"),
        "{}",
        &junit[..200.min(junit.len())]
    );
    let md = std::fs::read_to_string(out.join("report.md")).unwrap();
    assert!(md.contains("| 3.4.1 |") && md.contains("| 10.3.2 |") && md.contains("**PASSED**"));
    assert!(!md.contains("**PENDING**"), "nothing pending in the report");

    // The negative check: a target whose logs carry the raw card number fails 3.4.1, by name.
    let bad = dir.path().join("broken");
    let report = run(options(
        &bad,
        EmbeddedStore::Memory,
        Some("@pci-3.4.1"),
        FaultInjection::RawPanInLogs,
    ))
    .await
    .expect("run");
    assert!(report.failed(), "{}", report.summary_line());
    let r = report.requirements.iter().find(|r| r.id == "3.4.1").unwrap();
    assert_eq!(r.status, Status::Failed);
    let s = report
        .scenarios
        .iter()
        .find(|s| s.name == "Card numbers are masked in every API response and log line")
        .unwrap();
    assert_eq!(s.status, Status::Failed);
    let msg = s.message.clone().unwrap_or_default();
    assert!(msg.contains("PCI DSS 3.4.1"), "{msg}");
    assert!(
        !msg.contains("4242424242424242"),
        "the failure never repeats the PAN: {msg}"
    );
    let md = std::fs::read_to_string(bad.join("report.md")).unwrap();
    assert!(md.contains("| 3.4.1 |") && md.contains("**FAILED**"));
}

#[test]
fn the_binary_exits_non_zero_when_a_control_fails() {
    let dir = tempfile::tempdir().unwrap();
    let bin = env!("CARGO_BIN_EXE_pcicheck");
    let root = pay_compliance::repo_root();
    let run = |fault: &str| {
        std::process::Command::new(bin)
            .current_dir(&root)
            .args(["run", "--tags", "@pci-3.4.1 and not @pending", "--out"])
            .arg(dir.path().join(fault))
            .args(["--fault-injection", fault])
            .output()
            .unwrap()
    };
    let good = run("none");
    let text = String::from_utf8_lossy(&good.stdout);
    assert!(
        good.status.success(),
        "{text}\n{}",
        String::from_utf8_lossy(&good.stderr)
    );
    assert!(text.contains("pcicheck: 2 passed, 0 failed"), "{text}");
    let broken = run("raw-pan-in-logs");
    let text = String::from_utf8_lossy(&broken.stdout);
    assert_eq!(broken.status.code(), Some(1), "{text}");
    assert!(text.contains("FAILED Card numbers are masked"), "{text}");
    assert!(text.contains("PCI DSS 3.4.1 violated"), "{text}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn stored_data_checks_pass_on_postgresql() {
    let _serial = SERIAL.lock().await;
    let dir = tempfile::tempdir().unwrap();
    let report = run(options(
        dir.path(),
        EmbeddedStore::Postgres(None),
        Some("@pci-req-3 and not @pending"),
        FaultInjection::None,
    ))
    .await
    .expect("run");
    println!("pcicheck embedded on PostgreSQL: {}", report.summary_line());
    assert_eq!(report.totals.failed, 0, "{:#?}", report.scenarios);
    let at_rest = report
        .scenarios
        .iter()
        .find(|s| s.name == "Stored card numbers are ciphertext with a keyed fingerprint")
        .unwrap();
    assert_eq!(at_rest.status, Status::Passed);
    assert!(
        at_rest
            .evidence
            .iter()
            .any(|e| e.contains("row_to_json") && e.contains("vault_cards")),
        "{:?}",
        at_rest.evidence
    );
    // Rotation and retirement re-wrap and count the data keys stored in PostgreSQL.
    for name in [
        "The key-encryption key is rotated while cards stay readable",
        "A retired key-encryption key no longer protects any record",
        "Card operations need the master key reconstructed from custodian shares",
    ] {
        let s = report.scenarios.iter().find(|s| s.name == name).unwrap();
        assert_eq!(s.status, Status::Passed, "{name}: {:?}", s.message);
    }
    let rotation = report
        .scenarios
        .iter()
        .find(|s| s.name == "The key-encryption key is rotated while cards stay readable")
        .unwrap();
    assert!(
        rotation
            .evidence
            .iter()
            .any(|e| e.contains("PostgreSQL") && e.contains("data key record(s), wrapped by")),
        "{:?}",
        rotation.evidence
    );
}

#[test]
fn the_catalog_and_the_features_agree() {
    let root = pay_compliance::repo_root();
    let catalog = pay_compliance::catalog::Catalog::load(&root.join("compliance/controls.yaml")).unwrap();
    let listed = pay_compliance::runner::list_scenarios(&root.join("features")).unwrap();
    assert!(listed.len() >= 20);
    for l in &listed {
        let ids = pay_compliance::catalog::requirement_ids(&l.tags);
        assert!(!ids.is_empty(), "{} has no @pci-<id> tag", l.name);
        for id in &ids {
            let r = catalog
                .requirement(id)
                .unwrap_or_else(|| panic!("{}: @pci-{id} is not in controls.yaml", l.name));
            assert!(
                r.scenarios.contains(&l.name),
                "controls.yaml {id} does not list `{}`",
                l.name
            );
            assert!(
                l.tags.contains(&format!("pci-req-{}", r.principal)),
                "{} lacks @pci-req-{}",
                l.name,
                r.principal
            );
        }
    }
    for r in &catalog.requirements {
        assert!(!r.scenarios.is_empty(), "{} has no scenario", r.id);
        for name in &r.scenarios {
            let l = listed
                .iter()
                .find(|l| &l.name == name)
                .unwrap_or_else(|| panic!("{}: no feature defines `{name}`", r.id));
            assert!(
                pay_compliance::catalog::requirement_ids(&l.tags).contains(&r.id),
                "`{name}` is listed under {} but not tagged @pci-{}",
                r.id,
                r.id
            );
        }
    }
}
