//! Inspection cost per request: the benign payment-API requests of the corpus and a typical
//! 1 KB form-encoded payment request. Besides criterion's estimates, prints mean, p50 and p99
//! over individually timed inspections (the target: p99 <= 25 µs).

use criterion::{criterion_group, criterion_main, Criterion};
use pay_waf::{HttpRequest, Waf, WafConfig};
use std::hint::black_box;
use std::time::Instant;

#[path = "../examples/support/one_kb.rs"]
mod one_kb;

struct Req {
    method: String,
    uri: String,
    headers: Vec<(String, String)>,
    body: String,
}

impl Req {
    fn view(&self) -> HttpRequest<'_> {
        HttpRequest {
            method: &self.method,
            target: &self.uri,
            version: "HTTP/1.1",
            headers: self.headers.iter().map(|(k, v)| (k.as_str(), v.as_bytes())).collect(),
            body: self.body.as_bytes(),
        }
    }
}

fn corpus() -> Vec<Req> {
    let path = format!("{}/tests/corpus/payment-api-benign.jsonl", env!("CARGO_MANIFEST_DIR"));
    let text = std::fs::read_to_string(path).expect("corpus");
    text.lines()
        .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
        .map(|v| {
            let body = v["body"].as_str().unwrap_or("").to_owned();
            let mut headers: Vec<(String, String)> = v["headers"]
                .as_object()
                .map(|o| {
                    o.iter()
                        .map(|(k, x)| (k.clone(), x.as_str().unwrap_or("").to_owned()))
                        .collect()
                })
                .unwrap_or_default();
            if !body.is_empty() {
                headers.push(("Content-Length".into(), body.len().to_string()));
            }
            Req {
                method: v["method"].as_str().unwrap_or("GET").to_owned(),
                uri: v["uri"].as_str().unwrap_or("/").to_owned(),
                headers,
                body,
            }
        })
        .collect()
}

/// A typical ~1 KB form-encoded PaymentIntent creation (the request `examples/profile.rs`
/// counts and `examples/tail.rs` times).
fn one_kb() -> Req {
    let body = one_kb::body();
    let len = body.len().to_string();
    let r = one_kb::request(&body, &len);
    Req {
        method: r.method.to_owned(),
        uri: r.target.to_owned(),
        headers: r
            .headers
            .iter()
            .map(|(k, v)| ((*k).to_owned(), String::from_utf8_lossy(v).into_owned()))
            .collect(),
        body: body.clone(),
    }
}

fn percentiles(label: &str, waf: &Waf, reqs: &[Req], rounds: usize) {
    let mut samples = Vec::with_capacity(reqs.len() * rounds);
    for _ in 0..rounds {
        for r in reqs {
            let v = r.view();
            let t = Instant::now();
            let verdict = waf.inspect(black_box(&v));
            samples.push(t.elapsed().as_nanos() as f64 / 1000.0);
            assert!(!verdict.blocked, "benign request blocked");
        }
    }
    samples.sort_by(f64::total_cmp);
    let mean = samples.iter().sum::<f64>() / samples.len() as f64;
    let pct = |p: f64| samples[((samples.len() as f64 * p) as usize).min(samples.len() - 1)];
    println!(
        "{label}: {} inspections, mean {mean:.1} µs, p50 {:.1} µs, p99 {:.1} µs, max {:.1} µs",
        samples.len(),
        pct(0.50),
        pct(0.99),
        samples[samples.len() - 1]
    );
}

fn bench(c: &mut Criterion) {
    let waf = Waf::new(WafConfig::payment_api()).expect("engine");
    // Expressions compile on first use; build them all up front, as a server would before
    // taking traffic, so the first timed inspections do not pay for it.
    waf.rules().compile_all().expect("rules compile");
    let reqs = corpus();
    let kb = one_kb();
    percentiles("payment-api corpus", &waf, &reqs, 20);
    percentiles("1 KB form request", &waf, std::slice::from_ref(&kb), 3000);
    if std::env::var("WAF_BENCH_SPLIT").is_ok() {
        let mut cfg = WafConfig::payment_api();
        cfg.disabled_rules = vec![941100, 942100, 941101, 942101];
        let no_li = Waf::new(cfg).expect("engine");
        no_li.rules().compile_all().expect("rules compile");
        percentiles(
            "1 KB form, without libinjection",
            &no_li,
            std::slice::from_ref(&kb),
            3000,
        );
    }
    let mut i = 0usize;
    c.bench_function("inspect/payment-api-corpus", |b| {
        b.iter(|| {
            let r = &reqs[i % reqs.len()];
            i += 1;
            black_box(waf.inspect(&r.view()))
        })
    });
    c.bench_function("inspect/1kb-form", |b| b.iter(|| black_box(waf.inspect(&kb.view()))));
}

criterion_group!(benches, bench);
criterion_main!(benches);
