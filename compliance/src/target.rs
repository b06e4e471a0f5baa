//! What the scenarios run against: an embedded system started in-process on loopback, or a
//! deployed one reached by URL; and the views into it the checks need (the public API, the
//! database, the logs, the audit log, and the admin endpoint a key custodian uses).

use async_trait::async_trait;
use bytes::Bytes;
use http::Method;
use pay_core::{Entropy as _, Env};
use pay_hsm::shamir::Share;
use pay_net::logging::LogSink;
use pay_net::{BoxIo, BoxListener, HttpClient, TcpTransport, Transport};
use pay_store::memory::MemoryBackend;
use pay_store::postgres::{PgBackend, PgSettings};
use pay_store::testing::TestDatabase;
use paymentd::admin::AdminClient;
use paymentd::local::{start_local, LocalNode, LocalOptions, OperatorOptions};
use paymentd::wiring::Tuning;
use std::io;
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

/// Which system the scenarios check.
// One per run: the size of the deployed variant does not matter.
#[allow(clippy::large_enum_variant)]
#[derive(Debug, Clone)]
pub enum TargetSpec {
    /// Every role started in this process on loopback, per scenario.
    Embedded {
        /// Where records live.
        store: EmbeddedStore,
    },
    /// A running deployment.
    Deployed(Deployed),
}

/// The records store of an embedded target.
#[derive(Debug, Clone)]
pub enum EmbeddedStore {
    /// In memory (the default).
    Memory,
    /// PostgreSQL: the given server URL (migrated at start), or a throwaway test database.
    Postgres(Option<String>),
}

/// How to reach a deployed system.
#[derive(Clone)]
pub struct Deployed {
    /// Public base URL (`https://pay.example.com`).
    pub base_url: String,
    /// A merchant secret key (test mode).
    pub api_key: String,
    /// The merchant's publishable key, for least-privilege checks.
    pub publishable_key: Option<String>,
    /// Read access to the records database, for at-rest checks.
    pub database_url: Option<String>,
    /// The node's log file, for log checks.
    pub log_file: Option<std::path::PathBuf>,
    /// PEM roots to trust for the public listener (otherwise the probe trusts any certificate
    /// for protocol checks and the API client refuses to connect to HTTPS).
    pub ca_file: Option<std::path::PathBuf>,
    /// The node's admin endpoint (`http://127.0.0.1:7190`), for the key-management scenarios.
    pub admin_url: Option<String>,
    /// The file holding the admin bearer token.
    pub admin_token_file: Option<std::path::PathBuf>,
    /// The node's audit log file (`audit.file` in its config), as readable where pcicheck runs.
    pub audit_log: Option<std::path::PathBuf>,
    /// Custodian share files, one per custodian, for the unseal scenario against a node that
    /// was started sealed.
    pub unseal_share_files: Vec<std::path::PathBuf>,
}

impl Deployed {
    /// Whether key-management calls (status, rotation, key states) can be made.
    pub fn has_admin(&self) -> bool {
        self.admin_url.is_some() && self.admin_token_file.is_some()
    }
}

impl std::fmt::Debug for Deployed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Deployed")
            .field("base_url", &self.base_url)
            .field("api_key", &pay_api::keys::mask_key(&self.api_key))
            .field("database_url", &self.database_url.as_ref().map(|_| "<set>"))
            .field("log_file", &self.log_file)
            .field("admin_url", &self.admin_url)
            .field("admin_token_file", &self.admin_token_file)
            .field("audit_log", &self.audit_log)
            .field("unseal_share_files", &self.unseal_share_files.len())
            .finish()
    }
}

