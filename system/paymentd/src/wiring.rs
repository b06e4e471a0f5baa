//! How a node is put together: which services run, what each one is handed, and the routes
//! every role shares (`/healthz`, `/readyz`, `/metrics`).
//!
//! This is the one place services are constructed. `paymentd dev`, `paymentd serve` and the
//! simulator all call [`build_role`]; they differ only in the [`NodeDeps`] they pass — the
//! `Env` (clock, entropy, fault points), the transport, and the storage and HSM backends.

use axum::extract::State;
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use axum::{Json, Router};
use pay_core::Env;
use pay_hsm::Hsm;
use pay_net::metrics::{HttpMetrics, Metrics};
use pay_net::{HttpClient, ServiceClient, ServiceDirectory, ServiceKey, TokenIssuer, TokenVerifier};
use pay_store::{Backend, Db};
use std::collections::BTreeMap;
use std::fmt;
use std::str::FromStr;
use std::sync::Arc;
use std::time::Duration;

/// A service role.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, serde::Serialize, serde::Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Role {
    /// The public API.
    Api,
    /// The card vault.
    Tokenizer,
    /// The payment service.
    Payments,
    /// The card network simulator.
    Acquirer,
    /// Webhook endpoints and delivery.
    Webhooks,
    /// Fraud detection (risk scoring, Radar rules and value lists).
    Fraud,
    /// The Web Application Firewall: the public address, a reverse proxy in front of `api`.
    Waf,
}

impl Role {
    /// The service roles, in start order (dependencies first). The simulator runs these.
    pub const ALL: [Role; 6] = [
        Role::Acquirer,
        Role::Tokenizer,
        Role::Fraud,
        Role::Payments,
        Role::Webhooks,
        Role::Api,
    ];

    /// Every role of a full node: the service roles and the WAF in front of the API.
    pub const WITH_WAF: [Role; 7] = [
        Role::Acquirer,
        Role::Tokenizer,
        Role::Fraud,
        Role::Payments,
        Role::Webhooks,
        Role::Api,
        Role::Waf,
    ];

    /// The role's name (also its service identity).
    pub fn name(self) -> &'static str {
        match self {
            Role::Api => "api",
            Role::Tokenizer => "tokenizer",
            Role::Payments => "payments",
            Role::Acquirer => "acquirer",
            Role::Webhooks => "webhooks",
            Role::Fraud => "fraud",
            Role::Waf => "waf",
        }
    }
}

impl fmt::Display for Role {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.name())
    }
}

impl FromStr for Role {
    type Err = String;
    fn from_str(s: &str) -> Result<Role, String> {
        Role::WITH_WAF.into_iter().find(|r| r.name() == s).ok_or_else(|| {
            format!("unknown role `{s}` (expected one of: api, tokenizer, payments, acquirer, fraud, webhooks, waf)")
        })
    }
}

/// Where each role can be reached (base URLs such as `http://127.0.0.1:7102` or, in the
/// simulator, `http://tokenizer:80`).
#[derive(Debug, Clone, Default)]
pub struct Topology {
    /// Base URL per role.
    pub urls: BTreeMap<Role, String>,
}

impl Topology {
    /// The base URL of `role`.
    pub fn url(&self, role: Role) -> Result<&str, String> {
        self.urls
            .get(&role)
            .map(String::as_str)
            .ok_or_else(|| format!("no address configured for the {role} role"))
    }
}

/// Everything a node's services are built from.
#[derive(Clone)]
pub struct NodeDeps {
    /// Clock, entropy and fault points.
    pub env: Env,
    /// HTTP client over the node's transport.
    pub http: HttpClient,
    /// Records, events, idempotency keys.
    pub store: Arc<dyn Backend>,
    /// The acquirer simulator's own ledger.
    pub acquirer_store: Arc<dyn Backend>,
    /// The HSM (tokenizer and webhooks only).
    pub hsm: Option<Arc<dyn Hsm>>,
    /// Outbound HTTP(S) to merchant webhook URLs, with the SSRF policy of this mode.
    pub webhook_outbound: Option<pay_webhooks::Outbound>,
    /// Private keys of the roles hosted on this node.
    pub service_keys: BTreeMap<Role, Arc<ServiceKey>>,
    /// Public keys of every role.
    pub directory: ServiceDirectory,
    /// Where roles live.
    pub topology: Topology,
    /// The node's metrics registry.
    pub metrics: Metrics,
    /// Tunables.
    pub tuning: Tuning,
    /// The security audit log (detokenizations, authentication failures, key operations).
    pub audit: Option<Arc<pay_audit::AuditLog>>,
}

