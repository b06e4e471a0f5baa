//! Runs the real `paymentd serve` binary for tests: a throwaway PostgreSQL database, a TLS
//! certificate, service keys, a software-HSM master key and a config file, all in a temporary
//! directory.

#![allow(dead_code)]

use pay_net::{HttpClient, TcpTransport};
use pay_store::testing::TestDatabase;
use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

/// A prepared serve environment.
pub struct Served {
    /// The database.
    pub db: TestDatabase,
    /// Working directory (certs, keys, config).
    pub dir: tempfile::TempDir,
    /// Public base URL (`https://127.0.0.1:PORT`).
    pub base: String,
    /// The merchant's secret key.
    pub secret: String,
    /// The running process, if started.
    pub child: Option<Child>,
    /// Where the process writes its logs.
    pub log_file: PathBuf,
    /// Extra YAML appended to the config.
    pub extra_config: String,
    /// Replaces the default `hsm:` section (a software HSM with a master key file).
    pub hsm_yaml: Option<String>,
    /// Extra environment variables for the server process.
    pub child_env: Vec<(String, String)>,
    /// The admin listener's port and token file, when the test serves one (`serve_admin`).
    pub admin: Option<(u16, PathBuf)>,
}

/// Reads a child's output on a thread of its own; the receiver gets a message each time a
/// line holds `marker`.
pub fn line_seen(stdout: std::process::ChildStdout, marker: &'static str) -> std::sync::mpsc::Receiver<()> {
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stdout).lines().map_while(Result::ok) {
            if line.contains(marker) {
                let _ = tx.send(());
            }
        }
    });
    rx
}

pub fn bin() -> &'static str {
    env!("CARGO_BIN_EXE_paymentd")
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

impl Served {
    /// Prepares everything and creates a merchant key (does not start the server).
    pub async fn prepare(extra_config: &str) -> Served {
        let db = TestDatabase::create().await.expect("test PostgreSQL");
        let dir = tempfile::tempdir().unwrap();
        let d = dir.path();
        // A test CA and a server certificate it signs (clients refuse a bare self-signed leaf).
        let mut ca_params = rcgen::CertificateParams::new(Vec::<String>::new()).unwrap();
        ca_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
        ca_params
            .distinguished_name
            .push(rcgen::DnType::CommonName, "paymentd test CA");
        let ca_key = rcgen::KeyPair::generate().unwrap();
        let ca = ca_params.self_signed(&ca_key).unwrap();
        let leaf_key = rcgen::KeyPair::generate().unwrap();
        let leaf = rcgen::CertificateParams::new(vec!["127.0.0.1".to_owned(), "localhost".to_owned()])
            .unwrap()
            .signed_by(&leaf_key, &ca, &ca_key)
            .unwrap();
        std::fs::write(d.join("ca.crt"), ca.pem()).unwrap();
        std::fs::write(d.join("tls.crt"), leaf.pem()).unwrap();
        std::fs::write(d.join("tls.key"), leaf_key.serialize_pem()).unwrap();
        std::fs::write(d.join("master.key"), hex::encode([7u8; 32])).unwrap();
        let out = Command::new(bin())
            .args(["keys", "init-service-keys", "--dir"])
            .arg(d.join("service-keys"))
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "init-service-keys: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let out = Command::new(bin())
            .args([
                "keys",
                "create-api-key",
                "--database-url",
                &db.url,
                "--name",
                "Test merchant",
            ])
            .output()
            .unwrap();
        assert!(
            out.status.success(),
            "create-api-key: {}",
            String::from_utf8_lossy(&out.stderr)
        );
        let text = String::from_utf8_lossy(&out.stdout).to_string();
        let secret = text
            .lines()
            .find_map(|l| l.strip_prefix("secret key:"))
            .map(|s| s.trim().to_owned())
            .expect("secret key printed");
        let port = free_port();
        let log_file = d.join("paymentd.log");
        Served {
            db,
            base: format!("https://127.0.0.1:{port}"),
            secret,
            child: None,
            log_file,
            dir,
            extra_config: extra_config.to_owned(),
            hsm_yaml: None,
            child_env: vec![],
            admin: None,
        }
    }

