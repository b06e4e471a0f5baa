//! `paymentd`: the reference payment system.
//!
//! * `paymentd dev` — every role in one process on loopback, in-memory stores, an ephemeral
//!   software HSM; prints the base URL and test keys.
//! * `paymentd serve --config FILE [--role all|api|tokenizer|payments|acquirer]` — production
//!   mode on PostgreSQL with TLS and a real HSM.
//! * `paymentd migrate`, `paymentd keys create-api-key`, `paymentd keys init-service-keys`.
//! * Key management against a running node's admin endpoint: `paymentd keys status`,
//!   `paymentd keys rotate`, `paymentd keys set-state`, `paymentd unseal`; offline:
//!   `paymentd keys split-master` (custodian shares) and `paymentd audit verify`.

use anyhow::{anyhow, bail, Context, Result};
use clap::{Parser, Subcommand};
use pay_core::Env;
use pay_net::logging::{init_json, LogSink};
use pay_net::{HttpClient, ServeOptions, ServiceDirectory, ServiceKey, TcpTransport, Transport};
use pay_store::memory::MemoryBackend;
use pay_store::postgres::{PgBackend, PgSettings};
use paymentd::config::{Config, HsmConfig};
use paymentd::local::{start_local, LocalOptions};
use paymentd::wiring::{ensure_hsm_keys_audited, NodeDeps, Role, Topology, Tuning};
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

/// Counts the store's batches and the calls they carried in `/metrics`, per lane (commits,
/// asynchronous calls: idempotency keys, fraud velocity, and reads by id), so that a dashboard
/// shows the mean batch size (group commit, docs/operations.md).
fn spawn_group_commit_metrics(store: PgBackend, metrics: pay_net::metrics::Metrics) {
    tokio::spawn(async move {
        let mut counted = pay_store::postgres::GroupCommitStats::default();
        let mut tick = tokio::time::interval(std::time::Duration::from_secs(5));
        loop {
            tick.tick().await;
            let now = store.group_commit_stats();
            for (lane, was, is) in [
                ("commits", counted.commits, now.commits),
                ("asynchronous", counted.asynchronous, now.asynchronous),
                ("reads", counted.reads, now.reads),
            ] {
                metrics.inc(
                    "store_batches_total",
                    "Database transactions written for a lane of grouped calls (a lone call is a batch of one).",
                    &[("lane", lane)],
                    is.batches.saturating_sub(was.batches),
                );
                metrics.inc(
                    "store_batched_calls_total",
                    "Calls written for a lane, alone or in batches.",
                    &[("lane", lane)],
                    is.calls.saturating_sub(was.calls),
                );
            }
            counted = now;
        }
    });
}

/// mimalloc: a request allocates and frees many small buffers (HTTP, JSON, SQL rows) across
/// worker threads; glibc's malloc spent ~15 % of paymentd's CPU under load on that.
#[global_allocator]
static GLOBAL: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// Asks the kernel not to back this process's memory with transparent huge pages.
///
/// mimalloc asks for huge pages for its arenas (`madvise`), so where the kernel's THP mode is
/// `madvise` (Debian's default) each first touch of a 2 MB region faults in and zeroes all of
/// it. On this project's VMs that made `paymentd dev` 88 MB resident at start and its start
/// cost 380–720 ms of CPU for the same work, against 66 MB and 260–285 ms without
/// (docs/performance.md, "the dev start's page faults"). Databases and allocators commonly
/// advise the same. A kernel without the setting refuses it, which changes nothing else.
fn disable_transparent_huge_pages() {
    // SAFETY: PR_SET_THP_DISABLE takes one integer argument and reads or writes no memory of
    // this process.
    unsafe {
        libc::prctl(libc::PR_SET_THP_DISABLE, 1, 0, 0, 0);
    }
}