/// Per-service tunables (defaults suit production; the simulator and tests shorten some).
#[derive(Clone, Default)]
pub struct Tuning {
    /// Payment service settings.
    pub payments: pay_payments::PaymentsConfig,
    /// API settings.
    pub api: pay_api::ApiConfig,
    /// Tokenizer settings.
    pub tokenizer: pay_tokenizer::TokenizerConfig,
    /// How often the payment reconciler runs.
    pub reconcile_every: Option<Duration>,
    /// Per-call timeout between services.
    pub call_timeout: Option<Duration>,
    /// Webhook delivery settings.
    pub webhooks: pay_webhooks::WebhooksConfig,
    /// How long the payment service waits for a fraud score (default 300 ms).
    pub fraud_budget: Option<Duration>,
    /// Decline (instead of authorizing unscored) when fraud does not answer in time.
    pub fraud_fail_closed: bool,
    /// Velocity counters of the fraud role (default: in memory on the fraud host; `paymentd
    /// serve` passes the PostgreSQL store).
    pub fraud_velocity: Option<Arc<dyn pay_fraud::VelocityStore>>,
    /// The fraud model (default: the built-in `model.yaml`).
    pub fraud_config: Option<pay_fraud::FraudConfig>,
    /// WAF inspection settings (`None`: the shipped payment-API configuration).
    pub waf: Option<pay_waf::WafConfig>,
    /// An inspection engine already built from the WAF configuration, used instead of building
    /// one (`waf` is then ignored). Building the rule set is the costly part of starting a WAF;
    /// the simulator builds it once per process and shares it between runs and restarts.
    pub waf_engine: Option<Arc<pay_waf::Waf>>,
    /// WAF proxy settings: trusted proxies, IP lists, rate limits (`None`: defaults). The
    /// upstream is always the `api` role's address from the topology.
    pub waf_proxy: Option<pay_waf::proxy::ProxyConfig>,
    /// Lifetime of the internal service tokens this node issues (`None`: [`TOKEN_TTL`]). Each
    /// renewal costs one ECDSA signature here and one verification at the callee; the
    /// simulator lengthens it so a run does not spend its time re-signing tokens.
    pub token_ttl: Option<Duration>,
}

/// How often expired idempotency keys are deleted.
pub const REAP_EVERY: Duration = Duration::from_secs(600);

/// How often the fraud role deletes velocity attempts older than a day: a minute's traffic
/// at a time, so each delete stays short.
pub const VELOCITY_PRUNE_EVERY: Duration = Duration::from_secs(60);

/// Leeway for clock differences when checking internal service tokens.
pub const TOKEN_LEEWAY: Duration = Duration::from_secs(300);
/// Lifetime of internal service tokens.
pub const TOKEN_TTL: Duration = Duration::from_secs(60);

impl NodeDeps {
    fn issuer(&self, role: Role) -> Result<Arc<TokenIssuer>, String> {
        let key = self
            .service_keys
            .get(&role)
            .ok_or_else(|| format!("no service key for the {role} role on this node"))?;
        Ok(Arc::new(TokenIssuer::new(
            key.clone(),
            self.env.with_host(role.name()),
            self.tuning.token_ttl.unwrap_or(TOKEN_TTL),
        )))
    }

    fn verifier(&self, role: Role) -> Arc<TokenVerifier> {
        Arc::new(TokenVerifier::new(
            role.name(),
            self.directory.clone(),
            self.env.clone(),
            TOKEN_LEEWAY,
        ))
    }

    fn client(&self, from: Role, to: Role) -> Result<ServiceClient, String> {
        let c = ServiceClient::new(
            self.http.clone(),
            to.name(),
            self.topology.url(to)?,
            Some(self.issuer(from)?),
        );
        Ok(match self.tuning.call_timeout {
            Some(t) => c.with_timeout(t),
            None => c,
        })
    }
}

/// A built role: its router and the background tasks it needs.
pub struct BuiltRole {
    /// The role.
    pub role: Role,
    /// Its HTTP routes, including health and metrics.
    pub router: Router,
    /// Background work (the payment reconciler), to be spawned by the caller.
    pub background: Vec<BackgroundTask>,
    /// The payment service, when this is the payments role (tests and the simulator drive
    /// its reconciler directly).
    pub payments: Option<Arc<pay_payments::Payments>>,
    /// The tokenizer, when this is the tokenizer role.
    pub tokenizer: Option<Arc<pay_tokenizer::Tokenizer>>,
    /// The webhook service, when this is the webhooks role.
    pub webhooks: Option<Arc<pay_webhooks::Webhooks>>,
}

