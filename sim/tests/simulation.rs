//! The simulator checks itself: runs replay bit for bit, every shipped scenario holds its
//! invariants, and deliberately planted bugs are caught.

use sim::run::{run, RunOptions};
use sim::scenario::Scenario;
use std::path::PathBuf;

/// Runs in one process must not overlap (see `sim::world::align_task_ids`): every test holds
/// this lock while it simulates.
static SERIAL: std::sync::Mutex<()> = std::sync::Mutex::new(());

fn serial() -> std::sync::MutexGuard<'static, ()> {
    SERIAL.lock().unwrap_or_else(|p| p.into_inner())
}

fn scenario(name: &str) -> (Scenario, String) {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../scenarios")
        .join(format!("{name}.yaml"));
    (
        Scenario::load(&path).unwrap_or_else(|e| panic!("{e}")),
        path.display().to_string(),
    )
}

fn opts(path: &str, seed: u64, swarm: bool, keep_trace: bool) -> RunOptions {
    RunOptions {
        seed,
        swarm,
        keep_trace,
        scenario_path: path.to_owned(),
    }
}

#[test]
fn twenty_seeds_replay_bit_for_bit() {
    let _g = serial();
    let (s, path) = scenario("chaos");
    for seed in 0..20 {
        let a = run(&s, &opts(&path, seed, true, true));
        let b = run(&s, &opts(&path, seed, true, true));
        assert!(!a.trace.is_empty());
        if a.trace_hash != b.trace_hash {
            let d = sim::determinism::first_divergence(&a.trace, &b.trace).expect("hashes differ, so traces do");
            let ctx: Vec<String> = a.trace[d.index.saturating_sub(6)..(d.index + 3).min(a.trace.len())]
                .iter()
                .map(|e| e.line())
                .collect();
            let ctx_b: Vec<String> = b.trace[d.index.saturating_sub(6)..(d.index + 3).min(b.trace.len())]
                .iter()
                .map(|e| e.line())
                .collect();
            panic!(
                "seed {seed} diverges at event #{}:\n  {}\n  {}\nrun A:\n{}\nrun B:\n{}",
                d.index,
                d.first,
                d.second,
                ctx.join("\n"),
                ctx_b.join("\n")
            );
        }
        assert_eq!(a.stats.requests, b.stats.requests);
        // Different seeds take different paths.
        if seed > 0 {
            let c = run(&s, &opts(&path, seed - 1, true, false));
            assert_ne!(c.trace_hash, a.trace_hash);
        }
    }
}

#[test]
fn every_shipped_scenario_holds_its_invariants() {
    let _g = serial();
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../scenarios");
    let mut names: Vec<String> = std::fs::read_dir(&dir)
        .unwrap()
        .filter_map(|e| e.ok())
        .map(|e| e.file_name().to_string_lossy().trim_end_matches(".yaml").to_owned())
        .collect();
    names.sort();
    assert!(names.len() >= 7, "{names:?}");
    for name in names {
        let (s, path) = scenario(&name);
        for seed in 0..3 {
            let r = run(&s, &opts(&path, seed, false, false));
            assert!(
                r.passed(),
                "{name} seed {seed}: {:?} {:?}\n  reproduce: {}",
                r.error,
                r.verdicts.iter().filter(|(_, v)| !v.is_empty()).collect::<Vec<_>>(),
                r.repro
            );
            assert!(
                r.stats.requests > 0 && r.stats.intents > 0,
                "{name} seed {seed} did nothing"
            );
        }
    }
}

#[cfg(not(feature = "planted-bugs"))]
#[test]
fn planted_bugs_are_refused_without_the_feature() {
    let _g = serial();
    let (mut s, path) = scenario("baseline");
    s.planted_bug = Some(sim::scenario::PlantedBug::FreshAcquirerKey);
    let r = run(&s, &opts(&path, 1, false, false));
    assert!(r.error.unwrap_or_default().contains("planted-bugs"));
}

/// Runs seeds of `scenario` with `bug` planted until an invariant breaks; returns the seed and
/// the broken invariants.
#[cfg(feature = "planted-bugs")]
fn first_catch(name: &str, bug: sim::scenario::PlantedBug, swarm: bool) -> Option<(u64, Vec<String>)> {
    let _g = serial();
    let (mut s, path) = scenario(name);
    s.planted_bug = Some(bug);
    (0..200).find_map(|seed| {
        let r = run(&s, &opts(&path, seed, swarm, false));
        assert!(r.error.is_none(), "{:?}", r.error);
        let broken: Vec<String> = r
            .verdicts
            .iter()
            .filter(|(_, v)| !v.is_empty())
            .map(|(k, _)| k.clone())
            .collect();
        (!broken.is_empty()).then_some((seed, broken))
    })
}

#[cfg(feature = "planted-bugs")]
#[test]
fn skipping_the_idempotency_lock_is_caught() {
    let caught = first_catch("duplicate-storm", sim::scenario::PlantedBug::SkipIdempotencyLock, false);
    let (seed, broken) = caught.expect("no seed within 200 caught the skipped idempotency lock");
    eprintln!("skip_idempotency_lock caught by seed {seed}: {broken:?}");
    assert!(
        broken
            .iter()
            .any(|b| b == "no_double_charge" || b == "idempotent_replay"),
        "{broken:?}"
    );
}

#[cfg(feature = "planted-bugs")]
#[test]
fn a_fresh_acquirer_key_on_retry_is_caught() {
    let caught = first_catch(
        "acquirer-lost-replies",
        sim::scenario::PlantedBug::FreshAcquirerKey,
        false,
    );
    let (seed, broken) = caught.expect("no seed within 200 caught the fresh acquirer key");
    eprintln!("fresh_acquirer_key caught by seed {seed}: {broken:?}");
    assert!(
        broken
            .iter()
            .any(|b| b == "no_double_charge" || b == "ledger_reconciliation"),
        "{broken:?}"
    );
}

#[cfg(feature = "planted-bugs")]
#[test]
fn an_event_outside_the_transaction_is_caught() {
    let caught = first_catch(
        "partition-payments-db",
        sim::scenario::PlantedBug::EventOutsideTxn,
        false,
    );
    let (seed, broken) = caught.expect("no seed within 200 caught events written outside the transaction");
    eprintln!("event_outside_txn caught by seed {seed}: {broken:?}");
    assert!(broken.iter().any(|b| b == "legal_transitions"), "{broken:?}");
}

#[cfg(feature = "planted-bugs")]
#[test]
fn shrinking_keeps_the_failure_and_drops_what_is_not_needed() {
    let (mut s, path) = scenario("acquirer-lost-replies");
    s.planted_bug = Some(sim::scenario::PlantedBug::FreshAcquirerKey);
    let _g = serial();
    let seed = (0..50)
        .find(|seed| !run(&s, &opts(&path, *seed, false, false)).passed())
        .expect("a failing seed");
    let shrunk =
        sim::shrink::shrink(&s, &opts(&path, seed, false, false), |_| {}).expect("the seed fails, so it shrinks");
    assert!(!shrunk.report.passed());
    assert!(shrunk.scenario.faults.len() <= s.faults.len());
    assert!(shrunk.scenario.workload.clients <= s.workload.clients);
    assert!(shrunk.tries > 1);
    // The printed scenario is a valid file that still fails with the same seed.
    let yaml = shrunk.scenario.to_yaml();
    let reparsed = Scenario::parse(&yaml, "shrunk.yaml").unwrap();
    assert!(
        !run(&reparsed, &opts("shrunk.yaml", seed, false, false)).passed(),
        "{yaml}"
    );
}
