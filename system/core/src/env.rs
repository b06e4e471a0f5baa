//! The seam between the real and the simulated world for time and randomness.
//!
//! Service logic never reads the OS clock or OS randomness: it asks the [`Env`] it was built
//! with. In production the `Env` carries [`SystemClock`] and [`OsEntropy`]; in the simulator it
//! carries [`VirtualClock`] (a fixed epoch plus tokio's virtual elapsed time, plus injectable
//! skew) and [`SeededEntropy`] (a ChaCha20 stream derived from the run seed and the host name),
//! which is what makes a seed replay bit for bit. Timers and timeouts use tokio time directly,
//! which the simulator virtualises.

use rand_chacha::ChaCha20Rng;
use rand_core::{OsRng, RngCore, SeedableRng};
use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};
use std::fmt;
use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// A wall-clock instant: milliseconds since the Unix epoch.
#[derive(Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, Deserialize, Default)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

impl Timestamp {
    /// From milliseconds since the Unix epoch.
    pub const fn from_millis(ms: i64) -> Timestamp {
        Timestamp(ms)
    }
    /// From whole seconds since the Unix epoch.
    pub const fn from_secs(s: i64) -> Timestamp {
        Timestamp(s.saturating_mul(1000))
    }
    /// Milliseconds since the Unix epoch.
    pub const fn millis(self) -> i64 {
        self.0
    }
    /// Whole seconds since the Unix epoch (what Stripe's `created` fields carry).
    pub const fn unix_secs(self) -> i64 {
        self.0.div_euclid(1000)
    }
    /// This instant moved forward by `d` (saturating).
    pub fn plus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
    /// This instant moved back by `d` (saturating).
    pub fn minus(self, d: Duration) -> Timestamp {
        Timestamp(self.0.saturating_sub(i64::try_from(d.as_millis()).unwrap_or(i64::MAX)))
    }
    /// Time from `earlier` to `self`, zero if `earlier` is later.
    pub fn since(self, earlier: Timestamp) -> Duration {
        Duration::from_millis(u64::try_from(self.0.saturating_sub(earlier.0)).unwrap_or(0))
    }
}

impl fmt::Debug for Timestamp {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", self.to_rfc3339())
    }
}

impl Timestamp {
    /// RFC 3339 in UTC with millisecond precision, e.g. `2026-11-25T10:00:00.000Z`.
    pub fn to_rfc3339(self) -> String {
        let secs = self.unix_secs();
        let ms = self.0.rem_euclid(1000);
        let days = secs.div_euclid(86_400);
        let rem = secs.rem_euclid(86_400);
        let (y, m, d) = civil_from_days(days);
        format!(
            "{y:04}-{m:02}-{d:02}T{:02}:{:02}:{:02}.{ms:03}Z",
            rem / 3600,
            (rem % 3600) / 60,
            rem % 60
        )
    }

    /// The calendar (year, month) of this instant in UTC, used for card expiry checks.
    pub fn year_month(self) -> (i32, u32) {
        let (y, m, _) = civil_from_days(self.unix_secs().div_euclid(86_400));
        (y as i32, m)
    }
}

/// Howard Hinnant's days-to-civil algorithm (proleptic Gregorian, UTC).
fn civil_from_days(z: i64) -> (i64, u32, u32) {
    let z = z + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let y = yoe + era * 400;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let d = (doy - (153 * mp + 2) / 5 + 1) as u32;
    let m = if mp < 10 { mp + 3 } else { mp - 9 } as u32;
    (if m <= 2 { y + 1 } else { y }, m, d)
}

/// A source of wall-clock time.
pub trait Clock: Send + Sync + 'static {
    /// The current wall-clock time as this host sees it.
    fn now(&self) -> Timestamp;
}

/// The operating system's clock: the only `Clock` that reads real time. Production only.
#[derive(Debug, Default, Clone, Copy)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let d = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(i64::try_from(d.as_millis()).unwrap_or(i64::MAX))
    }
}

/// A clock that only moves when told to: tests that need "a day later" without sleeping.
#[derive(Debug)]
pub struct ManualClock {
    now: AtomicI64,
}

impl ManualClock {
    /// A clock stopped at `start`.
    pub fn new(start: Timestamp) -> ManualClock {
        ManualClock {
            now: AtomicI64::new(start.0),
        }
    }
    /// Moves the clock forward by `d`.
    pub fn advance(&self, d: Duration) {
        self.now
            .fetch_add(i64::try_from(d.as_millis()).unwrap_or(i64::MAX), Ordering::SeqCst);
    }
    /// Sets the clock to `t` (may move backwards, to test skew handling).
    pub fn set(&self, t: Timestamp) {
        self.now.store(t.0, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.now.load(Ordering::SeqCst))
    }
}