/// A long-running task of a role; it stops when the shutdown future resolves.
pub type BackgroundTask =
    Box<dyn FnOnce(tokio::sync::watch::Receiver<bool>) -> futures::future::BoxFuture<'static, ()> + Send>;

/// A background task that runs `pass` every `every` (first after one period), until the node
/// stops; a pass in progress finishes first.
fn periodic<F, Fut>(every: Duration, mut pass: F) -> BackgroundTask
where
    F: FnMut() -> Fut + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    Box::new(move |mut stop| {
        Box::pin(async move {
            loop {
                tokio::select! {
                    biased;
                    _ = stop.wait_for(|s| *s) => return,
                    _ = tokio::time::sleep(every) => {}
                }
                pass().await;
            }
        })
    })
}

#[derive(Clone)]
struct Readiness {
    db: Option<Db>,
    hsm: Option<Arc<dyn Hsm>>,
    metrics: Metrics,
}

async fn healthz() -> &'static str {
    "ok"
}

async fn readyz(State(r): State<Readiness>) -> Response {
    let mut checks = BTreeMap::new();
    let mut ready = true;
    if let Some(db) = &r.db {
        let ok = db.ping().await.is_ok();
        ready &= ok;
        checks.insert("database", if ok { "ok" } else { "unavailable" });
    }
    if let Some(h) = &r.hsm {
        let ok = h.current_key(pay_hsm::KeyPurpose::Kek).await.is_ok();
        ready &= ok;
        checks.insert("hsm", if ok { "ok" } else { "unavailable" });
    }
    let status = if ready {
        axum::http::StatusCode::OK
    } else {
        axum::http::StatusCode::SERVICE_UNAVAILABLE
    };
    (
        status,
        Json(serde_json::json!({"status": if ready { "ready" } else { "not_ready" }, "checks": checks})),
    )
        .into_response()
}

async fn metrics(State(r): State<Readiness>) -> Response {
    (
        [(axum::http::header::CONTENT_TYPE, "text/plain; version=0.0.4")],
        r.metrics.render(),
    )
        .into_response()
}

