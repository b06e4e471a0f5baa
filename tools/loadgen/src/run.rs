//! Driving payment flows: one flow, the open loop (a fixed schedule of due times) and the
//! closed loop (N connections, each starting its next flow when the last one ends).

use crate::client::{Answer, StripeClient};
use crate::report::{Recorder, Report, RunMeta, Step};
use crate::schedule::{FlowPlan, Mix, OpenLoopSchedule, Phase, Phases};
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::time::Instant;

/// How load is offered.
#[derive(Debug, Clone, Copy)]
pub enum Mode {
    /// Flows start on a fixed schedule of `rate` per second, whatever the answers do; at most
    /// `max_in_flight` run at once (a flow waiting for a slot is late, and its latency counts
    /// from its due time).
    Open {
        /// Flows per second.
        rate: f64,
        /// Cap on concurrent flows (and pooled connections).
        max_in_flight: usize,
    },
    /// `connections` workers, each running flows back to back.
    Closed {
        /// Concurrent flows.
        connections: usize,
    },
}

/// What a flow sends.
#[derive(Debug, Clone)]
pub struct Workload {
    /// Shares of manual captures, refunds and declining cards.
    pub mix: Mix,
    /// The share values (for the report).
    pub shares: (f64, f64, f64),
    /// Card number of approved flows (without `unique_cards`).
    pub card: String,
    /// Give every approved flow a card number of its own (a Luhn-valid `424242…` number
    /// derived from the run and the flow), as a population of customers would, instead of
    /// sending every payment on `card` (which makes one card's fraud velocity grow without
    /// bound over a run).
    pub unique_cards: bool,
    /// Card number of flows the mix wants declined.
    pub decline_card: String,
    /// Amount in the currency's minor unit.
    pub amount: i64,
    /// Currency (ISO code, lower case).
    pub currency: String,
}

/// A run.
#[derive(Clone)]
pub struct RunConfig {
    /// The client.
    pub client: StripeClient,
    /// Open or closed loop.
    pub mode: Mode,
    /// Warmup and measurement window.
    pub phases: Phases,
    /// What each flow sends.
    pub workload: Workload,
    /// How long to wait for flows still running at the end.
    pub drain: Duration,
}

