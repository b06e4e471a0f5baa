//! Inspects the corpus's requests (`api`: the 300 payment-API requests, `crs`: the CRS
//! regression cases) for instruction-counting profilers: one warm-up round, then `N` rounds.
//! The cost of the other traffic is the difference of the collected totals for `N` = 1 and
//! `N` = 0: `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect='pay_waf::engine::Waf::inspect' target/release/examples/traffic api 1`.
//! Requests are sent as `tests/corpus.rs` sends them (Content-Length and the form content type
//! added when a body needs them).

use pay_waf::{HttpRequest, Waf, WafConfig};
use std::hint::black_box;

/// A corpus request: method, URI, version, headers and body.
type Req = (String, String, String, Vec<(String, String)>, String);

fn load(name: &str) -> Vec<Req> {
    let path = format!("{}/tests/corpus/{name}", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(&path).unwrap_or_else(|e| panic!("{path}: {e}"));
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            let mut headers: Vec<(String, String)> = v["headers"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, x)| {
                            (
                                k.clone(),
                                x.as_str().map(str::to_owned).unwrap_or_else(|| x.to_string()),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default();
            let (method, body) = (s("method"), s("body"));
            let has = |h: &[(String, String)], n: &str| h.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
            let sends_body = !body.is_empty() || matches!(method.as_str(), "POST" | "PUT" | "PATCH");
            if sends_body && !has(&headers, "content-length") && !has(&headers, "transfer-encoding") {
                headers.push(("Content-Length".into(), body.len().to_string()));
            }
            if !body.is_empty() && !has(&headers, "content-type") {
                headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
            }
            let version = if s("version").is_empty() {
                "HTTP/1.1".into()
            } else {
                s("version")
            };
            (method, s("uri"), version, headers, body)
        })
        .collect()
}

fn main() {
    let set = std::env::args().nth(1).unwrap_or_else(|| "api".into());
    let rounds: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let reqs = load(if set == "crs" {
        "crs-cases.jsonl"
    } else {
        "payment-api-benign.jsonl"
    });
    let waf = Waf::new(WafConfig::payment_api()).expect("engine builds");
    waf.rules().compile_all().expect("rules compile");
    let mut blocked = 0usize;
    for _ in 0..=rounds {
        for (method, uri, version, headers, body) in &reqs {
            let req = HttpRequest {
                method,
                target: uri,
                version,
                headers: headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect(),
                body: body.as_bytes(),
            };
            blocked += usize::from(black_box(waf.inspect(black_box(&req))).blocked);
        }
    }
    println!(
        "{set}: {} requests, {rounds} rounds after one warm-up, {blocked} blocked",
        reqs.len()
    );
}
