//! The WAF at the public address of a local node (the `paymentd dev` layout, in-memory
//! stores): attacks get 403 with a rule id, a Stripe-style payment flow with punctuation,
//! quotes and unicode passes with its parameters intact, and a client cannot pick its own
//! client IP or request id.

use bytes::Bytes;
use http::Method;
use pay_core::Env;
use pay_net::{HttpClient, TcpTransport};
use pay_store::memory::MemoryBackend;
use paymentd::local::{start_local, LocalNode, LocalOptions};
use paymentd::wiring::Tuning;
use std::sync::Arc;
use std::time::Duration;

async fn node(tuning: Tuning) -> LocalNode {
    let env = Env::real("waf-test");
    let hsm = Arc::new(pay_hsm::SoftHsm::new_ephemeral(env.entropy.clone(), env.clock.clone()));
    start_local(LocalOptions {
        public_port: 0,
        env,
        store: Arc::new(MemoryBackend::new()),
        acquirer_store: Arc::new(MemoryBackend::new()),
        hsm,
        tuning,
        create_account: true,
        operator: Default::default(),
    })
    .await
    .expect("local node starts")
}

struct Client {
    http: HttpClient,
    base: String,
    auth: String,
}

impl Client {
    fn new(n: &LocalNode) -> Client {
        Client {
            http: HttpClient::new(Arc::new(TcpTransport)),
            base: n.public_url.clone(),
            auth: format!("Bearer {}", n.secret_key.as_ref().expect("secret key").expose()),
        }
    }

    async fn call(
        &self,
        method: Method,
        path: &str,
        form: &str,
        extra: &[(&str, &str)],
    ) -> (u16, serde_json::Value, String) {
        let mut headers = vec![
            ("authorization", self.auth.as_str()),
            ("content-type", "application/x-www-form-urlencoded"),
            ("user-agent", "Stripe/v1 PythonBindings/16.1.0"),
        ];
        headers.extend_from_slice(extra);
        let r = self
            .http
            .request(
                method,
                &format!("{}{}", self.base, path),
                &headers,
                Bytes::from(form.to_owned()),
                Duration::from_secs(20),
            )
            .await
            .expect("request reaches the WAF");
        let rid = r
            .headers
            .get("request-id")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_owned();
        (
            r.status.as_u16(),
            serde_json::from_slice(&r.body).unwrap_or(serde_json::Value::Null),
            rid,
        )
    }
}