#[derive(Parser)]
#[command(
    name = "paymentd",
    version,
    about = "Reference payment system: Stripe-compatible API, card vault, payments, acquirer simulator."
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run every role in one process with in-memory stores (development).
    Dev {
        /// Public port.
        #[arg(long, default_value_t = 4242)]
        port: u16,
        /// Log filter.
        #[arg(long, default_value = "warn")]
        log_level: String,
    },
    /// Run in production mode.
    Serve {
        /// Configuration file (YAML).
        #[arg(long)]
        config: PathBuf,
        /// Which role to run (`all` runs every role).
        #[arg(long, default_value = "all")]
        role: String,
        /// Do not apply pending database migrations at start.
        #[arg(long)]
        no_migrate: bool,
    },
    /// Apply database migrations.
    Migrate {
        /// Configuration file (for the database URL).
        #[arg(long, conflicts_with = "database_url")]
        config: Option<PathBuf>,
        /// Database URL (instead of a config file).
        #[arg(long, env = "PAYMENTD_DATABASE_URL")]
        database_url: Option<String>,
    },
    /// Key management.
    Keys {
        #[command(subcommand)]
        command: KeysCommand,
    },
    /// Submit one custodian share to a sealed node (through its admin endpoint). The share is
    /// read from --share-file or, if omitted, from standard input.
    Unseal {
        /// Configuration file of the node (for admin.listen).
        #[arg(long)]
        config: PathBuf,
        /// File holding the share.
        #[arg(long)]
        share_file: Option<PathBuf>,
    },
    /// The security audit log.
    Audit {
        #[command(subcommand)]
        command: AuditCommand,
    },
}

#[derive(Subcommand)]
enum AuditCommand {
    /// Check the hash chain and checkpoint signatures; report the first broken line.
    Verify {
        /// The audit log file.
        path: PathBuf,
        /// Accept checkpoints only from this signing public key (SEC1 hex); repeatable.
        #[arg(long)]
        trusted_key: Vec<String>,
    },
}

#[derive(Subcommand)]
enum KeysCommand {
    /// Create a merchant account (or use one) and a secret + publishable API key pair.
    CreateApiKey {
        /// Configuration file (for the database URL).
        #[arg(long, conflicts_with = "database_url")]
        config: Option<PathBuf>,
        /// Database URL (instead of a config file).
        #[arg(long, env = "PAYMENTD_DATABASE_URL")]
        database_url: Option<String>,
        /// Existing account to add keys to; a new account is created when omitted.
        #[arg(long)]
        account: Option<String>,
        /// Name of a new account.
        #[arg(long, default_value = "Merchant")]
        name: String,
    },
    /// Create the P-256 identity key pairs of every role in a directory.
    InitServiceKeys {
        /// Directory to write `<role>.key.pem` and `<role>.pub.pem` into.
        #[arg(long)]
        dir: PathBuf,
    },
    /// Key versions, their states and how many data keys and vault records each KEK protects.
    Status {
        /// Configuration file of the node (admin.listen, admin.token_file).
        #[arg(long)]
        config: PathBuf,
    },
    /// Create a new KEK version and re-wrap every data key under it, online.
    Rotate {
        /// Configuration file of the node.
        #[arg(long)]
        config: PathBuf,
        /// Data keys per database transaction.
        #[arg(long, default_value_t = 500)]
        batch: u32,
    },
    /// Move a KEK to decrypt_only, retired or destroyed (refused while it still wraps data keys).
    SetState {
        /// Configuration file of the node.
        #[arg(long)]
        config: PathBuf,
        /// Key id, e.g. kek-1.
        key: String,
        /// decrypt_only, retired or destroyed.
        state: String,
    },
    /// Create a software-HSM keystore under a new random master key and print the master key
    /// as M-of-N custodian shares (the key itself is never written); or, with
    /// --master-key-file, split an existing master key.
    SplitMaster {
        /// The keystore file.
        #[arg(long)]
        keystore: PathBuf,
        /// Shares needed to unseal.
        #[arg(long)]
        threshold: u8,
        /// Shares to create (one per custodian).
        #[arg(long)]
        shares: u8,
        /// Split this existing master key instead of creating a keystore.
        #[arg(long)]
        master_key_file: Option<PathBuf>,
    },
}

