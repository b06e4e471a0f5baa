//! One simulation run: scenario + seed in, verdicts, statistics and a trace hash out.

use crate::check::{check, Evidence, Violation};
use crate::client::Client;
use crate::history::{History, Outcome};
use crate::scenario::{Fault, Scenario};
use crate::world::{self, host_env, lock, ActiveFaults, Shared, SimDb, TappedTransport, TraceEvent, EPOCH_MS};
use pay_core::{Env, SeededEntropy, Timestamp};
use pay_net::metrics::Metrics;
use pay_net::{HttpClient, ServeOptions, ServiceClient, Transport};
use pay_store::memory::MemoryBackend;
use pay_store::remote::RemoteBackend;
use pay_store::{Backend, Db};
use paymentd::wiring::{
    add_generated_waf_key, build_role, ensure_hsm_keys, generated_service_keys, NodeDeps, Role, Topology, Tuning,
};
use serde::Serialize;
use sha2::{Digest, Sha256};
use std::collections::BTreeMap;
use std::sync::atomic::{AtomicI64, AtomicU32, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant, UNIX_EPOCH};

/// Simulated time per step.
pub const TICK: Duration = Duration::from_millis(50);
/// Normal message latency range.
pub const LATENCY: (Duration, Duration) = (Duration::from_millis(1), Duration::from_millis(4));

/// How to run.
#[derive(Debug, Clone)]
pub struct RunOptions {
    /// The seed.
    pub seed: u64,
    /// Draw a random fault mix from the seed (swarm mode).
    pub swarm: bool,
    /// Keep the full trace in the report.
    pub keep_trace: bool,
    /// The scenario file, for the reproduction command.
    pub scenario_path: String,
}

/// What a run found.
#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub struct RunReport {
    /// Scenario name.
    pub scenario: String,
    /// Seed.
    pub seed: u64,
    /// Swarm mode.
    pub swarm: bool,
    /// Verdict per invariant: violations (empty = held).
    pub verdicts: BTreeMap<String, Vec<Violation>>,
    /// A run error (a host crashed unexpectedly, the simulation failed).
    pub error: Option<String>,
    /// Statistics.
    pub stats: Stats,
    /// SHA-256 of the trace.
    pub trace_hash: String,
    /// The command that reproduces the run.
    pub repro: String,
    /// The faults that were applied (the drawn mix in swarm mode).
    pub faults: Vec<String>,
    /// The trace, if kept.
    #[serde(skip)]
    pub trace: Vec<TraceEvent>,
    /// The scenario as run (with drawn faults in swarm mode).
    #[serde(skip)]
    pub effective: Option<Scenario>,
}

impl RunReport {
    /// True when every invariant held and nothing failed.
    pub fn passed(&self) -> bool {
        self.error.is_none() && self.verdicts.values().all(|v| v.is_empty())
    }
}

/// Run statistics.
#[derive(Debug, Clone, Default, Serialize, serde::Deserialize)]
pub struct Stats {
    /// Client requests.
    pub requests: usize,
    /// Requests that ended without an answer at the time.
    pub unknown_outcomes: usize,
    /// PaymentIntents created.
    pub intents: usize,
    /// PaymentIntents by final status.
    pub intent_status: BTreeMap<String, usize>,
    /// Network operations applied.
    pub network_operations: usize,
    /// Outbox events.
    pub events: usize,
    /// Trace events.
    pub trace_events: usize,
    /// Simulated time, ms.
    pub sim_ms: u64,
    /// Wall time, ms.
    pub wall_ms: u64,
}