fn enc(s: &str) -> String {
    let mut out = String::new();
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'_' | b'.' | b'*' => out.push(b as char),
            b' ' => out.push('+'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

fn assert_blocked(status: u16, body: &serde_json::Value, what: &str) {
    assert_eq!(status, 403, "{what} was not blocked: {body}");
    let e = &body["error"];
    assert_eq!(e["code"], "request_blocked", "{what}: {body}");
    assert_eq!(e["type"], "invalid_request_error");
    assert_eq!(e["message"], "Request blocked");
    assert!(e["rule_id"].as_u64().is_some_and(|id| id > 0), "{what}: {body}");
    assert!(
        e["request_id"].as_str().is_some_and(|r| r.starts_with("req_")),
        "{what}: {body}"
    );
    assert_eq!(
        e.as_object().map(|o| o.len()),
        Some(5),
        "the block reveals nothing more: {body}"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attacks_are_blocked_and_payments_pass() {
    let n = node(Tuning::default()).await;
    let c = Client::new(&n);

    // SQL injection, XSS and path traversal at the public address.
    let (s, b, _) = c
        .call(Method::GET, "/v1/customers?limit=1%27%20OR%201%3D1--%20", "", &[])
        .await;
    assert_blocked(s, &b, "SQL injection");
    let (s, b, _) = c
        .call(
            Method::POST,
            "/v1/customers",
            &format!(
                "email=a%40b.test&name={}",
                enc("<script>alert(document.cookie)</script>")
            ),
            &[],
        )
        .await;
    assert_blocked(s, &b, "XSS");
    let (s, b, _) = c
        .call(Method::GET, "/v1/customers/..%2f..%2f..%2fetc%2fpasswd", "", &[])
        .await;
    assert_blocked(s, &b, "path traversal");
    let (s, b, _) = c
        .call(
            Method::GET,
            "/v1/customers?q=%252e%252e%252f%252e%252e%252fetc%252fpasswd",
            "",
            &[],
        )
        .await;
    assert_blocked(s, &b, "double-encoded traversal");
    let metrics = n.metrics.render();
    assert!(metrics.contains("waf_blocked_total"), "blocks are counted");

    // A normal Stripe-style flow with punctuation, quotes and unicode passes untouched.
    let name = "Zoë O'Brien-Łukasz";
    let (s, pm, _) = c
        .call(
            Method::POST,
            "/v1/payment_methods",
            &format!(
                "type=card&card[number]=4242424242424242&card[exp_month]=12&card[exp_year]=2034&card[cvc]=123&billing_details[name]={}",
                enc(name)
            ),
            &[],
        )
        .await;
    assert_eq!(s, 200, "payment method: {pm}");
    assert_eq!(pm["billing_details"]["name"], name);
    let pm_id = pm["id"].as_str().expect("pm id").to_owned();
    let note = "He said \"ship it\"; O'Brien's <b>gift</b> — 50% off (size: M/L) & more";
    let description = "Order #1234 - 2x T-shirt (size: M/L)";
    let (s, pi, rid) = c
        .call(
            Method::POST,
            "/v1/payment_intents",
            &format!(
                "amount=2000&currency=usd&payment_method={pm_id}&confirm=true&description={}&metadata[note]={}&metadata[order_id]=A-17",
                enc(description),
                enc(note)
            ),
            &[("idempotency-key", "waf-test-1")],
        )
        .await;
    assert_eq!(s, 200, "payment intent: {pi}");
    assert_eq!(pi["status"], "succeeded");
    assert_eq!(pi["metadata"]["note"], note, "the body reached the API byte for byte");
    assert_eq!(pi["description"], description);
    assert!(rid.starts_with("req_"));

    // JSON bodies pass too, and the same id reads back.
    let id = pi["id"].as_str().expect("pi id");
    let (s, got, _) = c.call(Method::GET, &format!("/v1/payment_intents/{id}"), "", &[]).await;
    assert_eq!(s, 200);
    assert_eq!(got["metadata"]["note"], note);

    // A client-chosen request id is not taken.
    let (s, _, rid) = c
        .call(
            Method::GET,
            "/v1/customers?limit=1",
            "",
            &[("x-request-id", "req_spoofed0000000000000000")],
        )
        .await;
    assert_eq!(s, 200);
    assert_ne!(rid, "req_spoofed0000000000000000");
    n.node.shutdown().await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn spoofed_forwarded_for_is_ignored() {
    // 203.0.113.0/24 is denied: a client on loopback claiming to be 203.0.113.9 is still
    // judged by its connection, and a client really on a denied network is refused.
    let mut proxy = pay_waf::proxy::ProxyConfig::new(String::new());
    proxy.deny = vec!["203.0.113.0/24".parse().expect("cidr")];
    let n = node(Tuning {
        waf_proxy: Some(proxy),
        ..Tuning::default()
    })
    .await;
    let c = Client::new(&n);
    let (s, b, _) = c
        .call(
            Method::GET,
            "/v1/customers?limit=1",
            "",
            &[("x-forwarded-for", "203.0.113.9")],
        )
        .await;
    assert_eq!(s, 200, "spoofed X-Forwarded-For was believed: {b}");
    n.node.shutdown().await;

    let mut proxy = pay_waf::proxy::ProxyConfig::new(String::new());
    proxy.deny = vec!["127.0.0.0/8".parse().expect("cidr")];
    let n = node(Tuning {
        waf_proxy: Some(proxy),
        ..Tuning::default()
    })
    .await;
    let c = Client::new(&n);
    let (s, b, _) = c.call(Method::GET, "/v1/customers?limit=1", "", &[]).await;
    assert_blocked(s, &b, "denied network");
    assert_eq!(b["error"]["rule_id"], pay_waf::proxy::IP_DENIED);
    n.node.shutdown().await;
}