impl TargetSpec {
    /// One line describing the target for reports (never includes credentials).
    pub fn describe(&self) -> String {
        match self {
            TargetSpec::Embedded { store } => format!(
                "embedded paymentd (every role in-process on loopback, {}, software HSM, audit log and admin endpoint per scenario)",
                match store {
                    EmbeddedStore::Memory => "in-memory store".to_owned(),
                    EmbeddedStore::Postgres(Some(_)) => "PostgreSQL (given server)".to_owned(),
                    EmbeddedStore::Postgres(None) => "PostgreSQL (throwaway test database)".to_owned(),
                }
            ),
            TargetSpec::Deployed(d) => format!(
                "deployed system at {} (database access: {}, log file: {}, admin endpoint: {}, audit log: {}, unseal shares: {})",
                d.base_url,
                if d.database_url.is_some() { "yes" } else { "no" },
                d.log_file
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none".into()),
                match (&d.admin_url, d.has_admin()) {
                    (Some(u), true) => u.clone(),
                    (Some(u), false) => format!("{u} (no token: unseal only)"),
                    (None, _) => "none".into(),
                },
                d.audit_log
                    .as_ref()
                    .map(|p| p.display().to_string())
                    .unwrap_or_else(|| "none".into()),
                d.unseal_share_files.len()
            ),
        }
    }

    /// Whether the target is embedded.
    pub fn is_embedded(&self) -> bool {
        matches!(self, TargetSpec::Embedded { .. })
    }
}

/// Deliberate defects for proving that a failing control is reported as failed (hidden CLI
/// switch, used by the crate's negative test only).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum FaultInjection {
    /// None: the real system.
    #[default]
    None,
    /// Every card tokenized through the harness is also written to the captured log stream
    /// raw, bypassing the redaction layer, as a component logging a request body would.
    RawPanInLogs,
}

/// Shared by every scenario of one run.
pub struct RunContext {
    /// The target.
    pub spec: TargetSpec,
    /// Captured logs of embedded nodes.
    pub logs: LogCapture,
    /// The embedded PostgreSQL database, created once per run.
    pub pg: tokio::sync::Mutex<Option<Arc<EmbeddedPg>>>,
    /// Injected defect.
    pub fault: FaultInjection,
    /// Where this run's log lines start in the process-wide capture.
    pub log_start: usize,
}

/// An embedded target's PostgreSQL database.
pub struct EmbeddedPg {
    /// Connection URL.
    pub url: String,
    /// Kept alive (dropped at process end) when throwaway.
    _db: Option<TestDatabase>,
}

impl RunContext {
    /// A context for `spec`.
    pub fn new(spec: TargetSpec, fault: FaultInjection) -> RunContext {
        let logs = LogCapture::global();
        let log_start = logs.len();
        RunContext {
            spec,
            logs,
            pg: tokio::sync::Mutex::new(None),
            fault,
            log_start,
        }
    }

    async fn embedded_pg(&self, url: &Option<String>) -> Result<Arc<EmbeddedPg>, String> {
        let mut g = self.pg.lock().await;
        if let Some(p) = g.as_ref() {
            return Ok(p.clone());
        }
        let p = match url {
            Some(u) => {
                let b = PgBackend::connect(u, &PgSettings::default())
                    .await
                    .map_err(|e| format!("cannot connect to the database: {e}"))?;
                b.migrate().await.map_err(|e| format!("migrations failed: {e}"))?;
                b.pool().close().await;
                EmbeddedPg {
                    url: u.clone(),
                    _db: None,
                }
            }
            None => {
                let db = TestDatabase::create().await?;
                EmbeddedPg {
                    url: db.url.clone(),
                    _db: Some(db),
                }
            }
        };
        let p = Arc::new(p);
        *g = Some(p.clone());
        Ok(p)
    }
}

/// The in-process log stream: the same JSON, redacting subscriber `paymentd` installs, writing
/// into a buffer the log checks read.
#[derive(Clone)]
pub struct LogCapture {
    buf: Arc<Mutex<Vec<u8>>>,
}

static CAPTURE: OnceLock<LogCapture> = OnceLock::new();

impl LogCapture {
    /// The process-wide capture; installs the subscriber the first time.
    pub fn global() -> LogCapture {
        CAPTURE
            .get_or_init(|| {
                let buf = Arc::new(Mutex::new(Vec::new()));
                // Fails only if another subscriber was installed first (then logs go there and
                // the log checks see nothing, which the "logs were captured" step reports).
                let _ = pay_net::logging::init_json(LogSink::Buffer(buf.clone()), "debug,hyper_util=info");
                LogCapture { buf }
            })
            .clone()
    }

    /// Bytes captured so far.
    pub fn len(&self) -> usize {
        match self.buf.lock() {
            Ok(g) => g.len(),
            Err(p) => p.into_inner().len(),
        }
    }

