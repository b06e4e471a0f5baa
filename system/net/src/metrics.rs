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

/// A label set's identity: its sorted pairs as `key\0value\x01key\0value…`. Ordering by it is
/// ordering by the sorted pairs (for label text without control characters), and it can be
/// built into a reused buffer, so recording into an existing series allocates nothing.
type Key = String;

/// One series: its labels (for rendering) and its value.
struct Series<V> {
    labels: Labels,
    value: V,
}

#[derive(Default)]
struct Histogram {
    buckets: Vec<u64>,
    sum: f64,
    count: u64,
}

#[derive(Default)]
struct Family {
    help: String,
    counters: BTreeMap<Key, Series<u64>>,
    gauges: BTreeMap<Key, Series<f64>>,
    histograms: BTreeMap<Key, Series<Histogram>>,
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

/// Label sets have a handful of pairs; more than this are sorted on the heap.
const INLINE_PAIRS: usize = 8;

/// Writes the [`Key`] of `pairs` into `out` (cleared first).
fn write_key(pairs: &[(&str, &str)], out: &mut String) {
    out.clear();
    let mut push = |sorted: &[(&str, &str)]| {
        for (i, (k, v)) in sorted.iter().enumerate() {
            if i > 0 {
                out.push('\u{1}');
            }
            out.push_str(k);
            out.push('\0');
            out.push_str(v);
        }
    };
    if pairs.len() <= INLINE_PAIRS {
        let mut buf = [("", ""); INLINE_PAIRS];
        buf[..pairs.len()].copy_from_slice(pairs);
        let sorted = &mut buf[..pairs.len()];
        sorted.sort_unstable();
        push(sorted);
    } else {
        let mut sorted = pairs.to_vec();
        sorted.sort_unstable();
        push(&sorted);
    }
}

thread_local! {
    /// The key buffer of this thread (reused by every recording).
    static KEY: std::cell::RefCell<String> = const { std::cell::RefCell::new(String::new()) };
}

/// Runs `f` on the series of `pairs` in `map`, creating it with `init` when new. Allocates
/// only when the series is new.
fn with_series<V, R>(
    map: &mut BTreeMap<Key, Series<V>>,
    pairs: &[(&str, &str)],
    init: impl FnOnce() -> V,
    f: impl FnOnce(&mut V) -> R,
) -> R {
    KEY.with(|cell| {
        let mut key = cell.borrow_mut();
        write_key(pairs, &mut key);
        if let Some(series) = map.get_mut(key.as_str()) {
            return f(&mut series.value);
        }
        let series = map.entry(key.clone()).or_insert(Series {
            labels: labels(pairs),
            value: init(),
        });
        f(&mut series.value)
    })
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
        if let Some(fam) = guard.get_mut(name) {
            return f(fam);
        }
        let fam = guard.entry(name.to_owned()).or_insert_with(|| Family {
            help: help.to_owned(),
            ..Family::default()
        });
        f(fam)
    }

    /// Adds `by` to counter `name{labels}`.
    pub fn inc(&self, name: &str, help: &str, label_pairs: &[(&str, &str)], by: u64) {
        self.with(name, help, |f| {
            with_series(&mut f.counters, label_pairs, || 0, |c| *c += by)
        });
    }

    /// Sets gauge `name{labels}`.
    pub fn set(&self, name: &str, help: &str, label_pairs: &[(&str, &str)], value: f64) {
        self.with(name, help, |f| {
            with_series(&mut f.gauges, label_pairs, || value, |g| *g = value)
        });
    }

    /// Records `value` (seconds) in histogram `name{labels}`.
    pub fn observe(&self, name: &str, help: &str, label_pairs: &[(&str, &str)], value: f64) {
        self.with(name, help, |f| {
            let init = || Histogram {
                buckets: vec![0; LATENCY_BUCKETS.len()],
                ..Histogram::default()
            };
            with_series(&mut f.histograms, label_pairs, init, |h| {
                for (i, b) in LATENCY_BUCKETS.iter().enumerate() {
                    if value <= *b {
                        h.buckets[i] += 1;
                    }
                }
                h.sum += value;
                h.count += 1;
            })
        });
    }

    /// The current value of a counter (tests and health checks).
    pub fn counter(&self, name: &str, label_pairs: &[(&str, &str)]) -> u64 {
        let guard = match self.inner.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let mut key = String::new();
        write_key(label_pairs, &mut key);
        guard
            .get(name)
            .and_then(|f| f.counters.get(&key).map(|s| s.value))
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
            for Series { labels: l, value: v } in fam.counters.values() {
                let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
            }
            for Series { labels: l, value: v } in fam.gauges.values() {
                let _ = writeln!(out, "{name}{} {v}", fmt_labels(l, None));
            }
            for Series { labels: l, value: h } in fam.histograms.values() {
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
/// tokio's clock, which the simulator virtualises. Recording into an existing series
/// allocates nothing (the route is shared, the method and status are static text).
pub async fn track(State(m): State<HttpMetrics>, req: Request, next: Next) -> Response {
    let route = req.extensions().get::<MatchedPath>().cloned();
    let method = req.method().clone();
    let start = tokio::time::Instant::now();
    let resp = next.run(req).await;
    let secs = start.elapsed().as_secs_f64();
    let status = resp.status();
    let l = [
        ("service", m.service),
        ("method", method.as_str()),
        ("route", route.as_ref().map_or("unmatched", |r| r.as_str())),
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

    #[test]
    fn label_order_does_not_matter_and_output_is_sorted() {
        let m = Metrics::new();
        m.inc("c", "C.", &[("b", "2"), ("a", "1")], 1);
        m.inc("c", "C.", &[("a", "1"), ("b", "2")], 1);
        m.inc("c", "C.", &[("a", "0"), ("b", "9")], 5);
        m.inc("c", "C.", &[("a", "1")], 7);
        assert_eq!(m.counter("c", &[("a", "1"), ("b", "2")]), 2);
        let text = m.render();
        let lines: Vec<&str> = text.lines().filter(|l| !l.starts_with('#')).collect();
        assert_eq!(
            lines,
            vec!["c{a=\"0\",b=\"9\"} 5", "c{a=\"1\"} 7", "c{a=\"1\",b=\"2\"} 2"]
        );
    }
}
