//! Explains the verdict on corpus cases: `cargo run --release -p pay-waf --example explain -- <id>...`
//! prints each matching rule with its score and the value it matched (a developer tool for
//! tuning rule semantics; never run on real traffic, it prints request contents).

use pay_waf::{HttpRequest, Waf, WafConfig};

fn main() {
    // `WAF_EXPLAIN_CONFIG=crs`: the Core Rule Set's own defaults (no exclusions, no tuned
    // scores), to compare rule semantics with ModSecurity running the same rules.
    let config = match std::env::var("WAF_EXPLAIN_CONFIG").as_deref() {
        Ok("crs") => WafConfig {
            allowed_methods: ["GET", "HEAD", "POST", "OPTIONS"]
                .iter()
                .map(|s| (*s).to_owned())
                .collect(),
            ..WafConfig::default()
        },
        _ => WafConfig::payment_api(),
    };
    let waf = Waf::new(config).expect("engine builds");
    let ids: Vec<String> = std::env::args().skip(1).collect();
    // `--all`: one JSON line per case with the matched rule ids and the score.
    let all = ids.iter().any(|x| x == "--all");
    let dir =
        std::env::var("WAF_CORPUS_DIR").unwrap_or_else(|_| format!("{}/tests/corpus", env!("CARGO_MANIFEST_DIR")));
    for file in ["crs-cases.jsonl", "payment-api-benign.jsonl"] {
        let text = std::fs::read_to_string(format!("{dir}/{file}")).expect("corpus file");
        for line in text.lines() {
            let Ok(v) = serde_json::from_str::<serde_json::Value>(line) else {
                continue;
            };
            let id = v["id"].as_str().unwrap_or("");
            if !all && !ids.iter().any(|x| x == id) {
                continue;
            }
            let s = |k: &str| v[k].as_str().unwrap_or("").to_owned();
            let body = s("body");
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
            let has = |h: &[(String, String)], n: &str| h.iter().any(|(k, _)| k.eq_ignore_ascii_case(n));
            let method = s("method");
            if (!body.is_empty() || matches!(method.as_str(), "POST" | "PUT" | "PATCH"))
                && !has(&headers, "content-length")
                && !has(&headers, "transfer-encoding")
            {
                headers.push(("Content-Length".into(), body.len().to_string()));
            }
            if !body.is_empty() && !has(&headers, "content-type") {
                headers.push(("Content-Type".into(), "application/x-www-form-urlencoded".into()));
            }
            let version = if s("version").is_empty() {
                "HTTP/1.1".to_owned()
            } else {
                s("version")
            };
            let uri = s("uri");
            let req = HttpRequest {
                method: &method,
                target: &uri,
                version: &version,
                headers: headers.iter().map(|(k, x)| (k.as_str(), x.as_bytes())).collect(),
                body: body.as_bytes(),
            };
            let verdict = waf.inspect(&req);
            if all {
                let rules: Vec<u32> = verdict.matches.iter().map(|m| m.rule_id).collect();
                println!(
                    "{}",
                    serde_json::json!({"id": id, "ids": rules, "score": verdict.score})
                );
                continue;
            }
            println!(
                "== {id} ({} {}) score {} blocked {}",
                s("kind"),
                s("family"),
                verdict.score,
                verdict.blocked
            );
            for m in &verdict.matches {
                println!("   {} +{} {}", m.rule_id, m.score, m.target);
            }
        }
    }
}