fn main() -> Result<()> {
    disable_transparent_huge_pages();
    let cli = Cli::parse();
    let rt = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    rt.block_on(async move {
        match cli.command {
            Command::Dev { port, log_level } => dev(port, &log_level).await,
            Command::Serve {
                config,
                role,
                no_migrate,
            } => serve(&config, &role, no_migrate).await,
            Command::Migrate { config, database_url } => migrate(config.as_deref(), database_url).await,
            Command::Keys {
                command:
                    KeysCommand::CreateApiKey {
                        config,
                        database_url,
                        account,
                        name,
                    },
            } => create_api_key(config.as_deref(), database_url, account, &name).await,
            Command::Keys {
                command: KeysCommand::InitServiceKeys { dir },
            } => init_service_keys(&dir),
            Command::Keys {
                command: KeysCommand::Status { config },
            } => keys_status(&config).await,
            Command::Keys {
                command: KeysCommand::Rotate { config, batch },
            } => keys_rotate(&config, batch).await,
            Command::Keys {
                command: KeysCommand::SetState { config, key, state },
            } => keys_set_state(&config, &key, &state).await,
            Command::Keys {
                command:
                    KeysCommand::SplitMaster {
                        keystore,
                        threshold,
                        shares,
                        master_key_file,
                    },
            } => split_master(&keystore, threshold, shares, master_key_file.as_deref()).await,
            Command::Unseal { config, share_file } => unseal(&config, share_file.as_deref()).await,
            Command::Audit {
                command: AuditCommand::Verify { path, trusted_key },
            } => audit_verify(&path, &trusted_key),
        }
    })
}