    fn config_path(&self) -> PathBuf {
        self.dir.path().join("paymentd.yaml")
    }

    /// The config file's path.
    pub fn config_file(&self) -> PathBuf {
        self.config_path()
    }

    /// Serves the admin endpoint too, on a free local port, with the token in `token_file`.
    pub fn serve_admin(&mut self, token_file: &Path) {
        self.admin = Some((free_port(), token_file.to_owned()));
    }

    /// Writes the config file.
    pub fn write_config(&self, extra: &str) {
        let d = self.dir.path();
        let port = self.base.rsplit(':').next().unwrap();
        let admin = match &self.admin {
            Some((port, token)) => format!(
                "admin:\n  listen: 127.0.0.1:{port}\n  token_file: {}\n",
                token.display()
            ),
            None => String::new(),
        };
        let yaml = format!(
            "listen:\n  public: 127.0.0.1:{port}\ntls:\n  cert_file: {d}/tls.crt\n  key_file: {d}/tls.key\ndatabase:\n  url: {url}\n  max_connections: 8\n{hsm}service_keys:\n  dir: {d}/service-keys\nlogging:\n  level: info\n  file: {log}\n{admin}{extra}\n",
            d = d.display(),
            url = self.db.url,
            log = self.log_file.display(),
            hsm = self.hsm_yaml.clone().unwrap_or_else(|| format!(
                "hsm:\n  backend: soft\n  keystore: {d}/keystore\n  master_key_file: {d}/master.key\n",
                d = d.display()
            )),
        );
        std::fs::write(self.config_path(), yaml).unwrap();
    }

    /// Starts `paymentd serve` and waits until it is ready. The public and admin ports were
    /// free when they were chosen, but another process may have taken one since (parallel tests
    /// bind ephemeral ports): then the server exits at once, and it is started again with a new
    /// port for the one taken (`base` changes; callers read it after `start`).
    pub fn start(&mut self, extra: &str) {
        for attempt in 1.. {
            match self.try_start(extra) {
                Ok(child) => {
                    self.child = Some(child);
                    return;
                }
                Err(err) => {
                    let taken = |addr: &str| err.contains("Address already in use") && err.contains(addr);
                    let public = self.base.trim_start_matches("https://").to_owned();
                    if attempt == 5 {
                        panic!("{err}");
                    } else if taken(&public) {
                        self.base = format!("https://127.0.0.1:{}", free_port());
                    } else if let Some((port, _)) = self
                        .admin
                        .as_mut()
                        .filter(|(port, _)| taken(&format!("127.0.0.1:{port}")))
                    {
                        *port = free_port();
                    } else {
                        panic!("{err}");
                    }
                }
            }
        }
    }

