//! Shrinking: from a failing run, remove faults and cut the workload while the same invariant
//! still fails, and print the smallest scenario found.

use crate::run::{run, RunOptions, RunReport};
use crate::scenario::Scenario;
use std::collections::BTreeSet;

fn failing_invariants(r: &RunReport) -> BTreeSet<String> {
    let mut s: BTreeSet<String> = r
        .verdicts
        .iter()
        .filter(|(_, v)| !v.is_empty())
        .map(|(k, _)| k.clone())
        .collect();
    if r.error.is_some() {
        s.insert("run_error".into());
    }
    s
}

/// One way of making a scenario smaller (None when it cannot shrink further that way).
type Shrinker = Box<dyn Fn(&Scenario) -> Option<Scenario>>;

/// The outcome of shrinking.
pub struct Shrunk {
    /// The smallest failing scenario found.
    pub scenario: Scenario,
    /// Its report.
    pub report: RunReport,
    /// Runs tried.
    pub tries: usize,
}

/// Shrinks a failing (scenario, seed). Returns `None` when the run does not fail.
pub fn shrink(base: &Scenario, opts: &RunOptions, mut progress: impl FnMut(&str)) -> Option<Shrunk> {
    let first = run(base, opts);
    let target = failing_invariants(&first);
    if target.is_empty() {
        return None;
    }
    // Start from the scenario as run (swarm draws made explicit).
    let mut best = first.effective.clone().unwrap_or_else(|| base.clone());
    best.swarm = None;
    let plain = RunOptions {
        swarm: false,
        keep_trace: false,
        ..opts.clone()
    };
    let mut best_report = first;
    let mut tries = 1;
    let still_fails = |s: &Scenario, tries: &mut usize| -> Option<RunReport> {
        *tries += 1;
        let r = run(s, &plain);
        let f = failing_invariants(&r);
        if f.intersection(&target).next().is_some() {
            Some(r)
        } else {
            None
        }
    };
    // 1. Remove faults one at a time, repeating until nothing more can go.
    let mut changed = true;
    while changed {
        changed = false;
        let mut i = 0;
        while i < best.faults.len() {
            let mut cand = best.clone();
            cand.faults.remove(i);
            if let Some(r) = still_fails(&cand, &mut tries) {
                progress(&format!("removed fault #{i}; {} left", cand.faults.len()));
                best = cand;
                best_report = r;
                changed = true;
            } else {
                i += 1;
            }
        }
    }
    // 2. Fewer clients, slower rate, shorter run, fewer flows and cards.
    let mut shrinkers: Vec<Shrinker> = vec![];
    shrinkers.push(Box::new(|s| {
        (s.workload.clients > 1).then(|| {
            let mut c = s.clone();
            c.workload.clients = (c.workload.clients / 2).max(1);
            c
        })
    }));
    shrinkers.push(Box::new(|s| {
        let last_fault = s
            .faults
            .iter()
            .map(|f| f.at.ms() + f.lasts.map(|d| d.ms()).unwrap_or(0))
            .max()
            .unwrap_or(0);
        let half = s.duration.ms() / 2;
        (half >= 5000 && half > last_fault).then(|| {
            let mut c = s.clone();
            c.duration = crate::scenario::Dur(std::time::Duration::from_millis(half));
            c
        })
    }));
    shrinkers.push(Box::new(|s| {
        (s.workload.abandon_rate > 0.0).then(|| {
            let mut c = s.clone();
            c.workload.abandon_rate = 0.0;
            c
        })
    }));
    for flow in [
        crate::scenario::Flow::Purchase,
        crate::scenario::Flow::ManualCapture,
        crate::scenario::Flow::Refund,
        crate::scenario::Flow::Cancel,
        crate::scenario::Flow::DuplicateRetry,
    ] {
        shrinkers.push(Box::new(move |s| {
            (s.workload.flows.len() > 1 && s.workload.flows.contains_key(&flow)).then(|| {
                let mut c = s.clone();
                c.workload.flows.remove(&flow);
                c
            })
        }));
    }
    shrinkers.push(Box::new(|s| {
        (s.workload.cards.len() > 1).then(|| {
            let mut c = s.clone();
            let last = c.workload.cards.keys().next_back().cloned();
            if let Some(k) = last {
                c.workload.cards.remove(&k);
            }
            c
        })
    }));
    let mut progress_made = true;
    while progress_made {
        progress_made = false;
        for sh in &shrinkers {
            if let Some(cand) = sh(&best) {
                if let Some(r) = still_fails(&cand, &mut tries) {
                    progress("cut the workload");
                    best = cand;
                    best_report = r;
                    progress_made = true;
                }
            }
        }
    }
    best.name = format!("{}-shrunk", base.name);
    Some(Shrunk {
        scenario: best,
        report: best_report,
        tries,
    })
}