async fn shutdown_signal() {
    #[cfg(unix)]
    {
        let mut term = match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(s) => s,
            Err(_) => {
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
        tokio::select! {
            biased;
            _ = term.recv() => {}
            _ = tokio::signal::ctrl_c() => {}
        }
    }
    #[cfg(not(unix))]
    {
        let _ = tokio::signal::ctrl_c().await;
    }
}

async fn dev(port: u16, log_level: &str) -> Result<()> {
    init_json(LogSink::Stdout, log_level).map_err(|e| anyhow!(e))?;
    let env = Env::real("dev");
    let hsm = Arc::new(pay_hsm::SoftHsm::new_ephemeral(env.entropy.clone(), env.clock.clone()));
    let local = start_local(LocalOptions {
        public_port: port,
        env,
        store: Arc::new(MemoryBackend::new()),
        acquirer_store: Arc::new(MemoryBackend::new()),
        hsm,
        tuning: Tuning::default(),
        create_account: true,
        operator: Default::default(),
    })
    .await
    .map_err(|e| anyhow!(e))?;
    let secret = local
        .secret_key
        .as_ref()
        .map(|s| s.expose().clone())
        .unwrap_or_default();
    println!("paymentd dev is running (in-memory; data is lost on exit)\n");
    println!("  API base URL:     {}", local.public_url);
    println!("  Secret key:       {secret}");
    println!(
        "  Publishable key:  {}",
        local.publishable_key.clone().unwrap_or_default()
    );
    println!("  Metrics:          {}/metrics\n", local.public_url);
    println!("Try:\n  curl {}/v1/payment_intents -u {secret}: -d amount=2000 -d currency=usd -d payment_method=<pm_…> -d confirm=true\n", local.public_url);
    shutdown_signal().await;
    eprintln!("shutting down");
    local.node.shutdown().await;
    Ok(())
}

fn read_service_keys(dir: &Path, local_roles: &[Role]) -> Result<(BTreeMap<Role, Arc<ServiceKey>>, ServiceDirectory)> {
    let mut keys = BTreeMap::new();
    let mut directory = ServiceDirectory::new();
    for role in Role::WITH_WAF {
        let pub_path = dir.join(format!("{role}.pub.pem"));
        // Key directories made before the WAF existed have no waf key: fine unless this
        // node runs the WAF.
        if role == Role::Waf && !pub_path.exists() && !local_roles.contains(&role) {
            continue;
        }
        let pem = std::fs::read_to_string(&pub_path)
            .with_context(|| format!("service_keys: cannot read {}", pub_path.display()))?;
        directory
            .insert_pem(role.name(), &pem)
            .map_err(|e| anyhow!("service_keys: {e}"))?;
        if local_roles.contains(&role) {
            let key_path = dir.join(format!("{role}.key.pem"));
            let pem = std::fs::read_to_string(&key_path)
                .with_context(|| format!("service_keys: cannot read {}", key_path.display()))?;
            keys.insert(
                role,
                Arc::new(ServiceKey::from_pkcs8_pem(role.name(), &pem).map_err(|e| anyhow!("service_keys: {e}"))?),
            );
        }
    }
    Ok((keys, directory))
}

/// The HSM, and the software HSM again when it starts sealed (for the unseal endpoint).
type OpenedHsm = (Arc<dyn pay_hsm::Hsm>, Option<Arc<pay_hsm::SoftHsm>>);

async fn open_hsm(cfg: &Config, env: &Env) -> Result<OpenedHsm> {
    match cfg.hsm.as_ref().ok_or_else(|| anyhow!("hsm: not configured"))? {
        HsmConfig::Soft {
            keystore,
            master_key_file: None,
            unseal_threshold: Some(threshold),
        } if std::env::var_os("PAYMENTD_MASTER_KEY").is_none() => {
            let h = Arc::new(
                pay_hsm::SoftHsm::open_sealed(keystore, *threshold, env.entropy.clone(), env.clock.clone())
                    .map_err(|e| anyhow!("hsm: {e}"))?,
            );
            Ok((h.clone(), Some(h)))
        }
        HsmConfig::Soft {
            keystore,
            master_key_file,
            ..
        } => {
            // The master key comes from a file or, for orchestrators that inject secrets into
            // the environment, from PAYMENTD_MASTER_KEY (64 hex characters).
            let master = match (master_key_file, std::env::var("PAYMENTD_MASTER_KEY").ok()) {
                (Some(path), _) => pay_hsm::MasterKey::from_file(path).map_err(|e| anyhow!("hsm.master_key_file: {e}"))?,
                (None, Some(hex)) => pay_hsm::MasterKey::from_hex(&hex).map_err(|e| anyhow!("PAYMENTD_MASTER_KEY: {e}"))?,
                (None, None) => bail!("hsm: give hsm.master_key_file or PAYMENTD_MASTER_KEY (unsealing with custodian shares comes with `paymentd unseal`)"),
            };
            let h = pay_hsm::SoftHsm::open(keystore, master, env.entropy.clone(), env.clock.clone())
                .map_err(|e| anyhow!("hsm: {e}"))?;
            Ok((Arc::new(h), None))
        }
        HsmConfig::Pkcs11 {
            module,
            token_label,
            slot,
            pin_file,
            sessions,
            wrap_mechanism,
        } => {
            let pin = match (pin_file, std::env::var("PAYMENTD_HSM_PIN").ok()) {
                (Some(path), _) => pay_hsm::Pin::from_file(path).map_err(|e| anyhow!("hsm.pin_file: {e}"))?,
                (None, Some(text)) => pay_hsm::Pin::new(&text),
                (None, None) => bail!("hsm: give hsm.pin_file or PAYMENTD_HSM_PIN"),
            };
            let token = match (token_label, slot) {
                (Some(l), _) => pay_hsm::TokenSelector::Label(l.clone()),
                (None, Some(s)) => pay_hsm::TokenSelector::Slot(*s),
                (None, None) => bail!("hsm: give hsm.token_label or hsm.slot"),
            };
            let config = pay_hsm::Pkcs11Config {
                module: module.clone(),
                token,
                pin,
                sessions: *sessions,
                wrap: wrap_mechanism.to_choice(),
            };
            let clock = env.clock.clone();
            let h = tokio::task::spawn_blocking(move || pay_hsm::Pkcs11Hsm::connect(&config, clock))
                .await
                .context("hsm: connecting was interrupted")?
                .map_err(|e| anyhow!("hsm: {e}"))?;
            Ok((Arc::new(h), None))
        }
    }
}

async fn serve(config: &Path, role: &str, no_migrate: bool) -> Result<()> {
    let cfg = Config::load(config).map_err(|e| anyhow!(e))?;
    match &cfg.logging.file {
        Some(f) => {
            let file = std::fs::OpenOptions::new()
                .create(true)
                .append(true)
                .open(f)
                .with_context(|| format!("logging.file: cannot open {}", f.display()))?;
            init_json(LogSink::File(Arc::new(std::sync::Mutex::new(file))), &cfg.logging.level)
                .map_err(|e| anyhow!(e))?;
        }
        None => init_json(LogSink::Stdout, &cfg.logging.level).map_err(|e| anyhow!(e))?,
    }
    let roles: Vec<Role> = if role == "all" {
        Role::WITH_WAF.to_vec()
    } else {
        vec![role.parse::<Role>().map_err(|e| anyhow!(e))?]
    };
    let env = Env::real(if roles.len() == 1 { roles[0].name() } else { "paymentd" });
    #[cfg(feature = "fault-injection")]
    let env = match cfg.faults.as_ref().and_then(|f| f.crash_at.clone()) {
        Some(point) => env.with_faults(Arc::new(CrashAt(point))),
        None => env,
    };
    let db_url = Config::database_url(&cfg.database, "database.url").map_err(|e| anyhow!(e))?;
    let store = PgBackend::connect(&db_url, &cfg.database.settings())
        .await
        .map_err(|e| anyhow!("database: {e}"))?;
    if !no_migrate {
        store.migrate().await.map_err(|e| anyhow!("database: {e}"))?;
    }
    let deps_pool = store.pool().clone();
    let acquirer_store: Arc<dyn pay_store::Backend> = match &cfg.acquirer_database {
        Some(db) => {
            let url = Config::database_url(db, "acquirer_database.url").map_err(|e| anyhow!(e))?;
            let s = PgBackend::connect(&url, &db.settings())
                .await
                .map_err(|e| anyhow!("acquirer_database: {e}"))?;
            if !no_migrate {
                s.migrate().await.map_err(|e| anyhow!("acquirer_database: {e}"))?;
            }
            Arc::new(s)
        }
        None => Arc::new(store.clone()),
    };
    let (hsm, sealable) = if roles.contains(&Role::Tokenizer) || roles.contains(&Role::Webhooks) {
        let (h, sealable) = open_hsm(&cfg, &env).await?;
        (Some(h), sealable)
    } else {
        (None, None)
    };
    let audit = match &cfg.audit {
        Some(a) => Some(Arc::new(
            pay_audit::AuditLog::open(&a.file, env.clone(), hsm.clone(), a.checkpoint_every)
                .map_err(|e| anyhow!("audit: {e}"))?,
        )),
        None => None,
    };
    if let Some(h) = &hsm {
        if sealable.is_some() {
            tracing::warn!("the HSM is sealed: card operations are refused until `paymentd unseal` gets enough shares");
            println!("paymentd: HSM sealed; waiting for unseal shares");
        } else {
            ensure_hsm_keys_audited(h.as_ref(), audit.as_deref(), "startup")
                .await
                .map_err(|e| anyhow!(e))?;
        }
    }
    let (service_keys, directory) = read_service_keys(&cfg.service_keys.dir, &roles)?;
    let tls = match &cfg.tls {
        Some(t) => Some(
            pay_net::tls::server_config_from_pem_files(&t.cert_file, &t.key_file).map_err(|e| anyhow!("tls: {e}"))?,
        ),
        None => bail!("tls: required in serve mode"),
    };
    let transport: Arc<dyn Transport> = Arc::new(TcpTransport);
    let mut topology = Topology::default();
    for (r, url) in &cfg.peers {
        topology.urls.insert(*r, url.clone());
    }
    let mut listeners = vec![];
    // The public address belongs to the WAF when this node runs it, else to the API.
    let public_role = if roles.contains(&Role::Waf) {
        Role::Waf
    } else {
        Role::Api
    };
    for r in &roles {
        let (addr, opts) = if *r == public_role {
            (
                cfg.listen.public.clone(),
                ServeOptions {
                    tls: tls.clone(),
                    ..ServeOptions::default()
                },
            )
        } else {
            (
                cfg.listen
                    .roles
                    .get(r)
                    .cloned()
                    .unwrap_or_else(|| "127.0.0.1:0".to_owned()),
                ServeOptions::default(),
            )
        };
        let l = transport
            .bind(&addr)
            .await
            .with_context(|| format!("listen: cannot bind {addr} for the {r} role"))?;
        let bound = l.local_addr()?;
        if *r != public_role || !topology.urls.contains_key(r) {
            let scheme = if *r == public_role && tls.is_some() {
                "https"
            } else {
                "http"
            };
            topology.urls.insert(*r, format!("{scheme}://{bound}"));
        }
        tracing::info!(role = %r, address = %bound, "listening");
        listeners.push((*r, l, opts));
    }
    let metrics = pay_net::metrics::Metrics::new();
    spawn_group_commit_metrics(store.clone(), metrics.clone());
    let extra_roots = match &cfg.webhooks.ca_file {
        Some(p) => Some(std::fs::read(p).with_context(|| format!("webhooks.ca_file: cannot read {}", p.display()))?),
        None => None,
    };
    let webhook_outbound = pay_webhooks::Outbound::new(
        transport.clone(),
        pay_webhooks::Outbound::web_pki(extra_roots.as_deref()).map_err(|e| anyhow!("webhooks.ca_file: {e}"))?,
        pay_webhooks::SsrfPolicy::strict(cfg.webhooks.allow_list().map_err(|e| anyhow!(e))?),
    );
    let mut tuning = cfg.tuning.to_tuning();
    if let Some(s) = cfg.webhooks.attempt_timeout_secs {
        tuning.webhooks.attempt_timeout = std::time::Duration::from_secs(s.clamp(1, 60));
        tuning.webhooks.visibility = tuning.webhooks.attempt_timeout * 4;
    }
    if let Some(c) = cfg.webhooks.concurrency {
        tuning.webhooks.concurrency = c.clamp(1, 1000);
    }
    // Fraud velocity counters live in PostgreSQL in production (one call per score, batched
    // with the store's other asynchronous calls).
    tuning.fraud_velocity = Some(Arc::new(pay_fraud::pg::PgVelocityStore::new(&store)));
    let deps = NodeDeps {
        env,
        webhook_outbound: Some(webhook_outbound),
        // Calls between the roles this process hosts stay in process (see node::start).
        http: HttpClient::new(transport).with_in_process(pay_net::InProcessRoutes::new()),
        store: Arc::new(store),
        acquirer_store,
        hsm,
        service_keys,
        directory,
        topology,
        metrics,
        tuning: {
            cfg.waf.apply(&mut tuning).map_err(|e| anyhow!(e))?;
            tuning
        },
        audit: audit.clone(),
    };
    let node = paymentd::node::start(&deps, listeners).map_err(|e| anyhow!(e))?;
    let (admin_stop, admin_rx) = tokio::sync::watch::channel(false);
    let admin_server = match (&cfg.admin, &node.tokenizer, &deps.hsm) {
        (Some(admin), Some(tokenizer), Some(h)) => {
            let token = std::fs::read_to_string(&admin.token_file)
                .with_context(|| format!("admin.token_file: cannot read {}", admin.token_file.display()))?;
            if token.trim().len() < 16 {
                bail!("admin.token_file: the token must be at least 16 characters");
            }
            let pool = deps_pool.clone();
            let records: paymentd::admin::RecordCounter = Arc::new(move || {
                let pool = pool.clone();
                Box::pin(async move { paymentd::admin::records_per_kek(&pool).await })
            });
            let state = paymentd::admin::AdminState {
                tokenizer: tokenizer.clone(),
                hsm: h.clone(),
                sealable: sealable.clone(),
                token_digest: paymentd::admin::token_digest(&token),
                records: Some(records),
                audit: audit.clone(),
            };
            let l = TcpTransport
                .bind(&admin.listen)
                .await
                .with_context(|| format!("admin.listen: cannot bind {}", admin.listen))?;
            tracing::info!(address = %l.local_addr()?, "admin endpoint listening");
            let mut rx = admin_rx.clone();
            Some(tokio::spawn(async move {
                let shutdown = async move {
                    let _ = rx.wait_for(|s| *s).await;
                };
                if let Err(e) =
                    pay_net::serve(l, paymentd::admin::router(state), ServeOptions::default(), shutdown).await
                {
                    tracing::error!(error = %e, "admin endpoint failed");
                }
            }))
        }
        _ => None,
    };
    tracing::info!(roles = ?roles.iter().map(|r| r.name()).collect::<Vec<_>>(), "paymentd ready");
    println!("paymentd ready");
    shutdown_signal().await;
    tracing::info!("shutdown requested; finishing in-flight requests");
    let _ = admin_stop.send(true);
    if let Some(h) = admin_server {
        let _ = h.await;
    }
    node.shutdown().await;
    if let Some(a) = &audit {
        if let Err(e) = a.checkpoint().await {
            tracing::warn!(error = %e, "no closing audit checkpoint");
        }
    }
    tracing::info!("stopped");
    Ok(())
}

/// Aborts the process at one named fault point (crash tests only).
#[cfg(feature = "fault-injection")]
struct CrashAt(String);

#[cfg(feature = "fault-injection")]
impl pay_core::faults::FaultInjector for CrashAt {
    fn at(&self, point: &'static str, _subject: &str) -> pay_core::faults::FaultAction {
        if point == self.0 {
            pay_core::faults::FaultAction::Crash
        } else {
            pay_core::faults::FaultAction::Proceed
        }
    }
}

async fn database_from(config: Option<&Path>, url: Option<String>) -> Result<PgBackend> {
    let url = match (config, url) {
        (_, Some(u)) => u,
        (Some(c), None) => {
            let text = std::fs::read_to_string(c).with_context(|| format!("cannot read {}", c.display()))?;
            let cfg: Config = serde_yaml_ng::from_str(&text).with_context(|| format!("config file {}", c.display()))?;
            Config::database_url(&cfg.database, "database.url").map_err(|e| anyhow!(e))?
        }
        (None, None) => bail!("give --config FILE or --database-url (or PAYMENTD_DATABASE_URL)"),
    };
    PgBackend::connect(&url, &PgSettings::default())
        .await
        .map_err(|e| anyhow!("database: {e}"))
}

async fn migrate(config: Option<&Path>, url: Option<String>) -> Result<()> {
    let db = database_from(config, url).await?;
    db.migrate().await.map_err(|e| anyhow!(e))?;
    println!("migrations applied");
    Ok(())
}

async fn create_api_key(config: Option<&Path>, url: Option<String>, account: Option<String>, name: &str) -> Result<()> {
    let backend = database_from(config, url).await?;
    let env = Env::real("paymentd");
    let db = pay_store::Db::new(Arc::new(backend), env.clone());
    let account = account
        .map(|a| pay_core::AccountId::parse(&a))
        .transpose()
        .map_err(|e| anyhow!("--account: {e}"))?;
    let keys = pay_api::keys::create_keys(&db, env.entropy.as_ref(), env.now(), account, name)
        .await
        .map_err(|e| anyhow!(e))?;
    println!("account:         {}", keys.account);
    println!("secret key:      {}", keys.secret.expose());
    println!("publishable key: {}", keys.publishable);
    println!("\nThe secret key is shown only now; it is stored as a SHA-256 digest.");
    Ok(())
}

fn init_service_keys(dir: &Path) -> Result<()> {
    use std::io::Write;
    use std::os::unix::fs::OpenOptionsExt;
    std::fs::create_dir_all(dir).with_context(|| format!("cannot create {}", dir.display()))?;
    let entropy = pay_core::OsEntropy::new();
    for role in Role::WITH_WAF {
        let key = ServiceKey::generate(role.name(), &entropy);
        let priv_path = dir.join(format!("{role}.key.pem"));
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&priv_path)
            .with_context(|| format!("cannot create {} (already there?)", priv_path.display()))?;
        f.write_all(key.to_pkcs8_pem().map_err(|e| anyhow!(e))?.expose().as_bytes())?;
        std::fs::write(
            dir.join(format!("{role}.pub.pem")),
            key.public_pem().map_err(|e| anyhow!(e))?,
        )?;
    }
    println!("service keys written to {}", dir.display());
    Ok(())
}