    /// Whether nothing was captured yet.
    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Everything captured from byte `start` on (a run's own lines).
    pub fn text_since(&self, start: usize) -> String {
        let g = match self.buf.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        String::from_utf8_lossy(g.get(start..).unwrap_or_default()).into_owned()
    }

    /// Appends a raw line, bypassing the redaction layer (fault injection only).
    pub fn append_raw(&self, line: &str) {
        let mut g = match self.buf.lock() {
            Ok(g) => g,
            Err(p) => p.into_inner(),
        };
        g.extend_from_slice(line.as_bytes());
        g.push(b'\n');
    }
}

/// An HTTP answer from the public API.
#[derive(Debug, Clone)]
pub struct Answer {
    /// Method and path, for evidence.
    pub request: String,
    /// Status code.
    pub status: u16,
    /// Headers.
    pub headers: http::HeaderMap,
    /// Body as JSON (`Null` when not JSON).
    pub json: serde_json::Value,
    /// Raw body.
    pub raw: Bytes,
}

impl Answer {
    /// A string at a JSON pointer.
    pub fn str(&self, pointer: &str) -> Option<&str> {
        self.json.pointer(pointer).and_then(|v| v.as_str())
    }
    /// `error.code`.
    pub fn code(&self) -> Option<&str> {
        self.str("/error/code")
    }
    /// A header as text.
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.get(name).and_then(|v| v.to_str().ok())
    }
}

/// Errors reaching the target.
#[derive(Debug, thiserror::Error)]
pub enum TargetError {
    /// The request could not be sent or answered.
    #[error("{0}: {1}")]
    Http(String, String),
    /// The target could not be set up.
    #[error("{0}")]
    Setup(String),
}

/// A client for the public API that speaks like the Stripe SDKs (form bodies, bearer keys).
#[derive(Clone)]
pub struct ApiClient {
    http: HttpClient,
    base: String,
    key: String,
}

/// A transport that wraps every connection in TLS (deployed targets on `https://`).
struct TlsTransport {
    config: Arc<rustls::ClientConfig>,
    server_name: String,
}

#[async_trait]
impl Transport for TlsTransport {
    async fn bind(&self, _addr: &str) -> io::Result<BoxListener> {
        Err(io::Error::new(io::ErrorKind::Unsupported, "client-only transport"))
    }
    async fn connect(&self, host: &str, port: u16) -> io::Result<BoxIo> {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let _ = tcp.set_nodelay(true);
        let name = rustls::pki_types::ServerName::try_from(self.server_name.clone())
            .map_err(|e| io::Error::new(io::ErrorKind::InvalidInput, e.to_string()))?;
        let tls = tokio_rustls::TlsConnector::from(self.config.clone())
            .connect(name, tcp)
            .await?;
        Ok(Box::new(tls))
    }
}

impl ApiClient {
    /// A client for `base` (http or https) with `key`; HTTPS trusts the PEM roots in
    /// `ca_pem`.
    pub fn new(base: &str, key: &str, ca_pem: Option<&[u8]>) -> Result<ApiClient, TargetError> {
        let base = base.trim_end_matches('/');
        let (http, base) = if let Some(rest) = base.strip_prefix("https://") {
            let pem = ca_pem.ok_or_else(|| {
                TargetError::Setup("an https:// base URL needs --ca-file with the roots to trust".into())
            })?;
            let config = pay_net::tls::client_config_with_roots(pem).map_err(|e| TargetError::Setup(e.to_string()))?;
            let host = rest.split(['/', ':']).next().unwrap_or_default().to_owned();
            let authority = rest.split('/').next().unwrap_or_default();
            let authority = if authority.contains(':') {
                authority.to_owned()
            } else {
                format!("{authority}:443")
            };
            let t = TlsTransport {
                config,
                server_name: host,
            };
            // hyper sees plain HTTP; the transport does TLS underneath.
            (HttpClient::new(Arc::new(t)), format!("http://{authority}"))
        } else {
            (HttpClient::new(Arc::new(TcpTransport)), base.to_owned())
        };
        Ok(ApiClient {
            http,
            base,
            key: key.to_owned(),
        })
    }