/// Service tuning inside the simulator: shorter timeouts and a brisk reconciler, so faults
/// resolve within simulated minutes.
pub fn sim_tuning(scenario: &Scenario) -> Tuning {
    let mut t = Tuning {
        reconcile_every: Some(Duration::from_secs(2)),
        call_timeout: Some(Duration::from_secs(2)),
        // One token per caller and callee in a run of a few simulated minutes: each renewal is
        // an ECDSA signature and verification, a tenth of a baseline run's work at 60 s.
        token_ttl: Some(Duration::from_secs(300)),
        ..Tuning::default()
    };
    t.payments.reconcile_grace = Duration::from_secs(4);
    t.payments.network_backoff = Duration::from_millis(100);
    t.api.idempotency_lock_timeout = Duration::from_secs(10);
    // Clients must not be throttled by the API's own limits in a workload test.
    t.api.key_rate = pay_net::ratelimit::RateLimit {
        per_second: 10_000.0,
        burst: 10_000.0,
    };
    t.api.ip_rate = t.api.key_rate;
    // The same for the WAF in front of the API; the upstream is taken from the topology.
    let mut proxy = pay_waf::proxy::ProxyConfig::new("");
    proxy.key_rate = t.api.key_rate;
    proxy.ip_rate = t.api.key_rate;
    t.waf_proxy = Some(proxy);
    t.waf_engine = shared_waf_engine();
    t.webhooks.idle_poll = Duration::from_secs(5);
    t.webhooks.metrics_every = Duration::from_secs(60);
    t.webhooks.attempt_timeout = Duration::from_secs(5);
    t.webhooks.visibility = Duration::from_secs(20);
    apply_planted_bug(&mut t, scenario);
    t
}

/// The shipped WAF rule set, built once per process: every run and every restart of the `waf`
/// host inspects with the same immutable engine, and building it costs more than a run. `None`
/// if it does not build, so that the `waf` host fails to start with the error.
fn shared_waf_engine() -> Option<Arc<pay_waf::Waf>> {
    static ENGINE: OnceLock<Option<Arc<pay_waf::Waf>>> = OnceLock::new();
    ENGINE
        .get_or_init(|| pay_waf::Waf::new(pay_waf::WafConfig::payment_api()).ok().map(Arc::new))
        .clone()
}

#[cfg(feature = "planted-bugs")]
fn apply_planted_bug(t: &mut Tuning, scenario: &Scenario) {
    use crate::scenario::PlantedBug;
    match scenario.planted_bug {
        Some(PlantedBug::SkipIdempotencyLock) => t.api.skip_idempotency_lock = true,
        Some(PlantedBug::FreshAcquirerKey) => t.payments.bugs.fresh_key_on_retry = true,
        Some(PlantedBug::EventOutsideTxn) => t.payments.bugs.event_outside_txn = true,
        None => {}
    }
}

#[cfg(not(feature = "planted-bugs"))]
fn apply_planted_bug(_t: &mut Tuning, _scenario: &Scenario) {}

/// The merchant's webhook receiver host.
pub const MERCHANT: &str = "merchant";

/// The merchant's webhook endpoints (URL path, FIFO): every event to each.
pub const MERCHANT_ENDPOINTS: [(&str, bool); 2] = [("/hooks/standard", false), ("/hooks/fifo", true)];

/// Share of webhook deliveries the merchant answers with 503 (so retries happen in every run).
const MERCHANT_FAILURE_PERCENT: u64 = 5;

/// Hosts of the topology in start order.
pub fn hosts(scenario: &Scenario) -> Vec<String> {
    let mut h: Vec<String> = vec!["db".into()];
    h.extend(Role::WITH_WAF.iter().map(|r| r.name().to_owned()));
    h.push(MERCHANT.to_owned());
    h.extend((1..=scenario.workload.clients).map(|i| format!("client-{i}")));
    h
}

