//! Explains the verdict on corpus cases: `cargo run --release -p pay-waf --example explain -- <id>...`
//! prints each matching rule with its score and the value it matched (a developer tool for
//! tuning rule semantics; never run on real traffic, it prints request contents).
//! `--file PATH` reads the cases from one JSON-lines file of the corpus's form instead (the
//! synthetic traffic of `tests/traffic`, or what `tools/gen_traffic.py` writes).

#[path = "../tests/support/corpus_case.rs"]
mod corpus_case;

use pay_waf::{Waf, WafConfig};

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
    let mut ids: Vec<String> = std::env::args().skip(1).collect();
    let file = match ids.iter().position(|x| x == "--file") {
        Some(i) if i + 1 < ids.len() => {
            let path = ids.remove(i + 1);
            ids.remove(i);
            Some(path)
        }
        Some(_) => {
            eprintln!("--file needs a path");
            std::process::exit(2);
        }
        None => None,
    };
    // `--all`: one JSON line per case with the matched rule ids, each one's score and the total.
    let all = ids.iter().any(|x| x == "--all");
    let sources: Vec<Vec<corpus_case::Case>> = match &file {
        Some(path) => vec![corpus_case::load_path(path)],
        None => ["crs-cases.jsonl", "payment-api-benign.jsonl"]
            .into_iter()
            .map(corpus_case::load)
            .collect(),
    };
    for cases in sources {
        for case in cases {
            let id = case.id.as_str();
            if !all && !ids.iter().any(|x| x == id) {
                continue;
            }
            let verdict = case.with_request(|req| waf.inspect(req));
            if all {
                let rules: Vec<u32> = verdict.matches.iter().map(|m| m.rule_id).collect();
                let scores: Vec<i64> = verdict.matches.iter().map(|m| i64::from(m.score)).collect();
                println!(
                    "{}",
                    serde_json::json!({"id": id, "ids": rules, "scores": scores, "score": verdict.score})
                );
                continue;
            }
            println!(
                "== {id} ({} {}) score {} blocked {}",
                case.kind, case.family, verdict.score, verdict.blocked
            );
            for m in &verdict.matches {
                println!("   {} +{} {}", m.rule_id, m.score, m.target);
            }
        }
    }
}
