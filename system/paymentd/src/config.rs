//! The `paymentd serve` configuration file (YAML), with environment overrides.
//!
//! Serve mode has no default secrets: the database URL, TLS certificate and key, the HSM
//! settings and the service keys must all be given, and a missing or bad setting stops the
//! process with a message naming it. Secrets are read from files named in the config (or the
//! database URL from `PAYMENTD_DATABASE_URL`), never written to logs.
//!
//! Environment overrides (applied after the file):
//! `PAYMENTD_DATABASE_URL`, `PAYMENTD_PUBLIC_LISTEN`, `PAYMENTD_LOG_LEVEL`, `PAYMENTD_LOG_FILE`,
//! `PAYMENTD_HSM_PIN_FILE`, `PAYMENTD_MASTER_KEY_FILE`. The PKCS#11 PIN may also come from
//! `PAYMENTD_HSM_PIN` (for orchestrators that inject secrets as environment variables).

use crate::wiring::Role;
use serde::Deserialize;
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

/// Why the configuration was refused.
#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    /// The file could not be read.
    #[error("cannot read config file {path}: {reason}")]
    Read {
        /// Path.
        path: String,
        /// Error.
        reason: String,
    },
    /// The YAML does not match the schema.
    #[error("config file {path}: {reason}")]
    Parse {
        /// Path.
        path: String,
        /// Error with line and column.
        reason: String,
    },
    /// A setting is missing or invalid.
    #[error("config setting `{setting}`: {reason}")]
    Invalid {
        /// Dotted setting name.
        setting: String,
        /// What is wrong.
        reason: String,
    },
}

fn invalid(setting: &str, reason: impl Into<String>) -> ConfigError {
    ConfigError::Invalid {
        setting: setting.to_owned(),
        reason: reason.into(),
    }
}

/// The whole file.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Config {
    /// Listeners.
    pub listen: Listen,
    /// TLS for the public listener (required in serve mode).
    pub tls: Option<Tls>,
    /// PostgreSQL.
    pub database: Database,
    /// A separate database for the acquirer simulator's ledger (defaults to `database`).
    pub acquirer_database: Option<Database>,
    /// The HSM.
    pub hsm: Option<HsmConfig>,
    /// Service identity keys.
    pub service_keys: ServiceKeys,
    /// Base URLs of roles running elsewhere (when this node runs only some roles).
    #[serde(default)]
    pub peers: BTreeMap<Role, String>,
    /// Logging.
    #[serde(default)]
    pub logging: Logging,
    /// Simulator-style fault points, for crash tests; refused unless the binary was built
    /// with the `fault-injection` feature.
    #[serde(default)]
    pub faults: Option<Faults>,
    /// Service tunables.
    #[serde(default)]
    pub tuning: TuningConfig,
    /// Webhook delivery.
    #[serde(default)]
    pub webhooks: WebhooksSettings,
    /// The operator endpoint (unseal, key status, rotation); nodes hosting the tokenizer.
    pub admin: Option<AdminConfig>,
    /// The security audit log.
    pub audit: Option<AuditConfig>,
    /// The WAF in front of the API.
    #[serde(default)]
    pub waf: WafSection,
}

/// `admin`: the operator endpoint.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AdminConfig {
    /// Address (plain HTTP; keep it on loopback or a private management network).
    pub listen: String,
    /// File holding the admin bearer token (needed for everything but unsealing).
    pub token_file: PathBuf,
}

/// `audit`: the tamper-evident audit log.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct AuditConfig {
    /// The JSON-lines file (appended; hash-chained).
    pub file: PathBuf,
    /// A checkpoint signed by the HSM's signing key after this many events (default 100).
    #[serde(default = "default_checkpoint_every")]
    pub checkpoint_every: u64,
}

fn default_checkpoint_every() -> u64 {
    100
}

/// Webhook delivery settings.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WebhooksSettings {
    /// Internal address blocks (CIDR) webhook URLs may reach anyway; everything else that is
    /// loopback, private, link-local or otherwise internal is refused (SSRF guard).
    #[serde(default)]
    pub allow_cidrs: Vec<String>,
    /// Extra CA certificates (PEM) trusted for https webhook URLs, besides the public roots.
    pub ca_file: Option<std::path::PathBuf>,
    /// Per-attempt timeout, seconds (default 15).
    pub attempt_timeout_secs: Option<u64>,
    /// Deliveries in flight per queue (default 32).
    pub concurrency: Option<u32>,
}