fn setup(seed: u64, db: &Arc<MemoryBackend>, hsm: &Arc<dyn pay_hsm::Hsm>) -> Result<String, String> {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_time()
        .build()
        .map_err(|e| e.to_string())?;
    rt.block_on(async {
        ensure_hsm_keys(hsm.as_ref()).await?;
        let (env, _) = Env::deterministic("setup", seed, Timestamp::from_millis(EPOCH_MS));
        let store = Db::new(db.clone(), env.clone());
        let keys = pay_api::keys::create_keys(&store, env.entropy.as_ref(), env.now(), None, "Simulated merchant")
            .await
            .map_err(|e| e.to_string())?;
        // The merchant's webhook endpoints, created as the API would (secrets sealed by the HSM).
        let outbound = pay_webhooks::Outbound::new(
            Arc::new(pay_net::TcpTransport),
            pay_webhooks::Outbound::web_pki(None)?,
            pay_webhooks::SsrfPolicy::permissive(),
        );
        let webhooks = pay_webhooks::Webhooks::new(
            store.clone(),
            env.clone(),
            hsm.clone(),
            outbound,
            Metrics::new(),
            pay_webhooks::WebhooksConfig::default(),
        );
        for (path, fifo) in MERCHANT_ENDPOINTS {
            webhooks
                .create_endpoint(pay_proto::webhooks::CreateEndpoint {
                    account: keys.account.clone(),
                    request_key: None,
                    url: format!("http://{MERCHANT}:80{path}"),
                    enabled_events: vec!["*".into()],
                    description: None,
                    metadata: Default::default(),
                    fifo,
                })
                .await
                .map_err(|e| e.message)?;
        }
        Ok(keys.secret.expose().clone())
    })
}