    /// The same client with another key.
    pub fn with_key(&self, key: &str) -> ApiClient {
        ApiClient {
            key: key.to_owned(),
            ..self.clone()
        }
    }

    /// A request with a raw body and extra headers (no `Authorization` when the key is empty).
    pub async fn raw(
        &self,
        method: Method,
        path: &str,
        body: Bytes,
        headers: &[(&str, &str)],
    ) -> Result<Answer, TargetError> {
        let auth = format!("Bearer {}", self.key);
        let mut h: Vec<(&str, &str)> = vec![];
        if !self.key.is_empty() {
            h.push(("authorization", auth.as_str()));
        }
        // As the Stripe SDKs do (the WAF scores a request without one as suspicious).
        if !headers.iter().any(|(k, _)| k.eq_ignore_ascii_case("user-agent")) {
            h.push(("user-agent", "Stripe/v1 pcicheck/0.1"));
        }
        h.extend_from_slice(headers);
        let request = format!("{method} {path}");
        let resp = self
            .http
            .request(
                method,
                &format!("{}{path}", self.base),
                &h,
                body,
                Duration::from_secs(30),
            )
            .await
            .map_err(|e| TargetError::Http(request.clone(), e.to_string()))?;
        Ok(Answer {
            request,
            status: resp.status.as_u16(),
            json: serde_json::from_slice(&resp.body).unwrap_or(serde_json::Value::Null),
            headers: resp.headers,
            raw: resp.body,
        })
    }

    /// A form POST, with an `Idempotency-Key` when given.
    pub async fn post(&self, path: &str, form: &[(&str, &str)], idem: Option<&str>) -> Result<Answer, TargetError> {
        let body = form_urlencoded::Serializer::new(String::new())
            .extend_pairs(form.iter())
            .finish();
        let mut headers = vec![("content-type", "application/x-www-form-urlencoded")];
        if let Some(k) = idem {
            headers.push(("idempotency-key", k));
        }
        self.raw(Method::POST, path, Bytes::from(body), &headers).await
    }

    /// A GET.
    pub async fn get(&self, path: &str) -> Result<Answer, TargetError> {
        self.raw(Method::GET, path, Bytes::new(), &[]).await
    }
}

/// Where the records of the target can be read.
pub enum Records {
    /// The embedded in-memory store.
    Memory(Arc<MemoryBackend>),
    /// A PostgreSQL database.
    Postgres(PgBackend),
    /// No access (deployed target without `--database-url`).
    None,
}

/// The system one scenario runs against.
pub struct System {
    /// The public base URL.
    pub base_url: String,
    /// Client with the merchant's secret key.
    pub client: ApiClient,
    /// The merchant's publishable key, if known.
    pub publishable_key: Option<String>,
    /// The records.
    pub records: Records,
    /// The store as a backend (for the retention job), when reachable.
    pub backend: Option<Arc<dyn pay_store::Backend>>,
    /// The embedded node.
    pub node: Option<LocalNode>,
    /// The deployed log file.
    pub log_file: Option<std::path::PathBuf>,
    /// PEM roots for the public listener (deployed).
    pub ca_pem: Option<Vec<u8>>,
    /// The admin endpoint, as a key custodian reaches it (embedded: always; deployed: with
    /// `--admin-url`, and `--admin-token-file` for anything but unsealing).
    pub admin: Option<AdminClient>,
    /// The audit log file (embedded: the node's own; deployed: `--audit-log`).
    pub audit_log: Option<PathBuf>,
    /// Audit log lines already there when the scenario began (its entries come after).
    pub audit_mark: u64,
    /// Custodian shares (embedded sealed start: made at start; deployed: the share files).
    /// Held in harness memory only, never written to evidence.
    pub unseal_shares: Vec<Share>,
    /// How many custodians the shares were made for, when known (embedded sealed start).
    pub custodians: Option<u8>,
    /// Files of this system (keystore, audit log, altered copies), removed when it stops.
    pub scratch: Scratch,
    /// The embedded node's own throwaway database (dropped when the system stops).
    pub own_db: Option<TestDatabase>,
}

/// A sealed start: the master key split among `custodians`, `threshold` of whom unseal.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct SealSpec {
    /// Shares made (one per custodian).
    pub custodians: u8,
    /// Shares needed.
    pub threshold: u8,
}