/// Wall clock for the simulator: a fixed epoch plus the virtual time tokio reports since the
/// clock was made, plus a skew the fault injector may change at any moment.
#[derive(Debug)]
pub struct VirtualClock {
    epoch: Timestamp,
    start: tokio::time::Instant,
    skew_ms: AtomicI64,
}

impl VirtualClock {
    /// A clock reading `epoch` now. Must be created inside the (simulated) runtime.
    pub fn new(epoch: Timestamp) -> VirtualClock {
        VirtualClock {
            epoch,
            start: tokio::time::Instant::now(),
            skew_ms: AtomicI64::new(0),
        }
    }
    /// Sets this host's skew relative to true simulated time, in milliseconds.
    pub fn set_skew_ms(&self, skew: i64) {
        self.skew_ms.store(skew, Ordering::SeqCst);
    }
}

impl Clock for VirtualClock {
    fn now(&self) -> Timestamp {
        let elapsed = tokio::time::Instant::now().saturating_duration_since(self.start);
        self.epoch
            .plus(elapsed)
            .plus_signed_ms(self.skew_ms.load(Ordering::SeqCst))
    }
}

impl Timestamp {
    fn plus_signed_ms(self, ms: i64) -> Timestamp {
        Timestamp(self.0.saturating_add(ms))
    }
}

/// A source of randomness for ids, keys, nonces and jitter.
pub trait Entropy: Send + Sync + 'static {
    /// Fills `buf` with random bytes.
    fn fill_bytes(&self, buf: &mut [u8]);

    /// A random `u64`.
    fn next_u64(&self) -> u64 {
        let mut b = [0u8; 8];
        self.fill_bytes(&mut b);
        u64::from_le_bytes(b)
    }

    /// A uniformly random integer in `0..n` (`n > 0`), without modulo bias.
    fn below(&self, n: u64) -> u64 {
        let mut v = [0u64];
        self.below_each(n, &mut v);
        v[0]
    }

    /// Fills `out` with what `out.len()` calls of [`Entropy::below`] would give, in order,
    /// taking the randomness in one piece (one lock, one draw) instead of eight bytes at a time.
    /// The values are the same because `fill_bytes` is a stream: one call for `8 × k` bytes
    /// gives what `k` calls for eight give, as both implementations here (ChaCha20) do.
    fn below_each(&self, n: u64, out: &mut [u64]) {
        assert!(n > 0, "below(0)");
        let zone = u64::MAX - (u64::MAX % n);
        let mut filled = 0;
        while filled < out.len() {
            // Draw as many values as are still missing; a value outside the zone (about one
            // in 2^58 for small n) is skipped, as `below` skips it, and a new draw follows.
            let mut bytes = [0u8; 8 * 32];
            let want = (out.len() - filled).min(32);
            self.fill_bytes(&mut bytes[..8 * want]);
            for chunk in bytes[..8 * want].chunks_exact(8) {
                let mut b = [0u8; 8];
                b.copy_from_slice(chunk);
                let v = u64::from_le_bytes(b);
                if v < zone {
                    out[filled] = v % n;
                    filled += 1;
                }
            }
        }
    }

    /// A random float in `[0, 1)` with 53 bits of precision (jitter, fault rates).
    fn unit_f64(&self) -> f64 {
        (self.next_u64() >> 11) as f64 / (1u64 << 53) as f64
    }
}

/// Adapts an [`Entropy`] to `rand_core`'s traits, so crypto crates (key generation, nonces)
/// draw from the environment's randomness and replay under a seed.
pub struct EntropyRng<'a>(pub &'a dyn Entropy);

impl RngCore for EntropyRng<'_> {
    fn next_u32(&mut self) -> u32 {
        let mut b = [0u8; 4];
        self.0.fill_bytes(&mut b);
        u32::from_le_bytes(b)
    }
    fn next_u64(&mut self) -> u64 {
        self.0.next_u64()
    }
    fn fill_bytes(&mut self, dest: &mut [u8]) {
        self.0.fill_bytes(dest)
    }
    fn try_fill_bytes(&mut self, dest: &mut [u8]) -> Result<(), rand_core::Error> {
        self.0.fill_bytes(dest);
        Ok(())
    }
}