/// Runs `scenario` with `opts`.
pub fn run(base: &Scenario, opts: &RunOptions) -> RunReport {
    let wall = Instant::now();
    world::align_task_ids();
    let scenario = if opts.swarm {
        crate::swarm::draw(base, opts.seed)
    } else {
        base.clone()
    };
    let seed = opts.seed;
    let all_hosts = hosts(&scenario);
    let shared = Arc::new(Shared {
        seed,
        trace: Mutex::new(world::Trace::default()),
        faults: Mutex::new(ActiveFaults::default()),
        skew: all_hosts
            .iter()
            .map(|h| (h.clone(), Arc::new(AtomicI64::new(0))))
            .collect(),
        incarnation: all_hosts
            .iter()
            .map(|h| (h.clone(), Arc::new(AtomicU32::new(0))))
            .collect(),
        taps: Mutex::new(BTreeMap::new()),
        test_pans: scenario.workload.cards.keys().cloned().collect(),
        webhooks: Mutex::new(vec![]),
    });
    let db_mem = Arc::new(MemoryBackend::new());
    let acq_mem = Arc::new(MemoryBackend::new());
    let hsm_env_clock: Arc<dyn pay_core::Clock> =
        Arc::new(pay_core::ManualClock::new(Timestamp::from_millis(EPOCH_MS)));
    let soft = pay_hsm::SoftHsm::new_ephemeral(Arc::new(SeededEntropy::new(seed, "hsm")), hsm_env_clock);
    let hsm: Arc<dyn pay_hsm::Hsm> = Arc::new(crate::faulty_hsm::FaultyHsm::new(Arc::new(soft), shared.clone()));
    let repro = repro_command(&opts.scenario_path, seed, opts.swarm);
    if scenario.planted_bug.is_some() && !cfg!(feature = "planted-bugs") {
        return failed(
            &scenario,
            opts,
            repro,
            vec![],
            "this scenario plants a bug, but planted bugs are not compiled into this build (feature `planted-bugs`)"
                .into(),
            wall,
        );
    }
    let faults_desc: Vec<String> = scenario
        .faults
        .iter()
        .map(|f| {
            format!(
                "at {} for {}: {:?}",
                f.at,
                f.lasts.map(|d| d.to_string()).unwrap_or_else(|| "-".into()),
                f.fault
            )
        })
        .collect();
    let secret = match setup(seed, &db_mem, &hsm) {
        Ok(s) => s,
        Err(e) => return failed(&scenario, opts, repro, faults_desc, format!("setup failed: {e}"), wall),
    };
    let setup_env = Env::deterministic("keys", seed, Timestamp::from_millis(EPOCH_MS)).0;
    let (mut service_keys, mut directory) = generated_service_keys(&setup_env);
    add_generated_waf_key(&setup_env, &mut service_keys, &mut directory);
    let tuning = sim_tuning(&scenario);
    let mut topology = Topology::default();
    for r in Role::WITH_WAF {
        topology.urls.insert(r, format!("http://{}:80", r.name()));
    }

    let end_ms = scenario.duration.ms();
    let deadline_ms = end_ms + scenario.settle.ms();
    let mut sim = turmoil::Builder::new()
        .rng_seed(seed)
        .epoch(UNIX_EPOCH + Duration::from_millis(EPOCH_MS as u64))
        .simulation_duration(Duration::from_millis(deadline_ms) + Duration::from_secs(120))
        .tick_duration(TICK)
        .min_message_latency(LATENCY.0)
        .max_message_latency(LATENCY.1)
        .build();

    // The db host.
    {
        let (shared, mem) = (shared.clone(), db_mem.clone());
        sim.host("db", move || {
            let (shared, mem) = (shared.clone(), mem.clone());
            async move {
                bump(&shared, "db");
                let env = host_env(&shared, "db");
                let backend: Arc<dyn Backend> = Arc::new(SimDb {
                    mem,
                    shared: shared.clone(),
                    env,
                });
                let transport = TappedTransport {
                    host: "db".into(),
                    shared,
                };
                let listener = transport.bind("0.0.0.0:80").await?;
                pay_net::serve(
                    listener,
                    pay_store::remote::router(backend),
                    ServeOptions::default(),
                    std::future::pending(),
                )
                .await?;
                Ok(())
            }
        });
    }
    // The service hosts, built exactly as paymentd builds them.
    for role in Role::WITH_WAF {
        let (shared, acq_mem, hsm, keys, dir, topo, tuning) = (
            shared.clone(),
            acq_mem.clone(),
            hsm.clone(),
            service_keys.clone(),
            directory.clone(),
            topology.clone(),
            tuning.clone(),
        );
        sim.host(role.name(), move || {
            let (shared, acq_mem, hsm, keys, dir, topo, tuning) = (
                shared.clone(),
                acq_mem.clone(),
                hsm.clone(),
                keys.clone(),
                dir.clone(),
                topo.clone(),
                tuning.clone(),
            );
            async move {
                let host = role.name();
                bump(&shared, host);
                let env = host_env(&shared, host);
                let transport = Arc::new(TappedTransport {
                    host: host.into(),
                    shared: shared.clone(),
                });
                let http = HttpClient::new(transport.clone());
                let db_client =
                    ServiceClient::new(http.clone(), "db", "http://db:80", None).with_timeout(Duration::from_secs(1));
                let webhook_outbound = pay_webhooks::Outbound::new(
                    transport.clone(),
                    pay_webhooks::Outbound::web_pki(None)?,
                    pay_webhooks::SsrfPolicy::permissive(),
                );
                let deps = NodeDeps {
                    env,
                    webhook_outbound: Some(webhook_outbound),
                    http,
                    store: Arc::new(RemoteBackend::new(db_client)),
                    acquirer_store: acq_mem,
                    hsm: Some(hsm),
                    service_keys: keys,
                    directory: dir,
                    topology: topo,
                    metrics: Metrics::new(),
                    tuning,
                    audit: None,
                };
                let built = build_role(role, &deps)?;
                let (_stop_tx, stop_rx) = tokio::sync::watch::channel(false);
                for task in built.background {
                    tokio::spawn(task(stop_rx.clone()));
                }
                let listener = transport.bind("0.0.0.0:80").await?;
                pay_net::serve(listener, built.router, ServeOptions::default(), std::future::pending()).await?;
                Ok(())
            }
        });
    }
    // The merchant's webhook receiver.
    {
        let shared = shared.clone();
        sim.host(MERCHANT, move || {
            let shared = shared.clone();
            async move {
                bump(&shared, MERCHANT);
                let env = host_env(&shared, MERCHANT);
                let transport = TappedTransport {
                    host: MERCHANT.into(),
                    shared: shared.clone(),
                };
                let app = axum::Router::new()
                    .route("/hooks/{ep}", axum::routing::post(merchant_receive))
                    .with_state((shared, env));
                let listener = transport.bind("0.0.0.0:80").await?;
                pay_net::serve(listener, app, ServeOptions::default(), std::future::pending()).await?;
                Ok(())
            }
        });
    }
    // The workload.
    let history = Arc::new(Mutex::new(History::default()));
    let scenario_arc = Arc::new(scenario.clone());
    let running = Arc::new(AtomicUsize::new(scenario.workload.clients as usize));
    for i in 1..=scenario.workload.clients {
        let name = format!("client-{i}");
        let client = Client::new(&name, &secret, shared.clone(), history.clone(), scenario_arc.clone());
        let running = running.clone();
        sim.client(name.as_str(), async move {
            client.run(end_ms, deadline_ms).await;
            running.fetch_sub(1, Ordering::SeqCst);
            Ok(())
        });
    }
    // The driver: apply the fault schedule step by step, heal at the end of the workload.
    let mut schedule: Vec<(u64, bool, usize)> = vec![];
    for (i, f) in scenario.faults.iter().enumerate() {
        schedule.push((f.at.ms(), true, i));
        let stop = f.lasts.map(|d| f.at.ms() + d.ms()).unwrap_or(end_ms).min(end_ms);
        if !matches!(f.fault, Fault::Bounce(_)) || f.lasts.is_some() {
            schedule.push((stop, false, i));
        }
    }
    schedule.sort();
    let mut next = 0;
    let mut healed = false;
    let mut error = None;
    let mut crashed: Vec<String> = vec![];
    let mut next_settle_check = 1_000;
    loop {
        let now = sim.elapsed().as_millis() as u64;
        while next < schedule.len() && schedule[next].0 <= now {
            let (_, start, i) = schedule[next];
            apply(&mut sim, &shared, &scenario.faults[i], start, &all_hosts, &mut crashed);
            next += 1;
        }
        if now >= end_ms && !healed {
            heal(&mut sim, &shared, &all_hosts, &mut crashed);
            healed = true;
        }
        // The run ends once everything has settled after the workload, or at the deadline.
        // Checked here, once per simulated second, rather than by a monitor host: a host is
        // stepped every tick, and this check needs no network.
        if now >= next_settle_check {
            next_settle_check = now + 1_000;
            if now >= deadline_ms || (now > end_ms && running.load(Ordering::SeqCst) == 0 && settled(&db_mem)) {
                break;
            }
        }
        match sim.step() {
            // Clients finishing does not end the run: the settle check above does.
            Ok(_) => {}
            Err(e) => {
                error = Some(format!("simulation error at {now} ms: {e}"));
                break;
            }
        }
    }
    let sim_ms = sim.elapsed().as_millis() as u64;
    drop(sim);

    let history = lock(&history).clone();
    let db = db_mem.dump();
    let events = db_mem.all_events();
    let ledger = acq_mem.dump();
    let taps = shared.tap_list();
    let webhooks = lock(&shared.webhooks).clone();
    let queues = db_mem.queue_snapshot();
    let raw_logs = world::logs::take();
    let evidence = Evidence {
        history: &history,
        db: &db,
        events: &events,
        ledger: &ledger,
        taps: &taps,
        raw_logs: &raw_logs,
        test_pans: &shared.test_pans,
        webhooks: &webhooks,
        queues: &queues,
    };
    let violations = check(&scenario.invariants, &evidence);
    let mut verdicts: BTreeMap<String, Vec<Violation>> = scenario
        .invariants
        .iter()
        .map(|i| (i.name().to_owned(), vec![]))
        .collect();
    for v in violations {
        verdicts.entry(v.invariant.name().to_owned()).or_default().push(v);
    }
    let trace = std::mem::take(&mut lock(&shared.trace).events);
    let mut h = Sha256::new();
    for e in &trace {
        h.update(e.line().as_bytes());
        h.update(b"\n");
    }
    let mut stats = Stats {
        requests: history.ops.len(),
        unknown_outcomes: history
            .ops
            .iter()
            .filter(|o| matches!(o.outcome, Outcome::Unknown { .. }))
            .count(),
        network_operations: ledger.iter().filter(|(_, r)| r.id.starts_with("key:")).count(),
        events: events.len(),
        trace_events: trace.len(),
        sim_ms,
        wall_ms: wall.elapsed().as_millis() as u64,
        ..Stats::default()
    };
    for (t, r) in &db {
        if *t == pay_store::Table::PaymentIntents {
            stats.intents += 1;
            let body = r.body.to_value().unwrap_or_default();
            if let Some(s) = body.pointer("/intent/status").and_then(|s| s.as_str()) {
                *stats.intent_status.entry(s.to_owned()).or_insert(0) += 1;
            }
        }
    }
    RunReport {
        scenario: scenario.name.clone(),
        seed,
        swarm: opts.swarm,
        verdicts,
        error,
        stats,
        trace_hash: hex::encode(h.finalize()),
        repro,
        faults: faults_desc,
        trace: if opts.keep_trace { trace } else { vec![] },
        effective: Some(scenario),
    }
}

