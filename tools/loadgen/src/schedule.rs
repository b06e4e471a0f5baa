//! When each flow is meant to start, and which phase of the run a start falls in.
//!
//! The open-loop schedule is fixed in advance: flow `i` is *due* at `i / rate` seconds after the
//! start, whatever happened to earlier flows. Latency is measured from that due time, not from
//! the moment the request actually left, so a stalled server (or a stalled load generator)
//! shows up as latency instead of silently lowering the offered load ("coordinated omission").
//!
//! Which flows manually capture, refund or use a declining card is decided from the flow's
//! index with low-discrepancy sequences, so the shares are exact over any window and the three
//! choices are independent of each other (no two of them pick the same flows by construction).

use std::time::Duration;

/// Why a schedule cannot be built.
#[derive(Debug, thiserror::Error, PartialEq)]
pub enum ScheduleError {
    /// The rate must be a finite number above zero.
    #[error("rate must be a finite number of flows per second above 0 (got {0})")]
    BadRate(f64),
    /// A share must lie in `[0, 1]`.
    #[error("{name} must be between 0 and 1 (got {value})")]
    BadShare {
        /// Which share.
        name: &'static str,
        /// The value given.
        value: f64,
    },
}

/// Fixed-rate arrivals: flow `i` is due at `i / rate` after the start.
#[derive(Debug, Clone, Copy)]
pub struct OpenLoopSchedule {
    rate: f64,
}

impl OpenLoopSchedule {
    /// A schedule of `rate` flows per second.
    pub fn new(rate: f64) -> Result<OpenLoopSchedule, ScheduleError> {
        if !rate.is_finite() || rate <= 0.0 {
            return Err(ScheduleError::BadRate(rate));
        }
        Ok(OpenLoopSchedule { rate })
    }

    /// Flows per second.
    pub fn rate(&self) -> f64 {
        self.rate
    }

    /// When flow `i` is due, as an offset from the start. Computed from `i` directly (never
    /// by adding intervals), so rounding never accumulates into drift.
    pub fn due(&self, i: u64) -> Duration {
        Duration::from_secs_f64(i as f64 / self.rate)
    }

    /// How many flows are due strictly before `offset` (the length of the schedule for a run of
    /// that length).
    pub fn count_before(&self, offset: Duration) -> u64 {
        let exact = offset.as_secs_f64() * self.rate;
        let n = exact.ceil() as u64;
        // Guard against floating-point error at the boundary: the defining property is
        // due(n-1) < offset <= due(n).
        if n > 0 && self.due(n - 1) >= offset {
            n - 1
        } else if self.due(n) < offset {
            n + 1
        } else {
            n
        }
    }
}

/// The phase of a run a flow's due time falls in.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Phase {
    /// Before the measurement window: the flow runs (warming connections, caches, the JIT of
    /// the database's plans) but is not recorded.
    Warmup,
    /// Inside the measurement window: recorded.
    Measure,
    /// After the end: not started.
    Done,
}

/// Warmup followed by the measurement window.
#[derive(Debug, Clone, Copy)]
pub struct Phases {
    /// Length of the warmup.
    pub warmup: Duration,
    /// Length of the measurement window.
    pub duration: Duration,
}

impl Phases {
    /// The phase that a start at `offset` (from the start of the run) falls in.
    pub fn at(&self, offset: Duration) -> Phase {
        if offset < self.warmup {
            Phase::Warmup
        } else if offset < self.warmup + self.duration {
            Phase::Measure
        } else {
            Phase::Done
        }
    }

    /// The whole run (warmup plus measurement).
    pub fn total(&self) -> Duration {
        self.warmup + self.duration
    }
}

/// What a flow does beyond create-and-confirm, chosen by its index.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FlowPlan {
    /// Confirm with `capture_method=manual`, then capture.
    pub manual_capture: bool,
    /// Refund after the payment succeeded.
    pub refund: bool,
    /// Use a card the acquirer declines (an expected outcome, not an error).
    pub decline: bool,
}

/// The shares of flows that capture manually, refund, and use a declining card.
#[derive(Debug, Clone, Copy)]
pub struct Mix {
    manual_capture: f64,
    refund: f64,
    decline: f64,
}

/// Fractional part of `i * alpha` for an irrational `alpha`: an equidistributed sequence in
/// `[0, 1)` (Weyl), so `seq(i) < share` picks exactly `share` of any long run of indices.
fn weyl(i: u64, alpha: f64) -> f64 {
    // Reduce i first so precision does not decay for large indices.
    let x = (i % 1_000_000_007) as f64 * alpha;
    x - x.floor()
}

const ALPHA_CAPTURE: f64 = 0.618_033_988_749_894_9; // golden ratio - 1
const ALPHA_REFUND: f64 = 0.414_213_562_373_095_1; // sqrt(2) - 1
const ALPHA_DECLINE: f64 = 0.732_050_807_568_877_2; // sqrt(3) - 1

impl Mix {
    /// A mix; every share must lie in `[0, 1]`.
    pub fn new(manual_capture: f64, refund: f64, decline: f64) -> Result<Mix, ScheduleError> {
        for (name, value) in [
            ("capture-manual-share", manual_capture),
            ("refund-share", refund),
            ("decline-share", decline),
        ] {
            if !(0.0..=1.0).contains(&value) {
                return Err(ScheduleError::BadShare { name, value });
            }
        }
        Ok(Mix {
            manual_capture,
            refund,
            decline,
        })
    }

