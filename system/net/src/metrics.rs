//! A small Prometheus metrics registry: counters and histograms with labels, rendered in the
//! text exposition format at `/metrics`. Labels are kept in ordered maps, so output order is
//! stable. No global state: each process builds one registry and hands it to its services.

use axum::extract::{MatchedPath, Request, State};
use axum::middleware::Next;
use axum::response::Response;
use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::sync::{Arc, Mutex};

/// Latency buckets in seconds (0.5 ms … 10 s).
pub const LATENCY_BUCKETS: &[f64] = &[
    0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0,
];

type Labels = Vec<(String, String)>;

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Family {
    help: String,
    counters: BTreeMap<Labels, u64>,
    gauges: BTreeMap<Labels, f64>,
    histograms: BTreeMap<Labels, Histogram>,
}

/// The registry. Cheap to clone (shared).
#[derive(Clone, Default)]
pub struct Metrics {
    inner: Arc<Mutex<BTreeMap<String, Family>>>,
}

fn labels(pairs: &[(&str, &str)]) -> Labels {
    let mut v: Labels = pairs.iter().map(|(k, v)| ((*k).to_owned(), (*v).to_owned())).collect();
    v.sort();
    v
}

impl Metrics {
    /// An empty registry.
    pub fn new() -> Metrics {
        Metrics::default()
    }

    fn with<R>(&self, name: &str, help: &str, f: impl FnOnce(&mut Family) -> R) -> R {
        let mut guard = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let fam = guard.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            ..Family::default()
        });
        f(fam)
    }

    /// Adds `by` to counter `name{labels}`.
    pub fn inc(&self, name: &str, help: &str, label_pairs: &[(&str, &str)], by: u64) {
        self.with(name, help, |f| {
            *f.counters.entry(labels(label_pairs)).or_insert(0) += by
        });
    }

    /// Sets gauge `name{labels}`.
    pub fn set(&self, name: &str, help: &str, label_pairs: &[(&str, &str)], value: f64) {
        self.with(name, help, |f| {
            f.gauges.insert(labels(label_pairs), value);
        });
    }

    /// Records `value` (seconds) in histogram `name{labels}`.
    pub fn observe(&self, name: &str, help: &str, label_pairs: &[(&str, &str)], value: f64) {
        self.with(name, help, |f| {
            let h = f.histograms.entry(labels(label_pairs)).or_insert_with(|| Histogram {
                buckets: vec![0; LATENCY_BUCKETS.len()],
                ..Histogram::default()
            });
            for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                if value <= *b {
                    h.buckets[i] += 1;
                }
            }
            h.sum += value;
            h.count += 1;
        });
    }

    /// The current value of a counter (tests and health checks).
    pub fn counter(&self, name: &str, label_pairs: &[(&str, &str)]) -> u64 {
        let guard = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        guard
            .get(name)
            .and_then(|f| f.counters.get(&labels(label_pairs)).copied())
            .unwrap_or(0)
    }

    /// Renders the Prometheus text format.
    pub fn render(&self) -> String {
        let guard = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut out = String::new();
        let fmt_labels = |l: &Labels, extra: Option<(&str, String)>| -> String {
            let mut parts: Vec<String> = l.iter().map(|(k, v)| format!("{k}=\"{}\"", escape(v))).collect();
            if let Some((k, v)) = extra {
                parts.push(format!("{k}=\"{v}\""));
            }
            if parts.is_empty() {
                String::new()
            } else {
                format!("{{{}}}", parts.join(","))
            }
        };
        for (name, fam) in guard.iter() {
            let kind = if !fam.histograms.is_empty() {
                "histogram"
            } else if !fam.gauges.is_empty() {
                "gauge"
            } else {
                "counter"
            };
            let _ = writeln!(out, "# HELP {name} {}", fam.help);
            let _ = writeln!(out, "# TYPE {name} {kind}");
            for (l, v) in &fam.counters {
                let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
            }
            for (l, v) in &fam.gauges {
                let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
            }
            for (l, h) in &fam.histograms {
                for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                    let _ = writeln!(
                        out,
                        "{name}_bucket{} {}",
                        fmt_labels(l, Some(("le", b.to_string()))),
                        h.buckets[i]
                    );
                }
                let _ = writeln!(
                    out,
                    "{name}_bucket{} {}",
                    fmt_labels(l, Some(("le", "+Inf".into()))),
                    h.count
                );
                let _ = writeln!(out, "{name}_sum{} {}", fmt_labels(l, None), h.sum);
                let _ = writeln!(out, "{name}_count{} {}", fmt_labels(l, None), h.count);
            }
        }
        out
    }
}

fn escape(v: &str) -> String {
    v.replace('\\', "\\\\").replace('"', "\\\"").replace('\n', "\\n")
}

/// Which service a request metric belongs to.
#[derive(Clone)]
pub struct HttpMetrics {
    /// The registry.
    pub metrics: Metrics,
    /// Service (role) name label.
    pub service: &'static str,
}

/// Middleware counting requests and timing them by route and status. Time is measured with
/// tokio's clock, which the simulator virtualises.
pub async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let route = req
        .extensions()
        .get::<MatchedPath>()
        .map(|p| p.as_str().to_owned())
        .unwrap_or_else(|| "unmatched".to_owned());
    let method = req.method().as_str().to_owned();
    let start = tokio::time::Instant::now();
    let resp = next.run(req).await;
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status().as_u16().to_string();
    let l = [
        ("service", m.service),
        ("method", method.as_str()),
        ("route", route.as_str()),
        ("status", status.as_str()),
    ];
    m.metrics.inc(
        "http_requests_total",
        "HTTP requests by service, route and status.",
        &l,
        1,
    );
    m.metrics
        .observe("http_request_duration_seconds", "HTTP request latency.", &l[..3], secs);
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn renders_prometheus_text() {
        let m = Metrics::new();
        m.inc("payments_total", "Payments by outcome.", &[("outcome", "succeeded")], 2);
        m.observe("lat", "Latency.", &[], 0.003);
        m.set("queue_depth", "Depth.", &[("queue", "events")], 7.0);
        let text = m.render();
        assert!(text.contains("payments_total{outcome=\"succeeded\"} 2"));
        assert!(text.contains("lat_bucket{le=\"0.005\"} 1"));
        assert!(text.contains("lat_bucket{le=\"0.001\"} 0"));
        assert!(text.contains("lat_count 1"));
        assert!(text.contains("# TYPE queue_depth gauge"));
        assert_eq!(m.counter("payments_total", &[("outcome", "succeeded")]), 2);
    }
}