fn failed(
    scenario: &Scenario,
    opts: &RunOptions,
    repro: String,
    faults: Vec<String>,
    error: String,
    wall: Instant,
) -> RunReport {
    RunReport {
        scenario: scenario.name.clone(),
        seed: opts.seed,
        swarm: opts.swarm,
        verdicts: BTreeMap::new(),
        error: Some(error),
        stats: Stats {
            wall_ms: wall.elapsed().as_millis() as u64,
            ..Stats::default()
        },
        trace_hash: String::new(),
        repro,
        faults,
        trace: vec![],
        effective: Some(scenario.clone()),
    }
}

/// The command that reproduces a run.
pub fn repro_command(path: &str, seed: u64, swarm: bool) -> String {
    format!(
        "cargo run --release -p sim --bin paysim -- run --scenario {path} --seed {seed}{}",
        if swarm { " --swarm" } else { "" }
    )
}

fn bump(shared: &Shared, host: &str) {
    if let Some(c) = shared.incarnation.get(host) {
        c.fetch_add(1, Ordering::SeqCst);
    }
}

/// True when nothing is in flight: no processing intent, pending follow-up or pending refund.
/// The merchant's webhook receiver: records every request, answers 503 to a few.
async fn merchant_receive(
    axum::extract::State((shared, env)): axum::extract::State<(Arc<Shared>, Env)>,
    axum::extract::Path(ep): axum::extract::Path<String>,
    body: axum::body::Bytes,
) -> axum::http::StatusCode {
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap_or_default();
    let id = v["id"].as_str().unwrap_or("").to_owned();
    let status = if env.entropy.below(100) < MERCHANT_FAILURE_PERCENT {
        503
    } else {
        200
    };
    shared.trace(MERCHANT, "webhook", format!("{ep} {id} -> {status}"));
    lock(&shared.webhooks).push((format!("/hooks/{ep}"), id, status));
    axum::http::StatusCode::from_u16(status).unwrap_or(axum::http::StatusCode::OK)
}