/// Every `Entropy` in this crate is a CSPRNG (ChaCha20), so the adapter may be used for keys.
impl rand_core::CryptoRng for EntropyRng<'_> {}

/// Cryptographically secure randomness seeded from the operating system. Production only.
pub struct OsEntropy {
    rng: Mutex<ChaCha20Rng>,
}

impl OsEntropy {
    /// A ChaCha20 CSPRNG seeded from the OS (refreshing the seed is unnecessary for ChaCha20).
    pub fn new() -> OsEntropy {
        let mut seed = [0u8; 32];
        OsRng.fill_bytes(&mut seed);
        OsEntropy {
            rng: Mutex::new(ChaCha20Rng::from_seed(seed)),
        }
    }
}

impl Default for OsEntropy {
    fn default() -> Self {
        OsEntropy::new()
    }
}

impl Entropy for OsEntropy {
    fn fill_bytes(&self, buf: &mut [u8]) {
        match self.rng.lock() {
            Ok(mut rng) => rng.fill_bytes(buf),
            Err(poisoned) => poisoned.into_inner().fill_bytes(buf),
        }
    }
}

/// Deterministic randomness: a ChaCha20 stream keyed by SHA-256(seed, stream name).
/// The simulator gives every host its own stream so hosts do not perturb each other.
pub struct SeededEntropy {
    rng: Mutex<ChaCha20Rng>,
}

impl SeededEntropy {
    /// The stream named `stream` (usually the host name) of run `seed`.
    pub fn new(seed: u64, stream: &str) -> SeededEntropy {
        let mut h = Sha256::new();
        h.update(b"paysim-entropy-v1");
        h.update(seed.to_le_bytes());
        h.update(stream.as_bytes());
        let key: [u8; 32] = h.finalize().into();
        SeededEntropy {
            rng: Mutex::new(ChaCha20Rng::from_seed(key)),
        }
    }
}

impl Entropy for SeededEntropy {
    fn fill_bytes(&self, buf: &mut [u8]) {
        match self.rng.lock() {
            Ok(mut rng) => rng.fill_bytes(buf),
            Err(poisoned) => poisoned.into_inner().fill_bytes(buf),
        }
    }
}

/// Everything a service takes from its world besides the network: wall clock, randomness and
/// the name of the host it runs on. Cheap to clone.
#[derive(Clone)]
pub struct Env {
    /// Wall-clock time for timestamps, expiry and retry schedules.
    pub clock: Arc<dyn Clock>,
    /// Randomness for ids, keys, nonces and jitter.
    pub entropy: Arc<dyn Entropy>,
    /// The host (or role) name, used in logs, traces and service identities.
    pub host: Arc<str>,
    /// Fault points: [`NoFaults`](crate::faults::NoFaults) except in the simulator and tests.
    pub faults: Arc<dyn crate::faults::FaultInjector>,
}

impl Env {
    /// The production environment: OS clock and OS-seeded CSPRNG.
    pub fn real(host: &str) -> Env {
        Env {
            clock: Arc::new(SystemClock),
            entropy: Arc::new(OsEntropy::new()),
            host: Arc::from(host),
            faults: Arc::new(crate::faults::NoFaults),
        }
    }

    /// A fully deterministic environment for tests: a manual clock and a seeded stream.
    pub fn deterministic(host: &str, seed: u64, start: Timestamp) -> (Env, Arc<ManualClock>) {
        let clock = Arc::new(ManualClock::new(start));
        let env = Env {
            clock: clock.clone(),
            entropy: Arc::new(SeededEntropy::new(seed, host)),
            host: Arc::from(host),
            faults: Arc::new(crate::faults::NoFaults),
        };
        (env, clock)
    }

    /// The same clock and entropy under another host name.
    pub fn with_host(&self, host: &str) -> Env {
        Env {
            host: Arc::from(host),
            ..self.clone()
        }
    }

    /// The same environment with another fault injector.
    pub fn with_faults(&self, faults: Arc<dyn crate::faults::FaultInjector>) -> Env {
        Env { faults, ..self.clone() }
    }

    /// The action for fault point `point` about `subject` (always `Proceed` in production).
    pub fn fault(&self, point: &'static str, subject: &str) -> crate::faults::FaultAction {
        self.faults.at(point, subject)
    }

    /// Shorthand for `self.clock.now()`.
    pub fn now(&self) -> Timestamp {
        self.clock.now()
    }

    /// `n` random bytes.
    pub fn random_bytes(&self, n: usize) -> Vec<u8> {
        let mut v = vec![0u8; n];
        self.entropy.fill_bytes(&mut v);
        v
    }
}