    /// The plan of flow `i`. A declined flow neither captures nor refunds.
    pub fn plan(&self, i: u64) -> FlowPlan {
        let decline = weyl(i, ALPHA_DECLINE) < self.decline;
        FlowPlan {
            manual_capture: !decline && weyl(i, ALPHA_CAPTURE) < self.manual_capture,
            refund: !decline && weyl(i, ALPHA_REFUND) < self.refund,
            decline,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn due_times_follow_the_rate_without_drift() {
        let s = OpenLoopSchedule::new(1000.0).unwrap();
        assert_eq!(s.due(0), Duration::ZERO);
        assert_eq!(s.due(1), Duration::from_millis(1));
        assert_eq!(s.due(1500), Duration::from_millis(1500));
        // A million intervals later the schedule is still exact to the microsecond.
        let d = s.due(1_000_000);
        assert!((d.as_secs_f64() - 1000.0).abs() < 1e-6, "{d:?}");
        let s = OpenLoopSchedule::new(3.0).unwrap();
        assert!((s.due(3).as_secs_f64() - 1.0).abs() < 1e-9);
    }

    #[test]
    fn count_before_is_the_number_of_due_times_in_the_window() {
        for rate in [1.0, 3.0, 7.5, 1000.0, 1750.0, 12_345.6] {
            let s = OpenLoopSchedule::new(rate).unwrap();
            for ms in [0u64, 1, 10, 333, 1000, 2000, 2001, 9999] {
                let w = Duration::from_millis(ms);
                let n = s.count_before(w);
                if n > 0 {
                    assert!(s.due(n - 1) < w, "rate {rate} window {w:?}: flow {} is outside", n - 1);
                }
                assert!(
                    s.due(n) >= w,
                    "rate {rate} window {w:?}: flow {n} is inside but not counted"
                );
            }
        }
        let s = OpenLoopSchedule::new(100.0).unwrap();
        assert_eq!(s.count_before(Duration::from_secs(2)), 200);
        assert_eq!(s.count_before(Duration::ZERO), 0);
    }

    #[test]
    fn bad_rates_are_refused() {
        for r in [0.0, -1.0, f64::NAN, f64::INFINITY] {
            assert!(OpenLoopSchedule::new(r).is_err(), "{r}");
        }
    }

    #[test]
    fn phases_split_warmup_measure_done() {
        let p = Phases {
            warmup: Duration::from_secs(1),
            duration: Duration::from_secs(2),
        };
        assert_eq!(p.at(Duration::ZERO), Phase::Warmup);
        assert_eq!(p.at(Duration::from_millis(999)), Phase::Warmup);
        assert_eq!(p.at(Duration::from_secs(1)), Phase::Measure);
        assert_eq!(p.at(Duration::from_millis(2999)), Phase::Measure);
        assert_eq!(p.at(Duration::from_secs(3)), Phase::Done);
        assert_eq!(p.total(), Duration::from_secs(3));
    }

    #[test]
    fn mix_shares_are_exact_and_independent() {
        let m = Mix::new(0.3, 0.2, 0.0).unwrap();
        let n = 100_000u64;
        let plans: Vec<FlowPlan> = (0..n).map(|i| m.plan(i)).collect();
        let capture = plans.iter().filter(|p| p.manual_capture).count() as f64 / n as f64;
        let refund = plans.iter().filter(|p| p.refund).count() as f64 / n as f64;
        let both = plans.iter().filter(|p| p.manual_capture && p.refund).count() as f64 / n as f64;
        assert!((capture - 0.3).abs() < 0.001, "{capture}");
        assert!((refund - 0.2).abs() < 0.001, "{refund}");
        // Independent choices: about 0.3 * 0.2 of the flows do both.
        assert!((both - 0.06).abs() < 0.01, "{both}");
        assert!(plans.iter().all(|p| !p.decline));
    }

    #[test]
    fn declined_flows_do_nothing_else_and_extremes_hold() {
        let m = Mix::new(1.0, 1.0, 0.5).unwrap();
        let plans: Vec<FlowPlan> = (0..10_000).map(|i| m.plan(i)).collect();
        let declined = plans.iter().filter(|p| p.decline).count();
        assert!((4_900..=5_100).contains(&declined), "{declined}");
        for p in &plans {
            assert_eq!(p.manual_capture, !p.decline);
            assert_eq!(p.refund, !p.decline);
        }
        let none = Mix::new(0.0, 0.0, 0.0).unwrap();
        assert!((0..1000).all(|i| none.plan(i)
            == FlowPlan {
                manual_capture: false,
                refund: false,
                decline: false
            }));
    }

    #[test]
    fn bad_shares_are_refused() {
        assert_eq!(
            Mix::new(1.5, 0.0, 0.0).unwrap_err(),
            ScheduleError::BadShare {
                name: "capture-manual-share",
                value: 1.5
            }
        );
        assert!(Mix::new(0.0, -0.1, 0.0).is_err());
        assert!(Mix::new(0.0, 0.0, f64::NAN).is_err());
    }
}
