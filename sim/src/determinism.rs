//! Comparing the traces of two runs of one seed.

use crate::world::TraceEvent;

/// Where two traces first differ.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Divergence {
    /// Index of the first differing event.
    pub index: usize,
    /// The event in the first trace (or `(end)`).
    pub first: String,
    /// The event in the second trace (or `(end)`).
    pub second: String,
}

/// The first event at which `a` and `b` differ, if any.
pub fn first_divergence(a: &[TraceEvent], b: &[TraceEvent]) -> Option<Divergence> {
    let n = a.len().max(b.len());
    (0..n).find_map(|i| {
        let x = a.get(i).map(|e| e.line());
        let y = b.get(i).map(|e| e.line());
        (x != y).then(|| Divergence {
            index: i,
            first: x.unwrap_or_else(|| "(end)".into()),
            second: y.unwrap_or_else(|| "(end)".into()),
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ev(t: u64, d: &str) -> TraceEvent {
        TraceEvent {
            t_ms: t,
            host: "h".into(),
            kind: "k".into(),
            detail: d.into(),
        }
    }

    #[test]
    fn finds_the_first_difference() {
        let a = vec![ev(1, "a"), ev(2, "b"), ev(3, "c")];
        assert_eq!(first_divergence(&a, &a), None);
        let b = vec![ev(1, "a"), ev(2, "x")];
        assert_eq!(first_divergence(&a, &b).unwrap().index, 1);
        let c = vec![ev(1, "a"), ev(2, "b")];
        assert_eq!(first_divergence(&a, &c).unwrap().second, "(end)");
    }
}
