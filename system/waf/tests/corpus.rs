//! Scores the engine on the WAF corpus (tests/corpus, a copy of `shared/waf-corpus`: the OWASP
//! CRS regression suite plus realistic payment-API traffic; `WAF_CORPUS_DIR` points elsewhere):
//! detection per family over `attack` cases of paranoia level <= 2, false positives over every
//! `benign` case, and no block at all on the payment-API traffic. Prints the table; fails under
//! 90% detection, over 5% false positives, on any payment-API block or on a panic (the issue's
//! 1% target is the ignored test below).
//!
//! Also checks that the fast path (the literal prefilter) gives exactly the verdict of the
//! reference evaluation of every rule on every value, over the whole corpus.

#[path = "support/corpus_case.rs"]
mod corpus_case;

use corpus_case::{load, Case};
use pay_waf::{Waf, WafConfig};
use std::collections::BTreeMap;

fn blocked(waf: &Waf, c: &Case) -> (bool, Vec<u32>) {
    let v = c.with_request(|r| waf.inspect(r));
    (v.blocked, v.matches.iter().map(|m| m.rule_id).collect())
}

/// Detection, false-positive rate and payment-API blocks over the corpus (and prints the table).
fn score() -> (f64, f64, usize) {
    let waf = Waf::new(WafConfig::payment_api()).expect("engine builds");
    let crs = load("crs-cases.jsonl");
    let api = load("payment-api-benign.jsonl");
    let verbose = std::env::var("WAF_CORPUS_VERBOSE").is_ok();

    let mut per_family: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let mut fp_family: BTreeMap<String, (usize, usize)> = BTreeMap::new();
    let (mut det, mut att, mut fp, mut ben) = (0usize, 0usize, 0usize, 0usize);
    for c in crs.iter().chain(api.iter()) {
        let (b, ids) = blocked(&waf, c);
        if std::env::var("WAF_CORPUS_DUMP").is_ok() {
            println!("DUMP {} {} {} {} {:?}", c.id, c.family, c.paranoia, c.attack, ids);
        }
        if c.attack {
            if c.paranoia > 2 {
                continue;
            }
            att += 1;
            let e = per_family.entry(c.family.clone()).or_default();
            e.1 += 1;
            if b {
                det += 1;
                e.0 += 1;
            } else if verbose {
                println!("MISS {} {} {:?}", c.id, c.family, ids);
            }
        } else {
            ben += 1;
            let e = fp_family.entry(c.family.clone()).or_default();
            e.1 += 1;
            if b {
                fp += 1;
                e.0 += 1;
                if verbose {
                    println!("FP {} {} {:?}", c.id, c.family, ids);
                }
            }
        }
    }
    println!("{:<20} {:>9} {:>9} {:>8}", "family", "detected", "attacks", "rate");
    for (f, (d, n)) in &per_family {
        println!("{f:<20} {d:>9} {n:>9} {:>7.1}%", 100.0 * *d as f64 / *n as f64);
    }
    let rate = 100.0 * det as f64 / att as f64;
    println!("{:<20} {det:>9} {att:>9} {rate:>7.1}%", "ALL (paranoia<=2)");
    println!();
    println!("{:<20} {:>9} {:>9} {:>8}", "benign family", "blocked", "cases", "rate");
    for (f, (d, n)) in &fp_family {
        println!("{f:<20} {d:>9} {n:>9} {:>7.1}%", 100.0 * *d as f64 / *n as f64);
    }
    let fp_rate = 100.0 * fp as f64 / ben as f64;
    println!("{:<20} {fp:>9} {ben:>9} {fp_rate:>7.2}%", "ALL benign");
    let api_blocks = fp_family.get("payment-api").map_or(0, |x| x.0);
    (rate, fp_rate, api_blocks)
}

/// What the engine must keep: detection at least 90%, no payment-API request blocked, false
/// positives at most 5% (4.6% today), and no panic (which fails the test by itself).
#[test]
fn corpus_detection_and_false_positives() {
    let (rate, fp_rate, api_blocks) = score();
    assert!(rate >= 90.0, "detection {rate:.1}% is under 90%");
    assert_eq!(api_blocks, 0, "payment-API traffic was blocked");
    assert!(fp_rate <= 5.0, "false positives {fp_rate:.2}% are over 5%");
}

/// The false-positive target, 1%. Not met: every one of the remaining false positives
/// is also blocked by ModSecurity running the same Core Rule Set at paranoia level 2 and
/// threshold 5 (docs/waf.md, "False positives"), so meeting it means departing from CRS.
#[test]
#[ignore = "false positives are at 4.6%; the 1% target is not met (see docs/waf.md)"]
fn corpus_false_positive_target() {
    let (_, fp_rate, _) = score();
    assert!(fp_rate <= 1.0, "false positives {fp_rate:.2}% are over 1%");
}

/// Real traffic is never blocked: 3,000 requests of the kinds the Stripe SDKs send to this API,
/// filled with Faker's names, addresses, prose and metadata in 30 locales (`tests/traffic`,
/// written by `tools/gen_traffic.py`). Before the free-text exclusions for command and function
/// names two of them were blocked: 932250 on a gift message starting "Sed" (`sed`), 942151 on
/// "Already least (M) x2" (`least(`). Other seeds of the generator blocked 0.2–0.3 % (75 and
/// 101 of 40,000 requests; docs/waf.md).
#[test]
fn synthetic_api_traffic_is_never_blocked() {
    let waf = Waf::new(WafConfig::payment_api()).expect("engine builds");
    let cases = synthetic_traffic();
    assert!(cases.len() >= 3000, "only {} requests", cases.len());
    let blocks: Vec<(String, Vec<u32>)> = cases
        .iter()
        .filter_map(|c| {
            let (b, ids) = blocked(&waf, c);
            b.then(|| (c.id.clone(), ids))
        })
        .collect();
    println!(
        "synthetic API traffic: {} of {} requests blocked",
        blocks.len(),
        cases.len()
    );
    assert!(blocks.is_empty(), "blocked (case, rules): {blocks:?}");
}

/// The synthetic traffic of `tests/traffic`.
fn synthetic_traffic() -> Vec<Case> {
    corpus_case::load_path(&format!(
        "{}/tests/traffic/synthetic-api.jsonl",
        env!("CARGO_MANIFEST_DIR")
    ))
}

/// The prefilter never changes a verdict: over every corpus case and the synthetic traffic,
/// with the shipped configuration and with the plain Core Rule Set one (no exclusions, every
/// rule scored), the fast path reports the same matches, targets and score as evaluating every
/// rule everywhere.
#[test]
fn fast_path_equals_exhaustive_evaluation() {
    let cases: Vec<Case> = load("crs-cases.jsonl")
        .into_iter()
        .chain(load("payment-api-benign.jsonl"))
        .chain(synthetic_traffic())
        .collect();
    let configs = [WafConfig::payment_api(), WafConfig::default()];
    let mut compared = 0;
    let mut matched = 0;
    for config in configs {
        let waf = Waf::new(config).expect("engine builds");
        for c in &cases {
            let (fast, slow) = c.with_request(|r| (waf.inspect(r), waf.inspect_exhaustive(r)));
            assert_eq!(fast, slow, "case {}: the fast path differs from the reference", c.id);
            compared += 1;
            matched += usize::from(!slow.matches.is_empty());
        }
    }
    assert!(compared >= 2 * 6000, "only {compared} verdicts compared");
    assert!(
        matched * 2 > compared,
        "only {matched} of {compared} verdicts had matches"
    );
}
