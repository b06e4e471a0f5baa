//! Recording latencies and outcomes, and the report printed at the end (text or JSON).

use hdrhistogram::Histogram;
use serde::Serialize;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::time::Duration;

/// One request of a payment flow, or the whole flow.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub enum Step {
    /// `POST /v1/payment_methods` (tokenize the card).
    PaymentMethod,
    /// `POST /v1/payment_intents` with `confirm=true` (authorize, and capture when automatic).
    Confirm,
    /// `POST /v1/payment_intents/{id}/capture`.
    Capture,
    /// `POST /v1/refunds`.
    Refund,
    /// The whole flow, from its due time to its last answer.
    Flow,
}

impl Step {
    /// Every step, in report order.
    pub const ALL: [Step; 5] = [
        Step::PaymentMethod,
        Step::Confirm,
        Step::Capture,
        Step::Refund,
        Step::Flow,
    ];

    /// The step's name in reports.
    pub fn name(self) -> &'static str {
        match self {
            Step::PaymentMethod => "payment_method",
            Step::Confirm => "confirm",
            Step::Capture => "capture",
            Step::Refund => "refund",
            Step::Flow => "flow",
        }
    }
}

/// Highest latency recorded, in microseconds (larger values are clamped to it).
const MAX_MICROS: u64 = 120_000_000;

fn new_histogram() -> Histogram<u64> {
    // 1 µs .. 120 s at 3 significant digits: constant, valid bounds.
    Histogram::new_with_bounds(1, MAX_MICROS, 3).expect("constant histogram bounds are valid")
}

/// Everything recorded during the measurement window.
#[derive(Debug)]
pub struct Recorder {
    steps: BTreeMap<Step, Histogram<u64>>,
    errors: BTreeMap<String, u64>,
    flows_ok: u64,
    flows_failed: u64,
    confirmed: u64,
    expected_declines: u64,
    max_send_lag: Duration,
    /// Confirm latencies by the second of the window in which the request was sent.
    timeline: Vec<Histogram<u64>>,
}

/// Longest window the per-second timeline covers (a day); later seconds share its last entry.
const MAX_TIMELINE_SECS: usize = 86_400;

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder {
            steps: Step::ALL.iter().map(|s| (*s, new_histogram())).collect(),
            errors: BTreeMap::new(),
            flows_ok: 0,
            flows_failed: 0,
            confirmed: 0,
            expected_declines: 0,
            max_send_lag: Duration::ZERO,
            timeline: Vec::new(),
        }
    }

    /// Records a confirm request sent `offset` after the measurement window opened, for the
    /// per-second timeline: a stall on the server shows as the seconds whose p99 jumps, which
    /// one percentile over the whole window cannot tell from an even spread.
    pub fn confirm_sent(&mut self, offset: Duration, latency: Duration) {
        let second = (offset.as_secs() as usize).min(MAX_TIMELINE_SECS - 1);
        while self.timeline.len() <= second {
            self.timeline.push(new_histogram());
        }
        self.timeline[second].saturating_record(micros(latency));
    }

    /// Records a successful step's latency.
    pub fn latency(&mut self, step: Step, latency: Duration) {
        if let Some(h) = self.steps.get_mut(&step) {
            h.saturating_record(micros(latency));
        }
    }

    /// Records an error of a kind (`http 500 api_error`, `network timeout`, …).
    pub fn error(&mut self, kind: &str) {
        *self.errors.entry(kind.to_owned()).or_default() += 1;
    }

    /// Records the end of a flow.
    pub fn flow_done(&mut self, ok: bool) {
        if ok {
            self.flows_ok += 1;
        } else {
            self.flows_failed += 1;
        }
    }

    /// Records a payment that the confirm step left succeeded or awaiting capture.
    pub fn confirmed(&mut self) {
        self.confirmed += 1;
    }

    /// Records a decline the card mix asked for.
    pub fn expected_decline(&mut self) {
        self.expected_declines += 1;
    }

    /// Records how late a flow's first request left compared with its due time.
    pub fn send_lag(&mut self, lag: Duration) {
        self.max_send_lag = self.max_send_lag.max(lag);
    }

    /// The report of this recording over a measurement window of `window`.
    pub fn report(&self, meta: RunMeta, window: Duration) -> Report {
        let secs = window.as_secs_f64().max(1e-9);
        let steps = Step::ALL
            .iter()
            .filter_map(|s| self.steps.get(s).map(|h| (*s, h)))
            .map(|(s, h)| StepStats {
                step: s.name(),
                count: h.len(),
                per_second: h.len() as f64 / secs,
                mean_ms: if h.is_empty() { 0.0 } else { h.mean() / 1000.0 },
                p50_ms: quantile_ms(h, 0.50),
                p90_ms: quantile_ms(h, 0.90),
                p99_ms: quantile_ms(h, 0.99),
                p999_ms: quantile_ms(h, 0.999),
                max_ms: max_ms(h),
            })
            .collect();
        Report {
            meta,
            window_secs: window.as_secs_f64(),
            flows_ok: self.flows_ok,
            flows_failed: self.flows_failed,
            flows_per_second: self.flows_ok as f64 / secs,
            confirmed: self.confirmed,
            confirmed_per_second: self.confirmed as f64 / secs,
            expected_declines: self.expected_declines,
            error_count: self.errors.values().sum(),
            errors: self.errors.clone(),
            max_send_lag_ms: self.max_send_lag.as_secs_f64() * 1000.0,
            steps,
            timeline: self
                .timeline
                .iter()
                .enumerate()
                .map(|(second, h)| SecondStats {
                    second: second as u64,
                    confirms: h.len(),
                    p50_ms: quantile_ms(h, 0.50),
                    p99_ms: quantile_ms(h, 0.99),
                    max_ms: max_ms(h),
                })
                .collect(),
            flows_run_total: 0,
        }
    }
}