    fn try_start(&mut self, extra: &str) -> Result<std::process::Child, String> {
        self.write_config(&format!("{}\n{extra}", self.extra_config));
        let mut child = Command::new(bin())
            .args(["serve", "--config"])
            .arg(self.config_path())
            .envs(self.child_env.iter().map(|(k, v)| (k.as_str(), v.as_str())))
            .stdout(Stdio::piped())
            .stderr(Stdio::piped())
            .spawn()
            .unwrap();
        let rx = line_seen(child.stdout.take().unwrap(), "paymentd ready");
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if rx.recv_timeout(Duration::from_millis(100)).is_ok() {
                return Ok(child);
            }
            if let Ok(Some(status)) = child.try_wait() {
                let mut err = String::new();
                if let Some(mut e) = child.stderr.take() {
                    let _ = std::io::Read::read_to_string(&mut e, &mut err);
                }
                return Err(format!("paymentd exited before ready ({status}): {err}"));
            }
            assert!(Instant::now() < deadline, "paymentd not ready within 30 s");
        }
    }

    /// Sends SIGTERM and waits for a clean exit.
    pub fn stop(&mut self) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        // SAFETY: sending a signal to our own child process.
        unsafe {
            libc::kill(child.id() as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(
                Instant::now() < deadline,
                "paymentd did not stop within 30 s of SIGTERM"
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// Waits for the process to die on its own (crash tests).
    pub fn wait_for_death(&mut self, within: Duration) -> std::process::ExitStatus {
        let mut child = self.child.take().expect("running");
        let deadline = Instant::now() + within;
        loop {
            if let Some(st) = child.try_wait().unwrap() {
                return st;
            }
            assert!(Instant::now() < deadline, "paymentd did not die");
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    /// The CA bundle for the server's certificate.
    pub fn ca_file(&self) -> PathBuf {
        self.dir.path().join("ca.crt")
    }

    /// The process's log output so far.
    pub fn logs(&self) -> String {
        std::fs::read_to_string(&self.log_file).unwrap_or_default()
    }
}

impl Drop for Served {
    fn drop(&mut self) {
        if let Some(mut c) = self.child.take() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

/// The Python with the official `stripe` SDK: `PAY_PYTHON`, else the repository's `.venv`.
pub fn python() -> PathBuf {
    if let Ok(p) = std::env::var("PAY_PYTHON") {
        return PathBuf::from(p);
    }
    let venv = Path::new(env!("CARGO_MANIFEST_DIR")).join("../../.venv/bin/python");
    assert!(
        venv.exists(),
        "no Python with the stripe SDK: run scripts/test.sh (it creates .venv) or set PAY_PYTHON"
    );
    venv
}

/// POSTs a form to the public API; answers status and JSON.
#[allow(dead_code)]
pub async fn post(
    http: &HttpClient,
    base: &str,
    key: &str,
    path: &str,
    form: &[(&str, &str)],
    idem: Option<&str>,
) -> Result<(u16, serde_json::Value), String> {
    let body = form_urlencoded_body(form);
    let auth = format!("Bearer {key}");
    let mut headers = vec![
        ("authorization", auth.as_str()),
        ("content-type", "application/x-www-form-urlencoded"),
        ("user-agent", "Stripe/v1 RustIntegrationTests/0.1"),
    ];
    if let Some(k) = idem {
        headers.push(("idempotency-key", k));
    }
    match http
        .request(
            http::Method::POST,
            &format!("{base}{path}"),
            &headers,
            bytes::Bytes::from(body),
            Duration::from_secs(10),
        )
        .await
    {
        Ok(r) => Ok((r.status.as_u16(), serde_json::from_slice(&r.body).unwrap_or_default())),
        Err(e) => Err(e.to_string()),
    }
}

/// Encodes a form (brackets escaped).
#[allow(dead_code)]
pub fn form_urlencoded_body(form: &[(&str, &str)]) -> String {
    form.iter()
        .map(|(k, v)| format!("{}={}", k.replace('[', "%5B").replace(']', "%5D"), v))
        .collect::<Vec<_>>()
        .join("&")
}

/// TCP + TLS (trusting a given CA) for test clients of the public listener.
#[allow(dead_code)]
pub struct TlsTransport(pub tokio_rustls::TlsConnector);

#[async_trait::async_trait]
impl pay_net::Transport for TlsTransport {
    async fn bind(&self, addr: &str) -> std::io::Result<pay_net::BoxListener> {
        TcpTransport.bind(addr).await
    }
    async fn connect(&self, host: &str, port: u16) -> std::io::Result<pay_net::BoxIo> {
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        let name = rustls::pki_types::ServerName::try_from(host.to_owned())
            .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e.to_string()))?;
        Ok(Box::new(self.0.connect(name, tcp).await?))
    }
}