/// The admin endpoint's address and token, from a node's configuration file.
fn admin_target(config: &Path) -> Result<(String, String)> {
    let text = std::fs::read_to_string(config).with_context(|| format!("cannot read {}", config.display()))?;
    let cfg: Config = serde_yaml_ng::from_str(&text).with_context(|| format!("config file {}", config.display()))?;
    let admin = cfg.admin.ok_or_else(|| {
        anyhow!(
            "{}: no admin section (admin.listen, admin.token_file)",
            config.display()
        )
    })?;
    let token = std::fs::read_to_string(&admin.token_file)
        .with_context(|| format!("admin.token_file: cannot read {}", admin.token_file.display()))?;
    Ok((format!("http://{}", admin.listen), token.trim().to_owned()))
}

fn admin_client(config: &Path) -> Result<paymentd::admin::AdminClient> {
    let (base, token) = admin_target(config)?;
    Ok(paymentd::admin::AdminClient::new(&base, &token))
}

async fn keys_status(config: &Path) -> Result<()> {
    let lines = admin_client(config)?.keys_status().await.map_err(|e| anyhow!(e))?;
    println!(
        "{:<16} {:<12} {:>7} {:<13} {:>10} {:>10}",
        "KEY", "PURPOSE", "VERSION", "STATE", "DATA KEYS", "RECORDS"
    );
    for l in lines {
        let state = serde_json::to_value(l.state)
            .ok()
            .and_then(|v| v.as_str().map(str::to_owned))
            .unwrap_or_default();
        let (dks, recs) = if l.purpose == "kek" {
            (
                l.data_keys.to_string(),
                l.records.map(|r| r.to_string()).unwrap_or_else(|| "-".into()),
            )
        } else {
            ("-".into(), "-".into())
        };
        println!(
            "{:<16} {:<12} {:>7} {:<13} {:>10} {:>10}",
            l.id, l.purpose, l.version, state, dks, recs
        );
    }
    Ok(())
}

