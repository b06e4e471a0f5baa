//! What the paymentd process asks of the kernel for itself.

use crate::common::{bin, line_seen};
use std::process::{Command, Stdio};
use std::time::Duration;

/// paymentd turns transparent huge pages off for itself (`disable_transparent_huge_pages` in
/// main.rs): with them, mimalloc's arenas made each first touch fault in and zero 2 MB, and
/// `paymentd dev` took from 250 ms to 1.15 s to be ready on this project's VMs for the same work.
#[test]
fn paymentd_runs_without_transparent_huge_pages() {
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .map(|a| a.port())
        .unwrap();
    let mut child = Command::new(bin())
        .args(["dev", "--port", &port.to_string()])
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let rx = line_seen(child.stdout.take().unwrap(), "API base URL");
    let ready = rx.recv_timeout(Duration::from_secs(30)).is_ok();
    let status = std::fs::read_to_string(format!("/proc/{}/status", child.id())).unwrap_or_default();
    let _ = child.kill();
    let _ = child.wait();
    assert!(ready, "paymentd dev was not ready within 30 s");
    match status.lines().find_map(|l| l.strip_prefix("THP_enabled:")) {
        Some(enabled) => assert_eq!(enabled.trim(), "0", "paymentd runs with transparent huge pages"),
        // Kernels before 6.x do not report it; the setting is then not checkable here.
        None => eprintln!("this kernel does not report THP_enabled in /proc/<pid>/status: not checked"),
    }
}
