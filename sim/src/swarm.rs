//! Swarm mode: each seed draws its own mix of fault kinds, times and intensities, so a swarm
//! of seeds explores combinations no hand-written scenario lists.

use crate::scenario::{Dur, Fault, HostGroup, Scenario, ScheduledFault, SWARM_KINDS};
use pay_core::{Entropy, SeededEntropy};
use std::time::Duration;

/// Default probability that a seed enables each fault kind.
pub const DEFAULT_PROBABILITY: f64 = 0.35;

const SERVICES: &[&str] = &["waf", "api", "tokenizer", "payments", "acquirer", "db"];
const RESTARTABLE: &[&str] = &["waf", "api", "tokenizer", "payments", "db"];

/// The scenario with a fault schedule drawn from `seed` (replacing scheduled faults when the
/// scenario has a swarm section; adding to them otherwise).
pub fn draw(base: &Scenario, seed: u64) -> Scenario {
    let rng = SeededEntropy::new(seed, "swarm");
    let mut s = base.clone();
    let swarm = base.swarm.clone().unwrap_or_default();
    if base.swarm.is_some() {
        s.faults.clear();
    }
    let dur = base.duration.ms().max(2000);
    let pick = |list: &[&str]| list[rng.below(list.len() as u64) as usize].to_owned();
    let window = |rng: &SeededEntropy| -> (Dur, Option<Dur>) {
        let at = rng.below(dur * 8 / 10);
        let lasts = 1000 + rng.below((dur - at).clamp(1001, 60_000) - 1000);
        (Dur(Duration::from_millis(at)), Some(Dur(Duration::from_millis(lasts))))
    };
    let mut events = 0;
    for kind in SWARM_KINDS {
        let p = swarm.probabilities.get(*kind).copied().unwrap_or(DEFAULT_PROBABILITY);
        if rng.unit_f64() >= p || events >= swarm.max_events.max(1) {
            continue;
        }
        events += 1;
        let (at, lasts) = window(&rng);
        let rate = |lo: f64, hi: f64| lo + (hi - lo) * rng.unit_f64();
        let fault = match *kind {
            "partition" => {
                let a = pick(SERVICES);
                let mut b = pick(SERVICES);
                while b == a {
                    b = pick(SERVICES);
                }
                Fault::Partition(vec![HostGroup::One(a), HostGroup::One(b)])
            }
            "message_loss" => Fault::MessageLoss((rate(0.002, 0.03) * 1000.0).round() / 1000.0),
            "latency" => Fault::Latency {
                min: Dur(Duration::from_millis(1)),
                max: Dur(Duration::from_millis(20 + rng.below(400))),
            },
            "bounce" => Fault::Bounce(pick(RESTARTABLE)),
            "db_ambiguous_commit" => Fault::DbAmbiguousCommit((rate(0.05, 0.3) * 100.0).round() / 100.0),
            "db_unavailable" => Fault::DbUnavailable(true),
            "acquirer_lost_replies" => Fault::AcquirerLostReplies((rate(0.1, 0.6) * 100.0).round() / 100.0),
            "acquirer_slow" => Fault::AcquirerSlow {
                delay: Dur(Duration::from_millis(500 + rng.below(3000))),
                rate: (rate(0.2, 0.8) * 100.0).round() / 100.0,
            },
            "clock_skew" => Fault::ClockSkew {
                host: pick(&["api", "tokenizer", "payments", "acquirer"]),
                ms: rng.below(240_001) as i64 - 120_000,
            },
            "hsm_unavailable" => Fault::HsmUnavailable(true),
            "crash_after_authorize" => Fault::CrashAfterAuthorize((rate(0.1, 0.5) * 100.0).round() / 100.0),
            "abandon" => {
                s.workload.abandon_rate = (rate(0.02, 0.15) * 100.0).round() / 100.0;
                continue;
            }
            _ => continue,
        };
        let lasts = if matches!(fault, Fault::Bounce(_)) && rng.below(2) == 0 {
            None
        } else {
            lasts
        };
        s.faults.push(ScheduledFault { at, lasts, fault });
    }
    s.faults.sort_by_key(|f| f.at);
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn draws_are_deterministic_and_vary_by_seed() {
        let text = std::fs::read_to_string(concat!(env!("CARGO_MANIFEST_DIR"), "/../scenarios/chaos.yaml")).unwrap();
        let base = Scenario::parse(&text, "chaos.yaml").unwrap();
        let a = draw(&base, 1);
        assert_eq!(a, draw(&base, 1));
        let distinct: std::collections::BTreeSet<String> =
            (0..20).map(|s| format!("{:?}", draw(&base, s).faults)).collect();
        assert!(distinct.len() > 10);
        for seed in 0..50 {
            let s = draw(&base, seed);
            // Every drawn scenario is itself valid.
            Scenario::parse(&s.to_yaml(), "drawn.yaml").unwrap();
        }
    }
}
