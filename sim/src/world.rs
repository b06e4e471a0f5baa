//! The simulated world: hosts, their environments, fault injection, network taps and the trace.
//!
//! Every service host is built by `paymentd::wiring::build_role` exactly as in production; only
//! its `Env` (virtual clock with skew, seeded entropy, fault points) and its backends differ.
//! The `db` host serves an in-memory store over the simulated network; the acquirer keeps its
//! own ledger. Both keep committed data across a crash (the data lives outside the host's
//! software), while requests in flight are lost with the host.

use crate::check::{find_pans, Tap};
use async_trait::async_trait;
use pay_core::faults::{self, FaultAction, FaultInjector};
use pay_core::{Clock, Entropy, Env, SeededEntropy, Timestamp};
use pay_net::{BoxIo, BoxListener, Transport};
use pay_store::memory::MemoryBackend;
use pay_store::{Backend, Request, Response, StoreError};
use std::collections::{BTreeMap, BTreeSet};
use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicI64, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Aligns tokio's process-wide task-id counter to a multiple of four.
///
/// A current-thread tokio runtime keeps its tasks in four lists chosen by `task id & 3`, and
/// drops them list by list when it shuts down — which is what a simulated crash does. Task ids
/// come from one counter shared by the whole process, so without this the order in which a
/// crashed host's connections close (and with it the seeded latency of every later message)
/// would depend on how many tasks earlier runs in the process spawned. Aligning the counter
/// at the start of every run makes a run independent of what came before it in the process.
/// Runs in one process must not overlap (`paysim swarm` uses worker processes).
pub fn align_task_ids() {
    let Ok(rt) = tokio::runtime::Builder::new_current_thread().build() else {
        return;
    };
    for _ in 0..4 {
        let handle = rt.spawn(async {});
        let id: u64 = handle.id().to_string().parse().unwrap_or(3);
        rt.block_on(async {
            let _ = handle.await;
        });
        if id % 4 == 3 {
            return;
        }
    }
}

/// The simulation's wall-clock epoch: 2026-01-01T00:00:00Z.
pub const EPOCH_MS: i64 = 1_767_225_600_000;

/// Locks a mutex, ignoring poisoning (a panicking host must not wedge the checkers).
pub fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    match m.lock() {
        Ok(g) => g,
        Err(p) => p.into_inner(),
    }
}

/// One line of the run's trace.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct TraceEvent {
    /// Simulated time, ms since the start.
    pub t_ms: u64,
    /// Host (or `sim` for the driver).
    pub host: String,
    /// Kind: `op`, `db`, `net`, `fault`, `acquirer`, …
    pub kind: String,
    /// Details.
    pub detail: String,
}

impl TraceEvent {
    /// The line that goes into the trace hash.
    pub fn line(&self) -> String {
        format!("{:>9} {:<10} {:<8} {}", self.t_ms, self.host, self.kind, self.detail)
    }
}

/// The ordered record of everything that happened.
#[derive(Default)]
pub struct Trace {
    /// Events in order.
    pub events: Vec<TraceEvent>,
}

/// Simulated time since the start, in ms (0 outside a simulation).
pub fn sim_ms() -> u64 {
    turmoil::sim_elapsed()
        .map(|d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
        .unwrap_or(0)
}

/// Shared state of a run that hosts, clients and the driver all see.
pub struct Shared {
    /// The run seed.
    pub seed: u64,
    /// The trace.
    pub trace: Mutex<Trace>,
    /// Currently active injected faults.
    pub faults: Mutex<ActiveFaults>,
    /// Per-host clock skew, ms.
    pub skew: BTreeMap<String, Arc<AtomicI64>>,
    /// Per-host restart counters (entropy streams continue, never repeat, after a restart).
    pub incarnation: BTreeMap<String, Arc<AtomicU32>>,
    /// Card numbers seen per link.
    pub taps: Mutex<BTreeMap<(String, String), BTreeSet<String>>>,
    /// The workload's card numbers.
    pub test_pans: Vec<String>,
    /// Webhook requests the merchant host received: (path, event id, status answered).
    pub webhooks: Mutex<Vec<(String, String, u16)>>,
}

impl Shared {
    /// Appends a trace event at the current simulated time.
    pub fn trace(&self, host: &str, kind: &str, detail: String) {
        lock(&self.trace).events.push(TraceEvent {
            t_ms: sim_ms(),
            host: host.to_owned(),
            kind: kind.to_owned(),
            detail,
        });
    }

    /// The taps, for the checkers.
    pub fn tap_list(&self) -> Vec<Tap> {
        lock(&self.taps)
            .iter()
            .map(|((from, to), pans)| Tap {
                from: from.clone(),
                to: to.clone(),
                pans: pans.iter().cloned().collect(),
            })
            .collect()
    }
}

/// Faults that services consult at their fault points.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ActiveFaults {
    /// Probability that the db applies a request and loses the answer.
    pub db_ambiguous: f64,
    /// The db refuses everything.
    pub db_unavailable: bool,
    /// Probability that the acquirer applies an operation and loses the answer.
    pub acquirer_lost: f64,
    /// Acquirer slowness: (delay, probability).
    pub acquirer_slow: Option<(Duration, f64)>,
    /// The HSM refuses everything.
    pub hsm_unavailable: bool,
    /// Probability that the payment service stops between authorizing and recording.
    pub crash_after_authorize: f64,
}

