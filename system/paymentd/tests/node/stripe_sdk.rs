//! The official `stripe` Python SDK, unchanged, against `paymentd serve` on PostgreSQL over TLS.

use crate::common::{python, Served};
use std::process::Command;

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_official_stripe_sdk_takes_payments() {
    let mut s = Served::prepare("").await;
    s.start("");
    let script = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../../tests/sdk/stripe_flows.py");
    let out = Command::new(python())
        .arg(&script)
        .env("PAY_API_BASE", &s.base)
        .env("PAY_SECRET_KEY", &s.secret)
        .env("PAY_CA_BUNDLE", s.ca_file())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert!(
        out.status.success(),
        "SDK flows failed:\n{stdout}\n{stderr}\n--- paymentd log tail ---\n{}",
        tail(&s.logs())
    );
    assert!(stdout.contains("all checks passed"), "{stdout}");
    // The logs never contain a card number, even though the SDK sent many.
    let logs = s.logs();
    assert!(logs.contains("\"level\""), "JSON logs were written");
    for pan in ["4242424242424242", "5555555555554444", "4000000000000002"] {
        assert!(!logs.contains(pan), "card number in the logs");
    }
    // SIGTERM: a clean, graceful exit.
    let status = s.stop();
    assert!(status.success(), "paymentd exited with {status}");
}

fn tail(s: &str) -> String {
    let lines: Vec<&str> = s.lines().collect();
    lines[lines.len().saturating_sub(30)..].join("\n")
}