/// Builds `role` from `deps`.
pub fn build_role(role: Role, deps: &NodeDeps) -> Result<BuiltRole, String> {
    let env = deps.env.with_host(role.name());
    let db = Db::new(deps.store.clone(), env.clone());
    let mut background: Vec<BackgroundTask> = vec![];
    let mut payments_handle = None;
    let mut tokenizer_handle = None;
    let mut webhooks_handle = None;
    let (router, ready) = match role {
        Role::Webhooks => {
            let hsm = deps
                .hsm
                .clone()
                .ok_or("the webhooks role needs an HSM (webhook secrets are sealed by it)")?;
            let outbound = deps
                .webhook_outbound
                .clone()
                .ok_or("the webhooks role needs outbound HTTP settings")?;
            let w = Arc::new(pay_webhooks::Webhooks::new(
                db.clone(),
                env.clone(),
                hsm.clone(),
                outbound,
                deps.metrics.clone(),
                deps.tuning.webhooks.clone(),
            ));
            webhooks_handle = Some(w.clone());
            let worker = w.clone();
            background.push(Box::new(move |mut stop| {
                Box::pin(async move {
                    worker
                        .run(async move {
                            let _ = stop.wait_for(|s| *s).await;
                        })
                        .await
                })
            }));
            (
                pay_webhooks::routes::router(w, deps.verifier(role)),
                Readiness {
                    db: Some(db),
                    hsm: Some(hsm),
                    metrics: deps.metrics.clone(),
                },
            )
        }
        Role::Acquirer => {
            let adb = Db::new(deps.acquirer_store.clone(), env.clone());
            let acq = Arc::new(pay_acquirer::Acquirer::new(adb.clone(), env.clone()));
            (
                pay_acquirer::router(acq, deps.verifier(role)),
                Readiness {
                    db: Some(adb),
                    hsm: None,
                    metrics: deps.metrics.clone(),
                },
            )
        }
        Role::Tokenizer => {
            let hsm = deps.hsm.clone().ok_or("the tokenizer role needs an HSM")?;
            let acquirer = pay_proto::acquirer::AcquirerClient::new(deps.client(role, Role::Acquirer)?);
            let t = Arc::new(
                pay_tokenizer::Tokenizer::new(
                    db.clone(),
                    env.clone(),
                    hsm.clone(),
                    acquirer,
                    deps.tuning.tokenizer.clone(),
                )
                .with_audit(deps.audit.clone()),
            );
            tokenizer_handle = Some(t.clone());
            (
                pay_tokenizer::router(t, deps.verifier(role)),
                Readiness {
                    db: Some(db),
                    hsm: Some(hsm),
                    metrics: deps.metrics.clone(),
                },
            )
        }
        Role::Fraud => {
            let engine = match &deps.tuning.fraud_config {
                Some(c) => pay_fraud::FraudEngine::new(c),
                None => pay_fraud::FraudEngine::builtin(),
            };
            let velocity: Arc<dyn pay_fraud::VelocityStore> = match &deps.tuning.fraud_velocity {
                Some(v) => v.clone(),
                None => Arc::new(pay_fraud::MemoryVelocityStore::default()),
            };
            // The pruner: velocity counts a day's attempts; older ones are deleted every minute
            // (the memory store also forgets them as it goes).
            let pruned = velocity.clone();
            let prune_env = env.clone();
            background.push(periodic(VELOCITY_PRUNE_EVERY, move || {
                let (pruned, now) = (pruned.clone(), prune_env.now());
                async move {
                    match pruned.prune(now).await {
                        Ok(0) => {}
                        Ok(attempts) => tracing::info!(attempts, "pruned fraud velocity attempts older than a day"),
                        Err(e) => tracing::warn!(error = %e, "fraud velocity pruning failed"),
                    }
                }
            }));
            let f = Arc::new(pay_fraud::service::FraudService::new(
                db.clone(),
                env.clone(),
                engine,
                velocity,
            ));
            (
                pay_fraud::service::router(f, deps.verifier(role)),
                Readiness {
                    db: Some(db),
                    hsm: None,
                    metrics: deps.metrics.clone(),
                },
            )
        }
        Role::Payments => {
            let tokenizer = pay_proto::tokenizer::TokenizerClient::new(deps.client(role, Role::Tokenizer)?);
            // Without a fraud address (a split deployment that runs no fraud role) payments
            // are not assessed; the charge's outcome says `not_assessed`.
            let risk: Option<Arc<dyn pay_payments::RiskAssessor>> = if deps.topology.urls.contains_key(&Role::Fraud) {
                let client = pay_proto::fraud::FraudClient::new(deps.client(role, Role::Fraud)?);
                let policy = if deps.tuning.fraud_fail_closed {
                    pay_payments::risk::FailurePolicy::Closed
                } else {
                    pay_payments::risk::FailurePolicy::Open
                };
                Some(Arc::new(pay_payments::risk::FraudRisk::new(
                    client,
                    deps.tuning.fraud_budget.unwrap_or(Duration::from_millis(300)),
                    policy,
                )))
            } else {
                tracing::warn!("no address for the fraud role: payments will not be risk-assessed");
                None
            };
            let p = Arc::new(pay_payments::Payments::new(
                db.clone(),
                env.clone(),
                tokenizer,
                risk,
                deps.tuning.payments.clone(),
            ));
            payments_handle = Some(p.clone());
            let every = deps.tuning.reconcile_every.unwrap_or(Duration::from_secs(10));
            let rp = p.clone();
            background.push(Box::new(move |mut stop| {
                Box::pin(async move {
                    rp.run_reconciler(every, async move {
                        let _ = stop.wait_for(|s| *s).await;
                    })
                    .await
                })
            }));
            (
                pay_payments::routes::router(p, deps.verifier(role)),
                Readiness {
                    db: Some(db),
                    hsm: None,
                    metrics: deps.metrics.clone(),
                },
            )
        }
        Role::Api => {
            // The reaper: idempotency keys expire after 24 h; applied-transaction ids are kept
            // for two days (far longer than any retry of a lost commit answer can take).
            let reaper_db = db.clone();
            let reaper_env = env.clone();
            background.push(periodic(REAP_EVERY, move || {
                let (reaper_db, now) = (reaper_db.clone(), reaper_env.now());
                async move {
                    match reaper_db.reap(now, Duration::from_secs(2 * 86_400)).await {
                        Ok((keys, txns)) if keys + txns > 0 => {
                            tracing::info!(keys, txns, "reaped expired idempotency keys and transaction ids")
                        }
                        Ok(_) => {}
                        Err(e) => tracing::warn!(error = %e, "reaper failed"),
                    }
                }
            }));
            let tokenizer = pay_proto::tokenizer::TokenizerClient::new(deps.client(role, Role::Tokenizer)?);
            let payments = pay_proto::payments::PaymentsClient::new(deps.client(role, Role::Payments)?);
            let mut api = pay_api::Api::new(
                db.clone(),
                env.clone(),
                tokenizer,
                payments,
                Some(deps.verifier(role)),
                deps.metrics.clone(),
                deps.tuning.api.clone(),
            )
            .with_audit(deps.audit.clone());
            if deps.topology.urls.contains_key(&Role::Webhooks) {
                api = api.with_webhooks(pay_proto::webhooks::WebhooksClient::new(
                    deps.client(role, Role::Webhooks)?,
                ));
            }
            if deps.topology.urls.contains_key(&Role::Fraud) {
                api = api.with_fraud(pay_proto::fraud::FraudClient::new(deps.client(role, Role::Fraud)?));
            }
            let api = Arc::new(api);
            (
                pay_api::handlers::router(api),
                Readiness {
                    db: Some(db),
                    hsm: None,
                    metrics: deps.metrics.clone(),
                },
            )
        }
        Role::Waf => {
            let waf = match &deps.tuning.waf_engine {
                Some(engine) => engine.clone(),
                None => {
                    let config = deps.tuning.waf.clone().unwrap_or_else(pay_waf::WafConfig::payment_api);
                    let waf = pay_waf::Waf::new(config).map_err(|e| e.to_string())?;
                    // Compile every expression now: a rule that cannot be built stops the start
                    // (instead of never matching), and no request pays for compilation.
                    waf.rules().compile_all().map_err(|e| e.to_string())?;
                    Arc::new(waf)
                }
            };
            let upstream = deps.topology.url(Role::Api)?.to_owned();
            let mut proxy_config = deps
                .tuning
                .waf_proxy
                .clone()
                .unwrap_or_else(|| pay_waf::proxy::ProxyConfig::new(upstream.clone()));
            proxy_config.upstream = upstream;
            let proxy = Arc::new(pay_waf::proxy::WafProxy::new(
                waf,
                proxy_config,
                deps.http.clone(),
                Some(deps.issuer(role)?),
                env.clone(),
                deps.metrics.clone(),
            ));
            (
                proxy.router(),
                Readiness {
                    db: None,
                    hsm: None,
                    metrics: deps.metrics.clone(),
                },
            )
        }
    };
    let ops = Router::new()
        .route("/healthz", get(healthz))
        .route("/readyz", get(readyz))
        .route("/metrics", get(metrics))
        .with_state(ready);
    let tracked = router.layer(axum::middleware::from_fn_with_state(
        HttpMetrics {
            metrics: deps.metrics.clone(),
            service: role.name(),
        },
        pay_net::metrics::track,
    ));
    Ok(BuiltRole {
        role,
        router: ops.merge(tracked),
        background,
        payments: payments_handle,
        tokenizer: tokenizer_handle,
        webhooks: webhooks_handle,
    })
}