/// The simulated wall clock of one host: the epoch plus simulated elapsed time plus skew.
pub struct SimClock {
    skew: Arc<AtomicI64>,
}

impl Clock for SimClock {
    fn now(&self) -> Timestamp {
        Timestamp::from_millis(EPOCH_MS + sim_ms() as i64 + self.skew.load(Ordering::SeqCst))
    }
}

/// Fault points of one host, decided from the active faults and the host's own seeded stream.
pub struct SimFaults {
    host: String,
    shared: Arc<Shared>,
    rng: SeededEntropy,
}

impl FaultInjector for SimFaults {
    fn at(&self, point: &'static str, subject: &str) -> FaultAction {
        let f = lock(&self.shared.faults).clone();
        let hit = |p: f64| p > 0.0 && self.rng.unit_f64() < p;
        let action = match point {
            faults::ACQUIRER_REPLY if hit(f.acquirer_lost) => FaultAction::DropReply,
            faults::ACQUIRER_APPLY => match f.acquirer_slow {
                Some((d, p)) if hit(p) => FaultAction::Delay(d),
                _ => FaultAction::Proceed,
            },
            faults::PAYMENTS_AFTER_AUTHORIZE if hit(f.crash_after_authorize) => FaultAction::Fail,
            faults::DB_APPLY if f.db_unavailable => FaultAction::Fail,
            faults::DB_REPLY if hit(f.db_ambiguous) => FaultAction::DropReply,
            faults::HSM_CALL if f.hsm_unavailable => FaultAction::Fail,
            _ => FaultAction::Proceed,
        };
        if action != FaultAction::Proceed {
            self.shared
                .trace(&self.host, "fault", format!("{point} {subject} -> {action:?}"));
        }
        action
    }
}

/// The environment of `host` in its current incarnation.
pub fn host_env(shared: &Arc<Shared>, host: &str) -> Env {
    let inc = shared
        .incarnation
        .get(host)
        .map(|c| c.load(Ordering::SeqCst))
        .unwrap_or(0);
    let stream = format!("{host}#{inc}");
    let skew = shared.skew.get(host).cloned().unwrap_or_default();
    Env {
        clock: Arc::new(SimClock { skew }),
        entropy: Arc::new(SeededEntropy::new(shared.seed, &stream)),
        host: Arc::from(host),
        faults: Arc::new(SimFaults {
            host: host.to_owned(),
            shared: shared.clone(),
            rng: SeededEntropy::new(shared.seed, &format!("faults:{stream}")),
        }),
    }
}

/// The db host's store: the shared in-memory backend behind the db fault points, tracing every
/// request it applies.
pub struct SimDb {
    /// The data (survives crashes of the db host).
    pub mem: Arc<MemoryBackend>,
    /// Run state.
    pub shared: Arc<Shared>,
    /// The db host's environment (fault points).
    pub env: Env,
}