/// A private temporary directory, removed when dropped.
#[derive(Debug)]
pub struct Scratch {
    path: PathBuf,
}

impl Scratch {
    /// Creates a fresh directory (mode 0700) under the system temporary directory.
    pub fn new() -> Result<Scratch, String> {
        let mut r = [0u8; 8];
        pay_core::OsEntropy::new().fill_bytes(&mut r);
        let path = std::env::temp_dir().join(format!("pcicheck-{}-{}", std::process::id(), hex::encode(r)));
        let mut b = std::fs::DirBuilder::new();
        #[cfg(unix)]
        {
            use std::os::unix::fs::DirBuilderExt;
            b.mode(0o700);
        }
        b.create(&path)
            .map_err(|e| format!("cannot create {}: {e}", path.display()))?;
        Ok(Scratch { path })
    }

    /// The directory.
    pub fn path(&self) -> &Path {
        &self.path
    }
}

impl Drop for Scratch {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.path);
    }
}

/// Lines in a file (0 when it does not exist yet).
pub fn count_lines(path: &Path) -> Result<u64, String> {
    match std::fs::read_to_string(path) {
        Ok(t) => Ok(t.lines().count() as u64),
        Err(e) if e.kind() == io::ErrorKind::NotFound => Ok(0),
        Err(e) => Err(format!("cannot read {}: {e}", path.display())),
    }
}

fn read_secret(path: &Path, what: &str) -> Result<pay_core::SecretString, String> {
    std::fs::read_to_string(path)
        .map(pay_core::SecretString::new)
        .map_err(|e| format!("cannot read the {what} file {}: {e}", path.display()))
}