/// A latency as the histograms record it: whole microseconds, from 1 to [`MAX_MICROS`].
fn micros(latency: Duration) -> u64 {
    (latency.as_micros().min(u128::from(MAX_MICROS)) as u64).max(1)
}

/// The largest recorded latency in ms (0 for an empty histogram).
fn max_ms(h: &Histogram<u64>) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.max() as f64 / 1000.0
    }
}

fn quantile_ms(h: &Histogram<u64>, q: f64) -> f64 {
    if h.is_empty() {
        0.0
    } else {
        h.value_at_quantile(q) as f64 / 1000.0
    }
}

/// How the run was driven (echoed in the report).
#[derive(Debug, Clone, Serialize)]
pub struct RunMeta {
    /// `open` or `closed`.
    pub mode: &'static str,
    /// Offered flows per second (open loop).
    pub target_rate: Option<f64>,
    /// Connections (closed loop) or the in-flight cap (open loop).
    pub connections: usize,
    /// Warmup, seconds.
    pub warmup_secs: f64,
    /// Share of manual captures.
    pub capture_manual_share: f64,
    /// Share of refunds.
    pub refund_share: f64,
    /// Share of declining cards.
    pub decline_share: f64,
}

/// Latency figures of one step over the measurement window.
#[derive(Debug, Clone, Serialize)]
pub struct StepStats {
    /// Step name.
    pub step: &'static str,
    /// Successful requests (or flows).
    pub count: u64,
    /// Of them per second.
    pub per_second: f64,
    /// Mean latency, ms.
    pub mean_ms: f64,
    /// Median, ms.
    pub p50_ms: f64,
    /// 90th percentile, ms.
    pub p90_ms: f64,
    /// 99th percentile, ms.
    pub p99_ms: f64,
    /// 99.9th percentile, ms.
    pub p999_ms: f64,
    /// Maximum, ms.
    pub max_ms: f64,
}

/// The confirm requests sent in one second of the measurement window.
#[derive(Debug, Clone, Serialize)]
pub struct SecondStats {
    /// Seconds since the window opened.
    pub second: u64,
    /// Confirm requests sent in that second that succeeded.
    pub confirms: u64,
    /// Their median latency, ms.
    pub p50_ms: f64,
    /// Their 99th percentile, ms.
    pub p99_ms: f64,
    /// Their maximum, ms.
    pub max_ms: f64,
}

/// The result of a run.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    /// How the run was driven.
    pub meta: RunMeta,
    /// Measurement window, seconds.
    pub window_secs: f64,
    /// Flows that completed every step as planned (declines asked for count as completed).
    pub flows_ok: u64,
    /// Flows that met an error.
    pub flows_failed: u64,
    /// Completed flows per second.
    pub flows_per_second: f64,
    /// Payments the confirm step left `succeeded` or `requires_capture`.
    pub confirmed: u64,
    /// Of them per second.
    pub confirmed_per_second: f64,
    /// Declines the card mix asked for.
    pub expected_declines: u64,
    /// Every error.
    pub error_count: u64,
    /// Errors by kind.
    pub errors: BTreeMap<String, u64>,
    /// Largest delay between a flow's due time and its first request leaving (open loop; a
    /// large value means the load generator itself could not keep up).
    pub max_send_lag_ms: f64,
    /// Latency per step.
    pub steps: Vec<StepStats>,
    /// Confirm latency by the second its request was sent in.
    pub timeline: Vec<SecondStats>,
    /// Flows run in total, warmup included (to relate server-side counters to flows).
    pub flows_run_total: u64,
}