fn describe(req: &Request) -> String {
    match req {
        Request::Ping => "ping".into(),
        Request::Get { table, id } => format!("get {table} {id}"),
        Request::Find {
            table, index, value, ..
        } => format!("find {table} {index:?}={value}"),
        Request::List(q) => format!("list {} {}", q.table, q.account),
        Request::Commit(t) => {
            let ops: Vec<String> = t
                .ops
                .iter()
                .map(|o| match o {
                    pay_store::Op::Insert { table, record } => format!("+{table}/{}", record.id),
                    pay_store::Op::Update {
                        table,
                        record,
                        expected_version,
                    } => format!("~{table}/{}@{expected_version}", record.id),
                    pay_store::Op::Delete { table, id, .. } => format!("-{table}/{id}"),
                    pay_store::Op::Check {
                        table,
                        id,
                        expected_version,
                    } => format!("?{table}/{id}@{expected_version}"),
                })
                .collect();
            let evs: Vec<&str> = t.events.iter().map(|e| e.kind.as_str()).collect();
            format!("commit {} [{}] events [{}]", t.id, ops.join(" "), evs.join(" "))
        }
        Request::GetEvent { id, .. } => format!("get_event {id}"),
        Request::ListEvents(q) => format!("list_events {}", q.account),
        Request::EventsSince { after_seq, .. } => format!("events_since {after_seq}"),
        Request::IdemBegin(b) => format!("idem_begin {} by {}", b.key, b.owner),
        Request::IdemCheckpoint { key, .. } => format!("idem_checkpoint {key}"),
        Request::IdemFinish { key, status, .. } => format!("idem_finish {key} {status}"),
        Request::IdemRelease { key, .. } => format!("idem_release {key}"),
        Request::Reap { .. } => "reap".into(),
        Request::QueueSend { queue, messages, .. } => format!("queue_send {queue} x{}", messages.len()),
        Request::QueueReceive { queue, max, .. } => format!("queue_receive {queue} max {max}"),
        Request::QueueAck { receipt, .. } => format!("queue_ack {receipt}"),
        Request::QueueAckAll { receipts, .. } => format!("queue_ack_all {}", receipts.join(" ")),
        Request::QueueNack { receipt, delay_ms, .. } => format!("queue_nack {receipt} +{delay_ms}ms"),
        Request::QueueExtend { receipt, .. } => format!("queue_extend {receipt}"),
        Request::QueueDeadLetter { receipt, .. } => format!("queue_dead_letter {receipt}"),
        Request::QueueDepth { queue, .. } => format!("queue_depth {queue}"),
        Request::QueueDeadLetters { queue, .. } => format!("queue_dead_letters {queue}"),
        Request::QueueRedrive { id, .. } => format!("queue_redrive {id}"),
        Request::OutboxPending { limit } => format!("outbox_pending max {limit}"),
        Request::OutboxFanOut { events, .. } => {
            let seqs: Vec<String> = events.iter().map(|e| e.seq.to_string()).collect();
            let n: usize = events.iter().map(|e| e.messages.len()).sum();
            format!("outbox_fan_out [{}] x{n}", seqs.join(" "))
        }
    }
}

/// Replaces the caller's `now` in a queue request with the database host's.
fn stamp_queue_now(req: &mut Request, db_now: i64) {
    match req {
        Request::QueueSend { now, .. }
        | Request::QueueReceive { now, .. }
        | Request::QueueAck { now, .. }
        | Request::QueueAckAll { now, .. }
        | Request::QueueNack { now, .. }
        | Request::QueueExtend { now, .. }
        | Request::QueueDeadLetter { now, .. }
        | Request::QueueDepth { now, .. }
        | Request::QueueRedrive { now, .. }
        | Request::OutboxFanOut { now, .. } => *now = db_now,
        _ => {}
    }
}

fn outcome(r: &Result<Response, StoreError>) -> String {
    match r {
        Ok(Response::Committed { outcome }) => format!("{outcome:?}"),
        Ok(Response::Idem { outcome }) => match outcome {
            pay_store::IdemBeginOutcome::Completed { status, .. } => format!("completed {status}"),
            other => format!("{other:?}"),
        },
        Ok(Response::Record { record }) => record
            .as_ref()
            .map(|r| format!("v{}", r.version))
            .unwrap_or_else(|| "none".into()),
        Ok(Response::Records { records }) => format!("{} records", records.len()),
        Ok(Response::Page { page }) => format!("{} items", page.items.len()),
        Ok(_) => "ok".into(),
        Err(e) => format!("error {e}"),
    }
}

#[async_trait]
impl Backend for SimDb {
    async fn execute(&self, req: Request) -> Result<Response, StoreError> {
        if let FaultAction::Fail = faults::apply(self.env.fault(faults::DB_APPLY, "db")).await {
            return Err(StoreError::Unavailable("database unavailable (injected)".into()));
        }
        // The database stamps idempotency locks with its own clock (as PostgreSQL does).
        let req = match req {
            Request::IdemBegin(mut b) => {
                let now = self.env.now().millis();
                b.expires_at = now.saturating_add(b.expires_at - b.now);
                b.now = now;
                Request::IdemBegin(b)
            }
            mut other => {
                // Queue visibility and delays are measured on the database's clock too, so a
                // worker with a skewed clock cannot see a message in flight elsewhere as visible.
                stamp_queue_now(&mut other, self.env.now().millis());
                other
            }
        };
        let what = describe(&req);
        let result = self.mem.execute_sync(req);
        self.shared.trace("db", "db", format!("{what} -> {}", outcome(&result)));
        if let FaultAction::DropReply = faults::apply(self.env.fault(faults::DB_REPLY, &what)).await {
            // Applied, but the answer is lost: the caller sees a timeout.
            std::future::pending::<()>().await;
        }
        result
    }