fn settled(mem: &MemoryBackend) -> bool {
    use pay_store::{Request, Response};
    // Webhooks: everything fanned out, nothing deliverable or in flight (only retries waiting
    // for their delay may remain).
    if mem.pending_events() > 0 {
        return false;
    }
    let now = EPOCH_MS + world::sim_ms() as i64;
    for queue in [pay_webhooks::DELIVERIES_QUEUE, pay_webhooks::FIFO_DELIVERIES_QUEUE] {
        if let Ok(Response::Depth { depth }) = mem.execute_sync(Request::QueueDepth {
            queue: queue.into(),
            now,
        }) {
            if depth.visible + depth.in_flight > 0 {
                return false;
            }
        }
    }
    for (table, value) in [
        (pay_store::Table::PaymentIntents, "processing"),
        (pay_store::Table::PaymentIntents, "pending_op"),
        (pay_store::Table::Refunds, "pending"),
    ] {
        let req = Request::Find {
            table,
            account: None,
            index: pay_store::Index::K2,
            value: value.into(),
            limit: 1,
        };
        if let Ok(Response::Records { records }) = mem.execute_sync(req) {
            if !records.is_empty() {
                return false;
            }
        }
    }
    true
}

fn pairs(a: &[String], b: &[String]) -> Vec<(String, String)> {
    let mut out = vec![];
    for x in a {
        for y in b {
            if x != y {
                out.push((x.clone(), y.clone()));
            }
        }
    }
    out
}

