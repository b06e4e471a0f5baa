//! Token-bucket rate limiting keyed by any string (API key, client IP).
//!
//! Time comes from the caller (the service's `Env` clock), so limits behave identically under
//! the simulator's virtual time. Memory is bounded: when the table is full, buckets that have
//! refilled completely (indistinguishable from new ones) are dropped first, then the oldest.

use pay_core::Timestamp;
use std::collections::BTreeMap;
use std::sync::Mutex;

/// Bucket size and refill rate.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct RateLimit {
    /// Sustained requests per second.
    pub per_second: f64,
    /// Burst size (bucket capacity).
    pub burst: f64,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    updated_ms: i64,
}

/// A set of token buckets.
pub struct RateLimiter {
    limit: RateLimit,
    max_keys: usize,
    buckets: Mutex<BTreeMap<String, Bucket>>,
}

impl RateLimiter {
    /// A limiter applying `limit` to each key, tracking at most `max_keys` keys.
    pub fn new(limit: RateLimit, max_keys: usize) -> RateLimiter {
        RateLimiter {
            limit,
            max_keys: max_keys.max(1),
            buckets: Mutex::new(BTreeMap::new()),
        }
    }

    /// Takes one token for `key` at `now`: `Ok` if allowed, else `Err(seconds to wait)`.
    pub fn check(&self, key: &str, now: Timestamp) -> Result<(), u64> {
        let mut guard = match self.buckets.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        let limit = self.limit;
        if !guard.contains_key(key) && guard.len() >= self.max_keys {
            let full_after_ms = (limit.burst / limit.per_second.max(f64::MIN_POSITIVE) * 1000.0) as i64;
            guard.retain(|_, b| now.millis() - b.updated_ms < full_after_ms);
            if guard.len() >= self.max_keys {
                if let Some(oldest) = guard.iter().min_by_key(|(_, b)| b.updated_ms).map(|(k, _)| k.clone()) {
                    guard.remove(&oldest);
                }
            }
        }
        let b = guard.entry(key.to_owned()).or_insert(Bucket {
            tokens: limit.burst,
            updated_ms: now.millis(),
        });
        let elapsed = (now.millis() - b.updated_ms).max(0) as f64 / 1000.0;
        b.tokens = (b.tokens + elapsed * limit.per_second).min(limit.burst);
        b.updated_ms = b.updated_ms.max(now.millis());
        if b.tokens >= 1.0 {
            b.tokens -= 1.0;
            Ok(())
        } else {
            let wait = (1.0 - b.tokens) / limit.per_second.max(f64::MIN_POSITIVE);
            Err(wait.ceil().max(1.0) as u64)
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn burst_then_refill() {
        let l = RateLimiter::new(
            RateLimit {
                per_second: 2.0,
                burst: 3.0,
            },
            10,
        );
        let t = Timestamp::from_secs(100);
        assert!(l.check("k", t).is_ok());
        assert!(l.check("k", t).is_ok());
        assert!(l.check("k", t).is_ok());
        assert_eq!(l.check("k", t), Err(1));
        assert!(l.check("other", t).is_ok(), "keys are independent");
        assert!(
            l.check("k", Timestamp::from_millis(100_500)).is_ok(),
            "half a second refills one token"
        );
        assert!(l.check("k", Timestamp::from_millis(100_500)).is_err());
    }

    #[test]
    fn memory_stays_bounded() {
        let l = RateLimiter::new(
            RateLimit {
                per_second: 1.0,
                burst: 1.0,
            },
            3,
        );
        for i in 0..100 {
            let _ = l.check(&format!("ip{i}"), Timestamp::from_secs(i));
        }
        assert!(l.buckets.lock().unwrap().len() <= 3);
    }
}
