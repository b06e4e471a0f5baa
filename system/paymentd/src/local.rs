//! Every role in one process on loopback: `paymentd dev` (in-memory stores, an ephemeral
//! software HSM) and the integration tests (the same, on PostgreSQL). The WAF holds the
//! public port; the API listens on an internal one behind it. With [`OperatorOptions`] the
//! node also writes the audit log, serves the admin endpoint on loopback, and may start with
//! its software HSM sealed (as `paymentd serve` does with `hsm.unseal_threshold`).

use crate::node::{start, RunningNode};
use crate::wiring::{
    add_generated_waf_key, ensure_hsm_keys_audited, generated_service_keys, NodeDeps, Role, Topology, Tuning,
};
use pay_core::{AccountId, Env, SecretString};
use pay_net::metrics::Metrics;
use pay_net::{HttpClient, ServeOptions, TcpTransport, Transport};
use pay_store::{Backend, Db};
use std::collections::BTreeMap;
use std::path::PathBuf;
use std::sync::Arc;

/// What an operator of a local node gets: the audit log, the admin endpoint, a sealed start.
/// The default is none of them (`paymentd dev`).
#[derive(Default)]
pub struct OperatorOptions {
    /// Serve the admin endpoint (unseal, key status, rotation, key states) on a loopback port,
    /// accepting this bearer token (at least 16 characters, as in serve mode).
    pub admin_token: Option<SecretString>,
    /// Write the security audit log to this file (checkpoints signed by the HSM).
    pub audit_log: Option<PathBuf>,
    /// Signed checkpoint every this many audit events (default 100).
    pub audit_checkpoint_every: Option<u64>,
    /// The software HSM again when it starts sealed ([`LocalOptions::hsm`] must be this same
    /// HSM): no key is checked or created at start and card operations are refused until
    /// enough custodian shares reach the admin endpoint.
    pub sealed: Option<Arc<pay_hsm::SoftHsm>>,
}

/// How to start a local node.
pub struct LocalOptions {
    /// Public port (0 picks a free one).
    pub public_port: u16,
    /// Clock, entropy, fault points.
    pub env: Env,
    /// Records store.
    pub store: Arc<dyn Backend>,
    /// Acquirer ledger store.
    pub acquirer_store: Arc<dyn Backend>,
    /// The HSM.
    pub hsm: Arc<dyn pay_hsm::Hsm>,
    /// Tunables.
    pub tuning: Tuning,
    /// Create a merchant account and keys at start.
    pub create_account: bool,
    /// Audit log, admin endpoint, sealed start.
    pub operator: OperatorOptions,
}

/// A running local node.
pub struct LocalNode {
    /// The public base URL (`http://127.0.0.1:PORT`, the WAF).
    pub public_url: String,
    /// Base URL of each role.
    pub topology: Topology,
    /// The merchant account created at start.
    pub account: Option<AccountId>,
    /// Its secret key.
    pub secret_key: Option<SecretString>,
    /// Its publishable key.
    pub publishable_key: Option<String>,
    /// The metrics registry.
    pub metrics: Metrics,
    /// The service keys of every role (tests act as a service with them).
    pub service_keys: std::collections::BTreeMap<Role, Arc<pay_net::ServiceKey>>,
    /// The admin endpoint's base URL (`http://127.0.0.1:PORT`), when one was asked for.
    pub admin_url: Option<String>,
    /// The audit log, when one was asked for.
    pub audit: Option<Arc<pay_audit::AuditLog>>,
    /// The node.
    pub node: RunningNode,
}