    fn describe(&self) -> String {
        "simulated db".into()
    }
}

/// The simulated network of one host, recording card numbers seen on each link it opens.
pub struct TappedTransport {
    /// This host.
    pub host: String,
    /// Run state.
    pub shared: Arc<Shared>,
}

#[async_trait]
impl Transport for TappedTransport {
    async fn bind(&self, addr: &str) -> io::Result<BoxListener> {
        pay_net::SimTransport.bind(addr).await
    }
    async fn connect(&self, host: &str, port: u16) -> io::Result<BoxIo> {
        let inner = pay_net::SimTransport.connect(host, port).await?;
        Ok(Box::new(TapIo {
            inner,
            from: self.host.clone(),
            to: host.to_owned(),
            shared: self.shared.clone(),
            sent_tail: vec![],
            recv_tail: vec![],
        }))
    }
}

struct TapIo {
    inner: BoxIo,
    from: String,
    to: String,
    shared: Arc<Shared>,
    sent_tail: Vec<u8>,
    recv_tail: Vec<u8>,
}

impl TapIo {
    fn scan(shared: &Shared, tail: &mut Vec<u8>, data: &[u8], from: &str, to: &str) {
        if shared.test_pans.is_empty() || data.is_empty() {
            return;
        }
        tail.extend_from_slice(data);
        let found = find_pans(tail, &shared.test_pans);
        if !found.is_empty() {
            let mut taps = lock(&shared.taps);
            let set = taps.entry((from.to_owned(), to.to_owned())).or_default();
            set.extend(found);
        }
        // Keep enough to catch a number split across writes.
        let keep = 24.min(tail.len());
        let cut = tail.len() - keep;
        tail.drain(..cut);
    }
}

impl AsyncRead for TapIo {
    fn poll_read(self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = self.get_mut();
        let before = buf.filled().len();
        let r = Pin::new(&mut this.inner).poll_read(cx, buf);
        if let Poll::Ready(Ok(())) = &r {
            let fresh = buf.filled()[before..].to_vec();
            TapIo::scan(&this.shared, &mut this.recv_tail, &fresh, &this.to, &this.from);
        }
        r
    }
}

impl AsyncWrite for TapIo {
    fn poll_write(self: Pin<&mut Self>, cx: &mut Context<'_>, data: &[u8]) -> Poll<io::Result<usize>> {
        let this = self.get_mut();
        let r = Pin::new(&mut this.inner).poll_write(cx, data);
        if let Poll::Ready(Ok(n)) = &r {
            TapIo::scan(&this.shared, &mut this.sent_tail, &data[..*n], &this.from, &this.to);
        }
        r
    }
    fn poll_flush(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_flush(cx)
    }
    fn poll_shutdown(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.get_mut().inner).poll_shutdown(cx)
    }
}

/// Captures every host's log lines, unredacted, for the run on this thread (the checkers scan
/// them for card numbers; production logs pass through the redaction layer instead).
pub mod logs {
    use std::cell::RefCell;
    use std::io::Write;

    thread_local! {
        static BUF: RefCell<Vec<u8>> = const { RefCell::new(Vec::new()) };
    }

    /// Takes this thread's captured logs.
    pub fn take() -> String {
        BUF.with(|b| String::from_utf8_lossy(&std::mem::take(&mut *b.borrow_mut())).into_owned())
    }

    /// A writer into this thread's buffer.
    pub struct ThreadBuf;

    impl Write for ThreadBuf {
        fn write(&mut self, data: &[u8]) -> std::io::Result<usize> {
            BUF.with(|b| b.borrow_mut().extend_from_slice(data));
            Ok(data.len())
        }
        fn flush(&mut self) -> std::io::Result<()> {
            Ok(())
        }
    }

    /// Installs the capturing subscriber (once per process; later calls do nothing).
    pub fn install(level: &str) {
        let filter = tracing_subscriber::EnvFilter::try_new(level)
            .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
        let _ = tracing_subscriber::fmt()
            .json()
            .with_env_filter(filter)
            .with_writer(|| ThreadBuf)
            .try_init();
    }
}