impl fmt::Debug for Env {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("Env").field("host", &self.host).finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;

    /// `below(n)` as it was written before `below_each`: one `next_u64` per try.
    fn below_one_at_a_time(e: &dyn Entropy, n: u64) -> u64 {
        let zone = u64::MAX - (u64::MAX % n);
        loop {
            let v = e.next_u64();
            if v < zone {
                return v % n;
            }
        }
    }

    /// A byte stream given in advance: u64s chosen to land outside `below`'s zone come up
    /// (which ChaCha20 does about once in 2^58 draws), then zeros.
    struct Scripted {
        bytes: Mutex<(Vec<u8>, usize)>,
    }

    impl Scripted {
        fn new(values: &[u64]) -> Scripted {
            Scripted {
                bytes: Mutex::new((values.iter().flat_map(|v| v.to_le_bytes()).collect(), 0)),
            }
        }
    }

    impl Entropy for Scripted {
        fn fill_bytes(&self, buf: &mut [u8]) {
            let mut g = self.bytes.lock().unwrap_or_else(|p| p.into_inner());
            let (bytes, at) = &mut *g;
            for b in buf.iter_mut() {
                *b = bytes.get(*at).copied().unwrap_or(0);
                *at += 1;
            }
        }
    }

    proptest! {
        /// Ids, and with them every simulator seed's outcome, depend on `below_each` giving
        /// exactly what one `below` after another gave.
        #[test]
        fn below_each_gives_what_below_gave_one_at_a_time(
            seed in any::<u64>(), n in 1u64..100_000, len in 0usize..80,
            script in proptest::collection::vec(prop_oneof![any::<u64>(), (u64::MAX - 200)..=u64::MAX], 0..100),
        ) {
            let (a, b) = (SeededEntropy::new(seed, "ids"), SeededEntropy::new(seed, "ids"));
            let mut each = vec![0u64; len];
            a.below_each(n, &mut each);
            let one: Vec<u64> = (0..len).map(|_| below_one_at_a_time(&b, n)).collect();
            prop_assert_eq!(&each, &one);
            prop_assert_eq!(a.next_u64(), b.next_u64(), "the stream continues at the same place");

            let (a, b) = (Scripted::new(&script), Scripted::new(&script));
            a.below_each(n, &mut each);
            let one: Vec<u64> = (0..len).map(|_| below_one_at_a_time(&b, n)).collect();
            prop_assert_eq!(&each, &one);
            prop_assert_eq!(a.next_u64(), b.next_u64());
        }
    }

    #[test]
    fn seeded_streams_replay_and_differ_by_name() {
        let a1 = SeededEntropy::new(7, "api");
        let a2 = SeededEntropy::new(7, "api");
        let b = SeededEntropy::new(7, "payments");
        let xs: Vec<u64> = (0..4).map(|_| a1.next_u64()).collect();
        let ys: Vec<u64> = (0..4).map(|_| a2.next_u64()).collect();
        let zs: Vec<u64> = (0..4).map(|_| b.next_u64()).collect();
        assert_eq!(xs, ys);
        assert_ne!(xs, zs);
    }

    #[test]
    fn below_stays_in_range() {
        let e = SeededEntropy::new(1, "t");
        for n in [1u64, 2, 3, 10, 1000, u64::MAX] {
            for _ in 0..100 {
                assert!(e.below(n) < n);
            }
        }
        for _ in 0..100 {
            let f = e.unit_f64();
            assert!((0.0..1.0).contains(&f));
        }
    }

    #[test]
    fn rfc3339_and_calendar() {
        assert_eq!(Timestamp::from_secs(0).to_rfc3339(), "1970-01-01T00:00:00.000Z");
        assert_eq!(
            Timestamp::from_millis(1_764_064_800_123).to_rfc3339(),
            "2025-11-25T10:00:00.123Z"
        );
        assert_eq!(Timestamp::from_secs(951_782_400).year_month(), (2000, 2)); // 2000-02-29
        assert_eq!(Timestamp::from_millis(-1).to_rfc3339(), "1969-12-31T23:59:59.999Z");
    }

    #[test]
    fn manual_clock_moves_only_when_told() {
        let c = ManualClock::new(Timestamp::from_secs(100));
        assert_eq!(c.now(), Timestamp::from_secs(100));
        c.advance(Duration::from_secs(86_400));
        assert_eq!(c.now().unix_secs(), 86_500);
    }
}
