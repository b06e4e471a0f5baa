//! Times consecutive inspections of the benchmark's 1 KB form request and says where the slow
//! ones fall: the p99 the issue sets a target for is made of them. The engine does the same
//! work on every inspection of one request (callgrind counts the same instructions each time),
//! so a slow inspection is one the machine interrupted; this prints, for the slowest 1 %, their
//! phase within periods of 1, 2, 4 and 10 ms (a clock interrupt puts them in a few bins of its
//! period, an irregular cause spreads them), and their spacing in time.
//!
//! `cargo build --release -p pay-waf --example tail && target/release/examples/tail [inspections]`

use pay_waf::{Waf, WafConfig};
use std::hint::black_box;
use std::time::Instant;

#[path = "support/one_kb.rs"]
mod one_kb;

fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .and_then(|a| a.parse().ok())
        .unwrap_or(20_000)
        .max(100);
    let waf = Waf::new(WafConfig::payment_api()).expect("engine builds");
    waf.rules().compile_all().expect("rules compile");
    let body = one_kb::body();
    let len = body.len().to_string();
    let req = one_kb::request(&body, &len);
    for _ in 0..200 {
        black_box(waf.inspect(black_box(&req)));
    }
    let mut took = Vec::with_capacity(rounds);
    let mut began = Vec::with_capacity(rounds);
    let origin = Instant::now();
    for _ in 0..rounds {
        let start = Instant::now();
        let verdict = waf.inspect(black_box(&req));
        took.push(start.elapsed().as_nanos() as u64);
        began.push(start.duration_since(origin).as_micros() as u64);
        black_box(verdict);
    }
    let mut sorted = took.clone();
    sorted.sort_unstable();
    let at = |q: f64| sorted[((sorted.len() as f64 * q) as usize).min(sorted.len() - 1)] as f64 / 1000.0;
    println!(
        "{rounds} inspections: p50 {:.1} µs, p90 {:.1}, p99 {:.1}, p99.9 {:.1}, max {:.1}",
        at(0.50),
        at(0.90),
        at(0.99),
        at(0.999),
        at(1.0)
    );
    let threshold = sorted[sorted.len() * 99 / 100];
    let slow: Vec<u64> = (0..rounds)
        .filter(|&i| took[i] >= threshold)
        .map(|i| began[i])
        .collect();
    println!(
        "the slowest 1 % ({} inspections, {:.1} µs or more) began at these phases:",
        slow.len(),
        threshold as f64 / 1000.0
    );
    for period in [1_000u64, 2_000, 4_000, 10_000] {
        let mut bins = [0usize; 10];
        for t in &slow {
            bins[((t % period) * 10 / period) as usize] += 1;
        }
        println!("  within {:>2} ms, in tenths: {bins:?}", period / 1000);
    }
    let gaps: Vec<u64> = slow.windows(2).map(|w| w[1] - w[0]).collect();
    let mut sorted_gaps = gaps.clone();
    sorted_gaps.sort_unstable();
    if let Some(median) = sorted_gaps.get(sorted_gaps.len() / 2) {
        println!(
            "  one every {:.1} ms on average, median spacing {:.1} ms",
            began.last().copied().unwrap_or(0) as f64 / 1000.0 / slow.len() as f64,
            *median as f64 / 1000.0
        );
    }
}