impl WebhooksSettings {
    /// The SSRF allow list.
    pub fn allow_list(&self) -> Result<Vec<pay_webhooks::Cidr>, ConfigError> {
        self.allow_cidrs
            .iter()
            .map(|c| pay_webhooks::Cidr::parse(c).map_err(|e| invalid("webhooks.allow_cidrs", e)))
            .collect()
    }
}

/// Settings of the `waf` role.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct WafSection {
    /// Inspection settings (pay-waf's YAML: paranoia, threshold, detect_only, limits,
    /// exclusions, rule_scores); the shipped payment-API configuration when absent.
    pub config_file: Option<PathBuf>,
    /// Load balancers whose `X-Forwarded-For` is believed (CIDR).
    #[serde(default)]
    pub trusted_proxies: Vec<String>,
    /// When not empty, only these clients are served (CIDR).
    #[serde(default)]
    pub allow: Vec<String>,
    /// Clients refused outright (CIDR).
    #[serde(default)]
    pub deny: Vec<String>,
}

impl WafSection {
    /// Applies these settings to `t`.
    pub fn apply(&self, t: &mut crate::wiring::Tuning) -> Result<(), String> {
        if let Some(path) = &self.config_file {
            let text =
                std::fs::read_to_string(path).map_err(|e| format!("waf.config_file: {}: {e}", path.display()))?;
            t.waf = Some(pay_waf::WafConfig::from_yaml(&text).map_err(|e| format!("waf.config_file: {e}"))?);
        }
        let cidrs = |field: &str, v: &[String]| -> Result<Vec<pay_waf::proxy::Cidr>, String> {
            v.iter()
                .map(|c| c.parse().map_err(|e| format!("waf.{field}: {e}")))
                .collect()
        };
        let mut p = pay_waf::proxy::ProxyConfig::new(String::new());
        p.trusted_proxies = cidrs("trusted_proxies", &self.trusted_proxies)?;
        p.allow = cidrs("allow", &self.allow)?;
        p.deny = cidrs("deny", &self.deny)?;
        // The client-facing rate limits (`tuning.key_rate_*`, `tuning.ip_rate_*`) hold at
        // both gates a request passes: the WAF in front and the API behind it.
        p.ip_rate = t.api.ip_rate;
        p.key_rate = t.api.key_rate;
        t.waf_proxy = Some(p);
        Ok(())
    }
}

/// Tunables with production defaults.
#[derive(Debug, Clone, Deserialize, Default)]
#[serde(deny_unknown_fields)]
pub struct TuningConfig {
    /// After how many seconds an Idempotency-Key lock held by a request that died may be
    /// taken over (default 30).
    pub idempotency_lock_timeout_secs: Option<u64>,
    /// How often the payment reconciler runs, seconds (default 10).
    pub reconcile_interval_secs: Option<u64>,
    /// How old an unsettled operation must be before the reconciler takes it, seconds
    /// (default 5).
    pub reconcile_grace_secs: Option<u64>,
    /// Sustained requests per second allowed per API key (default 100), at the WAF and at
    /// the API.
    pub key_rate_per_second: Option<f64>,
    /// Burst allowed per API key (default 200).
    pub key_rate_burst: Option<f64>,
    /// Sustained requests per second allowed per client IP (default 200), at the WAF and at
    /// the API.
    pub ip_rate_per_second: Option<f64>,
    /// Burst allowed per client IP (default 400).
    pub ip_rate_burst: Option<f64>,
}

impl TuningConfig {
    /// The service tuning these settings give.
    pub fn to_tuning(&self) -> crate::wiring::Tuning {
        let mut t = crate::wiring::Tuning::default();
        if let Some(s) = self.idempotency_lock_timeout_secs {
            t.api.idempotency_lock_timeout = std::time::Duration::from_secs(s);
        }
        if let Some(s) = self.reconcile_interval_secs {
            t.reconcile_every = Some(std::time::Duration::from_secs(s.max(1)));
        }
        if let Some(s) = self.reconcile_grace_secs {
            t.payments.reconcile_grace = std::time::Duration::from_secs(s);
        }
        if let Some(r) = self.key_rate_per_second {
            t.api.key_rate.per_second = r;
        }
        if let Some(b) = self.key_rate_burst {
            t.api.key_rate.burst = b;
        }
        if let Some(r) = self.ip_rate_per_second {
            t.api.ip_rate.per_second = r;
        }
        if let Some(b) = self.ip_rate_burst {
            t.api.ip_rate.burst = b;
        }
        t
    }
}