/// Why a run could not be made.
#[derive(Debug, thiserror::Error)]
pub enum RunError {
    /// Bad schedule parameters.
    #[error(transparent)]
    Schedule(#[from] crate::schedule::ScheduleError),
    /// Zero connections.
    #[error("connections must be at least 1")]
    NoConnections,
}

/// Everything a flow task needs.
struct Shared {
    client: StripeClient,
    workload: Workload,
    recorder: Mutex<Recorder>,
    run_id: String,
    started: std::sync::atomic::AtomicU64,
    /// When the measurement window opens (the start plus the warmup).
    window_start: Instant,
}

impl Shared {
    fn record(&self, f: impl FnOnce(&mut Recorder)) {
        // A poisoned lock means a recording panicked; keep recording into what is there.
        let mut g = match self.recorder.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        f(&mut g);
    }
}

/// How a flow ended.
enum FlowEnd {
    Ok,
    Failed,
}

/// A step's answer judged: `Ok(answer)` when it did what the flow wanted.
fn expect_status(a: Answer, ok: &[&str]) -> Result<Answer, String> {
    if a.status == 200 && a.str("/status").is_some_and(|s| ok.contains(&s)) {
        Ok(a)
    } else if a.status == 200 {
        Err(format!("unexpected status {}", a.str("/status").unwrap_or("-")))
    } else {
        Err(a.error_kind())
    }
}

/// Runs flow number `i`, due at `due`; records into the shared recorder when `measure`.
async fn flow(shared: Arc<Shared>, i: u64, due: Instant, measure: bool) -> FlowEnd {
    let plan = shared.workload.mix.plan(i);
    shared.started.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let started = Instant::now();
    if measure {
        shared.record(|r| r.send_lag(started.saturating_duration_since(due)));
    }
    let result = flow_steps(&shared, i, plan, due, measure).await;
    let end = match result {
        Ok(()) => FlowEnd::Ok,
        Err(kind) => {
            if measure {
                shared.record(|r| r.error(&kind));
            }
            FlowEnd::Failed
        }
    };
    if measure {
        let ok = matches!(end, FlowEnd::Ok);
        let total = Instant::now().saturating_duration_since(due);
        shared.record(|r| {
            r.flow_done(ok);
            if ok {
                r.latency(Step::Flow, total);
            }
        });
    }
    end
}

async fn flow_steps(shared: &Shared, i: u64, plan: FlowPlan, due: Instant, measure: bool) -> Result<(), String> {
    let w = &shared.workload;
    let c = &shared.client;
    let key = |step: &str| format!("lg-{}-{i}-{step}", shared.run_id);
    let lat = |step: Step, since: Instant| {
        if measure {
            let d = Instant::now().saturating_duration_since(since);
            let offset = since.saturating_duration_since(shared.window_start);
            shared.record(|r| {
                r.latency(step, d);
                if step == Step::Confirm {
                    r.confirm_sent(offset, d);
                }
            });
        }
    };

    // 1. Tokenize the card. Latency counts from the flow's due time (no coordinated omission).
    let own_card;
    let card = if plan.decline {
        &w.decline_card
    } else if w.unique_cards {
        own_card = flow_card(&shared.run_id, i);
        &own_card
    } else {
        &w.card
    };
    let a = c
        .post(
            "/v1/payment_methods",
            &[
                ("type", "card"),
                ("card[number]", card),
                ("card[exp_month]", "12"),
                ("card[exp_year]", "2034"),
                ("card[cvc]", "123"),
            ],
            &key("pm"),
        )
        .await
        .map_err(|e| e.kind().to_owned())?;
    if a.status != 200 {
        return Err(a.error_kind());
    }
    let pm = a.str("/id").ok_or("payment method without id")?.to_owned();
    lat(Step::PaymentMethod, due);

    // 2. Create and confirm the PaymentIntent.
    let t = Instant::now();
    let amount = w.amount.to_string();
    let mut form = vec![
        ("amount", amount.as_str()),
        ("currency", w.currency.as_str()),
        ("payment_method", pm.as_str()),
        ("confirm", "true"),
    ];
    if plan.manual_capture {
        form.push(("capture_method", "manual"));
    }
    let a = c
        .post("/v1/payment_intents", &form, &key("pi"))
        .await
        .map_err(|e| e.kind().to_owned())?;
    if plan.decline {
        return if a.status == 402 && a.str("/error/code") == Some("card_declined") {
            lat(Step::Confirm, t);
            if measure {
                shared.record(|r| r.expected_decline());
            }
            Ok(())
        } else {
            Err(format!("expected a decline, got {}", a.error_kind()))
        };
    }
    let want = if plan.manual_capture {
        "requires_capture"
    } else {
        "succeeded"
    };
    let a = expect_status(a, &[want])?;
    lat(Step::Confirm, t);
    if measure {
        shared.record(|r| r.confirmed());
    }
    let pi = a.str("/id").ok_or("payment intent without id")?.to_owned();

    // 3. Capture.
    if plan.manual_capture {
        let t = Instant::now();
        let a = c
            .post(&format!("/v1/payment_intents/{pi}/capture"), &[], &key("cap"))
            .await
            .map_err(|e| e.kind().to_owned())?;
        expect_status(a, &["succeeded"])?;
        lat(Step::Capture, t);
    }

    // 4. Refund.
    if plan.refund {
        let t = Instant::now();
        let a = c
            .post("/v1/refunds", &[("payment_intent", pi.as_str())], &key("re"))
            .await
            .map_err(|e| e.kind().to_owned())?;
        expect_status(a, &["succeeded", "pending"])?;
        lat(Step::Refund, t);
    }
    Ok(())
}

/// The card number of flow `i` of run `run_id`: `424242`, nine digits from the run and the
/// flow, and the Luhn check digit (16 digits, a Visa number the network approves).
pub fn flow_card(run_id: &str, i: u64) -> String {
    let salt = run_id
        .bytes()
        .fold(0u64, |h, b| h.wrapping_mul(31).wrapping_add(u64::from(b)));
    let body = format!("424242{:09}", salt.wrapping_add(i) % 1_000_000_000);
    let check = luhn_check_digit(&body);
    format!("{body}{check}")
}

/// The digit that makes `digits` followed by it pass the Luhn check.
fn luhn_check_digit(digits: &str) -> u32 {
    let sum: u32 = digits
        .bytes()
        .rev()
        .enumerate()
        .map(|(k, b)| {
            let d = u32::from(b - b'0');
            if k % 2 == 0 {
                let x = d * 2;
                if x > 9 {
                    x - 9
                } else {
                    x
                }
            } else {
                d
            }
        })
        .sum();
    (10 - sum % 10) % 10
}

fn run_id() -> String {
    use rand::Rng;
    let n: u64 = rand::thread_rng().gen();
    format!("{n:016x}")
}

/// Runs the load and returns the report of the measurement window.
pub async fn run(cfg: RunConfig) -> Result<Report, RunError> {
    let (mix_capture, mix_refund, mix_decline) = cfg.workload.shares;
    let phases = cfg.phases;
    let start = Instant::now();
    let shared = Arc::new(Shared {
        client: cfg.client.clone(),
        workload: cfg.workload.clone(),
        recorder: Mutex::new(Recorder::new()),
        run_id: run_id(),
        started: std::sync::atomic::AtomicU64::new(0),
        window_start: start + phases.warmup,
    });
    let meta = match cfg.mode {
        Mode::Open { rate, max_in_flight } => {
            let schedule = OpenLoopSchedule::new(rate)?;
            if max_in_flight == 0 {
                return Err(RunError::NoConnections);
            }
            open_loop(&shared, schedule, max_in_flight, phases, start, cfg.drain).await;
            RunMeta {
                mode: "open",
                target_rate: Some(rate),
                connections: max_in_flight,
                warmup_secs: phases.warmup.as_secs_f64(),
                capture_manual_share: mix_capture,
                refund_share: mix_refund,
                decline_share: mix_decline,
            }
        }
        Mode::Closed { connections } => {
            if connections == 0 {
                return Err(RunError::NoConnections);
            }
            closed_loop(&shared, connections, phases, start, cfg.drain).await;
            RunMeta {
                mode: "closed",
                target_rate: None,
                connections,
                warmup_secs: phases.warmup.as_secs_f64(),
                capture_manual_share: mix_capture,
                refund_share: mix_refund,
                decline_share: mix_decline,
            }
        }
    };
    let mut report = match shared.recorder.lock() {
        Ok(g) => g.report(meta, phases.duration),
        Err(p) => p.into_inner().report(meta, phases.duration),
    };
    report.flows_run_total = shared.started.load(std::sync::atomic::Ordering::Relaxed);
    Ok(report)
}

async fn open_loop(
    shared: &Arc<Shared>,
    schedule: OpenLoopSchedule,
    max_in_flight: usize,
    phases: Phases,
    start: Instant,
    drain: Duration,
) {
    let slots = Arc::new(tokio::sync::Semaphore::new(max_in_flight));
    let mut tasks = tokio::task::JoinSet::new();
    let n = schedule.count_before(phases.total());
    for i in 0..n {
        let offset = schedule.due(i);
        let measure = match phases.at(offset) {
            Phase::Warmup => false,
            Phase::Measure => true,
            Phase::Done => break,
        };
        let due = start + offset;
        tokio::time::sleep_until(due).await;
        // Waiting for a slot delays the send, never the due time: the wait is measured.
        let Ok(permit) = slots.clone().acquire_owned().await else {
            break;
        };
        let shared = shared.clone();
        tasks.spawn(async move {
            let _ = flow(shared, i, due, measure).await;
            drop(permit);
        });
        // Reap finished tasks so the set does not grow with the run.
        while tasks.try_join_next().is_some() {}
    }
    let _ = tokio::time::timeout(drain, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
}

async fn closed_loop(shared: &Arc<Shared>, connections: usize, phases: Phases, start: Instant, drain: Duration) {
    let next = Arc::new(std::sync::atomic::AtomicU64::new(0));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..connections {
        let shared = shared.clone();
        let next = next.clone();
        tasks.spawn(async move {
            loop {
                let now = Instant::now();
                let measure = match phases.at(now.saturating_duration_since(start)) {
                    Phase::Warmup => false,
                    Phase::Measure => true,
                    Phase::Done => break,
                };
                let i = next.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
                let _ = flow(shared.clone(), i, now, measure).await;
            }
        });
    }
    let end = start + phases.total() + drain;
    let _ = tokio::time::timeout_at(end, async { while tasks.join_next().await.is_some() {} }).await;
    tasks.abort_all();
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_cards_are_distinct_luhn_valid_visa_numbers() {
        let a = flow_card("00000000deadbeef", 1);
        let b = flow_card("00000000deadbeef", 2);
        assert_ne!(a, b);
        for c in [&a, &b] {
            assert_eq!(c.len(), 16);
            assert!(c.starts_with("424242"));
            assert!(pay_core::card::luhn_valid(c), "{c}");
        }
        assert_eq!(luhn_check_digit("424242424242424"), 2);
    }
}