/// Generates service keys for every role from `env`'s entropy (dev mode and the simulator),
/// returning the private keys and the matching directory.
pub fn generated_service_keys(env: &Env) -> (BTreeMap<Role, Arc<ServiceKey>>, ServiceDirectory) {
    let mut keys = BTreeMap::new();
    let mut dir = ServiceDirectory::new();
    for role in Role::ALL {
        let k = ServiceKey::generate(role.name(), env.entropy.as_ref());
        dir.insert(role.name(), k.verifying_key());
        keys.insert(role, Arc::new(k));
    }
    (keys, dir)
}

/// Adds a generated key for the `waf` role to `keys` and `dir` (dev mode and tests; drawn
/// after the service roles' keys so their keys stay what they were).
pub fn add_generated_waf_key(env: &Env, keys: &mut BTreeMap<Role, Arc<ServiceKey>>, dir: &mut ServiceDirectory) {
    let k = ServiceKey::generate(Role::Waf.name(), env.entropy.as_ref());
    dir.insert(Role::Waf.name(), k.verifying_key());
    keys.insert(Role::Waf, Arc::new(k));
}

/// Makes sure the HSM has a current KEK and fingerprint key (first start); returns the keys
/// it had to create.
pub async fn ensure_hsm_keys(hsm: &dyn Hsm) -> Result<Vec<pay_hsm::KeyInfo>, String> {
    let mut created = vec![];
    for (purpose, label) in [
        (pay_hsm::KeyPurpose::Kek, "kek"),
        (pay_hsm::KeyPurpose::Fingerprint, "fingerprint"),
    ] {
        if hsm.current_key(purpose).await.is_err() {
            created.push(
                hsm.generate_key(purpose, label)
                    .await
                    .map_err(|e| format!("cannot create the {label} key in the HSM: {e}"))?,
            );
        }
    }
    Ok(created)
}