impl Report {
    /// The step figures of `step`.
    pub fn step(&self, step: Step) -> Option<&StepStats> {
        self.steps.iter().find(|s| s.step == step.name())
    }

    /// The report as JSON.
    pub fn to_json(&self) -> serde_json::Value {
        serde_json::to_value(self).unwrap_or(serde_json::Value::Null)
    }

    /// The report as text for a terminal.
    pub fn to_text(&self) -> String {
        let mut s = String::new();
        let m = &self.meta;
        let _ = match m.target_rate {
            Some(r) => writeln!(
                s,
                "mode: open loop at {r:.1} flows/s (at most {} in flight), warmup {:.1} s, window {:.1} s",
                m.connections, m.warmup_secs, self.window_secs
            ),
            None => writeln!(
                s,
                "mode: closed loop, {} connections, warmup {:.1} s, window {:.1} s",
                m.connections, m.warmup_secs, self.window_secs
            ),
        };
        let _ = writeln!(
            s,
            "mix: manual capture {:.0}%, refund {:.0}%, declining card {:.0}%",
            m.capture_manual_share * 100.0,
            m.refund_share * 100.0,
            m.decline_share * 100.0
        );
        let _ = writeln!(
            s,
            "flows: {} ok, {} failed ({:.1}/s); confirmed payments: {} ({:.1}/s); expected declines: {}",
            self.flows_ok,
            self.flows_failed,
            self.flows_per_second,
            self.confirmed,
            self.confirmed_per_second,
            self.expected_declines
        );
        if m.target_rate.is_some() {
            let _ = writeln!(s, "max send lag behind schedule: {:.1} ms", self.max_send_lag_ms);
        }
        let _ = writeln!(
            s,
            "\n{:<15} {:>8} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9} {:>9}",
            "step", "count", "per s", "mean ms", "p50 ms", "p90 ms", "p99 ms", "p99.9 ms", "max ms"
        );
        for st in &self.steps {
            let _ = writeln!(
                s,
                "{:<15} {:>8} {:>9.1} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2} {:>9.2}",
                st.step, st.count, st.per_second, st.mean_ms, st.p50_ms, st.p90_ms, st.p99_ms, st.p999_ms, st.max_ms
            );
        }
        let _ = writeln!(s, "\nerrors: {}", self.error_count);
        for (kind, n) in &self.errors {
            let _ = writeln!(s, "  {kind}: {n}");
        }
        s
    }

