//! Webhooks end to end: endpoints created through the public API, payments made, and every
//! delivery verified by a real merchant receiver using the official `stripe` SDK
//! (`stripe.Webhook.construct_event`) and the `standardwebhooks` package. A tampered body and a
//! stale timestamp are rejected by both.

use integration::stack_in_memory;
use pay_core::SecretString;
use paymentd::wiring::Tuning;
use std::collections::{BTreeMap, BTreeSet};
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

fn python() -> PathBuf {
    if let Ok(p) = std::env::var("PAY_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the stripe SDK: run scripts/test.sh (it creates .venv) or set PAY_PYTHON"
    );
    venv
}

struct Receiver {
    child: Child,
    port: u16,
    log: PathBuf,
}

impl Drop for Receiver {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn start_receiver(dir: &Path) -> Receiver {
    let script = Path::new(env!("CARGO_MANIFEST_DIR")).join("sdk/webhook_receiver.py");
    let log = dir.join("deliveries.jsonl");
    let mut child = Command::new(python())
        .arg(&script)
        .arg(dir.join("secret"))
        .arg(&log)
        .stdout(Stdio::piped())
        .stderr(Stdio::inherit())
        .spawn()
        .expect("start the Python receiver");
    let mut line = String::new();
    BufReader::new(child.stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let port = line
        .trim()
        .strip_prefix("port ")
        .and_then(|p| p.parse().ok())
        .unwrap_or_else(|| panic!("receiver did not start: {line:?}"));
    Receiver { child, port, log }
}

fn deliveries(log: &Path) -> Vec<serde_json::Value> {
    std::fs::read_to_string(log)
        .unwrap_or_default()
        .lines()
        .filter_map(|l| serde_json::from_str(l).ok())
        .collect()
}

async fn replay(port: u16, headers: &BTreeMap<String, String>, body: &str) -> u16 {
    let http = pay_net::HttpClient::new(std::sync::Arc::new(pay_net::TcpTransport));
    let hs: Vec<(&str, &str)> = headers
        .iter()
        .filter(|(k, _)| k.starts_with("webhook-") || *k == "stripe-signature" || *k == "content-type")
        .map(|(k, v)| (k.as_str(), v.as_str()))
        .collect();
    http.request(
        http::Method::POST,
        &format!("http://127.0.0.1:{port}/hooks"),
        &hs,
        bytes::Bytes::from(body.to_owned()),
        Duration::from_secs(10),
    )
    .await
    .unwrap()
    .status
    .as_u16()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deliveries_verify_with_the_official_libraries() {
    let dir = tempfile::tempdir().unwrap();
    let receiver = start_receiver(dir.path());
    let stack = stack_in_memory(Tuning::default()).await;
    let c = &stack.client;

    let url = format!("http://127.0.0.1:{}/hooks", receiver.port);
    let made = c
        .post(
            "/v1/webhook_endpoints",
            &[
                ("url", url.as_str()),
                ("enabled_events[]", "*"),
                ("description", "receiver"),
            ],
            Some("we-create-1"),
        )
        .await;
    assert_eq!(made.status, 200, "{}", made.json);
    assert_eq!(made.str("/object"), Some("webhook_endpoint"));
    let secret = made.str("/secret").expect("secret on create").to_owned();
    assert!(secret.starts_with("whsec_"));
    std::fs::write(dir.path().join("secret"), &secret).unwrap();
    let we = made.str("/id").unwrap().to_owned();

    // The secret is shown once: not on retrieve, not in the list.
    let got = c.get(&format!("/v1/webhook_endpoints/{we}")).await;
    assert_eq!(got.status, 200);
    assert!(got.json.get("secret").is_none());
    let list = c.get("/v1/webhook_endpoints").await;
    assert_eq!(list.str("/object"), Some("list"));
    assert!(!String::from_utf8_lossy(&list.raw).contains("whsec_"));
    // Bad input is refused with Stripe's error shape.
    let bad = c
        .post(
            "/v1/webhook_endpoints",
            &[("url", "ftp://x"), ("enabled_events[]", "*")],
            None,
        )
        .await;
    assert_eq!((bad.status, bad.str("/error/param")), (400, Some("url")));

    // Payments generate events.
    for _ in 0..3 {
        let pm = c.card("4242424242424242").await;
        let pi = c
            .post(
                "/v1/payment_intents",
                &[
                    ("amount", "2500"),
                    ("currency", "usd"),
                    ("payment_method", &pm),
                    ("confirm", "true"),
                ],
                None,
            )
            .await;
        assert_eq!(pi.str("/status"), Some("succeeded"), "{}", pi.json);
    }

    // Every event of the account arrives, verified by both libraries, once applied.
    let events = c.get("/v1/events?limit=100").await;
    let want: BTreeSet<String> = events.json["data"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["id"].as_str().unwrap().to_owned())
        .collect();
    assert!(want.len() >= 6, "payments produce events: {}", want.len());
    let start = Instant::now();
    let applied: BTreeSet<String> = loop {
        let got: BTreeSet<String> = deliveries(&receiver.log)
            .iter()
            .filter(|d| d["applied"] == true)
            .map(|d| d["id"].as_str().unwrap_or("").to_owned())
            .collect();
        if want.is_subset(&got) || start.elapsed() > Duration::from_secs(30) {
            break got;
        }
        tokio::time::sleep(Duration::from_millis(200)).await;
    };
    assert!(
        want.is_subset(&applied),
        "missing deliveries: {:?}",
        want.difference(&applied)
    );
    let all = deliveries(&receiver.log);
    for d in &all {
        assert_eq!(
            d["stripe_ok"], true,
            "stripe.Webhook.construct_event rejected {}",
            d["id"]
        );
        assert_eq!(d["standard_ok"], true, "standardwebhooks rejected {}", d["id"]);
        assert_eq!(d["sdk_event_type"], d["type"]);
    }

    // A tampered body fails both libraries.
    let sample = all
        .iter()
        .find(|d| d["type"] == "payment_intent.succeeded")
        .expect("a success event");
    let headers: BTreeMap<String, String> = serde_json::from_value(sample["headers"].clone()).unwrap();
    let body = sample["body"].as_str().unwrap().to_owned();
    assert_eq!(
        replay(receiver.port, &headers, &body).await,
        200,
        "an exact replay verifies (and dedupes)"
    );
    let tampered = body.replacen("2500", "9500", 1);
    assert_ne!(tampered, body);
    assert_eq!(
        replay(receiver.port, &headers, &tampered).await,
        400,
        "tampered body accepted"
    );
    // A correctly signed but stale delivery (an hour old) fails both libraries' tolerance.
    let secret = SecretString::new(secret);
    let old = pay_core::Clock::now(&pay_core::SystemClock).unix_secs() - 3600;
    let mut stale = headers.clone();
    stale.insert(
        "stripe-signature".into(),
        pay_webhooks::signing::stripe_signature_header(&[&secret], old, body.as_bytes()),
    );
    stale.insert("webhook-timestamp".into(), old.to_string());
    stale.insert(
        "webhook-signature".into(),
        pay_webhooks::signing::standard_signature_header(&[&secret], &headers["webhook-id"], old, body.as_bytes())
            .unwrap(),
    );
    assert_eq!(
        replay(receiver.port, &stale, &body).await,
        400,
        "stale timestamp accepted"
    );
    let last = deliveries(&receiver.log);
    let last = last.last().unwrap();
    assert_eq!(
        (last["stripe_ok"].clone(), last["standard_ok"].clone()),
        (false.into(), false.into())
    );

    // Resend through the API: delivered again, not applied twice.
    let ev = sample["id"].as_str().unwrap();
    let r = c
        .post(
            &format!("/v1/webhook_endpoints/{we}/resend"),
            &[("event", ev)],
            Some("resend-1"),
        )
        .await;
    assert_eq!(r.status, 200, "{}", r.json);
    let start = Instant::now();
    loop {
        let n = deliveries(&receiver.log)
            .iter()
            .filter(|d| d["id"] == ev && d["status"] == 200)
            .count();
        if n >= 3 {
            break;
        }
        assert!(start.elapsed() < Duration::from_secs(20), "resend not delivered");
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    let applied_count = deliveries(&receiver.log)
        .iter()
        .filter(|d| d["id"] == ev && d["applied"] == true)
        .count();
    assert_eq!(applied_count, 1, "a receiver deduping by event id applies it once");

    // Delete: gone.
    let del = c
        .raw(
            http::Method::DELETE,
            &format!("/v1/webhook_endpoints/{we}"),
            bytes::Bytes::new(),
            &[],
        )
        .await;
    assert_eq!(del.status, 200);
    assert_eq!(del.json["deleted"], true);
    assert_eq!(c.get(&format!("/v1/webhook_endpoints/{we}")).await.status, 404);
    stack.node.node.shutdown().await;
}