/// [`ensure_hsm_keys`], recording each key it creates in the audit log (when the node keeps
/// one) as `key.create` by `paymentd`, from `origin` (`startup`, `unseal`): a key coming into
/// existence is a key-management event the log must show (PCI DSS 10.2.1, 3.6.1).
pub async fn ensure_hsm_keys_audited(
    hsm: &dyn Hsm,
    audit: Option<&pay_audit::AuditLog>,
    origin: &str,
) -> Result<Vec<pay_hsm::KeyInfo>, String> {
    let created = ensure_hsm_keys(hsm).await?;
    if let Some(a) = audit {
        for k in &created {
            a.record("paymentd", "key.create", pay_audit::Outcome::Success, origin, &k.id.0)
                .await;
        }
    }
    Ok(created)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The reaper and the velocity pruner run this way: a pass every period, the first after
    /// one period, and none once the node is told to stop.
    #[tokio::test]
    async fn periodic_tasks_run_once_a_period_until_stopped() {
        use std::sync::atomic::{AtomicU32, Ordering};
        let counting = |period: Duration| {
            let passes = Arc::new(AtomicU32::new(0));
            let counted = passes.clone();
            let task = periodic(period, move || {
                let counted = counted.clone();
                async move {
                    counted.fetch_add(1, Ordering::SeqCst);
                }
            });
            let (stop_tx, stop_rx) = tokio::sync::watch::channel(false);
            (passes, stop_tx, tokio::spawn(task(stop_rx)))
        };
        // An hour's period: nothing runs at start.
        let (passes, stop, running) = counting(Duration::from_secs(3600));
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(passes.load(Ordering::SeqCst), 0, "no pass before the first period ends");
        stop.send(true).expect("the task is listening");
        running.await.expect("the task ends when told to stop");
        // A 10 ms period: passes keep coming until the stop, and none after it.
        let (passes, stop, running) = counting(Duration::from_millis(10));
        let deadline = tokio::time::Instant::now() + Duration::from_secs(10);
        while passes.load(Ordering::SeqCst) < 3 {
            assert!(tokio::time::Instant::now() < deadline, "fewer than 3 passes in 10 s");
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        stop.send(true).expect("the task is listening");
        running.await.expect("the task ends when told to stop");
        let stopped_at = passes.load(Ordering::SeqCst);
        tokio::time::sleep(Duration::from_millis(100)).await;
        assert_eq!(passes.load(Ordering::SeqCst), stopped_at, "no pass after stopping");
    }

    #[tokio::test]
    async fn hsm_keys_created_at_startup_are_in_the_audit_log_once() {
        let (env, _) = Env::deterministic("paymentd", 7, pay_core::Timestamp::from_millis(1_767_225_600_000));
        let hsm = pay_hsm::SoftHsm::new_ephemeral(env.entropy.clone(), env.clock.clone());
        let dir = tempfile::tempdir().expect("temp dir");
        let path = dir.path().join("audit.log");
        let audit = pay_audit::AuditLog::open(&path, env.clone(), None, 100).expect("audit log");

        let created = ensure_hsm_keys_audited(&hsm, Some(&audit), "startup")
            .await
            .expect("keys");
        assert_eq!(created.len(), 2, "a KEK and a fingerprint key");
        // A second start finds the keys and records nothing.
        let again = ensure_hsm_keys_audited(&hsm, Some(&audit), "unseal")
            .await
            .expect("keys");
        assert!(again.is_empty());

        let log = std::fs::read_to_string(&path).expect("read audit log");
        let entries: Vec<serde_json::Value> = log
            .lines()
            .map(|l| serde_json::from_str(l).expect("audit line is JSON"))
            .filter(|e: &serde_json::Value| e["event"] == "key.create")
            .collect();
        assert_eq!(entries.len(), 2, "{log}");
        for (e, k) in entries.iter().zip(&created) {
            assert_eq!(e["actor"], "paymentd");
            assert_eq!(e["origin"], "startup");
            assert_eq!(e["outcome"], "success");
            assert_eq!(e["object"], k.id.0.as_str());
        }
    }
}