    /// The per-second confirm timeline as text, one line per second of the window.
    pub fn timeline_text(&self) -> String {
        let mut s = format!(
            "{:>6} {:>9} {:>9} {:>9} {:>9}\n",
            "second", "confirms", "p50 ms", "p99 ms", "max ms"
        );
        for t in &self.timeline {
            let _ = writeln!(
                s,
                "{:>6} {:>9} {:>9.2} {:>9.2} {:>9.2}",
                t.second, t.confirms, t.p50_ms, t.p99_ms, t.max_ms
            );
        }
        s
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn meta() -> RunMeta {
        RunMeta {
            mode: "open",
            target_rate: Some(100.0),
            connections: 64,
            warmup_secs: 1.0,
            capture_manual_share: 0.1,
            refund_share: 0.05,
            decline_share: 0.0,
        }
    }

    #[test]
    fn percentiles_come_from_the_recorded_latencies() {
        let mut r = Recorder::new();
        // 1..=1000 ms: p50 = 500 ms, p90 = 900, p99 = 990, p99.9 = 999 (within HDR precision).
        for ms in 1..=1000u64 {
            r.latency(Step::Confirm, Duration::from_millis(ms));
        }
        let rep = r.report(meta(), Duration::from_secs(10));
        let c = rep.step(Step::Confirm).unwrap();
        assert_eq!(c.count, 1000);
        assert!((c.per_second - 100.0).abs() < 1e-9);
        for (got, want) in [
            (c.p50_ms, 500.0),
            (c.p90_ms, 900.0),
            (c.p99_ms, 990.0),
            (c.p999_ms, 999.0),
        ] {
            assert!((got - want).abs() / want < 0.002, "got {got}, want {want}");
        }
        assert!((c.max_ms - 1000.0).abs() < 1.0);
        assert!((c.mean_ms - 500.5).abs() < 1.0);
        let pm = rep.step(Step::PaymentMethod).unwrap();
        assert_eq!((pm.count, pm.p99_ms, pm.max_ms), (0, 0.0, 0.0));
    }

    #[test]
    fn counts_errors_and_rates() {
        let mut r = Recorder::new();
        for _ in 0..30 {
            r.flow_done(true);
            r.confirmed();
        }
        r.flow_done(false);
        r.error("http 500 api_error");
        r.error("http 500 api_error");
        r.error("network timeout");
        r.expected_decline();
        r.send_lag(Duration::from_millis(3));
        r.send_lag(Duration::from_millis(1));
        let rep = r.report(meta(), Duration::from_secs(3));
        assert_eq!(rep.flows_ok, 30);
        assert_eq!(rep.flows_failed, 1);
        assert!((rep.flows_per_second - 10.0).abs() < 1e-9);
        assert!((rep.confirmed_per_second - 10.0).abs() < 1e-9);
        assert_eq!(rep.error_count, 3);
        assert_eq!(rep.errors["http 500 api_error"], 2);
        assert_eq!(rep.expected_declines, 1);
        assert!((rep.max_send_lag_ms - 3.0).abs() < 1e-9);
    }

    #[test]
    fn extreme_latencies_are_clamped_not_lost() {
        let mut r = Recorder::new();
        r.latency(Step::Flow, Duration::from_secs(3600));
        r.latency(Step::Flow, Duration::ZERO);
        let rep = r.report(meta(), Duration::from_secs(1));
        let f = rep.step(Step::Flow).unwrap();
        assert_eq!(f.count, 2);
        assert!(f.max_ms >= 119_000.0);
    }

    #[test]
    fn text_and_json_carry_every_figure() {
        let mut r = Recorder::new();
        r.latency(Step::Confirm, Duration::from_millis(4));
        r.flow_done(true);
        r.confirmed();
        r.error("http 402 card_declined");
        let rep = r.report(meta(), Duration::from_secs(2));
        let text = rep.to_text();
        assert!(text.contains("open loop at 100.0 flows/s"), "{text}");
        assert!(text.contains("confirmed payments: 1 (0.5/s)"), "{text}");
        assert!(text.contains("http 402 card_declined: 1"), "{text}");
        for st in Step::ALL {
            assert!(text.contains(st.name()), "{text}");
        }
        let j = rep.to_json();
        assert_eq!(j["confirmed"], 1);
        assert_eq!(j["errors"]["http 402 card_declined"], 1);
        assert_eq!(j["meta"]["mode"], "open");
        let confirm = j["steps"]
            .as_array()
            .unwrap()
            .iter()
            .find(|s| s["step"] == "confirm")
            .unwrap();
        assert_eq!(confirm["count"], 1);
        assert!(confirm["p99_ms"].as_f64().unwrap() > 3.9);
    }

    #[test]
    fn the_timeline_puts_each_confirm_in_the_second_it_was_sent() {
        let mut r = Recorder::new();
        for ms in 1..=100u64 {
            r.confirm_sent(Duration::from_millis(10 * ms), Duration::from_millis(5));
        }
        r.confirm_sent(Duration::from_millis(2_500), Duration::from_millis(400));
        let rep = r.report(meta(), Duration::from_secs(3));
        let counts: Vec<u64> = rep.timeline.iter().map(|t| t.confirms).collect();
        assert_eq!(counts, vec![99, 1, 1], "0.01..0.99 s, then 1.00 s, then 2.5 s");
        assert!((rep.timeline[2].p99_ms - 400.0).abs() < 1.0, "{:?}", rep.timeline[2]);
        assert!((rep.timeline[0].p99_ms - 5.0).abs() < 0.01, "{:?}", rep.timeline[0]);
        let text = rep.timeline_text();
        assert_eq!(text.lines().count(), 4, "{text}");
        assert!(rep.to_json()["timeline"][2]["max_ms"]
            .as_f64()
            .is_some_and(|m| m > 399.0));
        let mut far = Recorder::new();
        far.confirm_sent(Duration::from_secs(10_000_000), Duration::from_millis(1));
        assert_eq!(
            far.report(meta(), Duration::from_secs(1)).timeline.len(),
            MAX_TIMELINE_SECS
        );
    }
}