/// Listener addresses.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Listen {
    /// The public address (the WAF, or the API on a node without the WAF; TLS).
    pub public: String,
    /// Internal addresses per role (plain HTTP on a private network; every call carries a
    /// signed service token).
    #[serde(default)]
    pub roles: BTreeMap<Role, String>,
}

/// TLS certificate and key files (PEM).
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Tls {
    /// Certificate chain.
    pub cert_file: PathBuf,
    /// Private key.
    pub key_file: PathBuf,
}

/// A PostgreSQL database.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Database {
    /// Connection URL (or use `url_file` / `PAYMENTD_DATABASE_URL` to keep the password out
    /// of the file).
    pub url: Option<String>,
    /// A file holding the connection URL.
    pub url_file: Option<PathBuf>,
    /// Pool size.
    #[serde(default = "default_pool")]
    pub max_connections: u32,
    /// Batches of commits, and of calls that commit asynchronously, written at the same time,
    /// each in its own database transaction; calls arriving while they are written wait and go
    /// together in the next batch (group commit). `0` writes every call on its own; more than
    /// `1` lets two batches of a lane deadlock each other (docs/operations.md).
    #[serde(default = "default_commit_batches")]
    pub commit_batches: u32,
    /// Most calls in one batch (1 to 32).
    #[serde(default = "default_max_commit_batch")]
    pub max_commit_batch: u32,
}

fn default_pool() -> u32 {
    32
}

fn default_commit_batches() -> u32 {
    pay_store::postgres::GroupCommit::default().batches_in_flight as u32
}

fn default_max_commit_batch() -> u32 {
    pay_store::postgres::GroupCommit::MAX_BATCH as u32
}

impl Database {
    /// The store's connection settings.
    pub fn settings(&self) -> pay_store::postgres::PgSettings {
        pay_store::postgres::PgSettings {
            max_connections: self.max_connections,
            group_commit: pay_store::postgres::GroupCommit {
                batches_in_flight: self.commit_batches as usize,
                max_batch: self.max_commit_batch as usize,
            },
            ..pay_store::postgres::PgSettings::default()
        }
    }

    /// Checks the settings; `section` names the section in errors.
    fn validate(&self, section: &str) -> Result<(), ConfigError> {
        if !(1..=1000).contains(&self.max_connections) {
            return Err(invalid(
                &format!("{section}.max_connections"),
                "must be between 1 and 1000",
            ));
        }
        if self.commit_batches > self.max_connections {
            return Err(invalid(
                &format!("{section}.commit_batches"),
                "must be at most max_connections (each batch is written on its own connection)",
            ));
        }
        let max = pay_store::postgres::GroupCommit::MAX_BATCH as u32;
        if !(1..=max).contains(&self.max_commit_batch) {
            return Err(invalid(
                &format!("{section}.max_commit_batch"),
                format!("must be between 1 and {max}"),
            ));
        }
        Ok(())
    }
}

/// The HSM backend.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields, tag = "backend", rename_all = "lowercase")]
pub enum HsmConfig {
    /// The software HSM with a keystore file, unlocked by a master key file or by custodian
    /// shares (`paymentd unseal`).
    Soft {
        /// Keystore file.
        keystore: PathBuf,
        /// Master key file (hex); omit to require unsealing with shares.
        master_key_file: Option<PathBuf>,
        /// Shares needed to unseal when there is no master key file.
        unseal_threshold: Option<u8>,
    },
    /// A PKCS#11 module (AWS CloudHSM, SoftHSMv2, …). See docs/hsm.md.
    Pkcs11 {
        /// Module path, e.g. `/opt/cloudhsm/lib/libcloudhsm_pkcs11.so`.
        module: PathBuf,
        /// Token label (give this or `slot`).
        token_label: Option<String>,
        /// Slot id (give this or `token_label`).
        slot: Option<u64>,
        /// File holding the user PIN (CloudHSM: `user:password`); or set `PAYMENTD_HSM_PIN`.
        pin_file: Option<PathBuf>,
        /// Session pool size.
        #[serde(default = "default_sessions")]
        sessions: usize,
        /// Data-key wrapping: `auto` (AES key wrap with padding when the module has it, else
        /// AES-GCM), `aes-kwp` or `aes-gcm`.
        #[serde(default)]
        wrap_mechanism: WrapSetting,
    },
}