impl System {
    /// Starts (embedded) or connects to (deployed) the target.
    pub async fn start(ctx: &RunContext, tuning: Tuning, seal: Option<SealSpec>) -> Result<System, String> {
        match &ctx.spec {
            TargetSpec::Embedded { store } => {
                let mut own_db = None;
                let (backend, ledger, records): (Arc<dyn pay_store::Backend>, Arc<dyn pay_store::Backend>, Records) =
                    match store {
                        EmbeddedStore::Memory => {
                            let m = Arc::new(MemoryBackend::new());
                            (m.clone(), Arc::new(MemoryBackend::new()), Records::Memory(m))
                        }
                        EmbeddedStore::Postgres(url) => {
                            // A throwaway database per node: a database belongs to one HSM (a
                            // rotation re-wraps every data key in it), and each scenario's node
                            // has its own. A given server database is shared by the run.
                            let pg_url = match url {
                                None => {
                                    let db = TestDatabase::create().await?;
                                    let u = db.url.clone();
                                    own_db = Some(db);
                                    u
                                }
                                Some(_) => ctx.embedded_pg(url).await?.url.clone(),
                            };
                            let settings = PgSettings {
                                max_connections: 8,
                                ..PgSettings::default()
                            };
                            let mut conns = vec![];
                            for _ in 0..3 {
                                conns.push(
                                    PgBackend::connect(&pg_url, &settings)
                                        .await
                                        .map_err(|e| format!("cannot connect to the database: {e}"))?,
                                );
                            }
                            let (r, l, b) = match (conns.pop(), conns.pop(), conns.pop()) {
                                (Some(r), Some(l), Some(b)) => (r, l, b),
                                _ => return Err("database connections".into()),
                            };
                            (Arc::new(b), Arc::new(l), Records::Postgres(r))
                        }
                    };
                let env = Env::real("pcicheck");
                let scratch = Scratch::new()?;
                // Sealed: a keystore whose master key exists only as custodian shares, made
                // the way `paymentd keys split-master` makes it, opened sealed as serve does.
                let (hsm, sealed, shares) = match seal {
                    Some(spec) => {
                        let keystore = scratch.path().join("keystore");
                        let shares =
                            paymentd::ops::create_split_keystore(&keystore, spec.threshold, spec.custodians, &env)
                                .await
                                .map_err(|e| e.to_string())?;
                        let soft = Arc::new(
                            pay_hsm::SoftHsm::open_sealed(
                                &keystore,
                                spec.threshold,
                                env.entropy.clone(),
                                env.clock.clone(),
                            )
                            .map_err(|e| e.to_string())?,
                        );
                        let h: Arc<dyn pay_hsm::Hsm> = soft.clone();
                        (h, Some(soft), shares)
                    }
                    None => {
                        let h: Arc<dyn pay_hsm::Hsm> =
                            Arc::new(pay_hsm::SoftHsm::new_ephemeral(env.entropy.clone(), env.clock.clone()));
                        (h, None, Vec::<Share>::new())
                    }
                };
                let mut token = [0u8; 24];
                env.entropy.fill_bytes(&mut token);
                let token = pay_core::SecretString::new(hex::encode(token));
                let audit_log = scratch.path().join("audit.log");
                let node = start_local(LocalOptions {
                    public_port: 0,
                    env,
                    store: backend.clone(),
                    acquirer_store: ledger,
                    hsm,
                    tuning,
                    create_account: true,
                    operator: OperatorOptions {
                        admin_token: Some(token.clone()),
                        audit_log: Some(audit_log.clone()),
                        audit_checkpoint_every: None,
                        sealed,
                    },
                })
                .await?;
                let admin = node.admin_url.as_deref().map(|u| AdminClient::new(u, token.expose()));
                let key = node
                    .secret_key
                    .as_ref()
                    .map(|s| s.expose().clone())
                    .ok_or("the embedded node created no secret key")?;
                let client = ApiClient::new(&node.public_url, &key, None).map_err(|e| e.to_string())?;
                Ok(System {
                    base_url: node.public_url.clone(),
                    client,
                    publishable_key: node.publishable_key.clone(),
                    records,
                    backend: Some(backend),
                    node: Some(node),
                    log_file: None,
                    ca_pem: None,
                    admin,
                    audit_log: Some(audit_log),
                    audit_mark: 0,
                    custodians: seal.map(|s| s.custodians),
                    unseal_shares: shares,
                    scratch,
                    own_db,
                })
            }
            TargetSpec::Deployed(d) => {
                let ca_pem = match &d.ca_file {
                    Some(p) => Some(std::fs::read(p).map_err(|e| format!("cannot read {}: {e}", p.display()))?),
                    None => None,
                };
                let client = ApiClient::new(&d.base_url, &d.api_key, ca_pem.as_deref()).map_err(|e| e.to_string())?;
                let (records, backend): (Records, Option<Arc<dyn pay_store::Backend>>) = match &d.database_url {
                    Some(u) => {
                        let settings = PgSettings {
                            max_connections: 4,
                            ..PgSettings::default()
                        };
                        let r = PgBackend::connect(u, &settings)
                            .await
                            .map_err(|e| format!("cannot connect to the database: {e}"))?;
                        let b = PgBackend::connect(u, &settings)
                            .await
                            .map_err(|e| format!("cannot connect to the database: {e}"))?;
                        (Records::Postgres(r), Some(Arc::new(b)))
                    }
                    None => (Records::None, None),
                };
                let admin = match (&d.admin_url, &d.admin_token_file) {
                    (Some(u), Some(f)) => Some(AdminClient::new(u, read_secret(f, "admin token")?.expose())),
                    // Unsealing and the seal status need no token.
                    (Some(u), None) => Some(AdminClient::new(u, "")),
                    (None, _) => None,
                };
                let mut unseal_shares = vec![];
                for f in &d.unseal_share_files {
                    let text = read_secret(f, "unseal share")?;
                    unseal_shares.push(Share::parse(text.expose()).map_err(|e| format!("{}: {e}", f.display()))?);
                }
                let audit_mark = match &d.audit_log {
                    Some(p) => count_lines(p)?,
                    None => 0,
                };
                Ok(System {
                    base_url: d.base_url.clone(),
                    client,
                    publishable_key: d.publishable_key.clone(),
                    records,
                    backend,
                    node: None,
                    log_file: d.log_file.clone(),
                    ca_pem,
                    admin,
                    audit_log: d.audit_log.clone(),
                    audit_mark,
                    unseal_shares,
                    custodians: None,
                    scratch: Scratch::new()?,
                    own_db: None,
                })
            }
        }
    }

    /// Stops an embedded node.
    pub async fn stop(self) {
        if let Some(n) = self.node {
            n.node.shutdown().await;
        }
    }
}