async fn keys_rotate(config: &Path, batch: u32) -> Result<()> {
    let r = admin_client(config)?.rotate(batch).await.map_err(|e| anyhow!(e))?;
    println!(
        "new KEK {}; previous {} now decrypt_only; {} data keys re-wrapped in {} batches",
        r.new_kek,
        r.previous.iter().map(|k| k.0.as_str()).collect::<Vec<_>>().join(", "),
        r.rewrapped,
        r.batches
    );
    Ok(())
}

async fn keys_set_state(config: &Path, key: &str, state: &str) -> Result<()> {
    let state: pay_hsm::KeyState = serde_json::from_value(serde_json::Value::String(state.to_owned()))
        .map_err(|_| anyhow!("state must be one of decrypt_only, retired, destroyed"))?;
    let info = admin_client(config)?
        .set_state(key, state)
        .await
        .map_err(|e| anyhow!(e))?;
    let state = serde_json::to_value(info.state)
        .ok()
        .and_then(|v| v.as_str().map(str::to_owned))
        .unwrap_or_else(|| "?".into());
    println!("{} is now {state}", info.id);
    Ok(())
}

async fn unseal(config: &Path, share_file: Option<&Path>) -> Result<()> {
    let share = zeroize::Zeroizing::new(match share_file {
        Some(p) => std::fs::read_to_string(p).with_context(|| format!("cannot read {}", p.display()))?,
        None => {
            eprint!("unseal share: ");
            let mut line = String::new();
            std::io::stdin().read_line(&mut line).context("cannot read the share")?;
            line
        }
    });
    let status = admin_client(config)?.unseal(share.trim()).await.map_err(|e| match e {
        paymentd::admin::AdminClientError::Refused { message, .. } => anyhow!(message),
        other => anyhow!(other),
    })?;
    if !status.sealed {
        println!("unsealed");
    } else {
        println!("sealed: {} of {} shares received", status.received, status.threshold);
    }
    Ok(())
}

async fn split_master(keystore: &Path, threshold: u8, shares: u8, master_key_file: Option<&Path>) -> Result<()> {
    let env = Env::real("paymentd");
    let parts = match master_key_file {
        Some(p) => pay_hsm::MasterKey::from_file(p)
            .map_err(|e| anyhow!("--master-key-file: {e}"))?
            .split(threshold, shares, env.entropy.as_ref())
            .map_err(|e| anyhow!(e))?,
        None => paymentd::ops::create_split_keystore(keystore, threshold, shares, &env)
            .await
            .map_err(|e| anyhow!(e))?,
    };
    println!(
        "keystore {}: {threshold} of these {shares} shares unseal it. Give one to each custodian;\nthe master key itself is not stored anywhere.\n",
        keystore.display()
    );
    for (i, p) in parts.iter().enumerate() {
        println!("share {}: {}", i + 1, p.to_text().as_str());
    }
    Ok(())
}

fn audit_verify(path: &Path, trusted: &[String]) -> Result<()> {
    let report = paymentd::ops::verify_audit_log(path, trusted).map_err(|b| anyhow!("{b}"))?;
    println!("{report}");
    Ok(())
}