/// Starts every role on loopback.
pub async fn start_local(opts: LocalOptions) -> Result<LocalNode, String> {
    let transport: Arc<dyn Transport> = Arc::new(TcpTransport);
    let operator = opts.operator;
    if let Some(t) = &operator.admin_token {
        if t.expose().trim().len() < 16 {
            return Err("the admin token must be at least 16 characters".into());
        }
    }
    let audit = match &operator.audit_log {
        Some(path) => Some(Arc::new(
            pay_audit::AuditLog::open(
                path,
                opts.env.clone(),
                Some(opts.hsm.clone()),
                operator.audit_checkpoint_every.unwrap_or(100),
            )
            .map_err(|e| format!("audit: {e}"))?,
        )),
        None => None,
    };
    // A sealed HSM answers nothing until unsealed; the unseal endpoint checks the keys then.
    if operator.sealed.is_none() {
        ensure_hsm_keys_audited(opts.hsm.as_ref(), audit.as_deref(), "startup").await?;
    }
    let mut listeners = BTreeMap::new();
    let mut topology = Topology::default();
    for role in Role::WITH_WAF {
        let addr = if role == Role::Waf {
            format!("127.0.0.1:{}", opts.public_port)
        } else {
            "127.0.0.1:0".to_owned()
        };
        let l = transport
            .bind(&addr)
            .await
            .map_err(|e| format!("cannot listen on {addr} for {role}: {e}"))?;
        let bound = l.local_addr().map_err(|e| e.to_string())?;
        topology.urls.insert(role, format!("http://{bound}"));
        listeners.insert(role, l);
    }
    let (mut service_keys, mut directory) = generated_service_keys(&opts.env);
    add_generated_waf_key(&opts.env, &mut service_keys, &mut directory);
    let metrics = Metrics::new();
    let deps = NodeDeps {
        env: opts.env.clone(),
        // Every role is in this process: calls between them skip the loopback sockets.
        http: HttpClient::new(transport.clone()).with_in_process(pay_net::InProcessRoutes::new()),
        store: opts.store.clone(),
        acquirer_store: opts.acquirer_store,
        hsm: Some(opts.hsm.clone()),
        webhook_outbound: Some(pay_webhooks::Outbound::new(
            transport.clone(),
            pay_webhooks::Outbound::web_pki(None)?,
            pay_webhooks::SsrfPolicy::permissive(),
        )),
        service_keys: service_keys.clone(),
        directory,
        topology: topology.clone(),
        metrics: metrics.clone(),
        tuning: opts.tuning,
        audit: audit.clone(),
    };
    let roles = listeners
        .into_iter()
        .map(|(r, l)| (r, l, ServeOptions::default()))
        .collect();
    let mut node = start(&deps, roles)?;
    let admin_url = match (&operator.admin_token, &node.tokenizer) {
        (Some(token), Some(tokenizer)) => {
            let state = crate::admin::AdminState {
                tokenizer: tokenizer.clone(),
                hsm: opts.hsm.clone(),
                sealable: operator.sealed.clone(),
                token_digest: crate::admin::token_digest(token.expose()),
                records: None,
                audit: audit.clone(),
            };
            let l = transport
                .bind("127.0.0.1:0")
                .await
                .map_err(|e| format!("cannot listen for the admin endpoint: {e}"))?;
            let bound = l.local_addr().map_err(|e| e.to_string())?;
            node.serve_router("admin", l, crate::admin::router(state), ServeOptions::default());
            Some(format!("http://{bound}"))
        }
        (Some(_), None) => return Err("the admin endpoint needs the tokenizer role".into()),
        (None, _) => None,
    };
    let (account, secret_key, publishable_key) = if opts.create_account {
        let db = Db::new(opts.store, opts.env.clone());
        let keys = pay_api::keys::create_keys(
            &db,
            opts.env.entropy.as_ref(),
            opts.env.now(),
            None,
            "Development account",
        )
        .await
        .map_err(|e| format!("cannot create the development account: {e}"))?;
        (Some(keys.account), Some(keys.secret), Some(keys.publishable))
    } else {
        (None, None, None)
    };
    Ok(LocalNode {
        public_url: topology.url(Role::Waf)?.to_owned(),
        topology,
        account,
        secret_key,
        publishable_key,
        metrics,
        service_keys,
        admin_url,
        audit,
        node,
    })
}
