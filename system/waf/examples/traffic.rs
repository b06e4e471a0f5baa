//! Inspects the corpus's requests (`api`: the 300 payment-API requests, `crs`: the CRS
//! regression cases) for instruction-counting profilers: one warm-up round, then `N` rounds.
//! The cost of the other traffic is the difference of the collected totals for `N` = 1 and
//! `N` = 0: `valgrind --tool=callgrind --collect-atstart=no
//! --toggle-collect='pay_waf::engine::Waf::inspect' target/release/examples/traffic api 1`.
//! Requests are sent as `tests/corpus.rs` sends them (Content-Length and the form content type
//! added when a body needs them).

#[path = "../tests/support/corpus_case.rs"]
mod corpus_case;

use pay_waf::{Waf, WafConfig};
use std::hint::black_box;

fn main() {
    let set = std::env::args().nth(1).unwrap_or_else(|| "api".into());
    let rounds: usize = std::env::args().nth(2).and_then(|a| a.parse().ok()).unwrap_or(1);
    let reqs = corpus_case::load(if set == "crs" {
        "crs-cases.jsonl"
    } else {
        "payment-api-benign.jsonl"
    });
    let waf = Waf::new(WafConfig::payment_api()).expect("engine builds");
    waf.rules().compile_all().expect("rules compile");
    let mut blocked = 0usize;
    let headers: Vec<Vec<(String, String)>> = reqs.iter().map(corpus_case::Case::sent_headers).collect();
    for _ in 0..=rounds {
        for (case, headers) in reqs.iter().zip(&headers) {
            blocked += usize::from(case.with_headers(headers, |req| black_box(waf.inspect(black_box(req))).blocked));
        }
    }
    println!(
        "{set}: {} requests, {rounds} rounds after one warm-up, {blocked} blocked",
        reqs.len()
    );
}