/// `hsm.wrap_mechanism`.
#[derive(Debug, Clone, Copy, Default, Deserialize, PartialEq, Eq)]
pub enum WrapSetting {
    /// Probe the module.
    #[default]
    #[serde(rename = "auto")]
    Auto,
    /// `CKM_AES_KEY_WRAP_PAD`.
    #[serde(rename = "aes-kwp")]
    AesKwp,
    /// `CKM_AES_GCM`.
    #[serde(rename = "aes-gcm")]
    AesGcm,
}

impl WrapSetting {
    /// The HSM crate's setting.
    pub fn to_choice(self) -> pay_hsm::WrapChoice {
        match self {
            WrapSetting::Auto => pay_hsm::WrapChoice::Auto,
            WrapSetting::AesKwp => pay_hsm::WrapChoice::KeyWrapPad,
            WrapSetting::AesGcm => pay_hsm::WrapChoice::Gcm,
        }
    }
}

fn default_sessions() -> usize {
    8
}

/// Where service keys live: `<role>.key.pem` (private, for roles on this node) and
/// `<role>.pub.pem` (public, for every role). `paymentd keys init-service-keys` creates them.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ServiceKeys {
    /// Directory.
    pub dir: PathBuf,
}

/// Logging settings.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Logging {
    /// Filter, e.g. `info` or `pay_payments=debug,info`.
    #[serde(default = "default_level")]
    pub level: String,
    /// Append JSON lines to this file instead of standard output.
    pub file: Option<PathBuf>,
}

impl Default for Logging {
    fn default() -> Self {
        Logging {
            level: default_level(),
            file: None,
        }
    }
}

fn default_level() -> String {
    "info".to_owned()
}

/// Test-only fault points.
#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Faults {
    /// Abort the process at this fault point (e.g. `payments.after_authorize`).
    pub crash_at: Option<String>,
}

