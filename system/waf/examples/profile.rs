//! Inspects the benchmark's typical 1 KB form request in a loop, for profilers that count
//! instructions (`valgrind --tool=callgrind`), which a loaded machine does not disturb:
//! `cargo build --release -p pay-waf --example profile && valgrind --tool=callgrind target/release/examples/profile 200`.

use pay_waf::{Waf, WafConfig};
use std::hint::black_box;

#[path = "support/one_kb.rs"]
mod one_kb;

fn main() {
    let rounds: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(200);
    // `WAF_PROFILE_DISABLE=932230,942100`: the same without some rules, to see what they cost.
    let mut config = WafConfig::payment_api();
    if let Ok(ids) = std::env::var("WAF_PROFILE_DISABLE") {
        config.disabled_rules = ids.split(',').filter_map(|x| x.trim().parse().ok()).collect();
    }
    let waf = Waf::new(config).expect("engine builds");
    let body = one_kb::body();
    let len = body.len().to_string();
    let req = one_kb::request(&body, &len);
    // One inspection before the counted ones, so that a run with 0 rounds includes what the
    // first inspection does once (compiling the expressions it is the first to use): the
    // difference between two runs is then the steady-state cost of the extra inspections.
    let mut blocked = usize::from(black_box(waf.inspect(black_box(&req))).blocked);
    for _ in 0..rounds {
        blocked += usize::from(black_box(waf.inspect(black_box(&req))).blocked);
    }
    println!("{rounds} inspections (after one warm-up), {blocked} blocked");
}