fn apply(
    sim: &mut turmoil::Sim<'_>,
    shared: &Arc<Shared>,
    scheduled: &crate::scenario::ScheduledFault,
    start: bool,
    hosts: &[String],
    crashed: &mut Vec<String>,
) {
    let fault = &scheduled.fault;
    shared.trace(
        "sim",
        "fault",
        format!("{} {fault:?}", if start { "start" } else { "stop" }),
    );
    let mut f = lock(&shared.faults);
    match fault {
        Fault::Partition(groups) => {
            let (a, b) = (groups[0].hosts(), groups.get(1).map(|g| g.hosts()).unwrap_or_default());
            for (x, y) in pairs(&a, &b) {
                if start {
                    sim.partition(x.as_str(), y.as_str());
                } else {
                    sim.repair(x.as_str(), y.as_str());
                }
            }
        }
        Fault::MessageLoss(rate) => {
            sim.set_fail_rate(if start { *rate } else { 0.0 });
            if !start {
                repair_all(sim, hosts);
            }
        }
        Fault::Latency { max, .. } => sim.set_max_message_latency(if start { max.0 } else { LATENCY.1 }),
        Fault::Bounce(h) => {
            if start && scheduled.lasts.is_none() {
                // Crash and restart at once.
                sim.bounce(h.as_str());
            } else if start {
                sim.crash(h.as_str());
                crashed.push(h.clone());
            } else if let Some(i) = crashed.iter().position(|c| c == h) {
                crashed.remove(i);
                sim.bounce(h.as_str());
            }
        }
        Fault::DbAmbiguousCommit(r) => f.db_ambiguous = if start { *r } else { 0.0 },
        Fault::DbUnavailable(on) => f.db_unavailable = start && *on,
        Fault::AcquirerLostReplies(r) => f.acquirer_lost = if start { *r } else { 0.0 },
        Fault::AcquirerSlow { delay, rate } => f.acquirer_slow = if start { Some((delay.0, *rate)) } else { None },
        Fault::ClockSkew { host, ms } => {
            if let Some(s) = shared.skew.get(host) {
                s.store(if start { *ms } else { 0 }, Ordering::SeqCst);
            }
        }
        Fault::HsmUnavailable(on) => f.hsm_unavailable = start && *on,
        Fault::CrashAfterAuthorize(r) => f.crash_after_authorize = if start { *r } else { 0.0 },
    }
}

fn repair_all(sim: &mut turmoil::Sim<'_>, hosts: &[String]) {
    for (i, a) in hosts.iter().enumerate() {
        for b in &hosts[i + 1..] {
            sim.repair(a.as_str(), b.as_str());
        }
    }
}

fn heal(sim: &mut turmoil::Sim<'_>, shared: &Arc<Shared>, hosts: &[String], crashed: &mut Vec<String>) {
    shared.trace("sim", "fault", "heal all".into());
    *lock(&shared.faults) = ActiveFaults::default();
    for s in shared.skew.values() {
        s.store(0, Ordering::SeqCst);
    }
    sim.set_fail_rate(0.0);
    sim.set_max_message_latency(LATENCY.1);
    repair_all(sim, hosts);
    for h in crashed.drain(..) {
        sim.bounce(h.as_str());
    }
}