impl Config {
    /// Loads, applies environment overrides, and validates.
    pub fn load(path: &Path) -> Result<Config, ConfigError> {
        let text = std::fs::read_to_string(path).map_err(|e| ConfigError::Read {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        let mut cfg: Config = serde_yaml_ng::from_str(&text).map_err(|e| ConfigError::Parse {
            path: path.display().to_string(),
            reason: e.to_string(),
        })?;
        cfg.apply_env(|k| std::env::var(k).ok());
        cfg.validate()?;
        Ok(cfg)
    }

    /// Applies environment overrides through `get`.
    pub fn apply_env(&mut self, get: impl Fn(&str) -> Option<String>) {
        if let Some(v) = get("PAYMENTD_DATABASE_URL") {
            self.database.url = Some(v);
            self.database.url_file = None;
        }
        if let Some(v) = get("PAYMENTD_PUBLIC_LISTEN") {
            self.listen.public = v;
        }
        if let Some(v) = get("PAYMENTD_LOG_LEVEL") {
            self.logging.level = v;
        }
        if let Some(v) = get("PAYMENTD_LOG_FILE") {
            self.logging.file = Some(PathBuf::from(v));
        }
        match (
            &mut self.hsm,
            get("PAYMENTD_HSM_PIN_FILE"),
            get("PAYMENTD_MASTER_KEY_FILE"),
        ) {
            (Some(HsmConfig::Pkcs11 { pin_file, .. }), Some(v), _) => *pin_file = Some(PathBuf::from(v)),
            (Some(HsmConfig::Soft { master_key_file, .. }), _, Some(v)) => *master_key_file = Some(PathBuf::from(v)),
            _ => {}
        }
    }

    /// Checks every setting that can be checked without connecting anywhere.
    pub fn validate(&self) -> Result<(), ConfigError> {
        self.listen
            .public
            .parse::<std::net::SocketAddr>()
            .map_err(|e| invalid("listen.public", format!("not an address:port: {e}")))?;
        for (role, addr) in &self.listen.roles {
            addr.parse::<std::net::SocketAddr>()
                .map_err(|e| invalid(&format!("listen.roles.{role}"), format!("not an address:port: {e}")))?;
        }
        let tls = self.tls.as_ref().ok_or_else(|| {
            invalid(
                "tls",
                "serve mode requires TLS on the public listener (tls.cert_file and tls.key_file)",
            )
        })?;
        for (name, p) in [("tls.cert_file", &tls.cert_file), ("tls.key_file", &tls.key_file)] {
            if !p.exists() {
                return Err(invalid(name, format!("file {} does not exist", p.display())));
            }
        }
        if self.database.url.is_none() && self.database.url_file.is_none() {
            return Err(invalid(
                "database.url",
                "set database.url, database.url_file or PAYMENTD_DATABASE_URL",
            ));
        }
        self.database.validate("database")?;
        if let Some(db) = &self.acquirer_database {
            db.validate("acquirer_database")?;
        }
        self.webhooks.allow_list()?;
        if let Some(p) = &self.webhooks.ca_file {
            if !p.exists() {
                return Err(invalid(
                    "webhooks.ca_file",
                    format!("file {} does not exist", p.display()),
                ));
            }
        }
        for (name, v) in [
            ("tuning.key_rate_per_second", self.tuning.key_rate_per_second),
            ("tuning.key_rate_burst", self.tuning.key_rate_burst),
            ("tuning.ip_rate_per_second", self.tuning.ip_rate_per_second),
            ("tuning.ip_rate_burst", self.tuning.ip_rate_burst),
        ] {
            if v.is_some_and(|v| !v.is_finite() || v <= 0.0) {
                return Err(invalid(name, "must be a number above 0"));
            }
        }
        match &self.hsm {
            None => return Err(invalid("hsm", "serve mode requires an HSM (backend: soft or pkcs11)")),
            Some(HsmConfig::Soft {
                master_key_file,
                unseal_threshold,
                ..
            }) => {
                if master_key_file.is_none()
                    && unseal_threshold.is_none()
                    && std::env::var_os("PAYMENTD_MASTER_KEY").is_none()
                {
                    return Err(invalid(
                        "hsm.master_key_file",
                        "give a master key file, PAYMENTD_MASTER_KEY, or unseal_threshold (custodian shares)",
                    ));
                }
                if let Some(p) = master_key_file {
                    if !p.exists() {
                        return Err(invalid(
                            "hsm.master_key_file",
                            format!("file {} does not exist", p.display()),
                        ));
                    }
                }
            }
            Some(HsmConfig::Pkcs11 {
                module,
                token_label,
                slot,
                pin_file,
                sessions,
                ..
            }) => {
                if !module.exists() {
                    return Err(invalid(
                        "hsm.module",
                        format!("PKCS#11 module {} does not exist", module.display()),
                    ));
                }
                match (token_label, slot) {
                    (Some(_), None) | (None, Some(_)) => {}
                    _ => return Err(invalid("hsm.token_label", "give exactly one of token_label and slot")),
                }
                match pin_file {
                    Some(p) if !p.exists() => {
                        return Err(invalid("hsm.pin_file", format!("file {} does not exist", p.display())))
                    }
                    Some(_) => {}
                    None if std::env::var_os("PAYMENTD_HSM_PIN").is_some() => {}
                    None => return Err(invalid("hsm.pin_file", "give hsm.pin_file or PAYMENTD_HSM_PIN")),
                }
                if !(1..=1024).contains(sessions) {
                    return Err(invalid("hsm.sessions", "must be between 1 and 1024"));
                }
            }
        }
        if let Some(a) = &self.admin {
            a.listen
                .parse::<std::net::SocketAddr>()
                .map_err(|e| invalid("admin.listen", format!("not an address:port: {e}")))?;
            if !a.token_file.exists() {
                return Err(invalid(
                    "admin.token_file",
                    format!("file {} does not exist", a.token_file.display()),
                ));
            }
        }
        if matches!(
            &self.hsm,
            Some(HsmConfig::Soft {
                master_key_file: None,
                unseal_threshold: Some(_),
                ..
            })
        ) && std::env::var_os("PAYMENTD_MASTER_KEY").is_none()
            && self.admin.is_none()
        {
            return Err(invalid(
                "admin",
                "unsealing with custodian shares needs the admin endpoint (admin.listen, admin.token_file)",
            ));
        }
        if !self.service_keys.dir.is_dir() {
            return Err(invalid(
                "service_keys.dir",
                format!(
                    "{} is not a directory (create it with `paymentd keys init-service-keys`)",
                    self.service_keys.dir.display()
                ),
            ));
        }
        if self.faults.as_ref().is_some_and(|f| f.crash_at.is_some()) && !cfg!(feature = "fault-injection") {
            return Err(invalid("faults", "fault injection is not compiled into this build"));
        }
        Ok(())
    }

    /// The database URL (from the file if configured that way).
    pub fn database_url(db: &Database, setting: &str) -> Result<String, ConfigError> {
        if let Some(u) = &db.url {
            return Ok(u.clone());
        }
        let p = db
            .url_file
            .as_ref()
            .ok_or_else(|| invalid(setting, "no database URL"))?;
        std::fs::read_to_string(p)
            .map(|s| s.trim().to_owned())
            .map_err(|e| invalid(setting, format!("cannot read {}: {e}", p.display())))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
        let p = dir.join(name);
        std::fs::write(&p, text).unwrap();
        p
    }

    #[test]
    fn good_config_loads_and_bad_ones_name_the_setting() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "c.pem", "x");
        write(d.path(), "k.pem", "x");
        write(d.path(), "mk", "00");
        std::fs::create_dir(d.path().join("keys")).unwrap();
        let base = format!(
            "listen:\n  public: 127.0.0.1:8443\n  roles:\n    tokenizer: 127.0.0.1:7102\ntls:\n  cert_file: {0}/c.pem\n  key_file: {0}/k.pem\ndatabase:\n  url: postgres://u@h/db\nhsm:\n  backend: soft\n  keystore: {0}/ks\n  master_key_file: {0}/mk\nservice_keys:\n  dir: {0}/keys\n",
            d.path().display()
        );
        let p = write(d.path(), "ok.yaml", &base);
        let cfg = Config::load(&p).unwrap();
        assert_eq!(
            cfg.listen.roles.get(&Role::Tokenizer).map(String::as_str),
            Some("127.0.0.1:7102")
        );

        let bad = write(d.path(), "bad.yaml", &base.replace("127.0.0.1:8443", "nowhere"));
        assert!(Config::load(&bad).unwrap_err().to_string().contains("listen.public"));
        let no_tls = write(d.path(), "notls.yaml", &base.replace("tls:", "tlsx:"));
        let e = Config::load(&no_tls).unwrap_err().to_string();
        assert!(e.contains("tlsx"), "{e}");
        let unknown_role = write(d.path(), "role.yaml", &base.replace("tokenizer: 127", "teapot: 127"));
        assert!(Config::load(&unknown_role).is_err());
        let mut cfg2 = cfg.clone();
        cfg2.apply_env(|k| {
            if k == "PAYMENTD_DATABASE_URL" {
                Some("postgres://other/db".into())
            } else {
                None
            }
        });
        assert_eq!(cfg2.database.url.as_deref(), Some("postgres://other/db"));
        cfg2.database.url = None;
        assert!(cfg2.validate().unwrap_err().to_string().contains("database.url"));

        let tuned = write(
            d.path(),
            "tuned.yaml",
            &format!("{base}tuning:\n  key_rate_per_second: 5000\n  ip_rate_burst: 9000\n"),
        );
        let tuned_cfg = Config::load(&tuned).unwrap();
        let mut t = tuned_cfg.tuning.to_tuning();
        assert_eq!(t.api.key_rate.per_second, 5000.0);
        assert_eq!(t.api.ip_rate.burst, 9000.0);
        assert_eq!(t.api.key_rate.burst, pay_api::ApiConfig::default().key_rate.burst);
        // The WAF in front applies the same client-facing limits.
        tuned_cfg.waf.apply(&mut t).unwrap();
        let proxy = t.waf_proxy.as_ref().expect("waf proxy settings");
        assert_eq!(proxy.key_rate.per_second, 5000.0);
        assert_eq!(proxy.ip_rate.burst, 9000.0);
        let zero = write(
            d.path(),
            "zero.yaml",
            &format!("{base}tuning:\n  ip_rate_per_second: 0\n"),
        );
        let e = Config::load(&zero).unwrap_err().to_string();
        assert!(e.contains("tuning.ip_rate_per_second"), "{e}");

        // Group commit: on by default, settable, and checked against the pool.
        let grouping = cfg.database.settings().group_commit;
        assert_eq!(grouping, pay_store::postgres::GroupCommit::default());
        assert!(grouping.batches_in_flight > 0);
        let db = |extra: &str| {
            base.replace(
                "  url: postgres://u@h/db\n",
                &format!("  url: postgres://u@h/db\n{extra}"),
            )
        };
        let set = write(
            d.path(),
            "batches.yaml",
            &db("  max_connections: 4\n  commit_batches: 0\n  max_commit_batch: 8\n"),
        );
        let g = Config::load(&set).unwrap().database.settings().group_commit;
        assert_eq!((g.batches_in_flight, g.max_batch), (0, 8));
        for (extra, setting) in [
            ("  max_connections: 4\n  commit_batches: 5\n", "database.commit_batches"),
            ("  max_commit_batch: 0\n", "database.max_commit_batch"),
            ("  max_commit_batch: 33\n", "database.max_commit_batch"),
        ] {
            let e = Config::load(&write(d.path(), "bad-batches.yaml", &db(extra)))
                .unwrap_err()
                .to_string();
            assert!(e.contains(setting), "{extra}: {e}");
        }
    }

    #[test]
    fn pkcs11_settings_are_checked() {
        let d = tempfile::tempdir().unwrap();
        write(d.path(), "c.pem", "x");
        write(d.path(), "k.pem", "x");
        write(d.path(), "module.so", "x");
        write(d.path(), "pin", "user:password");
        std::fs::create_dir(d.path().join("keys")).unwrap();
        let yaml = |hsm: &str| {
            format!(
                "listen:\n  public: 127.0.0.1:8443\ntls:\n  cert_file: {0}/c.pem\n  key_file: {0}/k.pem\ndatabase:\n  url: postgres://u@h/db\nhsm:\n{hsm}service_keys:\n  dir: {0}/keys\n",
                d.path().display()
            )
        };
        let good = format!(
            "  backend: pkcs11\n  module: {0}/module.so\n  token_label: payments\n  pin_file: {0}/pin\n  sessions: 4\n  wrap_mechanism: aes-gcm\n",
            d.path().display()
        );
        let cfg = Config::load(&write(d.path(), "ok.yaml", &yaml(&good))).unwrap();
        match cfg.hsm {
            Some(HsmConfig::Pkcs11 {
                sessions,
                wrap_mechanism,
                ref token_label,
                ..
            }) => {
                assert_eq!(sessions, 4);
                assert_eq!(wrap_mechanism, WrapSetting::AesGcm);
                assert_eq!(token_label.as_deref(), Some("payments"));
            }
            other => panic!("{other:?}"),
        }
        for (bad, setting) in [
            (good.replace("module.so", "missing.so"), "hsm.module"),
            (good.replace("  token_label: payments\n", ""), "hsm.token_label"),
            (
                good.replace("token_label: payments", "token_label: a\n  slot: 3"),
                "hsm.token_label",
            ),
            (good.replace("/pin\n", "/nopin\n"), "hsm.pin_file"),
            (good.replace("sessions: 4", "sessions: 0"), "hsm.sessions"),
        ] {
            let e = Config::load(&write(d.path(), "bad.yaml", &yaml(&bad)))
                .unwrap_err()
                .to_string();
            assert!(e.contains(setting), "{setting}: {e}");
        }
        let e = Config::load(&write(d.path(), "bad.yaml", &yaml(&good.replace("aes-gcm", "des"))))
            .unwrap_err()
            .to_string();
        assert!(e.contains("wrap_mechanism") || e.contains("unknown variant"), "{e}");
        let slot = good.replace("token_label: payments", "slot: 7");
        assert!(Config::load(&write(d.path(), "slot.yaml", &yaml(&slot))).is_ok());
    }
}
